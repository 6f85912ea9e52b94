"""The one training engine every head uses: ``train_one_epoch`` / ``evaluate`` / ``fit``.

A head describes its job as a :class:`TrainTask` (datasets, collate, model builder, extra metrics) and
calls :func:`fit` with a :class:`TrainConfig`. The engine owns everything else: AdamW, the LR schedule
(cosine or step, optional linear warmup, stepped per optimizer step), gradient clipping, early stopping
on a monitored metric, seeding, deterministic data order, checkpoints every epoch, resume, metrics.csv,
TensorBoard, progress bars and DDP (see :mod:`vidseq.train.distributed`).

Reproducibility contract:
  * ``seed`` seeds Python, NumPy and torch once at the start; the train order of epoch ``e`` comes from
    a generator seeded with ``(seed, e)``, so it does not depend on what ran before.
  * ``out_dir/last.pt`` is written atomically after every epoch with model, optimizer, scheduler,
    early-stopping state, history and the RNG states of every rank. ``resume=True`` restores all of it
    and continues with the next epoch, giving bitwise the same weights and metrics as an uninterrupted
    run on the same machine and software (tested on CPU). A run killed mid-epoch loses only that
    partial epoch: it is redone from its start.
  * Validation runs on the full validation set (rank 0 under DDP), so ``val_*`` metrics mean the same
    thing with one process or several.

Outputs of ``fit(task, cfg, out_dir)`` (rank 0 only)::

    out_dir/config.yaml   resolved config (``config_dict`` or ``{"train": cfg}``)
    out_dir/last.pt       checkpoint after the latest epoch (resume point)
    out_dir/best.pt       checkpoint of the best epoch by ``cfg.monitor``
    out_dir/metrics.csv   one row per epoch: epoch, lr, train_loss, val_loss, task metrics, time_s
    out_dir/tb/           TensorBoard event files (``tensorboard --logdir out_dir/tb``)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import random
import time
from collections.abc import Callable, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)
from tqdm.auto import tqdm

from vidseq.config import to_dict
from vidseq.errors import CheckpointError, ConfigError, TaskError, TrainingError
from vidseq.io import atomic_write_text
from vidseq.registry import suggest
from vidseq.train.checkpoint import load_checkpoint, save_checkpoint
from vidseq.train.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup_distributed,
    gather_objects,
    setup_distributed,
    unwrap_model,
    wrap_model,
)

logger = logging.getLogger(__name__)

LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
METRICS_NAME = "metrics.csv"
CONFIG_NAME = "config.yaml"
TB_DIR = "tb"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every head (embed it as a ``train:`` section of a task config).

    Attributes:
        epochs: maximum number of epochs.
        batch_size: samples per optimizer step (per process under DDP).
        lr: peak AdamW learning rate.
        weight_decay: AdamW decay, applied to weight matrices only (not biases/norm parameters).
        grad_clip: max global gradient L2 norm; 0 turns clipping off.
        scheduler: ``cosine`` (decay to ``min_lr_ratio * lr``), ``step`` (x ``gamma`` every
            ``step_size`` epochs) or ``none``; all stepped per optimizer step.
        warmup_epochs: linear warmup length, in epochs, before the schedule.
        patience: stop after this many epochs without improvement of ``monitor``; 0 turns it off.
        monitor: metric that picks best.pt and drives early stopping (``val_loss``, ``train_loss`` or a
            key returned by the task's ``evaluate``). Without a validation set ``val_*`` falls back
            to ``train_loss``.
        mode: ``min`` or ``max``: which direction of ``monitor`` is better.
        seed: seeds Python, NumPy, torch and the data order.
        device: ``auto`` (cuda > mps > cpu), ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
        num_workers: DataLoader worker processes.
        min_lr_ratio: cosine floor as a fraction of ``lr``.
        step_size: epochs between decays of the ``step`` schedule.
        gamma: decay factor of the ``step`` schedule.
        min_delta: smallest change of ``monitor`` that counts as an improvement.
        eval_batch_size: validation batch size; 0 means ``batch_size``.
        shuffle: shuffle the training set each epoch (seeded).
        tensorboard: write TensorBoard events to ``out_dir/tb``.
        find_unused_parameters: passed to DDP for models whose forward skips some parameters.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    scheduler: Literal["cosine", "step", "none"] = "cosine"
    warmup_epochs: int = 0
    patience: int = 5
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    min_lr_ratio: float = 0.0
    step_size: int = 10
    gamma: float = 0.1
    min_delta: float = 0.0
    eval_batch_size: int = 0
    shuffle: bool = True
    tensorboard: bool = True
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        checks = [
            ("epochs", self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("grad_clip", self.grad_clip >= 0, ">= 0 (0 = off)"),
            ("warmup_epochs", self.warmup_epochs >= 0, ">= 0"),
            ("patience", self.patience >= 0, ">= 0 (0 = off)"),
            ("num_workers", self.num_workers >= 0, ">= 0"),
            ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
            ("step_size", self.step_size >= 1, ">= 1"),
            ("gamma", self.gamma > 0, "> 0"),
            ("min_delta", self.min_delta >= 0, ">= 0"),
            ("eval_batch_size", self.eval_batch_size >= 0, ">= 0 (0 = batch_size)"),
            ("scheduler", self.scheduler in ("cosine", "step", "none"), "one of cosine, step, none"),
            ("mode", self.mode in ("min", "max"), "one of min, max"),
            ("monitor", bool(self.monitor), "a metric name"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ConfigError(f"train.{name} must be {want}, got {getattr(self, name)!r}")


@runtime_checkable
class TrainTask(Protocol):
    """What a head hands to :func:`fit`.

    ``build_model()`` returns a module with ``forward(batch) -> (output, loss)`` (scalar mean loss);
    ``model_config()`` is the JSON-able dict from which ``vidseq.registry.MODELS[model_name]`` rebuilds
    the same architecture; ``collate(items)`` batches dataset items (CPU tensors; the engine moves
    tensors nested in dicts/lists/tuples/dataclasses to the device); ``evaluate(model, loader)``
    returns extra validation metrics (the engine adds ``val_loss`` itself; batches come from
    ``loader`` on the CPU: move them with :func:`move_to_device`); ``metadata`` goes into every
    checkpoint. Optional: ``checkpoint_extra(model) -> dict`` stored as the checkpoint's ``extra``.
    """

    name: str
    model_name: str
    train_dataset: Dataset
    val_dataset: Dataset | None
    metadata: dict

    def model_config(self) -> dict: ...

    def build_model(self) -> nn.Module: ...

    def collate(self, items: list) -> Any: ...

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]: ...


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns (the same on every rank)."""

    best_path: Path
    last_path: Path
    best_metric: float | None
    best_epoch: int
    history: list[dict[str, float]]
    monitor: str = "val_loss"
    stopped_early: bool = False
    out_dir: Path | None = None

    @property
    def final_metrics(self) -> dict[str, float]:
        """The last epoch's row of ``history``."""
        return dict(self.history[-1]) if self.history else {}

    @property
    def best_metrics(self) -> dict[str, float]:
        """The row of ``history`` for ``best_epoch``."""
        return next((dict(r) for r in self.history if r.get("epoch") == self.best_epoch), {})


