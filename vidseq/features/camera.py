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
``register``
    A camera that zooms or pans (a PTZ move) and comes back: the per-frame motions are chained into the
    transform from the current frame to the view the stream started in (its home view), and the frame's
    stabilised flow is moved into that view before the motion statistics, so speeds, places and directions
    stay in the pixels normality was learnt in (a zoom by 1.25 would otherwise make every walker 25 % faster
    and move it to other cells). Moving objects are still found in the frame's own pixels (the home view's
    edge, moving with the camera, would cut them). Chained estimates drift,
    so whenever the camera stops, and every ``register_check`` frames while it is away, the transform is
    corrected by registering the warped frame directly to the last still frame of the home view. Back within
    ``register_home_px`` of home it becomes the identity again (a static camera's flow is not warped); a
    camera that moves so far that under ``register_min_cover`` of the home view is still in sight takes its
    new view as home.
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
        register: keep a zooming or panning camera's frames registered to its home view (see the module
            docstring); needs ``stabilise``.
        register_check: frames between direct corrections of the chained transform while the camera is away.
        register_min_cover: below this share of the home view in sight, the current view becomes home.
        register_home_px: a transform that moves no corner of the frame further than this (px) is home (the
            identity): the chained estimates of a camera that came back, or of a static one, stay a fraction
            of a pixel off, which is not worth warping every frame for.
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
    register: bool = True
    register_check: int = 10
    register_min_cover: float = 0.5
    register_home_px: float = 1.0
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
        if self.register_check < 1 or not 0 < self.register_min_cover <= 1 or self.register_home_px < 0:
            raise ConfigError(f"camera: register_check must be >= 1, register_min_cover in (0, 1] and "
                              f"register_home_px >= 0, got {self.register_check} / {self.register_min_cover} / "
                              f"{self.register_home_px}")

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


