"""``vidseq train trajectory`` / ``vidseq eval trajectory``: the forecaster as a training-engine task.

``DATA`` is one of:

* an ETH/UCY folder in the Social-GAN layout (``<scene>/{train,val,test}/*.txt``): ``data.scene`` picks the
  held-out scene whose train/val folders are used (``all``: the train/val parts of all five scenes);
* one scene folder of that layout (``eth_ucy/zara1``);
* a vidseq dataset folder (``dataset.yaml``) whose clips have MOT-style ``tracks`` (the ``eth-ucy``
  importer's output, or tracks extracted from any video: future positions are free labels).

Example::

    vidseq train trajectory --data ../shared/data/eth_ucy --out runs/traj --set data.scene=zara1
    vidseq eval trajectory --model runs/traj/best.pt --data ../shared/data/eth_ucy --set data.scene=zara1
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from vidseq.config import (
    default_config_path,
    from_dict,
    load_config,
    to_dict,
    with_overrides,
)
from vidseq.errors import CheckpointError, ConfigError, DatasetError
from vidseq.io import atomic_write_json
from vidseq.models.trajectory import (
    MODEL_NAME,
    TrajectoryConfig,
    TrajectoryModel,
    constant_velocity,
    displacement_errors,
)
from vidseq.sequences.trajectories import (
    ETH_UCY_SCENES,
    ETH_UCY_SPLITS,
    AugmentConfig,
    TrajectoryBatch,
    TrajectoryDataset,
    TrajectoryWindows,
    collate_trajectories,
    load_eth_ucy,
    load_manifest_tracks,
)
from vidseq.train.engine import TrainConfig, fit, move_to_device

logger = logging.getLogger(__name__)

TASK_NAME = "trajectory"


@dataclass(frozen=True)
class TrajectoryDataConfig:
    """Where training/evaluation windows come from.

    Attributes:
        scene: ETH/UCY held-out scene (``eth``, ``hotel``, ``univ``, ``zara1``, ``zara2``) or ``all``.
        eval_split: split used by ``vidseq eval trajectory``.
        min_agents: keep windows with at least this many fully observed agents (1 = benchmark protocol).
        step_s: forecaster step in seconds (video tracks are resampled to it from the clip's fps).
        person_height_m: metres per box height, for pixel tracks.
        min_epoch_windows: repeat a smaller training set within each epoch up to at least this many
            windows (0 = off), so every split gets a similar number of optimizer steps.
    """

    scene: str = "all"
    eval_split: Literal["train", "val", "test"] = "test"
    min_agents: int = 1
    step_s: float = 0.4
    person_height_m: float = 1.7
    min_epoch_windows: int = 0

    def __post_init__(self) -> None:
        if self.scene not in (*ETH_UCY_SCENES, "all"):
            raise ValueError(f"data.scene must be one of {', '.join(ETH_UCY_SCENES)}, all; got '{self.scene}'")
        if self.min_agents < 1 or self.step_s <= 0 or self.person_height_m <= 0 or self.min_epoch_windows < 0:
            raise ValueError("data.min_agents must be >= 1, data.step_s and data.person_height_m > 0, "
                             "data.min_epoch_windows >= 0")


def _default_train() -> TrainConfig:
    return TrainConfig(epochs=20, batch_size=256, lr=2e-3, weight_decay=0.0, grad_clip=1.0, scheduler="cosine",
                       warmup_epochs=1, patience=0, monitor="val_ade", mode="min", device="cpu")


@dataclass(frozen=True)
class TrajectoryTaskConfig:
    """Everything ``vidseq train trajectory`` needs (``configs/trajectory.yaml``).

    Attributes:
        model: architecture and loss weights.
        augment: training-batch augmentation.
        data: data selection.
        train: optimisation settings of the shared engine.
        threads: torch CPU threads (0 = leave torch's default).
    """

    model: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: TrajectoryDataConfig = field(default_factory=TrajectoryDataConfig)
    train: TrainConfig = field(default_factory=_default_train)
    threads: int = 0


def load_task_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrajectoryTaskConfig:
    """``configs/trajectory.yaml`` (or ``path``) plus ``key=value`` overrides."""
    return load_config(TrajectoryTaskConfig, path if path is not None else default_config_path(TASK_NAME), overrides)


# --------------------------------------------------------------------------------------------- data


def _is_scene_dir(path: Path) -> bool:
    return any((path / s).is_dir() and any((path / s).glob("*.txt")) for s in ETH_UCY_SPLITS)


def data_kind(data: Path) -> str:
    """``manifest``, ``eth_ucy`` (root with scene folders) or ``eth_ucy_scene`` (one scene folder)."""
    data = Path(data)
    if (data / "dataset.yaml").is_file():
        return "manifest"
    if not data.is_dir():
        raise DatasetError(f"trajectory data not found: {data}")
    if any((data / s).is_dir() and _is_scene_dir(data / s) for s in ETH_UCY_SCENES):
        return "eth_ucy"
    if _is_scene_dir(data):
        return "eth_ucy_scene"
    raise DatasetError(f"{data}: neither a dataset folder (dataset.yaml) nor ETH/UCY "
                       f"<scene>/{{train,val,test}}/*.txt files")


def load_windows(data: str | Path, split: str, cfg: TrajectoryTaskConfig) -> TrajectoryWindows:
    """Windows of one split of ``data`` (see the module docstring for what ``data`` may be)."""
    data = Path(data)
    m = cfg.model
    kind = data_kind(data)
    if kind == "manifest":
        return load_manifest_tracks(data, (split,), m.obs_len, m.pred_len, cfg.data.step_s, cfg.data.min_agents,
                                    cfg.data.person_height_m)
    if kind == "eth_ucy":
        return load_eth_ucy(data, cfg.data.scene, split, m.obs_len, m.pred_len, min_agents=cfg.data.min_agents)
    if not (data / split).is_dir():
        raise DatasetError(f"{data}: no {split}/ folder")
    return load_eth_ucy(data.parent, data.name, split, m.obs_len, m.pred_len, min_agents=cfg.data.min_agents) \
        if data.name in ETH_UCY_SCENES else _load_txt_folder(data / split, cfg)


def _load_txt_folder(folder: Path, cfg: TrajectoryTaskConfig) -> TrajectoryWindows:
    from vidseq.sequences.trajectories import make_windows, read_eth_ucy_file

    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DatasetError(f"no .txt trajectory files in {folder}")
    return TrajectoryWindows.concat([
        make_windows(read_eth_ucy_file(f), cfg.model.obs_len, cfg.model.pred_len, 1, cfg.data.min_agents,
                     source=f"{folder.name}/{f.name}") for f in files
    ])


def _optional_windows(data: Path, split: str, cfg: TrajectoryTaskConfig) -> TrajectoryWindows | None:
    try:
        w = load_windows(data, split, cfg)
    except DatasetError as exc:
        logger.info("no %s windows: %s", split, exc)
        return None
    return w if len(w) else None


# --------------------------------------------------------------------------------------------- metrics


@torch.inference_mode()
def forecast_metrics(model: TrajectoryModel, windows: TrajectoryWindows, batch_size: int = 4096,
                     device: str | torch.device = "cpu") -> dict[str, float]:
    """ADE/FDE of the deterministic head (``ade``, ``fde``), best-of-K over all hypotheses
    (``ade_k``, ``fde_k``, ``k``) and constant velocity (``cv_ade``, ``cv_fde``), in the windows' units
    (metres), averaged over agents; ``n`` agent windows."""
    model.eval()
    sums = np.zeros(6)
    n = len(windows)
    if n == 0:
        raise DatasetError("no trajectory windows to evaluate")
    for i in range(0, n, batch_size):
        obs = torch.from_numpy(windows.obs[i:i + batch_size]).to(device)
        fut = torch.from_numpy(windows.fut[i:i + batch_size]).to(device)
        out, _ = model(TrajectoryBatch(obs))
        a1, f1 = displacement_errors(out.pred, fut)
        ak, fk = displacement_errors(out.modes, fut) if out.modes is not None else (a1, f1)
        ac, fc = displacement_errors(constant_velocity(obs, fut.shape[1]), fut)
        sums += [float(t.sum()) for t in (a1, f1, ak, fk, ac, fc)]
    ade, fde, ade_k, fde_k, cv_ade, cv_fde = (sums / n).tolist()
    return {"ade": ade, "fde": fde, "ade_k": ade_k, "fde_k": fde_k, "k": float(max(1, model.num_modes)),
            "cv_ade": cv_ade, "cv_fde": cv_fde, "n": float(n)}


# --------------------------------------------------------------------------------------------- task


class TrajectoryTrainTask:
    """The :class:`vidseq.train.engine.TrainTask` of the forecaster."""

    name = TASK_NAME
    model_name = MODEL_NAME

    def __init__(self, cfg: TrajectoryTaskConfig, train_windows: TrajectoryWindows,
                 val_windows: TrajectoryWindows | None, metadata: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        repeat = max(1, -(-cfg.data.min_epoch_windows // max(1, len(train_windows))))  # ceil division
        self.train_dataset = TrajectoryDataset(train_windows, augment=cfg.augment, repeat=repeat)
        self.val_dataset = TrajectoryDataset(val_windows) if val_windows is not None and len(val_windows) else None
        self.metadata = dict(metadata or {})

    def model_config(self) -> dict[str, Any]:
        return asdict(self.cfg.model)

    def build_model(self) -> nn.Module:
        return TrajectoryModel(self.cfg.model)

    def collate(self, items: list) -> TrajectoryBatch:
        return collate_trajectories(items)

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """``val_ade``/``val_fde`` (K=1), ``val_ade_k``/``val_fde_k`` (best of all hypotheses)."""
        device = next(model.parameters()).device
        sums, n = np.zeros(4), 0
        for batch in loader:
            batch = move_to_device(batch, device)
            out, _ = model(TrajectoryBatch(batch.obs))
            a1, f1 = displacement_errors(out.pred, batch.fut)
            ak, fk = displacement_errors(out.modes, batch.fut) if out.modes is not None else (a1, f1)
            sums += [float(t.sum()) for t in (a1, f1, ak, fk)]
            n += len(batch)
        sums /= max(n, 1)
        return {"val_ade": sums[0], "val_fde": sums[1], "val_ade_k": sums[2], "val_fde_k": sums[3]}


def _data_metadata(data: Path, cfg: TrajectoryTaskConfig, train: TrajectoryWindows,
                   val: TrajectoryWindows | None) -> dict[str, Any]:
    return {
        "data": str(data), "data_kind": data_kind(data), "scene": cfg.data.scene,
        "units": "metres" if train.scale is None else "metres (pixel tracks divided by box height / "
                 f"{cfg.data.person_height_m} m)",
        "step_s": cfg.data.step_s, "train_windows": len(train), "val_windows": 0 if val is None else len(val),
        "train_sources": list(train.sources), "val_sources": [] if val is None else list(val.sources),
    }


def train(data: Path, out: Path, *, config: Path | None = None, overrides: list[str] | tuple[str, ...] = (),
          resume: bool = False, progress: bool = True) -> dict[str, float]:
    """Train the forecaster on ``data``'s train split (validating on val), then score best.pt.

    Writes the engine's run folder (best.pt, last.pt, metrics.csv, config.yaml) plus ``eval.json``
    with the best model's metrics on the val split and, when present, the test split.

    Returns:
        ``best_epoch``, the best epoch's validation metrics and ``test_*`` metrics when a test split exists.
    """
    cfg = load_task_config(config, overrides)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    data, out = Path(data), Path(out)
    train_w = load_windows(data, "train", cfg)
    if not len(train_w):
        raise DatasetError(f"{data}: no {cfg.model.obs_len + cfg.model.pred_len}-step windows in the train split")
    val_w = _optional_windows(data, "val", cfg)
    logger.info("trajectory data %s: %d train / %d val windows", data, len(train_w), 0 if val_w is None else len(val_w))
    task = TrajectoryTrainTask(cfg, train_w, val_w, _data_metadata(data, cfg, train_w, val_w))
    result = fit(task, cfg.train, out, resume=resume, config_dict=to_dict(cfg), progress=progress)
    model, _ = load_trajectory_model(result.best_path)
    metrics: dict[str, float] = {"best_epoch": float(result.best_epoch)}
    report: dict[str, Any] = {"best_epoch": result.best_epoch, "data": str(data)}
    # with scene=all the test files are whole scenes whose train parts were trained on: not a test set
    leaky = data_kind(data) == "eth_ucy" and cfg.data.scene == "all"
    test_w = None if leaky else _optional_windows(data, "test", cfg)
    for split, w in (("val", val_w), ("test", test_w)):
        if w is None:
            continue
        m = forecast_metrics(model, w)
        report[split] = m
        metrics.update({f"{split}_{k}": v for k, v in m.items()})
    atomic_write_json(out / "eval.json", report)
    return metrics


def load_trajectory_model(path: str | Path) -> tuple[TrajectoryModel, dict[str, Any]]:
    """A trained :class:`TrajectoryModel` (eval mode) and its checkpoint dict."""
    from vidseq.train.checkpoint import load_model

    model, ckpt = load_model(path, map_location="cpu")
    if ckpt.get("model_name") != MODEL_NAME or not isinstance(model, TrajectoryModel):
        raise CheckpointError(f"{path}: holds model '{ckpt.get('model_name')}', not '{MODEL_NAME}'")
    return model.eval(), ckpt


def export_model(run_checkpoint: str | Path, dst: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write a slim inference checkpoint (no optimizer/scheduler/RNG state) of a trained run.

    Args:
        run_checkpoint: a run's ``best.pt``.
        dst: output path (written atomically).
        extra: JSON-able notes stored in the checkpoint's ``extra`` (e.g. how it was made, its metrics).
    """
    from vidseq.train.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(run_checkpoint)
    if ckpt.get("model_name") != MODEL_NAME:
        raise CheckpointError(f"{run_checkpoint}: holds model '{ckpt.get('model_name')}', not '{MODEL_NAME}'")
    keep = ("model_name", "model_config", "model_state", "epoch", "config", "metadata", "task", "best_metric",
            "best_epoch", "monitor", "history")
    slim = {k: ckpt[k] for k in keep if k in ckpt}
    slim["extra"] = {**dict(ckpt.get("extra") or {}), **dict(extra or {})}
    return save_checkpoint(Path(dst), slim)


def evaluate(model: Path, data: Path, *, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, float]:
    """ADE/FDE (K=1 and best-of-K) and constant velocity on ``data``'s ``data.eval_split``.

    The data settings come from the checkpoint's config, then ``overrides`` (e.g. ``data.scene=zara1``,
    ``data.eval_split=val``). Model settings cannot be overridden.
    """
    net, ckpt = load_trajectory_model(model)
    saved = dict(ckpt.get("config") or {})
    base = from_dict(TrajectoryTaskConfig, saved) if saved else TrajectoryTaskConfig(model=net.cfg)
    for o in overrides:
        if not o.split("=", 1)[0].strip().startswith(("data.", "threads")):
            raise ConfigError(f"eval trajectory: only data.* and threads can be overridden, got '{o}'")
    cfg = with_overrides(TrajectoryTaskConfig, to_dict(base), overrides)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    trained_on = (ckpt.get("metadata") or {}).get("scene")
    if trained_on == "all" and cfg.data.eval_split == "test" and data_kind(Path(data)) != "manifest":
        logger.warning("%s was trained on the train parts of every ETH/UCY scene; each scene's test file "
                       "contains them, so these test numbers are not held-out (use data.eval_split=val)", model)
    windows = load_windows(Path(data), cfg.data.eval_split, cfg)
    metrics = forecast_metrics(net, windows)
    logger.info("trajectory eval on %s (%s split): %s", data, cfg.data.eval_split,
                " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics


__all__ = [
    "TrajectoryDataConfig", "TrajectoryTaskConfig", "TrajectoryTrainTask", "data_kind", "evaluate", "export_model",
    "forecast_metrics", "load_task_config", "load_trajectory_model", "load_windows", "train",
]
