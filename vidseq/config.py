"""One config system: YAML files in ``configs/`` loaded into frozen dataclasses, plus CLI overrides.

Every task owns a frozen dataclass (nested dataclasses allowed). :func:`load_config` reads a YAML file,
applies ``key.sub=value`` overrides, checks every key against the dataclass fields (unknown keys are
errors with a "did you mean" suggestion) and coerces values to the annotated types.
:func:`save_config` writes the resolved config beside a run's outputs.

Example::

    @dataclass(frozen=True)
    class ExtractConfig:
        backbone: str = "resnet18"
        batch_size: int = 16

    cfg = load_config(ExtractConfig, "configs/extract.yaml", ["batch_size=32"])

Every numeric setting has a range, checked when the config is built (a one-line :class:`ConfigError`
naming the full dotted key, e.g. ``anomaly.fit_s: -3.0 is out of range (>= 0)``). A field declares its
range with :func:`setting` (``field`` metadata ``{"range": Range(...)}``); a numeric field without one
gets :data:`DEFAULT_RANGE` (finite, >= 0), so a negative count, size or duration is never accepted.
Tuples/lists of numbers are checked element by element; ``None`` (where the type allows it) is not checked.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vidseq.errors import ConfigError
from vidseq.registry import suggest

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed values of a numeric setting: ``ge``/``gt`` lower and ``le``/``lt`` upper bounds (None: open).
    Values must be finite unless ``allow_inf``."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    allow_inf: bool = False

    def describe(self) -> str:
        parts = [f">= {self.ge:g}" if self.ge is not None else "", f"> {self.gt:g}" if self.gt is not None else "",
                 f"<= {self.le:g}" if self.le is not None else "", f"< {self.lt:g}" if self.lt is not None else ""]
        return ", ".join(p for p in parts if p) or "finite"

    def check(self, value: float, where: str) -> None:
        import math

        value = float(value) if isinstance(value, float) else int(value)
        bad = (not self.allow_inf and not math.isfinite(value)) \
            or (self.ge is not None and not value >= self.ge) or (self.gt is not None and not value > self.gt) \
            or (self.le is not None and not value <= self.le) or (self.lt is not None and not value < self.lt)
        if bad:
            raise ConfigError(f"{where}: {value!r} is out of range ({self.describe()})")


DEFAULT_RANGE = Range(ge=0)
"""Range of a numeric setting that declares none: counts, sizes, durations and rates are never negative."""


def setting(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, allow_inf: bool = False,
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a declared range: ``stride: int = setting(1, ge=1)``."""
    meta = {"range": Range(ge=ge, gt=gt, le=le, lt=lt, allow_inf=allow_inf)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_range(f: dataclasses.Field) -> Range:
    """The declared range of a field, or :data:`DEFAULT_RANGE`."""
    r = f.metadata.get("range") if f.metadata else None
    return r if isinstance(r, Range) else DEFAULT_RANGE


def _check_range(value: Any, rng: Range, where: str) -> None:
    """Check a coerced value (number, or tuple/list of numbers, possibly nested) against ``rng``."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        rng.check(value, where)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_range(v, rng, f"{where}[{i}]")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type ``tp`` or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: cannot be null")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if out != out:
            raise ConfigError(f"{where}: NaN is not allowed")
        return out
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__}")
        return str(value)
    return value


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            prefix = f"{where}." if where else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'{suggest(prefix + key, [prefix + k for k in fields])}")
        if isinstance(value, dict):
            # A partial nested section keeps the field's own default for the keys it does not set
            # (which may differ from the nested class's defaults, e.g. a task's TrainConfig).
            default = _field_default(fields[key])
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                value = _deep_merge(to_dict(default), value)
        full = f"{where}.{key}" if where else key
        kwargs[key] = _coerce(value, hints[key], full)
        if not dataclasses.is_dataclass(hints[key]):
            _check_range(kwargs[key], field_range(fields[key]), full)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None
    return obj


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key.sub=value``; the value is read as YAML (so ``3``, ``true``, ``[1,2]`` work)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping; missing file, bad syntax or a non-mapping are ConfigErrors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{loc} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_config(
    cls: type[T],
    path: str | os.PathLike[str] | None = None,
    overrides: typing.Iterable[str] | dict[str, Any] = (),
) -> T:
    """Load ``cls`` from an optional YAML file, then apply overrides.

    Args:
        cls: a (frozen) dataclass type; nested dataclass fields are filled from nested mappings.
        path: YAML file; ``None`` uses the dataclass defaults.
        overrides: ``["a.b=1", ...]`` strings or a ``{"a.b": 1}`` mapping (``None`` sets null).

    Raises:
        ConfigError: unknown key (with suggestion), wrong type, invalid YAML, missing file.
    """
    return with_overrides(cls, read_yaml(path) if path is not None else {}, overrides)


def with_overrides(cls: type[T], data: dict[str, Any], overrides: typing.Iterable[str] | dict[str, Any] = ()) -> T:
    """Build ``cls`` from a nested mapping (e.g. a checkpoint's stored config) plus overrides
    (``["a.b=1", ...]`` or ``{"a.b": 1}``); ``data`` itself is not modified."""
    data = copy.deepcopy(data)
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in items:
        _set_path(data, key, value)
    return _build(cls, data, "")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain-JSON/YAML dict of a config dataclass (tuples become lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass from :func:`to_dict` output (e.g. from a checkpoint)."""
    return _build(cls, dict(data), "")


def save_config(cfg: Any, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML, atomically."""
    from vidseq.io import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def default_config_path(name: str) -> Path | None:
    """``configs/<name>.yaml`` of the source checkout if it exists (not shipped inside wheels)."""
    p = CONFIG_DIR / f"{name}.yaml"
    return p if p.is_file() else None


def config_class(name: str) -> type:
    """The dataclass that ``configs/<name>.yaml`` loads into (:data:`vidseq.registry.CONFIGS`)."""
    from vidseq.registry import CONFIGS

    return CONFIGS.load(name)
