"""The trajectory head inside ``vidseq process`` / ``vidseq monitor``: per-track forecasts.

Every ``step_s`` seconds each active track's foot point (bottom-centre of its box) is fed to the LSTM
forecaster (``weights/trajectory_lstm_ethucy.pt`` when present, else constant velocity), scaled to metres by
the box height (a 1.7 m person).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidseq.config import setting
from vidseq.errors import VidseqError
from vidseq.features.weights import weights_dir
from vidseq.tasks.stream import FrameResult, StreamContext
from vidseq.tasks.trajectory.forecaster import TrajectoryForecaster, pixels_per_metre


@dataclass(frozen=True)
class TrajectorySettings:
    enabled: bool = True
    model: str | None = "auto"  # checkpoint; "auto" = weights/trajectory_lstm_ethucy.pt if present; None = constant velocity
    step_s: float = setting(0.4, gt=0.0)  # the forecaster's time step (ETH/UCY: 0.4 s)
    k: int = setting(1, ge=1)  # forecasts per track (best first)
    min_points: int = setting(2, ge=1)  # history points (steps) before a track gets a forecast


class TrajectoryHead:
    """Per-track forecasts from foot points sampled every ``step_s`` seconds (pixels, scaled by box height)."""

    name = "trajectory"

    def __init__(self, settings: TrajectorySettings, fps: float, device: str = "cpu") -> None:
        self.settings = settings
        self.frames_per_step = max(1, round(settings.step_s * fps))
        self.model_path = resolve_trajectory_model(settings.model)
        if self.model_path is not None:
            fc = TrajectoryForecaster.from_checkpoint(self.model_path, device=device)
            self.kind = f"lstm ({self.model_path.name})"
        else:
            fc = None
            self.kind = "constant velocity"
        self.forecaster = fc
        self.k = min(settings.k, fc.max_k) if fc is not None else 1
        self.stream = fc.stream(k=self.k) if fc is not None else None
        self._cv_hist: dict[int, list[np.ndarray]] = {}
        self.pred_len = fc.pred_len if fc is not None else 12

    def describe(self) -> dict[str, Any]:
        return {"forecaster": self.kind, "model": str(self.model_path) if self.model_path else None,
                "step_s": self.settings.step_s, "frames_per_step": self.frames_per_step, "k": self.k,
                "pred_len": self.pred_len}

    delay_frames = 0

    def finish(self, ctx: StreamContext) -> None:
        return None

    def step(self, result: FrameResult, ctx: StreamContext) -> None:
        tracker = ctx.tracker
        fi = result.frame.frame_index
        if fi % self.frames_per_step:
            return
        step = fi // self.frames_per_step
        updated: list[int] = []
        for tr in tracker.active(fi):
            point = tr.footpoints()[-1]
            scale = float(pixels_per_metre(max(float(tr.heights()[-1]), 1.0)))
            if self.stream is not None:
                self.stream.update(tr.track_id, point, step=step, scale=scale)
                n = len(self.stream.history(tr.track_id))
            else:
                hist = self._cv_hist.setdefault(tr.track_id, [])
                hist.append(point)
                del hist[:-8]
                n = len(hist)
            if n >= self.settings.min_points:
                updated.append(tr.track_id)
        for tr in tracker.finished:
            if self.stream is not None:
                self.stream.drop(tr.track_id)
            self._cv_hist.pop(tr.track_id, None)
        if not updated:
            return
        if self.stream is not None:
            result.forecasts = self.stream.forecast(updated)
        else:
            for tid in updated:
                h = np.asarray(self._cv_hist[tid])
                v = (h[-1] - h[0]) / (len(h) - 1)
                result.forecasts[tid] = (h[-1] + v * np.arange(1, self.pred_len + 1)[:, None])[None].astype(np.float32)


def resolve_trajectory_model(spec: str | None) -> Path | None:
    """The forecaster checkpoint for ``trajectory.model``: ``auto`` = the shipped ETH/UCY model when present."""
    if spec is None:
        return None
    if spec == "auto":
        p = weights_dir() / "trajectory_lstm_ethucy.pt"
        return p if p.is_file() else None
    p = Path(spec)
    if not p.is_file():
        raise VidseqError(f"trajectory model not found: {p}")
    return p


def make_head(cfg: Any, ctx: StreamContext) -> TrajectoryHead | None:
    """Factory of :data:`vidseq.registry.STREAM_HEADS` (``cfg`` is a ProcessConfig: its ``trajectory`` section)."""
    if not cfg.trajectory.enabled:
        return None
    return TrajectoryHead(cfg.trajectory, ctx.fps, device=ctx.device)
