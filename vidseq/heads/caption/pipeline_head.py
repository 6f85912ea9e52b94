"""The caption head inside ``vidseq process`` / ``vidseq monitor``: one caption per window of frames.

Frames are shrunk and buffered for ``caption.window_s`` seconds (only one window is held); when a window
closes, the checkpoint's own input pipeline encodes it and the model decodes a caption, which is attached
to that frame's result (``captions.jsonl``) and shown on the annotated video until the next one.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from vidseq.heads.caption.captioner import Captioner
from vidseq.heads.caption.inputs import _shrink

log = logging.getLogger(__name__)


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
        x = enc._window(self._buf, self._idx, self._ts, self.fps)
        caption, _ = self.captioner.caption_inputs([x])[0]
        self._buf, self._idx, self._ts = [], [], []
        self.count += 1
        return caption

    def step(self, result: Any, proc: Any) -> None:
        f = result.frame
        if f.timestamp_s >= self._w0 + self.window_s and self._buf:
            result.caption = self._emit()
            while f.timestamp_s >= self._w0 + self.window_s:
                self._w0 += self.window_s
        img, _ = _shrink(f.image, self.captioner.encoder.cfg.work_size)
        self._buf.append(img)
        self._idx.append(f.frame_index)
        self._ts.append(f.timestamp_s)

    def finish(self, proc: Any) -> None:
        if self._buf and proc._pending:
            proc._pending[-1].caption = self._emit()


def make_caption_head(cfg: Any, proc: Any) -> CaptionHead | None:
    if not cfg.caption.enabled or not cfg.caption.model:
        return None
    return CaptionHead(cfg.caption.model, cfg.caption.window_s, cfg.caption.beam, proc.fps,
                       device=str(proc.backbone.device))
