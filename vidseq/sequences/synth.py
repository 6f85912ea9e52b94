"""Synthetic scenes: small videos of moving shapes with exact tracks, anomaly labels and captions.

The world: objects (circle / square / triangle in red / green / blue / yellow) move horizontally, left or
right, at typical speeds (about 0.8-1.6 px/frame at 160x120, scaled with the frame size); some stop and
stay still ("moves left then stops"). Motion is smooth (constant velocity, gentle lane drift) or noisy
(jittered velocity). Objects enter and exit at the frame edges, pass over each other and behind a static
pillar (occlusions). That is all training and validation clips ever show.

Test clips mix normal clips and clips with one injected anomaly (:data:`ANOMALY_TYPES`):
    wrong_speed      an object crosses at 3.5-5x the typical speed        motion ``fast-left|fast-right``
    wrong_direction  an object moves vertically                            motion ``up|down``
    unusual_object   a shape never seen in normal clips (a star)          motion ``left|right``
    loitering        an object walks in, then wanders around one spot     motion ``left-loiter|right-loiter``
A frame is labelled anomalous iff the anomalous object is visible (in frame, not fully occluded) in its
anomalous phase; labels are one contiguous range per anomaly (first to last such frame).

Captions are compositional: ``<a|the> <colour> <shape> <motion phrase>`` per object, joined in order of
appearance, in three paraphrase templates ("a red circle moves left then stops", ...). Each clip's
``meta.objects`` lists the composition of every object (shape, colour, motion), so a caption benchmark can
hold out (object, motion) combinations with :attr:`SynthConfig.holdout` patterns ("red circle left",
"* triangle right-stop"): train and val clips never contain a held-out composition; a share of test clips
(:attr:`SynthConfig.holdout_fraction`) is built around one.

Ground truth per clip (see :func:`generate_dataset`): MOT rows ``frame,id,x,y,w,h,class,conf`` with the true
(unclipped) box of every object whose box meets the frame, ``class`` = shape and ``conf`` = visible fraction
of the object's area (frame edges and occlusion); per-frame labels as ranges; captions; meta
``{synth, compositions, objects, anomalies, occluder}``. Deterministic: the same config gives
byte-identical annotation files (and videos, with the same OpenCV build). Clip ``i`` depends only on
``(seed, i)`` and the config, not on the other clips.

API::

    cfg = SynthConfig(clips=12, seed=0)                  # or load_config(SynthConfig, "configs/synth.yaml")
    ds = generate_dataset("ds/synth", cfg)               # writes videos + dataset.yaml; returns manifest Dataset
    scene = plan_scene(cfg, index=3, split="test", anomaly="loitering")   # in memory, no files
    scene.tracks()       # manifest.Tracks (exact boxes)
    scene.labels         # (T,) uint8
    scene.captions       # tuple of 3 paraphrases
    frames = render_scene(scene)                          # (T, H, W, 3) uint8 BGR
    compositions(cfg)    # every normal Composition of the config's vocabulary
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidseq.errors import ConfigError, DatasetError
from vidseq.sequences.manifest import (
    Clip,
    Dataset,
    LabelRanges,
    Tracks,
    check_destination,
    make_work_dir,
    replace_folder,
    save_dataset,
    write_tracks_csv,
)

logger = logging.getLogger(__name__)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
UNUSUAL_SHAPES: tuple[str, ...] = ("star",)
COLOURS: dict[str, tuple[int, int, int]] = {  # BGR
    "red": (40, 40, 220),
    "green": (60, 190, 60),
    "blue": (230, 110, 40),
    "yellow": (40, 215, 235),
    "purple": (200, 60, 170),
    "white": (235, 235, 235),
}
NORMAL_MOTIONS: tuple[str, ...] = ("left", "right", "left-stop", "right-stop")
ANOMALOUS_MOTIONS: tuple[str, ...] = ("fast-left", "fast-right", "up", "down", "left-loiter", "right-loiter")
ANOMALY_TYPES: tuple[str, ...] = ("wrong_speed", "wrong_direction", "unusual_object", "loitering")

# Three paraphrase templates per motion; caption template k uses phrase k of every object.
MOTION_PHRASES: dict[str, tuple[str, str, str]] = {
    "left": ("moves left", "goes to the left", "travels leftward"),
    "right": ("moves right", "goes to the right", "travels rightward"),
    "left-stop": ("moves left then stops", "goes to the left and then stops", "travels leftward before stopping"),
    "right-stop": ("moves right then stops", "goes to the right and then stops",
                   "travels rightward before stopping"),
    "fast-left": ("moves left quickly", "races to the left", "speeds leftward"),
    "fast-right": ("moves right quickly", "races to the right", "speeds rightward"),
    "up": ("moves up", "goes upward", "travels up the scene"),
    "down": ("moves down", "goes downward", "travels down the scene"),
    "left-loiter": ("moves left then wanders around", "goes to the left and then loiters",
                    "travels leftward before lingering in place"),
    "right-loiter": ("moves right then wanders around", "goes to the right and then loiters",
                     "travels rightward before lingering in place"),
}
NUM_CAPTION_TEMPLATES = 3

_BASE_W, _BASE_H = 160.0, 120.0
_SPEED_RANGE = (0.8, 1.6)  # px/frame at 160x120
_FAST_RANGE = (3.5, 5.0)  # multiple of the object's normal speed
_SIZE_RANGE = (5.0, 9.0)  # radius px at 160x120
_DECEL_FRAMES = 6


# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class SynthConfig:
    """Synthetic dataset settings (``configs/synth.yaml``).

    Attributes:
        clips: total number of clips (split into train / val / test).
        seed: master seed; clip ``i`` uses ``(seed, i)``.
        frames: frames per clip (minimum when ``frames_max`` is set).
        frames_max: if set, each clip's length is drawn uniformly from ``[frames, frames_max]``.
        width, height: frame size in pixels.
        fps: frame rate written to the videos and manifest.
        anomaly_rate: share of test clips that get one injected anomaly.
        val_fraction, test_fraction: share of clips in val / test (train gets the rest; each split gets
            at least one clip when ``clips >= 3``).
        min_objects, max_objects: normal objects per clip.
        shapes, colours, motions: the normal vocabulary (subsets of SHAPES, COLOURS, NORMAL_MOTIONS).
        anomaly_types: anomaly types used, cycled over the anomalous test clips.
        holdout: composition patterns ``"colour shape motion"`` (``*`` = any) kept out of train/val.
        holdout_fraction: share of test clips whose first object has a held-out composition.
        noisy_fraction: share of objects with noisy (jittered) motion.
        noise: jitter strength (px/frame std of the velocity noise at 160x120).
        occluder_prob: probability that a clip has a static occluding pillar.
        pixel_noise: std of per-frame Gaussian sensor noise (grey levels).
        video: write videos; False writes trajectory-only clips (tracks, labels, captions) much faster.
    """

    clips: int = 12
    seed: int = 0
    frames: int = 80
    frames_max: int | None = None
    width: int = 160
    height: int = 120
    fps: float = 10.0
    anomaly_rate: float = 0.5
    val_fraction: float = 0.2
    test_fraction: float = 0.3
    min_objects: int = 1
    max_objects: int = 3
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow")
    motions: tuple[str, ...] = NORMAL_MOTIONS
    anomaly_types: tuple[str, ...] = ANOMALY_TYPES
    holdout: tuple[str, ...] = ()
    holdout_fraction: float = 0.5
    noisy_fraction: float = 0.5
    noise: float = 0.25
    occluder_prob: float = 0.5
    pixel_noise: float = 2.0
    video: bool = True

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(f"synth: {msg}")

        if self.clips < 1:
            bad(f"clips must be >= 1, got {self.clips}")
        if self.frames < 20:
            bad(f"frames must be >= 20, got {self.frames}")
        if self.frames_max is not None and self.frames_max < self.frames:
            bad(f"frames_max ({self.frames_max}) must be >= frames ({self.frames})")
        if self.width < 48 or self.height < 36:
            bad(f"size must be at least 48x36, got {self.width}x{self.height}")
        if not self.fps > 0:
            bad(f"fps must be > 0, got {self.fps}")
        for name in ("anomaly_rate", "val_fraction", "test_fraction", "holdout_fraction", "noisy_fraction",
                     "occluder_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                bad(f"{name} must be in [0, 1], got {v}")
        if self.val_fraction + self.test_fraction >= 1.0:
            bad("val_fraction + test_fraction must be < 1")
        if not 0 <= self.min_objects <= self.max_objects or self.max_objects < 1:
            bad(f"need 0 <= min_objects <= max_objects and max_objects >= 1, got {self.min_objects}, "
                f"{self.max_objects}")
        for name, allowed in (("shapes", SHAPES), ("colours", tuple(COLOURS)), ("motions", NORMAL_MOTIONS),
                              ("anomaly_types", ANOMALY_TYPES)):
            values = getattr(self, name)
            if not values and name != "anomaly_types":
                bad(f"{name} must not be empty")
            for v in values:
                if v not in allowed:
                    bad(f"unknown {name[:-1]} '{v}'; known: {', '.join(allowed)}")
        if self.noise < 0 or self.pixel_noise < 0:
            bad("noise and pixel_noise must be >= 0")
        for pattern in self.holdout:
            _parse_pattern(pattern)


# ------------------------------------------------------------------------------------------ compositions


@dataclass(frozen=True, order=True)
class Composition:
    """What one object is and does: the unit a caption benchmark holds out."""

    colour: str
    shape: str
    motion: str

    def __str__(self) -> str:
        return f"{self.colour} {self.shape} {self.motion}"

    def matches(self, pattern: str) -> bool:
        """``pattern`` is ``"colour shape motion"`` with ``*`` wildcards."""
        want = _parse_pattern(pattern)
        return all(w == "*" or w == v for w, v in zip(want, (self.colour, self.shape, self.motion), strict=True))

    def phrase(self, template: int = 0, article: str = "a") -> str:
        """``"a red circle moves left"`` in paraphrase ``template`` (0..2)."""
        return f"{article} {self.colour} {self.shape} {MOTION_PHRASES[self.motion][template]}"


def _parse_pattern(pattern: str) -> tuple[str, str, str]:
    parts = pattern.replace(":", " ").split()
    if len(parts) != 3:
        raise ConfigError(f"synth: holdout pattern '{pattern}' must be 'colour shape motion' ('*' = any)")
    colour, shape, motion = parts
    checks = ((colour, tuple(COLOURS)), (shape, SHAPES + UNUSUAL_SHAPES), (motion, NORMAL_MOTIONS + ANOMALOUS_MOTIONS))
    for value, allowed in checks:
        if value != "*" and value not in allowed:
            raise ConfigError(f"synth: holdout pattern '{pattern}': unknown '{value}'; known: {', '.join(allowed)}")
    return colour, shape, motion


def compositions(cfg: SynthConfig) -> list[Composition]:
    """Every normal composition of the config's vocabulary (colour x shape x motion), sorted."""
    return sorted(Composition(c, s, m) for c in cfg.colours for s in cfg.shapes for m in cfg.motions)