# --------------------------------------------------------------------------------------------- devices, seeds


def resolve_device(pref: str = "auto", ctx: DistContext | None = None) -> torch.device:
    """``auto`` -> cuda > mps > cpu (cuda:LOCAL_RANK under DDP; never mps under DDP).

    Raises:
        ConfigError: an explicitly requested device is not available.
    """
    ctx = ctx or DistContext()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", ctx.local_rank)
        mps = getattr(torch.backends, "mps", None)
        if not ctx.enabled and mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(pref)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device '{pref}' (use auto, cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device '{pref}' requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", ctx.local_rank)
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"train.device '{pref}' requested but MPS is not available")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """This process's RNG states as weights_only-loadable values (tensors, ints, floats, lists)."""
    version, py_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(py_state), "gauss_next": gauss},
        "numpy": {"bit_generator": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss_next"]))
    npst = state["numpy"]
    np.random.set_state((npst["bit_generator"], npst["keys"].numpy().astype(np.uint32), int(npst["pos"]),
                         int(npst["has_gauss"]), float(npst["cached_gaussian"])))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def _seed_worker(worker_id: int) -> None:
    # DataLoader seeds torch per worker from its generator; derive NumPy/Python seeds from that.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# --------------------------------------------------------------------------------------------- data


def make_loader(dataset: Dataset, collate: Callable[[list], Any], cfg: TrainConfig, *, epoch: int, train: bool,
                ctx: DistContext | None = None, pin_memory: bool = False) -> DataLoader:
    """A DataLoader whose order depends only on ``(cfg.seed, epoch)`` (and the rank under DDP).

    Train loaders shuffle with a per-epoch seeded generator (``DistributedSampler(seed=cfg.seed)``
    with ``set_epoch(epoch)`` under DDP); validation loaders are sequential over the full set.
    """
    ctx = ctx or DistContext()
    gen = torch.Generator()
    gen.manual_seed(cfg.seed * 1_000_003 + epoch)
    sampler: Any
    if train and ctx.enabled:
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=cfg.shuffle,
                                     seed=cfg.seed, drop_last=False)
        sampler.set_epoch(epoch)
    elif train and cfg.shuffle:
        sampler = RandomSampler(dataset, generator=gen)
    else:
        sampler = SequentialSampler(dataset)
    batch_size = cfg.batch_size if train else (cfg.eval_batch_size or cfg.batch_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                      num_workers=cfg.num_workers, generator=gen, worker_init_fn=_seed_worker,
                      pin_memory=pin_memory, drop_last=False)


