"""Per-frame object/track summary features for the caption encoder.

A pooled backbone feature says "what the whole frame looks like"; captions talk about *objects*:
their colour, shape, where they are and how they move. These features make that explicit for up to
``max_objects`` objects per frame, from the clip's tracks (MOT-style boxes) when the dataset has them,
else from moving regions (pixels that differ from the clip's per-pixel median background, grouped
into connected components and linked frame to frame by nearest centre).

Per object slot and frame (:data:`OBJECT_FIELDS`, ``F = 12`` values):

``present``      visible fraction of the object (tracks' ``conf`` when given, else 1) while it is in
                 the frame; all values are 0 in frames without the object
``cx, cy``       box centre / image width, height
``w, h``         box size / image width, height
``vx, vy``       centre velocity in image widths/heights per second (0 on first appearance)
``b, g, r``      mean colour (0..1) of the object's pixels: pixels of the box that differ from the
                 median colour of a ring around the box (works for still objects, unlike a
                 background model)
``fill``         fraction of the box covered by object pixels (1 square, ~0.79 disc, ~0.5 triangle)
``speed``        |(vx, vy)|

Slots are given to the first ``max_objects`` tracks to appear (ties: lower track id) and keep the
same object for the whole clip; "in order of appearance" is also how captions usually list objects.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vidseq.errors import InputShapeError

log = logging.getLogger(__name__)

OBJECT_FIELDS: tuple[str, ...] = ("present", "cx", "cy", "w", "h", "vx", "vy", "b", "g", "r", "fill", "speed")


@dataclass(frozen=True)
class ObjectBoxes:
    """Boxes of one clip as parallel arrays (pixels, 0-based frame index)."""

    frame: np.ndarray  # (N,) int64
    track_id: np.ndarray  # (N,) int64
    xywh: np.ndarray  # (N, 4) float64 top-left x, y, width, height
    visible: np.ndarray | None = None  # (N,) visible fraction in [0, 1]; None = fully visible

    def __post_init__(self) -> None:
        n = self.frame.shape[0]
        if self.track_id.shape != (n,) or self.xywh.shape != (n, 4):
            raise InputShapeError(f"object boxes: expected (N,), (N,), (N, 4), got {self.frame.shape}, "
                                  f"{self.track_id.shape}, {self.xywh.shape}")
        if self.visible is not None and self.visible.shape != (n,):
            raise InputShapeError(f"object boxes: visible must be ({n},), got {self.visible.shape}")

    @classmethod
    def empty(cls) -> ObjectBoxes:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)))


def feature_size(max_objects: int) -> int:
    return max_objects * len(OBJECT_FIELDS)


def _object_pixels(image: np.ndarray, box: np.ndarray, thr: float) -> tuple[np.ndarray, float]:
    """Mean BGR (0..1) of the box's object pixels and the box fill fraction."""
    H, W = image.shape[:2]
    x, y, w, h = box
    x0, y0 = int(np.clip(np.floor(x), 0, W - 1)), int(np.clip(np.floor(y), 0, H - 1))
    x1, y1 = int(np.clip(np.ceil(x + w), x0 + 1, W)), int(np.clip(np.ceil(y + h), y0 + 1, H))
    patch = image[y0:y1, x0:x1].reshape(-1, 3).astype(np.float32)
    m = max(2, int(round(0.25 * max(x1 - x0, y1 - y0))))
    X0, Y0, X1, Y1 = max(0, x0 - m), max(0, y0 - m), min(W, x1 + m), min(H, y1 + m)
    outer = image[Y0:Y1, X0:X1].astype(np.float32)
    ring_mask = np.ones(outer.shape[:2], bool)
    ring_mask[y0 - Y0:y1 - Y0, x0 - X0:x1 - X0] = False
    ring = outer[ring_mask]
    if ring.shape[0] < 4:  # box covers the image: every pixel counts as the object
        return patch.mean(0) / 255.0, 1.0
    bg = np.median(ring, axis=0)
    fg = np.abs(patch - bg).max(-1) > thr
    if not fg.any():
        return patch.mean(0) / 255.0, 0.0
    return patch[fg].mean(0) / 255.0, float(fg.mean())