def is_held_out(comp: Composition, cfg: SynthConfig) -> bool:
    return any(comp.matches(p) for p in cfg.holdout)


def split_compositions(cfg: SynthConfig) -> tuple[list[Composition], list[Composition]]:
    """(seen, held_out) normal compositions under ``cfg.holdout``."""
    comps = compositions(cfg)
    held = [c for c in comps if is_held_out(c, cfg)]
    seen = [c for c in comps if not is_held_out(c, cfg)]
    return seen, held


def caption_for(objects: Sequence[Composition], template: int = 0) -> str:
    """Join object phrases: ``"a red circle moves left, a blue square moves right and ..."``."""
    if not objects:
        return "the scene is empty"
    phrases = [o.phrase(template) for o in objects]
    if len(phrases) == 1:
        return phrases[0]
    joiner = (" and ", " while ", " and ")[template]
    return ", ".join(phrases[:-1]) + joiner + phrases[-1]


# -------------------------------------------------------------------------------------------- the scene


@dataclass(frozen=True)
class SceneObject:
    """One object's exact path.

    Attributes:
        id: track id (1-based, drawing order: higher ids are drawn on top).
        composition: colour, shape, motion.
        radius: half the box size in pixels.
        noisy: jittered motion.
        centers: (T, 2) float64 centre x, y at every frame (also off-screen).
        anomaly: anomaly type or None.
        phase_start: first frame of the anomalous phase (None for normal objects).
        held_out: composition matches a holdout pattern.
    """

    id: int
    composition: Composition
    radius: float
    noisy: bool
    centers: np.ndarray
    anomaly: str | None = None
    phase_start: int | None = None
    held_out: bool = False

    @property
    def boxes(self) -> np.ndarray:
        """(T, 4) true xywh boxes (not clipped to the frame)."""
        out = np.empty((len(self.centers), 4))
        out[:, :2] = self.centers - self.radius
        out[:, 2:] = 2.0 * self.radius
        return out

    def polygon(self, t: int) -> np.ndarray:
        """(V, 2) float outline at frame ``t`` (empty for circles, which are drawn from centre and radius)."""
        return _shape_polygon(self.composition.shape, self.centers[t], self.radius)


