"""Pseudo-anomalies: labelled anomalous segments injected into *normal* clips, for label-free model selection.

Model selection must not read test labels, yet choosing streams, weights and smoothing needs *some*
anomalous frames to compare against. :func:`inject` makes them from normal footage of the same camera,
with three kinds fixed before any measurement (each a kind of event surveillance benchmarks call
anomalous, none tuned to a test set):

``skip`` (everyone too fast)
    the segment plays the source with a frame stride of 2-3: every moving thing moves 2-3x its normal
    speed (running), continuous with the frames before and after.
``fast_object`` (one object too fast)
    a moving person cut out of another normal clip (median-background foreground mask) is pasted on its
    own image row and crosses the frame at 2.5-4 body heights per second (cyclist / skater speed;
    walking is about 0.8).
``large_object`` (unusual object)
    the same kind of cut-out scaled 1.8-2.5x (a vehicle-sized thing where only people appear) moving at
    walking speed.
``rotated_object`` (object of unusual shape and look)
    such a cut-out turned 90 degrees (a person-sized thing lying flat: no normal object looks like it, as a
    cart or a fallen person does not), at its normal size, moving at walking speed: only its appearance
    and shape are anomalous, not its speed or scale.

Frames of an injected segment are labelled 1 while the pasted object is at least 30 % inside the frame
(every frame for ``skip``). Donor objects come from clips other than the one being modified.

Example::

    donors = find_donors(frames_of_other_clip)
    frames, labels, events = inject(frames, fps=10.0, donors=donors, kinds=("skip", "fast_object"), seed=3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vidseq.errors import ConfigError, InputShapeError

KINDS: tuple[str, ...] = ("skip", "fast_object", "large_object", "rotated_object")


@dataclass(frozen=True)
class PseudoConfig:
    """How pseudo-anomalies are injected.

    Attributes:
        kinds: kinds used, taken in turn (see the module docstring).
        segments: anomalous segments per clip (fewer when the clip is short).
        min_len_s, max_len_s: segment length range, seconds of output video.
        skip_strides: frame strides of ``skip``.
        fast_speed: ``fast_object`` speed range, object heights per second.
        walk_speed: ``large_object`` / ``rotated_object`` speed, object heights per second.
        large_scale: ``large_object`` scale range.
        seed: random seed (segments, donors, paths).
    """

    kinds: tuple[str, ...] = KINDS
    segments: int = 2
    min_len_s: float = 1.5
    max_len_s: float = 3.5
    skip_strides: tuple[int, ...] = (2, 3)
    fast_speed: tuple[float, float] = (2.5, 4.0)
    walk_speed: float = 0.8
    large_scale: tuple[float, float] = (1.8, 2.5)
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ConfigError(f"pseudo.kinds: unknown {bad}; known: {', '.join(KINDS)}")
        if self.segments < 1 or not 0 < self.min_len_s <= self.max_len_s:
            raise ConfigError("pseudo.segments must be >= 1 and 0 < min_len_s <= max_len_s")
        if not self.skip_strides or min(self.skip_strides) < 2:
            raise ConfigError("pseudo.skip_strides must be integers >= 2")


@dataclass(frozen=True)
class Donor:
    """A moving object cut out of a normal frame: BGR crop, soft alpha mask, and where it stood."""

    crop: np.ndarray  # (h, w, 3) uint8
    alpha: np.ndarray  # (h, w) float32 in [0, 1]
    bottom_y: int  # image row of the object's ground point
    height: int


@dataclass(frozen=True)
class InjectedEvent:
    """One injected segment, in output-frame positions ``[start, stop)``."""

    kind: str
    start: int
    stop: int
    detail: str


def find_donors(frames: Sequence[np.ndarray], *, every: int = 5, max_donors: int = 20, min_height: int = 12,
                ) -> list[Donor]:
    """Moving objects of a static-camera clip: foreground against the clip's median background.

    Candidates are upright components (at least 1.5x taller than wide, ``min_height`` px) of every
    ``every``-th frame whose height suits their ground row; up to ``max_donors`` spread over the clip.
    """
    import cv2

    if len(frames) < 3:
        return []
    sample = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames[:: max(1, len(frames) // 40)]])
    bg = np.median(sample, axis=0).astype(np.int16)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    cands: list[Donor] = []
    h_img, w_img = frames[0].shape[:2]
    for img in frames[::every]:
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.int16)
        fg = (np.abs(gray - bg) > 25).astype(np.uint8)
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel)
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, kernel, iterations=2)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if h < min_height or w < 4 or h < 1.5 * w or area < 0.35 * w * h:
                continue  # single upright people only (groups are wide, fragments small)
            if x == 0 or y == 0 or x + w >= w_img or y + h >= h_img:  # cut by the border
                continue
            mask = cv2.dilate((lab[y:y + h, x:x + w] == i).astype(np.float32), kernel)
            alpha = np.clip(cv2.GaussianBlur(mask, (3, 3), 0), 0, 1)
            cands.append(Donor(img[y:y + h, x:x + w].copy(), alpha, y + h, h))
    if not cands:
        return []
    # perspective: height grows with the ground row; drop blobs far off the typical height for their row
    ratio = np.array([d.height / max(d.bottom_y, 1) for d in cands])
    med = float(np.median(ratio))
    keep = [d for d, r in zip(cands, ratio, strict=True) if 0.75 * med <= r <= 1.25 * med]
    idx = np.linspace(0, len(keep) - 1, min(max_donors, len(keep))).round().astype(int) if keep else []
    return [keep[i] for i in idx]


def paste_donor(img: np.ndarray, d: Donor, cx: float, bottom: float, scale: float) -> float:
    """Alpha-blend ``d`` scaled by ``scale`` with its ground point at ``(cx, bottom)``; returns the visible share."""
    import cv2

    crop, alpha = d.crop, d.alpha
    if scale != 1.0:
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR)
        alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_LINEAR)
    h, w = alpha.shape
    x0, y0 = int(round(cx - w / 2)), int(round(bottom - h))
    hi, wi = img.shape[:2]
    ax0, ay0, ax1, ay1 = max(0, x0), max(0, y0), min(wi, x0 + w), min(hi, y0 + h)
    if ax1 <= ax0 or ay1 <= ay0:
        return 0.0
    a = alpha[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0, None]
    src = crop[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0].astype(np.float32)
    dst = img[ay0:ay1, ax0:ax1].astype(np.float32)
    img[ay0:ay1, ax0:ax1] = np.clip(a * src + (1 - a) * dst + 0.5, 0, 255).astype(np.uint8)
    return float((ax1 - ax0) * (ay1 - ay0)) / float(w * h)


def _rotated(d: Donor, clockwise: bool) -> Donor:
    """``d`` turned by 90 degrees, standing on the same ground row."""
    import cv2

    code = cv2.ROTATE_90_CLOCKWISE if clockwise else cv2.ROTATE_90_COUNTERCLOCKWISE
    crop = np.ascontiguousarray(cv2.rotate(d.crop, code))
    return Donor(crop, np.ascontiguousarray(cv2.rotate(d.alpha, code)), d.bottom_y, int(crop.shape[0]))


def _plan(n_src: int, fps: float, cfg: PseudoConfig, kinds: Sequence[str], rng: np.random.Generator,
          ) -> list[tuple[str, int, int, int]]:
    """Segments ``(kind, src_start, out_len, stride)`` in source positions, non-overlapping, sorted."""
    lo, hi = max(2, round(cfg.min_len_s * fps)), max(2, round(cfg.max_len_s * fps))
    gap = max(lo, round(1.0 * fps))
    kinds = list(kinds)
    while kinds:
        budget = (n_src - gap * (len(kinds) + 1)) // len(kinds)  # source frames per segment
        strides = [int(rng.choice(cfg.skip_strides)) if k == "skip" else 1 for k in kinds]
        lengths = [min(int(rng.integers(lo, hi + 1)), (budget - 1) // s) for s in strides]
        if min(lengths) >= lo:
            break
        kinds.pop()  # too short for this many segments
    else:
        return []
    plan: list[tuple[str, int, int, int]] = []
    pos = gap  # normal frames first, for the scorer's warm-up
    for kind, length, stride in zip(kinds, lengths, strides, strict=True):
        slack = budget - (length * stride + 1)
        start = pos + int(rng.integers(0, slack // 2 + 1))
        plan.append((kind, start, length, stride))
        pos += budget + gap
    return plan


def inject(frames: Sequence[np.ndarray], *, fps: float, donors: Sequence[Donor], kinds: Sequence[str],
           cfg: PseudoConfig | None = None, seed: int = 0,
           ) -> tuple[list[np.ndarray], np.ndarray, list[InjectedEvent]]:
    """Normal ``frames`` -> (frames with injected segments, ``(T_out,)`` int labels, events).

    Args:
        frames: BGR frames of one normal clip.
        fps: its frame rate (speeds are per second).
        donors: cut-out objects (needed for the object kinds; object kinds are skipped without donors).
        kinds: kinds to inject, in order, as many as fit (``cfg.segments`` at most).
        cfg: sizes and speeds.
        seed: random seed for this clip.

    Raises:
        InputShapeError: no frames, or frames of different sizes.
    """
    cfg = cfg or PseudoConfig()
    if not len(frames):
        raise InputShapeError("pseudo-anomalies: no frames")
    shape = frames[0].shape
    if any(f.shape != shape for f in frames):
        raise InputShapeError("pseudo-anomalies: frames differ in size")
    if fps <= 0 or not math.isfinite(fps):
        raise InputShapeError(f"pseudo-anomalies: bad fps {fps}")
    rng = np.random.default_rng(seed)
    usable = [k for k in kinds if k == "skip" or donors][: cfg.segments]
    plan = _plan(len(frames), fps, cfg, usable, rng)
    out: list[np.ndarray] = []
    labels: list[int] = []
    events: list[InjectedEvent] = []
    src = 0
    w_img = shape[1]
    for kind, start, length, stride in plan:
        while src < start:
            out.append(frames[src])
            labels.append(0)
            src += 1
        first = len(out)
        if kind == "skip":
            for j in range(length):
                out.append(frames[src + j * stride])
                labels.append(1)
            src += length * stride
            # the next frame's flow still spans `stride` source frames: part of the event
            if src < len(frames):
                out.append(frames[src])
                labels.append(1)
                src += 1
            events.append(InjectedEvent(kind, first, len(out), f"stride {stride}"))
            continue
        d = donors[int(rng.integers(len(donors)))]
        if kind == "fast_object":
            scale, speed = 1.0, float(rng.uniform(*cfg.fast_speed))
        elif kind == "rotated_object":
            scale, speed = 1.0, cfg.walk_speed
        else:
            scale, speed = float(rng.uniform(*cfg.large_scale)), cfg.walk_speed
        step = speed * d.height / fps  # px per frame (height of the unscaled donor: same place, same perspective)
        if kind == "rotated_object":
            d = _rotated(d, clockwise=bool(rng.random() < 0.5))
        direction = 1.0 if rng.random() < 0.5 else -1.0
        half = d.crop.shape[1] * scale / 2
        travel = step * (length - 1)
        # start somewhere that keeps the object inside the frame for most of the segment
        lo_x, hi_x = half, max(half, w_img - half - travel)
        x_start = float(rng.uniform(lo_x, hi_x))
        if direction < 0:
            x_start = w_img - x_start
        for j in range(length):
            img = frames[src].copy()
            visible = paste_donor(img, d, x_start + direction * step * j, d.bottom_y, scale)
            out.append(img)
            labels.append(1 if visible >= 0.3 else 0)
            src += 1
        events.append(InjectedEvent(kind, first, len(out), f"speed {speed:.2f} h/s, scale {scale:.2f}"))
    while src < len(frames):
        out.append(frames[src])
        labels.append(0)
        src += 1
    return out, np.asarray(labels, np.int64), events
