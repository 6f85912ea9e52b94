"""Class-agnostic moving regions for static cameras: background subtraction -> boxes -> attributes.

:class:`RegionDetector` turns frames (one at a time) into :class:`Regions`: OpenCV background
subtraction (MOG2 or KNN; or thresholded optical-flow magnitude), morphological open/close, connected
components, one box per component. Every object type is found, known or not, which a detector with a
fixed class list cannot promise; the price is that touching objects merge into one region.

:func:`region_attributes` measures each region with the dense flow of the same frame (velocity from
the flow inside the region's pixels: no tracking needed) plus size, aspect and position. Values are in
working-resolution pixels; :func:`normalise_attributes` divides speeds and sizes by a per-location
scale (e.g. the normal speed at that image position) so objects near and far from the camera compare.

Example::

    det = RegionDetector(RegionConfig(method="mog2"))
    ext = MotionExtractor()
    for frame in iter_frames("clip.avi"):
        m = ext.step(frame.image)
        regions = det.step(m.gray)                            # boxes at the motion working resolution
        attrs = region_attributes(regions, m.flow)           # (N, len(ATTRIBUTE_NAMES))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from vidseq.config import setting
from vidseq.errors import ConfigError, InputShapeError

log = logging.getLogger(__name__)

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "speed_median",  # median flow magnitude over the region's pixels (px/frame)
    "speed_p90",  # 90th percentile of the same
    "vx",  # mean flow x over the region's pixels
    "vy",  # mean flow y
    "height",  # box height (px)
    "width",  # box width (px)
    "sqrt_area",  # sqrt of the component's pixel count (px)
    "y_bottom",  # box bottom edge (px): where the object touches the ground
    "x_center",  # box centre x (px)
)
SPEED_ATTRIBUTES = (0, 1, 2, 3)
SIZE_ATTRIBUTES = (4, 5, 6)


RegionMethod = Literal["mog2", "knn", "flow"]
"""How moving regions are found (:attr:`RegionConfig.method`)."""


@dataclass(frozen=True)
class RegionConfig:
    """Moving-region detection.

    Attributes:
        method: ``mog2`` / ``knn`` (OpenCV background subtractors) or ``flow`` (flow magnitude above
            ``flow_threshold``; needs the flow passed to :meth:`RegionDetector.step`).
        history: frames of history of the background model.
        var_threshold: MOG2 ``varThreshold`` (KNN: ``dist2Threshold``).
        learning_rate: background learning rate; negative = OpenCV's automatic rate.
        flow_threshold: px/frame, ``flow`` method only.
        min_area: smallest component kept (pixels at working resolution).
        open_px, close_px: elliptical kernel sizes of the morphological open / close (0 = skip).
        close_iterations: iterations of the close.
        max_regions: keep at most this many regions per frame (largest first).
    """

    method: RegionMethod = "mog2"
    history: int = 100
    var_threshold: float = 16.0
    learning_rate: float = setting(-1.0, ge=-1.0, le=1.0)
    flow_threshold: float = 0.5
    min_area: int = 40
    open_px: int = 3
    close_px: int = 3
    close_iterations: int = 2
    max_regions: int = 64

    def __post_init__(self) -> None:
        if self.history < 1:
            raise ConfigError(f"regions.history must be >= 1, got {self.history}")
        if self.min_area < 1:
            raise ConfigError(f"regions.min_area must be >= 1, got {self.min_area}")
        if self.max_regions < 1:
            raise ConfigError(f"regions.max_regions must be >= 1, got {self.max_regions}")


@dataclass
class Regions:
    """Moving regions of one frame as parallel arrays.

    Attributes:
        xyxy: ``(N, 4)`` float32 boxes (x1, y1, x2, y2), pixels of the image given to the detector.
        area: ``(N,)`` int64 component pixel counts.
        labels: ``(H, W)`` int32 component label image (0 = background, region ``i`` has label
            ``label_ids[i]``); used to measure attributes on the region's own pixels.
        label_ids: ``(N,)`` int32.
        frame_index: frame the regions belong to.
    """

    xyxy: np.ndarray
    area: np.ndarray
    labels: np.ndarray
    label_ids: np.ndarray
    frame_index: int = 0

    def __post_init__(self) -> None:
        n = self.xyxy.shape[0]
        if self.xyxy.shape != (n, 4) or self.area.shape != (n,) or self.label_ids.shape != (n,):
            raise InputShapeError(f"regions: xyxy (N, 4), area (N,), label_ids (N,) expected, got "
                                  f"{self.xyxy.shape}, {self.area.shape}, {self.label_ids.shape}")

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])


class RegionDetector:
    """Streaming moving-region detector; keeps the background model between calls."""

    def __init__(self, cfg: RegionConfig | None = None) -> None:
        import cv2

        self.cfg = cfg or RegionConfig()
        c = self.cfg
        self._subtractor: Any = None
        if c.method == "mog2":
            self._subtractor = cv2.createBackgroundSubtractorMOG2(history=c.history, varThreshold=c.var_threshold,
                                                                  detectShadows=False)
        elif c.method == "knn":
            self._subtractor = cv2.createBackgroundSubtractorKNN(history=c.history, dist2Threshold=c.var_threshold,
                                                                 detectShadows=False)
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (c.open_px, c.open_px)) if c.open_px > 1 else None
        self._close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (c.close_px, c.close_px)) if c.close_px > 1 else None
        self._count = 0

    def foreground(self, image: np.ndarray, flow: np.ndarray | None = None) -> np.ndarray:
        """``(H, W)`` uint8 0/255 foreground mask after morphology (advances the background model)."""
        import cv2

        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise InputShapeError(f"regions: frames must be uint8 gray or BGR, got {image.shape} {image.dtype}")
        if self.cfg.method == "flow":
            if flow is None:
                raise InputShapeError("regions: method 'flow' needs the frame's flow")
            mag = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)
            fg = (mag > self.cfg.flow_threshold).astype(np.uint8) * 255
        else:
            fg = self._subtractor.apply(image, learningRate=self.cfg.learning_rate)
        if self._open is not None:
            fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._open)
        if self._close is not None:
            fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, self._close, iterations=self.cfg.close_iterations)
        return fg

    def step(self, image: np.ndarray, flow: np.ndarray | None = None, frame_index: int | None = None) -> Regions:
        """Regions of the next frame (gray or BGR uint8)."""
        import cv2

        fg = self.foreground(image, flow)
        n, labels, stats, _ = cv2.connectedComponentsWithStats((fg > 0).astype(np.uint8), connectivity=8)
        keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= self.cfg.min_area]
        keep.sort(key=lambda i: -int(stats[i, cv2.CC_STAT_AREA]))
        keep = keep[: self.cfg.max_regions]
        keep.sort()
        st = stats[keep] if keep else np.zeros((0, 5), np.int32)
        xyxy = np.stack([st[:, 0], st[:, 1], st[:, 0] + st[:, 2], st[:, 1] + st[:, 3]], 1).astype(np.float32)
        idx = self._count if frame_index is None else frame_index
        self._count += 1
        return Regions(xyxy=xyxy.reshape(-1, 4), area=st[:, 4].astype(np.int64), labels=labels.astype(np.int32),
                       label_ids=np.array(keep, np.int32), frame_index=int(idx))


def region_attributes(regions: Regions, flow: np.ndarray) -> np.ndarray:
    """Measure regions with the frame's dense flow.

    Args:
        regions: from :meth:`RegionDetector.step` on an image of the flow's size.
        flow: ``(H, W, 2)`` float32.

    Returns:
        ``(N, len(ATTRIBUTE_NAMES))`` float32 (see :data:`ATTRIBUTE_NAMES`).
    """
    if flow.shape[:2] != regions.labels.shape:
        raise InputShapeError(f"regions: flow {flow.shape[:2]} and label image {regions.labels.shape} differ in size")
    out = np.zeros((len(regions), len(ATTRIBUTE_NAMES)), np.float32)
    for k, (box, lid) in enumerate(zip(regions.xyxy.astype(int), regions.label_ids, strict=True)):
        x1, y1, x2, y2 = box
        mask = regions.labels[y1:y2, x1:x2] == lid
        fv = flow[y1:y2, x1:x2][mask]  # (P, 2)
        mag = np.sqrt(fv[:, 0] ** 2 + fv[:, 1] ** 2)
        out[k] = (np.median(mag), np.percentile(mag, 90), fv[:, 0].mean(), fv[:, 1].mean(), y2 - y1, x2 - x1,
                  np.sqrt(mask.sum()), y2, (x1 + x2) / 2)
    return out


def normalise_attributes(attrs: np.ndarray, scale_map: np.ndarray | None, frame_size: tuple[int, int],
                         map_stride: int = 1) -> np.ndarray:
    """Make attributes comparable across the image: perspective and frame size.

    Speeds, velocities and sizes are divided by ``scale_map`` sampled at the region's ground point
    (bottom centre), positions become fractions of the frame size.

    Args:
        attrs: ``(N, A)`` from :func:`region_attributes`.
        scale_map: ``(h, w)`` positive scale per location at ``1 / map_stride`` of the frame resolution
            (e.g. the normal speed there), or ``None`` for no perspective normalisation.
        frame_size: ``(W, H)`` of the image the regions were found on.
        map_stride: resolution ratio between the frame and ``scale_map``.

    Returns:
        ``(N, A)`` float32.
    """
    out = attrs.astype(np.float32, copy=True)
    w, h = frame_size
    if scale_map is not None and len(out):
        mh, mw = scale_map.shape
        yi = np.clip(((out[:, 7] - 1) / map_stride).astype(int), 0, mh - 1)
        xi = np.clip((out[:, 8] / map_stride).astype(int), 0, mw - 1)
        s = scale_map[yi, xi][:, None]
        out[:, list(SPEED_ATTRIBUTES)] /= s
        out[:, list(SIZE_ATTRIBUTES)] /= s  # near objects look bigger and faster by the same factor
    out[:, 7] /= h
    out[:, 8] /= w
    return out