@dataclass(frozen=True)
class AnomalyEvent:
    """An injected anomaly: frames ``[start, stop)`` are labelled anomalous."""

    type: str
    object_id: int
    start: int
    stop: int


@dataclass(frozen=True)
class Scene:
    """A planned clip: geometry, visibility, labels and captions (no pixels).

    Attributes:
        id: clip id.
        split: train / val / test.
        index: clip index within the dataset (seeds ``(seed, index)``).
        seed: master seed.
        width, height, fps, num_frames: video geometry.
        objects: objects in drawing order.
        visibility: (T, K) float64 visible fraction of each object's area per frame.
        occluder: static pillar ``(x, y, w, h)`` drawn over objects, or None.
        background: (H, W, 3) uint8 static background.
        anomalies: injected anomalies.
        captions: paraphrases of what happens.
        pixel_noise: sensor noise std used by :func:`render_scene`.
    """

    id: str
    split: str
    index: int
    seed: int
    width: int
    height: int
    fps: float
    num_frames: int
    objects: tuple[SceneObject, ...]
    visibility: np.ndarray
    occluder: tuple[int, int, int, int] | None
    background: np.ndarray = field(repr=False)
    anomalies: tuple[AnomalyEvent, ...] = ()
    captions: tuple[str, ...] = ()
    pixel_noise: float = 2.0

    @property
    def labels(self) -> np.ndarray:
        """(T,) uint8 per-frame anomaly labels."""
        y = np.zeros(self.num_frames, np.uint8)
        for ev in self.anomalies:
            y[ev.start:ev.stop] = 1
        return y

    @property
    def is_anomalous(self) -> bool:
        return bool(self.anomalies)

    def in_frame(self) -> np.ndarray:
        """(T, K) bool: the object's box meets the frame."""
        out = np.zeros((self.num_frames, len(self.objects)), bool)
        for k, obj in enumerate(self.objects):
            c, r = obj.centers, obj.radius
            out[:, k] = ((c[:, 0] + r > 0) & (c[:, 0] - r < self.width) & (c[:, 1] + r > 0)
                         & (c[:, 1] - r < self.height))
        return out

    def tracks(self) -> Tracks:
        """Exact MOT rows (0-based frames, sorted by frame then id); conf = visible fraction."""
        inside = self.in_frame()
        frames, ids, boxes, classes, confs = [], [], [], [], []
        for t in range(self.num_frames):
            for k, obj in enumerate(self.objects):
                if not inside[t, k]:
                    continue
                frames.append(t)
                ids.append(obj.id)
                boxes.append(obj.boxes[t])
                classes.append(obj.composition.shape)
                confs.append(self.visibility[t, k])
        if not frames:
            return Tracks.empty()
        return Tracks(np.asarray(frames, np.int64), np.asarray(ids, np.int64), np.round(np.asarray(boxes), 3),
                      np.asarray(classes, dtype=str), np.round(np.asarray(confs, np.float32), 3))

    def meta(self) -> dict[str, Any]:
        """JSON/YAML-able ground truth for the manifest's ``meta``."""
        inside = self.in_frame()
        objects = []
        for k, obj in enumerate(self.objects):
            seen = np.flatnonzero(inside[:, k])
            objects.append({
                "id": obj.id,
                "shape": obj.composition.shape,
                "colour": obj.composition.colour,
                "motion": obj.composition.motion,
                "size": round(2 * obj.radius, 2),
                "noisy": obj.noisy,
                "first_frame": int(seen[0]) if seen.size else None,
                "last_frame": int(seen[-1]) if seen.size else None,
                "anomaly": obj.anomaly,
                "held_out": obj.held_out,
            })
        return {
            "synth": {"seed": self.seed, "index": self.index},
            "compositions": [str(o.composition) for o in self.objects],
            "objects": objects,
            "anomalies": [{"type": ev.type, "object": ev.object_id, "start": ev.start, "stop": ev.stop}
                          for ev in self.anomalies],
            "occluder": list(self.occluder) if self.occluder else None,
            "track_conf": "visibility",
        }


