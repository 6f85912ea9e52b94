"""Fitting the anomaly model on normal clips: scale map, kNN bank, stream statistics, threshold.

The frame-stream LSTM is gradient-trained by the shared engine (:mod:`vidseq.tasks.anomaly.task`);
everything else is estimated here in closed form from normal data only:

1. speed: per-cell histograms of moving-pixel speeds over the training clips -> scale map;
2. objects: normalised attribute vectors of every training region -> standardised kNN bank;
   crops: crop features of every training region -> principal components + kNN bank;
3. normalisation: raw stream scores on the *validation* clips -> per-stream mean/std (the kNN bank
   does not contain validation objects, so their distances are not self-matches);
4. calibration: fused, smoothed validation scores -> threshold pair (:mod:`.calibrate`).

:func:`cross_fit_calibrate` replaces 3-4 by out-of-fold scores of every normal clip (K-fold refits).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from vidseq.errors import DatasetError, InputShapeError
from vidseq.features.motion import CELL_STATS, GLOBAL_STATS
from vidseq.models.anomaly.calibrate import Calibration, calibrate
from vidseq.models.anomaly.clip import ClipFeatures
from vidseq.models.anomaly.model import (
    AnomalyConfig,
    AnomalyModel,
    FramePredictor,
    SpeedMapFitter,
    descriptor_cells,
    score_frames,
    smooth_scores,
    stack_scored,
)
from vidseq.models.anomaly.tracks import track_clip

log = logging.getLogger(__name__)


@dataclass
class ClipScores:
    """Scores of one clip: final ``score`` plus per-stream raw and standardised arrays."""

    clip_id: str
    fps: float
    arrays: dict[str, np.ndarray]  # frame_index, timestamp_s, score, fused, raw_<stream>

    def z(self, model: AnomalyModel, stream: str) -> np.ndarray:
        """Standardised scores of one stream (NaN -> 0, as in fusion)."""
        i = model.cfg.streams.index(stream)
        raw = self.arrays[f"raw_{stream}"]
        z = (raw - float(model.stream_mean[i])) / float(model.stream_std[i])
        return np.where(np.isfinite(z), z, 0.0)


def score_clip(model: AnomalyModel, cf: ClipFeatures, normalise: bool = True) -> ClipScores:
    """Offline scores of a clip (the streaming scorer run over its cached features)."""
    frames = score_frames(model, cf.frames(), cf.fps, normalise=normalise)
    return ClipScores(cf.clip_id, cf.fps, stack_scored(frames, model.cfg.streams))


def _check_sizes(clips: Sequence[ClipFeatures]) -> tuple[tuple[int, int], tuple[int, int]]:
    shapes = {c.magnitude_maps.shape[1:] for c in clips}
    sizes = {tuple(c.working_size) for c in clips}
    if len(shapes) != 1 or len(sizes) != 1:
        names = ", ".join(f"{c.clip_id}:{c.working_size[0]}x{c.working_size[1]}" for c in clips[:6])
        raise DatasetError(f"anomaly: all clips must share one frame size after resizing, got {names}")
    (shape,) = shapes
    (size,) = sizes
    return (int(shape[0]), int(shape[1])), (int(size[0]), int(size[1]))


def frame_vectors(cf: ClipFeatures, cfg: AnomalyConfig) -> np.ndarray:
    """``(T, D_in)`` frame-stream inputs of a clip: [appearance, motion descriptor] as configured."""
    parts = []
    if cfg.frame.appearance:
        if cf.appearance is None:
            raise InputShapeError(f"clip {cf.clip_id}: frame stream needs appearance features")
        parts.append(cf.appearance)
    if cfg.frame.motion:
        parts.append(cf.descriptors)
    return np.concatenate(parts, 1).astype(np.float32)


def frame_statistics(x: np.ndarray, cfg: AnomalyConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of frame-stream inputs ``x`` ``(N, D_in)`` (see :func:`frame_vectors`).

    Motion-descriptor cell statistics get a std floor of ``cfg.frame.std_floor`` times that statistic's
    pooled scale (RMS of its per-cell stds), so a cell that never moved in training is not infinitely
    surprising later.
    """
    x = np.asarray(x, np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-6
    if cfg.frame.motion and cfg.frame.std_floor > 0:
        rows, cols = cfg.motion.grid
        n = rows * cols * len(CELL_STATS)
        desc_start = x.shape[1] - (n + len(GLOBAL_STATS))
        if desc_start < 0:
            raise InputShapeError(f"frame-stream inputs have {x.shape[1]} dims, fewer than the motion descriptor's "
                                  f"{n + len(GLOBAL_STATS)} (motion.grid {rows}x{cols})")
        cells = std[desc_start:desc_start + n].reshape(rows * cols, len(CELL_STATS))
        pooled = np.sqrt((cells ** 2).mean(0))  # (S,)
        std[desc_start:desc_start + n] = np.maximum(cells, cfg.frame.std_floor * pooled).reshape(-1)
    return mean.astype(np.float32), std.astype(np.float32)


def fit_anomaly_model(cfg: AnomalyConfig, train: Sequence[ClipFeatures], val: Sequence[ClipFeatures], *,
                      frame_predictor: FramePredictor | None = None,
                      ) -> tuple[AnomalyModel, Calibration, dict[str, Any]]:
    """Fit every non-gradient part and calibrate.

    Args:
        cfg: model config.
        train: normal training clips.
        val: normal validation clips for normalisation and threshold (empty: the training clips
            are reused, which biases kNN distances low; a warning is logged).
        frame_predictor: the trained frame-stream LSTM (required when ``"frame"`` is a stream).

    Returns:
        ``(model, calibration, info)``; ``info`` holds validation statistics.
    """
    if not train:
        raise DatasetError("anomaly: no training clips")
    _check_sizes(list(train) + list(val))
    if not val:
        log.warning("anomaly: no validation clips; normalising and calibrating on the training clips")
        val = train
    model = fit_parts(cfg, train, frame_predictor=frame_predictor)
    # 3-4. stream statistics and threshold from the validation clips
    raw_scores = [score_clip(model, cf, normalise=False) for cf in val]
    cal, stats = standardise_and_calibrate(model, raw_scores)
    info = {"val_clips": [cf.clip_id for cf in val], "val_frames": int(sum(len(cf) for cf in val)),
            "train_clips": [cf.clip_id for cf in train], "train_frames": int(sum(len(cf) for cf in train)),
            "bank_size": int(model.objects.bank.shape[0]) if model.objects is not None else 0,
            "crop_bank_size": int(model.crops.knn.bank.shape[0]) if model.crops is not None else 0, **stats}
    return model, cal, info


def fit_scale_map(cfg: AnomalyConfig, clips: Sequence[ClipFeatures]) -> np.ndarray:
    """The speed stream's scale map (normal speed per place, ``cfg.speed.cell``) from normal ``clips``."""
    fitter = SpeedMapFitter(cfg.speed, cfg.motion.moving_threshold)
    for cf in clips:
        fitter.update(cf.magnitude_maps, cf.valid)
    return fitter.scale_map()


def fit_parts(cfg: AnomalyConfig, train: Sequence[ClipFeatures], *, frame_predictor: FramePredictor | None = None,
              ) -> AnomalyModel:
    """Steps 1-2 on normal ``train`` clips (scale map, kNN bank) plus the frame LSTM's weights; the stream
    statistics stay at mean 0 / std 1 until :func:`standardise_and_calibrate`."""
    if not train:
        raise DatasetError("anomaly: no training clips")
    map_shape, frame_size = _check_sizes(train)
    bank_rows = 1
    vectors = None
    # 1. scale map
    scale = fit_scale_map(cfg, train)
    probe = AnomalyModel(replace(cfg, streams=("speed",), weights=()), map_shape, frame_size)
    probe.speed.scale_map = torch.from_numpy(scale)
    # 2. object bank
    if cfg.uses("objects"):
        vectors = np.concatenate([probe_objects(probe, cfg, cf) for cf in train])
        if len(vectors) == 0:
            raise DatasetError("anomaly: no moving regions in the training clips (objects stream)")
        bank_rows = min(len(vectors), cfg.objects.max_bank)
    crop_rows, crop_dim, crop_x = 1, 0, None
    if cfg.uses("crops"):
        missing = [cf.clip_id for cf in train if cf.region_crops is None]
        if missing:
            raise InputShapeError(f"anomaly: the crops stream needs object crop features; none for {missing[:3]}")
        crop_x = np.concatenate([cf.region_crops for cf in train])
        if len(crop_x) == 0:
            raise DatasetError("anomaly: no moving regions in the training clips (crops stream)")
        crop_rows, crop_dim = min(len(crop_x), cfg.crops.max_bank), int(crop_x.shape[1])
    in_dim = desc_dim = app_dim = 0
    if cfg.uses("frame"):
        if frame_predictor is None:
            raise InputShapeError("anomaly: the frame stream needs a trained frame predictor")
        enc = frame_predictor.encoder.cfg
        if (enc.hidden_dim, enc.num_layers) != (cfg.frame.hidden_dim, cfg.frame.num_layers):
            raise InputShapeError(f"frame predictor is {enc.num_layers}x{enc.hidden_dim}, the config says "
                                  f"{cfg.frame.num_layers}x{cfg.frame.hidden_dim}")
        in_dim = frame_predictor.input_dim
        desc_dim = train[0].descriptors.shape[1] if cfg.frame.motion else 0
        app_dim = train[0].appearance.shape[1] if (cfg.frame.appearance and train[0].appearance is not None) else 0
    model = AnomalyModel(cfg, map_shape, frame_size, bank_size=bank_rows, frame_input_dim=in_dim,
                         descriptor_dim=desc_dim, appearance_dim=app_dim, crop_bank_size=crop_rows, crop_dim=crop_dim)
    model.speed.scale_map = torch.from_numpy(scale)
    if model.objects is not None and vectors is not None:
        model.objects.fit(vectors, cfg.objects.max_bank, cfg.objects.seed)
    if model.crops is not None and crop_x is not None:
        model.crops.fit(crop_x, cfg.crops.max_bank, cfg.crops.seed)
    if model.frame is not None and frame_predictor is not None:
        model.frame.load_state_dict(frame_predictor.state_dict())
    if model.tracks is not None:
        model.tracks.fit(np.concatenate([track_clip(cfg.tracks, frame_size, cf.fps, zip(
            cf.regions_of(), cf.timestamp_s.tolist(), cf.valid.tolist(), strict=True)) for cf in train]))
    if model.scene is not None:
        model.scene.fit(np.concatenate([descriptor_cells(cf.descriptors[cf.valid], model.scene.grid) for cf in train]))
    model.eval()
    return model


def standardise_and_calibrate(model: AnomalyModel, raw_scores: Sequence[ClipScores],
                              ) -> tuple[Calibration, dict[str, Any]]:
    """Set the model's per-stream mean/std from raw scores of normal clips, then calibrate the threshold
    on the same clips' final (fused, smoothed) scores."""
    cfg = model.cfg
    means, stds = [], []
    for s in cfg.streams:
        v = np.concatenate([r.arrays[f"raw_{s}"] for r in raw_scores])
        v = v[np.isfinite(v)]
        std = float(v.std()) if len(v) > 1 and v.std() > 1e-12 else 1.0
        if cfg.standardise == "quantile" and len(v):
            med = float(np.median(v))
            spread = float(np.quantile(v, 0.995)) - med
            means.append(med)
            stds.append(spread if spread > 1e-9 else std)
        else:
            means.append(float(v.mean()) if len(v) else 0.0)
            stds.append(std)
    model.stream_mean = torch.tensor(means, dtype=torch.float64)
    model.stream_std = torch.tensor(stds, dtype=torch.float64)
    final = []
    for r in raw_scores:
        fused = np.array([model.fuse({s: r.arrays[f"raw_{s}"][t] for s in cfg.streams})[0]
                          for t in range(len(r.arrays["score"]))])
        final.append(smooth_scores(fused, model.kernel(r.fps)))
    allf = np.concatenate(final)
    cal = calibrate(allf, cfg.calibration)
    return cal, {"stream_mean": dict(zip(cfg.streams, means, strict=True)),
                 "stream_std": dict(zip(cfg.streams, stds, strict=True)),
                 "val_score_mean": float(allf.mean()), "val_score_std": float(allf.std())}


def cross_fit_calibrate(model: AnomalyModel, clips: Sequence[ClipFeatures], folds: int, *,
                        frame_predictor: FramePredictor | None = None) -> tuple[Calibration, dict[str, Any]]:
    """Statistics and threshold of ``model`` from out-of-fold scores of every normal clip.

    Clip ``i`` is scored by a model whose scale map and kNN bank were fitted without the clips of its
    fold (``i % folds``), as new footage of the camera would be; the pooled scores standardise the
    streams and set the threshold (many more normal frames than a small validation split, and none
    scored by a model that has seen them). The frame-stream LSTM is not refitted per fold (``frame_predictor``
    is shared), so its out-of-fold scores are optimistic where it is used.
    """
    if folds < 2 or len(clips) < folds:
        raise DatasetError(f"anomaly: cross-fit calibration needs >= {max(folds, 2)} normal clips, got {len(clips)}")
    raw: list[ClipScores] = []
    for k in range(folds):
        held = [c for i, c in enumerate(clips) if i % folds == k]
        fit = [c for i, c in enumerate(clips) if i % folds != k]
        m = fit_parts(model.cfg, fit, frame_predictor=frame_predictor)
        raw.extend(score_clip(m, cf, normalise=False) for cf in held)
    cal, stats = standardise_and_calibrate(model, raw)
    stats.update({"calibration": f"cross-fit, {folds} folds", "val_clips": [c.clip_id for c in clips],
                  "val_frames": int(sum(len(c) for c in clips))})
    return cal, stats


def probe_objects(model: AnomalyModel, cfg: AnomalyConfig, cf: ClipFeatures) -> np.ndarray:
    """Normalised object vectors of a clip (``(N, len(cfg.objects.attributes))``)."""
    from vidseq.features.regions import ATTRIBUTE_NAMES, normalise_attributes

    norm = normalise_attributes(cf.region_attrs.reshape(-1, len(ATTRIBUTE_NAMES)), model.speed.scale_map.numpy(),
                                model.frame_size, cfg.motion.map_stride)
    return norm[:, cfg.objects.indices]


def fit_unsupervised(cf: ClipFeatures, cfg: AnomalyConfig, fit_seconds: float | None = None,
                     ) -> tuple[AnomalyModel, Calibration, dict[str, Any]]:
    """Self-referential model for one video without a trained model.

    Normality is fitted on the first ``fit_seconds`` of the clip (``None``: the whole clip, so rare
    events are judged against the clip's own typical motion). Only the ``speed`` and ``objects``
    streams are used (the LSTM needs more normal data than one clip gives).
    """
    streams = tuple(s for s in cfg.streams if s in ("speed", "objects")) or ("speed",)
    w = tuple(wi for s, wi in zip(cfg.streams, cfg.stream_weights, strict=True) if s in streams)
    ucfg = replace(cfg, streams=streams, weights=w if len(w) == len(streams) else ())
    n = len(cf) if fit_seconds is None else max(2, min(len(cf), int(math.ceil(fit_seconds * cf.fps))))
    part = cf.slice(0, n)
    if "objects" in streams and len(part.region_attrs) == 0:
        ucfg = replace(ucfg, streams=("speed",), weights=())
    model, cal, info = fit_anomaly_model(ucfg, [part], [part])
    info.update({"mode": "unsupervised-self" if fit_seconds is None else f"unsupervised-first-{fit_seconds:g}s",
                 "fit_frames": n})
    return model, cal, info
