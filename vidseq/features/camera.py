"""What real cameras do to motion statistics, undone frame by frame before optical flow.

:class:`CameraCompensator` sits between the gray working frames and the dense flow of
:class:`vidseq.features.motion.MotionExtractor` and handles four nuisances (each switchable in
:class:`CameraConfig`):

``photometric``
    Auto-exposure drift and jumps: every working frame is standardised to a fixed mean and contrast
    (robust: median and inter-quartile range of its gray values) before flow and frame differences, so
    a global gain/offset change does not move any pixel.
``denoise``
    Sensor noise: a small Gaussian blur before flow, so per-pixel noise does not read as motion.
``stabilise``
    Camera shake and slow pans: the dominant image motion between consecutive frames is estimated
    from tracked corners (``cv2.goodFeaturesToTrack`` + pyramidal Lucas-Kanade +
    ``cv2.estimateAffinePartial2D`` with RANSAC: a similarity transform that the static background,
    the majority of points, agrees on); the previous frame is warped onto the current one with it before
    dense flow, so only motion relative to the scene remains. The border the shift uncovers is zeroed.
``scene_cut``
    Cuts (another camera, a moved PTZ, a switched stream): the Pearson correlation of small blurred
    thumbnails of consecutive frames (invariant to exposure, tolerant to shake) falls below
    ``cut_correlation``. The flow of that frame is meaningless; the caller is told (``cut``) and
    decides what to do (the anomaly head re-learns normality and never raises an alarm for it).

Example::

    comp = CameraCompensator(CameraConfig())
    prev = comp.prepare(gray0)
    cur = comp.prepare(gray1)
    motion = comp.motion(prev, cur)           # CameraMotion: affine (2, 3), cut, inlier share
    prev_on_cur = comp.warp_previous(prev, motion)   # dense flow between prev_on_cur and cur: scene motion only
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidseq.errors import ConfigError

log = logging.getLogger(__name__)

TARGET_MEDIAN = 128.0
TARGET_IQR = 64.0
THUMB_SIZE = (32, 24)


@dataclass(frozen=True)
class CameraConfig:
    """Camera-nuisance compensation before optical flow (see the module docstring).

    Attributes:
        photometric: standardise every frame's brightness and contrast.
        denoise: Gaussian blur sigma (working px) before flow; 0 = off.
        stabilise: subtract the dominant (similarity) motion from the dense flow.
        max_corners: corners tracked for the dominant motion.
        min_inliers: fewer RANSAC inliers than this (or under ``min_inlier_share`` of the tracked
            points) and no compensation is applied for that frame.
        min_inlier_share: see ``min_inliers``.
        min_shift_px: dominant motions smaller than this (largest displacement over the frame, px)
            are left alone: a static camera keeps its raw flow exactly.
        scene_cut: detect scene cuts.
        cut_correlation: thumbnail correlation below which consecutive frames are a cut.
        similar_cut_correlation: below this thumbnail correlation, consecutive frames whose tracked corners
            fit no single camera motion (fewer than ``min_inlier_share`` RANSAC inliers among at least
            ``min_inliers`` tracked corners) are a cut too, when the frame pair before them was steady
            (correlation at or above this): a switch to a view of a similar scene (another camera, a mirrored
            or PTZ-preset view) keeps the thumbnails alike but moves every corner its own way. A scene already
            in fast motion (a cyclist sweeping past close to the lens) also loses its corners' agreement for a
            few frames; it was not steady before, so it is not taken for a cut. Consecutive frames of one
            camera, shaking, panning or changing exposure, correlate above 0.96 on the alarm benchmark's dev
            streams; their two cuts to a mirrored view correlate 0.86 and keep 5-8 % inliers. 0 turns the
            test off.
    """

    photometric: bool = True
    denoise: float = 1.0
    stabilise: bool = True
    max_corners: int = 300
    min_inliers: int = 20
    min_inlier_share: float = 0.3
    min_shift_px: float = 0.25
    scene_cut: bool = True
    cut_correlation: float = 0.5
    similar_cut_correlation: float = 0.95

    def __post_init__(self) -> None:
        if self.denoise < 0 or self.max_corners < 10 or self.min_inliers < 3 or self.min_shift_px < 0:
            raise ConfigError("camera: denoise and min_shift_px must be >= 0, max_corners >= 10, min_inliers >= 3")
        if not 0 <= self.min_inlier_share <= 1 or not -1 <= self.cut_correlation <= 1 \
                or not -1 <= self.similar_cut_correlation <= 1:
            raise ConfigError("camera: min_inlier_share must be in [0, 1], cut_correlation and "
                              "similar_cut_correlation in [-1, 1]")

    @property
    def enabled(self) -> bool:
        return self.photometric or self.denoise > 0 or self.stabilise or self.scene_cut


@dataclass
class CameraMotion:
    """The camera's own motion between two consecutive frames."""

    affine: np.ndarray | None  # (2, 3) prev -> cur similarity transform, None = not compensated
    shift_px: float  # largest displacement of the transform over the frame (px)
    inliers: int
    tracked: int
    correlation: float  # thumbnail correlation of the two frames
    cut: bool