def _find_colour_blob(image: np.ndarray, box: np.ndarray, colour: np.ndarray, area: float, tol: float
                      ) -> np.ndarray | None:
    """Box of the largest blob of ``colour`` (0..1 BGR, within ``tol`` grey levels) near ``box``, if it
    has at least half of ``area`` pixels; None otherwise."""
    import cv2

    H, W = image.shape[:2]
    x, y, w, h = box
    side = max(w, h, np.sqrt(max(area, 1.0)))
    X0, Y0 = int(max(0, np.floor(x - side))), int(max(0, np.floor(y - side)))
    X1, Y1 = int(min(W, np.ceil(x + w + side))), int(min(H, np.ceil(y + h + side)))
    if X1 <= X0 or Y1 <= Y0:
        return None
    win = image[Y0:Y1, X0:X1].astype(np.float32)
    mask = (np.abs(win - colour * 255.0).max(-1) <= tol).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[k, cv2.CC_STAT_AREA] < 0.5 * area:
        return None
    bx, by, bw, bh = stats[k, :4].astype(np.float64)
    return np.array([bx + X0, by + Y0, bw, bh])


def object_features(
    frames: Sequence[np.ndarray],
    frame_index: np.ndarray,
    boxes: ObjectBoxes,
    *,
    fps: float,
    max_objects: int = 2,
    color_threshold: float = 30.0,
) -> np.ndarray:
    """Per-frame object features.

    Args:
        frames: BGR uint8 (H, W, 3) images, one per entry of ``frame_index``.
        frame_index: (T,) source frame numbers of ``frames`` (boxes are matched on these).
        boxes: the clip's boxes (from tracks or :func:`moving_regions`).
        fps: frame rate used for velocities.
        max_objects: slots K.
        color_threshold: max-channel difference from the ring colour that makes a pixel "object".

    Returns:
        (T, K * 12) float32, slot-major (slot 0's 12 values, then slot 1's...).
    """
    T = len(frames)
    if frame_index.shape != (T,):
        raise InputShapeError(f"frame_index must be ({T},), got {frame_index.shape}")
    F = len(OBJECT_FIELDS)
    out = np.zeros((T, max_objects, F), np.float32)
    if T == 0 or len(boxes.frame) == 0:
        return out.reshape(T, -1)
    H, W = frames[0].shape[:2]
    vis = np.ones(len(boxes.frame)) if boxes.visible is None else np.nan_to_num(boxes.visible, nan=1.0)
    # slot order: first (visible) appearance; ties: lower track id (ids usually count up in order of detection)
    ids = np.unique(boxes.track_id)
    keys = []
    for tid in ids:
        rows = np.flatnonzero((boxes.track_id == tid) & (vis > 0))
        if rows.size == 0:
            continue
        first = rows[np.argmin(boxes.frame[rows])]
        keys.append((int(boxes.frame[first]), int(tid)))
    order = [tid for _, tid in sorted(keys)][:max_objects]
    pos = {int(f): t for t, f in enumerate(frame_index.tolist())}
    for slot, tid in enumerate(order):
        sel = np.flatnonzero(boxes.track_id == tid)
        sel = sel[np.argsort(boxes.frame[sel], kind="stable")]
        prev_c: np.ndarray | None = None
        prev_f = 0
        for r in sel:
            f = int(boxes.frame[r])
            c = (boxes.xywh[r, :2] + boxes.xywh[r, 2:] / 2.0) / (W, H)
            v = np.zeros(2) if prev_c is None else (c - prev_c) * fps / max(1, f - prev_f)
            prev_c, prev_f = c, f
            t = pos.get(f)
            if t is None:
                continue
            colour, fill = _object_pixels(frames[t], boxes.xywh[r], color_threshold)
            if vis[r] <= 0:
                continue
            out[t, slot] = (float(vis[r]), c[0], c[1], boxes.xywh[r, 2] / W, boxes.xywh[r, 3] / H, v[0], v[1],
                            *colour, fill, float(np.hypot(*v)))
    return out.reshape(T, -1)


