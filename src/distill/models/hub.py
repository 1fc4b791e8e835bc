"""Models from torchvision and timm by name: "torchvision:resnet18", "timm:resnet18", "timm:convnext_tiny".

Both packages are optional and imported only when such a name is built. `hub_factory(name)` turns a hub
name into a factory `(input_shape, num_classes, **options)`; other options (`weights="DEFAULT"` for
torchvision, `pretrained=True` for timm, `drop_rate`, ...) pass through to `torchvision.models.get_model`
or `timm.create_model` unchanged. timm replaces a pretrained classifier when `num_classes` differs and
adapts the stem to `input_shape`'s channels; torchvision refuses pretrained weights whose class count
differs from `num_classes`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from torch import nn

from distill.errors import ConfigError, first_line
from distill.registry import did_you_mean

Builder = Callable[[Sequence[int], int, dict[str, Any]], nn.Module]


def hub_factory(name: str) -> Callable[..., nn.Module] | None:
    """The factory for "torchvision:NAME" or "timm:NAME"; None when `name` names no hub.

    Fails with a ConfigError when the package is missing or has no such model.
    """
    hub, sep, model_name = name.partition(":")
    if not sep or hub not in _HUBS:
        return None
    if not model_name:
        raise ConfigError(f"model '{name}' names no {hub} model; write e.g. '{hub}:resnet18'")
    build = _HUBS[hub](_import(hub, name), model_name, name)

    def factory(input_shape: Sequence[int] = (3, 224, 224), num_classes: int = 1000, **options: Any) -> nn.Module:
        if len(input_shape) != 3:
            raise ConfigError(f"model '{name}' needs image inputs (C, H, W), got per-sample shape {tuple(input_shape)}")
        return build(tuple(input_shape), num_classes, options)

    factory.__qualname__ = factory.__name__ = name
    factory.__doc__ = f"{name} built by {hub} with `num_classes` classes; other options pass through."
    return factory


def _import(package: str, name: str) -> ModuleType:
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as e:
        if e.name != package:  # installed, but something it needs is not
            raise ConfigError(f"model '{name}': importing {package} failed ({first_line(e)})") from e
        raise ConfigError(f"model '{name}' needs {package}: pip install {package}") from None
    except ImportError as e:
        raise ConfigError(f"model '{name}': importing {package} failed ({first_line(e)})") from e


def _torchvision(torchvision: ModuleType, model_name: str, name: str) -> Builder:
    known = list(torchvision.models.list_models())
    if model_name not in known:
        raise ConfigError(f"unknown torchvision model '{model_name}' in '{name}'{did_you_mean(model_name, known)}")

    def build(input_shape: Sequence[int], num_classes: int, options: dict[str, Any]) -> nn.Module:
        if input_shape[0] != 3:
            raise ConfigError(f"model '{name}' takes 3-channel images, got input shape {tuple(input_shape)}")
        return torchvision.models.get_model(model_name, num_classes=num_classes, **options)

    return build


def _timm(timm: ModuleType, model_name: str, name: str) -> Builder:
    # "hf-hub:..." and "local-dir:..." names are resolved by timm itself
    if ":" not in model_name and not timm.is_model(model_name):
        hint = did_you_mean(model_name, list(timm.list_models()))
        raise ConfigError(f"unknown timm model '{model_name}' in '{name}'{hint}")

    def build(input_shape: Sequence[int], num_classes: int, options: dict[str, Any]) -> nn.Module:
        return timm.create_model(model_name, num_classes=num_classes, in_chans=input_shape[0], **options)

    return build


_HUBS: dict[str, Callable[[ModuleType, str, str], Builder]] = {"torchvision": _torchvision, "timm": _timm}
HUBS = tuple(_HUBS)
"""The prefixes `hub_factory` resolves."""
