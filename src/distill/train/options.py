"""Options of the training loop: the `train:` group of a config, or keyword arguments of `fit`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator


class TrainOptions(BaseModel):
    """How to train. Every field is checked here, so a bad value fails before any work starts."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    epochs: StrictInt = Field(20, ge=1, le=100_000, description="passes over the training data")
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, le=100, description="peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0, le=1)
    schedule: Literal["constant", "cosine", "multistep"] = "cosine"
    milestones: list[StrictInt] = Field(default_factory=list, description="multistep: epochs at which lr *= gamma")
    gamma: float = Field(0.1, gt=0, le=1, description="multistep decay factor")
    warmup_epochs: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="linear warm-up from lr/100, in (fractional) epochs"
    )
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = Field(False, description="torch.compile the trained module's step (the first steps compile it)")
    channels_last: bool = Field(False, description="images and the trained module's weights in NHWC memory order")
    shard: bool = Field(
        False, description="under torchrun: shard weights, gradients and optimizer state over the processes (FSDP2)"
    )
    grad_accum: StrictInt = Field(1, ge=1, le=4096, description="batches per optimizer step")
    clip_grad_norm: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="clip the gradient norm to this value"
    )
    nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="a NaN/inf loss or gradient: stop (last good checkpoint kept) or skip that step's update"
    )
    max_skips: StrictInt = Field(10, ge=0, le=1_000_000, description="nonfinite skip: most skipped steps per epoch")
    device: str = Field("auto", description="auto (cuda when available), cpu, cuda, cuda:N")
    seed: StrictInt = Field(0, ge=0, description="seeds weights init order, shuffling and dropout")
    log_every: StrictInt = Field(10, ge=1, description="optimizer steps between logged lines (and host syncs)")
    monitor: str = Field("val/accuracy", description="metric that picks the best checkpoint")
    monitor_mode: Literal["auto", "max", "min"] = Field("auto", description="auto: min for a *loss, else max")
    select: Literal["last", "best"] = Field(
        "last", description="weights a run keeps as its result; 'best' is chosen on validation, so optimistic"
    )
    progress: bool = Field(True, description="show a progress bar on a terminal")
    tensorboard: bool = Field(False, description="also write TensorBoard events (needs distill[tensorboard])")

    @model_validator(mode="after")
    def _check_milestones(self) -> TrainOptions:
        if self.schedule == "multistep" and not self.milestones:
            raise ValueError("schedule 'multistep' needs train.milestones, e.g. [150, 180, 210]")
        if any(m < 1 or m >= self.epochs for m in self.milestones):
            raise ValueError(f"train.milestones must lie in [1, epochs={self.epochs}), got {self.milestones}")
        return self

    @model_validator(mode="after")
    def _check_shard(self) -> TrainOptions:
        if self.shard and self.channels_last:
            raise ValueError("train.shard and train.channels_last cannot be combined; set one of them to false")
        return self
