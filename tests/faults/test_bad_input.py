"""Malformed input to every `distill` command (train, cache, eval, demo with --set): each case must end in one
`distill: error:` line naming the file or key, exit code 2, no traceback, and the disk as it was: no run folder
or cache begun, no empty folder left, nothing that was there overwritten.

Each case runs in a folder of its own, {tmp}, holding {config} (the tiny digits run, writing to {tmp}/runs), and
may also point at what the module builds once (World): a finished run, a cache made from its teacher, a finished
CSV run and an IDX folder. Those must never change either.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shlex
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from conftest import TINY_RUN, write_config
from distill.cli import main
from test_cli import assert_user_error, run_cli

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
KINDS_CSV = "a,b,kind\n" + "1,2,x\n3,4,y\n" * 10
COLOURS_CSV = "x1,x2,colour,label\n" + "".join(
    f"{i % 7},{i * 3 % 5},{'red' if i % 2 else 'blue'},{'ab'[i % 2]}\n" for i in range(60)
)


@dataclass(frozen=True)
class World:
    """Built once per module: finished runs, a cache of the digits run's teacher, an 8x8 IDX folder."""

    root: Path

    @property
    def places(self) -> dict[str, str]:
        run = self.root / "runs" / "tiny"
        return {
            "runs": str(self.root / "runs"),
            "run": str(run),
            "run_config": str(self.root / "tiny.yaml"),
            "teacher": str(run / "teacher.safetensors"),
            "student": str(run / "student.safetensors"),
            "cache": str(self.root / "cache"),
            "idx": str(self.root / "idx"),
        }


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An IDX file: the big-endian magic, one uint32 per dimension, then the uint8 payload."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def idx_images(n: int = 40) -> bytes:
    return idx_bytes(np.random.default_rng(0).integers(0, 256, (n, 8, 8)), IMAGES_MAGIC)


def idx_labels(n: int = 40, classes: int = 10) -> bytes:
    return idx_bytes(np.arange(n) % classes, LABELS_MAGIC)


def npz_bytes(inputs: np.ndarray | None = None, labels: np.ndarray | None = None) -> bytes:
    buffer = io.BytesIO()
    inputs = np.zeros((8, 4)) if inputs is None else inputs
    np.savez(buffer, inputs=inputs, labels=np.arange(8) % 2 if labels is None else labels)
    return buffer.getvalue()


NAN_AT_5 = np.where(np.arange(32).reshape(8, 4) == 21, np.nan, 0.0)  # sample 5


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("world")
    world = World(root)
    config = write_config(root / "tiny.yaml", TINY_RUN.format(out=root / "runs").replace("epochs: 2", "epochs: 1"))
    assert main(["train", str(config)]) == 0
    to_cache = ["--set", f"teacher.weights={world.places['teacher']}", "--set", f"teacher.cache={root / 'cache'}"]
    assert main(["cache", str(config), *to_cache]) == 0
    (root / "colours.csv").write_text(COLOURS_CSV)
    csv_data = [
        "--set",
        "data.name=csv",
        "--set",
        f"data.path={root / 'colours.csv'}",
        "--set",
        "data.label_column=label",
    ]
    assert main(["train", str(config), "--set", "name=csvrun", "--set", "scratch=false", *csv_data]) == 0
    (root / "idx").mkdir()
    (root / "idx" / "images.idx3").write_bytes(idx_images())
    (root / "idx" / "labels.idx1").write_bytes(idx_labels())
    return world


# ----- what a case prepares in {tmp} before it runs -----

Setup = Callable[[Path, World], None]
Change = Callable[[Path], None]


def write(name: str, content: str | bytes) -> Setup:
    def setup(tmp: Path, world: World) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return setup


def idx(images: bytes = idx_images(), labels: bytes = idx_labels()) -> Setup:
    """An IDX folder {tmp}/idx."""
    return both(write("idx/images.idx3", images), write("idx/labels.idx1", labels))


def copied(source: str, change: Callable[[bytes], bytes]) -> Setup:
    """{tmp}/copy.<suffix>: the world's file `source` (a World.places name), changed."""

    def setup(tmp: Path, world: World) -> None:
        original = Path(world.places[source])
        (tmp / f"copy{original.suffix}").write_bytes(change(original.read_bytes()))

    return setup


