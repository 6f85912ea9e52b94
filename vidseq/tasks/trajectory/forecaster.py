"""Inference API for the trajectory model: batched ``predict`` and a per-track streaming wrapper.

Positions may be in any unit: pass ``scale`` = units per metre (1 for ETH/UCY metres; pixels per metre
for video tracks, e.g. :func:`pixels_per_metre` of the box height) so the model sees metre-like steps.
The model is trained at 0.4 s per step (2.5 Hz): feed it points resampled to that interval.

Example::

    fc = TrajectoryForecaster.from_checkpoint("weights/trajectory_lstm_ethucy.pt")
    futures = fc.predict(history, k=1)            # (N, T_obs, 2) -> (N, 1, 12, 2)
    stream = fc.stream(k=1)
    stream.update(track_id=7, point=(412.0, 300.5), step=frame_index // 10, scale=pixels_per_metre(180.0))
    forecasts = stream.forecast()                 # {7: (1, 12, 2)} for tracks with >= 2 points
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vidseq.errors import CheckpointError, InputShapeError
from vidseq.models.trajectory import MODEL_NAME, TrajectoryModel

logger = logging.getLogger(__name__)

PERSON_HEIGHT_M = 1.7  # typical standing pedestrian: turns a box height in pixels into a pixels-per-metre scale


def pixels_per_metre(box_height_px: float | np.ndarray, person_height_m: float = PERSON_HEIGHT_M) -> np.ndarray:
    """Scale for :meth:`TrajectoryForecaster.predict` from a pedestrian's box height in pixels."""
    h = np.asarray(box_height_px, dtype=np.float64)
    if not np.all(np.isfinite(h)) or np.any(h <= 0):
        raise InputShapeError("box heights must be finite and > 0 pixels")
    return h / person_height_m


class TrajectoryForecaster:
    """Wraps a :class:`TrajectoryModel` for NumPy in, NumPy out forecasting.

    Args:
        model: the trained model (put in eval mode here).
        device: torch device for inference.
    """

    def __init__(self, model: TrajectoryModel, device: str | torch.device = "cpu") -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> TrajectoryForecaster:
        """Load a ``trajectory_lstm`` checkpoint (``torch.load(weights_only=True)``, rebuilt via the registry)."""
        from vidseq.train.checkpoint import load_model

        model, ckpt = load_model(path, map_location="cpu")
        if ckpt.get("model_name") != MODEL_NAME or not isinstance(model, TrajectoryModel):
            raise CheckpointError(f"{path}: holds model '{ckpt.get('model_name')}', not '{MODEL_NAME}'")
        return cls(model, device)

    @property
    def obs_len(self) -> int:
        return self.model.cfg.obs_len

    @property
    def pred_len(self) -> int:
        return self.model.cfg.pred_len

    @property
    def max_k(self) -> int:
        return max(1, self.model.cfg.num_modes)

    def predict(self, history: np.ndarray | torch.Tensor, k: int = 1,
                scale: float | np.ndarray | None = None) -> np.ndarray:
        """Forecast every track's next ``pred_len`` positions.

        Args:
            history: (N, T, 2) past positions, oldest first, one step apart; T >= 2. Only the last
                ``obs_len`` points are used (shorter histories work, with less context).
            k: forecasts per track, most likely first (1 = deterministic head, up to ``max_k``).
            scale: units per metre, scalar or (N,); None means the positions are metres.

        Returns:
            (N, k, pred_len, 2) float32 forecasts in the units of ``history``.

        Raises:
            InputShapeError: wrong shape, NaN/inf, bad ``k`` or ``scale``.
        """
        hist = torch.as_tensor(np.asarray(history, dtype=np.float32) if not isinstance(history, torch.Tensor)
                               else history.float())
        if hist.dim() != 3 or hist.shape[-1] != 2 or hist.shape[1] < 2:
            raise InputShapeError(f"history must be (N, T>=2, 2) positions, got {tuple(hist.shape)}")
        if not torch.isfinite(hist).all():
            raise InputShapeError("history holds NaN/inf positions")
        n = hist.shape[0]
        if n == 0:
            return np.zeros((0, k, self.pred_len, 2), np.float32)
        hist = hist[:, -self.obs_len:]
        sc = self._scale(scale, n)  # (N, 1, 1)
        origin = hist[:, -1:, :]  # (N, 1, 2): subtract before scaling to keep float32 precision on big pixel values
        local = (hist - origin) / sc
        out = self.model.predict(local.to(self.device), k=k).cpu()  # (N, k, T_pred, 2)
        return (out * sc[:, None] + origin[:, None]).numpy().astype(np.float32)

    @staticmethod
    def _scale(scale: float | np.ndarray | None, n: int) -> torch.Tensor:
        if scale is None:
            return torch.ones(n, 1, 1)
        arr = np.broadcast_to(np.asarray(scale, dtype=np.float64), (n,)) if np.ndim(scale) == 0 \
            else np.asarray(scale, dtype=np.float64)
        if arr.shape != (n,):
            raise InputShapeError(f"scale must be a scalar or ({n},), got {arr.shape}")
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise InputShapeError("scale must be finite and > 0")
        return torch.from_numpy(arr.astype(np.float32)).view(n, 1, 1)

    def stream(self, k: int = 1, max_gap: int = 3) -> TrajectoryStream:
        """A :class:`TrajectoryStream` over this forecaster."""
        return TrajectoryStream(self, k=k, max_gap=max_gap)


