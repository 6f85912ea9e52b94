"""Frame-level anomaly scoring as a task: clip features (:mod:`.features`, cached), the dataset's normal clips
(:mod:`.data`), settings (:mod:`.config`), training (:mod:`.task`, :mod:`.frame_stream`), evaluation
(:mod:`.metrics`), the label-free design search (:mod:`.tune`, :mod:`.pseudo`), scoring a video
(:mod:`.scoring`) and the streaming head (:mod:`.head`). The model itself is :mod:`vidseq.models.anomaly`.
"""

from __future__ import annotations