# ---------------------------------------------------------------------------------------------- geometry


def _shape_polygon(shape: str, center: np.ndarray, r: float) -> np.ndarray:
    cx, cy = float(center[0]), float(center[1])
    if shape == "square":
        return np.array([[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy + r], [cx - r, cy + r]])
    if shape == "triangle":
        return np.array([[cx, cy - r], [cx + r, cy + r], [cx - r, cy + r]])
    if shape == "star":
        ang = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
        # scale so the star's box is exactly the object's box [cx-r, cx+r] x [cy-r, cy+r]
        lo, hi = pts.min(0), pts.max(0)
        return np.stack([cx - r + (pts[:, 0] - lo[0]) / (hi[0] - lo[0]) * 2 * r,
                         cy - r + (pts[:, 1] - lo[1]) / (hi[1] - lo[1]) * 2 * r], axis=1)
    if shape == "circle":
        return np.zeros((0, 2))
    raise DatasetError(f"synth: unknown shape '{shape}'")


def _shape_area(shape: str, r: float) -> float:
    if shape == "circle":
        return math.pi * r * r
    poly = _shape_polygon(shape, np.zeros(2), r)
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


_SHIFT = 4  # cv2 sub-pixel bits


def _draw(img: np.ndarray, obj: SceneObject, t: int, colour: Any) -> None:
    import cv2

    scale = 1 << _SHIFT
    if obj.composition.shape == "circle":
        c = obj.centers[t]
        cv2.circle(img, (int(round(c[0] * scale)), int(round(c[1] * scale))), int(round(obj.radius * scale)),
                   colour, -1, cv2.LINE_8, _SHIFT)
    else:
        pts = np.round(obj.polygon(t) * scale).astype(np.int32)
        cv2.fillPoly(img, [pts], colour, cv2.LINE_8, _SHIFT)


