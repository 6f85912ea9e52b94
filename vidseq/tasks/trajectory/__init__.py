"""Trajectory forecasting head: stacked-LSTM encoder-decoder over track histories.

* :mod:`.model`: :class:`TrajectoryConfig` + :class:`TrajectoryModel` (deterministic and multimodal heads),
  constant-velocity baseline, ADE/FDE.
* :mod:`.forecaster`: :class:`TrajectoryForecaster` (NumPy in/out, pixel scales) and per-track streaming.
* :mod:`.task`: ``vidseq train/eval trajectory`` through the shared training engine.

Imports here are light; :mod:`.task` (which pulls in the engine) is imported on use.
"""

from __future__ import annotations

from vidseq.models.trajectory import (
    MODEL_NAME,
    TrajectoryConfig,
    TrajectoryModel,
    TrajectoryOutput,
    build_model,
    constant_velocity,
    displacement_errors,
)
from vidseq.tasks.trajectory.forecaster import (
    PERSON_HEIGHT_M,
    TrajectoryForecaster,
    TrajectoryStream,
    pixels_per_metre,
)

__all__ = [
    "MODEL_NAME", "PERSON_HEIGHT_M", "TrajectoryConfig", "TrajectoryForecaster", "TrajectoryModel",
    "TrajectoryOutput", "TrajectoryStream", "build_model", "constant_velocity", "displacement_errors",
    "pixels_per_metre",
]
