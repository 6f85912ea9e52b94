"""A generated camera scene for alarm tests: textured ground, walkers, and what cameras do.

``scene_frames`` returns ``(T, H, W, 3)`` BGR uint8 frames of walkers crossing a textured scene at
ordinary speeds, plus optional nuisances (exposure gain steps/ramps, sensor noise, camera shake, a
slow pan, a scene cut to another texture) and an injected fast object (the anomaly).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vidseq.features.motion import MotionConfig
from vidseq.features.regions import RegionConfig
from vidseq.models.anomaly.model import AnomalyConfig, FrameFeatures

SIZE = (160, 120)
FPS = 10.0
CFG = AnomalyConfig(motion=MotionConfig(width=0, grid=(3, 4)))


@dataclass
class Scene:
    seconds: float = 60.0
    fps: float = FPS
    seed: int = 0
    walkers: int = 4
    speed_px: float = 1.5  # walker speed, px/frame
    speed_ramp: float = 1.0  # walkers are this many times faster at the end (slow drift)
    fast: tuple[float, float] | None = None  # (start_s, end_s) of a fast object
    fast_again: tuple[float, float] | None = None  # the very same crossing once more
    fast_speed_px: float = 7.0
    gain_steps: list[tuple[float, float]] = field(default_factory=list)  # (t_s, gain) from then on
    gain_ramp: tuple[float, float] | None = None  # (from, to) gain over the whole clip
    noise: float = 0.0  # sensor noise sigma (gray levels)
    shake_px: float = 0.0  # random jitter amplitude
    shake_from_s: float = 0.0  # shake (and pan) start here
    pan_px_s: float = 0.0  # slow pan speed
    cut_at_s: float | None = None  # switch to another scene texture
    cut_back_s: float | None = None  # ... and back to the first one
    one_way: bool = False  # every walker walks to the right (a one-way path)
    lane_band: tuple[float, float] | None = None  # walkers' lanes in this band of the height (fractions)
    intruder: tuple[float, float, float, float] | None = None  # (start_s, end_s, y fraction, +1/-1): a walker at
    # ordinary speed, in its own lane and direction (off the path, or against the traffic)
    intruder_size: tuple[int, int] = (10, 24)  # its (w, h) px (walkers are 10x24)
    pacer: tuple[float, float, float, float] | None = None  # (start_s, end_s, x, y fractions): a walker pacing
    # up and down in place (amplitude pacer_amp_px, period pacer_period_s: at most ~1.4x a walker's speed)
    pacer_amp_px: float = 8.0
    pacer_period_s: float = 3.0


def _texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    import cv2

    fine = cv2.resize(rng.uniform(-40, 40, (h // 4 + 1, w // 4 + 1)).astype(np.float32), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    coarse = cv2.resize(rng.uniform(-60, 60, (h // 24 + 2, w // 24 + 2)).astype(np.float32), (w, h),
                        interpolation=cv2.INTER_CUBIC)  # large structure (buildings, lawn): what a cut changes
    return cv2.GaussianBlur(np.clip(120 + fine + coarse, 20, 220).astype(np.uint8), (3, 3), 0)


def scene_frames(sc: Scene) -> np.ndarray:
    """``(T, H, W, 3)`` BGR frames of the scene."""
    import cv2

    rng = np.random.default_rng(sc.seed)
    w, h = SIZE
    pad = 40
    bgs = [_texture(rng, w + 2 * pad + int(sc.pan_px_s * sc.seconds) + 1, h + 2 * pad) for _ in range(2)]
    n = round(sc.seconds * sc.fps)
    # walkers: y lane, x position, direction
    lo, hi = (5, h - 30) if sc.lane_band is None else (sc.lane_band[0] * h, sc.lane_band[1] * h)
    lanes = rng.uniform(lo, hi, sc.walkers)
    xs = rng.uniform(0, w, sc.walkers)
    dirs = np.ones(sc.walkers) if sc.one_way else rng.choice([-1.0, 1.0], sc.walkers)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        t = i / sc.fps
        other = sc.cut_at_s is not None and t >= sc.cut_at_s and (sc.cut_back_s is None or t < sc.cut_back_s)
        bg = bgs[1] if other else bgs[0]
        ox = pad + round(sc.pan_px_s * max(0.0, t - sc.shake_from_s))
        oy = pad
        if sc.shake_px and t >= sc.shake_from_s:
            ox += round(rng.uniform(-sc.shake_px, sc.shake_px))
            oy += round(rng.uniform(-sc.shake_px, sc.shake_px))
        world = bg.copy()
        for k in range(sc.walkers):
            ramp = 1.0 + (sc.speed_ramp - 1.0) * i / max(n - 1, 1)
            xs[k] = (xs[k] + dirs[k] * sc.speed_px * ramp * (1 + 0.2 * np.sin(t + k))) % (w + 20)
            x, y = int(xs[k]) + pad - 10, int(lanes[k]) + pad
            world[y:y + 24, x:x + 10] = 235
        if sc.intruder is not None and sc.intruder[0] <= t < sc.intruder[1]:
            t0, _, yf, d = sc.intruder
            travel = (t - t0) * sc.fps * sc.speed_px
            x = int(travel if d > 0 else w - 10 - travel) % (w - 10) + pad
            y = int(yf * h) + pad
            iw, ih = sc.intruder_size
            world[y + 24 - ih:y + 24, x:x + iw] = 235
        if sc.pacer is not None and sc.pacer[0] <= t < sc.pacer[1]:
            t0, _, xf, yf = sc.pacer
            x = int(xf * w + sc.pacer_amp_px * np.sin(2 * np.pi * (t - t0) / sc.pacer_period_s)) + pad
            y = int(yf * h) + pad
            world[y:y + 24, x:x + 10] = 235
        for span in (sc.fast, sc.fast_again):
            if span is not None and span[0] <= t < span[1]:
                x = int(((t - span[0]) * sc.fps * sc.fast_speed_px) % (w - 10)) + pad
                world[pad + h // 2 - 12:pad + h // 2 + 12, x:x + 10] = 20
        g = world[oy:oy + h, ox:ox + w].astype(np.float32)
        gain = 1.0
        if sc.gain_ramp is not None:
            gain *= sc.gain_ramp[0] + (sc.gain_ramp[1] - sc.gain_ramp[0]) * i / max(n - 1, 1)
        for ts, gs in sc.gain_steps:
            if t >= ts:
                gain = gs
        if sc.noise:  # sensor noise, then the camera's gain (which amplifies it)
            g = g + rng.normal(0, sc.noise, g.shape)
        g = g * gain
        g8 = np.clip(g, 0, 255).astype(np.uint8)
        out[i] = cv2.cvtColor(g8, cv2.COLOR_GRAY2BGR)
    return out


def scene_features(frames: np.ndarray, fps: float = FPS, camera=None, cfg: AnomalyConfig = CFG,
                   regions: RegionConfig | None = None):
    """``(features, cuts, working_size, views)``: :class:`FrameFeatures` per frame, the frames that followed a
    scene cut, the motion working size, and each frame as the camera compensation prepared it (None without).
    ``regions``: also find the frames' moving regions (the tracks stream needs them)."""
    from vidseq.tasks.anomaly.features import FeatureComputer

    comp = FeatureComputer(cfg.motion, regions, camera=camera)
    feats: list[FrameFeatures] = []
    cuts: list[bool] = []
    views: list[np.ndarray | None] = []
    for i, im in enumerate(frames):
        feats.append(comp.step(im, i, i / fps))
        cuts.append(comp.last_cut)
        views.append(comp.last_view)
    return feats, cuts, tuple(comp.motion.working_size or (0, 0)), views
