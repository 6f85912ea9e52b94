"""Model registry: checkpoint ``model_name`` -> builder, so a model is rebuilt from its checkpoint alone.

Values are ``"module:function"`` strings imported lazily; the function takes the checkpoint's
``model_config`` dict and returns an ``nn.Module``. Each head adds its own line.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from vidseq.errors import CheckpointError

MODELS: dict[str, str] = {
    "trajectory_lstm": "vidseq.heads.trajectory.model:build_model",
    "anomaly_fusion": "vidseq.heads.anomaly.model:build_model",
    "anomaly_frame_lstm": "vidseq.heads.anomaly.model:build_frame_predictor",
    "caption_s2vt": "vidseq.heads.caption.model:build_model",
}


def build_model(name: str, model_config: dict[str, Any]) -> nn.Module:
    if name not in MODELS:
        raise CheckpointError(f"unknown model '{name}' in checkpoint; known: {', '.join(sorted(MODELS)) or 'none'}")
    module, func = MODELS[name].split(":")
    return getattr(importlib.import_module(module), func)(model_config)
