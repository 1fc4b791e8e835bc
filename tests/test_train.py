import errno
import json
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import DictBatches, blobs, tiny_net
from distill import Distiller, DistillError, Supervised, TrainingDiverged, losses
from distill.train import Checkpoints, TrainOptions, evaluate, fit
from distill.train.schedule import lr_factor

OPTIONS = dict(optimizer="sgd", lr=0.05, schedule="cosine", warmup_epochs=1, progress=False, log_every=2)


class StopAfter:
    """Interrupts training after `epochs` epochs, as a crash or Ctrl-C would."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_end(self, record):
        if record["epoch"] == self.epochs:
            raise KeyboardInterrupt


def make_run(dropout=0.2):
    train, val = blobs()
    student = torch.nn.Sequential(tiny_net(hidden=8), torch.nn.Dropout(dropout))  # dropout draws from the RNG
    module = Distiller(student, tiny_net(hidden=32), [losses.KD(temperature=2.0, alpha=0.5)])
    return module, DataLoader(train, batch_size=16, shuffle=True), DataLoader(val, batch_size=32)


def weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.e2e
def test_resume_continues_the_exact_run(tmp_path):
    module, train, val = make_run()
    fit(module, train, val, TrainOptions(epochs=4, **OPTIONS), run_dir=tmp_path / "straight")
    straight = weights(module)

    module, train, val = make_run()
    with pytest.raises(KeyboardInterrupt):
        fit(module, train, val, TrainOptions(epochs=4, **OPTIONS), run_dir=tmp_path / "split", callbacks=[StopAfter(2)])
    module, train, val = make_run()  # a fresh process: new objects, state only from disk
    history = fit(module, train, val, TrainOptions(epochs=4, **OPTIONS), run_dir=tmp_path / "split", resume=True)

    for key, value in straight.items():
        assert torch.equal(value, module.state_dict()[key]), key
    assert [r["epoch"] for r in history.epochs] == [1, 2, 3, 4]
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    straight_steps = [
        json.loads(line)["step"] for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == straight_steps  # no step lost or written twice


def test_resume_drops_metrics_written_after_the_checkpoint(tmp_path):
    module, train, val = make_run()
    with pytest.raises(KeyboardInterrupt):
        fit(module, train, val, TrainOptions(epochs=3, **OPTIONS), run_dir=tmp_path, callbacks=[StopAfter(1)])
    with open(tmp_path / "metrics.jsonl", "a") as f:  # lines of a step the checkpoint never saw, and a torn line
        f.write(json.dumps({"step": 999, "train/loss": 1.0}) + "\n" + '{"step": 10')
    module, train, val = make_run()
    fit(module, train, val, TrainOptions(epochs=3, **OPTIONS), run_dir=tmp_path, resume=True)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert 999 not in steps and steps == sorted(steps)


@pytest.mark.parametrize(
    "fault, where",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "torch.save"),
        (PermissionError(errno.EACCES, "Permission denied"), "distill.weights.save_model"),
        (OSError(errno.ENOSPC, "No space left on device"), "distill.train.checkpoint.write_json"),
    ],
)
def test_a_failed_checkpoint_write_stops_the_run_and_keeps_the_previous_one(tmp_path, monkeypatch, fault, where):
    module, train, val = make_run()
    fit(module, train, val, TrainOptions(epochs=1, **OPTIONS), run_dir=tmp_path)
    before = weights(module)

    def fail(*args, **kwargs):
        raise fault

    monkeypatch.setattr(where, fail)
    module, train, val = make_run()
    with pytest.raises(DistillError, match=rf"{fault.strerror}; the last good checkpoint \(epoch 1\) is kept"):
        fit(module, train, val, TrainOptions(epochs=3, **OPTIONS), run_dir=tmp_path, resume=True)
    monkeypatch.undo()

    checkpoints = Checkpoints(tmp_path / "checkpoints")
    assert checkpoints.pointer("last")["epoch"] == 0
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))  # no half-written folder left behind
    fresh, _, _ = make_run()
    state = checkpoints.load("last", fresh)
    assert state["epoch"] == 0
    for key, value in before.items():
        assert torch.equal(value, fresh.state_dict()[key])


def test_only_last_the_one_before_it_and_best_checkpoints_are_kept(tmp_path):
    module, train, val = make_run()
    fit(module, train, val, TrainOptions(epochs=4, **OPTIONS), run_dir=tmp_path)
    checkpoints = Checkpoints(tmp_path / "checkpoints")
    kept = {p.name for p in (tmp_path / "checkpoints").glob("epoch-*")}
    last = checkpoints.pointer("last")
    assert kept == {last["dir"], last["previous"], checkpoints.pointer("best")["dir"]}
    assert last["epoch"] == 3 and last["previous"] == "epoch-0002"


def test_a_checkpoint_whose_bytes_changed_is_refused_and_the_previous_one_offered(tmp_path):
    module, train, val = make_run()
    fit(module, train, val, TrainOptions(epochs=3, **OPTIONS), run_dir=tmp_path)
    root = tmp_path / "checkpoints"
    weights = root / "epoch-0002" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight: the file still loads
    weights.write_bytes(bytes(data))
    with pytest.raises(DistillError) as info:
        fit(module, train, val, TrainOptions(epochs=4, **OPTIONS), run_dir=tmp_path, resume=True)
    message = str(info.value)
    assert "model.safetensors changed on disk after it was written" in message and "\n" not in message
    assert (
        f"the previous complete checkpoint is {root / 'epoch-0001'} (epoch 2): delete {root / 'epoch-0002'}" in message
    )
    shutil.rmtree(root / "epoch-0002")  # as offered
    history = fit(module, train, val, TrainOptions(epochs=3, **OPTIONS), run_dir=tmp_path, resume=True)
    assert [record["epoch"] for record in history.epochs] == [1, 2, 3]
    assert Checkpoints(root).pointer("last")["dir"] == "epoch-0002" and (root / "epoch-0002" / "sha256.json").exists()


class Exploding(torch.nn.Module):
    """A module whose loss turns NaN at its 5th training step."""

    def __init__(self):
        super().__init__()
        self.inner = Supervised(tiny_net())
        self.calls = 0

    def forward(self, batch):
        self.calls += self.training  # training steps only, not the dry run before them
        out = self.inner(batch)
        if self.calls == 5:
            out["loss"] = out["loss"] * float("nan")
        return out


def test_a_nan_loss_stops_the_run_naming_the_step(tmp_path):
    train, _ = blobs()
    loader = DataLoader(train, batch_size=16)  # 6 steps an epoch: the NaN comes in epoch 1, step 5
    with pytest.raises(TrainingDiverged, match=r"at step 5 \(epoch 1\)"):
        fit(Exploding(), loader, None, TrainOptions(epochs=2, **OPTIONS), run_dir=tmp_path)
    assert Checkpoints(tmp_path / "checkpoints").pointer("last") is None  # nothing written from the bad epoch


class Zeroed(Exploding):
    """The same run, but its 5th step has a zero loss: no gradient, so plain SGD makes no update."""

    def forward(self, batch):
        self.calls += self.training
        out = self.inner(batch)
        return {**out, "loss": out["loss"] * 0.0} if self.calls == 5 else out


def test_skip_makes_no_update_at_a_nan_step_and_counts_it(tmp_path):
    train, _ = blobs()
    options = TrainOptions(epochs=2, nonfinite="skip", momentum=0.0, weight_decay=0.0, **OPTIONS)
    skipping, zeroed = Exploding(), Zeroed()
    history = fit(skipping, DataLoader(train, batch_size=16), None, options, run_dir=tmp_path / "skip")
    fit(zeroed, DataLoader(train, batch_size=16), None, options.model_copy(update={"nonfinite": "stop"}))
    assert [record["train/skipped_steps"] for record in history.epochs] == [1, 0]
    for a, b in zip(skipping.parameters(), zeroed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert Checkpoints(tmp_path / "skip" / "checkpoints").pointer("last")["epoch"] == 1


class AlwaysNaN(Exploding):
    def forward(self, batch):
        out = super().forward(batch)
        return {**out, "loss": out["loss"] * float("nan")} if self.calls >= 2 else out


def test_too_many_skipped_steps_stop_the_run(tmp_path):
    train, _ = blobs()
    options = TrainOptions(epochs=2, nonfinite="skip", max_skips=2, **OPTIONS)
    with pytest.raises(TrainingDiverged, match="3 steps of epoch 1 had a NaN .* more than train.max_skips=2"):
        fit(AlwaysNaN(), DataLoader(train, batch_size=16), None, options, run_dir=tmp_path)


def test_gradient_accumulation_equals_a_bigger_batch(tmp_path):
    train, _ = blobs()
    opts = dict(epochs=1, optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant", progress=False)
    small, big = Supervised(tiny_net()), Supervised(tiny_net())
    fit(small, DataLoader(train, batch_size=8), None, TrainOptions(grad_accum=4, **opts))
    fit(big, DataLoader(train, batch_size=32), None, TrainOptions(**opts))
    for a, b in zip(small.parameters(), big.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_bf16_autocast_and_clipping_train(loaders):
    train, val = loaders
    module = Supervised(tiny_net())
    before = evaluate(module, val, torch.device("cpu"))
    history = fit(module, train, val, TrainOptions(epochs=2, precision="bf16", clip_grad_norm=1.0, progress=False))
    last = history.epochs[-1]
    assert last["val/loss"] < before["val/loss"] / 2 and last["val/accuracy"] > 2 / 3  # 3 classes: chance is 1/3


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("constant", 50, 1.0),
        ("cosine", 0, 1.0),
        ("cosine", 50, 0.5),
        ("cosine", 100, 0.0),
        ("multistep", 29, 1.0),
        ("multistep", 30, 0.1),
        ("multistep", 85, 0.01),
    ],
)
def test_schedules(schedule, step, expected):
    options = TrainOptions(epochs=10, schedule=schedule, milestones=[3, 8] if schedule == "multistep" else [])
    assert lr_factor(step, options, steps_per_epoch=10) == pytest.approx(expected, abs=1e-9)


def test_warmup_ramps_linearly():
    options = TrainOptions(epochs=10, schedule="constant", warmup_epochs=2)
    assert lr_factor(0, options, 10) == pytest.approx(0.01)
    assert lr_factor(10, options, 10) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(20, options, 10) == 1.0


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="milestones"):
        TrainOptions(epochs=10, schedule="multistep")
    with pytest.raises(ValueError, match="epochs"):
        TrainOptions(epochs=0)


def test_tensorboard_events_or_a_clear_install_hint(tmp_path, loaders):
    train, val = loaders
    options = TrainOptions(epochs=1, tensorboard=True, progress=False)
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(DistillError, match=r"pip install 'distill\[tensorboard\]'"):
            fit(Supervised(tiny_net()), train, val, options, run_dir=tmp_path)
        return
    fit(Supervised(tiny_net()), train, val, options, run_dir=tmp_path)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


class NaNGradient(torch.nn.Module):
    """A finite loss whose gradient is NaN: d/dw sqrt(0 * w) at 0."""

    def __init__(self):
        super().__init__()
        self.inner = Supervised(tiny_net())

    def forward(self, batch):
        out = self.inner(batch)
        w = self.inner.model[0].weight
        out["loss"] = out["loss"] + torch.sqrt(0 * w).sum()
        return out


def test_nan_weights_are_never_checkpointed(tmp_path):
    train, _ = blobs()
    with pytest.raises(TrainingDiverged, match="NaN or infinite"):
        fit(NaNGradient(), DataLoader(train, batch_size=16), None, TrainOptions(epochs=2, **OPTIONS), run_dir=tmp_path)
    assert Checkpoints(tmp_path / "checkpoints").pointer("last") is None


def test_a_loss_monitor_keeps_the_lowest(tmp_path, loaders):
    train, val = loaders
    history = fit(
        Supervised(tiny_net()), train, val, TrainOptions(epochs=4, monitor="val/loss", **OPTIONS), run_dir=tmp_path
    )
    losses_by_epoch = {r["epoch"]: r["val/loss"] for r in history.epochs}
    assert history.best["epoch"] == min(losses_by_epoch, key=losses_by_epoch.get)


def test_an_unknown_monitor_fails_before_training(tmp_path, loaders):
    train, val = loaders
    with pytest.raises(DistillError, match="train.monitor: 'val/acc' is not a metric .did you mean 'val/accuracy'"):
        fit(Supervised(tiny_net()), train, val, TrainOptions(epochs=1, monitor="val/acc", **OPTIONS), run_dir=tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_short_last_accumulation_group_is_averaged_over_its_own_size():
    train, _ = blobs(n=60)  # 40 training samples: batches of 8 -> 5 batches, groups of 4 + 1
    opts = dict(epochs=1, optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant", progress=False)
    accumulated, reference = Supervised(tiny_net()), Supervised(tiny_net())
    fit(accumulated, DataLoader(train, batch_size=8), None, TrainOptions(grad_accum=4, **opts))
    two_steps = [torch.utils.data.Subset(train, range(32)), torch.utils.data.Subset(train, range(32, 40))]
    for part in two_steps:  # the same two updates, each from one big batch
        fit(reference, DataLoader(part, batch_size=len(part)), None, TrainOptions(**opts))
    for a, b in zip(accumulated.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def conv_net(width: int) -> torch.nn.Module:
    torch.manual_seed(width)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, width, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(width * 16, 3)
    )


# compile: a whole run of torch.compile's kernel builds, tens of seconds on a CPU
@pytest.mark.parametrize("option", ["channels_last", pytest.param("compile", marks=pytest.mark.e2e)])
def test_compile_and_channels_last_train_the_same_model(option):
    def run(**extra) -> dict[str, torch.Tensor]:
        train, val = (
            DictBatches(part.tensors[0].view(-1, 2, 2, 2).repeat(1, 1, 2, 2), part.tensors[1]) for part in blobs()
        )
        module = Distiller(conv_net(4), conv_net(8), [losses.KD(temperature=2.0, alpha=0.5)])
        options = TrainOptions(epochs=2, **{**OPTIONS, **extra})
        fit(module, DataLoader(train, batch_size=16), DataLoader(val, batch_size=32), options)
        return module.student.state_dict()

    plain, changed = run(), run(**{option: True})
    assert plain.keys() == changed.keys()  # compiled in place: the saved names stay
    for key, value in plain.items():
        assert torch.allclose(changed[key], value, atol=1e-5), key
