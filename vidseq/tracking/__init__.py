"""Detections and ultralytics trackers -> tracks (:mod:`.tracks`). A sibling of :mod:`vidseq.sequences`:
neither imports the other.
"""

from __future__ import annotations