def _visibility(objects: Sequence[SceneObject], occluder: tuple[int, int, int, int] | None, width: int,
                height: int, num_frames: int) -> np.ndarray:
    """(T, K) visible pixel count / analytic area, clipped to [0, 1]."""
    k = len(objects)
    vis = np.zeros((num_frames, k))
    areas = [_shape_area(o.composition.shape, o.radius) for o in objects]
    occ = np.zeros((height, width), bool)
    if occluder:
        x, y, w, h = occluder
        occ[y:y + h, x:x + w] = True
    for t in range(num_frames):
        masks = []
        for obj in objects:
            m = np.zeros((height, width), np.uint8)
            _draw(m, obj, t, 1)
            masks.append(m.astype(bool))
        covered = occ.copy()
        for i in range(k - 1, -1, -1):  # top-most first
            visible = masks[i] & ~covered
            vis[t, i] = min(1.0, visible.sum() / max(areas[i], 1e-6))
            covered |= masks[i]
    return vis


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    base = rng.uniform(35, 75, size=3)
    tint = rng.uniform(-15, 15, size=3)
    ys = np.linspace(0.0, 1.0, height)[:, None, None]
    xs = np.linspace(0.0, 1.0, width)[None, :, None]
    img = base + tint * (0.6 * ys + 0.4 * xs) + rng.normal(0.0, 4.0, size=(height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- motion plan


def _integrate(anchor_t: int, anchor_xy: np.ndarray, vel: np.ndarray) -> np.ndarray:
    """Positions (T, 2) with p[anchor_t] = anchor_xy and p[t+1] - p[t] = vel[t] (vel: (T, 2))."""
    num_frames = vel.shape[0]
    pos = np.empty((num_frames, 2))
    cum = np.concatenate([np.zeros((1, 2)), np.cumsum(vel[:-1], axis=0)])  # cum[t] = sum vel[0:t]
    pos[:] = anchor_xy + cum - cum[anchor_t]
    return pos


def _jitter(rng: np.random.Generator, num_frames: int, std: float, rho: float = 0.8) -> np.ndarray:
    """(T,) AR(1) noise with stationary std ``std``."""
    eps = rng.normal(0.0, std * math.sqrt(1 - rho * rho), size=num_frames)
    out = np.empty(num_frames)
    acc = rng.normal(0.0, std)
    for t in range(num_frames):
        acc = rho * acc + eps[t]
        out[t] = acc
    return out


def _plan_horizontal(rng: np.random.Generator, cfg: SynthConfig, num_frames: int, motion: str, noisy: bool,
                     speed: float, y_lane: float) -> np.ndarray:
    """Centres (T, 2) of a normal object: moves left/right, optionally stopping (``*-stop``)."""
    sx, sy = cfg.width / _BASE_W, cfg.height / _BASE_H
    direction = -1.0 if motion.startswith("left") else 1.0
    vel = np.zeros((num_frames, 2))
    vel[:, 0] = direction * speed
    if motion.endswith("-stop"):
        anchor_t = int(rng.integers(int(0.25 * num_frames), int(0.7 * num_frames) + 1))
        steps = np.arange(num_frames)
        ramp = np.clip((anchor_t - steps) / _DECEL_FRAMES, 0.0, 1.0)  # 1 while moving, ->0 at the stop
        vel[:, 0] *= ramp
    else:
        anchor_t = int(rng.integers(0, num_frames))
    moving = np.abs(vel[:, 0]) > 0
    if noisy:
        vel[:, 0] += _jitter(rng, num_frames, cfg.noise * sx) * moving
        vel[:, 1] = _jitter(rng, num_frames, cfg.noise * sy) * moving
    else:
        amp, period, phase = rng.uniform(0.0, 2.0) * sy, rng.uniform(25, 60), rng.uniform(0, 2 * np.pi)
        t = np.arange(num_frames)
        vel[:, 1] = amp * 2 * np.pi / period * np.cos(2 * np.pi * t / period + phase) * moving
    anchor_x = rng.uniform(0.2, 0.8) * cfg.width
    pos = _integrate(anchor_t, np.array([anchor_x, y_lane]), vel)
    if noisy:  # keep the lane: drift is bounded
        pos[:, 1] = y_lane + np.clip(pos[:, 1] - y_lane, -6 * sy, 6 * sy)
    return pos


def _plan_entering(num_frames: int, t0: int, start_xy: tuple[float, float],
                   velocity: tuple[float, float]) -> np.ndarray:
    vel = np.tile(np.asarray(velocity, float), (num_frames, 1))
    return _integrate(t0, np.asarray(start_xy, float), vel)


def _plan_loiter(rng: np.random.Generator, cfg: SynthConfig, num_frames: int, direction: float, speed: float,
                 y_lane: float, t_wander: int) -> np.ndarray:
    sx, sy = cfg.width / _BASE_W, cfg.height / _BASE_H
    vel = np.zeros((num_frames, 2))
    vel[:t_wander, 0] = direction * speed
    anchor = np.array([rng.uniform(0.25, 0.75) * cfg.width, y_lane])
    pos = _integrate(t_wander, anchor, vel)
    t = np.arange(num_frames - t_wander, dtype=float)
    for axis, amp_px, scale in ((0, (5.0, 9.0), sx), (1, (3.0, 6.0), sy)):
        for _ in range(2):
            amp = rng.uniform(*amp_px) * scale / 2
            period = rng.uniform(12, 30)
            pos[t_wander:, axis] += amp * np.sin(2 * np.pi * t / period)
    return pos


def _occluder(rng: np.random.Generator, cfg: SynthConfig) -> tuple[int, int, int, int] | None:
    if rng.random() >= cfg.occluder_prob:
        return None
    w = max(3, int(round(rng.uniform(6, 10) * cfg.width / _BASE_W)))
    x = int(round(rng.uniform(0.3, 0.7) * cfg.width))
    return (x, 0, w, cfg.height)


def _visible_range(centers: np.ndarray, radius: float, vis: np.ndarray, start: int, width: int,
                   height: int) -> tuple[int, int] | None:
    """[first, last + 1) frames >= start where the object is in frame and not fully occluded."""
    c = centers
    inside = ((c[:, 0] + radius > 0) & (c[:, 0] - radius < width) & (c[:, 1] + radius > 0)
              & (c[:, 1] - radius < height) & (vis > 0))
    idx = np.flatnonzero(inside[start:]) + start
    if idx.size == 0:
        return None
    return int(idx[0]), int(idx[-1]) + 1


def plan_scene(cfg: SynthConfig, index: int, split: str, anomaly: str | None = None, *,
               clip_id: str | None = None, force_holdout: bool | None = None) -> Scene:
    """Plan one clip (geometry, visibility, labels, captions); deterministic in ``(cfg.seed, index)``.

    Args:
        cfg: generator settings.
        index: clip index (seeds the clip's random stream).
        split: ``train``/``val`` (never held-out compositions, never anomalies) or ``test``.
        anomaly: one of :data:`ANOMALY_TYPES` to inject (test only), or None.
        clip_id: clip id; default ``f"{split}_{index:03d}"``.
        force_holdout: test only: build the first object from a held-out composition (default: drawn with
            probability ``cfg.holdout_fraction`` when ``cfg.holdout`` is set).

    Raises:
        ConfigError: an anomaly outside the test split, an unknown anomaly type, or every composition held out.
    """
    if split not in ("train", "val", "test"):
        raise ConfigError(f"synth: unknown split '{split}'")
    if anomaly is not None and anomaly not in ANOMALY_TYPES:
        raise ConfigError(f"synth: unknown anomaly '{anomaly}'; known: {', '.join(ANOMALY_TYPES)}")
    if anomaly is not None and split != "test":
        raise ConfigError(f"synth: anomalies go in test clips only, not {split}")
    rng = np.random.default_rng([cfg.seed, index])
    num_frames = cfg.frames if cfg.frames_max is None else int(rng.integers(cfg.frames, cfg.frames_max + 1))
    sx, sy = cfg.width / _BASE_W, cfg.height / _BASE_H
    s = min(sx, sy)
    seen, held = split_compositions(cfg)
    if not seen:
        raise ConfigError("synth: every composition is held out; train/val clips would be empty")
    n_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    if n_objects == 0 and anomaly is None:
        n_objects = 1 if cfg.max_objects > 0 else 0
    use_holdout = False
    if split == "test" and held:
        use_holdout = bool(rng.random() < cfg.holdout_fraction) if force_holdout is None else force_holdout
        n_objects = max(n_objects, 1) if use_holdout else n_objects
    all_comps = seen + held
    occluder = _occluder(rng, cfg)

    objects: list[SceneObject] = []
    lanes = rng.permutation(np.linspace(0.18, 0.82, max(n_objects, 1) + 1))
    for k in range(n_objects):
        if split == "test":
            pool = held if (k == 0 and use_holdout) else all_comps
        else:
            pool = seen
        comp = pool[int(rng.integers(len(pool)))]
        radius = rng.uniform(*_SIZE_RANGE) * s
        speed = rng.uniform(*_SPEED_RANGE) * sx
        noisy = bool(rng.random() < cfg.noisy_fraction)
        y_lane = (lanes[k] + rng.uniform(-0.04, 0.04)) * cfg.height
        centers = _plan_horizontal(rng, cfg, num_frames, comp.motion, noisy, speed, y_lane)
        objects.append(SceneObject(id=k + 1, composition=comp, radius=float(radius), noisy=noisy, centers=centers,
                                   held_out=is_held_out(comp, cfg)))

    anomaly_obj: SceneObject | None = None
    if anomaly is not None:
        colour = cfg.colours[int(rng.integers(len(cfg.colours)))]
        shape = cfg.shapes[int(rng.integers(len(cfg.shapes)))]
        radius = rng.uniform(*_SIZE_RANGE) * s
        speed = rng.uniform(*_SPEED_RANGE) * sx
        direction = -1.0 if rng.random() < 0.5 else 1.0
        side = "left" if direction < 0 else "right"
        t0 = int(rng.integers(int(0.2 * num_frames), int(0.45 * num_frames) + 1))
        y_lane = rng.uniform(0.2, 0.8) * cfg.height
        edge_x = cfg.width + radius if direction < 0 else -radius
        if anomaly == "wrong_speed":
            fast = speed * rng.uniform(*_FAST_RANGE)
            centers = _plan_entering(num_frames, t0, (edge_x, y_lane), (direction * fast, 0.0))
            motion = f"fast-{side}"
        elif anomaly == "wrong_direction":
            down = rng.random() < 0.5
            x_lane = rng.uniform(0.2, 0.8) * cfg.width
            start_y = -radius if down else cfg.height + radius
            vy = speed * sy / sx * (1.0 if down else -1.0)
            centers = _plan_entering(num_frames, t0, (x_lane, start_y), (0.0, vy))
            motion = "down" if down else "up"
        elif anomaly == "unusual_object":
            shape = UNUSUAL_SHAPES[0]
            radius = rng.uniform(7.0, 10.0) * s
            edge_x = cfg.width + radius if direction < 0 else -radius
            centers = _plan_entering(num_frames, t0, (edge_x, y_lane), (direction * speed, 0.0))
            motion = side
        else:  # loitering
            t0 = int(rng.integers(int(0.3 * num_frames), int(0.5 * num_frames) + 1))
            centers = _plan_loiter(rng, cfg, num_frames, direction, speed, y_lane, t0)
            motion = f"{side}-loiter"
        comp = Composition(colour, shape, motion)
        anomaly_obj = SceneObject(id=len(objects) + 1, composition=comp, radius=float(radius), noisy=False,
                                  centers=centers, anomaly=anomaly, phase_start=t0, held_out=is_held_out(comp, cfg))
        objects.append(anomaly_obj)

    vis = _visibility(objects, occluder, cfg.width, cfg.height, num_frames)
    events: list[AnomalyEvent] = []
    if anomaly_obj is not None:
        k = len(objects) - 1
        rng_vis = _visible_range(anomaly_obj.centers, anomaly_obj.radius, vis[:, k], anomaly_obj.phase_start or 0,
                                 cfg.width, cfg.height)
        if rng_vis is None:  # cannot happen with the ranges above; keep the label contract explicit
            raise DatasetError(f"synth: clip {index}: injected {anomaly} object never visible")
        events.append(AnomalyEvent(anomaly, anomaly_obj.id, rng_vis[0], rng_vis[1]))

    # captions describe objects that are visible at some point, in order of first appearance
    inside = (vis > 0)
    order = sorted((int(np.flatnonzero(inside[:, k])[0]), o.id, o.composition)
                   for k, o in enumerate(objects) if inside[:, k].any())
    comps_in_order = [c for _, _, c in order]
    captions = tuple(caption_for(comps_in_order, j) for j in range(NUM_CAPTION_TEMPLATES))
    background = _background(rng, cfg.width, cfg.height)
    return Scene(id=clip_id or f"{split}_{index:03d}", split=split, index=index, seed=cfg.seed, width=cfg.width,
                 height=cfg.height, fps=cfg.fps, num_frames=num_frames, objects=tuple(objects), visibility=vis,
                 occluder=occluder, background=background, anomalies=tuple(events), captions=captions,
                 pixel_noise=cfg.pixel_noise)


def iter_scene_frames(scene: Scene) -> Iterator[np.ndarray]:
    """Yield the scene's frames, (H, W, 3) uint8 BGR, deterministic in ``(seed, index)``."""
    rng = np.random.default_rng([scene.seed, scene.index, 1])
    occ_colour = (95, 105, 110)
    for t in range(scene.num_frames):
        img = scene.background.copy()
        for obj in scene.objects:
            _draw(img, obj, t, COLOURS[obj.composition.colour])
        if scene.occluder:
            x, y, w, h = scene.occluder
            img[y:y + h, x:x + w] = occ_colour
        if scene.pixel_noise > 0:
            noisy = img.astype(np.int16) + np.round(rng.normal(0.0, scene.pixel_noise, img.shape)).astype(np.int16)
            img = np.clip(noisy, 0, 255).astype(np.uint8)
        yield img


def render_scene(scene: Scene) -> np.ndarray:
    """(T, H, W, 3) uint8 BGR frames of the scene."""
    return np.stack(list(iter_scene_frames(scene)))


def write_scene_video(scene: Scene, path: str | os.PathLike[str]) -> Path:
    """Write the scene as an MJPG ``.avi`` (atomic)."""
    import cv2

    from vidseq.io import atomic_path

    final = Path(path)
    with atomic_path(final) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), scene.fps, (scene.width, scene.height))
        if not writer.isOpened():
            raise DatasetError(f"synth: OpenCV cannot write MJPG video {final}")
        try:
            for img in iter_scene_frames(scene):
                writer.write(img)
        finally:
            writer.release()
    return final


