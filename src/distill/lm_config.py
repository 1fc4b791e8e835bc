"""The config of a language-model run (`task: lm`): the same shape as an image run's, with text data and
token-level distillation.

    task: lm
    name: shakespeare
    data: {path: input.txt, tokenizer: char, context: 128, val_fraction: 0.05, test_fraction: 0.05}
    teacher: {model: gpt, args: {layers: 4, width: 128}, epochs: 3}
    student: {model: gpt, args: {layers: 2, width: 32}}
    method: {kind: token, divergence: reverse_kl, temperature: 1.0, alpha: 0.0, fused: true}
    train: {epochs: 3, optimizer: adamw, lr: 0.003}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, StrictInt, model_validator

from distill.config import read_with_overrides, validated
from distill.losses.token import Divergence
from distill.schema import NAME, Group, ModelConfig, describe_error
from distill.train import TrainOptions


class TextDataConfig(Group):
    path: str = Field(description="a text file (.txt: one stream) or JSONL of prompt/completion lines (.jsonl)")
    tokenizer: str = Field(
        "char", description="char (fitted on the file), char:FILE (fitted on that one), or a Hugging Face tokenizer"
    )
    context: StrictInt = Field(128, ge=2, le=1_000_000, description="tokens per sequence")
    val_fraction: float = Field(0.05, gt=0, lt=1)
    test_fraction: float = Field(0.05, gt=0, lt=1)
    seed: StrictInt = Field(0, ge=0, description="JSONL: the shuffle into parts")
    batch_size: StrictInt = Field(32, ge=1, le=1_000_000)


class LMTeacherConfig(ModelConfig):
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="precision of the teacher's forward")
    epochs: StrictInt | None = Field(None, ge=1, le=100_000, description="epochs when trained here (no weights)")


class LoraConfig(Group):
    r: StrictInt = Field(8, ge=1, le=4096, description="rank of each low-rank update")
    alpha: float = Field(16.0, gt=0, description="scale of the update: alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: list[str] = Field(min_length=1, description="names of the Linear layers to adapt, e.g. [qkv, out]")


class LMStudentConfig(ModelConfig):
    lora: LoraConfig | None = Field(None, description="train low-rank adapters only (needs peft: distill[hf])")


class TokenMethod(Group):
    """method.kind token: off-policy distillation on the data set's text, every counted token."""

    kind: Literal["token"] = "token"
    divergence: Divergence = "forward_kl"
    temperature: float = Field(1.0, gt=0, le=1000, description="of the loss only; never a sampling temperature")
    alpha: float = Field(0.0, ge=0, le=1, description="weight of the next-token cross-entropy (the hard loss)")
    beta: float = Field(0.5, ge=0, le=1, description="jsd: 0 is forward KL, 1 reverse KL")
    skew: float = Field(0.1, gt=0, lt=1, description="skew_forward_kl / skew_reverse_kl: the mixture's weight")
    fused: bool = Field(True, description="compute from hidden states chunk by chunk: no tokens x vocab logits")
    chunk_size: StrictInt | None = Field(None, ge=1, description="tokens per chunk of the fused form (default: auto)")
    hidden_weight: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="factor of the final hidden states' MSE (mapped across widths)",
    )
    attention_weight: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="factor of the KL between last-layer attention maps (MiniLM)"
    )
    shared_vocab: bool = Field(
        False, description="distill over the ids both output layers have when their sizes differ (padded vocabs)"
    )


class OnPolicyMethod(TokenMethod):
    """method.kind on_policy (GKD): in a share of the batches the student writes the completions of the batch's
    prompts and the teacher grades every token it wrote; the other batches distill on the data's completions.
    Needs prompts: JSONL data."""

    kind: Literal["on_policy"] = "on_policy"
    divergence: Divergence = "reverse_kl"
    student_share: float = Field(0.5, ge=0, le=1, description="lambda: the share of batches the student samples")
    sample_temperature: float = Field(1.0, ge=0, le=100, description="of the student's sampling; 0 is greedy")
    max_new_tokens: StrictInt = Field(32, ge=1, le=1_000_000, description="tokens the student writes per prompt")
    top_k: StrictInt | None = Field(None, ge=1, description="the student samples among its k most likely tokens")


