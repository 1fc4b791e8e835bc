"""A whole experiment from a config: teacher, optional assistant, scratch baseline, student stages, summary.

runs/NAME/config.yaml              the resolved config
runs/NAME/STAGE/                   each stage's checkpoints/ and metrics.jsonl (teacher, assistant,
                                   scratch, student or student-NAME for each of several stages, online,
                                   gen1, gen2, ...)
runs/NAME/STAGE.safetensors        each stage's result, written when it ends; student.safetensors is
                                   the deployable student (also genK for born-again generations, peerK
                                   for online.peers)
runs/NAME/summary.json             accuracy, agreement, size and speed of every model
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from distill import data
from distill._io import is_temporary, remove_temporaries, write_json, write_text
from distill._lock import FolderLock
from distill.cache import TeacherCache, fingerprint, state_sha256, write_cache
from distill.config import Config, ModelConfig, StageConfig, TermConfig, read_yaml, validate
from distill.distiller import Distiller, Supervised, supervised_options
from distill.errors import ConfigError, DistillError
from distill.losses import KD, LOSSES
from distill.measure import speed
from distill.models import build_model, count_params, user_code
from distill.online import MutualLearning
from distill.registry import build
from distill.selfdistill import SelfDistiller, ensemble_accuracy
from distill.taps import logits_of
from distill.train import Checkpoints, TrainOptions, fit, resolve_device, seed_everything
from distill.weights import load_weights, read_state_dict, save_weights

STAGES = ("teacher", "assistant", "scratch", "student")  # summary.json always has these keys (null when absent)


def _config_field(name: str) -> str:
    """The config group that describes the model saved as NAME.safetensors."""
    if name == "scratch" or name.startswith("gen"):  # born-again generations have the student's architecture
        return "student"
    if name.startswith("peer"):
        return f"online.peers.{int(name.removeprefix('peer')) - 1}"
    return name


def _model_spec(cfg: Config, field: str) -> ModelConfig | None:
    """The model group at a config path: "student", "online.peers.0"; None for an absent optional group."""
    node: Any = cfg
    for part in field.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


@dataclass
class Experiment:
    """The built pieces of a config that every stage shares."""

    cfg: Config
    data: data.ArrayData  # every sample, in the order a teacher cache indexes
    splits: data.DataSplits
    train_loader: DataLoader
    val_loader: DataLoader

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir


def build_experiment(cfg: Config) -> Experiment:
    d = cfg.data
    loaded = data.load(d.name, path=d.path, label_column=d.label_column)
    splits = data.split(loaded, val_fraction=d.val_fraction, seed=d.seed, augment=d.augment)
    train_loader = DataLoader(splits.train, batch_size=d.batch_size, shuffle=True, num_workers=d.num_workers)
    val_loader = DataLoader(splits.val, batch_size=max(d.batch_size, 256), num_workers=d.num_workers)
    return Experiment(cfg, loaded, splits, train_loader, val_loader)


def build_net(exp: Experiment, field: str, weights: str | Path | None, seed: int | None = None) -> nn.Module:
    """The network the config group `field` describes ("teacher", "student", "online.peers.0"), seeded
    (train.seed by default) so that scratch and student start identical."""
    spec = _model_spec(exp.cfg, field)
    seed_everything(exp.cfg.train.seed if seed is None else seed)
    model = build_model(
        spec.model, input_shape=exp.splits.input_shape, num_classes=exp.splits.num_classes, args=spec.args, field=field
    )
    if weights is not None:
        load_weights(model, weights)
    return model


@torch.no_grad()
def _check_outputs_match(exp: Experiment, nets: dict[str, nn.Module]) -> None:
    """One sample through each net before any training: a class-count mismatch fails now, not hours later."""
    sample = exp.splits.train[0]["input"].unsqueeze(0)
    for role, net in nets.items():
        try:
            shape = tuple(net.eval()(sample).shape)
        except RuntimeError as e:
            reason = str(e).strip().splitlines()[0]
            raise DistillError(
                f"{role}.model cannot take the data's inputs of shape {exp.splits.input_shape} ({reason})"
            ) from None
        if shape != (1, exp.splits.num_classes):
            raise DistillError(
                f"{role}.model outputs shape {shape} for one sample, but the data has "
                f"{exp.splits.num_classes} classes; expected (1, {exp.splits.num_classes}); check {role}.args"
            )


def build_terms(exp: Experiment, specs: list[TermConfig], field: str) -> list[nn.Module]:
    """Loss terms from their config entries; `field` names the list in error messages."""
    defaults = {
        "num_samples": len(exp.splits.train) + len(exp.splits.val),  # CRD's memory: one row per sample
        "train_rows": exp.splits.train.indices,  # and its negatives: training rows only
        "label_smoothing": exp.cfg.distill.label_smoothing,
    }
    terms = []
    for i, spec in enumerate(specs):
        where = f"{field}.{i}"
        try:
            loss = LOSSES.get(spec.loss)
        except ConfigError as e:
            raise ConfigError(f"{where}.loss: {e}") from None
        args = {**spec.options, "weight": spec.weight}
        if loss.kind == "features":
            if not (spec.student and spec.teacher):
                raise ConfigError(f"{where}: '{spec.loss}' is a feature loss: give student and teacher module paths")
            args.update(student_layer=spec.student, teacher_layer=spec.teacher)
        elif spec.student or spec.teacher:
            raise ConfigError(f"{where}: '{spec.loss}' works on logits; remove its student/teacher paths")
        terms.append(build(loss, spec.loss, args, where, defaults))
    return terms


def _check_stage(
    exp: Experiment,
    student: nn.Module,
    teacher: nn.Module | TeacherCache,
    terms: list[nn.Module],
    field: str,
    options: TrainOptions,
) -> None:
    """One batch through copies of a stage's Distiller: tap paths, adapters, the losses' view of their inputs
    and train.monitor fail now, not after the teacher has trained for hours."""
    student, terms = copy.deepcopy((student, terms))  # the check must not freeze or size the real ones
    teacher = teacher if isinstance(teacher, TeacherCache) else copy.deepcopy(teacher)
    try:
        names = Distiller(student, teacher, terms).setup(next(iter(exp.val_loader)))
    except DistillError as e:
        raise DistillError(f"{field}: {e}") from None
    _check_monitor(options, names, field)
    for term in terms:
        if hasattr(term, "memory_bytes"):
            print(f"[{exp.cfg.name}] {LOSSES.name_of(term)} memory bank: {term.memory_bytes() / 2**20:.1f} MB")


def _check_monitor(options: TrainOptions, names: list[str], field: str) -> None:
    """train.monitor must name what the module built from `field` reports (its `names`, under val/)."""
    if options.monitor.partition("/")[2] not in names:  # val/accuracy -> accuracy
        raise ConfigError(
            f"train.monitor: '{options.monitor}' is not reported by {field}; it reports "
            f"{', '.join(f'val/{n}' for n in names)}"
        )


def train_stage(
    exp: Experiment, stage: str, module: nn.Module, net: nn.Module, options: TrainOptions, *, resume: bool
) -> None:
    """Train `module` (which wraps `net`) as `stage` unless already done, then write the stage's weights."""
    result = exp.run_dir / f"{stage}.safetensors"
    if result.exists():
        load_weights(net, result)
        return
    _fit_stage(exp, stage, module, options, resume=resume)
    save_weights(net, result, metadata={"stage": stage, "select": options.select})


