"""Typed dataclass configs: defaults < preset < YAML file < `--set key=value` overrides.

A config is a plain dataclass; this module fills one from layered dicts, coercing strings from the
command line to each field's declared type, refusing unknown keys, and checking every field against
the rule declared beside it (`setting(5e-6, gt=0)`), all with one-line errors. `check_fields` runs
the same checks on a config built directly (the CLI's eval and compare configs).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

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
        data = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError:
        raise HarnessError(f"{path}: not valid UTF-8") from None
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
    config = cls(**kwargs)
    check_fields(config, where)
    if callable(getattr(config, "validate", None)):
        config.validate()  # rules that tie several fields together
    return config


def coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return coerce(value, options[0], where)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(hint) or (str,)
        if isinstance(value, str):  # "a,b" from the command line; "", "[]" and "none" are the empty list
            items = [] if value.strip().lower() in ("", "[]", "none", "null") else value.split(",")
        elif isinstance(value, (list, tuple)):
            items = list(value)
        elif value is None:
            items = []
        else:
            raise HarnessError(f"{where}: expected a list, got {value!r}")
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
        if hint is str:
            if isinstance(value, (dict, list, tuple)):
                raise ValueError
            return str(value)
        if hint in (int, float):
            if isinstance(value, (dict, list, tuple, bool)):
                raise ValueError
            number = float(value) if isinstance(value, str) else value
            if not math.isfinite(number):  # nan and inf are never a setting
                raise ValueError
            if hint is int:
                if not float(number).is_integer() or abs(number) >= 2**63:  # what torch and numpy hold
                    raise ValueError
                return int(number)
            return float(number)
    except (TypeError, ValueError, OverflowError):
        raise HarnessError(f"{where}: expected {hint.__name__}{' (a finite number)' if hint is float else ''}, "
                           f"got {value!r}") from None
    return value


# ---- rules on values, declared beside each field ---------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """What a field accepts beyond its type: bounds, a set of choices (for a list: of each item), and/or
    a function returning why a value is refused (None when it is fine)."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None

    def problem(self, value: Any) -> str | None:
        if value is None:
            return None  # optional fields: None means "not set"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                return "must be a finite number"
            for bound, ok, word in ((self.gt, lambda b: value > b, ">"), (self.ge, lambda b: value >= b, ">="),
                                    (self.lt, lambda b: value < b, "<"), (self.le, lambda b: value <= b, "<=")):
                if bound is not None and not ok(bound):
                    return f"must be {self.describe()}"
        if self.choices is not None:
            bad = [v for v in (value if isinstance(value, list) else [value]) if v not in self.choices]
            if bad:
                return f"must be {'made of ' if isinstance(value, list) else ''}one of {', '.join(map(str, self.choices))}"
        return self.check(value) if self.check is not None else None

    def describe(self) -> str:
        low = f"> {self.gt}" if self.gt is not None else f">= {self.ge}" if self.ge is not None else ""
        high = f"< {self.lt}" if self.lt is not None else f"<= {self.le}" if self.le is not None else ""
        return " and ".join(p for p in (low, high) if p)


def setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, help: str | None = None,
            flags: tuple[str, ...] = (), envvar: str | None = None, **rule: Any) -> Any:
    """A dataclass field with a rule: `lr: float = setting(5e-6, gt=0)`. `help` makes it a command-line
    option (cli.options_from), named `flags` when given (else --field-name), read from `envvar` when unset."""
    return dataclasses.field(default=default, default_factory=factory,
                             metadata={"rule": Rule(**rule), "help": help, "flags": flags, "envvar": envvar})


def _type_problem(value: Any, hint: Any) -> str | None:
    """Why `value` is not of the declared type (configs built directly, not through `coerce`)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return None if isinstance(value, (list, tuple)) else "must be a list"
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "must be a finite number"
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63
        return None if ok else "must be a 64-bit integer"
    if hint in (str, bool):
        return None if isinstance(value, hint) else f"must be a {hint.__name__}"
    return None


def check_fields(config: Any, where: str) -> None:
    """Every field of dataclass `config` against its type and declared rule: one-line HarnessError.
    `where` names the fields in the message: "train" gives `train.lr`, "--" gives `--top-p` (CLI options)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        rule = f.metadata.get("rule")
        problem = _type_problem(value, hints[f.name]) or (rule.problem(value) if rule else None)
        if problem:
            name = f"--{f.name.replace('_', '-')}" if where == "--" else f"{where}.{f.name}"
            raise HarnessError(f"{name} {problem} (got {value!r})")


def check_device(device: str) -> str | None:
    """auto, cpu, mps, cuda or cuda:N, for a device this machine has."""
    if device in ("auto", "cpu"):
        return None
    import torch

    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        return None if mps is not None and mps.is_available() else "names mps, which this machine does not have"
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        return "must be auto, cpu, cuda, cuda:N or mps"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return "names a CUDA device, but CUDA is not available here"
    if index and int(index) >= count:
        return f"names a CUDA device this machine does not have ({count} visible)"
    return None


DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
DTYPE_HELP = "auto (bf16 on GPUs and CPUs that compute it natively, else float32: see README), float32, bfloat16, float16."