class GenerateConfig(Group):
    """`distill generate`: the teacher's completions of a JSONL file's prompts, for sequence-level KD."""

    prompts: str = Field(description="JSONL, one {'prompt': ..., optional 'id': ...} per line")
    output: str = Field(description="JSONL to write {'id', 'prompt', 'completion'} lines to (resumed if it exists)")
    max_new_tokens: StrictInt = Field(64, ge=1, le=1_000_000)
    temperature: float = Field(1.0, ge=0, le=100, description="of the sampling only; 0 is greedy")
    top_k: StrictInt | None = Field(None, ge=1, description="sample among the k most likely tokens")
    batch_size: StrictInt = Field(16, ge=1, le=1_000_000, description="prompts of one length sampled together")
    seed: StrictInt = Field(0, ge=0)


class TokenCacheConfig(Group):
    """A top-k cache of the teacher's next-token distributions on the training sequences (`distill cache`)."""

    path: str = Field(description="folder of the cache: made by distill cache, read by distill train")
    top_k: StrictInt = Field(32, ge=1, le=10_000_000, description="tokens kept per position (the rest as one tail)")
    dtype: Literal["float16", "float32"] = Field("float16", description="of the cached log-probabilities")


class LMConfig(Group):
    task: Literal["lm"]
    name: str = Field(pattern=NAME, description="run name: results go to out_dir/name")
    out_dir: str = "runs"
    scratch: bool = Field(True, description="also train the student alone, same budget, to show what KD added")
    data: TextDataConfig
    teacher: LMTeacherConfig
    student: LMStudentConfig
    method: Annotated[TokenMethod | OnPolicyMethod, Field(discriminator="kind")] = Field(default_factory=TokenMethod)
    seeds: list[StrictInt] | None = Field(None, min_length=1, max_length=100)
    train: TrainOptions = Field(default_factory=lambda: TrainOptions(monitor="val/loss"))
    generate: GenerateConfig | None = Field(None, description="what `distill generate` samples from the teacher")
    cache: TokenCacheConfig | None = Field(None, description="train from a top-k teacher cache (distill cache)")

    @model_validator(mode="after")
    def _check_room_to_write(self) -> LMConfig:
        """The student's completions must fit after a prompt: at least one prompt token, then its own."""
        if self.method.kind == "on_policy" and self.method.max_new_tokens >= self.data.context:
            raise ValueError(f"method.max_new_tokens: {self.method.max_new_tokens} leaves no room for a prompt in "
                             f"data.context {self.data.context}; lower it")  # fmt: skip
        if self.generate is not None and self.generate.max_new_tokens >= self.data.context:
            raise ValueError(f"generate.max_new_tokens: {self.generate.max_new_tokens} leaves no room for a prompt "
                             f"in data.context {self.data.context}; lower it")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _check_cache(self) -> LMConfig:
        if self.cache is None:
            return self
        if self.teacher.weights is None:
            raise ValueError("cache: needs teacher.weights, the file the cache is made from (and checked against)")
        if (
            self.method.kind != "token"
            or self.method.temperature != 1
            or self.method.hidden_weight
            or (self.method.attention_weight)
        ):
            raise ValueError("cache: holds the teacher's next-token probabilities at temperature 1 for method.kind "
                             "token: method.temperature 1, no hidden_weight or attention_weight")  # fmt: skip
        return self

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, raw: Any) -> Any:
        """A language model has no accuracy to pick epochs by: its validation loss, unless the config says; and
        a method group without a kind is off-policy (`token`), the default."""
        if not isinstance(raw, dict):
            return raw
        if isinstance(raw.get("train"), dict) and "monitor" not in raw["train"]:
            raw = {**raw, "train": {**raw["train"], "monitor": "val/loss"}}
        if isinstance(raw.get("method"), dict) and "kind" not in raw["method"]:
            raw = {**raw, "method": {"kind": "token", **raw["method"]}}
        return raw

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    @property
    def run_seeds(self) -> list[int]:
        return self.seeds or [self.train.seed]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def is_lm(raw: dict[str, Any]) -> bool:
    return raw.get("task") == "lm"


def validate_lm(raw: dict[str, Any], source: str) -> LMConfig:
    return validated(LMConfig, raw, source, _describe)


def _describe(error: dict) -> str:
    """One line for a validation error; inside `method` pydantic puts the kind into the location
    (method.token.divergense): it is taken out, and the key described against that kind's keys."""
    loc = error["loc"]
    if loc[:1] == ("method",) and len(loc) > 1 and loc[1] in KINDS:
        return describe_error({**error, "loc": loc[2:]}, KINDS[loc[1]], prefix="method")
    return describe_error(error, LMConfig)


def load_lm_config(path: str | Path, overrides: list[str] = ()) -> LMConfig:
    return validate_lm(read_with_overrides(path, overrides), str(path))


KINDS = {"token": TokenMethod, "on_policy": OnPolicyMethod}
