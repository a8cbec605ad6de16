"""Typed dataclass configs: defaults < preset < YAML file < `--set key=value` overrides.

A config is a plain dataclass; this module only fills one from layered dicts, coercing strings from
the command line to each field's declared type, and refusing unknown keys with a one-line error.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from harness.errors import HarnessError

T = TypeVar("T")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """["lr=1e-5", "method.alpha=5"] -> {"lr": "1e-5", "method": {"alpha": "5"}}."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HarnessError(f"--set expects key=value, got {pair!r}")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise HarnessError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: expected a mapping of config fields")
    return data


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


def build(cls: type[T], values: dict[str, Any], where: str = "config") -> T:
    """An instance of dataclass `cls` from `values`; strings are coerced to the field types."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise HarnessError(f"unknown {where} field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kwargs = {name: coerce(value, hints[name], f"{where}.{name}") for name, value in values.items()}
    return cls(**kwargs)


def coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return coerce(value, options[0], where)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(hint) or (str,)
        items = value.split(",") if isinstance(value, str) else list(value)
        return [coerce(v.strip() if isinstance(v, str) else v, inner, where) for v in items]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise HarnessError(f"{where}: expected a mapping, got {value!r}")
        return value
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if hint in (int, float, str):
            if hint is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return hint(float(value)) if hint is int and isinstance(value, str) and "e" in value.lower() else hint(value)
    except (TypeError, ValueError):
        raise HarnessError(f"{where}: expected {hint.__name__}, got {value!r}") from None
    return value


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
