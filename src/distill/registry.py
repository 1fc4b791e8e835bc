"""One generic name -> object registry, used for losses, models and data sets."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from distill.errors import ConfigError, first_line

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """Maps names to objects. Unknown names fail with close matches; duplicate names fail at once."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            known = ", ".join(sorted(self._items))
            raise ConfigError(f"unknown {self.kind} '{name}'{did_you_mean(name, list(self._items))}; known: {known}")
        return self._items[name]

    def name_of(self, obj: object) -> str | None:
        """The name `obj` (or its class) is registered under, if any."""
        return next((name for name, item in self._items.items() if item is obj or item is type(obj)), None)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def build(
    factory: Callable[..., T], name: str, args: dict[str, Any], field: str, defaults: Mapping[str, Any] | None = None
) -> T:
    """Call `factory(**args)` for the config key `field`, turning every failure into one ConfigError line.

    `defaults` fill the parameters the factory names and `args` leaves out (a model's `num_classes`, a
    loss's `num_samples`); an argument the factory does not take is refused with the ones it does.
    """
    params = inspect.signature(factory).parameters
    args = {**{k: v for k, v in (defaults or {}).items() if k in params}, **args}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [key for key in args if key not in params and not takes_any]
    if unknown:
        known = sorted(k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL)
        raise ConfigError(
            f"{field}: '{name}' takes no argument {unknown[0]!r}{did_you_mean(unknown[0], known)}; it takes {known}"
        )
    try:
        return factory(**args)
    except ConfigError as e:
        raise ConfigError(f"{field}: {e}") from e
    except (ValueError, TypeError, AssertionError) as e:  # a factory refusing its arguments; anything else is a bug
        raise ConfigError(f"{field}: '{name}' could not be built: {first_line(e)}") from e
