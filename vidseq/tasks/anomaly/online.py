"""Normality learnt on the stream itself: warm-up in stream seconds, budget threshold, bounded updates.

:class:`OnlineNormality` is the one rule behind every unsupervised anomaly score (``vidseq process``,
``vidseq monitor`` and ``vidseq score --unsupervised``):

1. **Warm-up in stream time.** Frames are collected until their timestamps span ``fit_s`` seconds of
   the source's own clock (not processed frames: a live reader that drops frames still learns in
   ``fit_s`` seconds of video). Progress is :meth:`status_text` ("learning 42/120 s") and
   :meth:`describe` (``summary.json`` / ``monitor_summary.json``). Frames of the warm-up are not scored.
2. **Fit.** The self-referential model (:func:`vidseq.models.anomaly.fit.fit_parts`) is fitted on the
   warm-up; its statistics and threshold come from *out-of-fold* scores (the warm-up is cut into four
   time chunks; chunks 0+2 are scored by a model fitted on 1+3 and the other way round), so the
   threshold is not set on scores the model has memorised. The threshold meets a false-alarm budget
   in events per hour (:mod:`vidseq.models.anomaly.threshold`: GPD tail plus margin).
3. **Bounded updates.** Frames that were not flagged, scored under ``learn_below`` of the threshold and
   are at least ``guard_s`` seconds away from any flagged frame, go into a normal memory (at most
   ``memory_s`` seconds, oldest dropped). Every ``update_every_s`` seconds the model is refitted on the
   first warm-up plus that memory (the streams' statistics and scales); the threshold, in the fused
   score's standardised units, stays where the warm-up's budget put it (``max_threshold_change``, a
   factor per update, default 1), and each stream's scale moves by at most ``max_scale_change`` an update:
   slow drift is learnt, a real anomaly is never learnt (its frames are flagged, or come close to the
   threshold) and cannot move the threshold, and one rare burst in the memory's out-of-fold scores cannot
   make a stream six times less sensitive in one update (which then let the next anomaly through unflagged,
   into the memory).
4. **Scene cuts** (features computed with :class:`vidseq.features.camera.CameraConfig` ``scene_cut``):
   an open event is closed without an alarm, the memory is cleared and normality is learnt again
   (``relearn_s``); each cut is listed in :meth:`describe`. When the frame after a cut shows a view seen
   before (:func:`vidseq.features.camera.same_view` with the last frame of a view whose normality was learnt:
   one camera motion explains the corners tracked between them; a multiplexed feed, a PTZ camera back at a
   preset), that view's normality is restored at once instead (the last :data:`VIEWS_KEPT` views are kept).
5. **Feedback / persistence.** :meth:`add_normal` adds frames known to be normal (a false alarm marked
   by the user) for the next update; :meth:`save` / :meth:`load` keep a camera's normality across
   restarts (a checkpoint: tensors only, loaded with ``weights_only=True``).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vidseq.errors import CheckpointError, ConfigError, DatasetError, InputShapeError
from vidseq.features.camera import ViewMemory
from vidseq.models.anomaly.calibrate import Calibration, find_events
from vidseq.models.anomaly.clip import ClipFeatures
from vidseq.models.anomaly.fit import ClipScores, fit_parts, score_clip
from vidseq.models.anomaly.model import (
    MODEL_NAME,
    AnomalyConfig,
    AnomalyModel,
    FrameFeatures,
    LingerConfig,
    ScoredFrame,
    StreamScorer,
    smooth_scores,
)
from vidseq.models.anomaly.threshold import Tail, TailConfig, budget_calibration, sample_rate
from vidseq.models.anomaly.threshold import preload as preload_threshold

log = logging.getLogger(__name__)

DEFAULT_ANALYSIS_FPS = 12.5  # see NormalitySettings.analysis_fps
DEFAULT_FIT_S = 60.0  # the one warm-up default of process, monitor and score --unsupervised (measured: docs/alarms.md)
ONLINE_MODE = "unsupervised-online"
FOLD_CHUNKS = 4


VIEWS_KEPT = 4  # learnt views remembered across scene cuts

MIN_WARMUP_FRAMES = 12
"""Frames a warm-up needs besides its seconds (the threshold's tail fit needs a few normal scores)."""
MAX_SEGMENT_GAP_S = 1.0
"""Consecutive scored frames further apart than this (in stream time; at least 1.5 frame periods) start a new
segment of normal memory: the source stalled. Closer ones are one segment, however many frames a live reader
dropped between them."""
WHOLE_VIEW = 0.95
"""A frame showing less of the camera's home view than this (a zoomed or panned PTZ camera, registered to its
home view) is scored but never becomes normal memory: the part it does not show would be learnt as still."""


@dataclass(frozen=True)
class NormalitySettings:
    """How normality is learnt on the stream (keys of the ``anomaly`` section of process/monitor configs).

    Attributes:
        fit_s: warm-up, seconds of the source's timestamps.
        false_alarms_per_hour: false-alarm budget that sets the threshold.
        adapt: keep learning from unflagged frames.
        update_every_s: stream seconds between updates.
        memory_s: normal footage (stream seconds) kept for updates, beyond the first warm-up.
        guard_s: frames this close to a flagged frame are never learnt.
        learn_below: frames scoring at or above this share of the threshold are never learnt either (1.0: only
            flagged ones): an anomaly that stays just under the threshold (a walker off the paths) is not taught
            to the next update as normal, which would lower its score, and its like's, for good.
        max_threshold_change: an update moves the threshold by at most this factor either way. The default, 1,
            keeps the threshold the warm-up set for the budget: an update re-learns each stream's normal
            statistics and the scales that standardise its scores (which is what follows drift), while the
            fused threshold, in those standardised units, stays put. A threshold re-estimated from each
            update's memory followed that memory's luck instead (on the alarm benchmark's dev streams, a pan
            left out of the memory raised it from 1.15 to 1.62 and hid the next three events). An update
            with frames marked as a false alarm may move it by up to :data:`FEEDBACK_THRESHOLD_CHANGE`.
        max_scale_change: an update moves each stream's scale (what standardises its scores) by at most this
            factor either way from the scale of the normality it replaces; None: unbounded. Drift (daylight,
            busier hours) moves scales by a little each update and is followed; a jump is what a handful of
            frames in the memory's out-of-fold scores does (a walker on a rare path, scored by a model that
            never saw that path, or an anomaly that stayed under the threshold): on the alarm benchmark's dev
            streams one such walker made the ``tracks`` scale six times larger in one update, and the next
            wrong-way walker scored a fifth of the threshold (docs/alarms.md, "Stop 27"). An update with
            frames marked as a false alarm is not bounded (they are normal whatever their scores: the stream
            that raised them is made as much less sensitive as they need).
        relearn_s: warm-up after a scene cut (None: ``fit_s``).
        min_duration_s, merge_gap_s: events shorter than this are dropped / closer than this merged.
        stream_budgets: give every stream its own share of the budget: each stream's scale is set so that its
            own threshold for ``false_alarms_per_hour / streams`` (tail fit of its out-of-fold scores) lands at
            the same fused value, so a stream whose normal scores have a light tail (where and which way each
            tracked object walks) is not held to a threshold that another stream's heavy tail set. A stream is
            never made more sensitive than its own warm-up's 99.5th percentile.
        background_updates: fit each update in a worker thread while the current normality goes on scoring,
            and switch to the new one on the first frame after it is ready (a live monitor: a refit over
            minutes of memory takes seconds, which would otherwise freeze the stream). Off by default: offline
            runs switch on the exact frame, so their results do not depend on the machine's speed.
        analysis_fps: the unsupervised head analyses every k-th frame of a source at least twice this fast,
            ``k = floor(fps / analysis_fps)``, so never fewer than ``analysis_fps`` frames a second of stream
            time (optical flow, regions, scores); the frames between take the score of the analysed frame
            before them (:class:`FrameStride`). The flow is the head's largest cost. None = every frame. The
            default (12.5) leaves sources under 25 fps untouched (the streams were developed at 10 fps) and
            halves the work at 25-30 fps. Fewer analysed frames than that lose events: at 5 a second on the
            alarm benchmark's 10 fps streams, fast objects move too far between frames for the flow
            (docs/runtime.md).
    """

    fit_s: float = DEFAULT_FIT_S
    false_alarms_per_hour: float = 1.0
    adapt: bool = True
    update_every_s: float = 60.0
    memory_s: float = 300.0
    guard_s: float = 5.0
    learn_below: float = 0.8
    max_threshold_change: float = 1.0
    max_scale_change: float | None = 1.5
    relearn_s: float | None = None
    min_duration_s: float = 0.5
    merge_gap_s: float = 0.3
    stream_budgets: bool = True
    background_updates: bool = False
    analysis_fps: float | None = DEFAULT_ANALYSIS_FPS

    def __post_init__(self) -> None:
        if self.analysis_fps is not None and not (self.analysis_fps > 0 and math.isfinite(self.analysis_fps)):
            raise ConfigError(f"anomaly.analysis_fps must be > 0 or null (every frame), got {self.analysis_fps}")
        for key in ("fit_s", "false_alarms_per_hour", "update_every_s", "memory_s"):
            v = getattr(self, key)
            if not v > 0:
                raise ConfigError(f"anomaly.{key} must be > 0, got {v}")
        if self.relearn_s is not None and not self.relearn_s > 0:
            raise ConfigError(f"anomaly.relearn_s must be > 0, got {self.relearn_s}")
        if self.guard_s < 0 or self.min_duration_s < 0 or self.merge_gap_s < 0:
            raise ConfigError("anomaly.guard_s, min_duration_s and merge_gap_s must be >= 0")
        if not 0 < self.learn_below <= 1:
            raise ConfigError(f"anomaly.learn_below must be in (0, 1], got {self.learn_below}")
        if self.max_threshold_change < 1:
            raise ConfigError(f"anomaly.max_threshold_change must be >= 1, got {self.max_threshold_change}")
        if self.max_scale_change is not None and not (self.max_scale_change >= 1
                                                      and math.isfinite(self.max_scale_change)):
            raise ConfigError(f"anomaly.max_scale_change must be >= 1 or null, got {self.max_scale_change}")


FEEDBACK_THRESHOLD_CHANGE = 1.25
"""An update that learns frames the user marked as a false alarm (:meth:`OnlineNormality.add_normal`) may move
the threshold by up to this factor, even when ``max_threshold_change`` keeps it fixed otherwise."""


UNSUPERVISED_STREAMS: tuple[str, ...] = ("speed", "place", "direction", "tracks", "linger")
"""Streams of unsupervised scoring: how fast (speed), where (place) and which way (direction) things move
for their place, where and which way each tracked object walks (tracks), and fast motion that stays in one
place (linger). Chosen on the alarm benchmark's dev seeds (docs/alarms.md); the first four are fused by their
max after quantile standardisation and a share of the budget each (:attr:`NormalitySettings.stream_budgets`),
so each stream alone can raise an alarm; ``linger`` alarms by itself at its own level
(:class:`~vidseq.models.anomaly.model.LingerConfig`, docs/alarms.md "Stop 31")."""


OPTIONAL_UNSUPERVISED_STREAMS: tuple[str, ...] = ("objects",)

UNSUPERVISED_TRACK_ACCUMULATE = 2.0
"""``tracks.accumulate`` of unsupervised scoring (:class:`vidseq.models.anomaly.tracks.TrackStreamConfig`): a
track's score is its windowed mean evidence plus its evidence above 2 accumulated over its life, so a walker off
the paths or against the traffic keeps rising while it is tracked, even where its track is measured badly for
part of the way. Chosen on the alarm benchmark's 16 dev streams (docs/alarms.md, "Stop 25")."""

UNSUPERVISED_TRACK_MIN_COVER = 0.5
"""``tracks.min_cover`` of unsupervised scoring where the config leaves it unset (a fitted model then keeps
:data:`~vidseq.models.anomaly.tracks.FITTED_MIN_COVER`, 0.7): a track counts when its regions were found in half
the frames of its window. A small walker far from the camera, or one whose region merges with another's for a few
frames, is found in fewer than 70 % of them and weighed nothing, however long it was tracked. Chosen on the alarm
benchmark's 24 dev streams, where it found more events with fewer false ones (docs/alarms.md, "Stop 28")."""


def unsupervised_config(smooth_s: float | None = None, base: AnomalyConfig | None = None,
                        streams: Sequence[str] | None = None) -> AnomalyConfig:
    """The model config of unsupervised scoring: ``streams`` (default :data:`UNSUPERVISED_STREAMS`, plus
    ``objects`` / ``tracks`` when ``base`` uses them) with ``base``'s motion, stream and smoothing settings; max
    fusion of quantile-standardised streams."""
    cfg = base or AnomalyConfig()
    if streams is None:
        streams = UNSUPERVISED_STREAMS + tuple(s for s in OPTIONAL_UNSUPERVISED_STREAMS if s in cfg.streams)
    streams = tuple(dict.fromkeys(streams))
    allowed = UNSUPERVISED_STREAMS + OPTIONAL_UNSUPERVISED_STREAMS
    bad = [s for s in streams if s not in allowed]
    if bad or not [s for s in streams if s != "linger"]:
        raise ConfigError(f"anomaly.streams: unsupervised streams are {', '.join(allowed)} (linger with at least "
                          f"one other); got {list(streams)}")
    linger = (cfg.linger or LingerConfig()) if "linger" in streams else None
    streams = tuple(s for s in streams if s != "linger")
    cfg = replace(cfg, streams=streams, weights=(), fusion="max", standardise="quantile", linger=linger)
    if "tracks" in streams:  # unsupervised values where the config leaves the fitted model's defaults
        t = cfg.tracks
        cfg = replace(cfg, tracks=replace(
            t, accumulate=UNSUPERVISED_TRACK_ACCUMULATE if t.accumulate is None else t.accumulate,
            min_cover=UNSUPERVISED_TRACK_MIN_COVER if t.min_cover is None else t.min_cover))
    if "tracks" in streams and "objects" not in streams:
        # the tracks stream follows what moves in the camera-compensated flow; background subtraction
        # (the objects stream's regions) also finds everything a shake or an exposure jump changes
        cfg = replace(cfg, regions=replace(cfg.regions, method="flow"))
    return cfg if smooth_s is None else replace(cfg, smooth_sigma_s=float(smooth_s))


class FrameStride:
    """Which frames of a ``fps`` source the head analyses at most ``analysis_fps`` times a stream second, and
    the rows of the frames it skips.

    Every ``stride``-th frame by index is analysed (a live source that dropped frames has its next frame
    analysed once ``stride`` indices have passed). :meth:`due` says whether a frame is analysed and notes
    the skipped ones; :meth:`expand` returns the head's rows with each analysed frame's row repeated for the
    frames skipped after it (own index and timestamp, same score and flag). The head's own clock is
    :attr:`fps` (``fps / stride``): its windows and smoothing stay in seconds.
    """

    KEPT = 256  # analysed frames whose skipped followers are remembered (warm-up frames never get a row)

    def __init__(self, fps: float, analysis_fps: float | None) -> None:
        self.stride = 1 if analysis_fps is None else max(1, int(float(fps) / float(analysis_fps) + 1e-9))
        self.fps = float(fps) / self.stride
        self._last: int | None = None
        self._followers: dict[int, list[tuple[int, float]]] = {}

    def due(self, frame_index: int, timestamp_s: float) -> bool:
        if self._last is not None and 0 < frame_index - self._last < self.stride:
            self._followers.setdefault(self._last, []).append((int(frame_index), float(timestamp_s)))
            return False
        self._last = int(frame_index)
        while len(self._followers) > self.KEPT:  # the oldest first (insertion order)
            del self._followers[next(iter(self._followers))]
        return True

    def expand(self, rows: list[ScoredRow]) -> list[ScoredRow]:
        if self.stride == 1:
            return rows
        out: list[ScoredRow] = []
        for r in rows:
            out.append(r)
            out.extend(replace(r, frame_index=i, timestamp_s=t) for i, t in self._followers.pop(r.frame_index, ()))
        return out


@dataclass
class ScoredRow:
    """A final score: the frame, its score and whether it is flagged (threshold with hysteresis)."""

    frame_index: int
    timestamp_s: float
    score: float
    is_anomaly: bool
    cause: str | None = None  # the stream the frame's score came from (highest weighted z)


def event_causes(events: Sequence[dict[str, Any]], frame_index: np.ndarray,
                 causes: Sequence[str | None]) -> list[dict[str, Any]]:
    """``events`` with ``cause``: the stream that drove most of each event's frames (None when unknown)."""
    from collections import Counter

    idx = np.asarray(frame_index)
    out = []
    for e in events:
        sel = np.flatnonzero((idx >= e["start_frame"]) & (idx <= e["end_frame"]))
        named = Counter(causes[i] for i in sel if causes[i] is not None)
        out.append({**e, "cause": named.most_common(1)[0][0] if named else None})
    return out


def _final_scores(model: AnomalyModel, clips: Sequence[ClipFeatures]) -> np.ndarray:
    """Fused, smoothed scores of ``clips`` with the model's current statistics, concatenated."""
    out = []
    for cf in clips:
        s = score_clip(model, cf, normalise=True).arrays["fused"]
        out.append(smooth_scores(s, model.kernel(cf.fps)))
    return np.concatenate(out) if out else np.zeros(0)


def linger_scores(model: AnomalyModel, cf: ClipFeatures, *, hold: bool = True) -> np.ndarray:
    """Raw linger scores of a whole clip at once, equal to the streaming scorer's
    (:class:`~vidseq.models.anomaly.model.LingerAccumulator` over the speed stream's local maps)."""
    from vidseq.models.anomaly.model import local_speed_maps

    lcfg = model.cfg.linger
    if lcfg is None or len(cf) == 0:
        return np.zeros(len(cf))
    m = local_speed_maps(cf.magnitude_maps, cf.valid, model.speed.scale_map.numpy(), model.cfg.speed.temporal,
                         model.cfg.speed.window)
    t = np.asarray(cf.timestamp_s, np.float64)
    valid = np.asarray(cf.valid, bool)
    step = 1.0 / cf.fps
    # a frame without flow starts the sum again: segments begin after it
    start = np.maximum.accumulate(np.where(~valid, np.arange(len(t)) + 1, 0))
    dt = np.full(len(t), step)
    follows = (np.arange(len(t)) > start) & valid
    dt[follows] = np.clip(np.diff(t, prepend=t[0])[follows], 0.0, 2.0 * step)
    ex = np.maximum(m - lcfg.excess, 0.0) * dt[:, None]
    ex[~valid] = 0.0
    cs = np.concatenate([np.zeros((1, ex.shape[1])), np.cumsum(ex, 0)])
    i = np.arange(len(t)) + 1
    lo = np.maximum(np.searchsorted(t, t - lcfg.window_s, side="right"), start)
    total = cs[i] - cs[lo]
    if hold:  # a place scores no more than its last hold_s seconds' rate would add up to over window_s
        held = np.maximum(np.searchsorted(t, t - lcfg.hold_s, side="right"), start)
        total = np.minimum(total, (cs[i] - cs[held]) * (lcfg.window_s / lcfg.hold_s))
    out = total.max(1)
    return np.where(valid, np.maximum(out, 0.0), 0.0)


def flag_and_cause(sf: ScoredFrame, fused_on: bool, linger_level: float) -> tuple[bool, str | None]:
    """A scored frame's flag and cause: the fused streams' (``fused_on``, their threshold's hysteresis), else the
    linger alarm's by itself when its raw score reaches ``linger_level``."""
    lingers = not fused_on and sf.linger is not None and sf.linger >= linger_level
    return fused_on or lingers, "linger" if lingers else sf.cause


def set_linger_level(model: AnomalyModel, clips: Sequence[ClipFeatures]) -> float:
    """Set the model's linger alarm level from normal clips (their sums without the ``hold_s`` bound, as
    :meth:`LingerConfig.level` reads them); returns it (inf with no frames)."""
    assert model.cfg.linger is not None
    level = model.cfg.linger.level(np.concatenate([linger_scores(model, c, hold=False) for c in clips]))
    model.set_linger_level(level)
    return level


def stream_budget_scales(model: AnomalyModel, raw: Sequence[ClipScores], fps: float,
                         settings: NormalitySettings, tail_cfg: TailConfig | None) -> None:
    """Rescale each stream so that its own threshold for an equal share of the budget is the fused value 1
    (see :attr:`NormalitySettings.stream_budgets`); a stream whose tail cannot be fitted keeps its scale."""
    from vidseq.models.anomaly.threshold import fit_tail

    share = settings.false_alarms_per_hour / len(model.cfg.streams)
    std = model.stream_std.clone()
    for i, s in enumerate(model.cfg.streams):
        z = [smooth_scores(r.z(model, s), model.kernel(r.fps)) for r in raw]  # model's scales: not yet changed
        try:
            thr = fit_tail(np.concatenate(z), fps, tail_cfg).threshold(share)
        except (InputShapeError, ValueError):
            continue
        if np.isfinite(thr):
            std[i] = std[i] * max(float(thr), 1.0)
    model.stream_std = std


def _bound_scales(model: AnomalyModel, bounds: tuple[Any, float] | None) -> None:
    """Clip the model's stream scales to within ``factor`` of ``scales`` (no-op without bounds)."""
    if bounds is not None:
        prev, factor = bounds
        model.stream_std = model.stream_std.clamp(prev / factor, prev * factor)


def fit_normality(clips: Sequence[ClipFeatures], cfg: AnomalyConfig, fps: float, settings: NormalitySettings,
                  tail_cfg: TailConfig | None = None, scale_bounds: tuple[Any, float] | None = None,
                  linger_level: bool = True) -> tuple[AnomalyModel, Calibration, Tail, dict[str, Any]]:
    """Fit the unsupervised model on normal ``clips`` and set a budget threshold from out-of-fold scores.

    Every clip is cut into :data:`FOLD_CHUNKS` time chunks; even chunks are scored by a model fitted on
    the odd ones and vice versa. Those scores standardise the streams and feed the tail fit.
    ``scale_bounds`` ``(scales, factor)``: each stream's scale stays within ``factor`` of ``scales`` (an update:
    the scales of the normality it replaces), before the threshold is set on the scores they give.
    ``linger_level`` False: the linger alarm's level is not measured (stays inf; an update that keeps the current
    one need not go over every clip's speed maps again).
    """
    from vidseq.models.anomaly.fit import standardise_and_calibrate

    clips = [c for c in clips if len(c) >= 2]
    if not clips:
        raise DatasetError("anomaly: no normal frames to learn from")
    if "objects" in cfg.streams and sum(len(c.region_attrs) for c in clips) == 0:
        cfg = replace(cfg, streams=tuple(s for s in cfg.streams if s != "objects") or ("speed",), weights=())
    chunks: list[ClipFeatures] = []
    for c in clips:
        n = len(c)
        k = FOLD_CHUNKS if n >= 8 * FOLD_CHUNKS else 1
        cuts = np.linspace(0, n, k + 1).astype(int)
        chunks.extend(c.slice(int(a), int(b)) for a, b in itertools.pairwise(cuts) if b - a >= 2)
    model = fit_parts(cfg, clips)
    # the tail fits count in scores a second of stream time (a live reader's drops give fewer than fps)
    rate = sample_rate(sum(len(c) - 1 for c in clips),
                       sum(float(c.timestamp_s[-1] - c.timestamp_s[0]) for c in clips), fps)
    if len(chunks) >= 2:
        folds = []
        for fold in (0, 1):
            held = [c for i, c in enumerate(chunks) if i % 2 == fold]
            folds.append((held, fit_parts(cfg, [c for i, c in enumerate(chunks) if i % 2 != fold])))
        raw = [score_clip(part, c, normalise=False) for held, part in folds for c in held]
        standardise_and_calibrate(model, raw)
        if settings.stream_budgets and len(model.cfg.streams) > 1:
            stream_budget_scales(model, raw, rate, settings, tail_cfg)
        _bound_scales(model, scale_bounds)
        scores = []
        for held, part in folds:  # out-of-fold final scores under the full model's statistics
            part.stream_mean, part.stream_std = model.stream_mean.clone(), model.stream_std.clone()
            scores.append(_final_scores(part, held))
        normal = np.concatenate(scores)
    else:
        standardise_and_calibrate(model, [score_clip(model, c, normalise=False) for c in clips])
        _bound_scales(model, scale_bounds)
        normal = _final_scores(model, clips)
    if normal.size < 10:
        raise DatasetError(f"anomaly: {normal.size} normal frames are too few to set a threshold")
    cal, tail = budget_calibration(normal, rate, settings.false_alarms_per_hour, tail_cfg,
                                   min_duration_s=settings.min_duration_s, merge_gap_s=settings.merge_gap_s)
    if model.cfg.linger is not None and linger_level:
        set_linger_level(model, clips)
    info = {"fit_frames": int(sum(len(c) for c in clips)), "streams": list(model.cfg.streams),
            "normal_score_p99": float(np.percentile(normal, 99)),
            "expected_false_alarms_per_hour": round(tail.expected_events_per_hour(cal.threshold), 3)}
    return model, cal, tail, info


class _Segment:
    """Contiguous normal frames kept for updates: consecutive scored frames (a live reader's dropped frames in
    between do not split a segment, frames left out as flagged or too close to a flag do)."""

    def __init__(self) -> None:
        self.frames: list[FrameFeatures] = []
        self.last_row = -1  # the number of the scored frame appended last (OnlineNormality._rows)

    def seconds(self, fps: float) -> float:
        return len(self.frames) / fps


class OnlineNormality:
    """Unsupervised anomaly scoring of one stream (see the module docstring).

    Args:
        cfg: model config (:func:`unsupervised_config`).
        fps: the source's nominal frame rate (durations in frames, smoothing).
        settings: :class:`NormalitySettings`.
        working_size: motion working ``(w, h)`` (known after the first frame; set by the caller).
    """

    def __init__(self, cfg: AnomalyConfig, fps: float, settings: NormalitySettings | None = None,
                 tail_cfg: TailConfig | None = None) -> None:
        if not fps > 0:
            raise ConfigError(f"anomaly: the stream needs a positive frame rate, got {fps}")
        preload_threshold()  # before frames flow: the first fit must not stall the stream on an import
        self.cfg = cfg
        self.fps = float(fps)
        self.s = settings or NormalitySettings()
        self.tail_cfg = tail_cfg
        self.working_size: tuple[int, int] = (0, 0)
        self.model: AnomalyModel | None = None
        self.cal: Calibration | None = None
        self.tail: Tail | None = None
        self.scorer: StreamScorer | None = None
        self.state = "learning"
        self.fit_info: dict[str, Any] = {}
        self.fitted_at_s: float | None = None
        self.fitted_wall: str | None = None
        self.updates = 0
        self.scene_cuts: list[dict[str, Any]] = []
        self._warm: list[FrameFeatures] = []
        # a warm-up resumed after a cut: seconds learnt before it, and where the frames after it start in _warm
        self._warm_before_s = 0.0
        self._warm_from = 0
        self._base: ClipFeatures | None = None  # the first warm-up (kept for updates)
        self._memory: deque[_Segment] = deque()
        self._extra: list[ClipFeatures] = []  # frames added by feedback
        # (t, row number, features) awaiting their guard window
        self._candidates: deque[tuple[float, int, FrameFeatures]] = deque()
        self._row = 0  # scored frames so far: consecutive numbers are consecutive frames of the scored stream
        self._feats: dict[int, FrameFeatures | None] = {}  # position in scorer -> features, until scored
        self._pos = 0
        self._last_flag_s = -np.inf
        self._on = False
        self._next_update_s: float | None = None
        self._last_ts: float | None = None
        self.rows: list[ScoredRow] = []
        self.keep_rows = True
        self._restored = False
        self._view: np.ndarray | None = None  # the latest frame as the camera compensation prepared it
        self._views = ViewMemory(VIEWS_KEPT)  # views left at a scene cut, learnt or being learnt
        self._fitting: Any = None  # background_updates: the update being fitted (a Future), None when none
        self._fitter: Any = None  # ... and its worker thread (made on the first update)

    # -- status ------------------------------------------------------------------------------------------
    @property
    def warmup_s(self) -> float:
        """Stream seconds the current warm-up needs."""
        return self.s.fit_s if (self.fitted_at_s is None or self.s.relearn_s is None) else self.s.relearn_s

    @property
    def learnt_s(self) -> float:
        if len(self._warm) <= self._warm_from:
            return self._warm_before_s
        return self._warm_before_s + float(self._warm[-1].timestamp_s - self._warm[self._warm_from].timestamp_s) \
            + 1.0 / self.fps

    @property
    def threshold(self) -> float | None:
        return None if self.cal is None else self.cal.threshold

    @property
    def linger_level(self) -> float:
        """The linger alarm's level (inf without one)."""
        if self.model is None or self.model.cfg.linger is None:
            return math.inf
        return float(self.model.linger_level)

    def status_text(self) -> str:
        if self.state in ("learning", "relearning"):
            what = "re-learning after a scene cut" if self.state == "relearning" else "learning normality"
            return f"{what}: {self.learnt_s:.0f}/{self.warmup_s:g} s"
        return f"threshold {self.threshold:.2f} (fitted at {self.fitted_at_s:.0f} s)"

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"state": self.state, "fit_s": self.s.fit_s, "learnt_s": round(self.learnt_s, 2),
                             "progress": self.status_text(), "threshold": self.threshold,
                             "low_threshold": None if self.cal is None else self.cal.low_threshold,
                             "linger_level": None if not math.isfinite(self.linger_level) else self.linger_level,
                             "false_alarms_per_hour": self.s.false_alarms_per_hour,
                             "fitted_at_s": self.fitted_at_s, "fitted_wall": self.fitted_wall,
                             "updates": self.updates, "adapt": self.s.adapt,
                             "memory_s": round(len(self.memory_timestamps()) / self.fps, 1),
                             "scene_cuts": list(self.scene_cuts),
                             "restored": self._restored}
        if self.tail is not None:
            d["tail"] = self.tail.to_dict()
        if self.fit_info:
            d["fit"] = dict(self.fit_info)
        return d

    def memory_timestamps(self) -> np.ndarray:
        """Stream times of the frames in the normal memory (what the next update learns besides the warm-up)."""
        return np.array([f.timestamp_s for seg in self._memory for f in seg.frames], np.float64)

    # -- streaming ---------------------------------------------------------------------------------------
    def push(self, f: FrameFeatures, *, cut: bool = False, view: np.ndarray | None = None) -> list[ScoredRow]:
        """Consume the next frame's features (``cut``: a scene cut came before it; ``view``: the frame as the
        camera compensation prepared it, to recognise a view seen before); returns the rows that became final."""
        self._last_ts = float(f.timestamp_s)
        out: list[ScoredRow] = []
        if cut:
            out.extend(self._scene_cut(f, view))
        if view is not None:
            self._view = view
        if self.scorer is None:
            self._warm.append(f)
            # the warm-up ends after fit_s seconds of stream time *and* enough frames for a threshold: a live
            # source that drops most frames keeps learning a little longer instead of failing
            if self.learnt_s >= self.warmup_s - 1e-9 and len(self._warm) >= MIN_WARMUP_FRAMES:
                self._fit_from_warmup()
            return out
        self._feats[self._pos] = f if f.home_cover >= WHOLE_VIEW else None  # None: scored, never learnt
        self._pos += 1
        if self._next_update_s is None:  # restored from a file: updates count from its first frame
            self._next_update_s = float(f.timestamp_s) + self.s.update_every_s
        out.extend(self._rows(self.scorer.push(f)))
        if self._fitting is not None and self._fitting.done():
            out.extend(self._install_update(*self._fitting.result()))
        if self.s.adapt and self._next_update_s is not None and f.timestamp_s >= self._next_update_s:
            out.extend(self.update())
        return out

    def finish(self) -> list[ScoredRow]:
        self._fitting = None  # an update still being fitted is not waited for
        if self._fitter is not None:
            self._fitter.shutdown(wait=False)
            self._fitter = None
        out: list[ScoredRow] = []
        if self.scorer is not None:
            out = self._rows(self.scorer.finish())
            self.scorer = None
        if self.state in ("learning", "relearning") and self._warm:
            seen = self.learnt_s
            self.fit_info["not_scored"] = (
                f"{'nothing' if self.state == 'learning' else 'nothing after the scene cut'} scored: the video "
                f"{'is' if self.state == 'learning' else 'continued for'} {seen:.1f} s, shorter than the "
                f"{self.warmup_s:g} s normality warm-up (anomaly.fit_s)")
            log.warning("anomaly: %s", self.fit_info["not_scored"])
        return out

    def _rows(self, scored: list[ScoredFrame]) -> list[ScoredRow]:
        assert self.cal is not None
        out = []
        for sf in scored:
            s = float(sf.score)
            self._on = s >= self.cal.threshold or (self._on and s >= self.cal.low_threshold)
            row = ScoredRow(sf.frame_index, sf.timestamp_s, s, *flag_and_cause(sf, self._on, self.linger_level))
            out.append(row)
            self._row += 1
            if self.keep_rows:
                self.rows.append(row)
            feats = self._feats.pop(sf.position, None)
            # what only the linger alarm flags is still learnt: the streams that learn found it normal, and the
            # linger level stays where the warm-up put it (docs/alarms.md, "Stop 31")
            if self._on:
                self._last_flag_s = sf.timestamp_s
                while self._candidates and self._candidates[-1][0] >= sf.timestamp_s - self.s.guard_s:
                    self._candidates.pop()  # too close before a flag: may be the anomaly's onset
            elif feats is not None and self.s.adapt and sf.timestamp_s - self._last_flag_s > self.s.guard_s \
                    and s < self._learn_ceiling():
                self._candidates.append((sf.timestamp_s, self._row, feats))
            self._settle(sf.timestamp_s)
        return out

    def _learn_ceiling(self) -> float:
        """Scores from here up are never learnt as normal (``learn_below`` of the threshold's distance from 0)."""
        assert self.cal is not None
        return self.cal.threshold - (1.0 - self.s.learn_below) * abs(self.cal.threshold)

    def _settle(self, now_s: float) -> None:
        """Candidates older than the guard window become normal memory."""
        while self._candidates and self._candidates[0][0] < now_s - self.s.guard_s:
            ts, row, feats = self._candidates.popleft()
            seg = self._memory[-1] if self._memory else None
            # a new segment where frames were left out, or after a stall of the source (a live reader drops
            # frames all the time when the pass is slower than the camera: those gaps do not split it)
            if seg is None or not seg.frames or row != seg.last_row + 1 \
                    or ts - seg.frames[-1].timestamp_s > max(MAX_SEGMENT_GAP_S, 1.5 / self.fps):
                seg = _Segment()
                self._memory.append(seg)
            seg.frames.append(feats)
            seg.last_row = row
        total = sum(s.seconds(self.fps) for s in self._memory)
        while self._memory and total > self.s.memory_s:
            old = self._memory[0]
            drop = min(len(old.frames), max(1, int((total - self.s.memory_s) * self.fps)))
            del old.frames[:drop]
            total -= drop / self.fps
            if not old.frames:
                self._memory.popleft()

    # -- fitting -----------------------------------------------------------------------------------------
    def _clip(self, frames: Sequence[FrameFeatures], name: str) -> ClipFeatures:
        return ClipFeatures.from_frames(name, self.fps, frames, self.working_size)

    def _reset_warm(self) -> None:
        self._warm, self._warm_before_s, self._warm_from = [], 0.0, 0

    def _fit_from_warmup(self) -> None:
        base = self._clip(self._warm, "warmup")
        relearn = self.state == "relearning"
        self._install(*fit_normality([base], self.cfg, self.fps, self.s, self.tail_cfg))
        self._base = base
        self._reset_warm()
        log.info("anomaly: normality %slearnt from %.1f s of video (%d frames); threshold %.3f for %g false "
                 "alarms/hour", "re-" if relearn else "", base.timestamp_s[-1] - base.timestamp_s[0] + 1 / self.fps,
                 len(base), self.threshold, self.s.false_alarms_per_hour)

    def _install(self, model: AnomalyModel, cal: Calibration, tail: Tail, info: dict[str, Any]) -> None:
        self.model, self.cal, self.tail = model, cal, tail
        self.fit_info = info
        self.scorer = model.scorer(self.fps)
        self._feats, self._pos = {}, 0
        self.state = "scoring"
        self.fitted_at_s = self._last_ts
        self.fitted_wall = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._next_update_s = None if self._last_ts is None else self._last_ts + self.s.update_every_s

    def update(self) -> list[ScoredRow]:
        """Refit on the first warm-up + normal memory (+ feedback frames); bounded threshold and scale change.

        Returns rows flushed from the previous scorer (its delayed frames)."""
        if self.model is None or self.cal is None:
            return []
        self._next_update_s = (self._last_ts or 0.0) + self.s.update_every_s
        if self._fitting is not None:
            return []  # the previous update is still being fitted
        clips = [self._clip(s.frames, f"memory{i}") for i, s in enumerate(self._memory) if len(s.frames) >= 8]
        clips += self._extra
        if not clips:
            return []
        base = [self._base] if self._base is not None else []
        bounds = None  # an update with frames the user marked as normal is not bounded: they are normal
        if self.s.max_scale_change is not None and not self._extra:
            bounds = (self.model.stream_std.clone(), self.s.max_scale_change)
        # the feedback clips are learnt once this update is installed
        args = (base + clips, len(self._extra), bounds)
        if self.s.background_updates:
            if self._fitter is None:
                from concurrent.futures import ThreadPoolExecutor

                self._fitter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidseq-normality")
            self._fitting = self._fitter.submit(self._fit_update, *args)
            return []
        return self._install_update(*self._fit_update(*args))

    def _fit_update(self, clips: list[ClipFeatures], n_extra: int, bounds: tuple[Any, float] | None,
                    ) -> tuple[Any, int, int]:
        """``(fit_normality's result or None when the clips cannot be fitted, frames, n_extra)`` (pure: runs in
        the worker thread with background updates; ``bounds``: the current scales and how far they may move)."""
        try:
            fitted = fit_normality(clips, self.cfg, self.fps, self.s, self.tail_cfg, bounds,
                                   linger_level=self._threshold_change(n_extra) > 1)
        except DatasetError as exc:
            log.warning("anomaly: update skipped: %s", exc)
            fitted = None
        return fitted, sum(len(c) for c in clips), n_extra

    def _threshold_change(self, n_extra: int) -> float:
        """How far an update may move the threshold (and the linger level): frames the user marked as a false
        alarm may lift it over them, whatever the memory does."""
        return max(self.s.max_threshold_change, FEEDBACK_THRESHOLD_CHANGE) if n_extra else self.s.max_threshold_change

    def _install_update(self, fitted: tuple[AnomalyModel, Calibration, Tail, dict[str, Any]] | None, frames: int,
                        n_extra: int) -> list[ScoredRow]:
        """Switch to an updated normality (its threshold bounded against the current one); returns the rows
        flushed from the previous scorer (its delayed frames)."""
        self._fitting = None
        if fitted is None or self.cal is None:
            return []
        model, cal, tail, info = fitted
        del self._extra[:n_extra]
        old = self.cal.threshold
        change = self._threshold_change(n_extra)
        lo, hi = sorted((old / change, old * change))
        if old <= 0:
            slack = 0.5 if change > 1 else 0.0
            lo, hi = old - abs(old) * (change - 1) - slack, old + slack
        thr = float(np.clip(cal.threshold, lo, hi))
        if thr != cal.threshold:
            cal = replace(cal, threshold=thr, low_threshold=min(cal.low_threshold, thr))
        if model.cfg.linger is not None and self.model is not None and self.model.cfg.linger is not None:
            # the linger level moves as the threshold may: not at all by default (then it was not measured: inf
            # clips to prev), up to 1.25x with feedback
            prev = float(self.model.linger_level)
            if math.isfinite(prev):
                model.set_linger_level(float(np.clip(float(model.linger_level), prev / change, prev * change)))
        flushed = self._rows(self.scorer.finish()) if self.scorer is not None else []
        info["update_frames"] = int(frames)
        self._install(model, cal, tail, info)
        self.updates += 1
        log.info("anomaly: normality updated (%d) from %d normal frames; threshold %.3f -> %.3f", self.updates,
                 info["update_frames"], old, thr)
        return flushed

    def add_normal(self, cf: ClipFeatures) -> None:
        """Frames known to be normal (e.g. a false alarm the user marked): learnt at the next update."""
        if len(cf) >= 2:
            self._extra.append(cf)
            if self._next_update_s is not None and self._last_ts is not None:
                self._next_update_s = min(self._next_update_s, self._last_ts)

    def _scene_cut(self, f: FrameFeatures, view: np.ndarray | None = None) -> list[ScoredRow]:
        self._fitting = None  # an update being fitted was the view being left: not installed over the new one
        scoring = self.scorer is not None
        out = self._rows(self.scorer.finish()) if self.scorer is not None else []
        out = [replace(r, is_anomaly=False) for r in out]  # never an alarm for the cut itself
        if self.keep_rows and out:
            self.rows[-len(out):] = out
        self._on = False
        if scoring and self._view is not None and self.model is not None and self.cal is not None \
                and self.tail is not None:  # remember the view being left
            self._views.remember(self._view, {"model": self.model, "cal": self.cal, "tail": self.tail,
                                              "base": self._base, "info": dict(self.fit_info)}, complete=True)
        elif not scoring and self._view is not None and self._warm:  # ... or what was learnt of it so far
            self._views.remember(self._view, {"warm": self._warm, "learnt_s": self.learnt_s, "state": self.state},
                                 complete=False)
        match = self._views.recall(view) if view is not None else None
        self._memory.clear()
        self._candidates.clear()
        self._extra = []
        if match is not None and not match[1]:  # a view left while it was being learnt: go on learning it
            kept = match[0]
            self.scorer = None
            self._warm, self._warm_before_s, self._warm_from = kept["warm"], kept["learnt_s"], len(kept["warm"])
            self.state = kept["state"]
            self.scene_cuts.append({"timestamp_s": round(float(f.timestamp_s), 3), "frame_index": int(f.frame_index),
                                    "action": f"normality learning resumed ({self.learnt_s:.0f}/{self.warmup_s:g} s "
                                              "of this view were learnt before)"})
            log.warning("anomaly: scene cut at %.1f s back to a view being learnt: %s", f.timestamp_s,
                        self.status_text())
            return out
        if match is not None:
            kept = match[0]
            self._install(kept["model"], kept["cal"], kept["tail"], kept["info"])
            self._base = kept["base"]
            self._reset_warm()
            self.scene_cuts.append({"timestamp_s": round(float(f.timestamp_s), 3),
                                    "frame_index": int(f.frame_index),
                                    "action": "normality restored (this view was learnt before)"})
            log.warning("anomaly: scene cut at %.1f s to a view seen before: its normality is restored",
                        f.timestamp_s)
            return out
        self.scene_cuts.append({"timestamp_s": round(float(f.timestamp_s), 3), "frame_index": int(f.frame_index),
                                "action": "normality re-learnt"})
        log.warning("anomaly: scene cut at %.1f s: learning normality again", f.timestamp_s)
        self.scorer = None
        self._reset_warm()
        self._base = None
        self._next_update_s = None
        self.state = "relearning" if self.model is not None else "learning"
        return out

    # -- events ------------------------------------------------------------------------------------------
    def events(self) -> list[dict[str, Any]]:
        """Events of the rows kept so far (threshold pair of the latest fit), numbered from 1."""
        if self.cal is None or not self.rows:
            return []
        index = np.array([r.frame_index for r in self.rows])
        ev = find_events(np.array([r.score for r in self.rows]), self.cal, fps=self.fps, frame_index=index,
                         timestamp_s=np.array([r.timestamp_s for r in self.rows]),
                         flags=np.array([r.is_anomaly for r in self.rows]))
        cuts = [c["timestamp_s"] for c in self.scene_cuts]
        out = []
        for e in ev:
            if any(e.start_s - 1.0 / self.fps <= c <= e.end_s + 1.0 / self.fps for c in cuts):
                continue  # an excursion at a scene cut is the cut, never an alarm
            out.append({"id": len(out) + 1, **e.to_dict()})
        return event_causes(out, index, [r.cause for r in self.rows])

    # -- persistence -------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """The learnt normality as a checkpoint (loadable as an anomaly model, or with :meth:`load`)."""
        from vidseq.config import to_dict
        from vidseq.train.checkpoint import save_checkpoint

        if self.model is None or self.cal is None or self.tail is None:
            raise ConfigError("anomaly: nothing to save yet: normality has not been learnt")
        normal = self._base
        mem = [self._clip(s.frames, "memory") for s in self._memory if len(s.frames) >= 2]
        return save_checkpoint(
            path, model=self.model, model_name=MODEL_NAME, model_config=self.model.model_config(),
            config={"normality": to_dict(self.s)},
            metadata={"fps": self.fps, "working_size": list(self.working_size)},
            extra={"calibration": self.cal.to_dict(), "mode": ONLINE_MODE, "tail": self.tail.to_dict(),
                   "fit": {k: v for k, v in self.fit_info.items() if isinstance(v, (int, float, str, list))},
                   "updates": self.updates, "fitted_wall": self.fitted_wall,
                   "normal": [_clip_arrays(c) for c in ([normal] if normal is not None else []) + mem]})

    @classmethod
    def load(cls, path: str | Path, fps: float, settings: NormalitySettings | None = None,
             tail_cfg: TailConfig | None = None) -> OnlineNormality:
        """Resume a saved normality: scoring starts at once, updates continue (first warm-up restored)."""
        from vidseq.tasks.anomaly.task import load_anomaly_model

        model, cal, ckpt = load_anomaly_model(path)
        extra = ckpt.get("extra", {})
        if extra.get("mode") != ONLINE_MODE:
            raise CheckpointError(f"{path}: not a saved stream normality (mode {extra.get('mode')!r})")
        on = cls(model.cfg, fps, settings, tail_cfg)
        on.working_size = tuple(int(v) for v in ckpt.get("metadata", {}).get("working_size", (0, 0)))  # type: ignore[assignment]
        on.tail = Tail.from_dict(dict(extra["tail"]))
        on.model, on.cal = model, cal
        clips = [_clip_from_arrays(d, fps, on.working_size) for d in extra.get("normal", [])]
        on._base = clips[0] if clips else None
        for c in clips[1:]:
            seg = _Segment()
            seg.frames = list(c.frames())
            on._memory.append(seg)
        on.scorer = model.scorer(fps)
        on.state = "scoring"
        on.updates = int(extra.get("updates", 0))
        on.fitted_wall = extra.get("fitted_wall")
        on.fitted_at_s = 0.0
        on._restored = True
        on.fit_info = {"restored_from": str(path)}
        return on


def _clip_arrays(c: ClipFeatures) -> dict[str, Any]:
    return {"frame_index": c.frame_index, "timestamp_s": c.timestamp_s,
            "magnitude_maps": c.magnitude_maps.astype(np.float16), "valid": c.valid, "descriptors": c.descriptors,
            "region_attrs": c.region_attrs, "region_frame": c.region_frame}


def _clip_from_arrays(d: dict[str, Any], fps: float, working_size: tuple[int, int]) -> ClipFeatures:
    a = {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in d.items()}
    return ClipFeatures("restored", fps, a["frame_index"], a["timestamp_s"], a["magnitude_maps"].astype(np.float32),
                        a["valid"].astype(bool), a["descriptors"], a["region_attrs"], a["region_frame"],
                        working_size)


__all__ = ["DEFAULT_FIT_S", "ONLINE_MODE", "UNSUPERVISED_STREAMS", "VIEWS_KEPT", "NormalitySettings", "OnlineNormality",
           "ScoredRow", "event_causes", "fit_normality", "stream_budget_scales", "unsupervised_config"]
