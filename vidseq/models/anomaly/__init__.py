"""Frame-level anomaly scoring: per-location speed, moving-object density and stacked-LSTM streams.

See :mod:`vidseq.models.anomaly.model` for the design, :mod:`.calibrate` for thresholds and events,
:mod:`.scoring` for scoring a video (streaming or offline) and :mod:`.task` for ``vidseq train/eval anomaly``.
"""

from __future__ import annotations

from vidseq.models.anomaly.model import (
    MODEL_NAME,
    AnomalyConfig,
    AnomalyModel,
    build_model,
)

__all__ = ["MODEL_NAME", "AnomalyConfig", "AnomalyModel", "build_model"]
