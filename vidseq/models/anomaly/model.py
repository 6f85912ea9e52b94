"""Frame-level anomaly model: four streams fitted on normal video, fused after standardisation.

Streams (each gives one raw score per frame; higher = more anomalous):

``speed`` (per-location normal-speed model)
    From normal frames, the 90th percentile of moving-pixel flow magnitude is learnt for every cell of a
    coarse grid (perspective: people near the camera move more pixels per frame). A frame's flow
    magnitude map is divided by this scale map, averaged over ``temporal`` frames (centred) and a
    ``window`` x ``window`` box, and the frame score is the ``frame_quantile`` of that map: "how much
    faster than normal for its place is the fastest object-sized patch". Measured on UCSD Ped2 this
    stream carries the signal (see docs/anomaly.md and docs/experiments/ped2.md).
``objects`` (density of moving regions)
    Class-agnostic moving regions (background subtraction, :mod:`vidseq.features.regions`) measured with
    the flow inside them (speed, velocity, size; speeds and sizes divided by the scale map at the
    object's ground point), standardised; score = mean distance to the ``k`` nearest normal objects
    (kNN bank stored as a tensor); frame score = max over the frame's objects (0 with no object).
``crops`` (density of object appearance)
    Every moving region's crop (box plus margin, from the full-resolution frame) is encoded by the
    backbone (:mod:`vidseq.features.crops`); the vectors are L2-normalised and projected on the top
    ``pca_dim`` principal components of the normal objects' vectors; score = mean distance to the ``k``
    nearest normal objects; frame score = max over the frame's objects (0 with no object). It sees what
    the objects stream cannot: an object that moves like a pedestrian but does not look like one.
``place`` / ``direction`` (where things move, and which way, per cell of the motion grid)
    Read from the motion descriptor's per-cell statistics (share of moving pixels, mean flow vector, on
    ``motion.grid``). ``place``: how far a cell's moving share exceeds what normal frames ever showed there
    (its ``scene.quantile``), relative to that level: a person where nobody walks, an object much larger than
    the ones that pass there. ``direction``: the surprise (negative log probability) of an active cell's flow
    direction under the cell's normal direction histogram (``scene.bins`` bins, a Dirichlet prior toward the
    scene-wide histogram for cells seen rarely): someone walking against the traffic, or across it. Frame
    score = max over cells. They see slow anomalies the speed stream cannot.
``tracks`` (where a tracked object walks, and which way; :mod:`vidseq.models.anomaly.tracks`)
    Moving regions linked into tracks; a track's evidence is how rare its cell is for normal tracks plus the
    surprise of its heading there, averaged over its last seconds; frame score = the highest track's. It
    finds a walker off the path or against the traffic that fills too little of a grid cell for ``place`` /
    ``direction``.
``frame`` (stacked LSTM next-step prediction)
    A stacked LSTM (:class:`vidseq.models.encoder.StackedLSTMEncoder`) reads per-frame vectors
    [backbone appearance feature, motion descriptor] and predicts the next one; score = squared error.

Fusion: every stream's raw score is standardised with the mean/std of its scores on normal validation
frames, the z-scores are combined (weighted mean, or max), and the result is smoothed in time with a
centred Gaussian of ``smooth_sigma_s`` seconds (truncated at ``smooth_truncate`` sigmas). Centred
windows need future frames: a live scorer emits frame ``t`` once frame ``t + delay`` has arrived
(:attr:`AnomalyModel.delay_frames`), and offline scoring runs the very same streaming code, so both
give the same numbers.

Everything fitted (scale map, kNN bank, LSTM weights, normalisation statistics) lives in the module's
state dict, so the checkpoint loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, get_args

import numpy as np
import torch
from torch import nn

from vidseq.config import from_dict, to_dict
from vidseq.errors import CheckpointError, ConfigError, InputShapeError
from vidseq.features.crops import CropConfig
from vidseq.features.motion import CELL_STATS, MotionConfig
from vidseq.features.regions import ATTRIBUTE_NAMES, RegionConfig, normalise_attributes
from vidseq.models.anomaly.calibrate import CalibrationConfig
from vidseq.models.anomaly.tracks import TrackScorer, TrackStream, TrackStreamConfig
from vidseq.models.encoder import EncoderConfig, StackedLSTMEncoder

STREAMS: tuple[str, ...] = ("speed", "objects", "crops", "frame", "place", "direction", "tracks")
SCENE_STREAMS: tuple[str, ...] = ("place", "direction")
MODEL_NAME = "anomaly_fusion"
FRAME_MODEL_NAME = "anomaly_frame_lstm"

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------ configs


@dataclass(frozen=True)
class SpeedStreamConfig:
    """Per-location normal-speed stream (magnitude-map pixels are ``motion.map_stride`` frame pixels).

    Attributes:
        cell: scale-map cell size in magnitude-map pixels.
        quantile: a location's normal speed = this quantile of its moving-pixel speeds on normal frames.
        min_samples: cells with fewer moving samples borrow their row's (or the global) value.
        smooth_cells: Gaussian smoothing of the scale map, in cells.
        temporal: frames averaged (centred, odd) before the spatial window.
        window: box window (magnitude-map pixels) over which local speed is averaged.
        frame_quantile: frame score = this quantile of the local normalised speed map.
        max_speed: histogram range in px/frame (faster values fall in the last bin).
        bins: histogram bins over ``[0, max_speed]``.
    """

    cell: int = 3
    quantile: float = 0.9
    min_samples: int = 30
    smooth_cells: float = 1.0
    temporal: int = 3
    window: int = 9
    frame_quantile: float = 0.998
    max_speed: float = 32.0
    bins: int = 1600

    def __post_init__(self) -> None:
        if self.cell < 1 or self.window < 1 or self.bins < 10:
            raise ConfigError("speed.cell, speed.window must be >= 1 and speed.bins >= 10")
        if self.temporal < 1 or self.temporal % 2 == 0:
            raise ConfigError(f"speed.temporal must be odd and >= 1, got {self.temporal}")
        if not (0 < self.quantile < 1 and 0 < self.frame_quantile <= 1):
            raise ConfigError("speed.quantile must be in (0, 1) and speed.frame_quantile in (0, 1]")


@dataclass(frozen=True)
class LingerConfig:
    """The ``linger`` alarm: faster-than-normal motion that stays in one place.

    It reads the speed stream's local normalised speed map (1 = the place's normal fast speed, after the
    temporal and spatial windows) and adds up, for every place, by how much it exceeds ``excess`` over the last
    ``window_s`` seconds of stream time. A place scores that sum, but never more than its last ``hold_s`` seconds
    would add up to over ``window_s`` at the same rate, so a place the mover has left stops scoring within
    ``hold_s`` (and a normal walker passing there later adds only its own share). A frame's raw linger score is
    the largest place score (seconds x excess).
    Someone walking through at a normal pace adds little anywhere; someone pacing up and down, or running in
    circles, adds at the same place again and again. It is not fused with the streams: it alarms by itself once
    its score exceeds the warm-up's median plus ``margin`` times the warm-up's spread (99.5th percentile minus
    median, at least ``min_spread``; the warm-up's sums are taken without the ``hold_s`` bound, tails included),
    so it neither moves the budget threshold nor takes a share of the budget.

    Attributes:
        excess: local normalised speed above which motion counts.
        window_s: seconds over which a place's excess is added up.
        hold_s: the recent part of the window whose rate bounds a place's score (at most ``window_s``).
        margin: the alarm level, in warm-up spreads above the warm-up median.
        min_spread: smallest spread (a warm-up in which nothing moved fast anywhere).
    """

    excess: float = 0.75
    window_s: float = 10.0
    hold_s: float = 2.0
    margin: float = 8.0
    min_spread: float = 0.05

    def __post_init__(self) -> None:
        vals = {"excess": self.excess, "window_s": self.window_s, "hold_s": self.hold_s, "margin": self.margin,
                "min_spread": self.min_spread}
        bad = [k for k, v in vals.items() if not (math.isfinite(v) and (v >= 0 if k == "excess" else v > 0))]
        if bad:
            raise ConfigError(f"linger.{bad[0]} must be {'>= 0' if bad[0] == 'excess' else '> 0'}, got "
                              f"{vals[bad[0]]}")
        if self.hold_s > self.window_s:
            raise ConfigError(f"linger.hold_s must be <= linger.window_s, got {self.hold_s} > {self.window_s}")

    def level(self, warmup_scores: np.ndarray) -> float:
        """The alarm level from raw linger scores of normal frames (inf with none)."""
        v = np.asarray(warmup_scores, np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return math.inf
        med = float(np.median(v))
        return med + self.margin * max(float(np.quantile(v, 0.995)) - med, self.min_spread)


@dataclass(frozen=True)
class ObjectStreamConfig:
    """kNN density over moving-region attributes.

    Attributes:
        attributes: names from :data:`vidseq.features.regions.ATTRIBUTE_NAMES`.
        k: neighbours averaged.
        max_bank: normal objects kept (random subset, seeded) in the bank.
        seed: subset seed.
    """

    attributes: tuple[str, ...] = ("speed_median", "speed_p90", "vx", "vy", "height", "width")
    k: int = 5
    max_bank: int = 20000
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [a for a in self.attributes if a not in ATTRIBUTE_NAMES]
        if bad or not self.attributes:
            raise ConfigError(f"objects.attributes: unknown {bad}; known: {', '.join(ATTRIBUTE_NAMES)}")
        if self.k < 1 or self.max_bank < 1:
            raise ConfigError("objects.k and objects.max_bank must be >= 1")

    @property
    def indices(self) -> list[int]:
        return [ATTRIBUTE_NAMES.index(a) for a in self.attributes]


@dataclass(frozen=True)
class SceneStreamConfig:
    """The ``place`` and ``direction`` streams (cells of ``motion.grid``).

    Attributes:
        active_share: a cell is active when at least this share of its pixels moves.
        quantile: place: a cell's normal moving share is this quantile over normal frames.
        floor: place: normal moving shares below this count as this (cells where nothing moved).
        bins: direction: histogram bins over 360 degrees.
        prior: direction: pseudo-counts of the scene-wide histogram added to every cell's.
        uniform: direction: this share of every cell's distribution is uniform over the bins, which bounds the
            surprise of a direction never seen (a few stray flow vectors cannot score without limit).
        full_share: direction: an active cell's surprise counts fully from this moving share up (less below,
            so a few noisy pixels carry little weight).
    """

    active_share: float = 0.03
    quantile: float = 0.995
    floor: float = 0.02
    bins: int = 8
    prior: float = 2.0
    uniform: float = 0.05
    full_share: float = 0.1

    def __post_init__(self) -> None:
        if not (0 < self.active_share < 1 and 0 < self.quantile <= 1 and 0 < self.floor < 1 and 0 < self.full_share):
            raise ConfigError("scene.active_share, scene.floor must be in (0, 1), scene.quantile in (0, 1], "
                              "scene.full_share > 0")
        if self.bins < 2 or self.prior <= 0 or not 0 < self.uniform < 1:
            raise ConfigError("scene.bins must be >= 2, scene.prior > 0 and scene.uniform in (0, 1)")


@dataclass(frozen=True)
class CropStreamConfig:
    """kNN density over backbone features of object crops (the backbone is ``frame.backbone`` / ``frame.weights``).

    Attributes:
        size: crop side fed to the backbone (px).
        margin: box growth per side, fraction of the box size.
        feature_dim: backbone output width per crop (``None``: native).
        batch_size: crops per backbone call.
        pca_dim: principal components of the normal objects' (L2-normalised) vectors kept for the kNN.
        k: neighbours averaged.
        max_bank: normal objects kept (random subset, seeded) in the bank.
        seed: subset seed.
    """

    size: int = 64
    margin: float = 0.15
    feature_dim: int | None = 256
    batch_size: int = 256
    pca_dim: int = 32
    k: int = 5
    max_bank: int = 20000
    seed: int = 0

    def __post_init__(self) -> None:
        self.crop  # noqa: B018 - validates the crop settings
        if self.pca_dim < 1 or self.k < 1 or self.max_bank < 1:
            raise ConfigError("crops.pca_dim, crops.k and crops.max_bank must be >= 1")

    @property
    def crop(self) -> CropConfig:
        return CropConfig(self.size, self.margin, self.feature_dim, self.batch_size)


@dataclass(frozen=True)
class FrameStreamConfig:
    """Stacked-LSTM next-step predictor over per-frame vectors.

    Attributes:
        appearance: include the backbone feature of each frame.
        motion: include the motion descriptor of each frame.
        backbone: backbone name (:func:`vidseq.features.backbones.create_backbone`).
        weights: explicit backbone weights file (None: the resolver's default, e.g. packaged ImageNet).
        imgsz: backbone input size.
        feature_dim: backbone output width (None: native).
        hidden_dim, num_layers, dropout: LSTM encoder.
        window: training sequence length (frames).
        stride: step between training windows.
        std_floor: input standardisation floor for motion-descriptor cells, as a fraction of that
            statistic's pooled scale over all cells (0 = off). A cell where nothing moved in the
            training clips has a near-zero std; without the floor any motion there gives z-scores in the
            hundreds and the prediction error is about that one cell (it stopped the LSTM generalising
            to held-out normal clips).
    """

    appearance: bool = True
    motion: bool = True
    backbone: str = "mobilenet_v2"
    weights: str | None = None
    imgsz: int = 224
    feature_dim: int | None = 512
    hidden_dim: int = 128
    num_layers: int = 2
    dropout: float = 0.1
    window: int = 16
    stride: int = 4
    std_floor: float = 0.5

    def __post_init__(self) -> None:
        if self.std_floor < 0:
            raise ConfigError("frame.std_floor must be >= 0")
        if not (self.appearance or self.motion):
            raise ConfigError("frame stream needs appearance and/or motion inputs")
        if self.window < 2 or self.stride < 1:
            raise ConfigError("frame.window must be >= 2 and frame.stride >= 1")


Standardisation = Literal["meanstd", "quantile"]
"""How a stream's raw score becomes its z-score (:attr:`AnomalyConfig.standardise`)."""


@dataclass(frozen=True)
class AnomalyConfig:
    """The anomaly model (what is fitted, how streams are fused and smoothed, how the threshold is set).

    Attributes:
        streams: streams fitted and fused, a subset of :data:`STREAMS`.
        weights: fusion weight per stream, same order as ``streams`` (empty = all 1).
        fusion: ``mean`` (weighted mean of z-scores) or ``max`` (max of weighted z-scores).
        standardise: how a stream's raw score becomes its z-score: ``meanstd`` (mean and standard deviation of
            its normal scores) or ``quantile`` (median, and the distance from it to the 99.5th percentile:
            a stream whose normal scores are mostly 0 with rare spikes is not blown up by a tiny std).
        smooth_sigma_s: temporal Gaussian smoothing of the fused score, seconds (0 = off).
        smooth_truncate: kernel radius in sigmas (sets the live delay).
        normalise_pixels: every frame's brightness and contrast are normalised and it is lightly denoised
            before its features (the pixel part of the camera compensation,
            :class:`~vidseq.features.camera.CameraConfig` defaults), when the model is fitted and when it
            scores a stream: an exposure change then moves no feature. False: raw pixels, in both.
    """

    streams: tuple[str, ...] = ("speed",)
    weights: tuple[float, ...] = ()
    fusion: Literal["mean", "max"] = "mean"
    standardise: Standardisation = "meanstd"
    smooth_sigma_s: float = 0.3
    smooth_truncate: float = 3.0
    normalise_pixels: bool = False
    motion: MotionConfig = field(default_factory=MotionConfig)
    regions: RegionConfig = field(default_factory=RegionConfig)
    speed: SpeedStreamConfig = field(default_factory=SpeedStreamConfig)
    objects: ObjectStreamConfig = field(default_factory=ObjectStreamConfig)
    crops: CropStreamConfig = field(default_factory=CropStreamConfig)
    frame: FrameStreamConfig = field(default_factory=FrameStreamConfig)
    scene: SceneStreamConfig = field(default_factory=SceneStreamConfig)
    tracks: TrackStreamConfig = field(default_factory=TrackStreamConfig)
    linger: LingerConfig | None = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def __post_init__(self) -> None:
        bad = [s for s in self.streams if s not in STREAMS]
        if bad or not self.streams or len(set(self.streams)) != len(self.streams):
            raise ConfigError(f"streams: {list(self.streams)} must be distinct names from {', '.join(STREAMS)}")
        if self.weights and len(self.weights) != len(self.streams):
            raise ConfigError(f"weights: {len(self.weights)} values for {len(self.streams)} streams")
        if any(w < 0 for w in self.weights) or (self.weights and sum(self.weights) <= 0):
            raise ConfigError("weights must be >= 0 with a positive sum")
        if self.smooth_sigma_s < 0 or self.smooth_truncate <= 0:
            raise ConfigError("smooth_sigma_s must be >= 0 and smooth_truncate > 0")
        if self.fusion not in ("mean", "max") or self.standardise not in get_args(Standardisation):
            raise ConfigError(f"fusion must be mean or max and standardise meanstd or quantile, got "
                              f"{self.fusion!r} / {self.standardise!r}")

    @property
    def stream_weights(self) -> tuple[float, ...]:
        return tuple(self.weights) if self.weights else (1.0,) * len(self.streams)

    def uses(self, stream: str) -> bool:
        return stream in self.streams

    @property
    def needs_regions(self) -> bool:
        return "objects" in self.streams or "crops" in self.streams or "tracks" in self.streams

    @property
    def needs_crops(self) -> bool:
        return "crops" in self.streams

    @property
    def needs_appearance(self) -> bool:
        return "frame" in self.streams and self.frame.appearance


# --------------------------------------------------------------------------------------- per-frame inputs


@dataclass
class FrameFeatures:
    """Everything the streams read for one frame (computed by :mod:`vidseq.tasks.anomaly.features`).

    Attributes:
        frame_index, timestamp_s: source frame number and time.
        magnitude_map: ``(mh, mw)`` pooled flow magnitude (working px / frame).
        valid: False when the frame had no previous frame (first frame: no flow).
        descriptor: ``(D,)`` motion descriptor.
        region_attrs: ``(N, A)`` raw attributes of the frame's moving regions (``A = len(ATTRIBUTE_NAMES)``).
        appearance: ``(Da,)`` backbone feature or None.
        region_crops: ``(N, Dc)`` backbone features of the regions' crops (same rows) or None.
        home_cover: share of the camera's home view the frame shows (below 1 while a zoomed or panned camera
            is registered to it: :mod:`vidseq.features.camera`).
    """

    frame_index: int
    timestamp_s: float
    magnitude_map: np.ndarray
    valid: bool
    descriptor: np.ndarray
    region_attrs: np.ndarray
    appearance: np.ndarray | None = None
    region_crops: np.ndarray | None = None
    home_cover: float = 1.0


@dataclass
class ScoredFrame:
    """Scores of one frame: raw per stream, fused z-score, smoothed final ``score``."""

    position: int  # 0-based position in the scored sequence
    frame_index: int
    timestamp_s: float
    raw: dict[str, float]
    fused: float
    score: float
    z: dict[str, float] = field(default_factory=dict)  # weighted z per stream (what the fusion took)
    linger: float | None = None  # raw linger score (None: the model has no linger alarm)

    @property
    def cause(self) -> str | None:
        """The stream with the highest weighted z on this frame (which cue the frame's score comes from)."""
        return top_stream(self.z)


def top_stream(z: dict[str, float]) -> str | None:
    """Name of the stream with the highest value in ``z`` (None when empty)."""
    return max(z, key=lambda k: z[k]) if z else None


# ------------------------------------------------------------------------------------ streaming helpers


class CenteredWindow(Generic[T]):
    """Apply ``fn`` to the centred window ``items[q - r .. q + r]`` of each position ``q``, streaming.

    Indices outside the sequence are clamped to its ends (``nearest`` padding), so the output for
    position ``q`` is ready once item ``q + r`` has arrived, or at :meth:`finish`. Feeding a whole
    array and calling ``finish`` is the offline computation: results are identical by construction.
    """

    def __init__(self, radius: int, fn: Callable[[list[T]], Any]) -> None:
        self.radius = int(radius)
        self.fn = fn
        self._items: dict[int, T] = {}
        self._n = 0
        self._next = 0

    def _emit(self, q: int, last: int) -> Any:
        window = [self._items[min(max(i, 0), last)] for i in range(q - self.radius, q + self.radius + 1)]
        return self.fn(window)

    def _drop_old(self) -> None:
        for i in [i for i in self._items if i < self._next - self.radius]:
            del self._items[i]

    def push(self, item: T) -> list[tuple[int, Any]]:
        self._items[self._n] = item
        self._n += 1
        out = []
        while self._next + self.radius <= self._n - 1:
            out.append((self._next, self._emit(self._next, self._n - 1)))
            self._next += 1
        self._drop_old()
        return out

    def finish(self) -> list[tuple[int, Any]]:
        out = []
        while self._next < self._n:
            out.append((self._next, self._emit(self._next, self._n - 1)))
            self._next += 1
        self._items.clear()
        return out


def gaussian_kernel(sigma_frames: float, truncate: float) -> np.ndarray:
    """Normalised Gaussian taps of radius ``ceil(truncate * sigma)``; ``[1.0]`` when sigma < 0.25 frames."""
    if sigma_frames < 0.25:
        return np.ones(1)
    r = int(math.ceil(truncate * sigma_frames))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_frames) ** 2)
    return k / k.sum()


