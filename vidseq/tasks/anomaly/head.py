"""The anomaly head inside ``vidseq process`` / ``vidseq monitor``: streaming scores, threshold, events.

With a checkpoint (``anomaly.model``) frames are scored by the trained model, with the threshold for the
false-alarm budget set from the stream's first ``fit_s`` seconds; the pixels are prepared as the model's clips
were when it was fitted (normalised and denoised for the default model, raw for one fitted on raw pixels), the
camera's own motion is removed, and after a scene cut a view the stream has not shown before learns its own
threshold before it can raise an alarm. A checkpoint saved from a stream (``anomaly.save_model`` / ``vidseq
monitor --save-model``) resumes that stream's normality.
Without one the head runs **unsupervised** through :class:`~vidseq.tasks.anomaly.online.OnlineNormality`:
it learns normality from the first ``anomaly.fit_s`` seconds of the source's own timestamps (progress
in logs, ``summary.json``, ``monitor_summary.json`` and on screen), sets the threshold from the
false-alarm budget ``anomaly.false_alarms_per_hour``, keeps learning from unflagged frames, and learns
again after a scene cut. Camera nuisances (exposure, noise, shake, pans, cuts) are compensated before
optical flow (:mod:`vidseq.features.camera`). Scores come out :attr:`delay_frames` frames late
(centred smoothing); the pipeline holds results back that long, so live and offline scores are the
same numbers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vidseq.config import setting
from vidseq.errors import ConfigError
from vidseq.features.camera import CameraConfig, ViewMemory
from vidseq.models.anomaly.calibrate import Calibration, find_events
from vidseq.models.anomaly.model import (
    AnomalyConfig,
    AnomalyModel,
    ScoredFrame,
)
from vidseq.tasks.anomaly.features import (
    FeatureComputer,
    make_backbone,
    make_crop_encoder,
    pixel_compensation,
)
from vidseq.tasks.anomaly.online import (
    DEFAULT_ANALYSIS_FPS,
    DEFAULT_FIT_S,
    ONLINE_MODE,
    UNSUPERVISED_STREAMS,
    VIEWS_KEPT,
    FrameStride,
    NormalitySettings,
    OnlineNormality,
    ScoredRow,
    event_causes,
    flag_and_cause,
    unsupervised_config,
)
from vidseq.tasks.stream import FrameResult, StreamContext

log = logging.getLogger(__name__)

FEEDBACK_POLL_S = 10.0  # stream seconds between looks for new false-alarm feedback (monitor)


@dataclass(frozen=True)
class AnomalySettings:
    """The ``anomaly`` section of ``configs/process.yaml`` / ``configs/monitor.yaml``.

    Attributes:
        enabled: run the head.
        model: checkpoint (trained, or a saved stream normality); None = unsupervised.
        fit_s: unsupervised warm-up, seconds of the source's timestamps.
        smooth_s: override the model's score smoothing (s); 0 = none, lowest latency.
        false_alarms_per_hour: false-alarm budget that sets the unsupervised threshold.
        adapt: keep learning normality from unflagged frames (bounded updates).
        update_every_s, memory_s, guard_s, learn_below, relearn_s: see :class:`NormalitySettings`.
        camera_compensation: ``auto`` (all of it without a trained model: photometric normalisation, denoising,
            the camera's own motion removed, scene cuts; with one, the pixels are prepared as its clips were
            when it was fitted, :attr:`AnomalyConfig.normalise_pixels`, and the camera's motion and cuts are
            handled as without), ``on`` (all of it) or ``off`` (none, no cut detection either).
        camera: the compensation settings (:class:`vidseq.features.camera.CameraConfig`).
        stream_threshold: with a trained model, set the threshold from the first ``fit_s`` seconds of this
            stream's own scores for the ``false_alarms_per_hour`` budget (never below the checkpoint's; those
            seconds are scored but raise no alarm): a model trained on other footage meets this camera's
            statistics.
        save_model: write the learnt normality here after each fit/update and at the end.
        background_updates: fit normality updates in a worker thread (see :class:`NormalitySettings`; the
            monitor turns it on).
        feedback_dir: run folder whose ``events.jsonl`` false-alarm feedback is learnt as normal (monitor).
        analysis_fps: without a trained model, a source at least twice this fast has every k-th frame analysed
            (``k = floor(fps / analysis_fps)``; a 25 fps source: every other frame; the frames between take the
            score before them); None = every frame. A trained model sees every frame, as it was trained
            (:class:`NormalitySettings`).
        streams: the unsupervised anomaly streams, each able to raise an alarm (``speed``, ``place``,
            ``direction``, ``tracks``: per tracked object; opt-in ``objects``); a trained model has its own.
    """

    enabled: bool = True
    model: str | None = None
    fit_s: float = setting(DEFAULT_FIT_S, gt=0.0)
    smooth_s: float | None = None
    false_alarms_per_hour: float = setting(1.0, gt=0.0)
    adapt: bool = True
    update_every_s: float = setting(60.0, gt=0.0)
    memory_s: float = setting(300.0, gt=0.0)
    guard_s: float = 5.0
    learn_below: float = 0.8
    relearn_s: float | None = None
    camera_compensation: str = "auto"
    camera: CameraConfig = field(default_factory=CameraConfig)
    stream_threshold: bool = True
    save_model: str | None = None
    background_updates: bool = False
    feedback_dir: str | None = None
    streams: tuple[str, ...] = UNSUPERVISED_STREAMS
    analysis_fps: float | None = DEFAULT_ANALYSIS_FPS

    def __post_init__(self) -> None:
        if self.camera_compensation not in ("auto", "on", "off"):
            raise ConfigError(f"anomaly.camera_compensation must be auto, on or off, got {self.camera_compensation!r}")
        if self.smooth_s is not None and self.smooth_s < 0:
            raise ConfigError(f"anomaly.smooth_s must be >= 0, got {self.smooth_s}")
        self.normality  # noqa: B018 - validates the durations (one line naming the key)
        unsupervised_config(streams=self.streams)  # validates the stream names

    @property
    def normality(self) -> NormalitySettings:
        return NormalitySettings(fit_s=self.fit_s, false_alarms_per_hour=self.false_alarms_per_hour, adapt=self.adapt,
                                 update_every_s=self.update_every_s, memory_s=self.memory_s, guard_s=self.guard_s,
                                 learn_below=self.learn_below, relearn_s=self.relearn_s,
                                 background_updates=self.background_updates, analysis_fps=self.analysis_fps)

    def compensation(self, model: AnomalyConfig | None = None) -> CameraConfig | None:
        """The camera compensation of a stream scored unsupervised (``model`` None) or by a trained model.

        ``auto`` with a trained model: the pixels go through what the model's clips went through when it was
        fitted (:func:`~vidseq.tasks.anomaly.features.pixel_compensation`: photometric normalisation and
        denoising for ``model.normalise_pixels``, else raw pixels), and the camera's own motion is removed (a
        static camera's flow is left exactly as it was) and scene cuts are seen in both cases.
        """
        if self.camera_compensation == "off":
            return None
        if self.camera_compensation == "on" or model is None:
            return self.camera
        fitted = pixel_compensation(model)
        camera = replace(self.camera, photometric=fitted is not None and fitted.photometric,
                         denoise=0.0 if fitted is None else fitted.denoise)
        return camera if camera.enabled else None


class AnomalyHead:
    """Per-frame anomaly scores inside the streaming pass (a :class:`~vidseq.tasks.stream.StreamHead`)."""

    name = "anomaly"

    def __init__(self, settings: AnomalySettings, fps: float, device: str = "cpu") -> None:
        # the unsupervised head analyses at least analysis_fps frames a second; its clock (fps) is the analysed
        # frames' (a trained model sees every frame, as it was fitted: set below)
        self.stride = FrameStride(fps, settings.analysis_fps)
        self.settings = settings
        self.fit_s = float(settings.fit_s)
        self.model: AnomalyModel | None = None
        self.cal: Calibration | None = None
        self.online: OnlineNormality | None = None
        self.model_path = settings.model
        trained = False
        if settings.model is not None:
            from vidseq.tasks.anomaly.task import load_anomaly_model

            model, cal, ckpt = load_anomaly_model(settings.model)
            if ckpt.get("extra", {}).get("mode") == ONLINE_MODE:
                self.online = OnlineNormality.load(settings.model, self.fps, settings.normality)
                if settings.smooth_s is not None:
                    self.online.model.cfg = replace(self.online.model.cfg, smooth_sigma_s=float(settings.smooth_s))
                    self.online.scorer = self.online.model.scorer(self.fps)
                cfg = self.online.cfg = self.online.model.cfg
                self.mode = f"unsupervised (normality restored from {settings.model}, still adapting)"
            else:
                self.model, self.cal, trained = model, cal, True
                self.stride = FrameStride(fps, None)
                if settings.smooth_s is not None:
                    self.model.cfg = replace(self.model.cfg, smooth_sigma_s=float(settings.smooth_s))
                cfg = self.model.cfg
                self.mode = "model"
        else:
            cfg = unsupervised_config(settings.smooth_s, streams=settings.streams)
            self.online = OnlineNormality(cfg, self.fps, settings.normality)
            self.mode = f"unsupervised (normality learnt from the first {self.fit_s:g} s of stream time)"
            log.warning("no anomaly model given: learning normality from the first %.0f s of the video", self.fit_s)
        self.cfg = cfg
        self.camera = settings.compensation(cfg if trained else None)
        backbone = make_backbone(cfg, device=device) if trained else None
        self.computer = FeatureComputer(cfg.motion, cfg.regions if cfg.needs_regions else None, backbone,
                                        make_crop_encoder(cfg, device) if trained else None, camera=self.camera,
                                        frame_step=self.stride.stride)
        self.scorer = self.model.scorer(self.fps) if self.model is not None else None
        self._on = False
        self.scored_index: list[int] = []
        self.scored_ts: list[float] = []
        self.scored: list[float] = []
        self._flags: list[bool] = []
        self._causes: list[str | None] = []
        self._calibrating = trained and settings.stream_threshold
        if self._calibrating:  # the stream threshold's tail fit: its import must not stall the stream later
            from vidseq.models.anomaly.threshold import preload

            preload()
        self.stream_calibration: dict[str, Any] | None = None
        self._checkpoint_cal = self.cal
        # this view's threshold learning: its scores, the stream seconds they cover, the last one's timestamp
        self._cal_scores: list[float] = []
        self._cal_linger: list[float] = []  # its raw linger scores (a model with the linger alarm)
        self._cal_s = 0.0
        # the trained model's linger alarm level: the checkpoint's until this stream's first fit_s seconds set it
        self.linger_level = self._checkpoint_linger
        self._cal_last_ts: float | None = None
        self.scene_cuts: list[dict[str, Any]] = []  # trained model (the unsupervised ones are in self.online)
        self._views = ViewMemory(VIEWS_KEPT)  # views left at a cut, with their thresholds (trained model)
        self._feedback_seen: set[str] = set()
        self._next_feedback_s = 0.0
        self._saved_at: tuple[int, str | None] | None = None

    @property
    def _checkpoint_linger(self) -> float:
        """The trained model's own linger level (inf: no linger alarm, or not measured)."""
        return float(self.model.linger_level) if self.model is not None and self.model.cfg.linger is not None \
            else math.inf

    @property
    def fps(self) -> float:
        """The head's clock: frames it analyses per second of stream time."""
        return self.stride.fps

    @property
    def threshold(self) -> float | None:
        if self.online is not None:
            return self.online.threshold
        return None if self.cal is None else self.cal.threshold

    @property
    def delay_frames(self) -> int:
        """Source frames a result waits for its score (analysed frames x the stride)."""
        if self.online is not None:  # nothing is held back while normality is being learnt (nothing is scored)
            if self.online.scorer is None:
                return 0
            return (self.online.cfg.speed.temporal // 2 + len(_kernel(self.online.cfg, self.fps)) // 2) \
                * self.stride.stride
        return 0 if self.model is None else self.model.delay_frames(self.fps)

    @property
    def lag_frames(self) -> int:
        """Frames this head may run behind the detector (``heads_lag_frames: null``): it analyses every k-th
        frame, whose work then spreads over the k - 1 frames after it; twice that leaves room for an uneven
        frame (a refit, a cut). 0 when every frame is analysed: nothing to spread, no frame held back."""
        return 2 * (self.stride.stride - 1)

    def describe(self) -> dict[str, Any]:
        streams = list(self.cfg.streams) + (["linger"] if self.cfg.linger is not None else [])
        d: dict[str, Any] = {"mode": self.mode, "model": self.model_path, "streams": streams,
                             "threshold": self.threshold, "delay_frames": self.delay_frames,
                             "analysis_fps": round(self.fps, 3), "analysis_stride": self.stride.stride,
                             "camera_compensation": None if self.camera is None else _camera_dict(self.camera)}
        if self.online is not None:
            d["normality"] = self.online.describe()
            d["calibration"] = None if self.online.cal is None else self.online.cal.to_dict()
            if "not_scored" in self.online.fit_info:
                d["not_scored"] = self.online.fit_info["not_scored"]
        else:
            d["calibration"] = None if self.cal is None else self.cal.to_dict()
            d["scene_cuts"] = list(self.scene_cuts)
            if self.settings.stream_threshold:
                d["stream_threshold"] = self.stream_calibration or {
                    "state": f"learning this stream's threshold: scored, no alarms for the first {self.fit_s:g} s"}
        return d

    def status_text(self) -> str:
        if self.online is not None:
            return self.online.status_text()
        if self._calibrating and self._cal_scores:
            return f"learning this camera's threshold: {self._cal_s:.0f}/{self.fit_s:g} s"
        return "anomaly: warming up"

    def step(self, result: FrameResult, ctx: StreamContext) -> None:
        f = result.frame
        if not self.stride.due(f.frame_index, f.timestamp_s):
            return  # takes the score of the analysed frame before it (FrameStride.expand)
        left = self.computer.last_view  # the last frame before this one (the view a cut leaves)
        dropped = None if f.previous is None else (f.previous.image, f.previous.frame_index)
        feats = self.computer.step(f.image, f.frame_index, f.timestamp_s, previous=dropped)
        if self.online is not None:
            self.online.working_size = tuple(self.computer.motion.working_size or (0, 0))  # type: ignore[assignment]
            before = (self.online.state, self.online.updates)
            self._assign_rows(self.stride.expand(self.online.push(feats, cut=self.computer.last_cut,
                                                                  view=self.computer.last_view)), ctx)
            if (self.online.state, self.online.updates) != before and self.online.state == "scoring":
                self._save()
            if self.settings.feedback_dir is not None and f.timestamp_s >= self._next_feedback_s:
                self._next_feedback_s = f.timestamp_s + FEEDBACK_POLL_S
                self._learn_feedback()
            return
        assert self.scorer is not None
        if self.computer.last_cut:
            self._scene_cut(feats.frame_index, feats.timestamp_s, left, ctx)
        self._assign(self.scorer.push(feats), ctx)

    def _scene_cut(self, frame_index: int, timestamp_s: float, left: np.ndarray | None, ctx: StreamContext) -> None:
        """Trained model, scene cut: the frames before it are scored without alarms (their windows would span
        the cut), the view left is remembered with its threshold (or its threshold learning so far), and the
        new view gets back the state of the same view seen before, or learns its own threshold for ``fit_s``
        seconds (scored, no alarms)."""
        assert self.scorer is not None and self.model is not None
        for sf in self.scorer.finish():
            self._record(sf.frame_index, sf.timestamp_s, float(sf.score), False, ctx)
        self.scorer = self.model.scorer(self.fps)
        self._on = False
        self._cal_last_ts = None  # the time across the cut is no view's
        cut = {"timestamp_s": round(float(timestamp_s), 3), "frame_index": int(frame_index)}
        if not self.settings.stream_threshold:
            self.scene_cuts.append({**cut, "action": "open event closed (checkpoint threshold kept)"})
            log.warning("anomaly: scene cut at %.1f s", timestamp_s)
            return
        state = ("cal", "stream_calibration", "_calibrating", "_cal_scores", "_cal_s", "_cal_linger", "linger_level")
        if left is not None:
            self._views.remember(left, {k: getattr(self, k) for k in state}, complete=not self._calibrating)
        view = self.computer.last_view
        match = self._views.recall(view) if view is not None else None
        if match is not None:
            for k in state:
                setattr(self, k, match[0][k])
            action = (f"learning this view's threshold (resumed at {self._cal_s:.0f}/{self.fit_s:g} s)"
                      if self._calibrating else "threshold restored (this view was calibrated before)")
        else:
            self.cal, self.stream_calibration, self._calibrating = self._checkpoint_cal, None, True
            self._cal_scores, self._cal_s, self._cal_linger = [], 0.0, []
            self.linger_level = self._checkpoint_linger
            action = "learning this view's threshold"
        self.scene_cuts.append({**cut, "action": action})
        log.warning("anomaly: scene cut at %.1f s: %s", timestamp_s, action)

    def finish(self, ctx: StreamContext) -> None:
        if self.online is not None:
            self._assign_rows(self.stride.expand(self.online.finish()), ctx)
            self._save()
            return
        if self.scorer is not None:
            self._assign(self.scorer.finish(), ctx)

    def _save(self) -> None:
        if self.settings.save_model is None or self.online is None or self.online.model is None:
            return
        key = (self.online.updates, self.online.fitted_wall)
        if key != self._saved_at:
            self.online.save(self.settings.save_model)
            self._saved_at = key
            log.info("anomaly: normality saved to %s", self.settings.save_model)

    def _learn_feedback(self) -> None:
        from vidseq.tasks.anomaly.feedback import false_alarm_features

        assert self.online is not None and self.settings.feedback_dir is not None
        for key, cf in false_alarm_features(self.settings.feedback_dir, self.cfg, camera=self.camera,
                                            skip=self._feedback_seen, analysis_fps=self.settings.analysis_fps):
            self._feedback_seen.add(key)
            self.online.add_normal(cf)
            log.info("anomaly: learning false alarm %s (%d frames) as normal", key, len(cf))

    def _assign_rows(self, rows: list[ScoredRow], ctx: StreamContext) -> None:
        for row in rows:
            self._record(row.frame_index, row.timestamp_s, row.score, row.is_anomaly, ctx, row.cause)

    def _assign(self, scored: list[ScoredFrame], ctx: StreamContext) -> None:
        assert self.cal is not None
        for sf in scored:
            s = float(sf.score)
            if self._calibrating:
                if self._cal_last_ts is not None:
                    self._cal_s += sf.timestamp_s - self._cal_last_ts
                self._cal_last_ts = sf.timestamp_s
                self._cal_scores.append(s)
                if sf.linger is not None:
                    self._cal_linger.append(sf.linger)
                self._record(sf.frame_index, sf.timestamp_s, s, False, ctx, sf.cause)
                if self._cal_s >= self.fit_s - 1e-9:
                    self._set_stream_threshold(sf.timestamp_s)
                continue
            self._on = s >= self.cal.threshold or (self._on and s >= self.cal.low_threshold)
            flag, cause = flag_and_cause(sf, self._on, self.linger_level)
            # a trained model's track evidence, fitted on many minutes of the camera's tracks (docs/alarms.md,
            # "Stop 37"): the alert rule trusts a shorter run of it
            self._record(sf.frame_index, sf.timestamp_s, s, flag, ctx, cause, integrated=cause == "tracks")

    def _set_stream_threshold(self, now_s: float) -> None:
        """Trained model: threshold pair for this stream's budget, from its first fit_s seconds of scores."""
        from vidseq.models.anomaly.threshold import budget_calibration, sample_rate

        assert self.cal is not None
        self._calibrating = False
        rate = sample_rate(len(self._cal_scores) - 1, self._cal_s, self.fps)  # a live reader's drops: below fps
        scores = np.array(self._cal_scores, np.float64)
        scores = scores[np.isfinite(scores)]
        if len(scores) < 10:
            return
        cal, tail = budget_calibration(scores, rate, self.settings.false_alarms_per_hour,
                                       min_duration_s=self.cal.min_duration_s, merge_gap_s=self.cal.merge_gap_s)
        before = self.cal.threshold
        self.cal = replace(self.cal, threshold=max(before, cal.threshold),
                           low_threshold=max(self.cal.low_threshold, cal.low_threshold))
        self.stream_calibration = {"checkpoint_threshold": before, "budget_threshold": cal.threshold,
                                   "threshold": self.cal.threshold, "fitted_at_s": round(now_s, 3),
                                   "frames": len(scores), "tail": tail.to_dict()}
        lcfg = self.cfg.linger
        if lcfg is not None and self._cal_linger:
            # the level of this stream's first fit_s seconds, as unsupervised scoring sets it (the checkpoint's,
            # from clips of other hours and crowds, is what a model without a stream warm-up reads)
            self.linger_level = lcfg.level(np.array(self._cal_linger, np.float64))
            self.stream_calibration.update(checkpoint_linger_level=_finite(self._checkpoint_linger),
                                           linger_level=_finite(self.linger_level))
        log.info("anomaly: threshold for this stream %.3f (checkpoint %.3f, budget %g false alarms/h)",
                 self.cal.threshold, before, self.settings.false_alarms_per_hour)

    def _record(self, frame_index: int, timestamp_s: float, score: float, flag: bool, ctx: StreamContext,
                cause: str | None = None, integrated: bool = False) -> None:
        self.scored_index.append(frame_index)
        self._causes.append(cause)
        self.scored_ts.append(timestamp_s)
        self.scored.append(score)
        self._flags.append(flag)
        r = ctx.pending(frame_index)
        if r is not None:
            r.anomaly_score = score
            r.is_anomaly = flag
            r.anomaly_cause = cause
            r.anomaly_integrated = integrated
            r.anomaly_ready = True

    def events(self) -> list[dict[str, Any]]:
        if self.online is not None:
            return self.online.events()
        if self.cal is None or not self.scored:
            return []
        evs = find_events(np.array(self.scored), self.cal, fps=self.fps, frame_index=np.array(self.scored_index),
                          timestamp_s=np.array(self.scored_ts), flags=np.array(self._flags))
        return event_causes([{"id": i + 1, **e.to_dict()} for i, e in enumerate(evs)], np.array(self.scored_index),
                            self._causes)


def _finite(x: float) -> float | None:
    return round(float(x), 4) if math.isfinite(x) else None


def _kernel(cfg: AnomalyConfig, fps: float) -> np.ndarray:
    from vidseq.models.anomaly.model import gaussian_kernel

    return gaussian_kernel(cfg.smooth_sigma_s * fps, cfg.smooth_truncate)


def _camera_dict(cam: CameraConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(cam)


def make_head(cfg: Any, ctx: StreamContext) -> AnomalyHead | None:
    """Factory of :data:`vidseq.registry.STREAM_HEADS` (``cfg`` is a ProcessConfig: its ``anomaly`` section)."""
    if not cfg.anomaly.enabled:
        return None
    return AnomalyHead(cfg.anomaly, ctx.fps, device=ctx.device)


__all__ = ["AnomalyHead", "AnomalySettings", "make_head"]
