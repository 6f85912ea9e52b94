"""The anomaly model's input record for a whole clip: :class:`ClipFeatures` (parallel arrays, no I/O).

Computed from video by :mod:`vidseq.tasks.anomaly.features` (which also saves and loads it); consumed by
:mod:`vidseq.models.anomaly.fit` and the scorers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vidseq.errors import InputShapeError
from vidseq.features.regions import ATTRIBUTE_NAMES
from vidseq.models.anomaly.model import FrameFeatures


@dataclass
class ClipFeatures:
    """Stream inputs for every frame of one clip (parallel arrays; regions flattened over frames).

    Attributes:
        clip_id: name (clip id or file stem).
        fps: frame rate.
        frame_index, timestamp_s: ``(T,)``.
        magnitude_maps: ``(T, mh, mw)`` float32 pooled flow magnitude.
        valid: ``(T,)`` bool, False for frames without a previous frame.
        descriptors: ``(T, D)`` float32 motion descriptors.
        region_attrs: ``(N, A)`` float32 raw region attributes; ``region_frame`` ``(N,)`` their positions.
        appearance: ``(T, Da)`` float32 or None.
        region_crops: ``(N, Dc)`` float32 crop features parallel to ``region_attrs`` (crops stream), or None.
        working_size: ``(w, h)`` of the motion working resolution.
        meta: provenance.
    """

    clip_id: str
    fps: float
    frame_index: np.ndarray
    timestamp_s: np.ndarray
    magnitude_maps: np.ndarray
    valid: np.ndarray
    descriptors: np.ndarray
    region_attrs: np.ndarray
    region_frame: np.ndarray
    working_size: tuple[int, int]
    appearance: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    region_crops: np.ndarray | None = None

    def __post_init__(self) -> None:
        t = len(self.frame_index)
        if self.magnitude_maps.shape[0] != t or self.descriptors.shape[0] != t or self.valid.shape != (t,):
            raise InputShapeError(f"clip {self.clip_id}: per-frame arrays disagree on the frame count {t}")
        if self.appearance is not None and self.appearance.shape[0] != t:
            raise InputShapeError(f"clip {self.clip_id}: {self.appearance.shape[0]} appearance rows for {t} frames")
        if self.region_attrs.shape[0] != self.region_frame.shape[0]:
            raise InputShapeError(f"clip {self.clip_id}: region arrays disagree")
        if self.region_crops is not None and self.region_crops.shape[0] != self.region_attrs.shape[0]:
            raise InputShapeError(f"clip {self.clip_id}: {self.region_crops.shape[0]} crop features for "
                                  f"{self.region_attrs.shape[0]} regions")

    def __len__(self) -> int:
        return int(len(self.frame_index))

    def regions_of(self, values: np.ndarray | None = None) -> list[np.ndarray]:
        """Region attributes (or ``values``, rows parallel to them, e.g. crop features) split per frame position."""
        order = np.argsort(self.region_frame, kind="stable")
        rows = (self.region_attrs if values is None else values)[order]
        cuts = np.searchsorted(self.region_frame[order], np.arange(len(self) + 1))
        return [rows[cuts[i]:cuts[i + 1]] for i in range(len(self))]

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[FrameFeatures]:
        """:class:`FrameFeatures` of positions ``[start, stop)``."""
        per = self.regions_of()
        crops = None if self.region_crops is None else self.regions_of(self.region_crops)
        stop = len(self) if stop is None else min(stop, len(self))
        for i in range(start, stop):
            yield FrameFeatures(frame_index=int(self.frame_index[i]), timestamp_s=float(self.timestamp_s[i]),
                                magnitude_map=self.magnitude_maps[i], valid=bool(self.valid[i]),
                                descriptor=self.descriptors[i], region_attrs=per[i],
                                appearance=None if self.appearance is None else self.appearance[i],
                                region_crops=None if crops is None else crops[i])

    def slice(self, start: int, stop: int) -> ClipFeatures:
        """Positions ``[start, stop)`` as a new ClipFeatures (first frame keeps its validity)."""
        keep = (self.region_frame >= start) & (self.region_frame < stop)
        return ClipFeatures(self.clip_id, self.fps, self.frame_index[start:stop], self.timestamp_s[start:stop],
                            self.magnitude_maps[start:stop], self.valid[start:stop], self.descriptors[start:stop],
                            self.region_attrs[keep], self.region_frame[keep] - start, self.working_size,
                            None if self.appearance is None else self.appearance[start:stop], dict(self.meta),
                            None if self.region_crops is None else self.region_crops[keep])

    @classmethod
    def from_frames(cls, clip_id: str, fps: float, frames: Sequence[FrameFeatures],
                    working_size: tuple[int, int]) -> ClipFeatures:
        """Stack streamed :class:`FrameFeatures` (e.g. a live warm-up) into one clip record."""
        attrs = [x.region_attrs for x in frames]
        return cls(
            clip_id, float(fps), np.array([x.frame_index for x in frames], np.int64),
            np.array([x.timestamp_s for x in frames], np.float64), np.stack([x.magnitude_map for x in frames]),
            np.array([x.valid for x in frames], bool), np.stack([x.descriptor for x in frames]).astype(np.float32),
            np.concatenate(attrs).astype(np.float32).reshape(-1, len(ATTRIBUTE_NAMES)),
            np.concatenate([np.full(len(a), i, np.int64) for i, a in enumerate(attrs)]),
            tuple(working_size),
        )
