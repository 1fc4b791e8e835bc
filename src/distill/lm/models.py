"""Language models as the LM recipes use them: `forward(ids)` logits, `hidden(ids)` final hidden states and
`head` the output layer. Our GPT (`model: gpt`), or a Hugging Face causal LM from a local folder
(`model: hf:FOLDER`, or a hub name where a network exists; `pip install -e ".[hf]"`).

At start-up the two models' vocabularies are checked: tokenizers that map a token to different ids, or output
layers of different sizes (two sizes of one family, their vocabularies padded differently), are refused, or,
with `method.shared_vocab: true`, distilled over the ids both have.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from distill.errors import ConfigError, DistillError, first_line
from distill.lm.config import LoraConfig
from distill.lm.data import CharTokenizer, Tokenizer
from distill.models.gpt import GPT
from distill.schema import ModelConfig

HF = "hf:"


def _transformers():
    try:
        import transformers
    except ImportError:
        raise DistillError("Hugging Face models need the transformers package: pip install 'distill[hf]'") from None
    return transformers


class HFTokenizer:
    """A Hugging Face tokenizer from a folder (or a hub name), without special tokens added to the text."""

    def __init__(self, where: str):
        self.name = f"hf:{where}"
        self.inner = _transformers().AutoTokenizer.from_pretrained(where)

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.inner.decode(ids)

    def vocab(self) -> dict[str, int]:
        return self.inner.get_vocab()

    @property
    def vocab_size(self) -> int:
        return len(self.inner)

    @property
    def pad_id(self) -> int:
        return next((i for i in (self.inner.pad_token_id, self.inner.eos_token_id) if i is not None), 0)


def tokenizer_for(spec: str, text: str) -> Tokenizer:
    """`char`: fitted on `text`; anything else names a Hugging Face tokenizer's folder or hub name."""
    return CharTokenizer.fit(text) if spec == "char" else HFTokenizer(spec.removeprefix(HF))


def model_tokenizer(spec: ModelConfig, data_tokenizer: Tokenizer) -> Tokenizer:
    """The tokenizer a model was trained with: a Hugging Face folder's own, where it holds one; else the data's."""
    if spec.model.startswith(HF):
        folder = Path(spec.model.removeprefix(HF))
        if any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
            return HFTokenizer(str(folder))
    return data_tokenizer


class HFCausalLM(nn.Module):
    """A Hugging Face causal LM with the interface of our GPT."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.context = getattr(model.config, "max_position_embeddings", None) or model.config.n_positions

    @property
    def head(self) -> nn.Linear:
        return self.model.get_output_embeddings()

    def hidden(self, ids: Tensor) -> Tensor:
        return self.model(input_ids=ids, output_hidden_states=True).hidden_states[-1]  # after the final norm

    def hidden_and_attention(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(input_ids=ids, output_hidden_states=True, output_attentions=True)
        if not out.attentions or out.attentions[-1] is None:
            raise DistillError("this Hugging Face model returns no attention weights with its attention kernel; "
                               "load it with args: {attn_implementation: eager}")  # fmt: skip
        return out.hidden_states[-1], out.attentions[-1]

    def forward(self, ids: Tensor) -> Tensor:
        return self.model(input_ids=ids).logits


def build_lm(spec: ModelConfig, vocab_size: int, context: int, *, field: str, dtype: str = "float32") -> nn.Module:
    """The model of config group `field`: `gpt` sized to the tokenizer, or a Hugging Face folder."""
    if spec.model == "gpt":
        args = dict(spec.args)
        if args.pop("vocab_size", vocab_size) != vocab_size:
            raise ConfigError(f"{field}.args.vocab_size: the tokenizer has {vocab_size} tokens; drop the key")
        try:
            model = GPT(vocab_size, context=args.pop("context", context), **args)
        except TypeError as e:
            raise ConfigError(f"{field}.args: {e}; gpt takes layers, heads, width, dropout, context") from None
        except ValueError as e:
            raise ConfigError(f"{field}.args: {e}") from None
    elif spec.model.startswith(HF):
        torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
        auto = _transformers().AutoModelForCausalLM
        model = HFCausalLM(auto.from_pretrained(spec.model.removeprefix(HF), torch_dtype=torch_dtype, **spec.args))
    else:
        raise ConfigError(f"{field}.model: '{spec.model}' is not a language model; use gpt or hf:FOLDER")
    if model.context < context:
        raise ConfigError(f"data.context {context} is longer than {field}'s context {model.context}; lower it")
    return model


def with_lora(model: nn.Module, lora: LoraConfig) -> nn.Module:
    """`model` with low-rank adapters on the Linear layers named in `lora.targets`; only those train."""
    try:
        import peft
    except ImportError:
        raise DistillError("student.lora needs the peft package: pip install 'distill[hf]'") from None
    settings = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.targets)
    try:
        return peft.get_peft_model(model, settings)
    except ValueError as e:  # a target that names no layer
        raise ConfigError(f"student.lora.targets: {first_line(e)}") from None


def check_vocabularies(
    student: Tokenizer, teacher: Tokenizer, student_size: int, teacher_size: int, *, shared: bool
) -> int:
    """The number of output ids the loss compares: both layers' size, or with `shared` the ids both have.
    Refuses tokenizers that disagree on a token's id: comparing those distributions would teach noise."""
    if student is not teacher:
        mine, theirs = student.vocab(), teacher.vocab()
        differ = [token for token, i in mine.items() if theirs.get(token, i) != i]
        missing = len(mine.keys() ^ theirs.keys())
        if differ or missing:
            example = (
                f"'{differ[0]}' is {mine[differ[0]]} for the student, {theirs[differ[0]]} for the teacher"
                if differ
                else ""
            )
            raise DistillError(
                f"the student's and teacher's tokenizers differ ({len(differ)} tokens with other ids, {missing} in "
                f"one only{'; ' + example if example else ''}): token-level distillation needs one tokenizer"
            )
    if student_size == teacher_size:
        return student_size
    if not shared:
        raise DistillError(
            f"the student's output layer has {student_size} ids and the teacher's {teacher_size}, with one "
            f"tokenizer of {student.vocab_size}: padded vocabularies. Set method.shared_vocab: true to distill "
            f"over the {min(student_size, teacher_size)} ids both have"
        )
    if min(student_size, teacher_size) < student.vocab_size:
        raise DistillError(f"an output layer of {min(student_size, teacher_size)} ids is smaller than the tokenizer's "
                           f"{student.vocab_size} tokens; the models do not fit the tokenizer")  # fmt: skip
    return min(student_size, teacher_size)


def parameters(model: nn.Module, *, trainable: bool = False) -> int:
    """Distinct parameters (a tied output layer counted once); with `trainable`, those that train."""
    distinct = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in distinct if p.requires_grad or not trainable)
