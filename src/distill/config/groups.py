"""The groups of a config shared by the tasks (data, models, cache, tune, generate), each a handful of documented
keys validated where it is loaded."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from distill.config.base import Group
from distill.losses.token import Divergence


class DataConfig(Group):
    name: str = Field(
        "digits", description="digits | idx | csv | tensors | cifar10 | cifar100 | folder | manifest | hf"
    )
    path: str | None = Field(
        None,
        description="file or folder for idx, csv, tensors and cifar; folder: class subfolders; manifest: a file; "
        "hf: a save_to_disk folder, data files (parquet, arrow, csv, json) or a hub dataset's name",
    )
    label_column: str | None = Field(
        None, description="csv, manifest, hf: the column holding the class (hf: default label)"
    )
    input_column: str | None = Field(None, description="hf: the column holding the input (an image, or a feature)")
    unlabelled_path: str | None = Field(
        None, description="tensors, idx, csv: a file of inputs without labels, which join training (soft loss only)"
    )
    train_path: str | None = Field(None, description="tensors, idx, csv: the training file (instead of path)")
    val_path: str | None = Field(None, description="tensors, idx, csv: a fixed validation file (no val_fraction)")
    test_path: str | None = Field(None, description="tensors, idx, csv: a fixed test file (no test_fraction)")
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of the labelled rows held out for test (cifar: its official test set)"
    )
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of the labelled rows left held out for validation")
    labelled_fraction: float | None = Field(
        None, gt=0, le=1, description="keep the labels of this share of the training rows (seeded); hide the rest"
    )
    labelled_per_class: StrictInt | None = Field(
        None, ge=1, description="keep the labels of this many training rows per class (seeded); hide the rest"
    )
    augment: str = Field(
        "none",
        description="training augmentation: none | crop_flip (pad 4, random crop, flip) | standard (random resized "
        "crop, flip) | randaugment (standard, then RandAugment)",
    )
    image_size: StrictInt | None = Field(
        None,
        ge=1,
        le=4096,
        description="image files: the side of the square; default the teacher's pretrained size, "
        "else the first training image's size",
    )
    crop_fraction: float | None = Field(
        None, gt=0, le=1, description="image files: the centre crop's share of the resized shorter side (default 1)"
    )
    channels: Literal[1, 3] | None = Field(None, description="image files: 1 (grey) or 3 (RGB, the default)")
    normalize: Literal["auto", "train", "none"] | None = Field(
        None,
        description="image files: auto (the default: the teacher's pretrained mean and std, else training's) | train "
        "| none",
    )
    skip_bad: bool | None = Field(None, description="image files: skip unreadable images (counted) instead of stopping")
    seed: StrictInt = Field(0, ge=0, description="seed of the train/validation/test split and the labelled choice")
    batch_size: StrictInt = Field(64, ge=1, le=1_000_000)
    num_workers: StrictInt | None = Field(
        None, ge=0, le=256, description="DataLoader workers; default 0 for data in memory, one per core for files"
    )

    @model_validator(mode="after")
    def _one_training_file(self) -> DataConfig:
        if self.path is not None and self.train_path is not None:
            raise ValueError("data.path and data.train_path both set; give the training file once")
        return self

    @model_validator(mode="after")
    def _one_labelled_choice(self) -> DataConfig:
        if self.labelled_fraction is not None and self.labelled_per_class is not None:
            raise ValueError("data.labelled_fraction and data.labelled_per_class both set; keep one")
        return self


class ModelConfig(Group):
    model: str = Field(
        description="a built-in name (mlp, cnn), 'package.module:factory', timm:NAME, torchvision:NAME or hf:FOLDER"
    )
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model's factory")
    weights: str | None = Field(
        None, description="safetensors or .pt state dict to load (a classifier's head for another class count: new)"
    )


class TeacherConfig(ModelConfig):
    """The teacher. Which of its keys apply depends on the method (`teacher_keys` of each method's keys)."""

    dtype: Literal["float32", "bfloat16"] = Field("float32", description="precision of the teacher's forward")
    cache: str | None = Field(None, description="folder of cached teacher outputs (`distill cache`) to train from")
    epochs: StrictInt | None = Field(
        None, ge=1, le=100_000, description="epochs when trained here; a classifier with weights or hf: is fine-tuned"
    )

    @model_validator(mode="after")
    def _check_sources(self) -> TeacherConfig:
        if self.cache is not None and self.weights is None:
            raise ValueError("teacher.cache needs teacher.weights: the file the cache was made from (it is checked)")
        if self.cache is not None and self.epochs is not None:
            raise ValueError("teacher.cache holds the outputs of teacher.weights as they are: drop teacher.epochs")
        return self


class TermConfig(BaseModel):
    """One loss term: `loss` names it in distill.losses.list(); any other key is the loss's own option."""

    model_config = ConfigDict(extra="allow")

    loss: str
    weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="factor of this term in the total loss")
    student: str | None = Field(None, description="feature terms: the student's module path to tap")
    teacher: str | None = Field(None, description="feature terms: the teacher's module path to tap")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


