"""A tiny task for engine/CLI tests: an LSTM regresses a sum over a synthetic noisy sequence.

It is both a :class:`~vidseq.train.engine.TrainTask` and a task module (``train``/``evaluate``), so
subprocess tests reach it with ``VIDSEQ_EXTRA_TASKS=toy=vidseq_toy_task`` and ``PYTHONPATH`` holding
this folder. Its items draw augmentation noise from NumPy's and Python's global RNGs and the model has
dropout, so a resumed run only matches an uninterrupted one if every RNG state is restored.
The model builder is ``vidseq_toy_task:build_model`` (tests register it as ``MODELS["toy_lstm"]``).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vidseq.config import load_config, to_dict
from vidseq.train.checkpoint import load_model
from vidseq.train.engine import TrainConfig, fit, make_loader, move_to_device
from vidseq.train.engine import evaluate as engine_evaluate

MODEL_NAME = "toy_lstm"
BUILDER = "vidseq_toy_task:build_model"


@dataclass(frozen=True)
class ToyConfig:
    n_train: int = 40
    n_val: int = 16
    seq_len: int = 6
    input_dim: int = 3
    hidden_dim: int = 8
    dropout: float = 0.2
    data_seed: int = 123
    no_val: bool = False
    nan_targets: bool = False
    step_sleep_s: float = 0.0  # slows each batch so a test can kill a run mid-epoch
    crash_after_items: int = 0  # > 0: the train set raises after this many items (a simulated crash)
    train: TrainConfig = field(default_factory=TrainConfig)


# What the tests train with (a YAML file, as `vidseq train --config` gets it).
TOY_YAML = """\
n_train: 40
n_val: 16
train:
  epochs: 4
  batch_size: 8
  lr: 0.01
  warmup_epochs: 1
  scheduler: cosine
  patience: 0
  tensorboard: false
  device: cpu
"""


def write_config(path: Path) -> Path:
    """Write :data:`TOY_YAML` to ``path`` and return it."""
    path.write_text(TOY_YAML, encoding="utf-8")
    return path


class ToyModel(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden_dim, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, _ = self.lstm(batch["x"])  # (B, T, H)
        pred = self.out(self.drop(h[:, -1])).squeeze(-1)  # (B,)
        return pred, nn.functional.mse_loss(pred, batch["y"])


def build_model(model_config: dict[str, Any]) -> nn.Module:
    return ToyModel(int(model_config["input_dim"]), int(model_config["hidden_dim"]),
                    float(model_config["dropout"]))


class ToyDataset(Dataset):
    def __init__(self, n: int, cfg: ToyConfig, seed: int, augment: bool, crash_after: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(n, cfg.seq_len, cfg.input_dim)).astype(np.float32)  # (N, T, D)
        self.y = (0.5 * self.x[:, :, 0].sum(1) - 0.3 * self.x[:, -1, 1]).astype(np.float32)  # (N,)
        if cfg.nan_targets:
            self.y[:] = np.nan
        self.augment = augment
        self.crash_after = crash_after
        self.fetched = 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.fetched += 1
        if self.crash_after and self.fetched > self.crash_after:
            raise RuntimeError("simulated crash")
        x = self.x[i]
        if self.augment:  # global NumPy + Python RNGs on purpose (resume must restore them)
            x = x + np.random.normal(0, 0.05, x.shape).astype(np.float32) * random.random()
        return torch.from_numpy(np.ascontiguousarray(x)), torch.tensor(self.y[i])


class ToyTask:
    name = "toy"
    model_name = MODEL_NAME

    def __init__(self, cfg: ToyConfig) -> None:
        self.cfg = cfg
        self.train_dataset = ToyDataset(cfg.n_train, cfg, cfg.data_seed, True, cfg.crash_after_items)
        self.val_dataset = None if cfg.no_val else ToyDataset(cfg.n_val, cfg, cfg.data_seed + 1, False)
        self.metadata = {"source": "synthetic", "feature_dim": cfg.input_dim, "probe": np.arange(3)}

    def model_config(self) -> dict[str, Any]:
        return {"input_dim": self.cfg.input_dim, "hidden_dim": self.cfg.hidden_dim, "dropout": self.cfg.dropout}

    def build_model(self) -> nn.Module:
        return build_model(self.model_config())

    def collate(self, items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if self.cfg.step_sleep_s:
            time.sleep(self.cfg.step_sleep_s)
        return {"x": torch.stack([x for x, _ in items]), "y": torch.stack([y for _, y in items])}

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        device = next(model.parameters()).device
        err, n = 0.0, 0
        for batch in loader:
            batch = move_to_device(batch, device)
            pred, _ = model(batch)
            err += float((pred - batch["y"]).abs().sum())
            n += len(pred)
        return {"val_mae": err / n, "val_const": 1.0}

    def checkpoint_extra(self, model: nn.Module) -> dict[str, Any]:
        return {"note": "toy", "threshold": np.float32(0.5)}


def train(data: Path, out: Path, *, config: Path | None = None, overrides: list[str] = (),
          resume: bool = False) -> dict:
    """Task-module entry point (``data`` is unused: the toy data is synthetic)."""
    cfg = load_config(ToyConfig, config, list(overrides))
    result = fit(ToyTask(cfg), cfg.train, out, resume=resume, config_dict=to_dict(cfg), progress=False)
    return {**result.final_metrics, "best_epoch": result.best_epoch, "best_metric": result.best_metric}


def evaluate(model: Path, data: Path, *, overrides: list[str] = ()) -> dict:
    """Task-module entry point: val_loss/val_mae of a checkpoint on the toy validation set."""
    net, ckpt = load_model(model)
    cfg = load_config(ToyConfig, None, {**_flatten(ckpt["config"]), **dict(o.split("=", 1) for o in overrides)})
    task = ToyTask(cfg)
    loader = make_loader(task.val_dataset, task.collate, cfg.train, epoch=0, train=False)
    return engine_evaluate(net, loader, "cpu", task=task)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
