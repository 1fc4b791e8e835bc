"""One plain training loop. It knows nothing of distillation: it trains any module whose
`forward(batch)` returns a dict of scalars with a "loss" entry, and averages the other entries as metrics."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from distill._tensors import Batch
from distill.errors import DistillError, TrainingDiverged
from distill.registry import did_you_mean
from distill.train import parallel
from distill.train.checkpoint import Checkpoints, rng_state, set_rng_state
from distill.train.metrics import MetricsLog, Window
from distill.train.options import TrainOptions
from distill.train.schedule import Optimizers
from distill.train.sharding import Sharded, all_finite, is_sharded, without_gradient_sync
from distill.train.steps import (
    TOKENS,
    Callback,
    History,
    autocast,
    evaluate,
    is_better,
    resolve_device,
    rows_of,
    seed_epoch,
    seed_everything,
    setup,
    to_device,
)

logger = logging.getLogger(__name__)


def _share(batch: Batch, loader: Iterable[Batch], i: int) -> float:
    """How much this process's rows of the `i`-th global batch weigh in it, times the number of processes: 1
    when the batch splits evenly. DistributedDataParallel and FSDP2 average gradients over processes; scaled by
    this, the average is the gradient of the global batch's mean loss, whatever the split. The global batch's
    rows come from the loader's `EpochBatches` (see `_check_parallel`), without communication."""
    if parallel.world() == 1:
        return 1.0
    return rows_of(batch) * parallel.world() / loader.batch_sampler.rows(i)


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
    window, totals, seen = Window(device), {}, 0
    n_batches, k = len(loader), options.grad_accum
    skipping, skipped, bad = options.nonfinite == "skip", 0, False
    step_tokens, pending = None, []  # pending: a step's outputs, counted once the step is known not skipped
    for i, batch in enumerate(loader):
        batch = to_device(batch, device, options.channels_last)
        last_of_step = (i + 1) % k == 0 or i + 1 == n_batches
        with _syncing(module, last_of_step):
            with autocast(device, options.precision):
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
            window = Window(device)
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
    outputs = setup(module, to_device(next(iter(val_loader if val_loader is not None else train_loader)), home))
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
            seed_epoch(train_loader, options.seed, epoch)
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
            is_best = mode is not None and is_better(record[options.monitor], history.best, mode)
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