# ------------------------------------------------------------------------------------------- the dataset


def split_counts(cfg: SynthConfig) -> dict[str, int]:
    """Clips per split: ``{"train": n, "val": n, "test": n}``."""
    n = cfg.clips
    n_test = int(round(n * cfg.test_fraction))
    n_val = int(round(n * cfg.val_fraction))
    if n >= 3:
        n_test = max(n_test, 1 if cfg.test_fraction > 0 else 0)
        n_val = max(n_val, 1 if cfg.val_fraction > 0 else 0)
    n_val = min(n_val, max(n - n_test - 1, 0))
    n_test = min(n_test, n - 1) if n > 1 else 0
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def clip_plan(cfg: SynthConfig) -> list[tuple[str, int, str, str | None]]:
    """(clip_id, index, split, anomaly) for every clip: train, then val, then test clips.

    ``round(n_test * anomaly_rate)`` test clips (chosen by the seed) get an anomaly; types cycle through
    ``cfg.anomaly_types`` in order, so each type appears once there are enough anomalous clips.
    """
    counts = split_counts(cfg)
    out: list[tuple[str, int, str, str | None]] = []
    index = 0
    for split in ("train", "val", "test"):
        for j in range(counts[split]):
            out.append((f"{split}_{j:03d}", index, split, None))
            index += 1
    n_test = counts["test"]
    n_anom = int(round(n_test * cfg.anomaly_rate)) if cfg.anomaly_types else 0
    if n_anom:
        rng = np.random.default_rng([cfg.seed, 2**31 - 1])
        chosen = sorted(rng.permutation(n_test)[:n_anom].tolist())
        first_test = counts["train"] + counts["val"]
        for k, j in enumerate(chosen):
            cid, idx, split, _ = out[first_test + j]
            out[first_test + j] = (cid, idx, split, cfg.anomaly_types[k % len(cfg.anomaly_types)])
    return out