def smooth_scores(scores: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Centred smoothing with nearest padding (the offline twin of the streaming smoother)."""
    s = np.asarray(scores, np.float64)
    if len(kernel) == 1 or len(s) == 0:
        return s.copy()
    r = len(kernel) // 2
    win = CenteredWindow(r, lambda xs: float(np.dot(kernel, xs)))
    out = [v for x in s for _, v in win.push(float(x))] + [v for _, v in win.finish()]
    return np.array(out)


# ------------------------------------------------------------------------------------------ speed stream


class SpeedMapFitter:
    """Accumulates per-cell histograms of moving-pixel speeds over normal frames (bounded memory)."""

    def __init__(self, cfg: SpeedStreamConfig, moving_threshold: float) -> None:
        self.cfg = cfg
        self.threshold = float(moving_threshold)
        self.map_shape: tuple[int, int] | None = None
        self._hist: np.ndarray | None = None  # (cells, bins) int64
        self._grid: tuple[int, int] = (0, 0)

    def update(self, maps: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add ``(T, mh, mw)`` magnitude maps (invalid frames skipped)."""
        maps = np.asarray(maps, np.float32)
        if maps.ndim != 3:
            raise InputShapeError(f"speed fit: maps must be (T, mh, mw), got {maps.shape}")
        if valid is not None:
            maps = maps[np.asarray(valid, bool)]
        if self.map_shape is None:
            self.map_shape = (maps.shape[1], maps.shape[2])
            c = self.cfg.cell
            self._grid = (math.ceil(maps.shape[1] / c), math.ceil(maps.shape[2] / c))
            self._hist = np.zeros((self._grid[0] * self._grid[1], self.cfg.bins), np.int64)
        elif maps.shape[1:] != self.map_shape:
            raise InputShapeError(f"speed fit: map size {maps.shape[1:]} differs from {self.map_shape} "
                                  "(all normal videos must have the same size)")
        if len(maps) == 0:
            return
        assert self._hist is not None
        mh, mw = self.map_shape
        c = self.cfg.cell
        cell_id = ((np.arange(mh)[:, None] // c) * self._grid[1] + np.arange(mw)[None, :] // c)  # (mh, mw)
        moving = maps > self.threshold
        ids = np.broadcast_to(cell_id, maps.shape)[moving]
        b = np.minimum((maps[moving] / self.cfg.max_speed * self.cfg.bins).astype(np.int64), self.cfg.bins - 1)
        self._hist += np.bincount(ids * self.cfg.bins + b, minlength=self._hist.size).reshape(self._hist.shape)

    def scale_map(self) -> np.ndarray:
        """``(mh, mw)`` float32 normal speed per location (see :class:`SpeedStreamConfig`)."""
        from scipy.ndimage import gaussian_filter

        if self._hist is None or self.map_shape is None:
            raise InputShapeError("speed fit: no frames were added")
        gh, gw = self._grid
        counts = self._hist.sum(1)
        width = self.cfg.max_speed / self.cfg.bins
        q = np.full(gh * gw, np.nan)
        cum = np.cumsum(self._hist, 1)
        for i in np.flatnonzero(counts >= self.cfg.min_samples):
            target = self.cfg.quantile * counts[i]
            j = int(np.searchsorted(cum[i], target))
            before = cum[i, j - 1] if j > 0 else 0
            frac = (target - before) / max(self._hist[i, j], 1)
            q[i] = (j + frac) * width
        grid = q.reshape(gh, gw)
        if np.isnan(grid).all():
            total = self._hist.sum(0)
            if total.sum() > 0:
                j = int(np.searchsorted(np.cumsum(total), self.cfg.quantile * total.sum()))
                fill = (j + 0.5) * width
            else:
                fill = max(2.0 * self.threshold, 0.5)  # no motion at all in the normal data
            grid[:] = fill
        else:
            rows = np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in grid])
            rows = np.where(np.isnan(rows), np.nanmean(grid), rows)
            grid = np.where(np.isnan(grid), rows[:, None], grid)
        if self.cfg.smooth_cells > 0:
            grid = gaussian_filter(grid, self.cfg.smooth_cells, mode="nearest")
        grid = np.maximum(grid, max(self.threshold, 1e-3))
        c = self.cfg.cell
        full = np.kron(grid, np.ones((c, c)))[: self.map_shape[0], : self.map_shape[1]]
        return full.astype(np.float32)


class SpeedStream(nn.Module):
    """Holds the scale map; scores normalised speed maps (see module docstring)."""

    def __init__(self, cfg: SpeedStreamConfig, map_shape: tuple[int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("scale_map", torch.ones(int(map_shape[0]), int(map_shape[1])))

    @property
    def radius(self) -> int:
        return self.cfg.temporal // 2

    def normalise(self, magnitude_map: np.ndarray) -> np.ndarray:
        s = self.scale_map.numpy()
        if magnitude_map.shape != s.shape:
            raise InputShapeError(f"speed stream: magnitude map {magnitude_map.shape} does not match the "
                                  f"model's {s.shape} (different video size or motion settings than training)")
        return (magnitude_map / s).astype(np.float32)

    def local_map(self, maps: list[np.ndarray]) -> np.ndarray:
        """Local normalised speed of the centre frame of ``maps`` (temporal mean, then the spatial window)."""
        from scipy.ndimage import uniform_filter

        m = maps[0].astype(np.float64)
        for x in maps[1:]:
            m = m + x
        m = m / len(maps)
        if self.cfg.window > 1:
            m = uniform_filter(m, size=self.cfg.window, mode="reflect")
        return m

    def map_score(self, local: np.ndarray) -> float:
        """The frame's speed score: the ``frame_quantile`` of its local speed map."""
        return float(np.quantile(local, self.cfg.frame_quantile))

    def window_score(self, maps: list[np.ndarray]) -> float:
        return self.map_score(self.local_map(maps))


class LingerAccumulator:
    """Streaming state of the ``linger`` alarm (:class:`LingerConfig`): for every place, the excess of the local
    speed map over the last ``window_s`` seconds, bounded by the rate of its last ``hold_s``. A frame without
    flow (``valid`` False: the first frame, a scene cut) starts it again. Each frame counts for the stream time
    since the previous one (at most two frame intervals), so a live source that drops frames adds up seconds,
    not frames."""

    def __init__(self, cfg: LingerConfig, fps: float) -> None:
        self.cfg = cfg
        self.step = 1.0 / float(fps)
        self._recent: deque[tuple[float, np.ndarray]] = deque()
        self._sum: np.ndarray | None = None
        self._held: deque[tuple[float, np.ndarray]] = deque()
        self._rsum: np.ndarray | None = None  # the last hold_s seconds' part of it
        self._last_t: float | None = None

    def reset(self) -> None:
        self._recent.clear()
        self._held.clear()
        self._sum = self._rsum = None
        self._last_t = None

    def push(self, local: np.ndarray, t: float, valid: bool = True) -> float:
        """Add the local speed map of the frame at stream time ``t``; returns the frame's raw linger score."""
        if not valid:
            self.reset()
            return 0.0
        dt = self.step if self._last_t is None else min(max(t - self._last_t, 0.0), 2.0 * self.step)
        self._last_t = t
        ex = np.maximum(np.asarray(local, np.float64) - self.cfg.excess, 0.0) * dt
        self._recent.append((t, ex))
        self._sum = ex.copy() if self._sum is None else self._sum + ex
        self._rsum = ex.copy() if self._rsum is None else self._rsum + ex
        while self._recent[0][0] <= t - self.cfg.window_s:
            self._sum -= self._recent.popleft()[1]
        self._held.append((t, ex))
        while self._held[0][0] <= t - self.cfg.hold_s:
            self._rsum -= self._held.popleft()[1]
        return float(max(np.minimum(self._sum, self._rsum * (self.cfg.window_s / self.cfg.hold_s)).max(), 0.0))


def local_speed_maps(maps: np.ndarray, valid: np.ndarray, scale_map: np.ndarray, temporal: int, window: int,
                     ) -> np.ndarray:
    """``(T, h * w)`` local normalised speed of a whole clip: the vectorised twin of the streaming path
    (:class:`_LeadingFill` + :class:`CenteredWindow` + :meth:`SpeedStream.window_score` before its quantile),
    for searches that rescore many settings (:mod:`vidseq.tasks.anomaly.tune`)."""
    from scipy.ndimage import uniform_filter

    t = len(maps)
    if t == 0:
        return np.zeros((0, int(np.prod(scale_map.shape))))
    norm = (np.asarray(maps, np.float32) / scale_map).astype(np.float32)
    valid = np.asarray(valid, bool)
    if not valid.any():
        filled = np.zeros_like(norm)
    else:
        last = np.maximum.accumulate(np.where(valid, np.arange(t), -1))
        filled = norm[np.where(last < 0, int(np.flatnonzero(valid)[0]), last)]
    r = temporal // 2
    idx = np.clip(np.arange(t)[:, None] + np.arange(-r, r + 1)[None, :], 0, t - 1)
    m = filled[idx[:, 0]].astype(np.float64)
    for j in range(1, 2 * r + 1):
        m = m + filled[idx[:, j]]
    m = m / (2 * r + 1)
    if window > 1:
        m = uniform_filter(m, size=(1, window, window), mode="reflect")
    return m.reshape(t, -1)


def speed_scores_offline(maps: np.ndarray, valid: np.ndarray, scale_map: np.ndarray, cfg: SpeedStreamConfig,
                         ) -> np.ndarray:
    """Raw speed-stream scores ``(T,)`` of a whole clip at once (equal to the streaming scorer's)."""
    m = local_speed_maps(maps, valid, scale_map, cfg.temporal, cfg.window)
    return np.quantile(m, cfg.frame_quantile, axis=1) if len(m) else np.zeros(0)


class _LeadingFill:
    """Hold leading invalid (no-flow) maps until the first valid one, which then stands in for them."""

    def __init__(self) -> None:
        self._held = 0
        self._last: np.ndarray | None = None

    def push(self, m: np.ndarray, valid: bool) -> list[np.ndarray]:
        if not valid:
            if self._last is None:
                self._held += 1
                return []
            return [self._last]  # a later invalid frame repeats the previous motion
        out = [m] * (self._held + 1)
        self._held = 0
        self._last = m
        return out

    def finish(self, shape: tuple[int, int]) -> list[np.ndarray]:
        out = [np.zeros(shape, np.float32)] * self._held
        self._held = 0
        return out


# ----------------------------------------------------------------------------------------- objects stream


def descriptor_cells(descriptors: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Motion descriptors ``(..., D)`` -> their per-cell statistics ``(..., rows, cols, len(CELL_STATS))``."""
    rows, cols = grid
    n = rows * cols * len(CELL_STATS)
    if descriptors.shape[-1] < n:
        raise InputShapeError(f"motion descriptor has {descriptors.shape[-1]} values, a {rows}x{cols} grid needs "
                              f"at least {n}")
    return descriptors[..., :n].reshape(*descriptors.shape[:-1], rows, cols, len(CELL_STATS))


_SHARE = CELL_STATS.index("moving_frac")
_VX, _VY, _MAG = CELL_STATS.index("vx_mean"), CELL_STATS.index("vy_mean"), CELL_STATS.index("mag_mean")


class SceneStream(nn.Module):
    """Per-cell normal moving share and direction histogram (see the module docstring); all buffers."""

    def __init__(self, cfg: SceneStreamConfig, grid: tuple[int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.grid = (int(grid[0]), int(grid[1]))
        self.register_buffer("normal_share", torch.full(self.grid, cfg.floor, dtype=torch.float32))
        self.register_buffer("direction_p", torch.full((*self.grid, cfg.bins), 1.0 / cfg.bins, dtype=torch.float32))

    @staticmethod
    def _coherence(cells: np.ndarray) -> np.ndarray:
        """How much of a cell's motion goes one way (|mean flow| / mean |flow|, in [0, 1]): a cell's mean
        direction means little when its flow points every way (a walker's edges, two people crossing, noise)."""
        return np.clip(np.hypot(cells[..., _VX], cells[..., _VY]) / np.maximum(cells[..., _MAG], 1e-6), 0, 1)

    def _bins(self, cells: np.ndarray) -> np.ndarray:
        ang = np.arctan2(cells[..., _VY], cells[..., _VX])
        return (np.floor((ang + np.pi) / (2 * np.pi) * self.cfg.bins).astype(np.int64)) % self.cfg.bins

    def fit(self, cells: np.ndarray) -> None:
        """``cells``: ``(T, rows, cols, S)`` of normal frames (valid flow only)."""
        c = self.cfg
        if len(cells) == 0:
            return
        share = cells[..., _SHARE]
        self.normal_share = torch.from_numpy(np.maximum(np.quantile(share, c.quantile, axis=0), c.floor)
                                             .astype(np.float32))
        active = share >= c.active_share
        counts = np.zeros((*self.grid, c.bins), np.float64)
        t, r, k = np.nonzero(active)
        np.add.at(counts, (r, k, self._bins(cells)[t, r, k]), (share * self._coherence(cells))[t, r, k])
        scene = counts.sum((0, 1)) + 1e-3
        scene /= scene.sum()
        post = counts + c.prior * scene
        p = (1 - c.uniform) * post / post.sum(-1, keepdims=True) + c.uniform / c.bins
        self.direction_p = torch.from_numpy(p.astype(np.float32))

    def scores(self, cells: np.ndarray) -> tuple[float, float]:
        """``(rows, cols, S)`` of one frame -> (place, direction) raw scores."""
        c = self.cfg
        share = cells[..., _SHARE]
        q = self.normal_share.numpy()
        place = float(((share - q).clip(0) / np.maximum(q, 0.05)).max())
        active = share >= c.active_share
        if not active.any():
            return place, 0.0
        p = np.take_along_axis(self.direction_p.numpy(), self._bins(cells)[..., None], -1)[..., 0]
        surprise = -np.log(np.maximum(p, 1e-9)) * np.minimum(share / c.full_share, 1.0) * self._coherence(cells)
        return place, float(surprise[active].max())


class KNNDensity(nn.Module):
    """Mean distance to the ``k`` nearest normal samples after standardisation (bank as a buffer)."""

    def __init__(self, bank_size: int, dim: int, k: int) -> None:
        super().__init__()
        self.k = int(k)
        self.register_buffer("bank", torch.zeros(max(int(bank_size), 1), int(dim)))
        self.register_buffer("mean", torch.zeros(int(dim)))
        self.register_buffer("std", torch.ones(int(dim)))

    def fit(self, x: np.ndarray, max_bank: int, seed: int = 0) -> None:
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise InputShapeError(f"kNN fit needs (N, D) samples with N >= 1, got {x.shape}")
        mean = x.mean(0)
        std = x.std(0) + 1e-6
        if len(x) > max_bank:
            x = x[np.random.default_rng(seed).choice(len(x), max_bank, replace=False)]
        self.bank = torch.from_numpy((x - mean) / std)
        self.mean = torch.from_numpy(mean)
        self.std = torch.from_numpy(std)

    @torch.inference_mode()
    def score(self, x: np.ndarray) -> np.ndarray:
        """``(N, D)`` -> ``(N,)`` mean distance to the k nearest bank entries."""
        if len(x) == 0:
            return np.zeros(0)
        # float64: BLAS results in float32 can differ in the last bits between calls (memory alignment),
        # which would make live and offline scores differ by ~1e-7
        q = (torch.from_numpy(np.asarray(x, np.float64)) - self.mean.double()) / self.std.double()
        d = torch.cdist(q, self.bank.double())
        k = min(self.k, self.bank.shape[0])
        return d.topk(k, largest=False).values.mean(1).numpy()


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class CropDensity(nn.Module):
    """Object-appearance density: L2-normalise, project on stored principal components, kNN (buffers only)."""

    def __init__(self, bank_size: int, in_dim: int, pca_dim: int, k: int) -> None:
        super().__init__()
        self.in_dim = int(in_dim)
        self.register_buffer("center", torch.zeros(self.in_dim, dtype=torch.float64))
        self.register_buffer("components", torch.zeros(self.in_dim, int(pca_dim), dtype=torch.float64))
        self.knn = KNNDensity(bank_size, pca_dim, k)

    def project(self, x: np.ndarray) -> np.ndarray:
        """``(N, in_dim)`` -> ``(N, pca_dim)`` float64."""
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise InputShapeError(f"crop features must be (N, {self.in_dim}), got {x.shape} "
                                  "(different backbone or crops.feature_dim than the checkpoint?)")
        return (_unit_rows(x) - self.center.numpy()) @ self.components.numpy()

    def fit(self, x: np.ndarray, max_bank: int, seed: int = 0) -> None:
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or len(x) == 0:
            raise InputShapeError(f"crop density fit needs (N, D) samples with N >= 1, got {x.shape}")
        xn = _unit_rows(x)
        sample = xn if len(xn) <= max_bank else xn[np.random.default_rng(seed).choice(len(xn), max_bank, False)]
        center = sample.mean(0)
        _, _, vt = np.linalg.svd(sample - center, full_matrices=False)
        comp = np.zeros((self.in_dim, self.components.shape[1]))
        n = min(comp.shape[1], vt.shape[0])
        comp[:, :n] = vt[:n].T
        self.center = torch.from_numpy(center)
        self.components = torch.from_numpy(comp)
        self.knn.fit(((xn - center) @ comp).astype(np.float32), max_bank, seed)  # = project(x), normalised once

    def score(self, x: np.ndarray) -> np.ndarray:
        """``(N, in_dim)`` -> ``(N,)``."""
        if len(x) == 0:
            return np.zeros(0)
        return self.knn.score(self.project(x))


# ------------------------------------------------------------------------------------------- frame stream


class FramePredictor(nn.Module):
    """Stacked LSTM predicting the next per-frame vector (inputs standardised by stored statistics).

    ``forward(x)`` with ``x`` (B, T, D) raw vectors returns ``(predictions (B, T-1, D), loss)``.
    """

    def __init__(self, input_dim: int, hidden_dim: int = 128, num_layers: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.input_dim = int(input_dim)
        self.encoder = StackedLSTMEncoder(EncoderConfig(input_dim=self.input_dim, hidden_dim=hidden_dim,
                                                        num_layers=num_layers, dropout=dropout))
        self.head = nn.Linear(hidden_dim, self.input_dim)
        self.register_buffer("x_mean", torch.zeros(self.input_dim))
        self.register_buffer("x_std", torch.ones(self.input_dim))

    def set_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.x_mean = torch.as_tensor(mean, dtype=torch.float32).clone()
        self.x_std = torch.as_tensor(np.maximum(std, 1e-6), dtype=torch.float32).clone()

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean) / self.x_std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise InputShapeError(f"frame stream expects (B, T, {self.input_dim}) input, got {tuple(x.shape)}")
        z = self.standardise(x)  # (B, T, D)
        h, _ = self.encoder(z[:, :-1])  # (B, T-1, H)
        pred = self.head(h)  # (B, T-1, D)
        loss = ((pred - z[:, 1:]) ** 2).mean()
        return pred, loss

    @torch.inference_mode()
    def errors(self, x: np.ndarray) -> np.ndarray:
        """Per-frame prediction error of a whole ``(T, D)`` sequence; NaN for the first frame."""
        z = self.standardise(torch.from_numpy(np.asarray(x, np.float32))[None])  # (1, T, D)
        h, _ = self.encoder(z)
        pred = self.head(h)[0]  # (T, D): pred[t] predicts z[t + 1]
        err = ((pred[:-1] - z[0, 1:]) ** 2).mean(1).double().numpy()
        return np.concatenate([[np.nan], err])


def build_frame_predictor(model_config: dict[str, Any]) -> FramePredictor:
    """Registry builder for the frame-stream LSTM trained by the engine."""
    return FramePredictor(int(model_config["input_dim"]), int(model_config.get("hidden_dim", 128)),
                          int(model_config.get("num_layers", 2)), float(model_config.get("dropout", 0.1)))


# ---------------------------------------------------------------------------------------------- the model


class AnomalyModel(nn.Module):
    """The fused model: stream submodules + per-stream normalisation statistics (all buffers).

    Args:
        cfg: the :class:`AnomalyConfig`.
        map_shape: magnitude-map ``(mh, mw)`` of the training videos.
        frame_size: working ``(w, h)`` of the training videos (region coordinates).
        bank_size: objects kNN bank rows (objects stream).
        crop_bank_size, crop_dim: crops-stream bank rows and crop feature width.
        frame_input_dim: frame-stream vector length (frame stream).
        descriptor_dim, appearance_dim: parts of that vector (for input checks).
    """

    def __init__(self, cfg: AnomalyConfig, map_shape: tuple[int, int], frame_size: tuple[int, int],
                 bank_size: int = 1, frame_input_dim: int = 0, descriptor_dim: int = 0,
                 appearance_dim: int = 0, crop_bank_size: int = 1, crop_dim: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.map_shape = (int(map_shape[0]), int(map_shape[1]))
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        self.descriptor_dim = int(descriptor_dim)
        self.appearance_dim = int(appearance_dim)
        self.speed = SpeedStream(cfg.speed, self.map_shape)  # always: objects use its scale map too
        self.objects = KNNDensity(bank_size, len(cfg.objects.indices), cfg.objects.k) if cfg.uses("objects") else None
        self.crops = None
        if cfg.uses("crops"):
            if crop_dim < 1:
                raise InputShapeError("anomaly: the crops stream needs the crop feature width (crop_dim)")
            self.crops = CropDensity(crop_bank_size, crop_dim, cfg.crops.pca_dim, cfg.crops.k)
        self.scene = SceneStream(cfg.scene, cfg.motion.grid) if any(cfg.uses(x) for x in SCENE_STREAMS) else None
        self.tracks = TrackStream(cfg.tracks, self.frame_size) if cfg.uses("tracks") else None
        self.frame = None
        if cfg.uses("frame"):
            self.frame = FramePredictor(frame_input_dim, cfg.frame.hidden_dim, cfg.frame.num_layers, cfg.frame.dropout)
        n = len(cfg.streams)
        self.register_buffer("stream_mean", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("stream_std", torch.ones(n, dtype=torch.float64))
        if cfg.linger is not None:  # the linger alarm's level (inf until set from normal frames)
            self.register_buffer("linger_level", torch.tensor(math.inf, dtype=torch.float64))

    def set_linger_level(self, level: float) -> None:
        """Set the linger alarm's level (the model must have one: ``cfg.linger``)."""
        if self.cfg.linger is None:
            raise ConfigError("this anomaly model has no linger alarm (anomaly.streams without linger)")
        self.linger_level = torch.tensor(float(level), dtype=torch.float64)

    # -- config round trip ------------------------------------------------------------------------
    def model_config(self) -> dict[str, Any]:
        return {"config": to_dict(self.cfg), "map_shape": list(self.map_shape), "frame_size": list(self.frame_size),
                "bank_size": int(self.objects.bank.shape[0]) if self.objects is not None else 1,
                "crop_bank_size": int(self.crops.knn.bank.shape[0]) if self.crops is not None else 1,
                "crop_dim": int(self.crops.in_dim) if self.crops is not None else 0,
                "frame_input_dim": int(self.frame.input_dim) if self.frame is not None else 0,
                "descriptor_dim": self.descriptor_dim, "appearance_dim": self.appearance_dim}

    # -- helpers ----------------------------------------------------------------------------------
    def object_vectors(self, region_attrs: np.ndarray) -> np.ndarray:
        """Raw region attributes -> the normalised vectors the objects stream uses."""
        if region_attrs.size and region_attrs.shape[1] != len(ATTRIBUTE_NAMES):
            raise InputShapeError(f"region attributes have {region_attrs.shape[1]} columns, "
                                  f"expected {len(ATTRIBUTE_NAMES)}")
        norm = normalise_attributes(region_attrs.reshape(-1, len(ATTRIBUTE_NAMES)), self.speed.scale_map.numpy(),
                                    self.frame_size, self.cfg.motion.map_stride)
        return norm[:, self.cfg.objects.indices]

    def frame_vector(self, f: FrameFeatures) -> np.ndarray:
        parts = []
        if self.cfg.frame.appearance:
            if f.appearance is None:
                raise InputShapeError("frame stream needs appearance features, none were given")
            if f.appearance.shape[-1] != self.appearance_dim:
                raise InputShapeError(f"appearance feature has {f.appearance.shape[-1]} dims, the checkpoint "
                                      f"expects {self.appearance_dim} (different backbone/feature_dim?)")
            parts.append(f.appearance)
        if self.cfg.frame.motion:
            if f.descriptor.shape[-1] != self.descriptor_dim:
                raise InputShapeError(f"motion descriptor has {f.descriptor.shape[-1]} dims, the checkpoint "
                                      f"expects {self.descriptor_dim} (different motion.grid?)")
            parts.append(f.descriptor)
        return np.concatenate(parts).astype(np.float32)

    def delay_frames(self, fps: float) -> int:
        """Frames a live scorer lags behind its input (centred temporal windows)."""
        k = self.kernel(fps)
        return self.speed.radius + len(k) // 2

    def kernel(self, fps: float) -> np.ndarray:
        return gaussian_kernel(self.cfg.smooth_sigma_s * fps, self.cfg.smooth_truncate)

    def scorer(self, fps: float, *, normalise: bool = True) -> StreamScorer:
        """A fresh streaming scorer for one video at ``fps``."""
        return StreamScorer(self, fps, normalise=normalise)

    def fuse(self, raw: dict[str, float], normalise: bool = True) -> tuple[float, dict[str, float]]:
        """Raw stream scores -> (fused score, weighted z per stream). NaN raw scores count as z = 0 (typical)."""
        z = {}
        for i, name in enumerate(self.cfg.streams):
            v = raw[name]
            if not math.isfinite(v):
                z[name] = 0.0
                continue
            z[name] = (v - float(self.stream_mean[i])) / float(self.stream_std[i]) if normalise else v
        w = self.cfg.stream_weights
        z = {n: z[n] * wi for n, wi in zip(self.cfg.streams, w, strict=True)}
        vals = list(z.values())
        fused = max(vals) if self.cfg.fusion == "max" else sum(vals) / sum(w)
        return float(fused), z


class StreamScorer:
    """Scores :class:`FrameFeatures` one by one (see :class:`AnomalyModel`); emits with a fixed delay.

    ``push(features) -> list[ScoredFrame]`` returns the frames that became final; ``finish()`` returns
    the rest. Offline scoring is ``push`` for every frame then ``finish``.
    """

    def __init__(self, model: AnomalyModel, fps: float, *, normalise: bool = True) -> None:
        if not fps or fps <= 0 or not math.isfinite(fps):
            raise InputShapeError(f"scoring needs a positive frame rate, got {fps}")
        self.model = model
        self.fps = float(fps)
        self.normalise = normalise
        self._fill = _LeadingFill()
        self._speed = CenteredWindow(model.speed.radius, model.speed.local_map)
        self._linger = LingerAccumulator(model.cfg.linger, self.fps) if model.cfg.linger is not None else None
        k = model.kernel(fps)
        self._smooth = CenteredWindow(len(k) // 2, lambda xs: float(np.dot(k, xs)))
        self._pending: dict[int, dict[str, Any]] = {}  # position -> frame info + immediate raw scores
        self._fused: dict[int, tuple[float, dict[str, float]]] = {}
        self._n = 0
        self._lstm_state: Any = None
        self._lstm_pred: torch.Tensor | None = None
        self._tracks = TrackScorer(model.tracks, self.fps) if model.tracks is not None else None
        self._done = False

    def _immediate(self, f: FrameFeatures) -> dict[str, float]:
        m = self.model
        raw: dict[str, float] = {}
        attrs = np.asarray(f.region_attrs, np.float32)
        if (m.objects is not None or self._tracks is not None) and not np.isfinite(attrs).all():
            raise InputShapeError(f"frame {f.frame_index}: region attributes contain NaN/inf")
        if m.objects is not None:
            d = m.objects.score(m.object_vectors(attrs))
            raw["objects"] = float(d.max()) if len(d) else 0.0
        if m.crops is not None:
            if f.region_crops is None:
                raise InputShapeError(f"frame {f.frame_index}: the crops stream needs object crop features, none "
                                      "were given")
            crops = np.asarray(f.region_crops, np.float32)
            if crops.size == 0:
                crops = np.zeros((0, m.crops.in_dim), np.float32)
            if len(crops) != len(f.region_attrs):
                raise InputShapeError(f"frame {f.frame_index}: {len(crops)} crop features for "
                                      f"{len(f.region_attrs)} regions")
            if not np.isfinite(crops).all():
                raise InputShapeError(f"frame {f.frame_index}: crop features contain NaN/inf")
            d = m.crops.score(crops)
            raw["crops"] = float(d.max()) if len(d) else 0.0
        if m.scene is not None:
            cells = descriptor_cells(np.asarray(f.descriptor, np.float32), m.scene.grid)
            if not np.isfinite(cells).all():
                raise InputShapeError(f"frame {f.frame_index}: motion descriptor contains NaN/inf")
            place, direction = m.scene.scores(cells) if f.valid else (0.0, 0.0)
            raw["place"], raw["direction"] = place, direction
        if self._tracks is not None:
            raw["tracks"] = self._tracks.score(attrs, float(f.timestamp_s), bool(f.valid))
        if m.frame is not None:
            x = m.frame_vector(f)
            if not np.isfinite(x).all():
                raise InputShapeError(f"frame {f.frame_index}: features contain NaN/inf")
            with torch.inference_mode():
                z = m.frame.standardise(torch.from_numpy(x)[None])  # (1, D)
                err = float("nan")
                if self._lstm_pred is not None:
                    err = float(((self._lstm_pred - z) ** 2).mean())
                h, self._lstm_state = m.frame.encoder.step(z, self._lstm_state)
                self._lstm_pred = m.frame.head(h)
            raw["frame"] = err
        return raw

    def _complete(self, pos: int, local: np.ndarray) -> list[ScoredFrame]:
        info = self._pending[pos]
        raw = dict(info["raw"])
        raw["speed"] = self.model.speed.map_score(local)
        raw = {k: raw[k] for k in self.model.cfg.streams}
        fused, z = self.model.fuse(raw, self.normalise)
        if self._linger is not None:
            info["linger"] = self._linger.push(local, info["timestamp_s"], info["valid"])
        self._fused[pos] = (fused, raw, z)
        return self._smoothed(self._smooth.push(fused))

    def _smoothed(self, ready: list[tuple[int, float]]) -> list[ScoredFrame]:
        out = []
        for q, value in ready:
            info = self._pending.pop(q)
            fused, raw, z = self._fused.pop(q)
            out.append(ScoredFrame(position=q, frame_index=info["frame_index"], timestamp_s=info["timestamp_s"],
                                   raw=raw, fused=fused, score=float(value), z=z, linger=info.get("linger")))
        return out

    def push(self, f: FrameFeatures) -> list[ScoredFrame]:
        if self._done:
            raise RuntimeError("StreamScorer.push after finish(); make a new scorer")
        mm = np.asarray(f.magnitude_map, np.float32)
        if not np.isfinite(mm).all():
            raise InputShapeError(f"frame {f.frame_index}: magnitude map contains NaN/inf")
        pos = self._n
        self._n += 1
        self._pending[pos] = {"frame_index": int(f.frame_index), "timestamp_s": float(f.timestamp_s),
                              "valid": bool(f.valid), "raw": self._immediate(f)}
        out: list[ScoredFrame] = []
        norm = self.model.speed.normalise(mm)
        for m in self._fill.push(norm, bool(f.valid)):
            for q, s in self._speed.push(m):
                out.extend(self._complete(q, s))
        return out

    def finish(self) -> list[ScoredFrame]:
        self._done = True
        out: list[ScoredFrame] = []
        for m in self._fill.finish(self.model.map_shape):
            for q, s in self._speed.push(m):
                out.extend(self._complete(q, s))
        for q, s in self._speed.finish():
            out.extend(self._complete(q, s))
        out.extend(self._smoothed(self._smooth.finish()))
        return out


def score_frames(model: AnomalyModel, frames: Iterable[FrameFeatures], fps: float,
                 normalise: bool = True) -> list[ScoredFrame]:
    """Offline scoring: the streaming scorer over every frame, then flushed."""
    sc = model.scorer(fps, normalise=normalise)
    out: list[ScoredFrame] = []
    for f in frames:
        out.extend(sc.push(f))
    out.extend(sc.finish())
    return out


def build_model(model_config: dict[str, Any]) -> AnomalyModel:
    """Registry builder: rebuild an :class:`AnomalyModel` (empty buffers) from its checkpoint config."""
    try:
        cfg = from_dict(AnomalyConfig, dict(model_config["config"]))
        return AnomalyModel(cfg, tuple(model_config["map_shape"]), tuple(model_config["frame_size"]),
                            int(model_config.get("bank_size", 1)), int(model_config.get("frame_input_dim", 0)),
                            int(model_config.get("descriptor_dim", 0)), int(model_config.get("appearance_dim", 0)),
                            int(model_config.get("crop_bank_size", 1)), int(model_config.get("crop_dim", 0)))
    except (KeyError, TypeError, ValueError, InputShapeError) as exc:
        raise CheckpointError(f"anomaly model_config is malformed: {exc}") from None


def stack_scored(frames: Sequence[ScoredFrame], streams: Sequence[str]) -> dict[str, np.ndarray]:
    """Parallel arrays from a list of :class:`ScoredFrame` (``score``, ``fused``, ``raw_<stream>``...)."""
    out = {
        "frame_index": np.array([f.frame_index for f in frames], np.int64),
        "timestamp_s": np.array([f.timestamp_s for f in frames], np.float64),
        "score": np.array([f.score for f in frames], np.float64),
        "fused": np.array([f.fused for f in frames], np.float64),
    }
    for s in streams:
        out[f"raw_{s}"] = np.array([f.raw[s] for f in frames], np.float64)
    if frames and frames[0].linger is not None:
        out["linger"] = np.array([f.linger for f in frames], np.float64)
    return out


__all__ = [
    "STREAMS", "SCENE_STREAMS", "MODEL_NAME", "FRAME_MODEL_NAME", "SpeedStreamConfig", "ObjectStreamConfig",
    "CropStreamConfig", "FrameStreamConfig",
    "LingerConfig", "LingerAccumulator", "SceneStreamConfig", "SceneStream", "descriptor_cells", "CropDensity",
    "AnomalyConfig", "Standardisation", "FrameFeatures", "ScoredFrame", "CenteredWindow", "gaussian_kernel",
    "smooth_scores",
    "SpeedMapFitter", "SpeedStream", "KNNDensity", "FramePredictor", "build_frame_predictor", "AnomalyModel",
    "StreamScorer", "score_frames", "build_model", "stack_scored",
]
