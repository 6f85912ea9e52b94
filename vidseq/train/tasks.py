"""Task dispatch for ``vidseq train TASK`` / ``vidseq eval TASK``.

A task module provides::

    train(data: Path, out: Path, *, config: Path | None, overrides: list[str], resume: bool) -> dict
    evaluate(model: Path, data: Path, *, overrides: list[str]) -> dict

Extra tasks (tests, plugins) are added without editing this file through the environment variable
``VIDSEQ_EXTRA_TASKS="name=package.module[,name2=module2]"``; they may not shadow a built-in name.
"""

from __future__ import annotations

import difflib
import importlib
import os
from types import ModuleType

from vidseq.errors import TaskError

TASKS: dict[str, str] = {
    "anomaly": "vidseq.heads.anomaly.task",
    "trajectory": "vidseq.heads.trajectory.task",
    "caption": "vidseq.heads.caption.task",
}

EXTRA_TASKS_ENV = "VIDSEQ_EXTRA_TASKS"


def available_tasks() -> dict[str, str]:
    """``TASKS`` plus the entries of ``$VIDSEQ_EXTRA_TASKS`` (name -> module path)."""
    tasks = dict(TASKS)
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


def get_task_module(name: str) -> ModuleType:
    """Import the module implementing task ``name``.

    Raises:
        TaskError: unknown name (with a did-you-mean suggestion and the valid names), or a known task
            whose module is not present in this installation.
    """
    tasks = available_tasks()
    if name not in tasks:
        close = difflib.get_close_matches(name, list(tasks), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise TaskError(f"unknown task '{name}'{hint}; tasks: {', '.join(sorted(tasks))}")
    module = tasks[name]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # Only "the task module (or a package above it) does not exist" is a user-facing error;
        # a missing dependency inside an existing module is a bug and keeps its traceback.
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise TaskError(f"task '{name}' is not available: module {module} is not present") from None
        raise


def get_task_function(name: str, func: str) -> object:
    """``get_task_module(name).<func>``, checked to be callable (``train`` or ``evaluate``).

    Raises:
        TaskError: the module lacks that function.
    """
    mod = get_task_module(name)
    fn = getattr(mod, func, None)
    if not callable(fn):
        raise TaskError(f"task '{name}' ({mod.__name__}) does not provide {func}()")
    return fn
