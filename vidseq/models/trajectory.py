"""Stacked-LSTM trajectory forecaster: observed positions -> one deterministic and K multimodal futures.

Each agent's history is moved into its own frame (origin at the last observed point, x axis along the
last heading), so the network only learns how walking deviates from a straight line: the encoder reads
the per-step displacements and positions in that frame, the decoder LSTM emits per-step displacement
residuals over constant velocity. Two heads share the encoder and decoder:

* ``pred``: one deterministic forecast (K=1), trained with the average displacement error;
* ``modes``: ``num_modes`` hypotheses with mode logits (a mixture without spreads), trained
  winner-takes-all on the best hypothesis (best-of-many) and a cross-entropy on which one won, so the
  logits rank them when fewer than ``num_modes`` forecasts are asked for.

Positions are metres on ETH/UCY; for pixel tracks divide by a pixels-per-metre scale first (see
:class:`vidseq.tasks.trajectory.forecaster.TrajectoryForecaster`).

Example::

    model = TrajectoryModel(TrajectoryConfig(hidden_dim=64))
    out, loss = model(TrajectoryBatch(obs, fut))   # out.pred (B, 12, 2), out.modes (B, 20, 12, 2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidseq.errors import InputShapeError
from vidseq.models.encoder import EncoderConfig, StackedLSTMEncoder
from vidseq.sequences.trajectories import TrajectoryBatch

MODEL_NAME = "trajectory_lstm"
_MIN_SPEED = 1e-3  # below this (metres per step) the last heading is noise: fall back to the whole track


@dataclass(frozen=True)
class TrajectoryConfig:
    """Forecaster architecture and loss settings (stored in checkpoints as ``model_config``).

    Attributes:
        obs_len: observed steps the model is trained on (shorter histories, >= 2 points, still work).
        pred_len: forecast steps.
        hidden_dim: LSTM width of encoder and decoder.
        num_layers: stacked LSTM layers in encoder and decoder.
        dropout: dropout between stacked layers.
        num_modes: multimodal hypotheses (0 = deterministic head only).
        heading_frame: rotate every history to its last heading (rotation invariant by construction).
        residual_cv: predict displacements as residuals over constant velocity.
        fde_weight: extra weight of the final-step error in both losses.
        mode_weight: weight of the winner-takes-all loss.
        mode_cls_weight: weight of the mode-classification loss.
        wta_relax: share of the WTA loss spread over all hypotheses (keeps unused ones moving).
    """

    obs_len: int = 8
    pred_len: int = 12
    hidden_dim: int = 96
    num_layers: int = 1
    dropout: float = 0.0
    num_modes: int = 20
    heading_frame: bool = True
    residual_cv: bool = True
    fde_weight: float = 0.0
    mode_weight: float = 1.0
    mode_cls_weight: float = 0.1
    wta_relax: float = 0.05

    def __post_init__(self) -> None:
        if self.obs_len < 2 or self.pred_len < 1:
            raise ValueError(f"need obs_len >= 2 and pred_len >= 1, got {self.obs_len}, {self.pred_len}")
        if self.hidden_dim < 1 or self.num_layers < 1 or self.num_modes < 0:
            raise ValueError("hidden_dim and num_layers must be >= 1, num_modes >= 0")


@dataclass
class TrajectoryOutput:
    """Forecasts in the input's coordinates.

    Attributes:
        pred: (B, T_pred, 2) deterministic forecast.
        modes: (B, M, T_pred, 2) hypotheses, or None when ``num_modes == 0``.
        mode_logits: (B, M) unnormalised mode scores, or None.
    """

    pred: torch.Tensor
    modes: torch.Tensor | None = None
    mode_logits: torch.Tensor | None = None


def check_history(obs: torch.Tensor, name: str = "history") -> None:
    """Raise InputShapeError unless ``obs`` is a finite (B, T>=2, 2) tensor."""
    if obs.dim() != 3 or obs.shape[-1] != 2 or obs.shape[1] < 2:
        raise InputShapeError(f"{name} must be (N, T>=2, 2) positions, got {tuple(obs.shape)}")
    if not torch.isfinite(obs).all():
        raise InputShapeError(f"{name} holds NaN/inf positions")


def heading_frames(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-agent frame: origin at the last point, x along the last step (or the whole track when still).

    Args:
        obs: (B, T, 2) positions.

    Returns:
        origin (B, 2) and rotation (B, 2, 2) with rows (heading, left normal): ``local = (p - o) @ R^T``.
    """
    last = obs[:, -1] - obs[:, -2]  # (B, 2)
    whole = obs[:, -1] - obs[:, 0]
    use_last = last.norm(dim=-1, keepdim=True) > _MIN_SPEED
    use_whole = whole.norm(dim=-1, keepdim=True) > _MIN_SPEED
    ref = torch.where(use_last, last, torch.where(use_whole, whole, torch.tensor([1.0, 0.0]).to(obs)))
    u = ref / ref.norm(dim=-1, keepdim=True)  # (B, 2)
    n = torch.stack([-u[:, 1], u[:, 0]], dim=-1)
    return obs[:, -1], torch.stack([u, n], dim=1)


