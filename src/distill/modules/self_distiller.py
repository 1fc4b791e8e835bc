"""Self-distillation: a model of the same architecture is its own teacher.

Two forms:

    born_again        generation k+1 (same architecture, fresh init) learns from frozen generation k
                      (Furlanello et al., 2018); the generations also make an ensemble
    SelfDistiller     one model with auxiliary classifiers on intermediate blocks that learn from its final
                      classifier while it trains (Zhang et al., 2019); the heads are dropped at export
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill._tensors import Batch, top1_accuracy
from distill.errors import DistillError
from distill.losses import check_temperature, hard_loss, hint_loss, soft_loss
from distill.modules.distiller import Distiller, Supervised, supervised_options
from distill.taps import check_paths, logits_of, run_tapped
from distill.train import Checkpoints, History, TrainOptions, fit, seed_everything, setup

# --- Born-again networks -------------------------------------------------------------------------------------------


@dataclass
class Generation:
    """One generation of a born-again run: the trained model, its validation accuracy, how it trained."""

    model: nn.Module
    accuracy: float
    history: History
    seed: int  # what its weights were initialised and its run trained with


@dataclass
class BornAgainResult:
    """Every generation, in order (generation 0 learnt from labels alone), and the accuracy of their ensemble."""

    generations: list[Generation]
    ensemble_accuracy: float

    @property
    def models(self) -> list[nn.Module]:
        return [g.model for g in self.generations]

    @property
    def accuracies(self) -> list[float]:
        return [g.accuracy for g in self.generations]


TrainStage = Callable[[str, nn.Module, nn.Module, TrainOptions], None]
"""train(name, module, model, options): train `module`, which wraps `model`, as the stage `name`."""


def train_generations(
    teacher: nn.Module,
    make_model: Callable[[], nn.Module],
    kd: nn.Module,
    options: TrainOptions,
    *,
    generations: int,
    train: TrainStage,
) -> list[nn.Module]:
    """Born-again generations 1..`generations` after `teacher`, generation 0, which is trained already.

    Generation k, a fresh model from `make_model` seeded `options.seed + k` (for its initial weights and its
    run: the generations start apart, and the same options give the same generations), trains as the stage
    "genK": the student of a `Distiller` whose frozen teacher is generation k - 1's trained model, with its own
    copy of the loss term `kd`. Returns the generations' models in order.
    """
    models = [teacher]
    for k in range(1, generations + 1):
        seed = options.seed + k
        seed_everything(seed)  # before make_model: the fresh initial weights depend on it
        model = make_model()
        if any(model is m for m in models):
            raise DistillError("make_model returned the model of an earlier generation: it must build a new one")
        distiller = Distiller(model, models[-1], [copy.deepcopy(kd)])
        train(f"gen{k}", distiller, model, options.model_copy(update={"seed": seed}))
        models.append(model)
    return models[1:]


def born_again(
    make_model: Callable[[], nn.Module],
    train_loader: Iterable[Batch],
    val_loader: Iterable[Batch],
    options: TrainOptions,
    *,
    generations: int,
    kd: nn.Module,
    run_dir: str | Path | None = None,
) -> BornAgainResult:
    """Born-again networks (Furlanello et al., 2018, "Born Again Neural Networks", ICML).

    Generation 0, from `make_model` seeded `options.seed`, trains on the labels alone (`Supervised`); then
    `train_generations` trains generations 1 .. `generations` - 1, each learning from the one before with the
    loss term `kd`, e.g. `losses.KD(temperature=1.0, alpha=0.0)`: the paper's students learn from the
    teacher's outputs alone. Each generation is one `fit` with `options`, into `run_dir/gen{k}` when `run_dir`
    is given. With `options.select == "best"` a generation keeps (and teaches with) its best checkpoint, which
    needs `run_dir`.

    Returns each generation's model and top-1 accuracy on `val_loader`, and the accuracy of all
    generations' ensemble (`ensemble_accuracy`), as in the paper's BAN ensembles.
    """
    if generations < 1:
        raise DistillError(f"born-again needs at least one generation, got {generations}")
    if options.select == "best" and run_dir is None:
        raise DistillError("train.select 'best' restores each generation's best checkpoint: give a run_dir")
    histories: list[History] = []

    def train(name: str, module: nn.Module, model: nn.Module, stage_options: TrainOptions) -> None:
        stage_dir = Path(run_dir) / name if run_dir is not None else None
        histories.append(fit(module, train_loader, val_loader, stage_options, run_dir=stage_dir))
        if options.select == "best" and Checkpoints(stage_dir / "checkpoints").pointer("best") is not None:
            Checkpoints(stage_dir / "checkpoints").load("best", module)

    seed_everything(options.seed)
    first = make_model()
    train("gen0", Supervised(first), first, supervised_options(options))
    models = [first, *train_generations(first, make_model, kd, options, generations=generations - 1, train=train)]
    done = [
        Generation(model, ensemble_accuracy([model], val_loader), history, options.seed + k)
        for k, (model, history) in enumerate(zip(models, histories, strict=True))
    ]
    return BornAgainResult(done, ensemble_accuracy(models, val_loader))


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


@torch.no_grad()
def ensemble_accuracy(models: Sequence[nn.Module], loader: Iterable[Batch], *, ignore_index: int = -100) -> float:
    """Top-1 accuracy of the models' averaged softmax probabilities, over the labelled samples of `loader`.

        p(x) = 1/K sum_k softmax(z_k(x)),   prediction = argmax_c p(x)_c

    One model gives that model's accuracy. The models run in eval mode and get their modes back after; each
    runs on its own device. One host sync at the end.
    """
    if not models:
        raise DistillError("an ensemble needs at least one model")
    device = _device_of(models[0])
    modes = [m.training for m in models]
    correct = torch.zeros((), dtype=torch.long, device=device)
    labelled = torch.zeros((), dtype=torch.long, device=device)
    try:
        for m in models:
            m.eval()
        for batch in loader:
            inputs, labels = batch["input"], batch["label"].to(device)
            probs = [logits_of(m(inputs.to(_device_of(m)))).float().softmax(-1).to(device) for m in models]
            mean = torch.stack(probs).mean(0)  # (B, C)
            has_label = labels != ignore_index
            correct += ((mean.argmax(-1) == labels) & has_label).sum()
            labelled += has_label.sum()
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)
    if labelled.item() == 0:
        raise DistillError("the data holds no labelled sample: no accuracy to measure")
    return correct.item() / labelled.item()


# --- Deep self-distillation ----------------------------------------------------------------------------------------


def _pooled(feature: Tensor, where: str) -> Tensor:
    """(B, C, H, W) maps average-pooled to (B, C); (B, D) vectors as they are."""
    if feature.dim() == 4:
        return F.adaptive_avg_pool2d(feature, 1).flatten(1)
    if feature.dim() == 2:
        return feature
    raise DistillError(
        f"{where}: an auxiliary head takes (B, C, H, W) maps or (B, D) vectors, got {tuple(feature.shape)}; "
        "tap another module"
    )


class SelfDistiller(nn.Module):
    """Deep self-distillation (Zhang et al., 2019, "Be Your Own Teacher", ICCV): auxiliary classifiers on
    intermediate blocks of one model learn from the labels and from its final classifier while it trains.

        L = CE(z_final, y) + sum_i [ alpha * CE(z_i, y) + (1 - alpha) * T^2 KL(softmax(z_final/T) || softmax(z_i/T)) ]
                           + feature_weight * sum_i mean (r_i(f_i) - f_final)^2

    with z_i the head on `taps[i]`, z_final the model's own output, detached in the KL, and f the features,
    pooled to vectors. As everywhere in this library `alpha` weights the HARD loss: the paper's coefficient
    is 1 - alpha, so the default alpha 0.7 is the paper's 0.3 (as the authors' code, the final classifier
    keeps its whole cross-entropy). A head is average-pool + flatten + linear for a (B, C, H, W) map, linear
    for a (B, D) vector. The feature hint (off at feature_weight 0) pulls each pooled tapped feature, mapped
    by a linear regressor r_i, toward the detached output of `feature_tap` (the final feature, e.g. the
    pooled map the classifier reads); the paper's bottleneck that both feeds the head and is hinted is not
    reproduced. The hint is a mean (as `hint_loss`) where the paper sums, so its weight is on another scale.

    The heads and regressors are sized by a first forward without gradients (what `fit` does before it
    builds the optimizer); call `setup(batch)` before an optimizer of your own. They live beside the model,
    never inside it: `export()` returns the bare model. forward(batch) returns "loss", "ce" (summed over
    the final classifier and the heads), "kd" (summed over the heads), "feature" (when feature_weight > 0),
    "accuracy" (the final classifier's) and "head{i}_accuracy".
    """

    def __init__(
        self,
        model: nn.Module,
        taps: Sequence[str],
        *,
        temperature: float = 3.0,
        alpha: float = 0.7,
        feature_weight: float = 0.0,
        feature_tap: str | None = None,
        ignore_index: int = -100,
    ):
        super().__init__()
        if not taps:
            raise DistillError("self-distillation needs at least one tap for an auxiliary head, e.g. ['layer2']")
        if len(set(taps)) != len(taps):
            raise DistillError(f"self-distillation taps repeat a path: {list(taps)}")
        check_temperature(temperature)
        if not 0.0 <= alpha <= 1.0:
            raise DistillError(f"alpha must be in [0, 1], got {alpha}")
        if feature_weight < 0:
            raise DistillError(f"feature_weight must be >= 0, got {feature_weight}")
        if feature_weight > 0 and feature_tap is None:
            raise DistillError("feature_weight > 0 needs feature_tap: the module whose output is the final feature")
        self.uses_hint = feature_weight > 0
        check_paths(model, [*taps, feature_tap] if self.uses_hint else list(taps), "model")
        self.model = model
        self.taps, self.feature_tap = tuple(taps), feature_tap
        self.heads = nn.ModuleList()  # one per tap, built by the first forward
        self.regressors = nn.ModuleList()  # one per tap when the hint is on
        self.temperature, self.alpha, self.feature_weight = temperature, alpha, feature_weight
        self.ignore_index = ignore_index

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        inputs, labels = batch["input"], batch["label"]
        paths = list(dict.fromkeys([*self.taps, self.feature_tap] if self.uses_hint else self.taps))
        final_logits, features = run_tapped(self.model, inputs, paths)  # (B, C), {path: …}
        pooled = [_pooled(features[path], f"tap '{path}'") for path in self.taps]  # n x (B, C_i)
        final_feature = _pooled(features[self.feature_tap], "feature_tap").detach() if self.uses_hint else None
        self._build(pooled, final_logits, final_feature)
        head_logits = [head(f) for head, f in zip(self.heads, pooled, strict=True)]  # n x (B, C)
        target = final_logits.detach()  # the heads learn from the final classifier, never the reverse

        ce_final = hard_loss(final_logits, labels, ignore_index=self.ignore_index)
        ce = [hard_loss(z, labels, ignore_index=self.ignore_index) for z in head_logits]
        kd = [soft_loss(z, target, temperature=self.temperature) for z in head_logits]
        total = ce_final + sum(self.alpha * c + (1.0 - self.alpha) * k for c, k in zip(ce, kd, strict=True))
        parts = {"ce": ce_final + sum(ce), "kd": sum(kd)}
        if self.uses_hint:
            parts["feature"] = sum(hint_loss(r(f), final_feature) for r, f in zip(self.regressors, pooled, strict=True))
            total = total + self.feature_weight * parts["feature"]
        with torch.no_grad():
            parts["accuracy"] = top1_accuracy(final_logits, labels, self.ignore_index)
            for i, z in enumerate(head_logits):
                parts[f"head{i}_accuracy"] = top1_accuracy(z, labels, self.ignore_index)
        return {"loss": total, **parts}

    def _build(self, pooled: list[Tensor], final_logits: Tensor, final_feature: Tensor | None) -> None:
        """Size the heads (and regressors) from the first batch's features and number of classes."""
        if len(self.heads):
            return
        if self.training and torch.is_grad_enabled():
            raise DistillError("auxiliary heads are sized by a first forward: call setup(batch) before the optimizer")
        if final_logits.dim() != 2:
            raise DistillError(f"self-distillation needs (B, classes) logits, got {tuple(final_logits.shape)}")
        num_classes, device = final_logits.shape[-1], final_logits.device
        with torch.inference_mode(False):  # real parameters even when the first forward ran in inference mode
            for f in pooled:
                self.heads.append(nn.Linear(f.shape[-1], num_classes, device=device))
                if final_feature is not None:
                    self.regressors.append(nn.Linear(f.shape[-1], final_feature.shape[-1], device=device))

    def setup(self, batch: Batch) -> list[str]:
        """One forward without gradients that sizes the heads (`distill.train.setup`); returns the names of
        what forward reports."""
        return setup(self, batch)

    def export(self) -> nn.Module:
        """The bare model, the object given to __init__: the heads and regressors stay here."""
        return self.model
