"""The alarm benchmark: false events per hour and event recall of the streaming alarms on generated camera streams.

From the *normal* clips of a static-camera dataset (UCSD Ped2 ``train/``; its test split is never read) it
builds long test streams with known ground truth and measures the alarms a user of ``vidseq monitor`` gets:

Streams (:func:`plan_stream`, :func:`render_frames`)
    Whole normal clips of the *stream* half of the clips, in a seeded order, concatenated, every join a
    1 s cross-fade from the last frame of one clip (a ``clip_join`` span; an alert whose run starts there is
    counted apart, as ``join_alerts``: no camera makes these). After a clean lead-in
    (``lead_s``) camera nuisances take turns in separate spans with clean gaps between them:
    ``exposure_drift`` (slow gain change and back), ``exposure_jump`` (sudden gain step held, then back),
    ``noise`` (Gaussian sensor noise), ``jpeg`` (strong JPEG compression), ``shake`` (per-frame jitter of a
    few pixels), ``pan`` (the view zooms in a little, sweeps left and right, zooms out: a PTZ move) and
    ``scene_cut`` (the stream switches to mirrored footage, another "camera", and back). Anomalous events are
    pasted in (cut-out people from other clips, :func:`~vidseq.tasks.anomaly.pseudo.find_donors`), in scene
    coordinates before the camera nuisances act:

    ``fast_object``      crosses the frame on its own ground row at 2.5-4 body heights/s (walking is ~0.8);
    ``loitering``        paces back and forth over about one body height for 10-15 s;
    ``off_path``         walks where the normal clips show no activity (lowest-activity band of the scene);
    ``wrong_direction``  walks along the direction least seen in the normal clips' optical flow;
    ``oversize``         1.8-2.5x scaled, at walking speed.

    Events start after ``events_after_s`` (the warm-up) and never overlap a ``scene_cut`` span or the second
    after it: that view is new to the stream, so every mode learns it (``relearn_s``) and scores none of it,
    and an event there could never be found. A scene cut that starts inside the warm-up pauses it (the other
    view is learnt apart; the first view's warm-up resumes when it returns), so the first event waits as long
    again: an event inside a warm-up would be taken as normal, by definition.

    A frame is labelled anomalous while at least 30 % of the pasted object is inside the camera's view (a pan's
    window, moved by the shake); an event's span runs from its first to its last such frame, and an object the
    camera would show for less than ``min_visible_s`` is tried again a second later (until generator version 4
    the share was taken of the whole scene, so a walker outside a pan's window was labelled but never shown).
    Streams are written lossless (FFV1 ``stream.mkv`` + ``truth.json``) under the cache folder, so reruns, and
    ``vidseq process``/``monitor`` by hand, read the very same frames.

Modes (:func:`run_mode`: the real streaming pass, :class:`~vidseq.pipeline.FrameProcessor`, injected by the
caller because the pipeline sits above the tasks layer)
    ``unsupervised`` (default settings, normality learnt on the stream itself), ``trained`` (a checkpoint of
    ``vidseq train anomaly`` on the *model* half of the normal clips, :func:`train_model`), ``live`` (as
    unsupervised, but frames are dropped as the latest-frame reader drops them when processing is
    ``live_slowdown`` times slower than real time; timestamps kept, :func:`live_schedule`).

Metrics (:func:`match_alerts`, :func:`summarise`)
    Alerts come from the monitor's rule (:class:`~vidseq.monitor.AlertRule`, also injected). An event is
    found when an alert interval ``[start_s, end_s]`` overlaps its span widened by ``tolerance_s``; an alert
    overlapping no widened event span is a false event, unless its anomalous run starts during a clip
    join's cross-fade or within 1 s after it (``join_alerts``, reported apart: an artefact of the benchmark). ``false_events_per_hour`` = false events / hours of
    normal footage (frames outside event spans, warm-up included); ``flagged_normal_frames`` = share of
    processed normal frames flagged; ``event_recall``; ``median_delay_s`` = stream time when the alert is raised
    (newest frame handed to the processor then: the head's smoothing delay included) minus event start
    (clamped at 0) over found events; ``auc`` = frame ROC AUC of scored frames, normal vs labelled anomalous.
    Breakdowns per nuisance (false events whose alert overlaps the nuisance, their rate per hour of that
    nuisance, flagged share, recall of events overlapping it; ``clean`` = no nuisance) and per event kind.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vidseq.config import default_config_path
from vidseq.errors import ConfigError, DatasetError
from vidseq.tasks.anomaly.pseudo import Donor, find_donors, paste_donor

log = logging.getLogger(__name__)

GENERATOR_VERSION = "5"  # bump when the streams a seed produces change
NUISANCES: tuple[str, ...] = ("exposure_drift", "exposure_jump", "noise", "jpeg", "shake", "pan", "scene_cut")
EVENT_KINDS: tuple[str, ...] = ("fast_object", "loitering", "off_path", "wrong_direction", "oversize")
MODES: tuple[str, ...] = ("unsupervised", "trained", "live")
# development seeds (for tuning mechanisms) and a disjoint set for reporting
SEED_SETS: dict[str, tuple[int, ...]] = {"dev": tuple(range(24)), "report": tuple(range(1000, 1008))}
"""Seeds of each set: develop on ``dev`` (24 since stop 28, 16 since stop 25: decisions up to stop 24 leant on seeds
0-7, which came to read better than fresh seeds; docs/alarms.md), quote ``report``."""
WALK_SPEED = 0.8  # body heights per second


# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark builds and how it measures.

    Attributes:
        minutes: footage in all streams together (one stream per seed, equal shares).
        seeds: how many seeds of ``seed_set`` (one stream each).
        seed_set: ``dev`` (develop against) or ``report`` (disjoint; quote these).
        modes: modes run (:data:`MODES`).
        lead_s: clean start of every stream (no events, no nuisances).
        events_after_s: no injected event starts before this (None: ``lead_s``). ``scripts/eval_alarms.py`` sets
            it to the anomaly warm-up (``anomaly.fit_s``): the warm-up is, by definition, taken as normal and not
            scored, so an event inside it could never be found, whatever the detector (camera nuisances still
            start after ``lead_s`` and so fall inside the warm-up too).
        event_gap_s: gap between injected events, uniform in this range (s).
        nuisance_s: nuisance span length range (s).
        clean_gap_s: clean gap between nuisance spans, range (s).
        tolerance_s: an alert within this long of an event's span still finds it.
        min_visible_s: an event whose object the camera would show (>= 30 % of it inside the view) for less than
            this is not placed there; it is tried again a second later.
        live_slowdown: ``live`` mode: processing takes this many frame intervals per frame.
        model_share: share of the normal clips (first ones by name) the ``trained`` model learns from; the rest
            make the streams.
    """

    minutes: float = 20.0
    seeds: int = 4
    seed_set: str = "dev"
    modes: tuple[str, ...] = MODES
    lead_s: float = 30.0
    events_after_s: float | None = None
    event_gap_s: tuple[float, float] = (12.0, 30.0)
    nuisance_s: tuple[float, float] = (20.0, 35.0)
    clean_gap_s: tuple[float, float] = (10.0, 25.0)
    tolerance_s: float = 1.0
    min_visible_s: float = 1.0
    live_slowdown: float = 2.0
    model_share: float = 0.5

    def __post_init__(self) -> None:
        if not self.minutes > 0:
            raise ConfigError(f"minutes must be > 0, got {self.minutes}")
        if self.seed_set not in SEED_SETS:
            raise ConfigError(f"seed_set must be one of {', '.join(SEED_SETS)}, got {self.seed_set!r}")
        if not 1 <= self.seeds <= len(SEED_SETS[self.seed_set]):
            raise ConfigError(f"seeds must be 1..{len(SEED_SETS[self.seed_set])}, got {self.seeds}")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ConfigError(f"modes: unknown {bad}; known: {', '.join(MODES)}")
        for name in ("event_gap_s", "nuisance_s", "clean_gap_s"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ConfigError(f"{name} must be 0 < low <= high, got {(lo, hi)}")
        if self.lead_s < 0 or self.tolerance_s < 0 or self.min_visible_s < 0 or not self.live_slowdown >= 1:
            raise ConfigError("lead_s, tolerance_s and min_visible_s must be >= 0, live_slowdown >= 1")
        if self.events_after_s is not None and self.events_after_s < 0:
            raise ConfigError(f"events_after_s must be >= 0, got {self.events_after_s}")
        if not 0 < self.model_share < 1:
            raise ConfigError(f"model_share must be in (0, 1), got {self.model_share}")

    @property
    def seed_values(self) -> tuple[int, ...]:
        return SEED_SETS[self.seed_set][: self.seeds]


# --------------------------------------------------------------------------------------- ground truth


@dataclass(frozen=True)
class Span:
    """A labelled stretch of a stream in frame positions ``[start, stop)``."""

    kind: str
    start: int
    stop: int
    params: dict[str, Any] = field(default_factory=dict)

    def seconds(self, fps: float) -> tuple[float, float]:
        """``(start_s, end_s)``: from the first frame's time to the last frame's."""
        return self.start / fps, (self.stop - 1) / fps


@dataclass
class StreamTruth:
    """Ground truth of a generated stream (``truth.json``)."""

    seed: int
    fps: float
    size: tuple[int, int]  # (width, height)
    labels: np.ndarray  # (T,) int: 1 = anomalous object visible, 0 = normal
    events: list[Span]
    nuisances: list[Span]  # camera nuisances and clip joins
    clips: list[Span]  # which clip plays where (params: clip, offset)

    @property
    def n_frames(self) -> int:
        return len(self.labels)

    def normal_mask(self) -> np.ndarray:
        """``(T,)`` bool: frames outside every event span."""
        m = np.ones(self.n_frames, bool)
        for e in self.events:
            m[e.start:e.stop] = False
        return m

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "fps": self.fps, "size": list(self.size), "labels": self.labels.tolist(),
                "events": [asdict(e) for e in self.events], "nuisances": [asdict(n) for n in self.nuisances],
                "clips": [asdict(c) for c in self.clips]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamTruth:
        return cls(int(d["seed"]), float(d["fps"]), (int(d["size"][0]), int(d["size"][1])),
                   np.asarray(d["labels"], np.int64), [Span(**e) for e in d["events"]],
                   [Span(**n) for n in d["nuisances"]], [Span(**c) for c in d["clips"]])


# ------------------------------------------------------------------------------- camera nuisances


def apply_gain(img: np.ndarray, gain: float) -> np.ndarray:
    """Exposure: every pixel times ``gain`` (saturating)."""
    return np.clip(img.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)


def add_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise: independent Gaussian noise of ``sigma`` grey levels on every channel."""
    noise = rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(img.astype(np.float32) + noise + 0.5, 0, 255).astype(np.uint8)


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Compression artefacts: encode as JPEG at ``quality`` (0-100) and decode."""
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def shift_image(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Camera shake: content moved by ``(dx, dy)`` pixels (borders reflected)."""
    import cv2

    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def ptz_window(size: tuple[int, int], zoom: float, pan: float) -> tuple[float, float, float, float]:
    """The PTZ window ``(x0, y0, width, height)`` in scene pixels: ``zoom`` (<= 1) times the frame size, its
    centre moved horizontally by ``pan`` in [-1, 1] of the free margin (what :func:`crop_view` shows)."""
    w, h = size
    cw, ch = w * zoom, h * zoom
    return w / 2 + pan * (w - cw) / 2 - cw / 2, (h - ch) / 2, cw, ch


def crop_view(img: np.ndarray, zoom: float, pan: float) -> np.ndarray:
    """A PTZ view: the window of :func:`ptz_window`, scaled back to the frame size."""
    import cv2

    h, w = img.shape[:2]
    if zoom >= 1.0:
        return img
    x0, y0, _, _ = ptz_window((w, h), zoom, pan)
    # affine map of the window onto the full frame (sub-pixel, no rounding jumps while panning)
    m = np.float32([[1 / zoom, 0, -x0 / zoom], [0, 1 / zoom, -y0 / zoom]])
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _ease(u: float, edge: float = 0.2) -> float:
    """0 -> 1 over the first ``edge`` of [0, 1], 1 in the middle, back to 0 over the last ``edge`` (smooth)."""
    if u <= 0 or u >= 1:
        return 0.0
    x = min(u, 1 - u) / edge
    return 1.0 if x >= 1 else 0.5 - 0.5 * math.cos(math.pi * x)


@dataclass
class CameraState:
    """The camera effects on one frame."""

    gain: float = 1.0
    noise: float = 0.0
    jpeg: int | None = None
    shake: tuple[float, float] = (0.0, 0.0)
    zoom: float = 1.0
    pan: float = 0.0
    mirrored: bool = False


def camera_state(nuisances: Sequence[Span], t: int, seed: int) -> CameraState:
    """The effects of the nuisance spans covering frame ``t`` (spans carry their parameters)."""
    st = CameraState()
    for n in nuisances:
        if not n.start <= t < n.stop:
            continue
        u = (t - n.start) / max(1, n.stop - n.start)
        p = n.params
        if n.kind == "exposure_drift":
            st.gain = 1.0 + (p["gain"] - 1.0) * math.sin(math.pi * u)
        elif n.kind == "exposure_jump":
            st.gain = p["gain"]
        elif n.kind == "noise":
            st.noise = p["sigma"]
        elif n.kind == "jpeg":
            st.jpeg = int(p["quality"])
        elif n.kind == "shake":
            rng = np.random.default_rng([seed, t, 7])
            st.shake = tuple(float(v) for v in np.clip(rng.normal(0, p["amplitude_px"], 2),
                                                       -2 * p["amplitude_px"], 2 * p["amplitude_px"]))
        elif n.kind == "pan":
            e = _ease(u)
            st.zoom = 1.0 - (1.0 - p["zoom"]) * e
            st.pan = e * math.sin(2 * math.pi * u)
        elif n.kind == "scene_cut":
            st.mirrored = True
    return st


def apply_camera(img: np.ndarray, st: CameraState, rng: np.random.Generator) -> np.ndarray:
    """Geometric effects (view, shake), then exposure, sensor noise, compression: the order of a camera."""
    out = img
    if st.zoom < 1.0:
        out = crop_view(out, st.zoom, st.pan)
    if st.shake != (0.0, 0.0):
        out = shift_image(out, *st.shake)
    if st.gain != 1.0:
        out = apply_gain(out, st.gain)
    if st.noise > 0:
        out = add_noise(out, st.noise, rng)
    if st.jpeg is not None:
        out = jpeg_roundtrip(out, st.jpeg)
    return out


# ------------------------------------------------------------------------------- scene statistics


@dataclass
class SceneStats:
    """What the injected events need to know about the normal scene (from the stream clips only)."""

    donors: list[tuple[str, Donor]]  # (clip name, donor)
    activity: np.ndarray  # (H, W) float32: share of sampled frames where each pixel is foreground
    direction_share: np.ndarray  # (8,) share of moving-pixel flow per direction bin (0 = +x, counter-clockwise
    # in image coordinates with y down: bin k is angle k*45 degrees)
    height_per_row: float  # person height / ground row (perspective)


def scene_stats(clips: dict[str, list[np.ndarray]]) -> SceneStats:
    """Donors, activity map and flow direction histogram of normal clips."""
    import cv2

    donors: list[tuple[str, Donor]] = []
    acc: np.ndarray | None = None
    count = 0
    hist = np.zeros(8)
    for name, frames in clips.items():
        donors += [(name, d) for d in find_donors(frames, max_donors=8)]
        sample = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames[:: max(1, len(frames) // 40)]])
        bg = np.median(sample, axis=0).astype(np.int16)
        for f in frames[::3]:
            fg = np.abs(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).astype(np.int16) - bg) > 25
            acc = fg.astype(np.float32) if acc is None else acc + fg
            count += 1
        small = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), None, fx=0.5, fy=0.5) for f in frames[::4]]
        for a, b in itertools.pairwise(small):
            flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
            mag = np.hypot(flow[..., 0], flow[..., 1])
            moving = mag > 1.0
            if moving.any():
                ang = np.arctan2(flow[..., 1][moving], flow[..., 0][moving])
                bins = np.round(ang / (np.pi / 4)).astype(int) % 8
                hist += np.bincount(bins, mag[moving], 8)
    if not donors:
        raise DatasetError("alarm benchmark: no cut-out people found in the normal clips (static camera needed)")
    assert acc is not None
    ratio = float(np.median([d.height / max(d.bottom_y, 1) for _, d in donors]))
    return SceneStats(donors, acc / max(count, 1), hist / max(hist.sum(), 1e-9), ratio)


# ----------------------------------------------------------------------------------- injected events


@dataclass(frozen=True)
class ObjectPath:
    """A pasted object's ground point and scale in every frame of its event."""

    donor_index: int
    cx: np.ndarray  # (L,) px
    bottom: np.ndarray  # (L,) px
    scale: np.ndarray  # (L,)


def _pick_donor(stats: SceneStats, host_clip: str, rng: np.random.Generator) -> int:
    idx = [i for i, (c, _) in enumerate(stats.donors) if c != host_clip] or list(range(len(stats.donors)))
    return int(rng.choice(idx))


def plan_object(kind: str, stats: SceneStats, size: tuple[int, int], fps: float, host_clip: str,
                rng: np.random.Generator) -> tuple[ObjectPath, dict[str, Any]]:
    """The path of one injected object of ``kind`` (scene coordinates)."""
    w_img, _h_img = size
    di = _pick_donor(stats, host_clip, rng)
    d = stats.donors[di][1]
    h = float(d.height)
    if kind == "fast_object":
        speed = float(rng.uniform(2.5, 4.0))
        step = speed * h / fps
        direction = 1.0 if rng.random() < 0.5 else -1.0
        half = d.crop.shape[1] / 2
        n = int(min(math.ceil((w_img + 2 * half) / step), round(4 * fps)))
        x0 = -half * 0.4 if direction > 0 else w_img + half * 0.4
        cx = x0 + direction * step * np.arange(n)
        return ObjectPath(di, cx, np.full(n, float(d.bottom_y)), np.ones(n)), {"speed_h_per_s": round(speed, 2)}
    if kind == "oversize":
        scale = float(rng.uniform(1.8, 2.5))
        n = round(rng.uniform(4, 6) * fps)
        step = WALK_SPEED * h / fps
        x0 = float(rng.uniform(0.2, 0.8) * w_img)
        direction = 1.0 if x0 < w_img / 2 else -1.0
        cx = x0 + direction * step * np.arange(n)
        return ObjectPath(di, cx, np.full(n, float(d.bottom_y)), np.full(n, scale)), {"scale": round(scale, 2)}
    if kind == "loitering":
        n = round(rng.uniform(10, 15) * fps)
        amp, period = 0.6 * h, 4.0
        x0 = float(rng.uniform(0.2, 0.8) * w_img)
        phase = float(rng.uniform(0, 2 * np.pi))
        t = np.arange(n) / fps
        cx = x0 + amp * np.sin(2 * np.pi * t / period + phase)
        return ObjectPath(di, cx, np.full(n, float(d.bottom_y)), np.ones(n)), {"amplitude_px": round(amp, 1)}
    if kind == "off_path":
        n = round(rng.uniform(4, 6) * fps)
        row, x_start, direction, act = _quiet_band(stats, size, n / fps, rng)
        hh = stats.height_per_row * row
        step = WALK_SPEED * hh / fps
        cx = x_start + direction * step * np.arange(n)
        return ObjectPath(di, cx, np.full(n, float(row)), np.full(n, hh / h)), {"row": row,
                                                                                "activity": round(act, 4)}
    if kind == "wrong_direction":
        n = round(rng.uniform(4, 6) * fps)
        k = int(np.argmin(stats.direction_share))
        ang = k * np.pi / 4
        ux, uy = math.cos(ang), math.sin(ang)
        cx, bottom, scale = _directed_path(stats, size, fps, n, ux, uy, h, rng)
        return ObjectPath(di, cx, bottom, scale), {"direction_deg": k * 45,
                                                   "direction_share": round(float(stats.direction_share[k]), 4)}
    raise ConfigError(f"unknown event kind {kind!r}; known: {', '.join(EVENT_KINDS)}")


def _quiet_band(stats: SceneStats, size: tuple[int, int], dur_s: float, rng: np.random.Generator,
                ) -> tuple[int, float, float, float]:
    """A ground row and horizontal stretch where a walking person covers the least normal activity."""
    w_img, h_img = size
    cands: list[tuple[float, int, float, float]] = []
    for row in range(int(0.3 * h_img), h_img - 2, 6):
        hh = stats.height_per_row * row
        if hh < 12 or row - hh < 0:
            continue
        width = max(4, int(hh * 0.45))
        travel = WALK_SPEED * hh * dur_s
        span = int(min(w_img - 1, travel + width))
        prof = stats.activity[int(row - hh):row].mean(axis=0)
        cs = np.concatenate([[0.0], np.cumsum(prof)])
        means = (cs[span:] - cs[:-span]) / span
        x = int(np.argmin(means))
        cands.append((float(means[x]), row, float(x), travel))
    if not cands:
        raise DatasetError("alarm benchmark: frames too small for an off-path object")
    cands.sort()
    act, row, x, travel = cands[int(rng.integers(min(3, len(cands))))]
    hh = stats.height_per_row * row
    width = max(4, hh * 0.45)
    direction = 1.0 if rng.random() < 0.5 else -1.0
    x_start = x + width / 2 if direction > 0 else x + width / 2 + travel
    return row, x_start, direction, act


def _directed_path(stats: SceneStats, size: tuple[int, int], fps: float, n: int, ux: float, uy: float,
                   donor_h: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Walk along ``(ux, uy)`` from a busy place, height following the perspective of the ground row."""
    w_img, h_img = size
    busy = np.argwhere(stats.activity > max(0.02, float(np.quantile(stats.activity, 0.9))))
    for _ in range(50):
        y0, x0 = (busy[int(rng.integers(len(busy)))] if len(busy) else (h_img * 0.7, w_img / 2))
        cx, by = [float(x0)], [float(y0)]
        for _j in range(n - 1):
            hh = max(stats.height_per_row * by[-1], 8.0)
            cx.append(cx[-1] + ux * WALK_SPEED * hh / fps)
            by.append(by[-1] + uy * WALK_SPEED * hh / fps)
        cxa, bya = np.array(cx), np.array(by)
        top = bya - stats.height_per_row * bya
        if (cxa.min() > 5 and cxa.max() < w_img - 5 and top.min() > 0 and bya.max() < h_img
                and stats.height_per_row * bya.min() >= 12):
            break
    scale = np.maximum(stats.height_per_row * bya, 8.0) / donor_h
    return cxa, bya, scale


def paste_path(img: np.ndarray, donor: Donor, path: ObjectPath, j: int) -> float:
    """Paste step ``j`` of ``path``; returns the visible share of the object."""
    return paste_donor(img, donor, float(path.cx[j]), float(path.bottom[j]), float(path.scale[j]))


# ------------------------------------------------------------------------------------------ streams


def list_normal_clips(data_dir: Path) -> list[Path]:
    """The normal training clips of a Ped2-layout folder (``train/`` or ``Train/``); ``test/`` is never read."""
    for sub in ("train", "Train", "training"):
        folder = Path(data_dir) / sub
        if folder.is_dir():
            clips = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".avi", ".mp4", ".mkv", ".mov"))
            if clips:
                return clips
    raise DatasetError(f"{data_dir}: no train/*.avi clips (UCSD Ped2 layout expected)")


def split_clips(clips: Sequence[Path], model_share: float) -> tuple[list[Path], list[Path]]:
    """(clips the trained model learns from, clips the streams are made of): first ones by name / the rest."""
    if len(clips) < 4:
        raise DatasetError(f"alarm benchmark needs >= 4 normal clips, found {len(clips)}")
    k = min(len(clips) - 2, max(2, round(len(clips) * model_share)))
    return list(clips[:k]), list(clips[k:])


def read_clip(path: Path) -> list[np.ndarray]:
    """All BGR frames of a clip."""
    from vidseq.video.sources import open_source

    with open_source(path) as src:
        return [f.image for f in src]


def plan_stream(clip_lengths: dict[str, int], fps: float, size: tuple[int, int], n_frames: int, seed: int,
                cfg: BenchConfig, stats: SceneStats) -> tuple[StreamTruth, list[ObjectPath]]:
    """Where every clip, nuisance and event goes in a stream of ``n_frames`` (no pixels yet)."""
    rng = np.random.default_rng([seed, 15])
    names = sorted(clip_lengths)
    clips: list[Span] = []
    nuis: list[Span] = []
    pos = 0
    while pos < n_frames:
        for name in [names[i] for i in rng.permutation(len(names))]:
            if pos >= n_frames:
                break
            stop = min(n_frames, pos + clip_lengths[name])
            clips.append(Span("clip", pos, stop, {"clip": name}))
            if pos > 0:
                nuis.append(Span("clip_join", pos, min(n_frames, pos + max(1, round(fps))), {}))
            pos = stop
    # camera nuisances: one at a time, in a shuffled rotation, clean gaps between
    t = cfg.lead_s * fps
    order: list[str] = []
    while True:
        if not order:
            order = [NUISANCES[i] for i in rng.permutation(len(NUISANCES))]
        length = rng.uniform(*cfg.nuisance_s) * fps
        if t + length > n_frames:
            break
        kind = order.pop()
        params: dict[str, Any] = {}
        if kind in ("exposure_drift", "exposure_jump"):
            dark = rng.random() < 0.5
            params["gain"] = round(float(rng.uniform(0.55, 0.75) if dark else rng.uniform(1.3, 1.5)), 3)
        elif kind == "noise":
            params["sigma"] = round(float(rng.uniform(4, 8)), 2)
        elif kind == "jpeg":
            params["quality"] = int(rng.integers(10, 26))
        elif kind == "shake":
            params["amplitude_px"] = round(float(rng.uniform(1.5, 3.0)), 2)
        elif kind == "pan":
            params["zoom"] = round(float(rng.uniform(0.8, 0.9)), 3)
        nuis.append(Span(kind, int(t), int(t + length), params))
        t += length + rng.uniform(*cfg.clean_gap_s) * fps
    nuis.sort(key=lambda s: (s.start, s.kind))
    # events: a shuffled rotation of kinds at random gaps
    events: list[Span] = []
    paths: list[ObjectPath] = []
    labels = np.zeros(n_frames, np.int64)
    first = cfg.lead_s if cfg.events_after_s is None else max(cfg.lead_s, cfg.events_after_s)
    t = warm_up_end(first * fps, nuis, fps) + rng.uniform(*cfg.event_gap_s) * fps / 2
    kinds: list[str] = []
    while True:
        if not kinds:
            kinds = [EVENT_KINDS[i] for i in rng.permutation(len(EVENT_KINDS))]
        start = int(t)
        host = next((c.params["clip"] for c in clips if c.start <= start < c.stop), names[0])
        kind = kinds[-1]
        path, detail = plan_object(kind, stats, size, fps, host, rng)
        n = len(path.cx)
        if start + n > n_frames:
            break
        cut = next((s for s in nuis if s.kind == "scene_cut" and start < s.stop + fps and start + n > s.start), None)
        if cut is not None:  # the other camera's view is new to the stream: it is being learnt, never scored
            t = cut.stop + fps
            continue
        views = [view_window(camera_state(nuis, start + j, seed), size) for j in range(n)]
        vis = _visible_shares(stats.donors[path.donor_index][1], path, views)
        on = np.flatnonzero(vis >= 0.3)
        if len(on) < max(1.0, cfg.min_visible_s * fps):  # out of the camera's view (a pan's window): not shown
            t = start + fps
            continue
        kinds.pop()
        first, last = start + int(on[0]), start + int(on[-1]) + 1
        labels[first:last] = (vis[on[0]:on[-1] + 1] >= 0.3).astype(np.int64)
        events.append(Span(kind, first, last, {**detail, "path_start": start,
                                               "donor_clip": stats.donors[path.donor_index][0]}))
        paths.append(path)
        t = start + n + rng.uniform(*cfg.event_gap_s) * fps
    truth = StreamTruth(seed, fps, size, labels, events, nuis, clips)
    return truth, paths


def warm_up_end(end: float, nuisances: Sequence[Span], fps: float) -> float:
    """Frame at which a warm-up that would end at frame ``end`` does end: each scene cut that starts before then
    pauses it for the cut's span and the second after it (the first view's learning resumes on its return)."""
    for s in sorted((n for n in nuisances if n.kind == "scene_cut"), key=lambda n: n.start):
        if s.start < end:
            end += s.stop - s.start + fps
    return end


def view_window(st: CameraState, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The part of the scene ``(x0, y0, x1, y1)``, in scene pixels, that the camera shows under ``st``: the PTZ
    window (:func:`ptz_window`), moved by the shake of :func:`shift_image` (the geometry of :func:`apply_camera`)."""
    w, h = size
    z = min(st.zoom, 1.0)
    x0, y0, cw, ch = ptz_window(size, z, st.pan)
    x0, y0 = x0 - st.shake[0] * z, y0 - st.shake[1] * z
    return max(0.0, x0), max(0.0, y0), min(float(w), x0 + cw), min(float(h), y0 + ch)


def _visible_shares(donor: Donor, path: ObjectPath,
                    views: Sequence[tuple[float, float, float, float]]) -> np.ndarray:
    """Share of the object inside the camera's view at each step (same geometry as the paste, without pixels;
    ``views``: :func:`view_window` of each step)."""
    out = np.zeros(len(path.cx))
    for j, (vx0, vy0, vx1, vy1) in enumerate(views):
        w = max(1, round(donor.crop.shape[1] * path.scale[j]))
        h = max(1, round(donor.crop.shape[0] * path.scale[j]))
        x0, y0 = round(path.cx[j] - w / 2), round(path.bottom[j] - h)
        ix = max(0.0, min(vx1, x0 + w) - max(vx0, x0))
        iy = max(0.0, min(vy1, y0 + h) - max(vy0, y0))
        out[j] = ix * iy / (w * h)
    return out


def render_frames(truth: StreamTruth, paths: Sequence[ObjectPath], stats: SceneStats,
                  clip_frames: Callable[[str], list[np.ndarray]]) -> Iterable[np.ndarray]:
    """The stream's frames in order: clip frame -> mirrored in ``scene_cut`` spans -> events pasted ->
    camera effects."""
    by_start = {int(e.params["path_start"]): (e, p) for e, p in zip(truth.events, paths, strict=True)}
    fades = {n.start: n.stop - n.start for n in truth.nuisances if n.kind == "clip_join"}
    active: list[tuple[int, ObjectPath]] = []
    last: np.ndarray | None = None
    for c in truth.clips:
        frames = clip_frames(c.params["clip"])
        fade = fades.get(c.start, 0) if last is not None else 0
        held = last
        for t in range(c.start, c.stop):
            img = frames[(t - c.start) % len(frames)].copy()
            last = img.copy()
            j = t - c.start
            if held is not None and j < fade:  # cross-fade from the previous clip's last frame
                a = (j + 1) / (fade + 1)
                img = np.clip(a * img.astype(np.float32) + (1 - a) * held + 0.5, 0, 255).astype(np.uint8)
            st = camera_state(truth.nuisances, t, truth.seed)
            if st.mirrored:
                img = np.ascontiguousarray(img[:, ::-1])
            if t in by_start:
                active.append((t, by_start[t][1]))
            still: list[tuple[int, ObjectPath]] = []
            for t0, p in active:
                j = t - t0
                if j < len(p.cx):
                    paste_path(img, stats.donors[p.donor_index][1], p, j)
                    still.append((t0, p))
            active = still
            yield apply_camera(img, st, np.random.default_rng([truth.seed, t, 3]))


def build_stream(clips: Sequence[Path], out_dir: Path, seed: int, seconds: float, cfg: BenchConfig,
                 stats_clips: Sequence[Path] | None = None) -> tuple[Path, StreamTruth]:
    """Generate (or reuse from ``out_dir``) one stream: ``stream.mkv`` (lossless FFV1) + ``truth.json``."""
    import cv2

    from vidseq.io import atomic_write_json

    video, truth_path = out_dir / "stream.mkv", out_dir / "truth.json"
    if video.is_file() and truth_path.is_file():
        return video, StreamTruth.from_dict(json.loads(truth_path.read_text()))
    cache: dict[str, list[np.ndarray]] = {}

    def frames_of(name: str) -> list[np.ndarray]:
        if name not in cache:
            cache.clear()  # one clip in memory at a time while rendering
            cache[name] = read_clip(next(p for p in clips if p.stem == name))
        return cache[name]

    all_frames = {p.stem: read_clip(p) for p in (stats_clips or clips)}
    stats = scene_stats(all_frames)
    lengths = {p.stem: len(all_frames[p.stem]) if p.stem in all_frames else len(read_clip(p)) for p in clips}
    first = next(iter(all_frames.values()))[0]
    size = (int(first.shape[1]), int(first.shape[0]))
    fps = _clip_fps(clips[0])
    del all_frames
    truth, paths = plan_stream(lengths, fps, size, round(seconds * fps), seed, cfg, stats)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".stream.{os.getpid()}.mkv"
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"FFV1"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cannot write FFV1 video {tmp} (OpenCV without FFmpeg?)")
    try:
        for img in render_frames(truth, paths, stats, frames_of):
            writer.write(img)
    finally:
        writer.release()
    os.replace(tmp, video)
    atomic_write_json(truth_path, truth.to_dict())
    return video, truth


def _clip_fps(path: Path) -> float:
    from vidseq.video.sources import open_source

    with open_source(path) as src:
        fps = float(src.info.fps)
    return fps if fps > 0 and math.isfinite(fps) else 10.0


# ------------------------------------------------------------------------------------------- runner


class Processor(Protocol):
    """What :func:`run_mode` needs of :class:`vidseq.pipeline.FrameProcessor`."""

    def step(self, frame: Any) -> list[Any]: ...

    def finish(self) -> list[Any]: ...


class Rule(Protocol):
    """What :func:`run_mode` needs of :class:`vidseq.monitor.AlertRule`."""

    def update(self, t: float, is_anomaly: bool, score: float | None, cause: str | None = None,
               integrated: bool = False) -> tuple[dict[str, Any] | None, dict[str, Any] | None]: ...


@dataclass(frozen=True)
class Alert:
    """One alert of the rule: the anomalous run began at ``start_s`` and the rule fired on the frame of
    ``alert_s`` (frame times); ``raised_s`` is the stream time of the newest frame handed to the processor at that
    moment, so it includes the head's output delay (its centred smoothing)."""

    start_s: float
    alert_s: float
    end_s: float
    raised_s: float | None = None
    cause: str | None = None  # the anomaly stream behind most of the run's frames

    @property
    def fired_s(self) -> float:
        """When a user sees the alert, in stream time (``alert_s`` when ``raised_s`` was not recorded)."""
        return self.alert_s if self.raised_s is None else self.raised_s


@dataclass
class ModeRun:
    """Per-frame outputs of one streaming pass over a stream."""

    processed: np.ndarray  # (T,) bool: the frame reached the processor
    score: np.ndarray  # (T,) float, NaN where not scored
    flagged: np.ndarray  # (T,) bool
    alerts: list[Alert]
    wall_s: float = 0.0
    cause: np.ndarray | None = None  # (T,) str: the anomaly stream behind each frame's score ("" where none)

    def to_npz(self, path: Path) -> None:
        from vidseq.io import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, processed=self.processed, score=self.score, flagged=self.flagged,
                     alerts=np.array([[a.start_s, a.alert_s, a.end_s, a.fired_s] for a in self.alerts],
                                     np.float64).reshape(-1, 4), wall_s=np.float64(self.wall_s),
                     alert_cause=np.array([a.cause or "" for a in self.alerts], str),
                     **({} if self.cause is None else {"cause": np.asarray(self.cause, str)}))

    @classmethod
    def from_npz(cls, path: Path) -> ModeRun:
        z = np.load(path, allow_pickle=False)
        causes = [str(c) or None for c in z["alert_cause"]] if "alert_cause" in z.files else [None] * len(z["alerts"])
        alerts = [Alert(*map(float, a), cause=c) for a, c in zip(z["alerts"], causes, strict=True)]
        # older results: no causes, and raised_s stays None where they have 3 columns
        cause = z["cause"] if "cause" in z.files else None  # results of older benchmarks: none per frame
        return cls(z["processed"], z["score"], z["flagged"], alerts, float(z["wall_s"]), cause)


def live_schedule(n_frames: int, fps: float, slowdown: float, seed: int) -> np.ndarray:
    """``(T,)`` bool: the frames a latest-frame reader hands over when each frame takes ``slowdown`` frame
    intervals (+-20 % seeded jitter) to process; the others are dropped."""
    keep = np.zeros(n_frames, bool)
    rng = np.random.default_rng([seed, 11])
    i, t_free = 0, 0.0
    while i < n_frames:
        keep[i] = True
        busy = slowdown / fps * (1.0 if slowdown == 1.0 else float(rng.uniform(0.8, 1.2)))
        t_free = max(t_free, i / fps) + busy
        i = max(i + 1, math.floor(t_free * fps + 1e-9))
    return keep


def run_mode(video: Path, n_frames: int, processor: Processor, rule: Rule,
             keep: np.ndarray | None = None, progress: Callable[[str], None] | None = None,
             every_s: float = 60.0) -> ModeRun:
    """One streaming pass: frames of ``video`` (those ``keep`` allows) -> ``processor`` -> alert ``rule``
    (a line to ``progress`` every ``every_s`` seconds of wall time)."""
    import time

    from vidseq.video.sources import Frame, open_source

    processed = np.zeros(n_frames, bool)
    score = np.full(n_frames, np.nan)
    flagged = np.zeros(n_frames, bool)
    cause = np.full(n_frames, "", dtype="<U9")
    alerts: list[tuple[dict[str, Any], float]] = []
    last_t = now_s = 0.0

    def handle(results: list[Any]) -> None:
        nonlocal last_t
        for r in results:
            i = int(r.frame.frame_index)
            if i >= n_frames:
                continue
            processed[i] = True
            if r.anomaly_score is not None:
                score[i] = float(r.anomaly_score)
            flagged[i] = bool(r.is_anomaly)
            why = getattr(r, "anomaly_cause", None)
            cause[i] = why or ""
            last_t = float(r.frame.timestamp_s)
            started, _ended = rule.update(last_t, bool(r.is_anomaly), r.anomaly_score, why,
                                          bool(getattr(r, "anomaly_integrated", False)))
            if started is not None:  # the rule fills in end_s on this same record when the run ends
                alerts.append((started, max(now_s, last_t)))

    t0 = t_note = time.perf_counter()
    dropped: Frame | None = None
    with open_source(video) as src:
        for frame in src:
            if frame.frame_index >= n_frames:
                break
            if keep is not None and not keep[frame.frame_index]:
                dropped = frame
                continue
            if dropped is not None:  # as a latest-frame reader hands it over (vidseq.video.sources)
                frame, dropped = replace(frame, previous=dropped), None
            now_s = float(frame.timestamp_s)
            handle(processor.step(frame))
            if progress is not None and time.perf_counter() - t_note > every_s:
                t_note = time.perf_counter()
                progress(f"  frame {frame.frame_index}/{n_frames}, {len(alerts)} alerts, "
                         f"{int(processed.sum()) / (t_note - t0):.1f} frames/s")
        handle(processor.finish())
    wall = time.perf_counter() - t0
    out = [Alert(float(a["start_s"]), float(a["alert_s"]), float(a.get("end_s", last_t)), raised, a.get("cause"))
           for a, raised in alerts]
    return ModeRun(processed, score, flagged, out, wall, cause)


# ------------------------------------------------------------------------------------------ metrics


def match_alerts(alerts: Sequence[Alert], events: Sequence[tuple[float, float]], tolerance_s: float,
                 ) -> tuple[list[int | None], list[bool]]:
    """(for each event the index of the first alert overlapping it, for each alert whether it is false).

    ``events`` are ``(start_s, end_s)``; an alert overlaps an event when ``[alert.start_s, alert.end_s]``
    meets ``[start_s - tolerance_s, end_s + tolerance_s]``.
    """
    def hits(a: Alert, e: tuple[float, float]) -> bool:
        return a.start_s <= e[1] + tolerance_s and a.end_s >= e[0] - tolerance_s

    found: list[int | None] = []
    for e in events:
        found.append(next((i for i, a in enumerate(alerts) if hits(a, e)), None))
    false = [not any(hits(a, e) for e in events) for a in alerts]
    return found, false


def detection_delays(alerts: Sequence[Alert], events: Sequence[tuple[float, float]],
                     found: Sequence[int | None]) -> list[float]:
    """Seconds from each found event's start to its alert being raised (:attr:`Alert.fired_s`; clamped at 0: an
    alert just before counts as 0)."""
    return [max(0.0, alerts[i].fired_s - e[0]) for e, i in zip(events, found, strict=True) if i is not None]


def _rate(n: int, hours: float) -> float | None:
    return round(n / hours, 2) if hours > 0 else None


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    from vidseq.tasks.anomaly.metrics import frame_auc

    if len(y) == 0 or y.min() == y.max():
        return None
    v = frame_auc(y, s)
    return None if math.isnan(v) else round(v, 4)


@dataclass
class StreamMetrics:
    """Counts of one mode on one stream (summed over streams by :func:`summarise`)."""

    normal_frames: int = 0
    normal_processed: int = 0
    normal_flagged: int = 0
    false_events: int = 0
    join_alerts: int = 0
    events: int = 0
    found: int = 0
    delays: list[float] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    scored_frames: int = 0
    processed_frames: int = 0
    wall_s: float = 0.0
    by_nuisance: dict[str, dict[str, float]] = field(default_factory=dict)
    by_kind: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_cause: dict[str, dict[str, int]] = field(default_factory=dict)  # alerts per anomaly stream behind them
    event_rows: list[dict[str, Any]] = field(default_factory=list)  # one line per injected event


def measure(truth: StreamTruth, run: ModeRun, tolerance_s: float, acc: StreamMetrics | None = None,
            ) -> StreamMetrics:
    """Add one stream's counts for one mode to ``acc``."""
    m = acc or StreamMetrics()
    fps = truth.fps
    normal = truth.normal_mask()
    ev_times = [e.seconds(fps) for e in truth.events]
    found, false = match_alerts(run.alerts, ev_times, tolerance_s)
    joins = [n.seconds(fps) for n in truth.nuisances if n.kind == "clip_join"]
    at_join = [f and any(j0 - 0.5 <= a.start_s <= j1 + 1.0 for j0, j1 in joins)
               for a, f in zip(run.alerts, false, strict=True)]
    m.join_alerts += int(sum(at_join))
    false = [f and not j for f, j in zip(false, at_join, strict=True)]
    m.normal_frames += int(normal.sum())
    m.normal_processed += int((normal & run.processed).sum())
    m.normal_flagged += int((normal & run.processed & run.flagged).sum())
    m.false_events += int(sum(false))
    m.events += len(truth.events)
    m.found += sum(1 for f in found if f is not None)
    m.delays += detection_delays(run.alerts, ev_times, found)
    scored = run.processed & np.isfinite(run.score)
    use = scored & (normal | (truth.labels == 1))
    m.labels.append(truth.labels[use])
    m.scores.append(run.score[use])
    m.scored_frames += int(scored.sum())
    m.processed_frames += int(run.processed.sum())
    m.wall_s += run.wall_s
    # per nuisance: spans of each kind, plus "clean" (no nuisance at all)
    kinds = sorted({n.kind for n in truth.nuisances}) + ["clean"]
    any_n = np.zeros(truth.n_frames, bool)
    for n in truth.nuisances:
        any_n[n.start:n.stop] = True
    for kind in kinds:
        mask = ~any_n if kind == "clean" else np.zeros(truth.n_frames, bool)
        for n in truth.nuisances:
            if n.kind == kind:
                mask[n.start:n.stop] = True
        b = m.by_nuisance.setdefault(kind, {"normal_s": 0.0, "false_events": 0, "flagged": 0, "processed": 0,
                                            "events": 0, "found": 0})
        b["normal_s"] += float((mask & normal).sum()) / fps
        b["processed"] += int((mask & normal & run.processed).sum())
        b["flagged"] += int((mask & normal & run.processed & run.flagged).sum())
        for a, is_false, is_join in zip(run.alerts, false, at_join, strict=True):
            lo, hi = math.floor(a.start_s * fps), math.ceil(a.end_s * fps) + 1
            if kind == "clip_join":
                b["false_events"] += int(is_join)  # by where its run starts (see join_alerts)
            elif is_false and mask[max(0, lo):max(0, min(truth.n_frames, hi))].any():
                b["false_events"] += 1
        for e, f in zip(truth.events, found, strict=True):
            if mask[e.start:e.stop].any():
                b["events"] += 1
                b["found"] += int(f is not None)
    for a, is_false, is_join in zip(run.alerts, false, at_join, strict=True):
        c = m.by_cause.setdefault(a.cause or "unknown", {"alerts": 0, "false_events": 0, "join_alerts": 0})
        c["alerts"] += 1
        c["false_events"] += int(is_false)
        c["join_alerts"] += int(is_join)
    for e, f in zip(truth.events, found, strict=True):
        s0, s1 = e.seconds(fps)
        sc = run.score[e.start:e.stop]
        m.event_rows.append({
            "seed": truth.seed, "kind": e.kind, "start_s": round(s0, 1), "end_s": round(s1, 1),
            "found": f is not None, "cause": run.alerts[f].cause if f is not None else None,
            "max_score": round(float(np.nanmax(sc)), 3) if np.isfinite(sc).any() else None,
            "nuisances": sorted({n.kind for n in truth.nuisances if n.start < e.stop and n.stop > e.start})})
    for e, f, in zip(truth.events, found, strict=True):
        k = m.by_kind.setdefault(e.kind, {"events": 0, "found": 0, "delays": []})
        k["events"] += 1
        if f is not None:
            k["found"] += 1
            k["delays"].append(max(0.0, run.alerts[f].fired_s - e.seconds(fps)[0]))
    return m


def summarise(m: StreamMetrics) -> dict[str, Any]:
    """The figures of one mode (over every stream of the run)."""
    y = np.concatenate(m.labels) if m.labels else np.zeros(0, np.int64)
    s = np.concatenate(m.scores) if m.scores else np.zeros(0)
    out: dict[str, Any] = {
        "false_events_per_hour": None,  # filled by the caller, who knows the hours
        "event_recall": round(m.found / m.events, 4) if m.events else None,
        "flagged_normal_frames": round(m.normal_flagged / m.normal_processed, 4) if m.normal_processed else None,
        "auc": _auc(y, s),
        "median_delay_s": round(float(np.median(m.delays)), 2) if m.delays else None,
        "false_events": m.false_events, "join_alerts": m.join_alerts, "events": m.events, "found": m.found,
        "scored_share": round(m.scored_frames / m.processed_frames, 4) if m.processed_frames else None,
        "processed_share": None, "wall_s": round(m.wall_s, 1),
        "fps_processed": round(m.processed_frames / m.wall_s, 2) if m.wall_s > 0 else None,
    }
    out["by_nuisance"] = {
        k: {"normal_s": round(b["normal_s"], 1), "false_events": int(b["false_events"]),
            "false_events_per_hour": _rate(int(b["false_events"]), b["normal_s"] / 3600),
            "flagged_normal_frames": round(b["flagged"] / b["processed"], 4) if b["processed"] else None,
            "events": int(b["events"]), "event_recall": round(b["found"] / b["events"], 4) if b["events"] else None}
        for k, b in sorted(m.by_nuisance.items())}
    out["by_kind"] = {k: {"events": v["events"], "event_recall": round(v["found"] / v["events"], 4),
                          "median_delay_s": round(float(np.median(v["delays"])), 2) if v["delays"] else None}
                      for k, v in sorted(m.by_kind.items())}
    out["by_cause"] = dict(sorted(m.by_cause.items()))
    out["events_detail"] = m.event_rows
    return out


# ------------------------------------------------------------------------------------- trained model


def train_model(clips: Sequence[Path], work: Path, overrides: Sequence[str] = (),
                config: Path | None = None) -> Path:
    """``vidseq train anomaly`` on ``clips`` (normal), through a dataset folder imported from links to them, with
    ``config`` (the command's own default, ``configs/anomaly.yaml``, when the caller passes it); returns the
    checkpoint (reused when it exists)."""
    from vidseq.sequences.importers import ImportOptions, import_dataset
    from vidseq.tasks.anomaly.task import train

    ckpt = work / "run" / "best.pt"
    if ckpt.is_file():
        return ckpt
    src = work / "src" / "train"
    src.mkdir(parents=True, exist_ok=True)
    for p in clips:
        link = src / p.name
        if not link.exists():
            link.symlink_to(Path(p).resolve())
    import_dataset("ucsd-ped2", src.parent, work / "ds", ImportOptions(link="symlink", force=True, progress=False))
    train(work / "ds", work / "run", config=config,
          overrides=["progress=false", f"cache_dir={work / 'cache'}", *overrides])
    return ckpt


# -------------------------------------------------------------------------------------------- driver


def code_hash(root: Path) -> str:
    """sha256 over the package's Python sources: results are recomputed whenever the code changes."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        if p.name == "alarm_bench.py":  # the measuring code itself: changing a metric must not rerun the streams
            continue
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


ProcessorFactory = Callable[[str, float, "str | None"], Processor]


def run_benchmark(data_dir: Path, cfg: BenchConfig, cache_dir: Path, make_processor: ProcessorFactory,
                  make_rule: Callable[[], Rule], *, settings: dict[str, Any] | None = None,
                  train_overrides: Sequence[str] = (), progress: Callable[[str], None] = print,
                  ) -> dict[str, Any]:
    """Build the streams, run every mode, return the report (``summary`` = the one-line JSON).

    Args:
        data_dir: Ped2-layout folder; only ``train/`` is read.
        cfg: benchmark settings.
        cache_dir: streams, the trained model and per-mode results (keyed by settings and code).
        make_processor: ``(mode, fps, model_path) -> processor`` (the script builds a FrameProcessor).
        make_rule: a fresh alert rule (the script builds the monitor's AlertRule).
        settings: the processing and alert settings, part of the results' cache key.
        train_overrides: ``vidseq train anomaly`` overrides for the trained mode.
        progress: where progress lines go.
    """
    import vidseq

    clips = list_normal_clips(Path(data_dir))
    model_clips, stream_clips = split_clips(clips, cfg.model_share)
    # what builds one stream (its length is "seconds": the same stream whatever the number of seeds beside it)
    gen = {k: v for k, v in asdict(cfg).items() if k not in ("modes", "tolerance_s", "live_slowdown", "seeds",
                                                                  "seed_set", "minutes")}
    clip_ids = [(p.name, p.stat().st_size) for p in clips]
    code = code_hash(Path(vidseq.__file__).parent)
    seconds = cfg.minutes * 60.0 / cfg.seeds
    streams: list[tuple[Path, StreamTruth]] = []
    for seed in cfg.seed_values:
        key = _key({"v": GENERATOR_VERSION, "gen": gen, "clips": clip_ids, "seed": seed, "seconds": seconds})
        progress(f"stream seed {seed}: {seconds:.0f} s from {len(stream_clips)} clips ({cache_dir / 'streams' / key})")
        streams.append(build_stream(stream_clips, cache_dir / "streams" / key, seed, seconds, cfg))
    model_path: str | None = None
    if "trained" in cfg.modes:
        # trained as `vidseq train anomaly` trains: with its default config file (when the checkout has one)
        train_config = default_config_path("anomaly")
        mkey = _key({"clips": [(p.name, p.stat().st_size) for p in model_clips], "code": code,
                     "overrides": list(train_overrides),
                     "config": train_config.read_text() if train_config is not None else None})
        progress(f"trained mode: vidseq train anomaly on {len(model_clips)} clips "
                 f"({model_clips[0].stem}..{model_clips[-1].stem})")
        model_path = str(train_model(model_clips, cache_dir / "models" / mkey, train_overrides, train_config))
    report: dict[str, Any] = {}
    hours = sum(int(t.normal_mask().sum()) / t.fps for _, t in streams) / 3600.0
    for mode in cfg.modes:
        acc = StreamMetrics()
        for video, truth in streams:
            rkey = _key({"video": str(video), "mode": mode, "settings": settings or {}, "code": code,
                         "model": model_path if mode == "trained" else None,
                         "live": cfg.live_slowdown if mode == "live" else None, "n": truth.n_frames})
            path = cache_dir / "results" / f"{rkey}.npz"
            if path.is_file():
                run = ModeRun.from_npz(path)
                progress(f"{mode} seed {truth.seed}: cached result")
            else:
                keep = live_schedule(truth.n_frames, truth.fps, cfg.live_slowdown, truth.seed) \
                    if mode == "live" else None
                proc = make_processor(mode, truth.fps, model_path if mode == "trained" else None)
                run = run_mode(video, truth.n_frames, proc, make_rule(), keep, progress)
                path.parent.mkdir(parents=True, exist_ok=True)
                run.to_npz(path)
                progress(f"{mode} seed {truth.seed}: {int(run.processed.sum())} frames in {run.wall_s:.0f} s, "
                         f"{len(run.alerts)} alerts")
            measure(truth, run, cfg.tolerance_s, acc)
        r = summarise(acc)
        r["false_events_per_hour"] = _rate(acc.false_events, hours)
        r["processed_share"] = round(acc.processed_frames / max(1, sum(t.n_frames for _, t in streams)), 4)
        report[mode] = r
    n_events = sum(len(t.events) for _, t in streams)
    summary: dict[str, Any] = {}
    for mode in cfg.modes:
        r = report[mode]
        summary[mode] = {k: r[k] for k in ("false_events_per_hour", "event_recall", "flagged_normal_frames",
                                           "auc", "median_delay_s")}
    summary.update(hours_normal=round(hours, 4), events=n_events, seed_set=cfg.seed_set,
                   seeds=list(cfg.seed_values))
    return {"summary": summary, "modes": report, "config": asdict(cfg), "settings": settings,
            "model_clips": [p.name for p in model_clips], "stream_clips": [p.name for p in stream_clips],
            "streams": [{"seed": t.seed, "video": str(v), "frames": t.n_frames, "events": len(t.events),
                         "nuisances": [n.kind for n in t.nuisances if n.kind != "clip_join"]} for v, t in streams],
            "code": code}