def half(content: bytes) -> bytes:
    return content[: len(content) // 2]


def unclosed(content: bytes) -> bytes:
    """The text with a flow list left open: not YAML, wherever the file would have been cut."""
    return content + b"extra: [1, 2\n"


def first_lines(content: bytes) -> bytes:
    return b"".join(content.splitlines(keepends=True)[:3])


def emptied(content: bytes) -> bytes:
    return b""


def copied_run(change: Change, name: str = "tiny") -> Setup:
    """{tmp}/runs/tiny: a copy of a finished run, its saved config moved along, then `change(run_dir)`."""

    def setup(tmp: Path, world: World) -> None:
        run = tmp / "runs" / "tiny"
        shutil.copytree(Path(world.places["runs"]) / name, run)
        saved = yaml.safe_load((run / "config.yaml").read_text())
        (run / "config.yaml").write_text(yaml.safe_dump({**saved, "out_dir": str(run.parent)}, sort_keys=False))
        change(run)

    return setup


def copied_cache(change: Change) -> Setup:
    """{tmp}/cache: a copy of the module's cache, then `change(cache_dir)`."""

    def setup(tmp: Path, world: World) -> None:
        shutil.copytree(world.places["cache"], tmp / "cache")
        change(tmp / "cache")

    return setup


def in_file(name: str, change: Callable[[bytes], bytes]) -> Change:
    def edit(folder: Path) -> None:
        (folder / name).write_bytes(change((folder / name).read_bytes()))

    return edit


def deleted(name: str) -> Change:
    return lambda folder: (folder / name).unlink()


def in_manifest(change: Callable[[dict], object]) -> Change:
    def edit(cache: Path) -> None:
        manifest = json.loads((cache / "manifest.json").read_text())
        change(manifest)
        (cache / "manifest.json").write_text(json.dumps(manifest))

    return edit


def forged_shard(content: bytes | np.ndarray) -> Change:
    """Shard 0's logits replaced and listed with their true checksum: what a buggy writer or a hand edit leaves."""

    def edit(cache: Path) -> None:
        shard = cache / "logits-00000.npy"
        if isinstance(content, np.ndarray):
            np.save(shard, content)
        else:
            shard.write_bytes(content)
        checksum = hashlib.sha256(shard.read_bytes()).hexdigest()
        in_manifest(lambda m: m["shards"]["0"]["sha256"].update(logits=checksum))(cache)

    return edit


def with_data(**data: str) -> Change:
    """The copied run's saved config with its data group changed: the data moved or changed since the run."""

    def edit(run: Path) -> None:
        saved = yaml.safe_load((run / "config.yaml").read_text())
        saved["data"].update(data)
        (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))

    return edit


def both(*setups: Setup) -> Setup:
    def setup(tmp: Path, world: World) -> None:
        for each in setups:
            each(tmp, world)

    return setup


def other_teacher(tmp: Path, world: World) -> None:
    """{tmp}/other.safetensors: the teacher's architecture with other values (another training of it)."""
    save_file({k: v + 1 for k, v in load_file(world.places["teacher"]).items()}, tmp / "other.safetensors")


def pickled(obj: object) -> Setup:
    return lambda tmp, world: torch.save(obj, tmp / "w.pt")