def normalise_photometric(gray: np.ndarray) -> np.ndarray:
    """``(h, w)`` uint8 -> the same frame with median 128 and inter-quartile range 64 (clipped to uint8)."""
    q25, med, q75 = np.percentile(gray[::2, ::2], (25, 50, 75))
    scale = TARGET_IQR / max(float(q75 - q25), 4.0)
    out = (gray.astype(np.float32) - float(med)) * scale + TARGET_MEDIAN
    return np.clip(out, 0, 255).astype(np.uint8)


def thumbnail(gray: np.ndarray) -> np.ndarray:
    """Small blurred float thumbnail (for cut detection)."""
    import cv2

    t = cv2.resize(gray, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    return cv2.GaussianBlur(t, (3, 3), 0)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally sized arrays (1.0 when either is flat)."""
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return 1.0 if den < 1e-6 else float((a * b).sum() / den)


def affine_flow(affine: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(h, w, 2)`` displacement field of a ``(2, 3)`` transform: ``A @ [x, y, 1] - [x, y]``."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    a = affine.astype(np.float32)
    dx = (a[0, 0] - 1.0) * xs + a[0, 1] * ys + a[0, 2]
    dy = a[1, 0] * xs + (a[1, 1] - 1.0) * ys + a[1, 2]
    return np.stack([dx, dy], -1)


def dominant_motion(prev: np.ndarray, cur: np.ndarray, cfg: CameraConfig) -> tuple[np.ndarray | None, int, int]:
    """``(affine, inliers, tracked)``: the similarity transform (RANSAC over corners tracked with Lucas-Kanade)
    taking ``prev`` to ``cur``; ``affine`` is None when too few or too small a share of the tracked corners
    agree with it."""
    import cv2

    pts = cv2.goodFeaturesToTrack(prev, maxCorners=cfg.max_corners, qualityLevel=0.01, minDistance=7, blockSize=7)
    if pts is None or len(pts) < cfg.min_inliers:
        return None, 0, 0 if pts is None else len(pts)
    nxt, status, _ = cv2.calcOpticalFlowPyrLK(prev, cur, pts, None, winSize=(21, 21), maxLevel=3)
    ok = status.ravel() == 1
    p0, p1 = pts.reshape(-1, 2)[ok], nxt.reshape(-1, 2)[ok]
    if len(p0) < cfg.min_inliers:
        return None, 0, len(p0)
    a, inl = cv2.estimateAffinePartial2D(p0, p1, method=cv2.RANSAC, ransacReprojThreshold=1.0)
    n_in = int(inl.sum()) if inl is not None else 0
    if a is None or n_in < cfg.min_inliers or n_in < cfg.min_inlier_share * len(p0):
        return None, n_in, len(p0)
    return a, n_in, len(p0)


def same_view(a: np.ndarray, b: np.ndarray, cfg: CameraConfig | None = None) -> bool:
    """Whether two prepared frames, however far apart in time, show the same view: their thumbnails are not a
    cut apart and one camera motion explains most of the corners tracked between them (people moving in
    front of the background change the thumbnail, not the background's corners)."""
    cfg = cfg or CameraConfig()
    if a.shape != b.shape or correlation(thumbnail(a), thumbnail(b)) < cfg.cut_correlation:
        return False
    affine, _, _ = dominant_motion(a, b, cfg)
    return affine is not None


class ViewMemory:
    """The last ``kept`` views a stream left at scene cuts, each with what was learnt of it: an opaque state,
    complete (learnt) or partial (still being learnt). A partial state never replaces a complete one of the same
    view; :meth:`recall` prefers a complete state, newest first."""

    def __init__(self, kept: int, cfg: CameraConfig | None = None) -> None:
        self.kept = kept
        self.cfg = cfg
        self._items: list[tuple[np.ndarray, Any, bool]] = []  # (last frame of the view, state, complete)

    def remember(self, frame: np.ndarray, state: Any, complete: bool) -> None:
        same = [same_view(f, frame, self.cfg) for f, _, _ in self._items]
        if not complete and any(m and c for m, (_, _, c) in zip(same, self._items, strict=True)):
            return  # this view's complete state is kept already: a partial one adds nothing
        self._items = [it for m, it in zip(same, self._items, strict=True) if not m]
        self._items.append((frame, state, complete))
        del self._items[:-self.kept]

    def recall(self, frame: np.ndarray) -> tuple[Any, bool] | None:
        """The state kept for ``frame``'s view and whether it is complete (removed from memory), or None."""
        for i in sorted(range(len(self._items)), key=lambda i: (not self._items[i][2], -i)):
            if same_view(self._items[i][0], frame, self.cfg):
                _, state, complete = self._items.pop(i)
                return state, complete
        return None


class CameraCompensator:
    """Per-frame camera compensation (stateless between frames except for the last thumbnail)."""

    def __init__(self, cfg: CameraConfig | None = None) -> None:
        self.cfg = cfg or CameraConfig()
        self.cuts = 0
        self.last_frame: np.ndarray | None = None  # the latest prepared frame given to motion()
        self._steady = True  # the previous frame pair correlated >= similar_cut_correlation
        self._thumb: np.ndarray | None = None  # thumbnail of last_frame

    def prepare(self, gray: np.ndarray) -> np.ndarray:
        """The working gray frame as flow should see it (photometric normalisation, denoising)."""
        import cv2

        out = normalise_photometric(gray) if self.cfg.photometric else gray
        if self.cfg.denoise > 0:
            out = cv2.GaussianBlur(out, (0, 0), self.cfg.denoise)
        return out

    def motion(self, prev: np.ndarray, cur: np.ndarray) -> CameraMotion:
        """Dominant motion and cut test between two prepared frames."""
        corr = 1.0
        if self.cfg.scene_cut:
            # the previous call's current frame is usually this call's previous one: its thumbnail is reused
            before = self._thumb if prev is self.last_frame and self._thumb is not None else thumbnail(prev)
            self._thumb = thumbnail(cur)
            corr = correlation(before, self._thumb)
        self.last_frame = cur
        steady, self._steady = self._steady, corr >= self.cfg.similar_cut_correlation
        if corr < self.cfg.cut_correlation:
            self.cuts += 1
            return CameraMotion(None, 0.0, 0, 0, corr, True)
        # alike, but is it the same view? Only asked of a change out of a steady view: in a scene already in
        # fast motion (a close object sweeping through, a fast pan) corners disagree for other reasons
        similar = steady and corr < self.cfg.similar_cut_correlation
        if not (self.cfg.stabilise or similar):
            return CameraMotion(None, 0.0, 0, 0, corr, False)
        a, n_in, tracked = dominant_motion(prev, cur, self.cfg)
        if similar and tracked >= self.cfg.min_inliers and n_in < self.cfg.min_inlier_share * tracked:
            self.cuts += 1  # no one camera motion explains the change: another view
            return CameraMotion(None, 0.0, n_in, tracked, corr, True)
        if not self.cfg.stabilise or a is None:
            return CameraMotion(None, 0.0, n_in, tracked, corr, False)
        h, w = prev.shape
        corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64)
        shift = float(np.abs(corners @ a.T - corners[:, :2]).max())
        if shift < self.cfg.min_shift_px:
            return CameraMotion(None, shift, n_in, tracked, corr, False)
        return CameraMotion(a, shift, n_in, tracked, corr, False)

    def mask_border(self, flow: np.ndarray, motion: CameraMotion) -> np.ndarray:
        """Zero the border the camera's motion uncovered (no valid correspondence there)."""
        if motion.affine is None:
            return flow
        b = int(np.ceil(motion.shift_px)) + 2
        flow[:b] = 0
        flow[-b:] = 0
        flow[:, :b] = 0
        flow[:, -b:] = 0
        return flow

    def warp_previous(self, prev: np.ndarray, motion: CameraMotion) -> np.ndarray:
        """The previous frame moved onto the current one (for frame differences)."""
        import cv2

        if motion.affine is None:
            return prev
        h, w = prev.shape
        return cv2.warpAffine(prev, motion.affine, (w, h), borderMode=cv2.BORDER_REPLICATE)


__all__ = [
    "CameraCompensator",
    "CameraConfig",
    "CameraMotion",
    "ViewMemory",
    "affine_flow",
    "correlation",
    "normalise_photometric",
    "thumbnail",
]
