"""The stacked-LSTM encoder shared by every head.

It runs either over a whole sequence (training, offline scoring) or one step at a time with the
(h, c) state carried by the caller (live streams): both give the same outputs for the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (num_layers, B, hidden)


@dataclass(frozen=True)
class EncoderConfig:
    input_dim: int
    hidden_dim: int = 256
    num_layers: int = 2
    dropout: float = 0.1
    input_dropout: float = 0.0


class StackedLSTMEncoder(nn.Module):
    """Linear input projection + LayerNorm + stacked LSTM.

    ``forward(x, state=None, lengths=None) -> (outputs, state)`` with ``x`` of shape (B, T, D);
    ``lengths`` (B,) packs variable-length batches so padding never leaks into the state.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_proj = nn.Sequential(
            nn.Dropout(cfg.input_dropout), nn.Linear(cfg.input_dim, cfg.hidden_dim), nn.LayerNorm(cfg.hidden_dim)
        )
        self.lstm = nn.LSTM(
            cfg.hidden_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )

    @property
    def output_dim(self) -> int:
        return self.cfg.hidden_dim

    def forward(
        self, x: torch.Tensor, state: LSTMState | None = None, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        if x.dim() != 3 or x.shape[-1] != self.cfg.input_dim:
            raise ValueError(f"expected (B, T, {self.cfg.input_dim}) input, got {tuple(x.shape)}")
        z = self.input_proj(x)  # (B, T, H)
        if lengths is None:
            out, new_state = self.lstm(z, state)
            return out, new_state
        packed = nn.utils.rnn.pack_padded_sequence(z, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out_packed, new_state = self.lstm(packed, state)
        out, _ = nn.utils.rnn.pad_packed_sequence(out_packed, batch_first=True, total_length=x.shape[1])
        return out, new_state

    def step(self, x_t: torch.Tensor, state: LSTMState | None = None) -> tuple[torch.Tensor, LSTMState]:
        """One time step: ``x_t`` (B, D) -> output (B, H) and the new state."""
        out, new_state = self.forward(x_t.unsqueeze(1), state)
        return out[:, 0], new_state