def foreign_onnx(tmp: Path, world: World) -> None:
    """An ONNX file some other tool wrote: a valid model without our metadata."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own notes on exporting
        torch.onnx.export(torch.nn.Linear(64, 10).eval(), (torch.randn(1, 64),), tmp / "other.onnx", verbose=False)


def resume_from_pointer(text: str) -> Setup:
    """A copied run whose student has checkpoints but no result, and whose last.json holds `text`."""

    def change(run: Path) -> None:
        (run / "student.safetensors").unlink()
        (run / "student" / "checkpoints" / "last.json").write_text(text)

    return copied_run(change)


# ----- the cases -----


class Case(NamedTuple):
    id: str
    argv: str  # shell words; {tmp}, {config} and the World.places names are filled in
    fragments: tuple[str, ...]  # what the one line must say
    setup: Setup | None = None


TRAIN = "train {config}"
BAD_YAML = "train {tmp}/bad.yaml"
IDX = TRAIN + " --set data.name=idx --set data.path={tmp}/idx"
CSV = TRAIN + " --set data.name=csv --set data.path={tmp}/t.csv --set data.label_column=kind"
CACHE = "cache {config} --set teacher.weights={teacher} --set teacher.cache={tmp}/new"
WITH_CACHE = TRAIN + " --set teacher.weights={teacher} --set teacher.cache={tmp}/cache"
FROM_CACHE = TRAIN + " --set teacher.weights={teacher} --set teacher.cache={cache}"
EVAL = "eval {tmp}/runs/tiny"
DEMO = "demo --set out_dir={tmp}"
HUGE = 10**12

CASES = [
    # --- the config file itself ---
    Case("yaml-unclosed", BAD_YAML, ("bad.yaml: invalid YAML at line 2",), write("bad.yaml", "name: [x\n")),
    Case("yaml-tab", BAD_YAML, ("bad.yaml: invalid YAML", "'\\t'"), write("bad.yaml", "name: x\n\tdata: {}\n")),
    Case("yaml-twice", BAD_YAML, ("key 'name' appears twice",), write("bad.yaml", "name: a\nname: b\n")),
    Case("yaml-list", BAD_YAML, ("bad.yaml: a config is a mapping",), write("bad.yaml", "- a\n- b\n")),
    Case("yaml-empty", BAD_YAML, ("bad.yaml: the file is empty",), write("bad.yaml", "")),
    Case("yaml-comments-only", BAD_YAML, ("bad.yaml: the file is empty",), write("bad.yaml", "# nothing\n")),
    Case("yaml-binary", BAD_YAML, ("bad.yaml: not a text file",), write("bad.yaml", b"\x80\xfe\x00\xff")),
    Case(
        "yaml-python-tag",
        BAD_YAML,
        ("bad.yaml: invalid YAML", "python/object/apply:os.system"),
        write("bad.yaml", "name: !!python/object/apply:os.system [echo hi]\n"),
    ),
    Case("config-missing", "train {tmp}/nope.yaml", ("nope.yaml does not exist",)),
    Case("config-is-a-folder", "train {tmp}", ("is a folder",)),
    Case("cache-config-missing", "cache {tmp}/nope.yaml", ("nope.yaml does not exist",)),
    # --- unknown keys ---
    Case("unknown-top-level", TRAIN + " --set epochs=3", ("epochs: unknown key",)),
    Case("unknown-group", TRAIN + " --set 'trian={epochs: 1}'", ("trian: unknown key (did you mean 'train'?)",)),
    Case("unknown-train-key", TRAIN + " --set train.epocs=3", ("train.epocs: unknown key", "'epochs'")),
    Case("unknown-data-key", TRAIN + " --set data.bach_size=3", ("data.bach_size: unknown key", "'batch_size'")),
    Case("unknown-teacher-key", TRAIN + " --set teacher.wieghts=t.pt", ("teacher.wieghts: unknown key", "'weights'")),
    Case("unknown-cache-key", CACHE + " --set cache.topk=3", ("cache.topk: unknown key", "'top_k'")),
    Case("unknown-loss-option", TRAIN + " --set method.terms.0.temprature=2", ("method.terms.0:", "'temprature'")),
    Case("unknown-model-arg", TRAIN + " --set teacher.args.hiden=[8]", ("teacher.args: 'mlp' takes no", "'hiden'")),
    Case("unknown-loss", TRAIN + " --set method.terms.0.loss=kdd", ("method.terms.0.loss: unknown loss 'kdd'",)),
    Case("unknown-data-set", TRAIN + " --set data.name=csvv", ("data.name: unknown data set 'csvv'", "'csv'")),
    Case("unknown-augment", TRAIN + " --set data.augment=flip", ("data.augment must be one of", "'flip'")),
    Case("unknown-model", TRAIN + " --set student.model=mlpp", ("student: unknown model 'mlpp'",)),
    # --- wrong types ---
    Case("epochs-word", TRAIN + " --set train.epochs=three", ("train.epochs", "'three'")),
    Case("epochs-fraction", TRAIN + " --set train.epochs=2.5", ("train.epochs", "2.5")),
    Case("batch-size-bool", TRAIN + " --set data.batch_size=true", ("data.batch_size", "True")),
    Case("lr-word", TRAIN + " --set train.lr=fast", ("train.lr", "'fast'")),
    Case("scratch-word", TRAIN + " --set scratch=maybe", ("scratch", "'maybe'")),
    Case("data-list", TRAIN + " --set data=[1,2]", ("data: Input should be a valid dictionary",)),
    Case("teacher-string", TRAIN + " --set teacher=mlp", ("teacher: Input should be a valid dictionary",)),
    Case("terms-mapping", TRAIN + " --set 'method.terms={loss: kd}'", ("method.terms: Input should be a valid list",)),
    Case("model-args-list", TRAIN + " --set teacher.args=[32]", ("teacher.args: Input should be a valid dictionary",)),
    Case("milestones-words", TRAIN + " --set train.milestones=[a]", ("train.milestones.0", "'a'")),
    Case("name-with-slash", TRAIN + " --set name=../escape", ("name: String should match pattern", "'../escape'")),
    Case("out-dir-null", TRAIN + " --set out_dir=null", ("out_dir", "None")),
    # --- numbers out of range ---
    Case("val-fraction-above-1", TRAIN + " --set data.val_fraction=1.5", ("data.val_fraction", "1.5")),
    Case("val-fraction-0", TRAIN + " --set data.val_fraction=0", ("data.val_fraction",)),
    Case("val-fraction-nan", TRAIN + " --set data.val_fraction=.nan", ("data.val_fraction", "nan")),
    Case("val-fraction-tiny", TRAIN + " --set data.val_fraction=0.0001", ("data.val_fraction=0.0001", "part empty")),
    Case("lr-negative", TRAIN + " --set train.lr=-0.1", ("train.lr", "-0.1")),
    Case("lr-inf", TRAIN + " --set train.lr=.inf", ("train.lr", "inf")),
    Case("momentum-1", TRAIN + " --set train.momentum=1", ("train.momentum",)),
    Case("term-weight-negative", TRAIN + " --set method.terms.0.weight=-1", ("method.terms.0.weight",)),
    Case("term-weight-inf", TRAIN + " --set method.terms.0.weight=.inf", ("method.terms.0.weight", "finite")),
    Case("temperature-0", TRAIN + " --set method.terms.0.temperature=0", ("method.terms.0", "temperature")),
    Case("alpha-2", TRAIN + " --set method.terms.0.alpha=2", ("method.terms.0", "alpha must be in [0, 1], got 2")),
    Case("label-smoothing-1", TRAIN + " --set method.label_smoothing=1", ("method.label_smoothing",)),
    Case("workers-negative", TRAIN + " --set data.num_workers=-1", ("data.num_workers",)),
    Case("seed-negative", TRAIN + " --set data.seed=-1", ("data.seed",)),
    Case("grad-accum-0", TRAIN + " --set train.grad_accum=0", ("train.grad_accum",)),
    Case("clip-0", TRAIN + " --set train.clip_grad_norm=0", ("train.clip_grad_norm",)),
    Case("milestone-past-end", TRAIN + " --set train.milestones=[5]", ("train.milestones must lie in [1, epochs=2)",)),
    Case("multistep-alone", TRAIN + " --set train.schedule=multistep", ("needs train.milestones",)),
    Case("teacher-epochs-0", TRAIN + " --set teacher.epochs=0", ("teacher.epochs",)),
    Case("teacher-dtype", TRAIN + " --set teacher.dtype=float64", ("teacher.dtype", "'float64'")),
    Case("cache-dtype", CACHE + " --set cache.dtype=int8", ("cache.dtype", "'int8'")),
    Case("cache-top-k-0", CACHE + " --set cache.top_k=0", ("cache.top_k",)),
    Case("cache-top-k-over-classes", CACHE + " --set cache.top_k=11", ("cache.top_k=11", "10 classes")),
    # --- absurd sizes: refused by the schema, or failing at once on allocation ---
    Case("batch-size-0", TRAIN + " --set data.batch_size=0", ("data.batch_size",)),
    Case("batch-size-huge", TRAIN + f" --set data.batch_size={HUGE}", ("data.batch_size", str(HUGE))),
    Case("epochs-huge", TRAIN + f" --set train.epochs={HUGE}", ("train.epochs", str(HUGE))),
    Case("teacher-epochs-huge", TRAIN + f" --set teacher.epochs={HUGE}", ("teacher.epochs", str(HUGE))),
    Case("grad-accum-huge", TRAIN + f" --set train.grad_accum={HUGE}", ("train.grad_accum",)),
    Case("workers-huge", TRAIN + " --set data.num_workers=1000000", ("data.num_workers",)),
    Case("cache-batch-size-0", CACHE + " --set cache.batch_size=0", ("cache.batch_size",)),
    Case("hidden-huge", TRAIN + f" --set student.args.hidden=[{HUGE}]", ("student.args: the model has", "memory")),
    Case(
        "cnn-hidden-huge",  # refused from its size, counted without allocating it
        TRAIN + f" --set teacher.model=cnn --set 'teacher.args={{hidden: {HUGE}}}'",
        ("teacher.args: the model has 1,035,000,000,018,922 parameters",),  # a 4x4 grid of 64 channels
    ),
    Case("hidden-zero", TRAIN + " --set teacher.args.hidden=[0]", ("teacher.args", "hidden must be positive")),
    # --- bad --set overrides ---
    Case("set-without-value", TRAIN + " --set train.epochs", ("--set 'train.epochs': expected key=value",)),
    Case("set-without-key", TRAIN + " --set =5", ("--set '=5': expected key=value",)),
    Case("set-empty-part", TRAIN + " --set train..lr=1", ("--set 'train..lr=1': expected key=value",)),
    Case("set-below-a-value", TRAIN + " --set train.epochs.deep=1", ("--set train.epochs.deep", "train.epochs is a")),
    Case("set-below-a-name", TRAIN + " --set name.first=x", ("--set name.first: name is a value",)),
    Case("set-index-past-end", TRAIN + " --set method.terms.3.weight=1", ("--set method.terms.3.weight", "1 entries")),
    Case("set-index-not-number", TRAIN + " --set method.terms.x.weight=1", ("--set method.terms.x.weight",)),
    Case(
        "set-index-no-list",
        TRAIN + " --set method.stages.0.epochs=1",
        ("--set method.stages.0.epochs", "method.stages is not a list"),
    ),
    Case("set-unparsable-value", TRAIN + " --set train.lr=[", ("train.lr", "'['")),
    # --- data files: missing, empty, truncated ---
    Case("idx-missing", IDX.replace("{tmp}/idx", "{tmp}/nowhere"), ("nowhere does not exist",)),
    Case("idx-no-path", TRAIN + " --set data.name=idx", ("data set 'idx' needs data.path",)),
    Case("idx-empty-folder", IDX, ("idx: expected one IDX file with 'images'",), write("idx/notes.txt", "")),
    Case("idx-empty-images", IDX, ("images.idx3: not an IDX images",), idx(images=b"")),
    Case("idx-truncated-header", IDX, ("images.idx3: not an IDX images",), idx(images=idx_images()[:10])),
    Case(
        "idx-truncated-images", IDX, ("images.idx3: header says (40, 8, 8)", "truncated"), idx(images=idx_images()[:-7])
    ),
    Case("idx-truncated-labels", IDX, ("labels.idx1: header says (40,)", "truncated"), idx(labels=idx_labels()[:-1])),
    Case("idx-labels-as-images", IDX, ("images.idx3: not an IDX images", "0x00000803"), idx(images=idx_labels())),
    Case(
        "idx-absurd-header",  # says 4 billion images: refused from the header, nothing that size is allocated
        IDX,
        ("images.idx3: header says (4294967295, 8, 8)", "truncated"),
        idx(images=IMAGES_MAGIC.to_bytes(4, "big") + bytes.fromhex("ffffffff0000000800000008") + bytes(64)),
    ),
    Case("idx-count-mismatch", IDX, ("has 39 images but", "40 labels"), idx(images=idx_images(39))),
    Case(
        "idx-gz-truncated",
        TRAIN + " --set data.name=idx --set data.path={tmp}/images.idx3.gz",
        ("images.idx3.gz: cannot read it",),
        both(
            write("images.idx3.gz", half(gzip.compress(idx_images()))),
            write("labels.idx1.gz", gzip.compress(idx_labels())),
        ),
    ),
    Case("csv-missing", CSV, ("t.csv does not exist",)),
    Case("csv-empty", CSV, ("t.csv: the file is empty",), write("t.csv", "")),
    Case("csv-header-only", CSV, ("t.csv: only a header row",), write("t.csv", "a,b,kind\n")),
    Case("csv-truncated-row", CSV, ("t.csv: line 22 has 2 fields",), write("t.csv", KINDS_CSV + "5,6")),
    Case("csv-truncated-quote", CSV, ("t.csv: cannot read it", "end of data"), write("t.csv", KINDS_CSV + '5,6,"x')),
    Case("csv-not-utf8", CSV, ("t.csv: cannot read it as CSV",), write("t.csv", KINDS_CSV.encode() + b"\xff,1,x\n")),
    Case(
        "csv-unknown-label",
        CSV.replace("=kind", "=knid"),
        ("no label column 'knid'", "'kind'"),
        write("t.csv", KINDS_CSV),
    ),
    Case("csv-no-label-column", CSV.replace(" --set data.label_column=kind", ""), ("needs data.label_column",)),
    Case(
        "tensors-truncated",
        TRAIN + " --set data.name=tensors --set data.path={tmp}/d.npz",
        ("d.npz: cannot read it",),
        write("d.npz", half(npz_bytes())),
    ),
    Case(
        "tensors-empty",
        TRAIN + " --set data.name=tensors --set data.path={tmp}/d.pt",
        ("d.pt: cannot read it",),
        write("d.pt", b""),
    ),
    # --- weights: missing, empty, truncated; another architecture, class count or vocabulary ---
    Case("weights-missing", TRAIN + " --set teacher.weights={tmp}/t.safetensors", ("t.safetensors does not exist",)),
    Case(
        "weights-empty",
        TRAIN + " --set teacher.weights={tmp}/copy.safetensors",
        ("copy.safetensors is not a readable safetensors file",),
        copied("teacher", emptied),
    ),
    Case(
        "weights-truncated",
        TRAIN + " --set teacher.weights={tmp}/copy.safetensors",
        ("copy.safetensors is not a readable safetensors file",),
        copied("teacher", half),
    ),
    Case(
        "weights-huge-header",
        TRAIN + " --set teacher.weights={tmp}/copy.safetensors",
        ("copy.safetensors is not a readable safetensors file",),
        copied("teacher", lambda b: (10**15).to_bytes(8, "little")),
    ),
    Case(
        "weights-pt-empty",
        TRAIN + " --set student.weights={tmp}/w.pt",
        ("w.pt cannot be loaded safely",),
        write("w.pt", b""),
    ),
    Case(
        "weights-pt-not-a-dict",
        TRAIN + " --set student.weights={tmp}/w.pt",
        ("w.pt holds no state dict",),
        pickled([1, 2]),
    ),
    Case(
        "weights-other-architecture",
        TRAIN + " --set teacher.weights={student}",
        ("student.safetensors was saved from another architecture",),
    ),
    Case(
        "weights-other-class-count",  # a head for 10 classes cannot teach 5 unless fine-tuned
        IDX + " --set teacher.weights={teacher}",
        ("teacher.epochs: the teacher's head is new for the data's 5 classes; set teacher.epochs",),
        idx(labels=idx_labels(classes=5)),
    ),
    # --- teacher caches: missing, empty, truncated, damaged, stale ---
    Case("cache-missing", WITH_CACHE, ("cache holds no teacher cache",)),
    Case("cache-empty-folder", WITH_CACHE, ("cache holds no teacher cache",), write("cache/notes.txt", "")),
    Case(
        "cache-manifest-empty",
        WITH_CACHE,
        ("manifest.json is damaged",),
        copied_cache(in_file("manifest.json", emptied)),
    ),
    Case(
        "cache-manifest-truncated",
        WITH_CACHE,
        ("manifest.json is damaged",),
        copied_cache(in_file("manifest.json", half)),
    ),
    Case(
        "cache-manifest-binary",
        WITH_CACHE,
        ("manifest.json is damaged",),
        copied_cache(in_file("manifest.json", lambda b: b"\xff\xfe\x00")),
    ),
    Case(
        "cache-manifest-not-a-cache",
        WITH_CACHE,
        ("manifest.json is damaged (no fingerprint)",),
        copied_cache(in_file("manifest.json", lambda b: b"[]")),
    ),
    Case(
        "cache-manifest-bad-dtype",
        WITH_CACHE,
        ("manifest.json is damaged (dtype 'int8'",),
        copied_cache(in_manifest(lambda m: m["fingerprint"].update(dtype="int8"))),
    ),
    Case(
        "cache-manifest-rows-0",
        WITH_CACHE,
        ("manifest.json is damaged (shard_rows 0",),
        copied_cache(in_manifest(lambda m: m.update(shard_rows=0))),
    ),
    Case(
        "cache-manifest-shards-list",
        WITH_CACHE,
        ("manifest.json is damaged (shards",),
        copied_cache(in_manifest(lambda m: m.update(shards=[1]))),
    ),
    Case(
        "cache-unfinished",
        WITH_CACHE,
        ("unfinished (1 of 1 shards missing)",),
        copied_cache(in_manifest(lambda m: m.update(shards={}))),
    ),
    Case(
        "cache-shard-truncated",
        WITH_CACHE,
        ("logits-00000.npy is missing or damaged",),
        copied_cache(in_file("logits-00000.npy", half)),
    ),
    Case(
        "cache-shard-missing",
        WITH_CACHE,
        ("logits-00000.npy is missing or damaged",),
        copied_cache(deleted("logits-00000.npy")),
    ),
    Case(
        "cache-shard-not-npy",
        WITH_CACHE,
        ("logits-00000.npy cannot be read",),
        copied_cache(forged_shard(b"not an array")),
    ),
    Case(
        "cache-shard-short",
        WITH_CACHE,
        ("logits-00000.npy is damaged", "(100, 10)", "1797 rows"),
        copied_cache(forged_shard(np.zeros((100, 10), np.float16))),
    ),
    Case(
        "cache-shard-other-classes",
        WITH_CACHE,
        ("logits-00000.npy is damaged", "(1797, 5)", "of 10 logits"),
        copied_cache(forged_shard(np.zeros((1797, 5), np.float16))),
    ),
    Case(
        "cache-other-teacher",
        FROM_CACHE.replace("{teacher}", "{tmp}/other.safetensors"),
        ("is stale", "teacher_sha256"),
        other_teacher,
    ),
    Case("cache-other-data", FROM_CACHE + " --set data.name=idx --set data.path={idx}", ("is stale", "data_sha256")),
    Case(
        "cache-lacks-feature",
        FROM_CACHE + " --set 'method.terms=[{loss: hint, student: hidden1, teacher: hidden1}]'",
        ("holds no teacher feature 'hidden1'",),
    ),
    Case("cache-without-weights", TRAIN + " --set teacher.cache={cache}", ("teacher.cache needs teacher.weights",)),
    Case(
        "cache-augmented",
        FROM_CACHE + " --set data.augment=crop_flip",
        ("data.augment is 'crop_flip'", "cache.views: K", "allow_augmented"),
    ),
    Case(
        "cache-of-other-views",
        FROM_CACHE + " --set data.augment=crop_flip --set cache.views=2",
        ("was made for no augmented views, this run asks for 2 views of crop_flip (pad=4, seed=0)",),
    ),
    Case("cache-views-unaugmented", FROM_CACHE + " --set cache.views=2", ("cache.views records augmented views",)),
    # --- `distill cache` ---
    Case(
        "cache-without-folder",
        "cache {config} --set teacher.weights={teacher}",
        ("distill cache needs", "teacher.cache"),
    ),
    Case(
        "cache-weights-truncated",
        CACHE.replace("{teacher}", "{tmp}/copy.safetensors"),
        ("copy.safetensors is not a readable safetensors file",),
        copied("teacher", half),
    ),
    Case(
        "cache-into-other-cache",
        CACHE.replace("{tmp}/new", "{cache}") + " --set cache.dtype=float32",
        ("holds a cache of something else (dtype differ)",),
    ),
    Case(
        "cache-into-damaged-cache",
        CACHE.replace("{tmp}/new", "{tmp}/cache"),
        ("manifest.json is damaged",),
        copied_cache(in_file("manifest.json", half)),
    ),
    Case("cache-into-a-file", CACHE, ("teacher.cache", "new is a file"), write("new", "mine")),
    Case("cache-unknown-feature", CACHE + " --set cache.features=[hiden1]", ("cache.features: teacher has no module",)),
    # --- runs already on disk ---
    Case("train-over-finished-run", "train {run_config}", ("already holds a run", "--resume")),
    Case("resume-with-other-lr", "train {run_config} --resume --set train.lr=0.5", ("--resume: train.lr is 0.5",)),
    Case(
        "out-dir-is-a-file",
        TRAIN + " --set out_dir={tmp}/afile",
        ("afile is a file, not a folder",),
        write("afile", "mine"),
    ),
    Case("run-dir-is-a-file", TRAIN, ("tiny is a file",), write("runs/tiny", "mine")),
    Case("run-dir-holds-other-files", TRAIN, ("holds other files",), write("runs/tiny/notes.txt", "mine")),
    Case(
        "resume-torn-checkpoint-pointer",
        "train {tmp}/runs/tiny/config.yaml --resume",
        ("student/checkpoints/last.json is corrupt",),
        resume_from_pointer('{"ep'),
    ),
    # --- report, export, eval of an exported file ---
    Case("report-not-a-run", "report {tmp}", ("no config.yaml",)),
    Case(
        "report-unfinished",
        "report {tmp}/runs/tiny",
        ("no summary.json", "distill train"),
        copied_run(deleted("summary.json")),
    ),
    Case(
        "report-no-student",
        "report {tmp}/runs/tiny",
        ("no finished", "--resume"),
        copied_run(deleted("student.safetensors")),
    ),
    Case("export-not-a-run", "export {tmp}", ("no config.yaml",)),
    Case(
        "export-no-student",
        "export {tmp}/runs/tiny",
        ("no finished", "--resume"),
        copied_run(deleted("student.safetensors")),
    ),
    Case("export-int8-torchscript", "export {run} --format torchscript --int8", ("--int8", "--format onnx")),
    Case("export-atol-zero", "export {run} --atol 0", ("--atol must be above 0",)),
    Case("eval-not-an-export", "eval {tmp}/model.txt", ("model.txt", "nor an exported model"), write("model.txt", "x")),
    Case("eval-damaged-onnx", "eval {tmp}/m.onnx", ("m.onnx", "cannot be read as onnx"), write("m.onnx", b"\x00 junk")),
    Case("eval-empty-onnx", "eval {tmp}/m.onnx", ("m.onnx", "cannot be read as onnx"), write("m.onnx", b"")),
    Case("eval-damaged-pt2", "eval {tmp}/m.pt2", ("m.pt2", "cannot be read as torch-export"), write("m.pt2", b"junk")),
    Case("eval-onnx-of-another-tool", "eval {tmp}/other.onnx", ("other.onnx", "no distill metadata"), foreign_onnx),
    # --- eval ---
    Case("eval-missing", "eval {tmp}/nowhere", ("nowhere", "not a run directory")),
    Case("eval-empty-folder", "eval {tmp}", ("not a run directory",)),
    Case("eval-a-file", "eval {run}/summary.json", ("summary.json", "not a run directory")),
    Case("eval-runs-parent", "eval {runs}", ("not a run directory",)),
    Case(
        "eval-config-invalid-yaml", EVAL, ("config.yaml: invalid YAML",), copied_run(in_file("config.yaml", unclosed))
    ),
    Case(
        "eval-config-cut-short", EVAL, ("config.yaml: no", "damaged"), copied_run(in_file("config.yaml", first_lines))
    ),
    Case("eval-config-empty", EVAL, ("config.yaml: the file is empty",), copied_run(in_file("config.yaml", emptied))),
    Case(
        "eval-config-unknown-key",
        EVAL,
        ("config.yaml: bogus: unknown key",),
        copied_run(in_file("config.yaml", lambda b: b + b"bogus: 1\n")),
    ),
    Case(
        "eval-student-truncated",
        EVAL,
        ("student.safetensors is not a readable",),
        copied_run(in_file("student.safetensors", half)),
    ),
    Case(
        "eval-student-empty",
        EVAL,
        ("student.safetensors is not a readable",),
        copied_run(in_file("student.safetensors", emptied)),
    ),
    Case("eval-unfinished", EVAL, ("has no finished teacher and student",), copied_run(deleted("student.safetensors"))),
    Case(
        "eval-weights-swapped",
        EVAL,
        ("student.safetensors was saved from another architecture",),
        copied_run(lambda r: shutil.copy(r / "teacher.safetensors", r / "student.safetensors")),
    ),
    Case("eval-data-gone", EVAL, ("gone does not exist",), copied_run(with_data(name="idx", path="{tmp}/gone"))),
    Case(
        "eval-classes-changed",
        EVAL,
        ("teacher.safetensors was saved from another architecture", "(5, 32)"),
        both(idx(labels=idx_labels(classes=5)), copied_run(with_data(name="idx", path="{tmp}/idx"))),
    ),
    Case(
        "eval-csv-new-category",
        EVAL,
        ("teacher.safetensors was saved from another", "(32, 4) in the file, (32, 5)"),
        both(write("t.csv", COLOURS_CSV + "1,1,green,a\n"), copied_run(with_data(path="{tmp}/t.csv"), "csvrun")),
    ),
    Case(
        "eval-csv-new-class",
        EVAL,
        ("teacher.safetensors was saved from another", "(2, 32) in the file, (3, 32)"),
        both(write("t.csv", COLOURS_CSV + "1,1,red,c\n"), copied_run(with_data(path="{tmp}/t.csv"), "csvrun")),
    ),
    # --- demo ---
    Case("demo-epochs-0", DEMO + " --set train.epochs=0", ("classify.yaml: train.epochs",)),
    Case("demo-batch-size-0", DEMO + " --set data.batch_size=0", ("classify.yaml: data.batch_size",)),
    Case("demo-epochs-huge", DEMO + f" --set train.epochs={HUGE}", ("train.epochs", str(HUGE))),
    Case("demo-unknown-key", DEMO + " --set bogus=1", ("classify.yaml: bogus: unknown key",)),
    Case("demo-bad-channels", DEMO + " --set teacher.args.channels=[0]", ("teacher.args", "channels must be positive")),
    Case(
        "demo-weights-missing", DEMO + " --set teacher.weights={tmp}/t.safetensors", ("t.safetensors does not exist",)
    ),
    Case("demo-idx-without-path", DEMO + " --set data.name=idx", ("data set 'idx' needs data.path",)),
    Case("demo-set-without-value", DEMO + " --set train.epochs", ("expected key=value",)),
    Case("demo-over-a-run-bad-lr", "demo --set out_dir={runs} --set name=tiny --set train.lr=0", ("train.lr",)),
]

# Refused since these cases found them: once tracebacks, exit 1 after training, or leftovers.
TRAINED = TRAIN + " --set teacher.weights={teacher} --set scratch=false"  # straight to the student's first step
CASES += [
    Case("temperature-inf", TRAINED + " --set method.terms.0.temperature=.inf", ("method.terms.0", "temperature")),
    Case("temperature-nan", TRAINED + " --set method.terms.0.temperature=.nan", ("method.terms.0", "temperature")),
    Case(
        "resume-pointer-not-an-object",
        "train {tmp}/runs/tiny/config.yaml --resume",
        ("last.json",),
        resume_from_pointer("[]"),
    ),
    Case("resume-nothing", TRAIN + " --resume", ("holds no run to resume",)),
    Case("cache-refused-in-new-folder", CACHE.replace("/new", "/caches/new") + " --set cache.top_k=11", ("top_k",)),
    Case(
        "demo-over-a-finished-run",
        DEMO + "/runs --set name=tiny --set scratch=false --set train.epochs=1 --set teacher.epochs=1"
        " --set 'teacher.args={channels: [4], hidden: 8}'",
        ("already holds a run",),
        copied_run(lambda run: None),
    ),
    Case(
        "model-beyond-memory",
        TRAIN + " --set teacher.args.hidden=[200000,200000]",
        ("teacher.args: the model has 40,015,200,010 parameters", "more than this machine's"),
    ),
    Case(
        "tensors-nan-input",
        TRAIN + " --set data.name=tensors --set data.path={tmp}/d.npz",
        ("inputs hold NaN or inf (first in sample 5)",),
        write("d.npz", npz_bytes(inputs=NAN_AT_5)),
    ),
    Case(
        "tensors-negative-label",
        TRAIN + " --set data.name=tensors --set data.path={tmp}/d.npz",
        ("labels must be >= 0 (or -1 for no label), found -2 at sample 3",),
        write("d.npz", npz_bytes(labels=np.array([0, 1, 0, -2, 1, 0, 1, 0]))),
    ),
    Case(
        "online-peer-other-classes",
        TRAIN + " --set scratch=false"
        " --set 'method={kind: online, peers: [{model: mlp, args: {hidden: [8], num_classes: 5}}]}'",
        ("method.peers.0.model outputs shape (1, 5)", "check method.peers.0.args"),
    ),
    Case(
        "other-files-beside-temporary-ones",  # refused before anything in the folder is cleaned up
        TRAIN,
        ("holds other files",),
        both(write("runs/tiny/notes.txt", "mine"), write("runs/tiny/.draft.tmp", "mine")),
    ),
    Case(
        "label-smoothing-online",
        TRAIN + " --set 'method={kind: online, label_smoothing: 0.1}'",
        ("method.label_smoothing: not a key of method.kind 'online'",),
    ),
    Case("warmup-inf", TRAIN + " --set train.warmup_epochs=.inf", ("train.warmup_epochs", "finite")),
    Case("clip-nan", TRAIN + " --set train.clip_grad_norm=.nan", ("train.clip_grad_norm",)),
    Case("hidden-word", TRAIN + " --set student.args.hidden=eight", ("a list of positive integers", "'eight'")),
]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under `folder`: an empty folder left behind counts too."""
    return {str(p): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _fill(text: str, places: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: places.get(m[1], m[0]), text)


PARAMS = [pytest.param(case, id=case.id) for case in CASES]


def test_the_table_is_large_and_its_names_unique():
    names = [param.id for param in PARAMS]
    assert len(CASES) >= 60 and len(set(names)) == len(names)
    assert {case.argv.split()[0] for case in CASES} == {"train", "cache", "eval", "demo", "report", "export"}


@pytest.mark.e2e
@pytest.mark.parametrize("case", PARAMS)
def test_malformed_input_is_one_line_and_changes_nothing(case: Case, world: World, tmp_path: Path, capsys):
    places = {**world.places, "tmp": str(tmp_path), "config": str(tmp_path / "c.yaml")}
    write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    if case.setup is not None:
        case.setup(tmp_path, world)
    for saved in tmp_path.glob("runs/*/config.yaml"):  # a copied run's config may name {tmp} places
        saved.write_text(_fill(saved.read_text(), places))
    before, world_before = snapshot(tmp_path), snapshot(world.root)

    code, _, err = run_cli(capsys, *(_fill(word, places) for word in shlex.split(case.argv)))

    assert_user_error(code, err, *case.fragments)
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before, "a file or folder was written, changed or removed"
    assert snapshot(world.root) == world_before, "the finished runs or the cache changed"


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["trian", "c.yaml"], "invalid choice: 'trian'"),
        (["train"], "the following arguments are required: config"),
        (["train", "c.yaml", "--bogus"], "unrecognized arguments: --bogus"),
        (["eval"], "the following arguments are required: RUN_DIR|EXPORTED"),
        (["export", "runs/x", "--format", "tflite"], "invalid choice: 'tflite'"),
        (["report"], "the following arguments are required: run_dir"),
        ([], "the following arguments are required: command"),
    ],
)
def test_command_line_mistakes_are_one_line_too(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith("distill: error: ") and err.count("\n") == 1, err
    assert fragment in err
