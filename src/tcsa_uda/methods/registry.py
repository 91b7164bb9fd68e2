"""Registry of adaptation methods: a name on the command line selects a class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tcsa_uda.errors import ConfigError
from tcsa_uda.methods.base import MethodContext, UDAMethod

_METHODS: dict[str, type[UDAMethod]] = {}


def register_method(cls: type[UDAMethod]) -> type[UDAMethod]:
    """Class decorator adding ``cls`` under ``cls.name``.

    Raises:
        ValueError: another class is already registered under that name (a programming error).
    """
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"Method name {cls.name!r} registered twice.")
    _METHODS[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_METHODS)


def method_class(name: str) -> type[UDAMethod]:
    """The class registered under ``name``; an unknown name lists the valid ones."""
    if name not in _METHODS:
        raise ConfigError(f"Unknown method {name!r}; valid methods: {', '.join(available_methods())}.")
    return _METHODS[name]


def build_method(
    name: str, ctx: MethodContext, options: Mapping[str, Any] | None = None, where: str = "options"
) -> UDAMethod:
    """Instantiate method ``name`` with its options parsed from ``options`` (named ``where`` in errors)."""
    cls = method_class(name)
    return cls(ctx, cls.parse_options(options or {}, where))