def move_to_device(obj: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """Move tensors nested in dicts, lists, tuples, namedtuples and dataclasses to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return type(obj)((k, move_to_device(v, device, non_blocking)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(move_to_device(v, device, non_blocking) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to_device(v, device, non_blocking) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: move_to_device(getattr(obj, f.name), device, non_blocking)
                   for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, nn.utils.rnn.PackedSequence):
        return obj.to(device)
    return obj


def _batch_sizes(loader: DataLoader) -> Callable[[int], int]:
    """Number of samples in batch ``i`` (known from the sampler), for sample-weighted loss means."""
    bs = loader.batch_size
    sampler = loader.sampler
    if bs is None or not isinstance(sampler, Sized):
        return lambda i: 1
    n = len(sampler)
    return lambda i: max(0, min(bs, n - i * bs))


# --------------------------------------------------------------------------------------------- optimisation


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2) and none on biases/norm scales."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise TrainingError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """LR multiplier at optimizer step ``step`` (0-based): linear warmup, then the schedule."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if cfg.scheduler == "cosine":
        total = max(1, cfg.epochs * steps_per_epoch - warmup)
        progress = min(1.0, (step - warmup) / total)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.scheduler == "step":
        return cfg.gamma ** ((step // steps_per_epoch) // cfg.step_size)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over :func:`lr_factor`, to be stepped after every optimizer step."""
    spe = max(1, steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, spe))


# --------------------------------------------------------------------------------------------- loops


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    device: torch.device | str, *, scheduler: Any = None, grad_clip: float = 0.0, epoch: int = 1,
                    ctx: DistContext | None = None, progress: bool = True) -> dict[str, float]:
    """One pass over ``loader``: forward ``model(batch) -> (output, loss)``, backward, clip, step.

    Returns:
        ``{"train_loss": sample-weighted mean loss}`` (all-reduced over ranks under DDP).

    Raises:
        TrainingError: the model returned no loss, or the loss is NaN/inf.
    """
    ctx = ctx or DistContext()
    model.train()
    size_of = _batch_sizes(loader)
    total, count = 0.0, 0.0
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
               disable=True if (not progress or not ctx.is_main) else None)
    for i, batch in enumerate(bar):
        batch = move_to_device(batch, device)
        _, loss = model(batch)
        if not isinstance(loss, torch.Tensor):
            raise TrainingError(f"model returned no loss tensor in training (epoch {epoch}, step {i + 1})")
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(f"non-finite training loss ({value}) at epoch {epoch}, step {i + 1}; "
                                f"lower train.lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        n = size_of(i)
        total += value * n
        count += n
        bar.set_postfix(loss=f"{value:.4g}")
    bar.close()
    total, count = all_reduce_sum([total, count], ctx)
    return {"train_loss": total / count if count else float("nan")}


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str, *, task: TrainTask | None = None,
             progress: bool = False) -> dict[str, float]:
    """Validation under ``torch.inference_mode()``: ``val_loss`` plus ``task.evaluate(model, loader)``.

    ``model`` may be DDP-wrapped; the plain module is used (call it on rank 0 only under DDP).
    """
    model = unwrap_model(model)
    was_training = model.training
    model.eval()
    size_of = _batch_sizes(loader)
    total, count = 0.0, 0.0
    try:
        with torch.inference_mode():
            for i, batch in enumerate(tqdm(loader, desc="val", leave=False, disable=True if not progress else None)):
                _, loss = model(move_to_device(batch, device))
                if not isinstance(loss, torch.Tensor):
                    raise TrainingError("model returned no loss tensor in validation")
                n = size_of(i)
                total += float(loss) * n
                count += n
            metrics = {"val_loss": total / count if count else float("nan")}
            if task is not None:
                for key, value in (task.evaluate(model, loader) or {}).items():
                    if key == "val_loss":
                        continue
                    try:
                        metrics[str(key)] = float(value)
                    except (TypeError, ValueError):
                        raise TrainingError(f"task metric '{key}' is not a number: {value!r}") from None
    finally:
        model.train(was_training)
    return metrics


