"""The ``tracks`` stream: where a tracked moving object walks, and which way, against normal tracks.

The ``place`` / ``direction`` streams read cells of the motion grid, where one small walker fills a few
percent of a cell and a frame's noise can look the same. This stream follows objects instead:

1. :class:`RegionTracker` links the frame's moving regions (class-agnostic, from the flow: see
   :mod:`vidseq.features.regions`) to the tracks of the previous frames (nearest foot point to where the
   track's flow said it would be, within a gate of a fraction of its height). For every tracked region it
   measures, over the last ``window_s`` seconds of its track: the heading of the foot point's displacement,
   the speed in body heights per second, and how much the displacement agrees with the flow inside the
   region (a noise blob that flickers in place, or whose pixels move every way, gets little weight).
2. :class:`TrackStream` learns from normal frames, on a ``grid`` over the image (by foot point), how often
   a moving object stands in each cell (occupancy: each observation counts by its motion weight, so a
   swaying tree, a flickering light or a standing shadow, tracked in place with flow every way, does not make
   its cell look walked) and which way tracks move there (a direction histogram per cell, with a prior toward
   the scene-wide one and a uniform floor).
3. An observation's evidence is (how much rarer its cell is than the typical moving normal observation's) plus (the
   surprise of its heading in that cell), times its motion weight (agreement x speed, up to
   ``full_speed`` body heights/s). A track's score is the mean evidence over its last ``score_window_s``
   seconds, plus its accumulated excess when ``accumulate`` is set (every observation adds its evidence minus
   that reference, once per frame of stream time it stands for, never going below 0), once it is ``min_age_s``
   old; the frame's raw score is the highest track score (0 with none).

Averaging along a track is what separates a walker going the wrong way, or walking where nobody walks, for
seconds, from a noisy blob that is surprising for a frame. Accumulating is what lets such a walker be found
although its track is measured badly for part of the way (it passes another walker and their regions merge,
its region is missed for a few frames): an ordinary walker's evidence stays under the reference and adds
nothing, a surprising one's keeps adding for as long as it is tracked, and a mean over a short window would
have let the badly measured frames dilute it. Pure arrays: no video, no files.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vidseq.errors import ConfigError, InputShapeError
from vidseq.features.regions import ATTRIBUTE_NAMES

_VX, _VY = ATTRIBUTE_NAMES.index("vx"), ATTRIBUTE_NAMES.index("vy")
_H, _W = ATTRIBUTE_NAMES.index("height"), ATTRIBUTE_NAMES.index("width")
_Y, _X = ATTRIBUTE_NAMES.index("y_bottom"), ATTRIBUTE_NAMES.index("x_center")

OBS_COLUMNS: tuple[str, ...] = ("track", "age_s", "heading", "agreement", "speed", "x", "y")
"""Columns of an observation row (:meth:`RegionTracker.step`): track id, seconds since the track began,
heading (radians, image coordinates), agreement of displacement and flow in [0, 1], speed (body heights
per second), foot point x, y (px)."""
FITTED_MIN_COVER = 0.7
"""``tracks.min_cover`` of a fitted model that leaves it unset (:class:`TrackStreamConfig`)."""


@dataclass(frozen=True)
class TrackStreamConfig:
    """The ``tracks`` stream.

    Attributes:
        grid: rows, cols of the occupancy / direction grid over the frame (by foot point).
        bins: direction histogram bins over 360 degrees.
        window_s: seconds of a track that give its heading, speed and agreement.
        score_window_s: a track's score is its mean evidence over this many seconds.
        min_age_s: a track scores from this age on.
        max_gap_s: a track not seen for longer ends.
        gate: association gate, in body heights (at least ``min_gate_px``).
        min_gate_px: smallest association gate (px).
        min_height_px: regions lower than this are not tracked.
        max_size_share: regions taller or wider than this share of the frame are not tracked (a global
            change, not an object).
        min_cover: a track whose regions were found in less than this share of its window's frames gets
            no weight (flicker). None (the default): a fitted model reads :data:`FITTED_MIN_COVER` (0.7; the
            checkpoints fitted before None was allowed store 0.7, the same), unsupervised scoring 0.5
            (:data:`vidseq.tasks.anomaly.online.UNSUPERVISED_TRACK_MIN_COVER`). A value given is kept as it is.
        full_speed: body heights per second from which the motion weight is 1 (walking is about 0.8).
        direction_speed: normal observations slower than this (body heights/s) do not enter the direction
            histograms.
        direction_agreement: nor do those with less agreement than this.
        smooth_cells: Gaussian smoothing of the learnt histograms across cells (in cells).
        occupancy_floor: share of the occupancy spread uniformly over the grid (a cell never visited is
            rare, not impossible).
        prior: pseudo-counts of the scene-wide direction histogram added to every cell's.
        uniform: share of every cell's direction distribution that is uniform (bounds the surprise).
        accumulate: reference evidence of the accumulated excess added to a track's score (a one-sided CUSUM
            over the track's life: each observation adds its evidence minus this, times the frames at the scoring
            rate it stands for (2 after a dropped frame), the sum never below 0). An ordinary walker's evidence
            (a frequent cell, a usual heading: about 0.3-1.5) adds nothing. None (the default, and what every
            checkpoint fitted before this setting reads): the windowed mean alone.
            Unsupervised scoring and ``vidseq train anomaly``'s default model set 2
            (:data:`vidseq.tasks.anomaly.online.UNSUPERVISED_TRACK_ACCUMULATE`, ``default_model()``; chosen on the
            alarm benchmark's dev streams: docs/alarms.md, "Stop 25").
    """

    grid: tuple[int, int] = (12, 16)
    bins: int = 8
    window_s: float = 1.0
    score_window_s: float = 1.5
    min_age_s: float = 1.0
    max_gap_s: float = 0.6
    gate: float = 0.6
    min_gate_px: float = 6.0
    min_height_px: float = 4.0
    max_size_share: float = 0.6
    min_cover: float | None = None
    full_speed: float = 0.5
    direction_speed: float = 0.3
    direction_agreement: float = 0.5
    smooth_cells: float = 0.7
    occupancy_floor: float = 0.02
    prior: float = 1.0
    uniform: float = 0.05
    accumulate: float | None = None

    def __post_init__(self) -> None:
        if len(self.grid) != 2 or min(self.grid) < 1 or self.bins < 2:
            raise ConfigError(f"tracks.grid must be two positive ints and tracks.bins >= 2, got {self.grid} / "
                              f"{self.bins}")
        positive = {"window_s": self.window_s, "score_window_s": self.score_window_s, "max_gap_s": self.max_gap_s,
                    "gate": self.gate, "full_speed": self.full_speed}
        bad = [k for k, v in positive.items() if not v > 0]
        if bad:
            raise ConfigError(f"tracks.{bad[0]} must be > 0, got {positive[bad[0]]}")
        if self.min_age_s < 0 or self.min_gate_px < 0 or self.min_height_px < 0 or self.smooth_cells < 0 \
                or self.direction_speed < 0 or self.prior <= 0:
            raise ConfigError("tracks.min_age_s, min_gate_px, min_height_px, smooth_cells, direction_speed must be "
                              ">= 0 and tracks.prior > 0")
        if self.accumulate is not None and not (self.accumulate > 0 and math.isfinite(self.accumulate)):
            raise ConfigError(f"tracks.accumulate must be > 0 or null (no accumulation), got {self.accumulate}")
        for k in ("max_size_share", "min_cover", "direction_agreement", "occupancy_floor", "uniform"):
            v = getattr(self, k)
            if v is None:  # min_cover unset: the reader's default
                continue
            if not 0 <= v <= 1 or (k in ("max_size_share", "occupancy_floor", "uniform") and v == 0):
                raise ConfigError(f"tracks.{k} must be in (0, 1], got {v}")


@dataclass
class _Track:
    t0: float
    hist: deque[tuple[float, float, float, float, float, float]]  # t, x, y, vx, vy, h

    @property
    def last(self) -> tuple[float, float, float, float, float, float]:
        return self.hist[-1]


class RegionTracker:
    """Links moving regions frame to frame (streaming). ``step`` returns one observation row per tracked region.

    Args:
        cfg: stream settings.
        frame_size: working ``(w, h)`` of the regions' coordinates.
        fps: the source's frame rate (region flow is in px per frame).
    """

    def __init__(self, cfg: TrackStreamConfig, frame_size: tuple[int, int], fps: float) -> None:
        if not fps or fps <= 0 or not math.isfinite(fps):
            raise InputShapeError(f"tracking needs a positive frame rate, got {fps}")
        self.cfg = cfg
        self.size = (float(frame_size[0]), float(frame_size[1]))
        self.fps = float(fps)
        self.min_cover = FITTED_MIN_COVER if cfg.min_cover is None else float(cfg.min_cover)
        self.tracks: dict[int, _Track] = {}
        self._next = 0
        self._seen: deque[float] = deque()  # times of the frames given to step (a live source drops some)

    def reset(self) -> None:
        self.tracks.clear()

    def step(self, attrs: np.ndarray, t: float, valid: bool = True) -> np.ndarray:
        """Region attributes ``(N, len(ATTRIBUTE_NAMES))`` of the frame at time ``t`` -> ``(M, len(OBS_COLUMNS))``.

        ``valid`` False (no flow: first frame, scene cut) ends every track first.
        """
        c = self.cfg
        if not valid:
            self.reset()
        self._seen.append(t)
        while self._seen[0] < t - c.window_s - 1.0 / self.fps:
            self._seen.popleft()
        for k in [k for k, tr in self.tracks.items() if t - tr.last[0] > c.max_gap_s]:
            del self.tracks[k]
        attrs = np.asarray(attrs, np.float64).reshape(-1, len(ATTRIBUTE_NAMES))
        w, h = self.size
        keep = (attrs[:, _H] >= c.min_height_px) & (attrs[:, _H] <= c.max_size_share * h) \
            & (attrs[:, _W] <= c.max_size_share * w)
        rows = attrs[keep]
        pairs = []
        for i, a in enumerate(rows):
            for k, tr in self.tracks.items():
                lt, lx, ly, lvx, lvy, lh = tr.last
                frames = (t - lt) * self.fps
                d = math.hypot(a[_X] - (lx + lvx * frames), a[_Y] - (ly + lvy * frames))
                g = max(c.gate * max(a[_H], lh), c.min_gate_px)
                if d < g:
                    pairs.append((d / g, i, k))
        pairs.sort()
        owner: dict[int, int] = {}
        taken: set[int] = set()
        for _, i, k in pairs:
            if i not in owner and k not in taken:
                owner[i] = k
                taken.add(k)
        out = np.zeros((len(rows), len(OBS_COLUMNS)))
        for i, a in enumerate(rows):
            k = owner.get(i)
            if k is None:
                k = self._next
                self._next += 1
                self.tracks[k] = _Track(t, deque())
            tr = self.tracks[k]
            tr.hist.append((t, a[_X], a[_Y], a[_VX], a[_VY], a[_H]))
            while tr.hist[0][0] < t - c.window_s:
                tr.hist.popleft()
            out[i] = (k, t - tr.t0, *self._measure(tr, t), a[_X], a[_Y])
        return out

    def _measure(self, tr: _Track, t: float) -> tuple[float, float, float]:
        """Heading, agreement, speed of a track over its window."""
        h = np.array(tr.hist)
        t0, x0, y0 = h[0, :3]
        dx, dy = h[-1, 1] - x0, h[-1, 2] - y0
        dt = t - t0
        if dt <= 0:
            return 0.0, 0.0, 0.0
        mvx, mvy = float(h[:, 3].mean()), float(h[:, 4].mean())
        coherence = math.hypot(mvx, mvy) / max(float(np.hypot(h[:, 3], h[:, 4]).mean()), 1e-6)
        disp = math.hypot(dx, dy)
        agree = (dx * mvx + dy * mvy) / max(disp * math.hypot(mvx, mvy), 1e-9)
        # share of the frames this tracker was given in the window in which the track was found: the frames
        # a live reader dropped were never seen, and do not count against it
        seen = len(self._seen) - bisect.bisect_left(self._seen, t0 - 1e-9)
        cover = len(h) / max(min(dt * self.fps + 1, seen), 1)
        weight = max(agree, 0.0) * min(coherence, 1.0) * (cover >= self.min_cover)
        return math.atan2(dy, dx), weight, disp / dt / max(float(np.median(h[:, 5])), 1.0)


def track_clip(cfg: TrackStreamConfig, frame_size: tuple[int, int], fps: float,
               frames: Iterable[tuple[np.ndarray, float, bool]]) -> np.ndarray:
    """Observations of a whole clip: ``frames`` yields ``(region_attrs, timestamp_s, valid)`` per frame."""
    tracker = RegionTracker(cfg, frame_size, fps)
    obs = [tracker.step(a, t, v) for a, t, v in frames]
    return np.concatenate(obs) if obs else np.zeros((0, len(OBS_COLUMNS)))


class TrackStream(nn.Module):
    """Normal occupancy and per-cell direction histograms of tracked objects (buffers; see the module docstring)."""

    def __init__(self, cfg: TrackStreamConfig, frame_size: tuple[int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        rows, cols = cfg.grid
        self.register_buffer("log_occupancy", torch.full((rows, cols), -math.log(rows * cols), dtype=torch.float64))
        self.register_buffer("reference", torch.tensor(-math.log(rows * cols), dtype=torch.float64))
        self.register_buffer("log_direction", torch.full((rows, cols, cfg.bins), -math.log(cfg.bins),
                                                         dtype=torch.float64))

    def _cells(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = self.cfg.grid
        w, h = self.frame_size
        r = np.clip(((obs[:, 6] - 1) / h * rows).astype(int), 0, rows - 1)
        c = np.clip((obs[:, 5] / w * cols).astype(int), 0, cols - 1)
        return r, c

    def _bins(self, heading: np.ndarray) -> np.ndarray:
        b = self.cfg.bins
        return np.floor((heading + np.pi) / (2 * np.pi) * b).astype(np.int64) % b

    def fit(self, obs: np.ndarray) -> None:
        """Learn from the observations ``(N, len(OBS_COLUMNS))`` of normal clips (:func:`track_clip`)."""
        from scipy.ndimage import gaussian_filter

        c = self.cfg
        obs = np.asarray(obs, np.float64).reshape(-1, len(OBS_COLUMNS))
        weight = self.motion_weight(obs)
        if not weight.sum() > 0:
            return  # nothing moved (no observation, or none with motion weight): the uniform prior stays
        rows, cols = c.grid
        r, k = self._cells(obs)
        occ = np.zeros((rows, cols))
        np.add.at(occ, (r, k), weight)
        if c.smooth_cells > 0:
            occ = gaussian_filter(occ, c.smooth_cells, mode="nearest")
        occ /= occ.sum()
        log_occ = np.log((1 - c.occupancy_floor) * occ + c.occupancy_floor / (rows * cols))
        moving = (obs[:, 4] >= c.direction_speed) & (obs[:, 3] >= c.direction_agreement)
        counts = np.zeros((rows, cols, c.bins))
        np.add.at(counts, (r[moving], k[moving], self._bins(obs[moving, 2])), 1.0)
        if c.smooth_cells > 0:
            counts = gaussian_filter(counts, (c.smooth_cells, c.smooth_cells, 0), mode="nearest")
        scene = counts.sum((0, 1)) + 1e-3
        scene /= scene.sum()
        post = counts + c.prior * scene
        p = (1 - c.uniform) * post / post.sum(-1, keepdims=True) + c.uniform / c.bins
        self.log_occupancy = torch.from_numpy(log_occ)
        self.reference = torch.tensor(_weighted_median(log_occ[r, k], weight), dtype=torch.float64)
        self.log_direction = torch.from_numpy(np.log(p))

    def evidence(self, obs: np.ndarray) -> np.ndarray:
        """``(N,)`` evidence of observations: (place rarity + heading surprise) x motion weight."""
        obs = np.asarray(obs, np.float64).reshape(-1, len(OBS_COLUMNS))
        if len(obs) == 0:
            return np.zeros(0)
        r, k = self._cells(obs)
        place = np.clip(float(self.reference) - self.log_occupancy.numpy()[r, k], 0.0, None)
        heading = -self.log_direction.numpy()[r, k, self._bins(obs[:, 2])]
        return (place + heading) * self.motion_weight(obs)

    def motion_weight(self, obs: np.ndarray) -> np.ndarray:
        """``(N,)`` in [0, 1]: agreement of displacement and flow x speed (up to ``full_speed``)."""
        return np.clip(obs[:, 3], 0.0, 1.0) * np.clip(obs[:, 4] / self.cfg.full_speed, 0.0, 1.0)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, cum[-1] / 2)])


@dataclass
class _TrackEvidence:
    recent: deque[tuple[float, float]]  # (t, evidence) over the last score_window_s
    excess: float = 0.0  # accumulated evidence above TrackStreamConfig.accumulate


class TrackScorer:
    """Per-video state of the ``tracks`` stream: tracker plus each track's recent and accumulated evidence."""

    def __init__(self, stream: TrackStream, fps: float) -> None:
        self.stream = stream
        self.tracker = RegionTracker(stream.cfg, stream.frame_size, fps)
        self._evidence: dict[int, _TrackEvidence] = {}
        self._last_t: float | None = None

    def _steps(self, t: float) -> float:
        """Frames at the scorer's rate since the frame scored before: 1 when every frame is scored, 2 when a
        live reader dropped the one between. Capped at ``max_gap_s`` (every track has ended after that)."""
        last, self._last_t = self._last_t, t
        if last is None:
            return 1.0
        fps = self.tracker.fps
        return float(min(max(round((t - last) * fps), 1), max(1, round(self.stream.cfg.max_gap_s * fps))))

    def score(self, attrs: np.ndarray, t: float, valid: bool = True) -> float:
        """The frame's raw score (highest track score; 0 when no track is old enough)."""
        c = self.stream.cfg
        steps = self._steps(t)
        obs = self.tracker.step(attrs, t, valid)
        live = set(self.tracker.tracks)  # ended tracks (a cut ends them all) drop their evidence
        for k in [k for k in self._evidence if k not in live]:
            del self._evidence[k]
        best = 0.0
        for row, e in zip(obs, self.stream.evidence(obs), strict=True):
            k = int(row[0])
            ev = self._evidence.get(k)
            if ev is None:
                ev = self._evidence[k] = _TrackEvidence(deque())
            hist = ev.recent
            hist.append((t, float(e)))
            while hist[0][0] < t - c.score_window_s:
                hist.popleft()
            if c.accumulate is not None:
                # added up in stream time: an observation stands for the frames since the one scored before,
                # so a stream analysed at half its rate accumulates as fast per second as one analysed in full
                ev.excess = max(0.0, ev.excess + (float(e) - c.accumulate) * steps)
            if row[1] >= c.min_age_s:
                best = max(best, sum(v for _, v in hist) / len(hist) + ev.excess)
        return best


def score_observations(stream: TrackStream, fps: float,
                       frames: Sequence[tuple[np.ndarray, float, bool]]) -> np.ndarray:
    """Raw ``tracks`` scores of a sequence of ``(region_attrs, timestamp_s, valid)`` frames (offline)."""
    sc = TrackScorer(stream, fps)
    return np.array([sc.score(a, t, v) for a, t, v in frames])


__all__ = ["OBS_COLUMNS", "RegionTracker", "TrackScorer", "TrackStream", "TrackStreamConfig", "score_observations",
           "track_clip"]
