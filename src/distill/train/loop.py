"""One plain training loop. It knows nothing of distillation: it trains any module whose
`forward(batch)` returns a dict of scalars with a "loss" entry, and averages the other entries as metrics."""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from distill._tensors import Batch
from distill.errors import DistillError, TrainingDiverged
from distill.registry import did_you_mean
from distill.train import parallel
from distill.train.checkpoint import Checkpoints, rng_state, set_rng_state
from distill.train.metrics import MetricsLog
from distill.train.options import TrainOptions
from distill.train.schedule import Optimizers
from distill.train.sharding import Sharded, all_finite, is_sharded, without_gradient_sync

logger = logging.getLogger(__name__)
TOKENS = "tokens"  # what a module reports when its values are means over tokens, not over samples
SETUP_ROWS = 8  # rows of a batch that size a module's lazy parts: enough for losses that compare rows


class Callback(Protocol):
    def on_epoch_end(self, record: dict[str, Any]) -> None: ...


class EpochSeeded(Protocol):
    """A sampler or data set whose draws (order, augmentation) depend on (seed, epoch) alone: `fit` tells it
    both before each epoch, so a resumed or data-parallel run draws what an uninterrupted one does."""

    def seed_epoch(self, seed: int, epoch: int) -> None: ...


@dataclass
class History:
    """What a run produced: one record per epoch (train/ and val/ metrics) and the best epoch's record."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DistillError(f"train.device: '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DistillError(f"train.device is '{name}' but no CUDA device is available; use cpu or auto")
    return device


def _to_device(batch: Batch, device: torch.device, channels_last: bool = False) -> Batch:
    moved = {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}
    if channels_last and moved["input"].ndim == 4:
        moved["input"] = moved["input"].contiguous(memory_format=torch.channels_last)
    return moved


def _batch_size(batch: Batch) -> int:
    return len(next(v for v in batch.values() if isinstance(v, Tensor)))


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _is_better(value: float, best: dict[str, Any] | None, mode: str) -> bool:
    if best is None:
        return True
    return value > best["value"] if mode == "max" else value < best["value"]


def _seed_epoch(loader: Iterable[Batch], seed: int, epoch: int) -> None:
    for part in (getattr(loader, "batch_sampler", None), getattr(loader, "dataset", None)):
        if callable(getattr(part, "seed_epoch", None)):
            part.seed_epoch(seed, epoch)


@torch.no_grad()
def evaluate(
    module: nn.Module,
    loader: Iterable[Batch],
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
) -> dict:
    """Every scalar the module returns, averaged over samples (over tokens, for a module that reports the
    `tokens` its values are means over), under `val/`. One host sync at the end. In a data-parallel run each
    process takes every N-th batch (all of them when there are fewer batches than processes) and the sums
    are added up across processes. A sharded module's forward is a collective: a process with a batch fewer
    than the first runs its last one again, and counts it once."""
    module.eval()
    sums: dict[str, Tensor] = {}
    count, runs = 0, 0
    shards = parallel.world() if len(loader) >= parallel.world() else 1
    for i, batch in enumerate(loader):
        if i % shards != parallel.rank() % shards:
            continue
        batch = _to_device(batch, device, channels_last)
        with _autocast(device, precision):
            out = module(batch)
        runs += 1
        n = out.pop(TOKENS, None)
        n = _batch_size(batch) if n is None else n
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + value.detach().float() * n
        count += n
    if is_sharded(module) and runs < math.ceil(len(loader) / shards):
        with _autocast(device, precision):
            module(batch)
    totals = torch.stack([t.double() for t in (torch.as_tensor(count, device=device), *sums.values())])
    count, *values = (parallel.all_sum(totals) if shards > 1 else totals).tolist()  # one reduction, one host sync
    if count == 0:
        raise DistillError("the validation data is empty: no batch to evaluate on")
    return {f"val/{key}": value / count for key, value in zip(sums, values, strict=True)}


class _Window:
    """Running sums of a module's outputs on the device, read back only at log points (the one host sync)."""

    def __init__(self, device: torch.device):
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.finite = torch.ones((), dtype=torch.bool, device=device)
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)

    def add(self, out: dict[str, Tensor], step: int, share: Tensor | float = 1.0) -> None:
        """A batch's values; `share` weighs this process's part of a global batch (see `_share`)."""
        for key, value in out.items():
            self.sums[key] = self.sums.get(key, 0.0) + value.detach().float() * share
        self.count += 1
        self.check(out["loss"].detach(), step)

    def check(self, value: Tensor, step: int) -> None:
        """Remember the first step at which `value` (a loss or a gradient norm) was NaN or infinite."""
        ok = torch.isfinite(value)
        self.first_bad_step = torch.where(~ok & self.finite, step, self.first_bad_step)
        self.finite &= ok

    def read(self, epoch: int) -> dict[str, float]:
        """The means since the last read, over every process (all of them read at the same steps): one reduction
        and one host sync."""
        values = [self.finite.logical_not(), *self.sums.values()]
        bad, *sums = parallel.all_sum(torch.stack([value.double() for value in values])).tolist()
        if bad > 0:
            step = self.first_bad_step.item()
            where = f"at step {step}" if step >= 0 else "in another process of the run"
            raise TrainingDiverged(
                f"the loss or its gradient became NaN or infinite {where} (epoch {epoch}); the last good checkpoint "
                "is kept; lower train.lr or set train.clip_grad_norm"
            )
        n = self.count * parallel.world()
        return {f"train/{key}": value / n for key, value in zip(self.sums, sums, strict=True)}


