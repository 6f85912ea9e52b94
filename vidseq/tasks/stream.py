"""The contract between the streaming pass (``process``/``monitor``) and the heads each task contributes.

The pipeline owns detection and tracking and hands every frame's :class:`FrameResult` to each
:class:`StreamHead` in turn; a head fills in its part (forecasts, anomaly score, caption) and may hold
results back (:attr:`StreamHead.delay_frames`) to fill them in later through :meth:`StreamContext.pending`.
Heads are found by name in :data:`vidseq.registry.STREAM_HEADS`; each entry is a factory
``make_head(cfg, ctx) -> StreamHead | None`` (``None``: disabled by its settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vidseq.tracking.tracks import Detections, ObjectTracker
from vidseq.video.sources import Frame


@dataclass
class FrameResult:
    """Everything the heads said about one frame."""

    frame: Frame
    detections: Detections
    feature: np.ndarray  # (D,) frame feature from the same YOLO pass
    anomaly_score: float | None = None
    is_anomaly: bool | None = None
    anomaly_cause: str | None = None  # the anomaly stream the score came from (speed, place, direction...)
    # the score is evidence a model trained on the camera's clips added up over a track's seconds (its `tracks`
    # stream): the alert rule needs less of it (vidseq.monitor.AlertSettings.tracks_min_duration_s)
    anomaly_integrated: bool = False
    anomaly_ready: bool = False
    forecasts: dict[int, np.ndarray] = field(default_factory=dict)  # track id -> (K, T_pred, 2) pixels
    caption: str | None = None
    paths: dict[int, np.ndarray] = field(default_factory=dict)  # track id -> (T, 2) recent foot points


class StreamContext(Protocol):
    """What a head may read from the streaming pass."""

    fps: float
    tracker: ObjectTracker

    @property
    def device(self) -> str:
        """Torch device the pass runs on (``cpu``, ``cuda:0``...)."""
        ...

    def pending(self, frame_index: int) -> FrameResult | None:
        """A result not yet handed out (delayed heads fill in late outputs through this)."""
        ...

    def newest_pending(self) -> FrameResult | None:
        """The most recent result still held back, if any."""
        ...


@runtime_checkable
class StreamHead(Protocol):
    """One task's per-frame step inside ``process``/``monitor`` (state carried frame to frame)."""

    name: str

    @property
    def delay_frames(self) -> int:
        """Frames this head needs to see after a frame before that frame's output is final."""
        ...

    def describe(self) -> dict[str, Any]:
        """Settings and state for ``summary.json``."""
        ...

    def step(self, result: FrameResult, ctx: StreamContext) -> None:
        """Consume one frame (in order) and fill in this head's part of ``result`` (or of pending results)."""
        ...

    def finish(self, ctx: StreamContext) -> None:
        """End of stream: complete delayed outputs."""
        ...


__all__ = ["FrameResult", "StreamContext", "StreamHead"]