def _fit_stage(exp: Experiment, stage: str, module: nn.Module, options: TrainOptions, *, resume: bool) -> None:
    """Train `module` in run_dir/stage, continuing its checkpoints on resume; keep the selected epoch."""
    checkpoints = Checkpoints(exp.run_dir / stage / "checkpoints")
    print(f"[{exp.cfg.name}] training {stage} for {options.epochs} epochs")
    fit(
        module,
        exp.train_loader,
        exp.val_loader,
        options,
        run_dir=exp.run_dir / stage,
        resume=resume and checkpoints.pointer("last") is not None,
    )
    if options.select == "best" and checkpoints.pointer("best") is not None:
        checkpoints.load("best", module)


@torch.no_grad()
def _predictions(net: nn.Module, loader: DataLoader, device: torch.device) -> torch.Tensor:
    """Top-1 class of every sample of `loader`, in order."""
    net.eval().to(device)
    return torch.cat([logits_of(net(batch["input"].to(device))).argmax(-1).cpu() for batch in loader])


def describe(exp: Experiment, nets: dict[str, nn.Module]) -> dict[str, Any]:
    """Accuracy, agreement with the teacher (None without one), params, bytes on disk and CPU speed of each
    trained net, one row each under its name; `models` lists them in the order given."""
    device = resolve_device(exp.cfg.train.device)
    predictions = {stage: _predictions(net, exp.val_loader, device) for stage, net in nets.items()}
    labels = exp.splits.val.labels
    teacher_preds = predictions.get("teacher")  # none in self-distillation: no agreement, no ratios
    summary: dict[str, Any] = {"data": exp.splits.description, "val_samples": len(labels), "models": list(nets)}
    summary.update(dict.fromkeys(STAGES))
    for stage, preds in predictions.items():
        summary[stage] = {
            "accuracy": (preds == labels).float().mean().item(),
            "agreement": None if teacher_preds is None else (preds == teacher_preds).float().mean().item(),
            "params": count_params(nets[stage]),
            "size_bytes": (exp.run_dir / f"{stage}.safetensors").stat().st_size,
            **speed(nets[stage], exp.splits.input_shape),
        }
    teacher, student = summary["teacher"], summary["student"]
    keys = ("params", "size_bytes", "latency_ms", "throughput")
    summary["ratios"] = {k: student[k] / teacher[k] for k in keys} if teacher else None
    return summary


