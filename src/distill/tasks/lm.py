"""task: lm. A causal language model's experiment: the text as token sequences in three contiguous parts, the
models (our GPT or a Hugging Face model, with LoRA), the model trained alone on its next-token
cross-entropy, and what a run reports (perplexity, `tasks/perplexity.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.utils.data import DataLoader

from distill.data.text import TextSplits, Tokenizer, text_splits, tokenizer_text
from distill.models.hf_image import HF
from distill.models.lm import build_lm, tokenizer_for, with_lora
from distill.modules.token import NextToken
from distill.tasks.base import Shared, model_spec
from distill.tasks.perplexity import summarize
from distill.train import TrainOptions, seed_everything, shuffled
from distill.weights import Start, load_weights, mark_start

if TYPE_CHECKING:
    from distill.config import LMConfig


@dataclass
class LMExperiment(Shared):
    """A language model's experiment (a `Task`): the built pieces every stage shares."""

    cfg: LMConfig
    tokenizer: Tokenizer
    splits: TextSplits
    train_loader: DataLoader
    val_loader: DataLoader
    test_loader: DataLoader

    @property
    def labelled_loader(self) -> DataLoader:  # every training token is a label: the student alone learns all
        return self.train_loader

    @property
    def teacher_loader(self) -> DataLoader:
        return self.train_loader

    def net(self, field: str, weights: str | Path | None = None) -> nn.Module:
        """Our GPT or a Hugging Face model of the config group `field`, seeded with train.seed, `weights` loaded,
        then wrapped for LoRA when the group asks for it; `weights.start_of` says where it started."""
        cfg, spec = self.cfg, model_spec(self.cfg, field)
        dtype = cfg.teacher.dtype if field == "teacher" else "float32"  # a Hugging Face teacher loads in it
        seed_everything(cfg.train.seed)
        attention = getattr(cfg.method, "attention_weight", 0) > 0
        model = build_lm(
            spec, self.tokenizer.vocab_size, cfg.data.context, field=field, dtype=dtype, attention=attention
        )
        start = Start("random", (f"train.seed={cfg.train.seed}",))
        if spec.model.startswith(HF):
            start = Start(spec.model, ("pretrained",), pretrained=True)
        if weights is not None:
            load_weights(model, weights)
            start = Start.of_file(weights)
        lora = getattr(spec, "lora", None)
        return mark_start(model if lora is None else with_lora(model, lora), start)

    def teacher_given(self) -> bool:
        teacher = self.cfg.teacher
        return teacher.weights is not None or teacher.model.startswith(HF)

    def alone(self, model: nn.Module, *, label_smoothing: float = 0.0) -> nn.Module:
        return NextToken(model)

    def alone_options(self, options: TrainOptions, epochs: int) -> TrainOptions:
        return options.model_copy(update={"epochs": epochs})

    def summarize(self, runs: list[dict[str, nn.Module]], temperature: float | None) -> dict[str, Any]:
        return summarize(self, runs)


def build_experiment(cfg: LMConfig) -> LMExperiment:
    d = cfg.data
    tokenizer = tokenizer_for(d.tokenizer, tokenizer_text(d.path))
    splits = text_splits(
        d.path,
        tokenizer,
        context=d.context,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        seed=d.seed,
    )
    train = shuffled(splits.train, d.batch_size)
    val, test = (DataLoader(part, batch_size=d.batch_size) for part in (splits.val, splits.test))
    return LMExperiment(cfg, tokenizer, splits, train, val, test)


def outputs(model: nn.Module) -> int:
    """The ids a language model's output layer scores."""
    return model.head.weight.shape[0]
