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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from vidseq.config import to_dict, with_overrides
from vidseq.errors import CheckpointError, DatasetError
from vidseq.models.anomaly.calibrate import Calibration
from vidseq.models.anomaly.clip import ClipFeatures
from vidseq.models.anomaly.fit import (
    ClipScores,
    cross_fit_calibrate,
    fit_anomaly_model,
    fit_unsupervised,
    score_clip,
)
from vidseq.models.anomaly.model import (
    MODEL_NAME,
    AnomalyModel,
    smooth_scores,
)
from vidseq.tasks.anomaly.config import AnomalyTaskConfig, prepare_run
from vidseq.tasks.anomaly.data import clips_of, extract_all, split_train_val
from vidseq.tasks.anomaly.features import make_backbone, make_crop_encoder
from vidseq.tasks.anomaly.frame_stream import train_frame_predictor
from vidseq.tasks.anomaly.metrics import frame_auc, micro_aucs
from vidseq.tasks.anomaly.online import set_linger_level

logger = logging.getLogger(__name__)

TASK_NAME = "anomaly"


# ------------------------------------------------------------------------------------------ data loading


# ------------------------------------------------------------------------------------ frame-stream LSTM


# ------------------------------------------------------------------------------------------------ train


def train(data: Path, out: Path, *, config: Path | None = None, overrides: Sequence[str] = (),
          resume: bool = False) -> dict[str, Any]:
    """Fit the anomaly model on the normal clips of ``data``; writes ``out/best.pt`` (+ ``metrics.json``)."""
    from vidseq.io import atomic_write_json
    from vidseq.train.checkpoint import save_checkpoint

    tc, out, cache = prepare_run(config, overrides, out)
    cfg = tc.model
    t0 = time.perf_counter()
    train_refs, val_refs = split_train_val(Path(data), tc.val_clips)
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
    if cfg.linger is not None:
        # the level a stream's own warm-up may raise, never lower (AnomalyHead): from the normal clips' sums
        level = set_linger_level(model, list(train_f) + list(val_f))
        info["linger_level"] = level if np.isfinite(level) else None
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
               "linger_level": info.get("linger_level"),
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
    refs = clips_of(Path(data), [tc.split])
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
        per_clip[r.clip_id] = frame_auc(yy, s)
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
    from vidseq.tasks.anomaly.tune import tune as _tune

    return _tune(data, out, config=config, overrides=overrides)