def _has_progress(run_dir: Path) -> bool:
    """Whether a run got as far as a checkpoint or a finished stage (a failed start leaves neither)."""
    return any(run_dir.glob("*.safetensors")) or any(run_dir.glob("*/checkpoints/last.json"))


REPLACEABLE = ".replaceable"  # marks a run made with overwrite (the demo's): the next overwrite may replace it


def _prepare_run_dir(cfg: Config, *, resume: bool, overwrite: bool) -> None:
    run_dir, saved = cfg.run_dir, cfg.run_dir / "config.yaml"
    is_run = saved.exists()
    if run_dir.exists() and not run_dir.is_dir():
        raise DistillError(f"{run_dir} is a file; set out_dir or name to a folder")
    if overwrite and is_run and (run_dir / REPLACEABLE).exists():
        shutil.rmtree(run_dir)
        is_run = False
    if resume:
        if not is_run:
            raise DistillError(f"{run_dir} holds no run to resume; start it without --resume")
        _check_same_run(validate(read_yaml(saved), str(saved)), cfg)
    elif is_run and _has_progress(run_dir):
        raise DistillError(
            f"{run_dir} already holds a run; pass --resume to continue it, or set another name (--set name=...)"
        )
    elif run_dir.exists() and not is_run and any(not is_temporary(p) for p in run_dir.iterdir()):
        raise DistillError(f"{run_dir} holds other files; choose another name or out_dir")
    if run_dir.is_dir():  # ours, from here on
        _remove_leftovers(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        write_text(run_dir / REPLACEABLE, "made by `distill demo`, which replaces it when run again\n")
    write_text(saved, cfg.to_yaml())


def _remove_leftovers(run_dir: Path) -> None:
    """What a killed run left half-done (we hold the lock: nothing else writes here): the temporary files
    and checkpoint folders of interrupted writes, and epoch folders an interrupted prune left unnamed."""
    remove_temporaries(run_dir)
    for pointer in run_dir.glob("*/checkpoints/last.json"):
        Checkpoints(pointer.parent).prune()


# Keys that change how a run is carried out, not what it computes: they may differ on resume.
FREE_ON_RESUME = {"train.progress", "train.device", "train.tensorboard", "data.num_workers"}


def _flat(cfg: Config) -> dict[str, Any]:
    """{"train.lr": 0.05, "name": "x", ...}"""
    flat = {}
    for group, value in cfg.model_dump(mode="json").items():
        if isinstance(value, dict):
            flat.update({f"{group}.{key}": v for key, v in value.items()})
        else:
            flat[group] = value
    return flat


def _check_same_run(before: Config, now: Config) -> None:
    """Resuming with other settings would silently mix two experiments into one result."""
    old, new = _flat(before), _flat(now)
    for key in sorted(old.keys() | new.keys()):
        if key not in FREE_ON_RESUME and old.get(key) != new.get(key):
            raise DistillError(
                f"--resume: {key} is {new.get(key)!r} but the run started with {old.get(key)!r}; "
                "resume with the same config"
            )


@dataclass
class Plan:
    """Every network and loss term of a run, built and checked before a file is written."""

    exp: Experiment
    student: nn.Module
    teacher: nn.Module | TeacherCache | None  # a cache when teacher.cache is set; None in self-distillation
    assistant: nn.Module | None
    peers: dict[str, nn.Module]  # online.peers, by the names they are reported under
    stages: list[StageConfig]
    stage_terms: list[list[nn.Module]]
    assistant_terms: list[nn.Module]

    @property
    def student_teacher(self) -> nn.Module | TeacherCache | None:
        """What the student stages learn from: the assistant when there is one (TAKD), else the teacher."""
        return self.teacher if self.assistant is None else self.assistant


def plan(cfg: Config) -> Plan:
    """Build everything first: a bad path, weights file, shape or loss option fails before a file is written."""
    exp = build_experiment(cfg)
    student = build_net(exp, "student", cfg.student.weights)
    own = {"student": student}
    if cfg.assistant is not None:  # teacher -> assistant -> student (TAKD)
        own["assistant"] = build_net(exp, "assistant", cfg.assistant.weights)
    teacher: nn.Module | TeacherCache | None = None
    if cfg.teacher is not None and cfg.teacher.cache is not None:
        teacher = open_cache(exp)
    elif cfg.teacher is not None:
        teacher = own["teacher"] = build_net(exp, "teacher", cfg.teacher.weights)
    peer_fields = _extra_peers(cfg)
    peers = {name: build_net(exp, field, _model_spec(cfg, field).weights) for name, field in peer_fields.items()}
    _check_outputs_match(exp, {**own, **{peer_fields[name]: net for name, net in peers.items()}})
    resolve_device(cfg.train.device)
    stages = [] if cfg.online or cfg.born_again or cfg.self_distill else cfg.student_stages()  # their own way
    field = "stages.{}.terms" if cfg.stages else "distill.terms"
    stage_terms = [build_terms(exp, stage.terms, field.format(i)) for i, stage in enumerate(stages)]
    for i, terms in enumerate(stage_terms):
        _check_stage(exp, student, own.get("assistant", teacher), terms, field.format(i), cfg.stage_options(i))
    if cfg.self_distill is not None:
        _check_self_distill(exp, student)
    assistant_terms = []
    if cfg.assistant is not None:
        assistant_terms = build_terms(exp, cfg.distill.terms, "distill.terms")
        _check_stage(exp, own["assistant"], teacher, assistant_terms, "distill.terms (assistant)", cfg.train)
    return Plan(exp, student, teacher, own.get("assistant"), peers, stages, stage_terms, assistant_terms)


def run(cfg: Config, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Run every stage of `cfg` and write summary.json; returns the summary. One process at a time per run
    directory: a second is refused while the first runs. `overwrite` (the demo's) replaces an earlier run
    made with overwrite, and never any other run."""
    built = plan(cfg)
    with FolderLock(cfg.run_dir):
        _prepare_run_dir(cfg, resume=resume, overwrite=overwrite)
        nets = _train_all(built, resume=resume)
        return _summarize(built, nets)


def _train_all(built: Plan, *, resume: bool) -> dict[str, nn.Module]:
    """Train every stage not finished yet, in order; return every model to report on, in the table's order."""
    exp, cfg = built.exp, built.exp.cfg
    student, teacher, assistant = built.student, built.teacher, built.assistant
    dtype = torch.bfloat16 if cfg.teacher and cfg.teacher.dtype == "bfloat16" else torch.float32

    # --- teacher, scratch baseline (same init and epochs as the student), student stages ---
    nets = {} if teacher is None else {"teacher": teacher}  # the order of the summary's rows
    if cfg.self_distill is not None:
        train_stage(exp, "student", _self_distiller(exp, student), student, cfg.train, resume=resume)
    elif cfg.online is not None:
        _train_online(exp, {"student": student, "teacher": teacher, **built.peers}, resume=resume)
        nets.update(built.peers)
    elif cfg.teacher.weights is None:
        epochs = cfg.teacher.epochs or cfg.train.epochs
        train_stage(exp, "teacher", Supervised(teacher), teacher, supervised_options(cfg.train, epochs), resume=resume)
    generations = _train_generations(exp, teacher, resume=resume) if cfg.born_again else []
    if generations:
        nets.update({f"gen{k}": net for k, net in enumerate(generations, start=1)})
        student = generations[-1]  # the last generation is the run's student
    if assistant is not None:  # learns from the teacher with distill.terms, then teaches the student
        nets["assistant"] = assistant
        distiller = Distiller(assistant, teacher, built.assistant_terms, teacher_dtype=dtype)
        train_stage(exp, "assistant", distiller, assistant, cfg.train, resume=resume)
    if cfg.scratch and not cfg.born_again:  # born-again's model alone is generation 0, the teacher
        nets["scratch"] = build_net(exp, "student", cfg.student.weights)
        scratch = Supervised(nets["scratch"], label_smoothing=cfg.distill.label_smoothing)
        epochs = sum(stage.epochs for stage in built.stages) or cfg.train.epochs
        train_stage(exp, "scratch", scratch, nets["scratch"], supervised_options(cfg.train, epochs), resume=resume)
    for i, (stage, terms) in enumerate(zip(built.stages, built.stage_terms, strict=True)):
        name = f"student-{stage.name}" if cfg.stages else "student"
        distiller = Distiller(student, built.student_teacher, terms, teacher_dtype=dtype)  # freezes it: trained by now
        train_stage(exp, name, distiller, student, cfg.stage_options(i), resume=resume)
    nets["student"] = student
    return nets


def _summarize(built: Plan, nets: dict[str, nn.Module]) -> dict[str, Any]:
    """Keep every model the run reports on, measure each, write summary.json."""
    exp, cfg = built.exp, built.exp.cfg
    generations = [net for name, net in nets.items() if name.startswith("gen")]
    if cfg.stages or generations:
        save_weights(nets["student"], exp.run_dir / "student.safetensors", metadata={"stage": "student"})
    if isinstance(built.teacher, TeacherCache):  # a cached run builds the teacher only to report on it
        nets["teacher"] = build_net(exp, "teacher", cfg.teacher.weights)
    if cfg.teacher is not None and cfg.teacher.weights is not None and not cfg.online:  # online saved its own
        save_weights(nets["teacher"], exp.run_dir / "teacher.safetensors", metadata={"source": "teacher.weights"})
    if cfg.online:
        ran = ["online"]
    elif cfg.self_distill:
        ran = ["student"]
    elif generations:
        ran = [f"gen{k}" for k in range(1, len(generations) + 1)]
    else:
        ran = [stage.name for stage in built.stages]
    summary = {"name": cfg.name, "stages": ran, **describe(exp, nets), "user_code": _code_that_ran(cfg)}
    if generations:
        ensemble = ensemble_accuracy([nets["teacher"], *generations], exp.val_loader)
        summary["born_again"] = {"ensemble_accuracy": ensemble}
    write_json(exp.run_dir / "summary.json", summary)
    return summary


def _self_distiller(exp: Experiment, student: nn.Module) -> SelfDistiller:
    """The student with the auxiliary heads of self_distill; what it trains is saved without them."""
    spec = exp.cfg.self_distill
    return SelfDistiller(student, spec.taps, **spec.model_dump(exclude={"taps"}))


def _check_self_distill(exp: Experiment, student: nn.Module) -> None:
    """One batch through a copy: a tap that is not a module, or a map a head cannot take, fails now."""
    try:
        names = _self_distiller(exp, copy.deepcopy(student)).setup(next(iter(exp.val_loader)))
    except DistillError as e:
        raise DistillError(f"self_distill: {e}") from None
    _check_monitor(exp.cfg.train, names, "self_distill")


def _train_generations(exp: Experiment, teacher: nn.Module, *, resume: bool) -> list[nn.Module]:
    """Born-again networks: generation k (a fresh copy of the teacher's architecture, seeded train.seed + k)
    learns from generation k - 1, the teacher being generation 0. Each is a stage `genK` of its own."""
    spec, generations = exp.cfg.born_again, [teacher]
    for k in range(1, spec.generations + 1):
        net = build_net(exp, "student", None, seed=exp.cfg.train.seed + k)
        kd = KD(spec.temperature, spec.alpha, label_smoothing=exp.cfg.distill.label_smoothing)
        options = exp.cfg.train.model_copy(update={"seed": exp.cfg.train.seed + k})
        train_stage(exp, f"gen{k}", Distiller(net, generations[-1], [kd]), net, options, resume=resume)
        generations.append(net)
    return generations[1:]


def _code_that_ran(cfg: Config) -> list[dict[str, str]]:
    """The user modules the config's `package.module:factory` models imported: which config key, file, sha256.
    Nothing else in a run imports code: weights load without pickle, YAML is read safely."""
    fields = ["teacher", "assistant", "student", *_extra_peers(cfg).values()]
    ran = []
    for field in fields:
        spec = _model_spec(cfg, field)
        if spec is not None and (code := user_code(spec.model)) is not None:
            ran.append({"config": f"{field}.model", **code})
    return ran


def _extra_peers(cfg: Config) -> dict[str, str]:
    """online.peers by the names they are saved and reported under: {"peer1": "online.peers.0", ...}."""
    peers = cfg.online.peers if cfg.online else []
    return {f"peer{k}": f"online.peers.{k - 1}" for k in range(1, len(peers) + 1)}


def _train_online(exp: Experiment, peers: dict[str, nn.Module], *, resume: bool) -> None:
    """The student, the teacher and online.peers trained together (`MutualLearning`, each peer with its own
    optimizer and checkpoint file); each result written as NAME.safetensors. Only the teacher may learn from
    the labels alone (online.mutual false)."""
    online = exp.cfg.online
    results = {name: exp.run_dir / f"{name}.safetensors" for name in peers}
    if all(path.exists() for path in results.values()):
        for name, path in results.items():
            load_weights(peers[name], path)
        return
    module = MutualLearning(
        list(peers.values()),
        temperature=online.temperature,
        weight=online.weight,
        learns_from_peers=[online.mutual or name != "teacher" for name in peers],
        names=list(peers),
    )
    _fit_stage(exp, "online", module, exp.cfg.train, resume=resume)
    for name, path in results.items():
        save_weights(peers[name], path, metadata={"stage": "online", "select": exp.cfg.train.select})


def _cache_identity(exp: Experiment) -> tuple[str, dict[str, Any]]:
    """The teacher weights' hash (from the file: no teacher is built) and what a cache must match."""
    teacher_sha256 = state_sha256(read_state_dict(exp.cfg.teacher.weights))
    expected = fingerprint(
        teacher_sha256,
        exp.data.inputs,
        exp.data.labels,
        data=exp.data.description,
        augment=exp.cfg.data.augment,
        dtype=exp.cfg.cache.dtype,
        top_k=exp.cfg.cache.top_k,
        features=exp.cfg.cache.features,
    )
    return teacher_sha256, expected


def open_cache(exp: Experiment) -> TeacherCache:
    """The run's teacher cache, refused when stale: another teacher, other data or order, other augmentation."""
    _, expected = _cache_identity(exp)
    identity = {key: expected[key] for key in ("teacher_sha256", "data", "data_sha256", "num_samples", "augment")}
    cache = TeacherCache(exp.cfg.teacher.cache, identity)
    if cache.num_classes != exp.splits.num_classes:
        raise DistillError(f"teacher.cache holds {cache.num_classes} classes, the data has {exp.splits.num_classes}")
    return cache


def make_cache(cfg: Config) -> dict[str, Any]:
    """`distill cache`: run the teacher once over every sample and store its outputs in teacher.cache."""
    if cfg.teacher is None or cfg.teacher.cache is None or cfg.teacher.weights is None:
        raise ConfigError("distill cache needs teacher.weights (a trained teacher) and teacher.cache (the folder)")
    exp = build_experiment(cfg)
    teacher = build_net(exp, "teacher", cfg.teacher.weights)
    teacher_sha256, expected = _cache_identity(exp)
    start = time.perf_counter()
    with FolderLock(cfg.teacher.cache):
        manifest = write_cache(
            cfg.teacher.cache,
            teacher,
            exp.data.inputs,
            exp.data.labels,
            teacher_sha256=teacher_sha256,
            data=expected["data"],
            augment=expected["augment"],
            dtype=cfg.cache.dtype,
            top_k=cfg.cache.top_k,
            features=cfg.cache.features,
            batch_size=cfg.cache.batch_size,
            device=resolve_device(cfg.train.device),
            progress=cfg.train.progress,
        )
    size = sum(f.stat().st_size for f in Path(cfg.teacher.cache).glob("*.npy"))
    samples = manifest["fingerprint"]["num_samples"]
    return {
        "path": cfg.teacher.cache,
        "samples": samples,
        "shards": len(manifest["shards"]),
        "bytes": size,
        "bytes_per_sample": size / samples,
        "seconds": time.perf_counter() - start,
    }


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    """Re-measure the models a finished run saved, on its validation split."""
    run_dir = Path(run_dir).resolve()
    saved = run_dir / "config.yaml"
    if not saved.exists():
        raise DistillError(f"{run_dir} is not a run directory (no config.yaml); give the folder `distill train` made")
    cfg = validate(read_yaml(saved), str(saved))
    cfg = cfg.model_copy(update={"out_dir": str(run_dir.parent), "name": run_dir.name})
    exp = build_experiment(cfg)
    names = _saved_models(run_dir)
    if "student" not in names or (cfg.teacher is not None and "teacher" not in names):
        raise DistillError(f"{run_dir} has no finished teacher and student yet; finish it with --resume")
    nets = {name: build_net(exp, _config_field(name), run_dir / f"{name}.safetensors") for name in names}
    return {"name": cfg.name, **describe(exp, nets), "user_code": _code_that_ran(cfg)}


def _saved_models(run_dir: Path) -> list[str]:
    """The names of the models a run saved, in the summary's order: teacher, assistant, peers, generations,
    scratch, student."""

    def numbered(prefix: str) -> list[str]:
        found = (p.stem for p in run_dir.glob(f"{prefix}*.safetensors"))
        return sorted((n for n in found if n.removeprefix(prefix).isdigit()), key=lambda n: int(n[len(prefix) :]))

    order = ["teacher", "assistant", *numbered("peer"), *numbered("gen"), "scratch", "student"]
    return [name for name in order if (run_dir / f"{name}.safetensors").exists()]
