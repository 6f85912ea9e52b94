"""Score one video (file, folder, camera or stream) with a trained model, or without one.

Trained mode streams: :class:`VideoScorer` computes each frame's features as it arrives and the
model emits final scores :meth:`AnomalyModel.delay_frames` frames later; :func:`score_video` drives it
over a source and hands every scored row to a callback as soon as it is final (so long videos are
written as they go). Offline scoring of cached features runs the same streaming code, so both agree.

Unsupervised mode (:func:`score_video_unsupervised`): no trained model; the same rule as ``process``
and ``monitor`` (:mod:`vidseq.tasks.anomaly.online`): normality is learnt from the first ``fit_s``
seconds of the video's timestamps (not scored), the threshold meets a false-alarm budget, and later
frames are scored. Results say so in ``mode`` (``unsupervised-online-<N>s``); a video shorter than the
warm-up is not scored and ``info.not_scored`` says why.

Example::

    model, cal, ckpt = load_anomaly_model("runs/ped2/best.pt")
    result = score_video("clip.avi", model, cal, on_row=print)
    result.events          # list[Event]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vidseq.errors import EmptyVideoError, InputShapeError
from vidseq.features.camera import CameraConfig
from vidseq.models.anomaly.calibrate import Calibration, Event, find_events
from vidseq.models.anomaly.model import (
    AnomalyConfig,
    AnomalyModel,
    ScoredFrame,
    StreamScorer,
)
from vidseq.tasks.anomaly.features import (
    FeatureComputer,
    make_backbone,
    make_crop_encoder,
    pixel_compensation,
)
from vidseq.tasks.anomaly.online import (
    ONLINE_MODE,
    FrameStride,
    NormalitySettings,
    OnlineNormality,
    ScoredRow,
    unsupervised_config,
)

log = logging.getLogger(__name__)


@dataclass
class ScoreRow:
    """One output row: a frame's final score and whether it is flagged (threshold with hysteresis)."""

    frame_index: int
    timestamp_s: float
    score: float
    is_anomaly: bool


@dataclass
class VideoScores:
    """All rows of a scored video plus its events and how they were obtained."""

    source: str
    fps: float
    mode: str  # "trained" or "unsupervised-online-<fit_s>s"
    calibration: Calibration | None  # None: normality was never learnt (video shorter than the warm-up)
    rows: list[ScoreRow] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def scores(self) -> np.ndarray:
        return np.array([r.score for r in self.rows], np.float64)

    def events_dict(self) -> dict[str, Any]:
        """The events JSON document."""
        cal = self.calibration
        return {"source": self.source, "mode": self.mode, "fps": self.fps, "frames": len(self.rows),
                "threshold": None if cal is None else cal.threshold,
                "low_threshold": None if cal is None else cal.low_threshold,
                "calibration": None if cal is None else cal.to_dict(), "events": [e.to_dict() for e in self.events],
                **({"info": self.info} if self.info else {})}


class HysteresisFlag:
    """Streaming twin of :func:`vidseq.models.anomaly.calibrate.hysteresis`."""

    def __init__(self, cal: Calibration) -> None:
        self.cal = cal
        self.on = False

    def __call__(self, score: float) -> bool:
        self.on = score >= self.cal.threshold or (self.on and score >= self.cal.low_threshold)
        return self.on


class VideoScorer:
    """Live scoring of frames one by one with a trained model.

    Args:
        model: the fitted :class:`AnomalyModel` (from :func:`vidseq.tasks.anomaly.task.load_anomaly_model`).
        calibration: its threshold pair.
        fps: the source frame rate (sets the temporal smoothing in frames).
        backbone: appearance backbone (built from the model config when the frame stream needs one).
        device: backbone device.
    """

    def __init__(self, model: AnomalyModel, calibration: Calibration, fps: float, *, backbone: Any = None,
                 device: str = "cpu") -> None:
        cfg = model.cfg
        if backbone is None and cfg.needs_appearance:
            backbone = make_backbone(cfg, device)
        if backbone is not None and model.frame is not None and backbone.feature_dim != model.appearance_dim:
            raise InputShapeError(f"backbone gives {backbone.feature_dim}-d features, the checkpoint expects "
                                  f"{model.appearance_dim}")
        self.model = model
        self.calibration = calibration
        self.fps = float(fps)
        self.features = FeatureComputer(cfg.motion, cfg.regions if cfg.needs_regions else None, backbone,
                                        make_crop_encoder(cfg, device), camera=pixel_compensation(cfg))
        self.stream: StreamScorer = model.scorer(fps)
        self.flag = HysteresisFlag(calibration)

    @property
    def delay_frames(self) -> int:
        return self.model.delay_frames(self.fps)

    def _rows(self, scored: list[ScoredFrame]) -> list[ScoreRow]:
        return [ScoreRow(s.frame_index, s.timestamp_s, s.score, self.flag(s.score)) for s in scored]

    def step(self, image: np.ndarray, frame_index: int, timestamp_s: float) -> list[ScoreRow]:
        """Feed one BGR frame; returns the rows that became final (frames ``delay_frames`` back)."""
        f = self.features.step(image, frame_index, timestamp_s)
        if f.appearance is not None and not np.isfinite(f.appearance).all():
            raise InputShapeError(f"frame {frame_index}: backbone features contain NaN/inf")
        return self._rows(self.stream.push(f))

    def finish(self) -> list[ScoreRow]:
        """Flush the last ``delay_frames`` rows at the end of the source."""
        return self._rows(self.stream.finish())


