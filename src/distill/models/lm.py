"""Language models as the LM recipes use them: `forward(ids)` logits, `hidden(ids)` final hidden states and
`head` the output layer. Our GPT (`model: gpt`), or a Hugging Face causal LM from a local folder
(`model: hf:FOLDER`, or a hub name where a network exists; `pip install -e ".[hf]"`).

At start-up the two models' vocabularies are checked: tokenizers that map a token to different ids, or output
layers of different sizes (two sizes of one family, their vocabularies padded differently), are refused, or,
with `method.shared_vocab: true`, distilled over the ids both have.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from distill.data.text import CharTokenizer, Tokenizer, read_text
from distill.errors import ConfigError, DistillError, first_line
from distill.models.gpt import GPT
from distill.models.hf_image import HF

if TYPE_CHECKING:
    from distill.config.groups import LoraConfig, ModelConfig


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

    def render_chat(self, messages: list[dict[str, str]], *, generation_prompt: bool = False) -> list[int]:
        """The token ids of `messages` through the tokenizer's chat template."""
        if not getattr(self.inner, "chat_template", None):
            raise DistillError(f"tokenizer {self.name} has no chat template; give one that has")
        rendered = self.inner.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=generation_prompt, return_dict=True
        )
        return list(rendered["input_ids"])

    @property
    def vocab_size(self) -> int:
        return len(self.inner)

    @property
    def pad_id(self) -> int:
        return next((i for i in (self.inner.pad_token_id, self.inner.eos_token_id) if i is not None), 0)


def tokenizer_for(spec: str, text: str) -> Tokenizer:
    """`char`: fitted on `text`; `char:FILE`: fitted on that file's text (a teacher's, trained on other data);
    anything else names a Hugging Face tokenizer's folder or hub name."""
    if spec == "char":
        return CharTokenizer.fit(text)
    if spec.startswith("char:"):
        return CharTokenizer.fit(read_text(spec.removeprefix("char:")))
    return HFTokenizer(spec.removeprefix(HF))


def model_tokenizer(spec: ModelConfig, data_tokenizer: Tokenizer) -> Tokenizer:
    """The tokenizer a model was trained with: a Hugging Face folder's own, where it holds one; else the data's."""
    if spec.model.startswith(HF):
        folder = Path(spec.model.removeprefix(HF))
        if any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
            return HFTokenizer(str(folder))
    return data_tokenizer


class HFCausalLM(nn.Module):
    """A Hugging Face causal LM with the interface of our GPT. `hidden` runs the base model alone, so no logits
    are made when the fused loss needs only hidden states; `fusable` says whether `head(hidden)` is the
    model's logits (not where it post-processes them: soft-capping, a logit scale)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.context = getattr(model.config, "max_position_embeddings", None) or model.config.n_positions
        with torch.no_grad():
            ids = torch.zeros(1, 2, dtype=torch.long)
            self.fusable = torch.allclose(self.head(self.hidden(ids)), self(ids), atol=1e-4)

    @property
    def head(self) -> nn.Linear:
        return self.model.get_output_embeddings()

    def hidden(self, ids: Tensor) -> Tensor:
        return self.model.base_model(input_ids=ids).last_hidden_state  # after the final norm

    def hidden_and_attention(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model.base_model(input_ids=ids, output_attentions=True)
        if not out.attentions or out.attentions[-1] is None:
            raise DistillError(
                "this Hugging Face model returns no attention weights with its attention kernel; "
                "load it with args: {attn_implementation: eager}"
            )
        return out.last_hidden_state, out.attentions[-1]

    def forward(self, ids: Tensor) -> Tensor:
        return self.model(input_ids=ids).logits

    @torch.inference_mode()
    def generate(
        self,
        prompts: Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """As `GPT.generate`, with the model's own `generate` (its cache; it may stop early at its end token)."""
        if generator is not None:
            torch.manual_seed(generator.initial_seed())  # transformers samples from the global generator
        # every setting explicit: a model's own generation config (sampling on, top-p, a penalty) must not apply
        settings = {"do_sample": temperature > 0, "top_p": 1.0, "repetition_penalty": 1.0, "top_k": top_k or 0}
        if temperature > 0:
            settings["temperature"] = temperature
        out = self.model.generate(
            prompts, max_new_tokens=max_new_tokens, min_new_tokens=0, pad_token_id=self.end_id, **settings
        )
        return out[:, prompts.shape[1] :]

    @property
    def end_id(self) -> int | None:
        """The token that ends a sequence; what generation pads a finished row with."""
        end = self.model.config.eos_token_id
        return end[0] if isinstance(end, list) else end


def build_lm(
    spec: ModelConfig, vocab_size: int, context: int, *, field: str, dtype: str = "float32", attention: bool = False
) -> nn.Module:
    """The model of config group `field`: `gpt` sized to the tokenizer, or a Hugging Face folder (with the eager
    attention kernel where the `attention` term reads its weights)."""
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
        args = {"dtype": torch.bfloat16 if dtype == "bfloat16" else torch.float32, **spec.args}
        if attention:
            args.setdefault("attn_implementation", "eager")
        model = HFCausalLM(_transformers().AutoModelForCausalLM.from_pretrained(spec.model.removeprefix(HF), **args))
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
    data: Tokenizer, student: Tokenizer, teacher: Tokenizer, student_size: int, teacher_size: int, *, shared: bool
) -> int:
    """The number of output ids the loss compares: both layers' size, or with `shared` the tokenizer's. Refuses
    a model tokenizer that disagrees with the data's on a token's id (comparing those distributions would teach
    noise), and an output layer smaller than the tokenizer."""
    for who, tokenizer in (("student", student), ("teacher", teacher)):
        _same_ids(data, tokenizer, who)
    if min(student_size, teacher_size) < data.vocab_size:
        who = "student" if student_size < teacher_size else "teacher"
        raise DistillError(
            f"the {who}'s output layer has {min(student_size, teacher_size)} ids, fewer than the "
            f"tokenizer's {data.vocab_size} tokens; the model does not fit the tokenizer"
        )
    if student_size == teacher_size:
        return student_size
    if not shared:
        raise DistillError(
            f"the student's output layer has {student_size} ids and the teacher's {teacher_size}, with one "
            f"tokenizer of {data.vocab_size}: padded vocabularies. Set method.shared_vocab: true to distill "
            f"over the tokenizer's {data.vocab_size} ids"
        )
    return data.vocab_size


def _same_ids(data: Tokenizer, model: Tokenizer, who: str) -> None:
    if model is data:
        return
    mine, theirs = data.vocab(), model.vocab()
    differ = [token for token, i in mine.items() if theirs.get(token, i) != i]
    missing = len(mine.keys() ^ theirs.keys())
    if differ or missing:
        example = (
            f"; '{differ[0]}' is {mine[differ[0]]} in the data's, {theirs[differ[0]]} in the {who}'s" if differ else ""
        )
        raise DistillError(
            f"the data's tokenizer and the {who}'s differ ({len(differ)} tokens with other ids, {missing} in one "
            f"only{example}): token-level distillation needs one tokenizer; set data.tokenizer to the model's folder"
        )
