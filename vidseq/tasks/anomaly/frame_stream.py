"""Training the frame-stream LSTM (next-step predictor of per-frame vectors) with the shared engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vidseq.models.anomaly.clip import ClipFeatures
from vidseq.models.anomaly.fit import frame_statistics, frame_vectors
from vidseq.models.anomaly.model import FRAME_MODEL_NAME, AnomalyConfig, FramePredictor
from vidseq.train.engine import TrainConfig


class _Windows(Dataset):
    """Fixed-length windows of per-frame vectors (one tensor (L, D) per item)."""

    def __init__(self, seqs: Sequence[np.ndarray], window: int, stride: int) -> None:
        self.items: list[torch.Tensor] = []
        for x in seqs:
            if len(x) < 2:
                continue
            if len(x) <= window:
                self.items.append(torch.from_numpy(x))
                continue
            starts = list(range(0, len(x) - window + 1, stride))
            if starts[-1] != len(x) - window:
                starts.append(len(x) - window)
            self.items.extend(torch.from_numpy(x[s:s + window]) for s in starts)
        lengths = {len(t) for t in self.items}
        if len(lengths) > 1:  # short clips: crop everything to the shortest for a stackable batch
            m = min(lengths)
            self.items = [t[:m] for t in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.items[i]


@dataclass
class FrameStreamTask:
    """The engine's view of the frame-stream LSTM (:class:`vidseq.train.engine.TrainTask`)."""

    train_dataset: Dataset
    val_dataset: Dataset | None
    input_dim: int
    cfg: AnomalyConfig
    mean: np.ndarray
    std: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str = "anomaly_frame_stream"
    model_name: str = FRAME_MODEL_NAME

    def model_config(self) -> dict[str, Any]:
        f = self.cfg.frame
        return {"input_dim": self.input_dim, "hidden_dim": f.hidden_dim, "num_layers": f.num_layers,
                "dropout": f.dropout}

    def build_model(self) -> nn.Module:
        f = self.cfg.frame
        m = FramePredictor(self.input_dim, f.hidden_dim, f.num_layers, f.dropout)
        m.set_statistics(self.mean, self.std)
        return m

    def collate(self, items: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(items)  # (B, L, D)

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        return {}


def train_frame_predictor(cfg: AnomalyConfig, tcfg: TrainConfig, train: Sequence[ClipFeatures],
                          val: Sequence[ClipFeatures], out_dir: Path, *, resume: bool, progress: bool,
                          config_dict: dict[str, Any]) -> FramePredictor:
    """Train the next-step LSTM with the shared engine; returns the best epoch's model."""
    from vidseq.train.checkpoint import load_checkpoint
    from vidseq.train.engine import fit

    xs = [frame_vectors(cf, cfg) for cf in train]
    allx = np.concatenate(xs)
    mean, std = frame_statistics(allx, cfg)
    task = FrameStreamTask(_Windows(xs, cfg.frame.window, cfg.frame.stride),
                           _Windows([frame_vectors(cf, cfg) for cf in val], cfg.frame.window, cfg.frame.stride)
                           if val else None, int(allx.shape[1]), cfg, mean, std,
                           metadata={"inputs": {"appearance": cfg.frame.appearance, "motion": cfg.frame.motion}})
    res = fit(task, tcfg, out_dir, resume=resume, config_dict=config_dict, progress=progress)
    ckpt = load_checkpoint(res.best_path)
    model = task.build_model()
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    return model

