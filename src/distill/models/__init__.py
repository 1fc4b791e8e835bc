"""Built-in architectures by name, and a user's own model as "package.module:factory"."""

from __future__ import annotations

import importlib
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill._io import file_sha256
from distill.errors import ConfigError, first_line
from distill.registry import Registry, build
from distill.weights import Start, mark_start

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def _check_widths(name: str, widths: Sequence[int]) -> None:
    if isinstance(widths, str) or not isinstance(widths, Sequence):
        raise ConfigError(f"{name} must be a list of positive integers, got {widths!r}")
    if any(not isinstance(w, int) or w < 1 for w in widths):
        raise ConfigError(f"{name} must be positive integers, got {list(widths)}")


@MODELS.register("mlp")
def mlp(
    input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (128,), dropout: float = 0.0
) -> nn.Module:
    """Flatten, then Linear-ReLU(-Dropout) blocks of the given widths, then a linear classifier.

    Tap paths: `hidden1` .. `hiddenN` (B, width), `fc` (the logits).
    """
    _check_widths("hidden", hidden)
    parts: dict[str, nn.Module] = {"flatten": nn.Flatten()}
    width = math.prod(input_shape)
    for i, h in enumerate(hidden, start=1):
        parts[f"hidden{i}"] = nn.Sequential(nn.Linear(width, h), nn.ReLU(), *([nn.Dropout(dropout)] if dropout else []))
        width = h
    parts["fc"] = nn.Linear(width, num_classes)
    return nn.Sequential(OrderedDict(parts))


@MODELS.register("cnn")
def cnn(
    input_shape: Sequence[int],
    num_classes: int,
    channels: Sequence[int] = (32, 64),
    hidden: int = 128,
    dropout: float = 0.0,
    grid: int = 4,
) -> nn.Module:
    """Conv3x3-BN-ReLU blocks (max-pool after each while the map is larger than 4x4), average-pooled to a
    `grid` x `grid` map (or the map's own size, if smaller) and flattened, a hidden linear layer and a
    classifier. Input (B, C, H, W).

    The head keeps the image's layout: on small images (8x8 digits, 28x28 MNIST, 32x32 CIFAR) where a pixel's
    position matters, pooling to one value per channel (grid 1, the usual global average pool) throws that
    away and makes a weak teacher.

    Tap paths: `block1` .. `blockN` (B, C, H, W), `pool` (B, C * g * g), `hidden` (B, hidden), `fc` (logits).
    """
    if len(input_shape) != 3:
        raise ConfigError(f"model 'cnn' needs image inputs (C, H, W), got per-sample shape {tuple(input_shape)}")
    _check_widths("channels", channels)
    _check_widths("hidden", [hidden])
    _check_widths("grid", [grid])
    in_channels, size = input_shape[0], min(input_shape[1:])
    parts: dict[str, nn.Module] = {}
    for i, c in enumerate(channels, start=1):
        layers = [nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        if size > 4:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        parts[f"block{i}"] = nn.Sequential(*layers)
        in_channels = c
    grid = min(grid, size)
    parts["pool"] = nn.Sequential(nn.AdaptiveAvgPool2d(grid), nn.Flatten())
    parts["hidden"] = nn.Sequential(
        nn.Linear(in_channels * grid * grid, hidden), nn.ReLU(), *([nn.Dropout(dropout)] if dropout else [])
    )
    parts["fc"] = nn.Linear(hidden, num_classes)
    return nn.Sequential(OrderedDict(parts))


_IMPORTED: dict[str, dict[str, str | None]] = {}  # "package.module:factory" -> the code that ran


def _import_factory(spec: str) -> Callable[..., nn.Module]:
    """The callable named by "package.module:factory"; importing runs that module's code, as the config asks."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr.isidentifier():
        raise ConfigError(f"'{spec}' is not a model name; write a built-in name or 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or the module's own SyntaxError or failure at import
        raise ConfigError(f"'{spec}': cannot import {module_name} ({first_line(e, typed=True)})") from e
    if not hasattr(module, attr):
        raise ConfigError(f"'{spec}': {module_name} has no attribute '{attr}'")
    file = getattr(module, "__file__", None)  # hashed now: the file may change while a long run goes on
    digest = file_sha256(file) if file and Path(file).is_file() else None
    _IMPORTED.setdefault(spec, {"model": spec, "file": file, "sha256": digest})
    return getattr(module, attr)


def user_code(name: str) -> dict[str, str | None] | None:
    """For a model given as "package.module:factory" and built in this process: the module's file and that
    file's sha256 when it was imported, for the run's record. None for built-in and torchvision:/timm: names."""
    return _IMPORTED.get(name)


def build_model(
    name: str, *, input_shape: Sequence[int], num_classes: int, args: dict[str, Any] | None = None, field: str = "model"
) -> nn.Module:
    """Build a registered model, or call the user's factory "package.module:factory" with `args`.

    A user factory also receives `input_shape` and `num_classes` when its signature names them and
    `args` does not. `field` names the config key in error messages. "hf:FOLDER" is a Hugging Face image
    classifier (`hf_image.py`). A pretrained model (hf:, timm's `pretrained: true`, torchvision's `weights`)
    records where its weights came from (`weights.start_of`).
    """
    if name.startswith(hf_image.HF):
        return hf_image.build(
            name, input_shape=input_shape, num_classes=num_classes, args=dict(args or {}), field=field
        )
    try:
        factory = hub.hub_factory(name) or (_import_factory(name) if ":" in name else MODELS.get(name))
    except ConfigError as e:
        raise ConfigError(f"{field}: {e}") from None
    defaults = {"input_shape": tuple(input_shape), "num_classes": num_classes}
    if name in MODELS:  # built-ins are sized first without memory; user and hub code may not run on "meta"
        with torch.device("meta"):
            _check_fits(build(factory, name, dict(args or {}), f"{field}.args", defaults), field)
    model = build(factory, name, dict(args or {}), f"{field}.args", defaults)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{field}: '{name}' returned {type(model).__name__}, not a torch.nn.Module")
    return _mark_pretrained(model, name, args or {})


def _mark_pretrained(model: nn.Module, name: str, args: dict[str, Any]) -> nn.Module:
    """A hub model built with its pretrained weights, marked so: timm's `pretrained`, torchvision's `weights`."""
    if name.startswith("timm:") and args.get("pretrained"):
        return mark_start(model, Start(name, ("pretrained",), pretrained=True))
    if name.startswith("torchvision:") and args.get("weights"):
        return mark_start(model, Start(name, (f"weights={args['weights']}",), pretrained=True))
    return model


def _check_fits(model: nn.Module, field: str) -> None:
    """Refuse a model whose training (weights, gradients, optimizer state: about 4x the weights) cannot fit
    in this machine's memory, before a byte of it is allocated."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: nothing to compare with
        return
    if 4 * weights > memory:
        raise ConfigError(
            f"{field}.args: the model has {count_params(model):,} parameters ({weights / 2**30:.1f} GB; training "
            f"needs about 4x that), more than this machine's {memory / 2**30:.0f} GB of memory; make it smaller"
        )


def count_params(model: nn.Module, *, trainable: bool = False) -> int:
    """Distinct parameters (a tied output layer counted once); with `trainable`, those that train."""
    distinct = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in distinct if p.requires_grad or not trainable)


__all__ = ["MODELS", "build_model", "cnn", "count_params", "mlp", "user_code"]

from distill.models import cifar, hf_image, hub  # noqa: E402,F401  registers the zoo; the hf:, torchvision:, timm: names