# --------------------------------------------------------------------------------------------- fit helpers


def _check_task(task: Any) -> None:
    needed = ["name", "model_name", "train_dataset", "val_dataset", "metadata",
              "model_config", "build_model", "collate", "evaluate"]
    missing = [a for a in needed if not hasattr(task, a)]
    if missing:
        raise TaskError(f"{type(task).__name__} is not a TrainTask: missing {', '.join(missing)}")


def _is_better(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if math.isnan(value):
        return best is None
    if best is None or math.isnan(best):
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _write_metrics_csv(path: Path, history: list[dict[str, float]], times: list[float]) -> None:
    keys: list[str] = ["epoch"]
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*keys, "time_s"], restval="", lineterminator="\n")
    writer.writeheader()
    for i, row in enumerate(history):
        writer.writerow({**row, "time_s": f"{times[i]:.3f}" if i < len(times) else ""})
    atomic_write_text(path, buf.getvalue())


def _open_tensorboard(log_dir: Path, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # tensorboard is a declared dependency; degrade if it is broken
        logger.warning("TensorBoard logging disabled: %s", exc)
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def _dataset_len(ds: Any) -> int | None:
    try:
        return len(ds)
    except TypeError:
        return None


@dataclass
class _RunState:
    """Everything besides model/optimizer/scheduler that a resumed run must get back."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False


def fit(task: TrainTask, cfg: TrainConfig, out_dir: Path | str, *, resume: bool = False,
        config_dict: dict | Any = None, progress: bool = True) -> FitResult:
    """Train ``task`` for ``cfg.epochs`` (or until early stopping), checkpointing every epoch.

    Args:
        task: the head's :class:`TrainTask`.
        cfg: optimisation settings.
        out_dir: run directory (created); see the module docstring for what goes in it.
        resume: continue from ``out_dir/last.pt`` (a fresh start, with a warning, if it does not exist).
        config_dict: the resolved task config (a dict or the config dataclass itself) to save as
            config.yaml and in checkpoints (default ``{"train": to_dict(cfg)}``).
        progress: show tqdm bars (only on a terminal, only on rank 0).

    Returns:
        A :class:`FitResult`; identical on every rank under DDP.

    Raises:
        CheckpointError: ``out_dir`` already holds a run and ``resume`` is False, or last.pt is bad.
        TrainingError: empty training set, non-finite loss.
        ConfigError: ``cfg.monitor`` is not among the metrics.
    """
    _check_task(task)
    ctx = setup_distributed(cfg.device)
    cudnn_flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        return _fit(task, cfg, Path(out_dir), ctx, resume=resume, config_dict=config_dict, progress=progress)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn_flags
        cleanup_distributed(ctx)


def _fit(task: TrainTask, cfg: TrainConfig, out_dir: Path, ctx: DistContext, *, resume: bool,
         config_dict: dict | Any, progress: bool) -> FitResult:
    main = ctx.is_main
    log = logger.info if main else logger.debug
    from vidseq.registry import MODELS

    if task.model_name not in MODELS and main:
        logger.warning("model '%s' is not in vidseq.registry.MODELS: load_model() cannot rebuild "
                       "its checkpoints", task.model_name)
    device = resolve_device(cfg.device, ctx)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    for ds in (task.train_dataset, task.val_dataset):
        if isinstance(ds, IterableDataset):
            raise TaskError(f"task '{task.name}': datasets must be map-style (len + indexing), "
                            f"got the IterableDataset {type(ds).__name__}")
    n_train = _dataset_len(task.train_dataset)
    if n_train == 0:
        raise TrainingError(f"task '{task.name}': the training set is empty")
    val_dataset = task.val_dataset if _dataset_len(task.val_dataset) != 0 else None
    monitor, mode = cfg.monitor, cfg.mode
    if val_dataset is None and monitor.startswith("val_"):
        if main:
            logger.warning("task '%s' has no validation set: monitoring train_loss instead of %s",
                           task.name, monitor)
        monitor, mode = "train_loss", "min"

    last_path, best_path = out_dir / LAST_NAME, out_dir / BEST_NAME
    ckpt: dict[str, Any] | None = None
    if last_path.exists():
        if not resume:
            raise CheckpointError(f"{out_dir} already holds a training run ({LAST_NAME}); pass --resume to "
                                  f"continue it or choose another --out")
        ckpt = load_checkpoint(last_path)
        if ckpt.get("model_name") != task.model_name:
            raise CheckpointError(f"{last_path}: holds model '{ckpt.get('model_name')}', "
                                  f"task '{task.name}' trains '{task.model_name}'")
    elif resume and main:
        logger.warning("--resume: no %s in %s, starting a new run", LAST_NAME, out_dir)
    barrier(ctx)  # every rank has looked at out_dir before rank 0 can write into it

    train_cfg_dict = to_dict(cfg)
    config_dict = to_dict(config_dict) if config_dict is not None else {"train": train_cfg_dict}
    seed_everything(cfg.seed + ctx.rank)
    model = task.build_model().to(device)
    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = len(make_loader(task.train_dataset, task.collate, cfg, epoch=1, train=True, ctx=ctx))
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    state = _RunState()
    if ckpt is not None:
        state = _restore(ckpt, model, optimizer, scheduler, ctx, last_path, train_cfg_dict, main)
        log("resuming %s from epoch %d/%d", out_dir, state.epoch, cfg.epochs)
    ddp_model = wrap_model(model, ctx, device, find_unused_parameters=cfg.find_unused_parameters)

    writer = None
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / CONFIG_NAME, yaml.safe_dump(config_dict, sort_keys=False))
        if cfg.tensorboard:
            writer = _open_tensorboard(out_dir / TB_DIR, purge_step=state.epoch + 1 if ckpt is not None else None)
        n_params = sum(p.numel() for p in model.parameters())
        log("training %s (%s, %d parameters) on %s x%d: %s train / %s val samples, %d steps/epoch",
            task.name, task.model_name, n_params, device, ctx.world_size, n_train,
            _dataset_len(val_dataset) if val_dataset is not None else 0, steps_per_epoch)
    try:
        done = state.stopped_early or state.epoch >= cfg.epochs
        if done and ckpt is not None:
            log("%s: run already finished at epoch %d", out_dir, state.epoch)
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            if done:
                break
            t0 = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            loader = make_loader(task.train_dataset, task.collate, cfg, epoch=epoch, train=True, ctx=ctx,
                                 pin_memory=device.type == "cuda")
            row: dict[str, float] = {"epoch": epoch, "lr": lr}
            row.update(train_one_epoch(ddp_model, loader, optimizer, device, scheduler=scheduler,
                                       grad_clip=cfg.grad_clip, epoch=epoch, ctx=ctx, progress=progress))
            val_metrics: dict[str, float] | None = None
            if main and val_dataset is not None:
                val_loader = make_loader(val_dataset, task.collate, cfg, epoch=epoch, train=False, ctx=ctx)
                val_metrics = evaluate(model, val_loader, device, task=task, progress=progress)
            row.update(broadcast_object(val_metrics, ctx) or {})
            if monitor not in row:
                raise ConfigError(f"train.monitor '{monitor}' is not a reported metric{suggest(monitor, row)}; "
                                  f"metrics: {', '.join(k for k in row if k != 'epoch')}")
            value = float(row[monitor])
            improved = _is_better(value, state.best_metric, mode, cfg.min_delta)
            if improved:
                state.best_metric, state.best_epoch, state.bad_epochs = value, epoch, 0
            else:
                state.bad_epochs += 1
            state.epoch = epoch
            state.history.append(row)
            state.stopped_early = cfg.patience > 0 and state.bad_epochs >= cfg.patience
            done = state.stopped_early
            rng = gather_objects(get_rng_state(), ctx)  # collective: every rank takes part
            state.times.append(time.perf_counter() - t0)
            if main:
                ck = _checkpoint_dict(task, model, optimizer, scheduler, state, cfg, train_cfg_dict, config_dict,
                                      rng, ctx, monitor, mode)
                if improved:  # best.pt before last.pt: a kill in between leaves a consistent pair
                    save_checkpoint(best_path, ck)
                save_checkpoint(last_path, ck)
                _write_metrics_csv(out_dir / METRICS_NAME, state.history, state.times)
                if writer is not None:
                    for key, val in row.items():
                        if key != "epoch":
                            writer.add_scalar(key, val, epoch)
                    writer.add_scalar("time_s", state.times[-1], epoch)
                    writer.flush()
                log("epoch %d/%d %s%s", epoch, cfg.epochs,
                    " ".join(f"{k}={v:.5g}" for k, v in row.items() if k != "epoch"), " *" if improved else "")
            if done and main:
                log("early stopping at epoch %d: %s has not improved for %d epochs (best %.5g at epoch %d)",
                    epoch, monitor, cfg.patience, state.best_metric, state.best_epoch)
        barrier(ctx)  # rank 0's files are complete before any rank goes on to read them
    finally:
        if writer is not None:
            writer.close()
    return FitResult(best_path=best_path, last_path=last_path, best_metric=state.best_metric,
                     best_epoch=state.best_epoch, history=[dict(r) for r in state.history], monitor=monitor,
                     stopped_early=state.stopped_early, out_dir=out_dir)


def _checkpoint_dict(task: TrainTask, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                     state: _RunState, cfg: TrainConfig, train_cfg_dict: dict, config_dict: dict,
                     rng: list[dict[str, Any]], ctx: DistContext, monitor: str, mode: str) -> dict[str, Any]:
    extra_fn = getattr(task, "checkpoint_extra", None)
    return {
        "model_name": task.model_name,
        "model_config": task.model_config(),
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict(),
        "epoch": state.epoch,
        "config": config_dict,
        "metadata": dict(task.metadata or {}),
        "extra": dict(extra_fn(model) or {}) if callable(extra_fn) else {},
        "task": task.name,
        "train_config": train_cfg_dict,
        "history": state.history,
        "epoch_times_s": state.times,
        "best_metric": state.best_metric,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        "stopped_early": state.stopped_early,
        "monitor": monitor,
        "mode": mode,
        "rng": rng,
        "world_size": ctx.world_size,
        "seed": cfg.seed,
    }


def _restore(ckpt: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             ctx: DistContext, path: Path, train_cfg_dict: dict, main: bool) -> _RunState:
    for key in ("optimizer_state", "scheduler_state", "rng", "history"):
        if ckpt.get(key) is None:
            raise CheckpointError(f"{path}: cannot resume, the checkpoint has no {key}")
    try:
        model.load_state_dict(ckpt["model_state"])
        optimizer.load_state_dict(ckpt["optimizer_state"])
        scheduler.load_state_dict(ckpt["scheduler_state"])
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot resume, state does not fit this model/optimizer: {first}") from None
    old = ckpt.get("train_config") or {}
    changed = sorted(k for k in set(old) | set(train_cfg_dict) if old.get(k) != train_cfg_dict.get(k))
    if changed and main:
        logger.warning("resuming with changed train settings: %s",
                       ", ".join(f"{k}: {old.get(k)!r} -> {train_cfg_dict.get(k)!r}" for k in changed))
    rng = ckpt["rng"]
    if len(rng) != ctx.world_size and main:
        logger.warning("%s was written by %d process(es), resuming with %d: data order and RNG streams differ "
                       "from an uninterrupted run", path, len(rng), ctx.world_size)
    set_rng_state(rng[ctx.rank] if ctx.rank < len(rng) else rng[0])
    best = ckpt.get("best_metric")
    return _RunState(epoch=int(ckpt["epoch"]), history=[dict(r) for r in ckpt["history"]],
                     times=[float(t) for t in ckpt.get("epoch_times_s") or []],
                     best_metric=None if best is None else float(best), best_epoch=int(ckpt.get("best_epoch", 0)),
                     bad_epochs=int(ckpt.get("bad_epochs", 0)), stopped_early=bool(ckpt.get("stopped_early")))
