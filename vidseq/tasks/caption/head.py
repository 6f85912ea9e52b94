"""The caption head inside ``vidseq process`` / ``vidseq monitor``: one caption per window of frames.

Frames are shrunk and buffered for ``caption.window_s`` seconds (only one window is held); when a window
closes, the checkpoint's own input pipeline encodes it and the model decodes a caption, which is attached
to that frame's result (``captions.jsonl``) and shown on the annotated video until the next one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidseq.config import setting
from vidseq.tasks.caption.captioner import Captioner
from vidseq.tasks.caption.inputs import shrink
from vidseq.tasks.stream import FrameResult, StreamContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptionSettings:
    enabled: bool = True
    model: str | None = None  # checkpoint; None = no captions (noted in summary.json)
    window_s: float = setting(4.0, gt=0.0)
    beam: int = setting(3, ge=1)


class CaptionHead:
    name = "caption"
    delay_frames = 0

    def __init__(self, model_path: str, window_s: float, beam: int, fps: float, device: str = "cpu") -> None:
        self.captioner = Captioner.from_checkpoint(model_path, beam_size=beam, device=device)
        self.model_path = model_path
        self.window_s = float(window_s)
        self.fps = float(fps)
        self._buf: list[np.ndarray] = []
        self._idx: list[int] = []
        self._ts: list[float] = []
        self._w0 = 0.0
        self.count = 0

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_path, "window_s": self.window_s, "captions": self.count}

    def _emit(self) -> str | None:
        if not self._buf:
            return None
        enc = self.captioner.encoder
        x = enc.window_inputs(self._buf, self._idx, self._ts, self.fps)
        caption, _ = self.captioner.caption_inputs([x])[0]
        self._buf, self._idx, self._ts = [], [], []
        self.count += 1
        return caption

    def step(self, result: FrameResult, ctx: StreamContext) -> None:
        f = result.frame
        if f.timestamp_s >= self._w0 + self.window_s and self._buf:
            result.caption = self._emit()
            while f.timestamp_s >= self._w0 + self.window_s:
                self._w0 += self.window_s
        img, _ = shrink(f.image, self.captioner.encoder.cfg.work_size)
        self._buf.append(img)
        self._idx.append(f.frame_index)
        self._ts.append(f.timestamp_s)

    def finish(self, ctx: StreamContext) -> None:
        last = ctx.newest_pending()
        if self._buf and last is not None:
            last.caption = self._emit()


def make_head(cfg: Any, ctx: StreamContext) -> CaptionHead | None:
    """Factory of :data:`vidseq.registry.STREAM_HEADS` (``cfg`` is a ProcessConfig: its ``caption`` section)."""
    if not cfg.caption.enabled or not cfg.caption.model:
        return None
    return CaptionHead(cfg.caption.model, cfg.caption.window_s, cfg.caption.beam, ctx.fps, device=ctx.device)
