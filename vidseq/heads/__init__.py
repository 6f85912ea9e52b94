"""Deprecated alias of the 0.1 layout, kept for one release (removed in 0.3).

``vidseq.heads`` was split into :mod:`vidseq.models` (networks and fitted scorers) and :mod:`vidseq.tasks`
(data prep, training, evaluation, tuning and the streaming heads). Importing an old path
(``vidseq.heads.anomaly.model``, ``vidseq.heads.registry``, ...) returns the module at its new home with a
``DeprecationWarning``; nothing else lives here.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED: dict[str, str] = {
    "vidseq.heads.encoder": "vidseq.models.encoder",
    "vidseq.heads.registry": "vidseq.registry",
    "vidseq.heads.anomaly": "vidseq.models.anomaly",
    "vidseq.heads.anomaly.model": "vidseq.models.anomaly.model",
    "vidseq.heads.anomaly.calibrate": "vidseq.models.anomaly.calibrate",
    "vidseq.heads.anomaly.fit": "vidseq.models.anomaly.fit",
    "vidseq.heads.anomaly.features": "vidseq.tasks.anomaly.features",
    "vidseq.heads.anomaly.scoring": "vidseq.tasks.anomaly.scoring",
    "vidseq.heads.anomaly.task": "vidseq.tasks.anomaly.task",
    "vidseq.heads.anomaly.pseudo": "vidseq.tasks.anomaly.pseudo",
    "vidseq.heads.anomaly.select": "vidseq.tasks.anomaly.tune",
    "vidseq.heads.anomaly.pipeline_head": "vidseq.tasks.anomaly.head",
    "vidseq.heads.trajectory": "vidseq.tasks.trajectory",
    "vidseq.heads.trajectory.model": "vidseq.models.trajectory",
    "vidseq.heads.trajectory.forecaster": "vidseq.tasks.trajectory.forecaster",
    "vidseq.heads.trajectory.task": "vidseq.tasks.trajectory.task",
    "vidseq.heads.caption": "vidseq.models.caption",
    "vidseq.heads.caption.vocab": "vidseq.models.caption.vocab",
    "vidseq.heads.caption.model": "vidseq.models.caption.model",
    "vidseq.heads.caption.decode": "vidseq.models.caption.decode",
    "vidseq.heads.caption.metrics": "vidseq.tasks.caption.metrics",
    "vidseq.heads.caption.objects": "vidseq.tasks.caption.objects",
    "vidseq.heads.caption.inputs": "vidseq.tasks.caption.inputs",
    "vidseq.heads.caption.task": "vidseq.tasks.caption.task",
    "vidseq.heads.caption.captioner": "vidseq.tasks.caption.captioner",
    "vidseq.heads.caption.pipeline_head": "vidseq.tasks.caption.head",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old ``vidseq.heads.*`` name to the module object at its new path."""

    def __init__(self) -> None:
        self._specs: dict[str, tuple[object, object]] = {}

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=fullname.count(".") == 2)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {MOVED[spec.name]}; the old path goes in vidseq 0.3",
                      DeprecationWarning, stacklevel=3)
        module = importlib.import_module(MOVED[spec.name])
        self._specs[module.__name__] = (module.__spec__, getattr(module, "__loader__", None))
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the alias spec on the real module: give it its own back
        module.__spec__, module.__loader__ = self._specs.pop(module.__name__)


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())
