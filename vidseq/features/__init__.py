"""Frames -> numbers: backbones and the weight resolver, the batched extractor and its cache, optical-flow
motion, moving regions and object-crop features. Sees only :mod:`vidseq.video` and the core.
"""

from __future__ import annotations
