"""A threshold from a false-alarm budget (events per hour), robust with few normal samples.

The 99th percentile of 50 warm-up frames says little about how often normal footage will cross it in
an hour. Here the threshold is set from the **tail** of the normal scores:

1. a robust location/scale (median, MAD) floors everything, so a near-constant warm-up cannot give a
   threshold just above its own noise;
2. the exceedances over a high quantile (``tail_quantile``) are fitted with a generalised Pareto
   distribution (peaks over threshold, :func:`scipy.stats.genpareto`; shape clamped to
   ``[-0.5, 0.5]``; an exponential tail when there are too few exceedances for a fit);
3. the budget in events per hour becomes a per-frame exceedance probability
   ``p = events_per_hour * D / 3600``, where ``D`` is the mean length (seconds) of a normal excursion
   above the tail quantile: an excursion of that length happening ``events_per_hour`` times an hour
   spends that share of the hour above the threshold (scores are smoothed, so frames are not
   independent and counting frames would overstate the number of chances);
4. threshold = the GPD quantile at ``1 - p``, pushed out by ``margin`` (a fraction of its distance
   from the tail quantile) for the uncertainty of a fit on a few minutes of video.

Example::

    tail = fit_tail(normal_scores, fps=10.0)
    thr = tail.threshold(false_alarms_per_hour=1.0)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vidseq.errors import ConfigError, InputShapeError
from vidseq.models.anomaly.calibrate import Calibration

MIN_EXCEEDANCES = 12  # fewer than this: exponential tail (mean excess) instead of a GPD fit


@dataclass(frozen=True)
class TailConfig:
    """How the budget threshold is derived.

    Attributes:
        tail_quantile: exceedances over this quantile of the normal scores are fitted.
        margin: the threshold is pushed beyond the fitted quantile by this fraction of its distance
            from the tail quantile (0 = the fitted quantile itself).
        min_robust_z: the threshold is at least ``median + min_robust_z * 1.4826 * MAD``.
        low_fraction: hysteresis: an event continues while the score stays above
            ``median + low_fraction * (threshold - median)``.
    """

    tail_quantile: float = 0.9
    margin: float = 0.25
    min_robust_z: float = 4.0
    low_fraction: float = 0.6

    def __post_init__(self) -> None:
        if not 0.5 <= self.tail_quantile < 1:
            raise ConfigError(f"tail_quantile must be in [0.5, 1), got {self.tail_quantile}")
        if self.margin < 0 or self.min_robust_z < 0:
            raise ConfigError("margin and min_robust_z must be >= 0")
        if not 0 < self.low_fraction <= 1:
            raise ConfigError(f"low_fraction must be in (0, 1], got {self.low_fraction}")


@dataclass(frozen=True)
class Tail:
    """A fitted tail of normal scores (all numbers; stored in summaries and checkpoints)."""

    median: float
    robust_scale: float  # 1.4826 * MAD (>= a small floor)
    u: float  # tail quantile value
    tail_prob: float  # P(score > u) on the normal samples
    shape: float  # GPD shape xi (0 = exponential)
    scale: float  # GPD scale sigma
    excursion_s: float  # mean length of a normal excursion above u, seconds
    num_samples: int
    num_exceedances: int
    margin: float
    min_robust_z: float
    low_fraction: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tail:
        return cls(**{k: (int(v) if k.startswith("num_") else float(v)) for k, v in d.items()})

    def quantile(self, p_exceed: float) -> float:
        """The score exceeded with probability ``p_exceed`` under the fitted tail (no margin)."""
        if p_exceed >= self.tail_prob:
            return self.u
        r = p_exceed / self.tail_prob  # conditional exceedance probability beyond u
        if abs(self.shape) < 1e-6:
            return self.u + self.scale * -math.log(r)
        return self.u + self.scale / self.shape * (r ** -self.shape - 1.0)

    def exceedance_prob(self, events_per_hour: float) -> float:
        """Per-frame exceedance probability that gives ``events_per_hour`` excursions an hour."""
        if events_per_hour <= 0 or not math.isfinite(events_per_hour):
            raise ConfigError(f"false_alarms_per_hour must be a positive number, got {events_per_hour}")
        return min(self.tail_prob, events_per_hour * self.excursion_s / 3600.0)

    def threshold(self, false_alarms_per_hour: float) -> float:
        """The alarm threshold for a budget of ``false_alarms_per_hour`` false events an hour."""
        q = self.quantile(self.exceedance_prob(false_alarms_per_hour))
        thr = q + self.margin * (q - self.u)
        return float(max(thr, self.median + self.min_robust_z * self.robust_scale))

    def low_threshold(self, threshold: float) -> float:
        return float(self.median + self.low_fraction * (threshold - self.median))

    def expected_events_per_hour(self, threshold: float) -> float:
        """Inverse of :meth:`threshold` without the margin: excursions an hour above ``threshold``."""
        if threshold <= self.u:
            return 3600.0 * self.tail_prob / self.excursion_s
        z = threshold - self.u
        if abs(self.shape) < 1e-6:
            r = math.exp(-z / self.scale)
        else:
            base = 1.0 + self.shape * z / self.scale
            r = 0.0 if base <= 0 else base ** (-1.0 / self.shape)
        return 3600.0 * self.tail_prob * r / self.excursion_s


def sample_rate(intervals: int, seconds: float, fps: float) -> float:
    """Scores a second of stream time: ``intervals`` between consecutive scores over ``seconds``, at most ``fps``
    (``fps`` when they span no time). A live reader that drops frames delivers fewer than the source's ``fps``;
    the tail fit counts excursions and the budget's hours in this rate, or a live stream's threshold would be
    set for a fraction of the false alarms an hour asked for."""
    if intervals <= 0 or not seconds > 0:
        return float(fps)
    rate = intervals / seconds
    return float(fps) if rate >= fps * (1.0 - 1e-6) else float(rate)  # every frame: exactly fps


def mean_excursion_s(scores: np.ndarray, level: float, fps: float) -> float:
    """Mean length (s) of runs of consecutive scores above ``level`` (one frame when there are none)."""
    above = np.asarray(scores) > level
    runs = int(np.count_nonzero(above[1:] & ~above[:-1]) + (1 if above.size and above[0] else 0))
    if runs == 0:
        return 1.0 / fps
    return float(above.sum()) / runs / fps


def preload() -> None:
    """Import what :func:`fit_tail` needs (``scipy.stats``, ~0.8 s the first time on a 2-core CPU) now: a
    streaming scorer calls this when it is built, so its first threshold fit does not stall a live stream."""
    import scipy.stats  # noqa: F401


def fit_tail(scores: np.ndarray, fps: float, cfg: TailConfig | None = None) -> Tail:
    """Fit the tail of normal ``scores`` ``(T,)`` (in time order, at ``fps``) for :meth:`Tail.threshold`.

    Raises:
        InputShapeError: fewer than 10 scores, NaN/inf, or a non-positive ``fps``.
    """
    from scipy.stats import genpareto

    cfg = cfg or TailConfig()
    s = np.asarray(scores, np.float64).ravel()
    if s.size < 10:
        raise InputShapeError(f"a tail fit needs at least 10 normal scores, got {s.size}")
    if not np.isfinite(s).all():
        raise InputShapeError("tail fit: scores contain NaN/inf")
    if not fps > 0:
        raise InputShapeError(f"tail fit needs a positive fps, got {fps}")
    med = float(np.median(s))
    mad = float(np.median(np.abs(s - med))) * 1.4826
    spread = float(np.percentile(s, 95) - np.percentile(s, 5))
    robust = max(mad, 0.05 * spread, 1e-6)
    u = float(np.quantile(s, cfg.tail_quantile))
    exc = s[s > u] - u
    tail_prob = max(float(exc.size) / s.size, 1.0 / s.size)
    shape, scale = 0.0, max(float(exc.mean()) if exc.size else robust, 1e-6)
    if exc.size >= MIN_EXCEEDANCES and float(exc.std()) > 1e-9:
        try:
            c, _, sc = genpareto.fit(exc, floc=0.0)
            if math.isfinite(c) and math.isfinite(sc) and sc > 0:
                shape, scale = float(np.clip(c, -0.5, 0.5)), float(sc)
        except (ValueError, RuntimeError, FloatingPointError):
            pass  # keep the exponential tail
    return Tail(median=med, robust_scale=robust, u=u, tail_prob=tail_prob, shape=shape, scale=scale,
                excursion_s=max(mean_excursion_s(s, u, fps), 1.0 / fps), num_samples=int(s.size),
                num_exceedances=int(exc.size), margin=cfg.margin, min_robust_z=cfg.min_robust_z,
                low_fraction=cfg.low_fraction)


__all__ = ["Tail", "TailConfig", "fit_tail", "mean_excursion_s", "preload", "sample_rate"]


def budget_calibration(scores: np.ndarray, fps: float, false_alarms_per_hour: float,
                       cfg: TailConfig | None = None, *, min_duration_s: float = 0.5,
                       merge_gap_s: float = 0.3) -> tuple[Calibration, Tail]:
    """A :class:`~vidseq.models.anomaly.calibrate.Calibration` whose threshold meets a false-alarm budget.

    ``percentile`` in the result is the equivalent percentile of the fitted tail (it may exceed what the
    samples alone can resolve); ``normal_fpr`` is the share of the given normal scores at or above it.
    """
    tail = fit_tail(scores, fps, cfg)
    thr = tail.threshold(false_alarms_per_hour)
    low = min(tail.low_threshold(thr), thr)
    s = np.asarray(scores, np.float64)
    p = tail.exceedance_prob(false_alarms_per_hour)
    cal = Calibration(threshold=thr, low_threshold=low, percentile=100.0 * (1.0 - p),
                      low_percentile=float(100.0 * (s < low).mean()), min_duration_s=min_duration_s,
                      merge_gap_s=merge_gap_s, num_normal_frames=int(s.size), normal_fpr=float((s >= thr).mean()))
    return cal, tail


__all__ += ["budget_calibration"]
