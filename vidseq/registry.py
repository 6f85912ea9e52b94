"""One registry for every ``name -> thing`` table of the package, with lazy imports and did-you-mean errors.

A :class:`Registry` maps names to either objects or ``"package.module:attr"`` strings (a plain
``"package.module"`` names the module itself). Strings are imported on first :meth:`Registry.load`, so a
table can name things in higher layers without importing them (the core stays import-cheap and the layer
contract in ``pyproject.toml`` sees no upward import). An unknown name raises the registry's error type
with the closest valid name and the full list.

The package's own tables live here (models rebuilt from checkpoints, ``vidseq train/eval/tune`` tasks, the
streaming heads of ``process``/``monitor``, the dataclass each ``configs/*.yaml`` loads into); lower-layer
tables of objects (backbones, dataset importers, CLI commands) are :class:`Registry` instances in their own
modules.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from vidseq.errors import CheckpointError, ConfigError, TaskError, VidseqError

T = TypeVar("T")


def suggest(name: str, options: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``options``, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def import_target(target: str) -> Any:
    """Import ``"package.module:attr"`` (the attribute, dotted paths allowed) or ``"package.module"``."""
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Named entries (objects or lazy ``"module:attr"`` strings) of one kind.

    Args:
        kind: what an entry is, for messages ("backbone", "task", ...).
        entries: initial entries, in the order :meth:`names` keeps.
        error: exception type raised for an unknown name.
        plural: how to say the list in an error (default ``kind + "s"``).
    """

    def __init__(self, kind: str, entries: Mapping[str, T | str] | None = None, *,
                 error: type[VidseqError] = VidseqError, plural: str | None = None) -> None:
        self.kind = kind
        self.error = error
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, T | str] = dict(entries or {})

    # -- mapping protocol (raw entries; monkeypatch.setitem works on it) --------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T | str:
        return self._entries[name]

    def __setitem__(self, name: str, value: T | str) -> None:
        self._entries[name] = value

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def items(self) -> Iterable[tuple[str, T | str]]:
        return self._entries.items()

    def names(self) -> list[str]:
        """Entry names in registration order."""
        return list(self._entries)

    def register(self, name: str, value: T | str | None = None) -> Any:
        """Add ``name``; without ``value`` returns a decorator (``@REG.register("x")``).

        Raises:
            the registry's error: ``name`` is taken.
        """
        if name in self._entries:
            raise self.error(f"{self.kind} '{name}' is already registered")
        if value is not None:
            self._entries[name] = value
            return value

        def deco(obj: T) -> T:
            self._entries[name] = obj
            return obj

        return deco

    def unknown(self, name: str) -> VidseqError:
        """The error for an unknown ``name`` (did-you-mean + the valid names)."""
        valid = ", ".join(self._entries) or "none"
        return self.error(f"unknown {self.kind} '{name}'{suggest(name, self._entries)}; {self.plural}: {valid}")

    def check(self, name: str) -> str:
        """``name`` if registered, else the registry's error."""
        if name not in self._entries:
            raise self.unknown(name)
        return name

    def get(self, name: str, default: Any = None) -> T | str | Any:
        """The raw entry (dict-like; a lazy string stays a string), or ``default``."""
        return self._entries.get(name, default)

    def load(self, name: str) -> T:
        """The entry, importing a lazy ``"module:attr"`` string on first use.

        Raises:
            the registry's error: unknown name.
            ModuleNotFoundError/ImportError: a registered entry that fails to import (a bug, never hidden).
        """
        value = self._entries[self.check(name)]
        if isinstance(value, str):
            value = import_target(value)
            self._entries[name] = value
        return value  # type: ignore[return-value]


# -- the package's tables ---------------------------------------------------------------------------------

MODELS: Registry[Callable[[dict[str, Any]], Any]] = Registry("model", {
    "trajectory_lstm": "vidseq.models.trajectory:build_model",
    "anomaly_fusion": "vidseq.models.anomaly.model:build_model",
    "anomaly_frame_lstm": "vidseq.models.anomaly.model:build_frame_predictor",
    "caption_s2vt": "vidseq.models.caption.model:build_model",
}, error=CheckpointError, plural="known models")
"""Checkpoint ``model_name`` -> builder taking the checkpoint's ``model_config`` dict."""