def transform_shift(affine: np.ndarray, shape: tuple[int, int]) -> float:
    """Largest displacement (px) a ``(2, 3)`` transform gives a corner of an ``(h, w)`` frame."""
    h, w = shape
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64)
    return float(np.abs(corners @ np.asarray(affine, np.float64).T - corners[:, :2]).max())


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The ``(2, 3)`` transform applying ``inner`` first, then ``outer``."""
    a = np.vstack([np.asarray(outer, np.float64), [0.0, 0.0, 1.0]])
    b = np.vstack([np.asarray(inner, np.float64), [0.0, 0.0, 1.0]])
    return (a @ b)[:2]


def invert(affine: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` similarity / affine transform."""
    a = np.vstack([np.asarray(affine, np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(a)[:2]


def footprint(affine: np.ndarray, shape: tuple[int, int], margin: int = 2) -> np.ndarray:
    """``(h, w)`` bool: the pixels of the home view that a frame warped by ``affine`` shows (``margin`` px in
    from the frame's edges inside the home view, where interpolation mixes in the border)."""
    import cv2

    h, w = shape
    ones = np.ones((h, w), np.uint8)
    m = cv2.warpAffine(ones, np.asarray(affine, np.float64), (w, h), flags=cv2.INTER_NEAREST,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if margin > 0:  # (beyond the frame counts as shown: the home view's own edges are not pulled in)
        m = cv2.erode(m, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8), borderType=cv2.BORDER_CONSTANT,
                      borderValue=1)
    return m.astype(bool)


def cover(affine: np.ndarray, shape: tuple[int, int]) -> float:
    """Share of the home frame that a frame mapped into it by ``affine`` covers."""
    import cv2

    h, w = shape
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    mapped = (np.hstack([corners, np.ones((4, 1), np.float32)]) @ np.asarray(affine, np.float32).T)
    area, _ = cv2.intersectConvexConvex(corners, mapped.astype(np.float32))
    return float(area) / float(w * h)


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


class ViewRegistration:
    """The transform from the current frame to the camera's home view (``CameraConfig.register``).

    :meth:`update` is given each prepared frame with the camera's motion since the previous one and returns the
    ``(2, 3)`` transform that warps the frame into the home view, or None while the camera is home;
    :attr:`cover` is then the share of the home view the frame shows.
    """

    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self.to_home: np.ndarray | None = None
        self.cover = 1.0
        self.anchor: np.ndarray | None = None  # the last frame seen while home
        self.rehomed = 0  # times the camera moved so far that its view became home
        self._since = 0
        self._moving = False

    def reset(self, frame: np.ndarray) -> None:
        """A new view (first frame, scene cut): it is home."""
        self.to_home = None
        self.cover = 1.0
        self.anchor = frame
        self._since = 0
        self._moving = False

    def update(self, frame: np.ndarray, motion: CameraMotion) -> np.ndarray | None:
        moved = motion.affine is not None
        if moved:
            step = invert(motion.affine)  # this frame -> the previous one
            self.to_home = step if self.to_home is None else compose(self.to_home, step)
        if self.to_home is not None:
            self._since += 1
            # a camera that just stopped, and one away for a while: correct the chain's drift directly
            if (self._moving and not moved) or self._since >= self.cfg.register_check:
                self._correct(frame)
        self._moving = moved
        self.cover = 1.0
        if self.to_home is not None:
            if transform_shift(self.to_home, frame.shape) < max(self.cfg.min_shift_px, self.cfg.register_home_px):
                self.to_home = None
            else:
                self.cover = cover(self.to_home, frame.shape)
                if self.cover < self.cfg.register_min_cover:
                    self.to_home = None
                    self.cover = 1.0
                    self.rehomed += 1
                    log.info("the camera moved away from its view for good: the current view is now its home")
        if self.to_home is None:
            self._since = 0
            if not moved:  # the home view's latest still frame (a shaking camera's frames are not)
                self.anchor = frame
        return self.to_home

    def _correct(self, frame: np.ndarray) -> None:
        import cv2

        self._since = 0
        if self.anchor is None or self.to_home is None:
            return
        h, w = frame.shape
        warped = cv2.warpAffine(frame, self.to_home, (w, h), borderMode=cv2.BORDER_REPLICATE)
        residual, _, _ = dominant_motion(self.anchor, warped, self.cfg)  # home -> warped frame
        if residual is not None:
            self.to_home = compose(invert(residual), self.to_home)


class CameraCompensator:
    """Per-frame camera compensation (stateless between frames except for the last thumbnail)."""

    def __init__(self, cfg: CameraConfig | None = None) -> None:
        self.cfg = cfg or CameraConfig()
        self.cuts = 0
        self.last_frame: np.ndarray | None = None  # the latest prepared frame given to motion()
        self._steady = True  # the previous frame pair correlated >= similar_cut_correlation
        self._thumb: np.ndarray | None = None  # thumbnail of last_frame
        self.registration = ViewRegistration(self.cfg) if self.cfg.register and self.cfg.stabilise else None

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
        return self._stabilised(a, n_in, tracked, corr, prev.shape)

    def _stabilised(self, a: np.ndarray | None, n_in: int, tracked: int, corr: float,
                    shape: tuple[int, int]) -> CameraMotion:
        if not self.cfg.stabilise or a is None:
            return CameraMotion(None, 0.0, n_in, tracked, corr, False)
        shift = transform_shift(a, shape)
        if shift < self.cfg.min_shift_px:
            return CameraMotion(None, shift, n_in, tracked, corr, False)
        return CameraMotion(a, shift, n_in, tracked, corr, False)

    def step_motion(self, prev: np.ndarray, cur: np.ndarray) -> CameraMotion:
        """The camera's motion between two prepared consecutive source frames, to stabilise their flow only: no
        cut test and nothing remembered (the stream's own chain of analysed frames, :meth:`motion`, keeps the
        cut test and the registration)."""
        if not self.cfg.stabilise:
            return CameraMotion(None, 0.0, 0, 0, 1.0, False)
        a, n_in, tracked = dominant_motion(prev, cur, self.cfg)
        return self._stabilised(a, n_in, tracked, 1.0, prev.shape)

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
    "ViewRegistration",
    "affine_flow",
    "compose",
    "correlation",
    "cover",
    "footprint",
    "invert",
    "normalise_photometric",
    "thumbnail",
    "transform_shift",
]
