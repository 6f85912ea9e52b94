"""Captions as a task: clip inputs (:mod:`.inputs`, :mod:`.objects`), training and evaluation (:mod:`.task`,
:mod:`.metrics`), captioning a video (:mod:`.captioner`) and the streaming head (:mod:`.head`). The model is
:mod:`vidseq.models.caption`.
"""

from __future__ import annotations