@dataclass
class _TrackBuffer:
    points: deque  # of (2,) float64 positions, one per step
    last_step: int | None = None
    scale: float = 1.0


@dataclass
class TrajectoryStream:
    """Live forecasting: per-track ring buffers of the last ``obs_len`` points.

    The model reads its history in a frame fixed by the latest heading, so the exact per-track state is
    the last ``obs_len`` points (an LSTM state carried forward could not forget the oldest step or
    re-rotate); re-encoding 7 steps per track is a few microseconds. :meth:`forecast` therefore returns
    exactly what :meth:`TrajectoryForecaster.predict` gives on the same points.

    Attributes:
        forecaster: the model wrapper.
        k: forecasts per track.
        max_gap: missed steps bridged by linear interpolation; a longer gap restarts the track's history.
    """

    forecaster: TrajectoryForecaster
    k: int = 1
    max_gap: int = 3
    _tracks: dict[int, _TrackBuffer] = field(default_factory=dict, init=False, repr=False)

    def update(self, track_id: int, point: Any, step: int | None = None, scale: float = 1.0) -> None:
        """Append one position of ``track_id``.

        Args:
            track_id: the tracker's id.
            point: (2,) position.
            step: the forecaster-step index (frame index // frames per 0.4 s); None means "next step".
            scale: units per metre for this track (the latest value is used).
        """
        p = np.asarray(point, dtype=np.float64).reshape(-1)
        if p.shape != (2,) or not np.all(np.isfinite(p)):
            raise InputShapeError(f"track {track_id}: point must be 2 finite numbers, got {point!r}")
        if not (np.isfinite(scale) and scale > 0):
            raise InputShapeError(f"track {track_id}: scale must be finite and > 0, got {scale!r}")
        buf = self._tracks.get(track_id)
        if buf is None:
            buf = self._tracks[track_id] = _TrackBuffer(deque(maxlen=self.forecaster.obs_len))
        if step is not None and buf.last_step is not None and buf.points:
            gap = step - buf.last_step
            if gap <= 0:  # same or older step: replace the last point (a corrected detection)
                buf.points[-1] = p
                buf.scale = float(scale)
                return
            if gap - 1 > self.max_gap:
                buf.points.clear()
            else:
                prev = buf.points[-1]
                for i in range(1, gap):
                    buf.points.append(prev + (p - prev) * (i / gap))
        buf.points.append(p)
        buf.last_step = step if step is not None else (buf.last_step or 0) + 1
        buf.scale = float(scale)

    def drop(self, track_id: int) -> None:
        """Forget a finished track."""
        self._tracks.pop(track_id, None)

    def history(self, track_id: int) -> np.ndarray:
        """(n, 2) buffered points of a track (n <= obs_len)."""
        buf = self._tracks.get(track_id)
        return np.zeros((0, 2)) if buf is None else np.asarray(buf.points, dtype=np.float64).reshape(-1, 2)

    @property
    def track_ids(self) -> list[int]:
        return list(self._tracks)

    def forecast(self, track_ids: list[int] | None = None) -> dict[int, np.ndarray]:
        """(k, pred_len, 2) forecasts of every (or the given) track with at least 2 points.

        Tracks are batched by history length, one model call per length.
        """
        ids = self.track_ids if track_ids is None else list(track_ids)
        groups: dict[int, list[int]] = {}
        for tid in ids:
            buf = self._tracks.get(tid)
            if buf is not None and len(buf.points) >= 2:
                groups.setdefault(len(buf.points), []).append(tid)
        out: dict[int, np.ndarray] = {}
        for _, members in sorted(groups.items()):
            hist = np.stack([self.history(t) for t in members])  # (n, T, 2)
            scale = np.array([self._tracks[t].scale for t in members])
            pred = self.forecaster.predict(hist, k=self.k, scale=scale)
            out.update(zip(members, pred))
        return {t: out[t] for t in ids if t in out}