def constant_velocity(obs: torch.Tensor, pred_len: int) -> torch.Tensor:
    """Constant-velocity forecast from the last observed step: (B, T_obs, 2) -> (B, pred_len, 2)."""
    v = obs[:, -1] - obs[:, -2]  # (B, 2)
    steps = torch.arange(1, pred_len + 1, dtype=obs.dtype, device=obs.device)
    return obs[:, -1, None, :] + steps[None, :, None] * v[:, None, :]


def displacement_errors(pred: torch.Tensor, fut: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-agent ADE and FDE; for (B, K, T, 2) forecasts each is the minimum over K (taken separately).

    Args:
        pred: (B, T, 2) or (B, K, T, 2) forecasts.
        fut: (B, T, 2) ground truth.

    Returns:
        ade (B,), fde (B,).
    """
    if pred.dim() == 3:
        pred = pred[:, None]
    if pred.dim() != 4 or fut.dim() != 3 or pred.shape[0] != fut.shape[0] or pred.shape[2:] != fut.shape[1:]:
        raise InputShapeError(f"forecast {tuple(pred.shape)} does not match ground truth {tuple(fut.shape)}")
    dist = (pred - fut[:, None]).norm(dim=-1)  # (B, K, T)
    return dist.mean(-1).min(1).values, dist[..., -1].min(1).values


class TrajectoryModel(nn.Module):
    """LSTM encoder over the history in the agent frame, LSTM decoder over forecast steps."""

    def __init__(self, cfg: TrajectoryConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_dim
        # per observed step, agent frame: displacement (2), position relative to the last point (2) and
        # change of displacement (2), which makes jitter (annotation/detection noise) easy to see
        self.encoder = StackedLSTMEncoder(EncoderConfig(input_dim=6, hidden_dim=h, num_layers=cfg.num_layers,
                                                        dropout=cfg.dropout))
        self.step_embed = nn.Parameter(torch.randn(cfg.pred_len, h) * 0.1)  # (T_pred, H)
        self.decoder = nn.LSTM(2 * h, h, num_layers=cfg.num_layers, batch_first=True,
                               dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.out = nn.Linear(h, 2 * (1 + cfg.num_modes))
        self.mode_head = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, cfg.num_modes)) \
            if cfg.num_modes else None
        nn.init.zeros_(self.out.weight)  # start as constant velocity
        nn.init.zeros_(self.out.bias)
        if cfg.num_modes:
            # spread the hypotheses' starting points so winner-takes-all does not collapse on one
            with torch.no_grad():
                ang = torch.linspace(-math.pi / 3, math.pi / 3, cfg.num_modes)
                spread = torch.stack([torch.cos(ang) - 1.0, torch.sin(ang)], -1) * 0.05  # (M, 2)
                self.out.bias[2:] = spread.flatten()

    @property
    def num_modes(self) -> int:
        return self.cfg.num_modes

    def _local(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.cfg.heading_frame:
            origin, rot = heading_frames(obs)
        else:
            origin = obs[:, -1]
            rot = torch.eye(2, dtype=obs.dtype, device=obs.device).expand(obs.shape[0], 2, 2)
        local = (obs - origin[:, None]) @ rot.transpose(1, 2)  # (B, T, 2)
        return local, origin, rot

    def forward_local(self, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Forecast in the agent frame.

        Args:
            local: (B, T_obs, 2) history in the agent frame (last point at the origin).

        Returns:
            pred (B, T_pred, 2), modes (B, M, T_pred, 2) or None, mode logits (B, M) or None.
        """
        cfg = self.cfg
        b = local.shape[0]
        disp = local[:, 1:] - local[:, :-1]  # (B, T-1, 2)
        accel = torch.cat([torch.zeros_like(disp[:, :1]), disp[:, 1:] - disp[:, :-1]], dim=1)  # (B, T-1, 2)
        enc_out, state = self.encoder(torch.cat([disp, local[:, 1:], accel], dim=-1))  # (B, T-1, H)
        ctx = enc_out[:, -1]  # (B, H)
        dec_in = torch.cat([ctx[:, None].expand(b, cfg.pred_len, -1), self.step_embed.expand(b, -1, -1)], -1)
        dec_out, _ = self.decoder(dec_in, state)  # (B, T_pred, H)
        steps = self.out(dec_out).view(b, cfg.pred_len, 1 + cfg.num_modes, 2).transpose(1, 2)  # (B, 1+M, T, 2)
        if cfg.residual_cv:
            steps = steps + disp[:, -1, None, None, :]
        paths = steps.cumsum(dim=2)  # (B, 1+M, T_pred, 2)
        if not cfg.num_modes:
            return paths[:, 0], None, None
        return paths[:, 0], paths[:, 1:], self.mode_head(ctx)

    def forward(self, batch: TrajectoryBatch) -> tuple[TrajectoryOutput, torch.Tensor | None]:
        """Forecast ``batch.obs``; the loss is computed when ``batch.fut`` is given (not None)."""
        obs = batch.obs
        check_history(obs, "obs")
        local, origin, rot = self._local(obs)
        pred_l, modes_l, logits = self.forward_local(local)
        o = origin[:, None]
        out = TrajectoryOutput(
            pred=pred_l @ rot + o,
            modes=None if modes_l is None else modes_l @ rot[:, None] + o[:, None],
            mode_logits=logits,
        )
        fut = getattr(batch, "fut", None)
        if fut is None:
            return out, None
        if fut.shape != (obs.shape[0], self.cfg.pred_len, 2):
            raise InputShapeError(f"fut must be ({obs.shape[0]}, {self.cfg.pred_len}, 2), got {tuple(fut.shape)}")
        fut_l = (fut - o) @ rot.transpose(1, 2)  # (B, T_pred, 2); distances are rotation invariant
        return out, self.loss_local(pred_l, modes_l, logits, fut_l)

    def loss_local(self, pred: torch.Tensor, modes: torch.Tensor | None, logits: torch.Tensor | None,
                   fut: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        err = (pred - fut).norm(dim=-1)  # (B, T)
        loss = err.mean() + cfg.fde_weight * err[:, -1].mean()
        if modes is None or logits is None:
            return loss
        merr = (modes - fut[:, None]).norm(dim=-1)  # (B, M, T)
        per_mode = merr.mean(-1) + cfg.fde_weight * merr[..., -1]  # (B, M)
        best = per_mode.min(dim=1)
        wta = (1 - cfg.wta_relax) * best.values.mean() + cfg.wta_relax * per_mode.mean()
        cls = F.cross_entropy(logits, best.indices.detach())
        return loss + cfg.mode_weight * wta + cfg.mode_cls_weight * cls

    @torch.inference_mode()
    def predict(self, obs: torch.Tensor, k: int = 1) -> torch.Tensor:
        """``k`` forecasts per agent, most likely first: (B, T_obs, 2) -> (B, k, T_pred, 2).

        ``k == 1`` is the deterministic head; ``1 < k <= num_modes`` the ``k`` top-scored hypotheses.
        """
        if k < 1 or (k > 1 and k > self.cfg.num_modes):
            raise InputShapeError(f"k must be 1..{max(1, self.cfg.num_modes)} for this model, got {k}")
        out, _ = self.forward(TrajectoryBatch(obs))
        if k == 1:
            return out.pred[:, None]
        assert out.modes is not None and out.mode_logits is not None
        order = out.mode_logits.argsort(dim=1, descending=True)[:, :k]  # (B, k)
        return torch.take_along_dim(out.modes, order[:, :, None, None], dim=1)


def build_model(model_config: dict[str, Any]) -> TrajectoryModel:
    """Registry builder: rebuild a :class:`TrajectoryModel` from its checkpoint ``model_config``."""
    return TrajectoryModel(TrajectoryConfig(**model_config))