TASKS: Registry[Any] = Registry("task", {
    "anomaly": "vidseq.tasks.anomaly.task",
    "trajectory": "vidseq.tasks.trajectory.task",
    "caption": "vidseq.tasks.caption.task",
}, error=TaskError)
"""``vidseq train/eval/tune TASK`` -> the task module (``train``, ``evaluate``, optionally ``tune``)."""

STREAM_HEADS: Registry[Any] = Registry("stream head", {
    "trajectory": "vidseq.tasks.trajectory.head:make_head",
    "anomaly": "vidseq.tasks.anomaly.head:make_head",
    "caption": "vidseq.tasks.caption.head:make_head",
}, error=ConfigError)
"""Head name -> factory ``(ProcessConfig, StreamContext) -> StreamHead | None`` used by ``process``/``monitor``."""

CONFIGS: Registry[type] = Registry("config", {
    "extract": "vidseq.features.extractor:ExtractConfig",
    "process": "vidseq.pipeline:ProcessConfig",
    "monitor": "vidseq.monitor:MonitorConfig",
    "synth": "vidseq.sequences.synth:SynthConfig",
    "trajectory": "vidseq.tasks.trajectory.task:TrajectoryTaskConfig",
    "caption": "vidseq.tasks.caption.task:CaptionTaskConfig",
    "anomaly": "vidseq.tasks.anomaly.config:AnomalyTaskConfig",
}, error=ConfigError)
"""``configs/<name>.yaml`` -> the dataclass it loads into (a test loads every file in ``configs/``)."""


def build_model(name: str, model_config: dict[str, Any]) -> Any:
    """Rebuild checkpoint model ``name`` from its ``model_config`` (see :data:`MODELS`)."""
    return MODELS.load(name)(model_config)


# -- tasks (with $VIDSEQ_EXTRA_TASKS for tests and plugins) ------------------------------------------------

EXTRA_TASKS_ENV = "VIDSEQ_EXTRA_TASKS"


def available_tasks() -> dict[str, str]:
    """:data:`TASKS` plus ``$VIDSEQ_EXTRA_TASKS="name=package.module[,name2=module2]"`` (no shadowing)."""
    tasks = {name: str(TASKS[name]) for name in TASKS}
    raw = os.environ.get(EXTRA_TASKS_ENV, "").strip()
    for entry in filter(None, (e.strip() for e in raw.split(","))):
        name, sep, module = (s.strip() for s in entry.partition("="))
        if not sep or not name or not module:
            raise TaskError(f"{EXTRA_TASKS_ENV}: entry '{entry}' must look like name=package.module")
        if name in TASKS:
            raise TaskError(f"{EXTRA_TASKS_ENV}: '{name}' is a built-in task and cannot be replaced")
        tasks[name] = module
    return tasks


def task_names() -> list[str]:
    """Sorted names of every available task."""
    return sorted(available_tasks())


def get_task_module(name: str) -> Any:
    """Import the module implementing task ``name``.

    Raises:
        TaskError: unknown name (did-you-mean + the valid names), or a known task whose module is not
            present in this installation. A missing dependency *inside* an existing module keeps its traceback.
    """
    tasks = Registry("task", available_tasks(), error=TaskError)
    module = str(tasks[tasks.check(name)])
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise TaskError(f"task '{name}' is not available: module {module} is not present") from None
        raise


def get_task_function(name: str, func: str) -> Callable[..., Any]:
    """``get_task_module(name).<func>``, checked to be callable (``train``, ``evaluate``, ``tune``)."""
    mod = get_task_module(name)
    fn = getattr(mod, func, None)
    if not callable(fn):
        raise TaskError(f"task '{name}' ({mod.__name__}) does not provide {func}()")
    return fn


def lazy_exports(module: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package ``__init__`` that re-exports ``name -> "module:attr"`` lazily,
    so ``from vidseq import open_source`` works while ``import vidseq`` stays cheap (PEP 562)."""
    table = Registry("name", dict(exports), error=VidseqError)

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {module!r} has no attribute {name!r}{suggest(name, table)}")
        return table.load(name)

    def __dir__() -> list[str]:
        return sorted(table.names())

    return __getattr__, __dir__
