"""The anomaly head inside ``vidseq process`` / ``vidseq monitor``: streaming scores, threshold, events.

With a checkpoint (``anomaly.model``) frames are scored by the trained model with its stored threshold.
Without one the head runs **unsupervised**: it treats the first ``anomaly.fit_s`` seconds as normal, fits
the self-referential model of :func:`~vidseq.models.anomaly.fit.fit_unsupervised` on them (stated in logs,
``summary.json`` and on screen), then scores every later frame. Scores come out
:attr:`delay_frames` frames late (centred smoothing); the pipeline holds results back that long, so live and
offline scores are the same numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vidseq.config import setting
from vidseq.models.anomaly.calibrate import Calibration, find_events
from vidseq.models.anomaly.clip import ClipFeatures
from vidseq.models.anomaly.model import (
    AnomalyConfig,
    AnomalyModel,
    FrameFeatures,
    ScoredFrame,
)
from vidseq.tasks.anomaly.features import (
    FeatureComputer,
    make_backbone,
    make_crop_encoder,
)
from vidseq.tasks.stream import FrameResult, StreamContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnomalySettings:
    enabled: bool = True
    model: str | None = None  # checkpoint; None = unsupervised: learn normality from the first fit_s seconds
    fit_s: float = setting(5.0, gt=0.0)  # unsupervised warm-up (seconds of video treated as normal)
    smooth_s: float | None = None  # override the model's score smoothing (s); 0 = none, lowest latency


class AnomalyHead:
    """Per-frame anomaly scores inside the streaming pass (a :class:`~vidseq.tasks.stream.StreamHead`)."""

    name = "anomaly"

    def __init__(self, model_path: str | None, fit_s: float, fps: float, device: str = "cpu",
                 smooth_s: float | None = None) -> None:
        self.fps = float(fps)
        self.fit_s = float(fit_s)
        self.model: AnomalyModel | None = None
        self.cal: Calibration | None = None
        self.model_path = model_path
        if model_path is not None:
            from vidseq.tasks.anomaly.task import load_anomaly_model

            self.model, self.cal, _ = load_anomaly_model(model_path)
            if smooth_s is not None:
                self.model.cfg = replace(self.model.cfg, smooth_sigma_s=float(smooth_s))
            cfg = self.model.cfg
            self.mode = "model"
        else:
            cfg = AnomalyConfig() if smooth_s is None else AnomalyConfig(smooth_sigma_s=float(smooth_s))
            self.mode = f"unsupervised (normality learnt from the first {self.fit_s:g} s)"
            log.warning("no anomaly model given: learning normality from the first %.1f s of the video", self.fit_s)
        self.cfg = cfg
        backbone = make_backbone(cfg, device=device) if self.model is not None else None
        self.computer = FeatureComputer(cfg.motion, cfg.regions if (cfg.needs_regions or self.model is None) else None,
                                        backbone, make_crop_encoder(cfg, device) if self.model is not None else None)
        self.scorer = self.model.scorer(self.fps) if self.model is not None else None
        self._warmup: list[FrameFeatures] = []
        self._on = False
        self.scored_index: list[int] = []
        self.scored_ts: list[float] = []
        self.scored: list[float] = []

    @property
    def threshold(self) -> float | None:
        return None if self.cal is None else self.cal.threshold

    @property
    def delay_frames(self) -> int:
        return 0 if self.model is None else self.model.delay_frames(self.fps)

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "model": self.model_path, "streams": list(self.cfg.streams),
                "threshold": self.threshold, "delay_frames": self.delay_frames,
                "calibration": None if self.cal is None else self.cal.to_dict()}

    def status_text(self) -> str:
        if self.model is None:
            return f"learning normality: {len(self._warmup) / self.fps:.0f}/{self.fit_s:g} s"
        return "anomaly: warming up"

    def step(self, result: FrameResult, ctx: StreamContext) -> None:
        f = result.frame
        feats = self.computer.step(f.image, f.frame_index, f.timestamp_s)
        if self.scorer is None:
            self._warmup.append(feats)
            if len(self._warmup) >= max(2, round(self.fit_s * self.fps)):
                self._fit_unsupervised()
            return
        self._assign(self.scorer.push(feats), ctx)

    def finish(self, ctx: StreamContext) -> None:
        if self.scorer is None and len(self._warmup) >= 2:
            log.warning("video shorter than the %.1f s normality warm-up: fitting on all %d frames and scoring "
                        "nothing", self.fit_s, len(self._warmup))
        if self.scorer is not None:
            self._assign(self.scorer.finish(), ctx)

    def _fit_unsupervised(self) -> None:
        from vidseq.models.anomaly.fit import fit_unsupervised

        fr = self._warmup
        cf = ClipFeatures.from_frames("warmup", self.fps, fr, tuple(self.computer.motion.working_size or (0, 0)))
        self.model, self.cal, info = fit_unsupervised(cf, self.cfg, None)
        self.mode = f"unsupervised (normality learnt from the first {len(fr) / self.fps:.1f} s of this video)"
        log.info("anomaly: fitted normality on %d frames; threshold %.3f", len(fr), self.cal.threshold)
        self.scorer = self.model.scorer(self.fps)
        self._warmup = []

    def _assign(self, scored: list[ScoredFrame], ctx: StreamContext) -> None:
        assert self.cal is not None
        for sf in scored:
            s = float(sf.score)
            self._on = s >= self.cal.threshold or (self._on and s >= self.cal.low_threshold)
            self.scored_index.append(sf.frame_index)
            self.scored_ts.append(sf.timestamp_s)
            self.scored.append(s)
            r = ctx.pending(sf.frame_index)
            if r is not None:
                r.anomaly_score = s
                r.is_anomaly = self._on
                r.anomaly_ready = True

    def events(self) -> list[dict[str, Any]]:
        if self.cal is None or not self.scored:
            return []
        evs = find_events(np.array(self.scored), self.cal, fps=self.fps, frame_index=np.array(self.scored_index),
                          timestamp_s=np.array(self.scored_ts))
        return [e.to_dict() for e in evs]


def make_head(cfg: Any, ctx: StreamContext) -> AnomalyHead | None:
    """Factory of :data:`vidseq.registry.STREAM_HEADS` (``cfg`` is a ProcessConfig: its ``anomaly`` section)."""
    if not cfg.anomaly.enabled:
        return None
    return AnomalyHead(cfg.anomaly.model, cfg.anomaly.fit_s, ctx.fps, device=ctx.device,
                       smooth_s=cfg.anomaly.smooth_s)
