"""Thresholds from normal data only, and events from per-frame scores.

A threshold is a high percentile of scores on *normal* validation frames (``percentile=99`` means
about 1 % of normal frames are flagged: the false-positive budget), or equivalently ``fpr=0.01``.
Events are runs of frames whose score rises to the (high) threshold and stays above a lower
hysteresis threshold; runs shorter than ``min_duration_s`` are dropped and runs separated by less
than ``merge_gap_s`` are merged. No test labels are involved anywhere.

Example::

    cal = calibrate(val_scores, CalibrationConfig(percentile=99.0, low_percentile=95.0))
    flags = cal.flags(scores)                        # (T,) bool, hysteresis applied
    events = find_events(scores, cal, fps=10.0)      # list[Event]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vidseq.errors import ConfigError, InputShapeError


@dataclass(frozen=True)
class CalibrationConfig:
    """How the threshold and events are derived.

    Attributes:
        percentile: threshold = this percentile of normal validation scores (ignored if ``fpr`` set).
        fpr: false-positive budget on normal frames, e.g. 0.01 (= percentile 99).
        low_percentile: hysteresis: an event continues while the score stays above this percentile
            of the normal scores (must not exceed the high one).
        min_duration_s: events shorter than this are dropped.
        merge_gap_s: events separated by a gap shorter than this are merged.
    """

    percentile: float = 99.0
    fpr: float | None = None
    low_percentile: float = 95.0
    min_duration_s: float = 0.5
    merge_gap_s: float = 0.3

    def __post_init__(self) -> None:
        if not 0 < self.percentile <= 100:
            raise ConfigError(f"calibration.percentile must be in (0, 100], got {self.percentile}")
        if self.fpr is not None and not 0 < self.fpr < 1:
            raise ConfigError(f"calibration.fpr must be in (0, 1), got {self.fpr}")
        if not 0 < self.low_percentile <= 100:
            raise ConfigError(f"calibration.low_percentile must be in (0, 100], got {self.low_percentile}")
        if self.min_duration_s < 0 or self.merge_gap_s < 0:
            raise ConfigError("calibration.min_duration_s and merge_gap_s must be >= 0")

    @property
    def high_percentile(self) -> float:
        return 100.0 * (1.0 - self.fpr) if self.fpr is not None else self.percentile


@dataclass(frozen=True)
class Calibration:
    """A calibrated threshold pair plus the settings that made it (stored in checkpoints)."""

    threshold: float
    low_threshold: float
    percentile: float
    low_percentile: float
    min_duration_s: float
    merge_gap_s: float
    num_normal_frames: int
    normal_fpr: float  # share of the normal calibration frames at or above threshold

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(**{k: (int(v) if k == "num_normal_frames" else float(v)) for k, v in d.items()})

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """(T,) bool: above threshold, with hysteresis (stay on while >= low_threshold)."""
        return hysteresis(np.asarray(scores, np.float64), self.threshold, self.low_threshold)


def calibrate(normal_scores: np.ndarray, cfg: CalibrationConfig | None = None) -> Calibration:
    """Threshold pair from scores of normal frames.

    Raises:
        InputShapeError: no scores, or NaN/inf among them.
    """
    cfg = cfg or CalibrationConfig()
    s = np.asarray(normal_scores, np.float64).ravel()
    if s.size == 0:
        raise InputShapeError("calibration needs at least one normal score")
    if not np.isfinite(s).all():
        raise InputShapeError("calibration scores contain NaN/inf")
    hi_p = cfg.high_percentile
    lo_p = min(cfg.low_percentile, hi_p)
    thr = float(np.percentile(s, hi_p))
    low = float(min(np.percentile(s, lo_p), thr))
    return Calibration(threshold=thr, low_threshold=low, percentile=hi_p, low_percentile=lo_p,
                       min_duration_s=cfg.min_duration_s, merge_gap_s=cfg.merge_gap_s, num_normal_frames=int(s.size),
                       normal_fpr=float((s >= thr).mean()))


def hysteresis(scores: np.ndarray, high: float, low: float) -> np.ndarray:
    """(T,) bool: on when a score reaches ``high``, off when it falls below ``low``."""
    out = np.zeros(len(scores), bool)
    on = False
    for i, v in enumerate(scores):
        on = v >= high or (on and v >= low)
        out[i] = on
    return out


@dataclass(frozen=True)
class Event:
    """A run of anomalous frames: ``[start_frame, end_frame]`` inclusive (positions in the scored sequence)."""

    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    peak_frame: int
    peak_score: float
    mean_score: float
    cause: str | None = None  # the anomaly stream behind most of its frames, when known

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_events(scores: np.ndarray, cal: Calibration, *, fps: float, frame_index: np.ndarray | None = None,
                timestamp_s: np.ndarray | None = None, flags: np.ndarray | None = None) -> list[Event]:
    """Events from per-frame scores (hysteresis, merging of short gaps, minimum duration).

    Args:
        scores: (T,) scores.
        cal: the calibration (thresholds and durations).
        fps: frame rate, to turn durations into frames.
        frame_index, timestamp_s: (T,) source frame numbers / times; default ``arange(T)`` / ``index / fps``.
        flags: (T,) bool flags already decided (e.g. live, under thresholds that changed over time);
            default ``cal.flags(scores)``.
    """
    s = np.asarray(scores, np.float64)
    if s.ndim != 1:
        raise InputShapeError(f"scores must be (T,), got {s.shape}")
    t = len(s)
    idx = np.arange(t) if frame_index is None else np.asarray(frame_index)
    ts = idx / max(fps, 1e-9) if timestamp_s is None else np.asarray(timestamp_s, np.float64)
    flags = cal.flags(s) if flags is None else np.asarray(flags, bool)
    if flags.shape != s.shape:
        raise InputShapeError(f"flags {flags.shape} do not match scores {s.shape}")
    runs: list[list[int]] = []
    i = 0
    while i < t:
        if flags[i]:
            j = i
            while j + 1 < t and flags[j + 1]:
                j += 1
            runs.append([i, j])
            i = j + 1
        else:
            i += 1
    gap = math.ceil(cal.merge_gap_s * fps)
    merged: list[list[int]] = []
    for r in runs:
        if merged and r[0] - merged[-1][1] - 1 < gap:
            merged[-1][1] = r[1]
        else:
            merged.append(r)
    min_len = max(1, math.ceil(cal.min_duration_s * fps))
    events = []
    for a, b in merged:
        if b - a + 1 < min_len:
            continue
        seg = s[a:b + 1]
        p = a + int(np.argmax(seg))
        events.append(Event(start_frame=int(idx[a]), end_frame=int(idx[b]), start_s=float(ts[a]), end_s=float(ts[b]),
                            peak_frame=int(idx[p]), peak_score=float(s[p]), mean_score=float(seg.mean())))
    return events
