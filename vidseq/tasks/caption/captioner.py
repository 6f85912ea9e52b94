"""Caption videos with a trained checkpoint: whole clips or consecutive windows of a longer video.

``Captioner.from_checkpoint(path)`` rebuilds the model, its vocabulary and the exact input pipeline
(backbone, frame sampling, object features) recorded in the checkpoint, so ``vidseq caption`` feeds
the model the same kind of input it was trained on. A plain video has no tracks: object features
come from moving regions (see :mod:`vidseq.tasks.caption.objects`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vidseq.io import atomic_open
from vidseq.models.caption.decode import DecodeConfig, generate
from vidseq.models.caption.model import CaptionModel
from vidseq.tasks.caption.inputs import ClipEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowCaption:
    """Caption of one window ``[start_s, end_s)`` of a video."""

    start_s: float
    end_s: float
    caption: str
    logprob: float
    frames: int

    def to_dict(self) -> dict[str, Any]:
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3), "caption": self.caption,
                "logprob": round(self.logprob, 4), "frames": self.frames}


class Captioner:
    """A caption model + its input pipeline, ready to caption videos."""

    def __init__(self, model: CaptionModel, encoder: ClipEncoder, decode: DecodeConfig,
                 metadata: dict[str, Any] | None = None) -> None:
        if model.vocab is None:
            raise ValueError("caption model has no vocabulary")
        self.model = model.eval()
        self.encoder = encoder
        self.decode = decode
        self._check_backbone(metadata or {})

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, beam_size: int | None = None, max_len: int | None = None,
                        device: str | None = None) -> Captioner:
        """Load ``path`` (a ``caption_s2vt`` checkpoint); optional decoding/device overrides."""
        from vidseq.tasks.caption.task import load_caption_model

        model, ckpt, cfg = load_caption_model(Path(path))
        features = cfg.features if device is None else dataclasses.replace(cfg.features, device=device)
        decode = cfg.decode
        changes = {k: v for k, v in (("beam_size", beam_size), ("max_len", max_len)) if v is not None}
        if changes:
            decode = dataclasses.replace(decode, **changes)
        return cls(model, ClipEncoder(features), decode, ckpt.get("metadata"))

    def _check_backbone(self, metadata: dict[str, Any]) -> None:
        trained = ((metadata.get("inputs") or {}).get("backbone") or {}).get("weights") or {}
        if self.encoder.cfg.backbone == "none" or not trained:
            return
        now = self.encoder.backbone.weights
        if trained.get("sha256") != now.sha256:
            log.warning("backbone weights differ from training (%s sha256 %s, now %s %s): captions may be wrong",
                        trained.get("name"), str(trained.get("sha256"))[:12], now.name, str(now.sha256)[:12])

    @torch.no_grad()
    def caption_inputs(self, inputs: list[Any]) -> list[tuple[str, float]]:
        """Encoder inputs (:class:`~vidseq.tasks.caption.inputs.ClipInputs`) -> (caption, log-prob) each."""
        from vidseq.tasks.caption.task import collate_inputs

        feats, lengths = collate_inputs([torch.from_numpy(x.features) for x in inputs])
        hyps = generate(self.model, feats, lengths, self.decode)
        assert self.model.vocab is not None
        return [(self.model.vocab.decode(h.tokens), h.logprob) for h in hyps]

    def iter_video(self, video: str | Path, window_s: float | None = None) -> Iterator[WindowCaption]:
        """Caption ``video`` whole (``window_s=None``) or every ``window_s`` seconds, streaming."""
        for start, end, x in self.encoder.encode_windows(Path(video), window_s):
            caption, logprob = self.caption_inputs([x])[0]
            yield WindowCaption(start, end, caption, logprob, int(x.features.shape[0]))

    def caption_video(self, video: str | Path, window_s: float | None = None) -> list[WindowCaption]:
        return list(self.iter_video(video, window_s))


def write_captions_jsonl(path: str | Path, video: str | Path, captions: list[WindowCaption]) -> Path:
    """One JSON line per window (``video, start_s, end_s, caption, logprob, frames``), written atomically."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        for c in captions:
            fh.write(json.dumps({"video": str(video), **c.to_dict()}) + "\n")
    return Path(path)
