"""Typed configuration: dataclasses loaded from YAML, with ``key.sub=value`` overrides.

A configuration is a (nested) dataclass. :func:`load_config` reads a YAML file, applies
command-line overrides and converts the result into the dataclass, checking every key and type:
an unknown key is an error that lists the valid keys, and a wrong type names the key, the
expected type and the value found. :func:`save_config` writes the resolved configuration so every
output folder records what produced it. There is no global configuration object: configs are
passed explicitly.

Example::

    cfg = load_config(TrainConfig, "configs/phantom_mr2ct.yaml", ["stages.0.iterations=200"])
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from tcsa_uda.atomic import atomic_write_text
from tcsa_uda.errors import ConfigError, MissingPathError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        args = ", ".join(_type_name(a) for a in get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise a ConfigError naming ``key``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"Config key '{key}': expected a mapping of {tp.__name__} fields, found {value!r}.")
        return _from_mapping(tp, value, key)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"Config key '{key}': expected {_type_name(tp)}, found {value!r}.")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"Config key '{key}': expected {_type_name(tp)}, found null.")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"Config key '{key}': expected {_type_name(tp)}, found {value!r}.")
    if origin in (list, Sequence, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Config key '{key}': expected {_type_name(tp)}, found {value!r}.")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(
                    f"Config key '{key}': expected {len(args)} values ({_type_name(tp)}), found {value!r}."
                )
            return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        items = [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"Config key '{key}': expected a mapping, found {value!r}.")
        kt, vt = get_args(tp) or (Any, Any)
        return {_convert(kt, k, key): _convert(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"Config key '{key}': expected true or false, found {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"Config key '{key}': expected an integer, found {value!r}.")
        return value
    if tp is float:
        if isinstance(value, str):
            value = _number_text(value, key)  # YAML 1.1 reads ``1e-3`` (no dot) as text
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"Config key '{key}': expected a number, found {value!r}.")
        if not math.isfinite(value):
            raise ConfigError(f"Config key '{key}': expected a finite number, found {value!r}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"Config key '{key}': expected a string, found {value!r}.")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"Config key '{key}': expected a path, found {value!r}.")
        return Path(value)
    raise ConfigError(f"Config key '{key}': unsupported type {_type_name(tp)}.")


def _number_text(text: str, key: str) -> float:
    """A number written as text, e.g. ``1e-3``, which YAML 1.1 does not read as a float."""
    try:
        return float(text.strip())
    except ValueError:
        raise ConfigError(f"Config key '{key}': expected a number, found {text!r}.") from None


def _from_mapping(cls: type[T], data: Mapping[str, Any], prefix: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    moved: dict[str, str] = getattr(cls, "moved_keys", {})
    for k in unknown:
        if k in moved:
            raise ConfigError(f"Config key {_join(prefix, k)!r} is no longer used: {moved[k]}.")
    if unknown:
        where = f"section '{prefix}'" if prefix else "the top level"
        raise ConfigError(
            f"Unknown config key(s) {', '.join(repr(_join(prefix, k)) for k in unknown)} at {where}; "
            f"valid keys: {', '.join(sorted(fields))}."
        )
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        key = _join(prefix, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"Config key '{key}' is required and missing.")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"Config section '{prefix or cls.__name__}': {exc}") from exc


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a plain mapping, validating keys and types.

    Args:
        cls: a dataclass type.
        data: its fields as a mapping.
        prefix: the dotted key of ``data`` inside a larger config, named in error messages
            (e.g. ``stages.1.options``).
    """
    return _from_mapping(cls, data, prefix)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-serialisable dict of a config dataclass (paths become strings)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into ``(["a", "b", "c"], value)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r}: expected the form key.sub=value.")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"Override {text!r}: the key {key!r} is empty or has an empty part.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"Override {text!r}: the value {raw!r} is not valid YAML ({exc}).") from exc
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key.sub=value`` override applied, in order.

    Raises:
        ConfigError: an override is malformed, addresses a missing list item, or replaces a whole
            section that an earlier override wrote into (e.g. ``stages.1.options.x=1`` before
            ``stages=[...]``: the earlier value would be lost silently).
    """
    import copy

    out = copy.deepcopy(data)
    earlier: list[tuple[list[str], str]] = []
    for text in overrides:
        parts, value = parse_override(text)
        lost = [t for p, t in earlier if len(p) > len(parts) and p[: len(parts)] == parts]
        if lost:
            raise ConfigError(
                f"Override {text!r} replaces the whole of '{'.'.join(parts)}', so the earlier override(s) "
                f"{', '.join(map(repr, lost))} would be lost; give {text!r} first."
            )
        earlier.append((parts, text))
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"Override {text!r}: '{'.'.join(parts[:i]) or 'top level'}' is a list of {len(node)} item(s); "
                        f"expected an index 0..{len(node) - 1}, found {part!r}."
                    )
                idx: Any = int(part)
            elif isinstance(node, dict):
                idx = part
            else:
                raise ConfigError(f"Override {text!r}: '{'.'.join(parts[:i])}' is a value, not a section.")
            if last:
                node[idx] = value
            else:
                child = node.get(idx) if isinstance(node, dict) else node[idx]
                if child is None:
                    child = {}
                    node[idx] = child
                if not isinstance(child, (dict, list)):
                    raise ConfigError(f"Override {text!r}: '{where}' is a value, not a section.")
                node = child
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with an error naming the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"Config file {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"Config file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save it with UTF-8 encoding."
        ) from exc
    except OSError as exc:
        raise ConfigError(f"Config file {path} cannot be read ({exc.strerror or exc}).") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path}: expected a mapping at the top level, found {type(data).__name__}.")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Load ``cls`` from the YAML file ``path`` (or defaults when None) plus overrides."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from exc
        raise


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved configuration ``cfg`` as YAML to ``path`` atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
