"""Per-frame motion descriptors from dense optical flow, computed one frame at a time.

:class:`MotionExtractor` takes BGR frames in order and carries the previous (downscaled, gray) frame,
so it serves files and live streams alike. For each frame it returns a :class:`MotionFrame`:

* ``flow`` — dense optical flow from the previous frame, ``(h, w, 2)`` float32 in pixels per frame of
  the *working* resolution (frames are resized to ``MotionConfig.width`` first);
* ``magnitude_map`` — flow magnitude average-pooled by ``map_stride`` (``(h // s, w // s)``), small
  enough to cache for every frame of a dataset; anomaly heads build per-location models on it;
* ``descriptor`` — per-cell statistics on a ``grid`` of cells plus global frame-difference values
  (:func:`descriptor_names` lists them), a fixed-length vector for sequence models.

The first frame of a source has no previous frame: its flow is zero and ``valid`` is False.

Example::

    ext = MotionExtractor(MotionConfig(method="farneback", width=360, grid=(6, 9)))
    for frame in iter_frames("clip.avi"):
        m = ext.step(frame.image, frame.frame_index, frame.timestamp_s)
        m.descriptor          # (D,) float32, D = ext.descriptor_dim

Whole clips (cached) go through :func:`vidseq.tasks.anomaly.features.extract_clip_features`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from vidseq.errors import InputShapeError
from vidseq.features.camera import CameraCompensator, CameraConfig, CameraMotion, footprint

log = logging.getLogger(__name__)

CELL_STATS: tuple[str, ...] = ("mag_mean", "mag_p90", "vx_mean", "vy_mean", "moving_frac", "diff_mean")
GLOBAL_STATS: tuple[str, ...] = ("g_mag_mean", "g_mag_p99", "g_moving_frac", "g_diff_mean")


@dataclass(frozen=True)
class MotionConfig:
    """How motion is measured.

    Attributes:
        method: ``farneback`` (OpenCV Farneback, robust default) or ``dis`` (OpenCV DIS, faster).
        width: working width in pixels; frames are resized to it (aspect kept) before flow. 0 keeps
            the native size. Pixel quantities (thresholds, windows) are in working-resolution pixels.
        grid: ``(rows, cols)`` of cells for the descriptor statistics.
        moving_threshold: flow magnitude (px/frame) above which a pixel counts as moving.
        map_stride: the cached magnitude map is the flow magnitude average-pooled by this factor.
        pyr_scale, levels, winsize, iterations, poly_n, poly_sigma: Farneback parameters.
        dis_preset: ``ultrafast``, ``fast`` or ``medium`` (DIS only).
    """

    method: Literal["farneback", "dis"] = "farneback"
    width: int = 360
    grid: tuple[int, int] = (6, 9)
    moving_threshold: float = 0.4
    map_stride: int = 4
    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2
    dis_preset: Literal["ultrafast", "fast", "medium"] = "medium"

    def __post_init__(self) -> None:
        from vidseq.errors import ConfigError

        if self.width < 0 or (0 < self.width < 16):
            raise ConfigError(f"motion.width must be 0 (native) or >= 16, got {self.width}")
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ConfigError(f"motion.grid must be two positive integers, got {self.grid}")
        if self.map_stride < 1:
            raise ConfigError(f"motion.map_stride must be >= 1, got {self.map_stride}")
        if self.moving_threshold < 0:
            raise ConfigError(f"motion.moving_threshold must be >= 0, got {self.moving_threshold}")


def descriptor_names(cfg: MotionConfig) -> list[str]:
    """Names of the descriptor entries, in order: per-cell stats (row-major cells), then global stats."""
    rows, cols = cfg.grid
    return [f"r{r}c{c}_{s}" for r in range(rows) for c in range(cols) for s in CELL_STATS] + list(GLOBAL_STATS)


def working_size(width: int, height: int, cfg: MotionConfig) -> tuple[int, int]:
    """``(w, h)`` frames are resized to before flow (multiples of ``map_stride``)."""
    if cfg.width and width != cfg.width:
        w, h = cfg.width, max(1, round(height * cfg.width / width))
    else:
        w, h = width, height
    s = cfg.map_stride
    return max(s, w - w % s), max(s, h - h % s)


@dataclass
class MotionFrame:
    """Motion measured at one frame (see module docstring)."""

    frame_index: int
    timestamp_s: float
    flow: np.ndarray  # (h, w, 2) float32 px/frame at working resolution
    gray: np.ndarray  # (h, w) uint8 working-resolution gray frame (the frame's own pixels)
    magnitude_map: np.ndarray  # (h // s, w // s) float32
    descriptor: np.ndarray  # (D,) float32
    valid: bool  # False for the first frame (no previous frame, zero flow) and after a scene cut
    cut: bool = False  # a scene cut between the previous frame and this one (camera compensation only)
    camera_shift_px: float = 0.0  # the camera's own motion removed from ``flow`` (0: none)
    to_home: np.ndarray | None = None  # (2, 3) this frame -> the camera's home view, when registered (see camera):
    # ``flow`` and the statistics are then in the home view's pixels
    frame_flow: np.ndarray | None = None  # registered frames: the flow in the frame's own pixels (as ``gray``)
    home_cover: float = 1.0  # share of the home view the frame shows


def cell_statistics(flow: np.ndarray, diff: np.ndarray, grid: tuple[int, int], threshold: float) -> np.ndarray:
    """Per-cell statistics of a flow field (vectorised).

    Args:
        flow: ``(h, w, 2)`` float32 flow.
        diff: ``(h, w)`` float32 absolute frame difference in [0, 1].
        grid: ``(rows, cols)``; cells are ``h // rows`` x ``w // cols`` pixels from the top-left corner
            (the remainder rows/columns, fewer than ``rows``/``cols`` pixels, are left out).
        threshold: moving-pixel magnitude threshold.

    Returns:
        ``(rows, cols, len(CELL_STATS))`` float32.
    """
    h, w = flow.shape[:2]
    rows, cols = grid
    ch, cw = h // rows, w // cols
    if ch < 1 or cw < 1:
        raise InputShapeError(f"motion: grid {rows}x{cols} is finer than the {w}x{h} working frame")

    def cells(a: np.ndarray) -> np.ndarray:  # (h, w, ...) -> (rows, cols, ch * cw, ...)
        a = a[: rows * ch, : cols * cw]
        a = a.reshape(rows, ch, cols, cw, *a.shape[2:]).swapaxes(1, 2)
        return a.reshape(rows, cols, ch * cw, *a.shape[4:])

    f = cells(flow)  # (rows, cols, P, 2)
    mag = np.sqrt(f[..., 0] ** 2 + f[..., 1] ** 2)  # (rows, cols, P)
    out = np.empty((rows, cols, len(CELL_STATS)), np.float32)
    out[..., 0] = mag.mean(-1)
    k = int(round(0.9 * (mag.shape[-1] - 1)))
    out[..., 1] = np.partition(mag, k, axis=-1)[..., k]
    out[..., 2:4] = f.mean(-2)
    out[..., 4] = (mag > threshold).mean(-1)
    out[..., 5] = cells(diff).mean(-1)
    return out


def pool_map(values: np.ndarray, stride: int) -> np.ndarray:
    """Average-pool a ``(h, w)`` map by ``stride`` (h, w multiples of stride) -> ``(h//s, w//s)``."""
    if stride == 1:
        return values.astype(np.float32, copy=False)
    h, w = values.shape
    return values.reshape(h // stride, stride, w // stride, stride).mean(axis=(1, 3)).astype(np.float32)


def to_home_view(to_home: np.ndarray, flow: np.ndarray, diff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A frame's flow and frame difference moved into the camera's home view (zoom and pan undone: places and
    flow vectors in the home view's pixels); zero where the frame does not show the home view."""
    import cv2

    h, w = diff.shape
    m = np.asarray(to_home, np.float64)
    moved = cv2.warpAffine(flow, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    lin = m[:, :2].astype(np.float32)
    flow = np.empty_like(moved)
    flow[..., 0] = lin[0, 0] * moved[..., 0] + lin[0, 1] * moved[..., 1]
    flow[..., 1] = lin[1, 0] * moved[..., 0] + lin[1, 1] * moved[..., 1]
    diff = cv2.warpAffine(diff, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    unseen = ~footprint(m, (h, w))
    flow[unseen] = 0.0
    diff[unseen] = 0.0
    return flow, diff


class MotionExtractor:
    """Streaming optical-flow motion descriptor: ``step(image)`` per frame, previous frame carried.

    Args:
        cfg: :class:`MotionConfig`.
        camera: camera-nuisance compensation (:mod:`vidseq.features.camera`: photometric normalisation,
            denoising, removal of the camera's own motion, scene cuts); None = raw frames (the trained
            models' features).
        frame_step: source frames between two analysed frames (1: every frame). Flow is measured per step:
            when the previous analysed frame is ``k`` steps back (a live reader dropped frames), the flow is
            divided by ``k``, so speeds, moving pixels and objects read the same at any processing rate.
            A live reader also hands over the source frame just before the one it delivers (``previous`` of
            :meth:`step`): flow and frame difference are then measured between those two consecutive source
            frames (and scaled to a step), as if nothing had been dropped. Dense flow does not follow a small
            object that moved most of its own size between the analysed frames; between consecutive frames it
            does. The camera's motion between the analysed frames still drives the cut test and the home-view
            registration.
    """

    def __init__(self, cfg: MotionConfig | None = None, camera: CameraConfig | None = None,
                 frame_step: int = 1) -> None:
        if frame_step < 1:
            raise InputShapeError(f"motion: frame_step must be >= 1, got {frame_step}")
        self.cfg = cfg or MotionConfig()
        self.camera = CameraCompensator(camera) if camera is not None and camera.enabled else None
        self.frame_step = int(frame_step)
        self._prev: np.ndarray | None = None
        self._prev_index: int | None = None
        self._size: tuple[int, int] | None = None  # source (w, h)
        self._work: tuple[int, int] | None = None  # working (w, h)
        self._dis: Any = None

    @property
    def descriptor_dim(self) -> int:
        rows, cols = self.cfg.grid
        return rows * cols * len(CELL_STATS) + len(GLOBAL_STATS)

    @property
    def working_size(self) -> tuple[int, int] | None:
        """Working ``(w, h)`` once the first frame was seen."""
        return self._work

    def reset(self) -> None:
        """Forget the previous frame (the next frame starts a new sequence)."""
        self._prev = None
        self._prev_index = None

    def steps_since(self, frame_index: int) -> float:
        """Analysed-frame steps from the previous frame to ``frame_index`` (1 when none was dropped)."""
        if self._prev_index is None:
            return 1.0
        return max(1.0, (int(frame_index) - self._prev_index) / self.frame_step)

    def _gray(self, image: np.ndarray) -> np.ndarray:
        import cv2

        if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif image.ndim == 2 and image.dtype == np.uint8:
            gray = image
        else:
            raise InputShapeError(f"motion: frames must be (H, W, 3) BGR or (H, W) gray uint8, "
                                  f"got {image.shape} {image.dtype}")
        size = (gray.shape[1], gray.shape[0])
        if self._size is None:
            self._size = size
            self._work = working_size(size[0], size[1], self.cfg)
        elif size != self._size:
            raise InputShapeError(f"motion: frame size changed from {self._size[0]}x{self._size[1]} "
                                  f"to {size[0]}x{size[1]}")
        assert self._work is not None
        if self._work != size:
            gray = cv2.resize(gray, self._work, interpolation=cv2.INTER_AREA)
        return gray

    def _flow(self, prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
        import cv2

        c = self.cfg
        if c.method == "dis":
            if self._dis is None:
                preset = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                          "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[c.dis_preset]
                self._dis = cv2.DISOpticalFlow_create(preset)
            return self._dis.calc(prev, cur, None)
        return cv2.calcOpticalFlowFarneback(prev, cur, None, c.pyr_scale, c.levels, c.winsize, c.iterations,
                                            c.poly_n, c.poly_sigma, 0)

    def _prepared(self, image: np.ndarray) -> np.ndarray:
        gray = self._gray(image)
        return gray if self.camera is None else self.camera.prepare(gray)

    def step(self, image: np.ndarray, frame_index: int = 0, timestamp_s: float = 0.0,
             previous: tuple[np.ndarray, int] | None = None) -> MotionFrame:
        """Measure motion between the previous frame and ``image`` (BGR or gray uint8).

        ``previous``: ``(image, frame_index)`` of the source frame just before this one when the reader dropped
        it; used when it lies between the previous analysed frame and this one, more than a step back.
        """
        gray = self._prepared(image)
        h, w = gray.shape
        valid = self._prev is not None
        cut, shift = False, 0.0
        cam: CameraMotion | None = None
        if valid and self.camera is not None:
            assert self._prev is not None
            cam = self.camera.motion(self._prev, gray)
            cut, shift = cam.cut, cam.shift_px
            valid = not cut
        reg = self.camera.registration if self.camera is not None else None
        to_home: np.ndarray | None = None
        if reg is not None:
            if valid and cam is not None:
                to_home = reg.update(gray, cam)
            else:
                reg.reset(gray)
        if valid:
            assert self._prev is not None and self._prev_index is not None
            prev, ref_cam = self._prev, cam
            before = None if previous is None else int(previous[1])
            if before is not None and self._prev_index < before < int(frame_index) \
                    and int(frame_index) - self._prev_index > self.frame_step:
                prev = self._prepared(previous[0])  # consecutive source frames: flow follows fast objects
                steps = (int(frame_index) - before) / self.frame_step
                ref_cam = None if self.camera is None else self.camera.step_motion(prev, gray)
            else:
                steps = self.steps_since(frame_index)
            warper = self.camera if ref_cam is not None and ref_cam.affine is not None else None
            if warper is not None:
                # the previous frame is moved onto this one first, so flow sees only motion in the scene
                # (subtracting the camera's flow afterwards leaves it wherever the texture is too flat for
                # dense flow to have followed the shift)
                prev = warper.warp_previous(prev, ref_cam)
            flow = self._flow(prev, gray).astype(np.float32, copy=False)
            if steps != 1.0:
                flow *= np.float32(1.0 / steps)  # the flow array is this step's own
            if warper is not None:
                flow = warper.mask_border(flow, ref_cam)
            diff = np.abs(gray.astype(np.float32) - prev.astype(np.float32)) * (1.0 / 255.0)
        else:
            flow = np.zeros((h, w, 2), np.float32)
            diff = np.zeros((h, w), np.float32)
        self._prev = gray
        self._prev_index = int(frame_index)
        frame_flow = None
        if to_home is not None:
            frame_flow = flow
            flow, diff = to_home_view(to_home, flow, diff)
        mag = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)
        cells = cell_statistics(flow, diff, self.cfg.grid, self.cfg.moving_threshold)
        kq = int(round(0.99 * (mag.size - 1)))
        glob = np.array([mag.mean(), np.partition(mag.ravel(), kq)[kq], (mag > self.cfg.moving_threshold).mean(),
                         diff.mean()], np.float32)
        desc = np.concatenate([cells.reshape(-1), glob]).astype(np.float32)
        return MotionFrame(frame_index=int(frame_index), timestamp_s=float(timestamp_s), flow=flow, gray=gray,
                           magnitude_map=pool_map(mag, self.cfg.map_stride), descriptor=desc, valid=valid, cut=cut,
                           camera_shift_px=shift, to_home=to_home, frame_flow=frame_flow,
                           home_cover=1.0 if reg is None else reg.cover)
