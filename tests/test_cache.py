"""The teacher-output cache: the same training as a live teacher, refused when stale, resumable, top-k exact."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from conftest import TINY_RUN, write_config
from distill import Distiller, DistillError, losses
from distill.cache.logits import TeacherCache, topk_logits
from distill.cache.write import write_cache
from distill.cli import main
from distill.config import load_config
from distill.models import cnn, mlp
from distill.modules.teacher import CachedTeacher
from distill.tasks.caches import open_cache
from distill.tasks.classify import build_experiment
from distill.weights import load_weights, save_weights


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g)


@pytest.fixture
def teacher():
    torch.manual_seed(1)
    return cnn((1, 8, 8), 10, channels=(8, 16), hidden=16).eval()


def dict_loader(inputs, labels, **kwargs):
    samples = [
        {"input": x, "label": y, "index": torch.tensor(i)} for i, (x, y) in enumerate(zip(inputs, labels, strict=True))
    ]
    return DataLoader(samples, **kwargs)


def step_losses(distiller, loader, steps=4):
    """The loss of each of the first `steps` SGD steps."""
    optimizer = torch.optim.SGD(distiller.parameters(), lr=0.1)
    seen = []
    for batch, _ in zip(loader, range(steps), strict=False):
        loss = distiller(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seen.append(loss.item())
    return seen


def test_cached_and_live_teachers_train_identically(tmp_path, images, teacher):
    inputs, labels = images
    write_cache(
        tmp_path / "c",
        teacher,
        inputs,
        labels,
        data="test",
        dtype="float32",
        shard_rows=16,
        features=["block2"],
        progress=False,
    )
    cache = TeacherCache(tmp_path / "c")
    terms = lambda: [losses.KD(temperature=2.0, alpha=0.5), losses.SP("block1", "block2")]  # noqa: E731
    results = []
    for source in (teacher, cache):
        torch.manual_seed(5)
        student = cnn((1, 8, 8), 10, channels=(4, 8), hidden=8)
        loader = dict_loader(inputs, labels, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3))
        results.append(step_losses(Distiller(student, source, terms()), loader))
    assert results[0] == pytest.approx(results[1], rel=1e-6, abs=1e-7)


def test_a_cache_read_matches_the_teacher_row_for_row(tmp_path, images, teacher):
    inputs, labels = images
    write_cache(tmp_path / "c", teacher, inputs, labels, data="test", dtype="float16", shard_rows=7, progress=False)
    index = torch.tensor([39, 0, 8, 7, 21])  # across shards, out of order
    with torch.no_grad():
        expected = teacher(inputs[index])
    got = TeacherCache(tmp_path / "c").read(index)["logits"]
    torch.testing.assert_close(got, expected, atol=1e-2, rtol=1e-2)  # float16 storage


def test_topk_targets_keep_the_top_probabilities_and_the_rest_mass():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 12, generator=g) * 3
    values, indices = logits.topk(4, dim=-1)
    rebuilt = topk_logits(values, indices, logits.logsumexp(-1), num_classes=12)
    p, q = F.softmax(logits, -1), F.softmax(rebuilt, -1)
    torch.testing.assert_close(q.gather(-1, indices), p.gather(-1, indices))  # top-k exact
    torch.testing.assert_close(q.sum(-1), torch.ones(5))
    rest = torch.ones_like(p, dtype=torch.bool).scatter(-1, indices, False)
    torch.testing.assert_close((q * rest).sum(-1), (p * rest).sum(-1))  # the remaining mass, spread evenly
    assert torch.allclose(q[rest].view(5, 8), q[rest].view(5, 8)[:, :1].expand(5, 8))


def test_a_topk_cache_serves_kd_and_refuses_losses_that_need_everything(tmp_path, images, teacher):
    inputs, labels = images
    write_cache(tmp_path / "c", teacher, inputs, labels, data="test", top_k=3, progress=False)
    cache = TeacherCache(tmp_path / "c")
    student = mlp((1, 8, 8), 10, hidden=(8,))
    batch = next(iter(dict_loader(inputs, labels, batch_size=8)))
    assert torch.isfinite(Distiller(student, cache, [losses.KD()])(batch)["loss"])
    with pytest.raises(DistillError, match="loss term 'dkd' needs the teacher's full distribution"):
        Distiller(student, cache, [losses.DKD()])


def test_an_interrupted_cache_resumes_to_the_same_files(tmp_path, images, teacher, monkeypatch):
    inputs, labels = images
    write_cache(tmp_path / "whole", teacher, inputs, labels, data="test", shard_rows=8, progress=False)

    import distill.cache.write as cache_module

    real = cache_module._teacher_outputs
    calls = {"n": 0}

    def dies_in_shard_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as a kill would, mid-run
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_module, "_teacher_outputs", dies_in_shard_3)
    with pytest.raises(KeyboardInterrupt):
        write_cache(tmp_path / "split", teacher, inputs, labels, data="test", shard_rows=8, progress=False)
    assert len(json.loads((tmp_path / "split" / "manifest.json").read_text())["shards"]) == 2
    monkeypatch.setattr(cache_module, "_teacher_outputs", real)
    write_cache(tmp_path / "split", teacher, inputs, labels, data="test", shard_rows=8, progress=False)
    for f in sorted((tmp_path / "whole").glob("*.npy")):
        assert f.read_bytes() == (tmp_path / "split" / f.name).read_bytes()
    assert not list((tmp_path / "split").glob(".*tmp"))


def test_stale_damaged_and_unfinished_caches_are_refused(tmp_path, images, teacher):
    inputs, labels = images
    write_cache(tmp_path / "c", teacher, inputs, labels, data="test", shard_rows=16, progress=False)
    identity = json.loads((tmp_path / "c" / "manifest.json").read_text())["fingerprint"]
    other = {**identity, "teacher_sha256": "0" * 64}
    with pytest.raises(DistillError, match="is stale: its teacher_sha256 differ"):
        TeacherCache(tmp_path / "c", other)
    with pytest.raises(DistillError, match="holds a cache of something else"):
        write_cache(tmp_path / "c", teacher, inputs.flip(0), labels.flip(0), data="test", progress=False)
    shard = tmp_path / "c" / "logits-00001.npy"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DistillError, match="logits-00001.npy is missing or damaged"):
        TeacherCache(tmp_path / "c")
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    del manifest["shards"]["2"]
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DistillError, match="is unfinished"):
        TeacherCache(tmp_path / "c")


# ----- from the command line -----


@pytest.fixture
def cached_config(tmp_path):
    torch.manual_seed(0)
    teacher = mlp((1, 8, 8), 10, hidden=(32,))
    save_weights(teacher, tmp_path / "teacher.safetensors")
    text = TINY_RUN.format(out=tmp_path / "runs").replace(
        "teacher: {model: mlp, args: {hidden: [32]}}",
        f"teacher: {{model: mlp, args: {{hidden: [32]}}, weights: {tmp_path / 'teacher.safetensors'}, "
        f"cache: {tmp_path / 'cache'}}}",
    )
    return write_config(tmp_path / "c.yaml", text)


@pytest.mark.e2e
def test_cache_then_train_from_it(cached_config, tmp_path, capsys):
    assert main(["cache", str(cached_config)]) == 0
    assert "bytes per sample" in capsys.readouterr().out
    assert main(["train", str(cached_config)]) == 0
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["teacher"]["params"] > summary["student"]["params"]


def test_a_changed_teacher_or_shuffled_data_makes_the_cache_stale(cached_config, tmp_path, capsys):
    assert main(["cache", str(cached_config)]) == 0
    torch.manual_seed(7)
    save_weights(mlp((1, 8, 8), 10, hidden=(32,)), tmp_path / "teacher.safetensors")  # retrained teacher
    assert main(["train", str(cached_config)]) == 2
    assert "is stale: its teacher_sha256 differ" in capsys.readouterr().err


def test_augmented_data_needs_views_or_an_explicit_yes(cached_config, capsys):
    assert main(["cache", str(cached_config), "--set", "data.augment=crop_flip"]) == 2
    err = capsys.readouterr().err
    assert "set cache.views: K" in err and "cache.allow_augmented: true" in err
    assert main(["cache", str(cached_config), "--set", "cache.views=2"]) == 2
    assert "cache.views records augmented views of the samples: set data.augment" in capsys.readouterr().err


AUGMENTED = ["--set", "data.augment=crop_flip", "--set", "cache.views=3", "--set", "cache.dtype=float32"]


def test_an_augmented_cache_serves_the_teacher_on_the_pixels_the_student_sees(cached_config, tmp_path):
    assert main(["cache", str(cached_config), *AUGMENTED]) == 0
    cfg = load_config(cached_config, AUGMENTED[1::2])
    exp = build_experiment(cfg)
    cache = open_cache(exp)
    assert cache.views == {"augment": "crop_flip", "pad": 4, "count": 3, "seed": 0}
    teacher = mlp((1, 8, 8), 10, hidden=(32,))
    load_weights(teacher, cfg.teacher.weights)
    served = CachedTeacher(cache)
    for epoch in (0, 1, 2, 3, 7):
        for part in (exp.train_loader.batch_sampler, exp.splits.train):
            part.seed_epoch(5, epoch)  # the run's seed orders the batches; the cache's seed draws the views
        batch = next(iter(exp.train_loader))
        assert (batch["view"] == epoch % 3).all()
        with torch.no_grad():
            assert torch.allclose(served(batch)[0], teacher(batch["input"]), atol=1e-5)
    assert torch.equal(first_rows(exp, 0), first_rows(exp, 3)) and not torch.equal(
        first_rows(exp, 0), first_rows(exp, 1)
    )
    val = next(iter(exp.val_loader))  # validation is never augmented: the clean outputs
    with torch.no_grad():
        assert "view" not in val and torch.allclose(served(val)[0], teacher(val["input"]), atol=1e-5)


def first_rows(exp, epoch: int) -> torch.Tensor:
    exp.splits.train.seed_epoch(0, epoch)
    return torch.stack([exp.splits.train[i]["input"] for i in range(8)])


@pytest.mark.e2e
def test_train_from_an_augmented_cache_and_refuse_one_of_other_views(cached_config, tmp_path, capsys):
    assert main(["cache", str(cached_config), *AUGMENTED]) == 0
    assert main(["train", str(cached_config), *AUGMENTED, "--set", "train.epochs=4"]) == 0
    for other, made in [
        ("cache.views=2", "3 views of crop_flip (pad=4, seed=0), this run asks for 2 views"),
        ("data.seed=1", "3 views of crop_flip (pad=4, seed=0), this run asks for 3 views of crop_flip (pad=4, seed=1)"),
    ]:
        assert main(["train", str(cached_config), *AUGMENTED, "--set", other, "--set", "name=other"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"was made for {made}" in err, err
    assert not (tmp_path / "runs" / "other").exists()