def moving_regions(
    frames: Sequence[np.ndarray],
    frame_index: np.ndarray,
    *,
    diff_threshold: float = 30.0,
    min_area_frac: float = 0.001,
    max_regions: int = 8,
    max_link_dist: float = 0.2,
    min_fill: float = 0.15,
    hold_colour_tol: float = 40.0,
) -> ObjectBoxes:
    """Boxes of regions that differ from the clip's median background, linked over frames.

    Two fixes make the median background usable for objects that stop: a region whose pixels do not
    stand out from their own surroundings in the current frame (fill below ``min_fill``) is a
    "ghost" left in the median by an object that rests there later, and is dropped; a track that
    finds no region but has a blob of its colour (at least half its size) next to its last box (the
    object stopped and merged into the median) is continued at that blob. Objects that never move
    are not found: use tracks for those.

    Args:
        frames: BGR uint8 frames of one clip.
        frame_index: (T,) their frame numbers.
        diff_threshold: max-channel difference from the background that marks a moving pixel.
        min_area_frac: smallest region, as a fraction of the image.
        max_regions: largest regions kept per frame.
        max_link_dist: largest centre jump (fraction of the image diagonal) linking regions across frames.
        min_fill: smallest share of a region's box that must differ from the ring around it.
        hold_colour_tol: max-channel colour difference (grey levels) for continuing a stopped track.
    """
    import cv2

    T = len(frames)
    if T == 0:
        return ObjectBoxes.empty()
    stack = np.stack(frames[:: max(1, T // 48)])  # at most ~48 frames for the median
    bg = np.median(stack, axis=0).astype(np.int16)
    H, W = frames[0].shape[:2]
    min_area = max(4.0, min_area_frac * H * W)
    diag = float(np.hypot(H, W))
    kernel = np.ones((3, 3), np.uint8)
    rows: list[tuple[int, int, float, float, float, float]] = []
    # track id -> (centre px, xywh, colour 0..1, object area px)
    last: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, float]] = {}
    next_id = 0
    for t, img in enumerate(frames):
        mask = (np.abs(img.astype(np.int16) - bg).max(-1) > diff_threshold).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
        n, _, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
        comps = []
        for k in sorted(range(1, n), key=lambda k: -int(stats[k, cv2.CC_STAT_AREA])):
            if stats[k, cv2.CC_STAT_AREA] < min_area:
                continue
            box = stats[k, :4].astype(np.float64)
            colour, fill = _object_pixels(img, box, diff_threshold)
            if fill >= min_fill:  # else a ghost: nothing stands out there in this frame
                comps.append((box, cents[k], colour, fill * box[2] * box[3]))
            if len(comps) == max_regions:
                break
        # greedy nearest-centre linking to the previous frame's tracks
        pairs = sorted((float(np.hypot(*(c - lc[0]))), k, tid) for k, (_, c, _, _) in enumerate(comps)
                       for tid, lc in last.items())
        assigned: dict[int, int] = {}
        used: set[int] = set()
        for d, k, tid in pairs:
            if d > max_link_dist * diag or k in assigned or tid in used:
                continue
            assigned[k] = tid
            used.add(tid)
        new_last: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, float]] = {}
        for k, (box, c, colour, area) in enumerate(comps):
            tid = assigned.get(k)
            if tid is None:
                tid, next_id = next_id, next_id + 1
            else:
                colour = 0.7 * last[tid][2] + 0.3 * colour
                area = max(area, last[tid][3])
            new_last[tid] = (c, box, colour, area)
            rows.append((int(frame_index[t]), tid, *map(float, box)))
        for tid, (_, box, colour, area) in last.items():
            if tid in used:
                continue
            # a lost track: the object may have stopped and merged into the median background;
            # look for a blob of its colour next to where it was last seen
            found = _find_colour_blob(img, box, colour, area, hold_colour_tol)
            if found is not None:
                new_last[tid] = (found[:2] + found[2:] / 2.0, found, colour, area)
                rows.append((int(frame_index[t]), tid, *map(float, found)))
        last = new_last
    if not rows:
        return ObjectBoxes.empty()
    arr = np.array(rows, np.float64)
    return ObjectBoxes(arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2:6])
