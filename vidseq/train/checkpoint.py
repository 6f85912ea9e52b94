"""Checkpoints: one dict format for every head, saved atomically, loaded with ``weights_only=True``.

A checkpoint is a plain dict that ``torch.load(path, weights_only=True)`` can read (tensors, dicts,
lists, tuples, str, int, float, bool, None only) and that is enough to rebuild the model on its own::

    format_version   int, FORMAT_VERSION
    model_name       key of vidseq.registry.MODELS
    model_config     JSON-able dict handed to the registry builder
    model_state      model.state_dict()
    optimizer_state  optimizer.state_dict() or None
    scheduler_state  LR scheduler state_dict() or None
    epoch            number of completed epochs (0 for non-gradient heads)
    config           the resolved task config (dict)
    metadata         feature / backbone / data metadata (dict)
    extra            head-specific JSON-able values, e.g. thresholds (dict)
    ...              the engine adds: train_config, rng, history, best_metric, best_epoch, monitor,
                     bad_epochs, stopped_early, world_size, vidseq_version, torch_version, created_utc

:func:`save_checkpoint` converts NumPy arrays/scalars, ``Path`` and dataclasses to loadable types and
refuses anything else, so a file it wrote always loads with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidseq import __version__
from vidseq.errors import CheckpointError
from vidseq.io import atomic_open

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model_name", "model_config", "model_state")

PathLike = str | os.PathLike[str]


def to_weights_only(obj: Any, where: str = "checkpoint") -> Any:
    """Convert ``obj`` to types ``torch.load(weights_only=True)`` accepts, or raise.

    NumPy arrays become tensors, NumPy scalars Python numbers, ``Path`` a string, dataclasses dicts.

    Raises:
        CheckpointError: a value of another type, naming where it sits (e.g. ``checkpoint.extra.fn``).
    """
    if obj is None or type(obj) in (bool, int, float, str) or isinstance(obj, (torch.Tensor, torch.dtype)):
        return obj
    if isinstance(obj, str):  # str subclasses (torch.__version__, StrEnum) are not weights_only-loadable
        return str.__str__(obj)
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):  # IntEnum and friends
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, torch.device):
        return str(obj)
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise CheckpointError(f"{where}: object arrays cannot be stored in a checkpoint")
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_weights_only(getattr(obj, f.name), f"{where}.{f.name}") for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise CheckpointError(f"{where}: key {k!r} must be a str or int")
            out[k] = to_weights_only(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_weights_only(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    raise CheckpointError(f"{where}: cannot store a {type(obj).__name__} in a checkpoint")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def save_checkpoint(path: PathLike | Mapping[str, Any], checkpoint: Mapping[str, Any] | PathLike | None = None,
                    **fields: Any) -> Path:
    """Write a checkpoint atomically (temp file + fsync + rename) and return its path.

    Either pass a full dict (e.g. one from :func:`load_checkpoint` with ``extra`` updated), or build one
    from keyword fields; both can be combined (fields override dict entries). The argument order
    ``save_checkpoint(ckpt, path)`` is accepted too.

    Convenience fields: ``model`` (an ``nn.Module``, DDP-wrapped or not: its ``state_dict`` becomes
    ``model_state``), ``optimizer`` and ``scheduler`` (their ``state_dict`` becomes
    ``optimizer_state``/``scheduler_state``). Missing optional keys get defaults (``epoch=0``,
    empty ``config``/``metadata``/``extra``, ``None`` states) and ``created_utc``/versions are stamped.

    Example::

        save_checkpoint(out / "best.pt", model=model, model_name="anomaly_lstm",
                        model_config=cfg_dict, config=task_cfg, metadata=meta, extra={"threshold": 0.7})

    Raises:
        CheckpointError: a required key is missing or a value cannot be stored weights_only-loadable.
    """
    if isinstance(path, Mapping) and isinstance(checkpoint, (str, os.PathLike)):
        path, checkpoint = checkpoint, path
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"save_checkpoint: path must be a str or Path, got {type(path).__name__}")
    ckpt: dict[str, Any] = dict(checkpoint or {})  # type: ignore[arg-type]
    model = fields.pop("model", None)
    optimizer = fields.pop("optimizer", None)
    scheduler = fields.pop("scheduler", None)
    ckpt.update(fields)
    if model is not None:
        ckpt["model_state"] = _unwrap(model).state_dict()
    if optimizer is not None:
        ckpt["optimizer_state"] = optimizer.state_dict()
    if scheduler is not None:
        ckpt["scheduler_state"] = scheduler.state_dict()
    ckpt.setdefault("format_version", FORMAT_VERSION)
    for key, default in (("optimizer_state", None), ("scheduler_state", None), ("epoch", 0)):
        ckpt.setdefault(key, default)
    for key in ("config", "metadata", "extra"):
        if ckpt.get(key) is None:
            ckpt[key] = {}
    ckpt.setdefault("vidseq_version", __version__)
    ckpt.setdefault("torch_version", torch.__version__)
    ckpt["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"save_checkpoint {path}: missing required keys: {', '.join(missing)}")
    if not isinstance(ckpt["model_name"], str) or not isinstance(ckpt["model_config"], Mapping):
        raise CheckpointError(f"save_checkpoint {path}: model_name must be a str and model_config a dict")
    obj = to_weights_only(ckpt)
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def load_checkpoint(path: PathLike, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint with ``torch.load(..., weights_only=True)``.

    Raises:
        CheckpointError: missing file, unreadable/corrupt/truncated file, a file that holds arbitrary
            Python objects, not a dict, missing required keys, or a newer ``format_version``.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if p.is_dir():
        raise CheckpointError(f"checkpoint path is a directory, not a file: {p}")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError/ValueError... for bad files
        name = type(exc).__name__
        if "Unsupported global" in str(exc):  # a pickled class/function, the thing weights_only exists to stop
            raise CheckpointError(
                f"{p}: refused by torch.load(weights_only=True): it stores Python objects, not a vidseq checkpoint"
            ) from None
        detail = _first_line(exc, 80) if name not in ("UnpicklingError", "EOFError") else name
        raise CheckpointError(f"{p}: not a readable torch checkpoint (corrupt, truncated or another file type): "
                              f"{detail}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{p}: expected a checkpoint dict, found a {type(ckpt).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{p}: not a vidseq checkpoint (missing keys: {', '.join(missing)})")
    version = ckpt["format_version"]
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{p}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{p}: checkpoint format_version {version} is newer than this vidseq supports "
                              f"({FORMAT_VERSION}); upgrade vidseq")
    for key in ("config", "metadata", "extra"):
        if ckpt.get(key) is None:
            ckpt[key] = {}
    return ckpt


def load_model(path: PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from its checkpoint alone via ``vidseq.registry.MODELS``.

    Returns:
        ``(model, ckpt)``: the model in eval mode on ``map_location`` with the stored weights, and
        the checkpoint dict (``config``, ``metadata``, ``extra``... for the caller).

    Raises:
        CheckpointError: bad file (see :func:`load_checkpoint`), unknown ``model_name``, or weights that
            do not fit the rebuilt model.
    """
    from vidseq.registry import build_model

    ckpt = load_checkpoint(path, map_location=map_location)
    model = build_model(ckpt["model_name"], dict(ckpt["model_config"]))
    try:
        model.load_state_dict(ckpt["model_state"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit model '{ckpt['model_name']}': {_first_line(exc, 240)}"
                              ) from None
    model.to(map_location)
    model.eval()
    return model, ckpt
