"""``vidseq train anomaly`` / ``vidseq eval anomaly``: one-class training on normal clips, frame-level AUC.

``DATA`` is a vidseq dataset folder (``vidseq data import ucsd-ped2 SRC DST``). Training reads only the
``train`` clips (normal) and ``val`` clips (normal; when the dataset has none, the last
``val_clips`` training clips are held out). Test labels are read by :func:`evaluate` only, for the
metrics: never for fitting, model selection or the threshold.

Example::

    vidseq train anomaly --data ds/ped2 --out runs/ped2 --set cache_dir=/tmp/anom_cache
    vidseq eval anomaly --model runs/ped2/best.pt --data ds/ped2 --json metrics.json

Metrics of :func:`evaluate` (micro = all test frames pooled):
    ``auc_micro``         the final score, normalised with training statistics only (what a live system
                          has); ``auc_micro_minmax``: the same scores min-max normalised per test video
                          (what FFP/MNAD-style papers report);
    ``auc_micro_<stream>`` / ``auc_micro_minmax_<stream>``: each stream alone (standardised, smoothed);
    ``auc_micro_unsmoothed``: the fused score before temporal smoothing;
    ``auc_micro_unsup_self``: the unsupervised self-referential mode, fitted on each test video itself;
    ``precision``/``recall``/``fpr`` at the calibrated threshold (hysteresis applied).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vidseq.config import from_dict, load_config, to_dict, with_overrides
from vidseq.errors import CheckpointError, ConfigError, DatasetError, InputShapeError
from vidseq.heads.anomaly.calibrate import Calibration
from vidseq.heads.anomaly.features import (
    ClipFeatures,
    extract_clip_features,
    make_backbone,
    make_crop_encoder,
)
from vidseq.heads.anomaly.fit import (
    ClipScores,
    cross_fit_calibrate,
    fit_anomaly_model,
    fit_unsupervised,
    frame_statistics,
    frame_vectors,
    score_clip,
)
from vidseq.heads.anomaly.model import (
    FRAME_MODEL_NAME,
    MODEL_NAME,
    AnomalyConfig,
    AnomalyModel,
    FramePredictor,
    smooth_scores,
)
from vidseq.heads.anomaly.select import SelectionConfig
from vidseq.train.engine import TrainConfig

logger = logging.getLogger(__name__)

TASK_NAME = "anomaly"


@dataclass(frozen=True)
class AnomalyTaskConfig:
    """``configs/anomaly.yaml``.

    Attributes:
        model: the anomaly model (:class:`AnomalyConfig`).
        train: engine settings for the frame-stream LSTM.
        val_clips: when the dataset has no ``val`` split, hold out this many of the last training clips.
        cross_fit_folds: >= 2: fit the model on every normal clip (train + val) and take the stream
            statistics and the threshold from out-of-fold scores of all of them
            (:func:`~vidseq.heads.anomaly.fit.cross_fit_calibrate`); the validation clips then only
            early-stop the frame LSTM. 0: statistics and threshold from the validation clips.
        cache_dir: per-clip feature cache (``None``: ``<out>/cache`` when training; evaluation reuses
            the training run's cache folder when it still exists).
        workers: processes extracting clip features in parallel.
        split: split evaluated by :func:`evaluate`.
        variants: also report per-stream, unsmoothed and unsupervised AUCs in :func:`evaluate`.
        device: torch device for the backbone and LSTM.
        progress: progress bars.
        select: the label-free search of ``vidseq tune anomaly`` (:mod:`vidseq.heads.anomaly.select`).
    """

    model: AnomalyConfig = field(default_factory=AnomalyConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=15, batch_size=32, lr=1e-3,
                                                                   patience=4, device="cpu"))
    val_clips: int = 2
    cross_fit_folds: int = 0
    cache_dir: str | None = None
    workers: int = 1
    split: str = "test"
    variants: bool = True
    device: str = "cpu"
    progress: bool = True
    select: SelectionConfig = field(default_factory=SelectionConfig)

    def __post_init__(self) -> None:
        if self.val_clips < 0 or self.workers < 1:
            raise ConfigError("val_clips must be >= 0 and workers >= 1")
        if self.cross_fit_folds == 1 or self.cross_fit_folds < 0:
            raise ConfigError(f"cross_fit_folds must be 0 (off) or >= 2, got {self.cross_fit_folds}")


# ------------------------------------------------------------------------------------------ data loading


@dataclass
class _ClipRef:
    clip_id: str
    path: Path
    split: str


def _clips(data: Path, splits: Sequence[str]) -> list[_ClipRef]:
    from vidseq.sequences.manifest import load_dataset

    ds = load_dataset(data)
    out = []
    for c in ds.clips_for(list(splits)):
        if c.path is None:
            raise DatasetError(f"{ds.manifest_path}: clip '{c.id}' has no video path (anomaly needs videos)")
        out.append(_ClipRef(c.id, Path(c.path), c.split))
    return out


def _split_train_val(data: Path, val_clips: int) -> tuple[list[_ClipRef], list[_ClipRef]]:
    train = _clips(data, ["train"])
    val = _clips(data, ["val"])
    if not train:
        raise DatasetError(f"{data}: no 'train' clips")
    if not val and val_clips:
        if val_clips >= len(train):
            raise DatasetError(f"{data}: val_clips={val_clips} leaves no training clips ({len(train)})")
        train, val = train[:-val_clips], train[-val_clips:]
    return train, val


def _extract_one(args: tuple[str, str, dict[str, Any], str | None]) -> ClipFeatures:
    import cv2

    path, clip_id, cfg_dict, cache_dir = args
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    cfg = from_dict(AnomalyConfig, cfg_dict)
    # object crops here too, so they are encoded in the worker processes (one encoder per clip: ~0.2 s)
    return extract_clip_features(path, cfg, clip_id=clip_id, cache_dir=cache_dir, crops=make_crop_encoder(cfg))


def extract_all(refs: Sequence[_ClipRef], cfg: AnomalyConfig, cache_dir: str | None, workers: int,
                device: str = "cpu", progress: bool = True) -> list[ClipFeatures]:
    """Stream inputs of every clip (motion, regions and object crops in ``workers`` processes on CPU;
    appearance after)."""
    from tqdm import tqdm

    jobs = [(str(r.path), r.clip_id, to_dict(cfg), cache_dir) for r in refs]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            feats = list(tqdm(pool.map(_extract_one, jobs), total=len(jobs), desc="clip features",
                              disable=not progress))
    else:
        feats = [_extract_one(j) for j in tqdm(jobs, desc="clip features", disable=not progress)]
    backbone = make_backbone(cfg, device)
    if backbone is not None:
        from vidseq.features.extractor import extract_features

        for r, cf in zip(refs, feats, strict=True):
            seq = extract_features(r.path, backbone, cache_dir=cache_dir, progress=progress)
            if len(seq) != len(cf):
                raise DatasetError(f"clip '{r.clip_id}': {len(seq)} appearance frames vs {len(cf)} motion frames")
            cf.appearance = seq.features.astype(np.float32)
    return feats


# ------------------------------------------------------------------------------------ frame-stream LSTM


class _Windows(Dataset):
    """Fixed-length windows of per-frame vectors (one tensor (L, D) per item)."""

    def __init__(self, seqs: Sequence[np.ndarray], window: int, stride: int) -> None:
        self.items: list[torch.Tensor] = []
        for x in seqs:
            if len(x) < 2:
                continue
            if len(x) <= window:
                self.items.append(torch.from_numpy(x))
                continue
            starts = list(range(0, len(x) - window + 1, stride))
            if starts[-1] != len(x) - window:
                starts.append(len(x) - window)
            self.items.extend(torch.from_numpy(x[s:s + window]) for s in starts)
        lengths = {len(t) for t in self.items}
        if len(lengths) > 1:  # short clips: crop everything to the shortest for a stackable batch
            m = min(lengths)
            self.items = [t[:m] for t in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.items[i]


@dataclass
class FrameStreamTask:
    """The engine's view of the frame-stream LSTM (:class:`vidseq.train.engine.TrainTask`)."""

    train_dataset: Dataset
    val_dataset: Dataset | None
    input_dim: int
    cfg: AnomalyConfig
    mean: np.ndarray
    std: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str = "anomaly_frame_stream"
    model_name: str = FRAME_MODEL_NAME

    def model_config(self) -> dict[str, Any]:
        f = self.cfg.frame
        return {"input_dim": self.input_dim, "hidden_dim": f.hidden_dim, "num_layers": f.num_layers,
                "dropout": f.dropout}

    def build_model(self) -> nn.Module:
        f = self.cfg.frame
        m = FramePredictor(self.input_dim, f.hidden_dim, f.num_layers, f.dropout)
        m.set_statistics(self.mean, self.std)
        return m

    def collate(self, items: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(items)  # (B, L, D)

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        return {}


def train_frame_predictor(cfg: AnomalyConfig, tcfg: TrainConfig, train: Sequence[ClipFeatures],
                          val: Sequence[ClipFeatures], out_dir: Path, *, resume: bool, progress: bool,
                          config_dict: dict[str, Any]) -> FramePredictor:
    """Train the next-step LSTM with the shared engine; returns the best epoch's model."""
    from vidseq.train.checkpoint import load_checkpoint
    from vidseq.train.engine import fit

    xs = [frame_vectors(cf, cfg) for cf in train]
    allx = np.concatenate(xs)
    mean, std = frame_statistics(allx, cfg)
    task = FrameStreamTask(_Windows(xs, cfg.frame.window, cfg.frame.stride),
                           _Windows([frame_vectors(cf, cfg) for cf in val], cfg.frame.window, cfg.frame.stride)
                           if val else None, int(allx.shape[1]), cfg, mean, std,
                           metadata={"inputs": {"appearance": cfg.frame.appearance, "motion": cfg.frame.motion}})
    res = fit(task, tcfg, out_dir, resume=resume, config_dict=config_dict, progress=progress)
    ckpt = load_checkpoint(res.best_path)
    model = task.build_model()
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    return model


# ------------------------------------------------------------------------------------------------ train


def _load_task_config(config: Path | None, overrides: Sequence[str]) -> AnomalyTaskConfig:
    return load_config(AnomalyTaskConfig, config, list(overrides))


def prepare_run(config: Path | None, overrides: Sequence[str], out: Path) -> tuple[AnomalyTaskConfig, Path, str]:
    """Task config, the created output folder and the feature cache folder of a train/tune run."""
    tc = _load_task_config(config, overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return tc, out, tc.cache_dir or str(out / "cache")


def train(data: Path, out: Path, *, config: Path | None = None, overrides: Sequence[str] = (),
          resume: bool = False) -> dict[str, Any]:
    """Fit the anomaly model on the normal clips of ``data``; writes ``out/best.pt`` (+ ``metrics.json``)."""
    from vidseq.io import atomic_write_json
    from vidseq.train.checkpoint import save_checkpoint

    tc, out, cache = prepare_run(config, overrides, out)
    cfg = tc.model
    t0 = time.perf_counter()
    train_refs, val_refs = _split_train_val(Path(data), tc.val_clips)
    feats = extract_all(train_refs + val_refs, cfg, cache, tc.workers, tc.device, tc.progress)
    train_f, val_f = feats[: len(train_refs)], feats[len(train_refs):]
    t_feat = time.perf_counter() - t0
    predictor = None
    if cfg.uses("frame"):
        predictor = train_frame_predictor(cfg, replace(tc.train, device=tc.device), train_f, val_f,
                                          out / "frame_lstm", resume=resume, progress=tc.progress,
                                          config_dict=to_dict(tc))
    if tc.cross_fit_folds >= 2:
        normal = list(train_f) + list(val_f)
        model, _, info = fit_anomaly_model(cfg, normal, val_f, frame_predictor=predictor)
        cal, stats = cross_fit_calibrate(model, normal, tc.cross_fit_folds, frame_predictor=predictor)
        info.update(stats, train_clips=[cf.clip_id for cf in normal], train_frames=int(sum(len(c) for c in normal)))
    else:
        model, cal, info = fit_anomaly_model(cfg, train_f, val_f, frame_predictor=predictor)
    t_fit = time.perf_counter() - t0 - t_feat
    backbone_info = make_backbone(cfg, "cpu").info() if cfg.needs_appearance else None
    crops = make_crop_encoder(cfg, "cpu")
    metadata = {"fps": float(np.median([cf.fps for cf in train_f])), "working_size": list(train_f[0].working_size),
                "descriptor_dim": int(train_f[0].descriptors.shape[1]), "backbone": backbone_info,
                "crops": None if crops is None else crops.info(),
                "dataset": str(data), "cache_dir": cache}
    save_checkpoint(out / "best.pt", model=model, model_name=MODEL_NAME, model_config=model.model_config(),
                    config=to_dict(tc), metadata=metadata,
                    extra={"calibration": cal.to_dict(), "fit": info, "mode": "trained"})
    metrics = {"threshold": cal.threshold, "low_threshold": cal.low_threshold, "val_frames": info["val_frames"],
               "calibration": info.get("calibration", "validation clips"),
               "train_frames": info["train_frames"], "feature_seconds": round(t_feat, 2),
               "fit_seconds": round(t_fit, 2), "checkpoint": str(out / "best.pt")}
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


# --------------------------------------------------------------------------------------------- evaluate


def load_anomaly_model(path: str | os.PathLike[str]) -> tuple[AnomalyModel, Calibration, dict[str, Any]]:
    """Rebuild the model and its calibration from a checkpoint written by :func:`train`."""
    from vidseq.train.checkpoint import load_model

    model, ckpt = load_model(path)
    if ckpt["model_name"] != MODEL_NAME or not isinstance(model, AnomalyModel):
        raise CheckpointError(f"{path}: holds a '{ckpt['model_name']}' model, not an anomaly model ({MODEL_NAME})")
    try:
        cal = Calibration.from_dict(dict(ckpt["extra"]["calibration"]))
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: no calibration stored in the checkpoint ({exc})") from None
    return model, cal, ckpt


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC of scores ``s`` for 0/1 labels ``y`` (NaN when one class is missing).

    Mann-Whitney form (ties count one half), equal to ``sklearn.metrics.roc_auc_score`` (a test checks)
    and much faster on a few thousand frames; ``tune`` computes it for every candidate.
    """
    return float(group_aucs(y, s)[-1])


def group_aucs(y: np.ndarray, s: np.ndarray, group: np.ndarray | None = None, n_groups: int = 0) -> np.ndarray:
    """AUC of each group of positives against *all* negatives: ``(n_groups + 1,)``, the last entry over all
    positives (NaN where a group has no positive or there is no negative).

    ``group`` gives each frame's group in ``[0, n_groups)`` (read for positives only; not needed when
    ``n_groups`` is 0). One sort of the negatives serves every group: a positive's count is the negatives
    below it plus half those tied.
    """
    y = np.asarray(y)
    s = np.asarray(s, np.float64)
    if len(y) != len(s):
        raise InputShapeError(f"AUC: {len(y)} labels for {len(s)} scores")
    if n_groups and (group is None or len(group) != len(s)):
        raise InputShapeError(f"AUC: {n_groups} groups need one group id per score ({len(s)})")
    if not np.isfinite(s).all():
        raise InputShapeError("AUC: scores contain NaN/inf")
    pos = y == 1
    neg = np.sort(s[~pos])
    out = np.full(n_groups + 1, np.nan)
    if len(neg) == 0 or not pos.any():
        return out
    sp = s[pos]
    lo, hi = np.searchsorted(neg, sp, "left"), np.searchsorted(neg, sp, "right")
    wins = lo + 0.5 * (hi - lo)  # (n_pos,)
    if n_groups:
        g = np.asarray(group)[pos]
        if g.min() < 0 or g.max() >= n_groups:
            raise InputShapeError(f"AUC: group ids must lie in [0, {n_groups})")
        sums, counts = np.bincount(g, wins, n_groups), np.bincount(g, minlength=n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:n_groups] = np.where(counts > 0, sums / (counts * len(neg)), np.nan)
    out[n_groups] = wins.sum() / (len(sp) * len(neg))
    return out


def _minmax(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def micro_aucs(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> tuple[float, float]:
    """(AUC over pooled frames, AUC over pooled per-video min-max normalised frames)."""
    y = np.concatenate(labels)
    return _auc(y, np.concatenate(scores)), _auc(y, np.concatenate([_minmax(s) for s in scores]))


def evaluate(model: Path, data: Path, *, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Frame-level AUCs (and threshold behaviour) of a trained checkpoint on ``split`` (default test).

    Overrides: any :class:`AnomalyTaskConfig` key that matters here (``split``, ``cache_dir``,
    ``workers``, ``variants``, ``progress``), and ``model.smooth_sigma_s`` / ``model.fusion`` /
    ``model.weights`` to re-score without refitting (the fitted parts are unchanged).
    """
    anomaly, cal, ckpt = load_anomaly_model(model)
    tc = with_overrides(AnomalyTaskConfig, dict(ckpt.get("config") or {}), overrides)
    cfg = anomaly.cfg
    rescored = replace(cfg, smooth_sigma_s=tc.model.smooth_sigma_s, fusion=tc.model.fusion,
                       weights=tc.model.weights)
    anomaly.cfg = rescored
    cache = tc.cache_dir or (ckpt.get("metadata") or {}).get("cache_dir")
    if cache and not Path(cache).parent.exists():
        cache = None
    refs = _clips(Path(data), [tc.split])
    if not refs:
        raise DatasetError(f"{data}: no '{tc.split}' clips")
    from vidseq.sequences.manifest import load_dataset

    ds = load_dataset(data)
    labels = []
    for r in refs:
        clip = ds.clip(r.clip_id)
        if clip.labels is None:
            raise DatasetError(f"{data}: clip '{r.clip_id}' has no anomaly labels; cannot evaluate")
        labels.append(clip.load_labels().astype(np.int64))
    t0 = time.perf_counter()
    feats = extract_all(refs, cfg, cache, tc.workers, tc.device, tc.progress)
    t_feat = time.perf_counter() - t0
    scored: list[ClipScores] = []
    for r, cf, y in zip(refs, feats, labels, strict=True):
        if len(y) != len(cf):
            raise DatasetError(f"clip '{r.clip_id}': {len(y)} labels for {len(cf)} decoded frames")
        scored.append(score_clip(anomaly, cf))
    t_score = time.perf_counter() - t0 - t_feat
    final = [s.arrays["score"] for s in scored]
    auc, auc_mm = micro_aucs(labels, final)
    y = np.concatenate(labels)
    flags = np.concatenate([cal.flags(s) for s in final])
    tp, fp = int((flags & (y == 1)).sum()), int((flags & (y == 0)).sum())
    metrics: dict[str, Any] = {
        "auc_micro": auc, "auc_micro_minmax": auc_mm,
        "threshold": cal.threshold, "precision": tp / max(int(flags.sum()), 1), "recall": tp / max(int(y.sum()), 1),
        "fpr": fp / max(int((y == 0).sum()), 1), "frames": int(len(y)), "anomalous_frames": int(y.sum()),
        "clips": len(refs), "streams": list(cfg.streams), "feature_seconds": round(t_feat, 2),
        "score_seconds": round(t_score, 2),
    }
    per_clip = {}
    for r, s, yy in zip(refs, final, labels, strict=True):
        per_clip[r.clip_id] = _auc(yy, s)
    metrics["auc_per_clip_mean"] = float(np.nanmean(list(per_clip.values())))
    if tc.variants:
        metrics.update(_variants(anomaly, scored, feats, labels))
    return metrics


def _variants(model: AnomalyModel, scored: list[ClipScores], feats: list[ClipFeatures],
              labels: list[np.ndarray]) -> dict[str, float]:
    out: dict[str, float] = {}
    if len(model.cfg.streams) > 1:
        for s in model.cfg.streams:
            z = [smooth_scores(c.z(model, s), model.kernel(c.fps)) for c in scored]
            out[f"auc_micro_{s}"], out[f"auc_micro_minmax_{s}"] = micro_aucs(labels, z)
    out["auc_micro_unsmoothed"], out["auc_micro_minmax_unsmoothed"] = micro_aucs(
        labels, [c.arrays["fused"] for c in scored])
    unsup = []
    for cf in feats:
        m, _, _ = fit_unsupervised(cf, model.cfg, None)
        unsup.append(score_clip(m, cf).arrays["score"])
    out["auc_micro_unsup_self"], out["auc_micro_minmax_unsup_self"] = micro_aucs(labels, unsup)
    return out


def tune(data: Path, out: Path, *, config: Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``vidseq tune anomaly``: label-free choice of streams and settings (:func:`.select.tune`)."""
    from vidseq.heads.anomaly.select import tune as _tune

    return _tune(data, out, config=config, overrides=overrides)