def _share(batch: Batch, loader: Iterable[Batch], i: int) -> float:
    """How much this process's rows of the `i`-th global batch weigh in it, times the number of processes: 1
    when the batch splits evenly. DistributedDataParallel and FSDP2 average gradients over processes; scaled by
    this, the average is the gradient of the global batch's mean loss, whatever the split. The global batch's
    rows come from the loader's `EpochBatches` (see `_check_parallel`), without communication."""
    if parallel.world() == 1:
        return 1.0
    return _batch_size(batch) * parallel.world() / loader.batch_sampler.rows(i)


def _train_epoch(
    module: nn.Module,
    loader: Iterable[Batch],
    optimizers: Optimizers,
    options: TrainOptions,
    device: torch.device,
    *,
    epoch: int,
    step: int,
    log: MetricsLog,
    bar: tqdm,
) -> tuple[int, dict[str, float]]:
    """One pass over `loader`; returns the new step count and the epoch's mean train metrics. `module` may be
    wrapped in DistributedDataParallel or sharded, and then shares gradients across processes at each step's
    last backward.

    With train.nonfinite "skip", a step whose loss or gradient is NaN or infinite makes no update and adds
    nothing to the metrics (checked at every step: one host sync each); more than train.max_skips in an epoch
    stop the run."""
    module.train()
    window, totals, seen = _Window(device), {}, 0
    n_batches, k = len(loader), options.grad_accum
    skipping, skipped, bad = options.nonfinite == "skip", 0, False
    step_tokens, pending = None, []  # pending: a step's outputs, counted once the step is known not skipped
    for i, batch in enumerate(loader):
        batch = _to_device(batch, device, options.channels_last)
        last_of_step = (i + 1) % k == 0 or i + 1 == n_batches
        with _syncing(module, last_of_step):
            with _autocast(device, options.precision):
                out = module(batch)
            tokens = out.pop(TOKENS, None)
            group = min(k, n_batches - (i // k) * k)  # the epoch's last group may hold fewer batches
            # Alone, a step with a NaN loss skips its backward; with peers every process must take part in it,
            # and the gradients they share tell every one of them to skip.
            if skipping and parallel.world() == 1 and not torch.isfinite(out["loss"].detach()).item():
                bad = True
            elif not bad:
                share = _share(batch, loader, i) if tokens is None else 1.0
                if tokens is None:
                    (out["loss"] * share / group).backward()
                else:  # a mean over tokens: the step's gradient is the mean over all its batches' tokens
                    (out["loss"] * tokens).backward()
                    step_tokens = tokens if step_tokens is None else step_tokens + tokens
                pending.append((out, share))
        if not last_of_step:
            continue
        if step_tokens is not None:  # summed over processes; their gradients were averaged
            optimizers.divide_grads(parallel.all_sum(step_tokens).clamp_min(1) / parallel.world())
            step_tokens = None
        # every process takes the same decision: the gradients it reads were reduced across them
        if skipping and (bad or not optimizers.grads_finite()):
            optimizers.skip()
            skipped, bad, pending = skipped + 1, False, []
            logger.warning("step %d: the loss or its gradient is NaN or infinite; skipped (train.nonfinite)", step + 1)
            if skipped > options.max_skips:
                raise TrainingDiverged(
                    f"{skipped} steps of epoch {epoch} had a NaN or infinite loss or gradient, more than "
                    f"train.max_skips={options.max_skips}; the last good checkpoint is kept; lower train.lr"
                )
        else:
            for out, share in pending:
                window.add(out, step + 1, share)
            pending = []
            optimizers.step(window, step + 1)
        step += 1
        bar.update(1)
        if step % options.log_every == 0 or i + 1 == n_batches:
            means = window.read(epoch)
            log.write({"step": step, "epoch": epoch, "lr": optimizers.lr, **means})
            bar.set_postfix({k.split("/", 1)[1]: f"{v:.4g}" for k, v in means.items()})
            for key, value in means.items():
                totals[key] = totals.get(key, 0.0) + value * window.count
            seen += window.count
            window = _Window(device)
    means = {key: value / seen for key, value in totals.items()}
    return step, {**means, "train/skipped_steps": skipped} if skipping else means


def _syncing(module: nn.Module, last_of_step: bool) -> contextlib.AbstractContextManager:
    """Gradients are shared across processes at a step's last backward only, not at each accumulated one."""
    if last_of_step:
        return contextlib.nullcontext()
    if isinstance(module, DistributedDataParallel):
        return module.no_sync()
    return without_gradient_sync(module) if is_sharded(module) else contextlib.nullcontext()


def _check_weights(params: list[nn.Parameter], epoch: int) -> None:
    """Once an epoch, before a checkpoint: never save NaN weights as the last good ones."""
    if not all_finite([p.detach() for p in params]):
        raise TrainingDiverged(
            f"the weights became NaN or infinite during epoch {epoch}; the last good checkpoint is kept; "
            "lower train.lr or set train.clip_grad_norm"
        )


@torch.no_grad()
def setup(module: nn.Module, batch: Batch) -> list[str]:
    """One forward in eval mode without gradients, before an optimizer exists: parameters a module sizes on its
    first batch (torch's Lazy modules, a Distiller's adapters, auxiliary heads) are then in place to be
    optimized and resumed. Returns the names of what the module reports; its mode is restored. Shapes are
    all it needs: it runs on the batch's first SETUP_ROWS rows."""
    was_training = module.training
    module.eval()
    rows = {key: value[:SETUP_ROWS] if isinstance(value, Tensor) else value for key, value in batch.items()}
    names = [name for name in module(rows) if name != TOKENS]
    module.train(was_training)
    return names


def _monitor_mode(options: TrainOptions, names: list[str]) -> str:
    """Fail before training when train.monitor names no metric; return the monitor's mode."""
    if options.monitor not in names:
        close = did_you_mean(options.monitor, names)
        raise DistillError(f"train.monitor: '{options.monitor}' is not a metric{close}; known: {', '.join(names)}")
    if options.monitor_mode != "auto":
        return options.monitor_mode
    return "min" if options.monitor.endswith("loss") else "max"


def fit(
    module: nn.Module,
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch] | None,
    options: TrainOptions,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> History:
    """Train `module` for `options.epochs`, checkpointing each epoch into `run_dir/checkpoints`.

    With `resume`, continues from the last checkpoint exactly: weights, optimizer, schedule, RNG and
    the metrics file as they were, so the result equals an uninterrupted run (on CPU).

    Launched as several processes (see `distill.train.parallel`), each trains on its share of every global
    batch with the module wrapped in DistributedDataParallel, or, with `options.shard`, a sharded copy of it
    (see `distill.train.sharding`; `module` waits on the CPU meanwhile and gets the weights back each epoch);
    the first process alone writes, and a resume may use another number of processes.
    """
    if len(train_loader) == 0:
        raise DistillError("the training data is empty: no batch to train on")
    run_dir = Path(run_dir) if run_dir is not None else None
    _check_parallel(train_loader, resume)
    device = parallel.local_device(resolve_device(options.device))
    shard = _sharding(options)
    home = torch.device("cpu") if shard else device  # where `module` itself lives
    seed_everything(options.seed)
    module.to(home)
    outputs = setup(module, _to_device(next(iter(val_loader if val_loader is not None else train_loader)), home))
    mode = _monitor_mode(options, [f"val/{name}" for name in outputs]) if val_loader is not None else None
    parallel.check_module(module)
    checkpoints = Checkpoints(run_dir / "checkpoints") if run_dir else None
    writes = parallel.is_main()
    if resume and checkpoints is None:
        raise DistillError("resume needs a run directory to resume from")
    resumed = checkpoints.load("last", module) if resume else None  # the weights, before any copy
    if options.channels_last:
        module.to(memory_format=torch.channels_last)
    sharded = Sharded(module, device) if shard else None
    working = sharded.copy if sharded else module  # what computes: the sharded copy, or the module itself
    steps_per_epoch = math.ceil(len(train_loader) / options.grad_accum)
    optimizers = Optimizers(working, options, steps_per_epoch)
    trained = working if parallel.world() == 1 or sharded else DistributedDataParallel(working)  # what steps call
    if options.compile:
        trained.compile()  # in place: the state dict keeps its keys
    history = History()

    # --- resume: everything a run's future depends on comes back from the checkpoint ---
    start_epoch, step = 0, 0
    if resumed is not None:
        optimizers.load_state_dict(resumed)
        set_rng_state(resumed["rng"])
        start_epoch, step = resumed["epoch"] + 1, resumed["step"]
        history.epochs, history.best = resumed["history"], resumed["best"]
    log_dir = run_dir if writes else None
    log = MetricsLog(log_dir, keep_until_step=step if resume else None, tensorboard=options.tensorboard)
    bar = tqdm(
        total=steps_per_epoch * options.epochs,
        initial=step,
        unit="step",
        dynamic_ncols=True,
        disable=None if options.progress and writes else True,
    )

    try:
        for epoch in range(start_epoch, options.epochs):
            _seed_epoch(train_loader, options.seed, epoch)
            step, train_means = _train_epoch(
                trained,
                train_loader,
                optimizers,
                options,
                device,
                epoch=epoch + 1,
                step=step,
                log=log,
                bar=bar,
            )
            # --- evaluate, record, checkpoint ---
            record: dict[str, Any] = {"step": step, "epoch": epoch + 1, **train_means}
            parallel.broadcast_buffers(working)  # evaluate and keep the first process's batch-norm statistics
            if val_loader is not None:
                record.update(evaluate(working, val_loader, device, options.precision, options.channels_last))
            if sharded:
                sharded.gather()
            _check_weights(optimizers.all_params(), epoch + 1)
            is_best = mode is not None and _is_better(record[options.monitor], history.best, mode)
            if is_best:
                history.best = {"metric": options.monitor, "value": record[options.monitor], "epoch": epoch + 1}
            history.epochs.append(record)
            log.write(record)
            if checkpoints is not None:
                state = {**optimizers.state_dict(), "rng": rng_state(), "history": history.epochs, "best": history.best}
                if writes:
                    checkpoints.save(module, state, epoch=epoch, step=step, best=history.best if is_best else None)
            for callback in callbacks:
                callback.on_epoch_end(record)
    finally:
        bar.close()
        log.close()
    parallel.barrier()  # the others read what the first wrote (the best checkpoint) once it is there
    if sharded:  # `module` holds the last epoch's weights, gathered; the shards go before it takes the device
        del trained, working, optimizers, sharded
        module.to(device)
    return history


def _sharding(options: TrainOptions) -> bool:
    """Whether this run shards its module (train.shard with several processes)."""
    if options.shard and parallel.world() == 1:
        logger.warning("train.shard: one process holds the whole module, unsharded (launch several with torchrun)")
    return options.shard and parallel.world() > 1


def _check_parallel(train_loader: Iterable[Batch], resume: bool) -> None:
    """Several processes need batches they can split evenly, drawn by (seed, epoch) alone."""
    if parallel.world() == 1:
        return
    batches = getattr(train_loader, "batch_sampler", None)
    if not isinstance(batches, parallel.EpochBatches):
        raise DistillError(
            "a data-parallel run needs a loader whose batch_sampler is distill.train.EpochBatches: "
            "DataLoader(data, batch_sampler=EpochBatches(len(data), batch_size))"
        )
    try:
        parallel.check_batch(batches.batch_size)
    except DistillError as e:
        raise DistillError(f"{e}; a resumed run keeps its global batch" if resume else str(e)) from None