def scene_to_clip(scene: Scene, root: Path, video: bool = True) -> Clip:
    """Write a scene's tracks (and video) under ``root`` and return its manifest clip."""
    tracks_path = root / "tracks" / f"{scene.id}.csv"
    write_tracks_csv(tracks_path, scene.tracks())
    video_path = None
    if video:
        video_path = write_scene_video(scene, root / "videos" / f"{scene.id}.avi")
    return Clip(id=scene.id, split=scene.split, path=video_path, fps=scene.fps, frames=scene.num_frames,
                labels=LabelRanges.from_array(scene.labels), tracks=tracks_path, track_units="px",
                captions=list(scene.captions), meta=scene.meta())


def generate_dataset(dst: str | os.PathLike[str], cfg: SynthConfig = SynthConfig(), *, force: bool = False,
                     progress: bool | None = None) -> Dataset:
    """Render a synthetic dataset folder (videos, tracks, ``dataset.yaml``) and return it.

    The folder is built beside ``dst`` and moved into place at the end, so ``dst`` is either complete or
    untouched.

    Args:
        dst: output folder; must not exist (or be empty) unless ``force`` (which replaces a dataset folder).
        cfg: generator settings.
        force: replace an existing dataset folder at ``dst``.
        progress: tqdm progress bar (None: only on a tty).

    Raises:
        DatasetError: ``dst`` exists and is not replaceable.
    """
    from tqdm import tqdm

    from vidseq.config import to_dict

    final = Path(os.path.abspath(dst))
    check_destination(final, force)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = make_work_dir(final)
    try:
        _, held = split_compositions(cfg)
        ds = Dataset(root=work, name=f"synth-seed{cfg.seed}",
                     description="vidseq synthetic scenes (vidseq.sequences.synth)",
                     meta={"generator": "vidseq.sequences.synth", "config": to_dict(cfg),
                           "held_out_compositions": [str(c) for c in held]})
        plan = clip_plan(cfg)
        disable = None if progress is None else not progress
        for clip_id, index, split, anomaly in tqdm(plan, desc="synth", unit="clip", disable=disable):
            scene = plan_scene(cfg, index, split, anomaly, clip_id=clip_id)
            ds.add(scene_to_clip(scene, work, video=cfg.video))
        save_dataset(ds)
        replace_folder(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.info("synth: wrote %d clips to %s", len(plan), final)
    from vidseq.sequences.manifest import load_dataset

    return load_dataset(final)


def describe(cfg: SynthConfig) -> dict[str, Any]:
    """Split counts and anomaly plan of a config (cheap: plans nothing)."""
    plan = clip_plan(cfg)
    return {"splits": split_counts(cfg),
            "anomalous_clips": {cid: a for cid, _, _, a in plan if a is not None},
            "compositions": len(compositions(cfg)),
            "held_out": [str(c) for c in split_compositions(cfg)[1]]}


__all__ = [
    "ANOMALY_TYPES", "ANOMALOUS_MOTIONS", "COLOURS", "MOTION_PHRASES", "NORMAL_MOTIONS", "SHAPES", "UNUSUAL_SHAPES",
    "AnomalyEvent", "Composition", "Scene", "SceneObject", "SynthConfig", "caption_for", "clip_plan", "compositions",
    "describe", "generate_dataset", "is_held_out", "iter_scene_frames", "plan_scene", "render_scene",
    "scene_to_clip", "split_compositions", "split_counts", "write_scene_video",
]