RowCallback = Callable[[ScoreRow], None]


def score_video(source: str | int | Path, model: AnomalyModel, calibration: Calibration, *,
                on_row: RowCallback | None = None, max_frames: int | None = None, device: str = "cpu",
                keep_rows: bool = True) -> VideoScores:
    """Score every frame of ``source`` (streaming; rows reach ``on_row`` as soon as they are final).

    Raises:
        EmptyVideoError: the source yields no frames.
        InputShapeError: features that do not fit the checkpoint (other video size/backbone) or hold NaN.
    """
    from vidseq.video.sources import open_source

    rows: list[ScoreRow] = []

    def emit(batch: list[ScoreRow]) -> None:
        for r in batch:
            if on_row is not None:
                on_row(r)
            if keep_rows:
                rows.append(r)

    with open_source(source, max_frames=max_frames) as src:
        fps = src.info.fps if src.info.fps and math.isfinite(src.info.fps) and src.info.fps > 0 else 25.0
        scorer = VideoScorer(model, calibration, fps, device=device)
        n = 0
        for frame in src:
            emit(scorer.step(frame.image, frame.frame_index, frame.timestamp_s))
            n += 1
        if n == 0:
            raise EmptyVideoError(f"no frames in {source}")
        emit(scorer.finish())
    result = VideoScores(str(source), fps, "trained", calibration, rows)
    if keep_rows:
        result.events = find_events(result.scores, calibration, fps=fps,
                                    frame_index=np.array([r.frame_index for r in rows]),
                                    timestamp_s=np.array([r.timestamp_s for r in rows]))
    return result


def score_video_unsupervised(source: str | int | Path, cfg: AnomalyConfig | None = None, *,
                             fit_seconds: float | None = None, on_row: RowCallback | None = None,
                             max_frames: int | None = None, settings: NormalitySettings | None = None,
                             camera: CameraConfig | None = None) -> VideoScores:
    """Score a video against its own normality (no trained model), by the rule ``process`` and ``monitor``
    use (:class:`~vidseq.tasks.anomaly.online.OnlineNormality`): the first ``fit_seconds`` (default
    ``anomaly.fit_s`` = :data:`~vidseq.tasks.anomaly.online.DEFAULT_FIT_S`) of stream time are learnt and not
    scored; a video shorter than that is not scored and ``info["not_scored"]`` says why.

    Args:
        camera: camera compensation (default: on, as in ``process`` without a model); ``CameraConfig(False,
            0, False, scene_cut=False)`` turns it off.
    """
    from vidseq.video.sources import open_source

    settings = settings or NormalitySettings()
    if fit_seconds is not None:
        settings = replace(settings, fit_s=float(fit_seconds))
    ucfg = unsupervised_config(None, cfg)
    rows: list[ScoreRow] = []
    with open_source(source, max_frames=max_frames) as src:
        fps = src.info.fps if src.info.fps and math.isfinite(src.info.fps) and src.info.fps > 0 else 25.0
        stride = FrameStride(fps, settings.analysis_fps)  # the same frames as process analyses
        online = OnlineNormality(ucfg, stride.fps, settings)
        online.keep_rows = True
        comp = FeatureComputer(ucfg.motion, ucfg.regions if ucfg.needs_regions else None,
                               camera=CameraConfig() if camera is None else camera, frame_step=stride.stride)

        def emit(batch: list[ScoredRow]) -> None:
            for s in batch:
                r = ScoreRow(s.frame_index, s.timestamp_s, s.score, s.is_anomaly)
                if on_row is not None:
                    on_row(r)
                rows.append(r)

        n = 0
        for frame in src:
            n += 1
            if not stride.due(frame.frame_index, frame.timestamp_s):
                continue
            f = comp.step(frame.image, frame.frame_index, frame.timestamp_s)
            online.working_size = tuple(comp.motion.working_size or (0, 0))  # type: ignore[assignment]
            emit(stride.expand(online.push(f, cut=comp.last_cut, view=comp.last_view)))
        if n == 0:
            raise EmptyVideoError(f"no frames in {source}")
        emit(stride.expand(online.finish()))
    info = {"streams": list(ucfg.streams), "normality": online.describe(), "analysis_fps": round(stride.fps, 3),
            "analysis_stride": stride.stride,
            "note": f"unsupervised: normality learnt from the first {settings.fit_s:g} s of this video (not scored), "
                    "no trained model"}
    if "not_scored" in online.fit_info:
        info["not_scored"] = online.fit_info["not_scored"]
    result = VideoScores(str(source), fps, f"{ONLINE_MODE}-{settings.fit_s:g}s", online.cal, rows, info=info)
    result.events = [Event(**{k: v for k, v in e.items() if k != "id"}) for e in online.events()]
    return result
