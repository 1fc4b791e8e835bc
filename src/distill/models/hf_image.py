"""Hugging Face image classifiers as `model: hf:FOLDER`: any AutoModelForImageClassification (ResNet, ViT,
ConvNeXt, ...) saved with `save_pretrained`, or a hub name the local Hugging Face cache holds
(`pip install 'distill[hf]'`; transformers is imported only when such a model is built).

The model is built for the data's class count: a saved head for another count is replaced by a new one, every
other weight loaded, and the model's `Start` records it. With HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set, a
hub name loads from the cache alone. The model is kept as transformers made it, so its module names are its tap
paths (`resnet.encoder.stages.1`, `vit.layers.0`) and `hidden_states.N` taps work; its forward returns
an output whose `.logits` the library reads (`taps.logits_of`). `preprocessing(name)` says how its images were
prepared when it was pretrained.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from distill.errors import ConfigError, first_line
from distill.weights import Start, mark_start

HF = "hf:"  # the prefix of a Hugging Face model in a config, for every task
logger = logging.getLogger(__name__)


def build(
    name: str, *, input_shape: Sequence[int], num_classes: int, args: dict[str, Any], field: str = "model"
) -> nn.Module:
    """The image classifier "hf:WHERE" with a head for `num_classes`; `args` pass to `from_pretrained`
    (config keys such as `hidden_dropout_prob`, or `attn_implementation`). `field` names the config group."""
    transformers = _transformers(name, field)
    where = _located(name, field)
    if len(input_shape) != 3:
        raise ConfigError(
            f"{field}.model: {name} needs image inputs (C, H, W), got per-sample shape {tuple(input_shape)}"
        )
    local = {"local_files_only": True} if _offline() or Path(where).is_dir() else {}
    with _quiet(transformers):
        try:
            saved = transformers.AutoConfig.from_pretrained(where, **local).num_labels
            model, info = transformers.AutoModelForImageClassification.from_pretrained(
                where,
                num_labels=num_classes,
                ignore_mismatched_sizes=True,
                output_loading_info=True,
                **local,
                **{"dtype": torch.float32, **args},
            )
        except ValueError as e:  # a configuration no image-classification class takes
            raise ConfigError(f"{field}.model: {name} is not an image classifier ({first_line(e)})") from None
        except TypeError as e:
            raise ConfigError(f"{field}.args: {first_line(e)}") from None
        except OSError as e:
            raise ConfigError(f"{field}.model: {name} could not be loaded ({first_line(e)})") from None
    new = sorted(key for key, *_ in info["mismatched_keys"])
    if new:
        logger.info(
            "%s.model: %s has a head for %d classes; made a new one for the data's %d (%s)",
            field,
            name,
            saved,
            num_classes,
            ", ".join(new),
        )
    return mark_start(model, Start(name, ("pretrained",), pretrained=True, new_head=num_classes if new else None))


def preprocessing(name: str) -> dict[str, Any] | None:
    """How an "hf:" model's images were prepared when it was pretrained, from its image processor's
    preprocessor_config.json (in its folder, or the local hub cache): `mean` and `std` (per channel, of pixels
    scaled to [0, 1]; 0 and 1 when it does not normalise), `size` (the side of the square it took: the shorter
    edge, or the height), and `crop_pct` when it has one. None for any other name, or a model without that
    file."""
    if not name.startswith(HF):
        return None
    where = name.removeprefix(HF)
    file = (
        Path(where) / "preprocessor_config.json" if Path(where).is_dir() else _cached(where, "preprocessor_config.json")
    )
    if file is None or not file.is_file():
        return None
    saved = json.loads(file.read_text())
    mean, std = saved.get("image_mean"), saved.get("image_std")
    if saved.get("do_normalize") is False:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    size = saved.get("size")
    if isinstance(size, dict):  # {"shortest_edge": S} or {"height": H, "width": W}
        size = size.get("shortest_edge", size.get("height"))
    found = {"mean": mean, "std": std, "size": size}
    if saved.get("crop_pct") is not None:
        found["crop_pct"] = saved["crop_pct"]
    return found


def _transformers(name: str, field: str) -> ModuleType:
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"{field}.model: {name} needs the transformers package: pip install 'distill[hf]'") from None
    return transformers


def _located(name: str, field: str) -> str:
    """The folder, or the hub name, that "hf:WHERE" names; refused when it is neither (or, with downloads off,
    a hub name the cache does not hold)."""
    where = name.removeprefix(HF)
    if not where:
        raise ConfigError(f"{field}.model: 'hf:' names no model; write hf:FOLDER (saved with save_pretrained)")
    folder = Path(where).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ConfigError(f"{field}.model: {folder} has no config.json; give a folder saved with save_pretrained")
        return str(folder)
    if folder.exists() or where.startswith((".", "/", "~")) or where.count("/") > 1:  # a path, not a hub name
        raise ConfigError(f"{field}.model: {name}: no such folder; give a folder saved with save_pretrained")
    if _offline() and _cached(where, "config.json") is None:
        raise ConfigError(
            f"{field}.model: {name} is not in the local Hugging Face cache and downloads are off (HF_HUB_OFFLINE); "
            "give a folder saved with save_pretrained, or download the model once with downloads on"
        )
    return where


def _offline() -> bool:
    """Whether Hugging Face downloads are off, as its own libraries read the environment."""
    flags = (os.environ.get(key, "").upper() for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag in ("1", "ON", "YES", "TRUE") for flag in flags)


def _cached(repo: str, file: str) -> Path | None:
    """`file` of hub model `repo` in the local Hugging Face cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo, file)
    except ValueError:  # not a valid hub name
        return None
    return Path(found) if isinstance(found, str) else None


@contextlib.contextmanager
def _quiet(transformers: ModuleType) -> Iterator[None]:
    """transformers' loading report and progress bar off while a model loads: what matters, we log."""
    logging_ = transformers.utils.logging
    verbosity, bar = logging_.get_verbosity(), logging_.is_progress_bar_enabled()
    logging_.set_verbosity_error()
    logging_.disable_progress_bar()
    try:
        yield
    finally:
        logging_.set_verbosity(verbosity)
        if bar:
            logging_.enable_progress_bar()