Range = tuple[float, float]


class SearchSpace(Group):
    """What `distill tune` searches in every task: the soft loss's temperature, alpha and lr (low, high)."""

    temperature: Range = Field((1.0, 8.0), description="the soft loss's temperature (log scale)")
    alpha: Range = Field((0.0, 1.0), description="the weight of the hard loss")
    lr: Range | None = Field(None, description="the learning rate (log scale); null: train.lr / 3 to train.lr * 3")
    seed: StrictInt = Field(0, ge=0, description="the sampler's seed")

    def ranges(self) -> dict[str, Range]:
        """Each searched range by key, the log-scaled ones first checked > 0."""
        return {key: getattr(self, key) for key in ("temperature", "alpha", "lr", "weight") if getattr(self, key, None)}

    @model_validator(mode="after")
    def _check_ranges(self) -> SearchSpace:
        for key, (low, high) in self.ranges().items():
            if not low < high:
                raise ValueError(f"tune.{key}: the range [{low}, {high}] is empty or inverted; give [low, high]")
            if key != "alpha" and low <= 0:
                raise ValueError(f"tune.{key}: searched on a log scale, so its range must be > 0, got [{low}, {high}]")
        if not 0 <= self.alpha[0] < self.alpha[1] <= 1:
            raise ValueError(f"tune.alpha: must lie in [0, 1], got {list(self.alpha)}")
        return self


class TuneConfig(SearchSpace):
    """`distill tune` on a classifier: which logit losses, and the range of each setting."""

    losses: list[Literal["kd", "dkd", "dist"]] = Field(
        default_factory=lambda: ["kd", "dkd", "dist"], min_length=1, description="the logit losses to choose from"
    )
    weight: Range = Field((0.1, 10.0), description="dkd and dist: their weight beside the cross-entropy (log scale)")

    @model_validator(mode="after")
    def _check_losses(self) -> TuneConfig:
        if len(set(self.losses)) != len(self.losses):
            raise ValueError(f"tune.losses: each loss once, got {self.losses}")
        return self


class LMTuneConfig(SearchSpace):
    """`distill tune` on a language model: which divergences, and the range of each setting."""

    divergences: list[Divergence] = Field(
        default_factory=lambda: ["forward_kl", "reverse_kl", "jsd"], min_length=1, description="to choose from"
    )
    temperature: Range = Field((0.5, 4.0), description="the token loss's temperature (log scale)")

    @model_validator(mode="after")
    def _check_divergences(self) -> LMTuneConfig:
        if len(set(self.divergences)) != len(self.divergences):
            raise ValueError(f"tune.divergences: each divergence once, got {self.divergences}")
        return self


class CacheConfig(Group):
    """How `distill cache` stores the teacher's outputs (in teacher.cache)."""

    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    top_k: StrictInt | None = Field(None, ge=1, description="keep only the k largest logits (kd only)")
    features: list[str] = Field(default_factory=list, description="teacher module paths to store as well")
    views: StrictInt | None = Field(
        None, ge=1, le=1000, description="with data.augment: the teacher's outputs on K augmented views of each sample"
    )
    allow_augmented: bool = Field(
        False, description="accept data.augment: the cache then holds clean-input outputs for augmented inputs"
    )
    batch_size: StrictInt = Field(256, ge=1, le=1_000_000)
    shard_rows: StrictInt = Field(4096, ge=1, le=10_000_000, description="samples per shard file")


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


class LoraConfig(Group):
    r: StrictInt = Field(8, ge=1, le=4096, description="rank of each low-rank update")
    alpha: float = Field(16.0, gt=0, description="scale of the update: alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: list[str] = Field(min_length=1, description="names of the Linear layers to adapt, e.g. [qkv, out]")


class LMStudentConfig(ModelConfig):
    lora: LoraConfig | None = Field(None, description="train low-rank adapters only (needs peft: distill[hf])")


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
    """How `distill cache` stores a language-model teacher's next-token distributions (in teacher.cache)."""

    top_k: StrictInt = Field(32, ge=1, le=10_000_000, description="tokens kept per position (the rest as one tail)")
    dtype: Literal["float16", "float32"] = Field("float16", description="of the cached log-probabilities")
