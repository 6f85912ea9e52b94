"""S2VT / soft-attention caption model: stacked-LSTM encoder over frames, attentive LSTM decoder.

Encoder: per-frame backbone features (optionally concatenated with per-frame object/track summary
features) are standardised with training-set statistics (buffers, saved in the state dict) and run
through :class:`~vidseq.models.encoder.StackedLSTMEncoder` with packed variable-length sequences.

Decoder (Bahdanau et al. 2015; Yao et al. 2015 "soft attention" for video): at step ``t`` the
previous top-layer hidden state queries the encoder outputs with additive attention (padding is
masked), the context vector and the previous word's embedding feed a stacked LSTM, and
``tanh(W [h_t; ctx_t; emb])`` is projected to the vocabulary (optionally through the transposed
embedding matrix: tied embeddings). The decoder state starts from the encoder's last state and
the masked mean of the encoder outputs (the "mean-pool" initialisation).

Training uses teacher forcing; ``scheduled_sampling > 0`` feeds the model's own previous argmax
with that probability per example and step (Bengio et al. 2015).

``forward(batch) -> (logits, loss)`` (nanoGPT style); decoding lives in
:mod:`vidseq.models.caption.decode` and uses :meth:`CaptionModel.encode` / :meth:`CaptionModel.step`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidseq.errors import InputShapeError
from vidseq.models.caption.vocab import BOS_ID, EOS_ID, PAD_ID, Vocabulary
from vidseq.models.encoder import EncoderConfig, StackedLSTMEncoder

LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (num_layers, N, H)


@dataclass(frozen=True)
class CaptionArchitecture:
    """The architecture of :class:`CaptionModel` that a user chooses (``model:`` in ``configs/caption.yaml``):
    the one place these defaults live.

    Attributes:
        hidden_dim: encoder LSTM width.
        num_layers: encoder LSTM layers.
        decoder_hidden_dim: decoder LSTM width.
        decoder_layers: decoder LSTM layers.
        embed_dim: word embedding size.
        attn_dim: additive-attention width.
        dropout: dropout in encoder/decoder LSTM stacks, on embeddings and before the output layer.
        input_dropout: dropout on the (standardised) frame features.
        feature_dropout: training-time probability of hiding a clip's whole backbone feature (the
            first ``feature_dim`` inputs) so the model must also use the object features ("modality
            dropout"; only when ``aux_dim > 0``).
        tie_embeddings: share the output projection with the word embedding matrix.
        scheduled_sampling: probability of feeding the model's own previous prediction in training.
        label_smoothing: cross-entropy label smoothing.
    """

    hidden_dim: int = 256
    num_layers: int = 2
    decoder_hidden_dim: int = 256
    decoder_layers: int = 1
    embed_dim: int = 128
    attn_dim: int = 128
    dropout: float = 0.3
    input_dropout: float = 0.0
    feature_dropout: float = 0.0
    tie_embeddings: bool = False
    scheduled_sampling: float = 0.0
    label_smoothing: float = 0.0


@dataclass(frozen=True, kw_only=True)
class CaptionConfig(CaptionArchitecture):
    """:class:`CaptionArchitecture` plus the sizes that come from the data (stored in checkpoints).

    Attributes:
        feature_dim: per-frame backbone feature size (from the backbone, never hard-coded).
        vocab_size: number of tokens including the 4 specials.
        aux_dim: per-frame object/track summary feature size appended to the backbone feature (0 = none).
        max_len: default maximum number of words generated at inference.
    """

    feature_dim: int
    vocab_size: int
    aux_dim: int = 0
    max_len: int = 20

    def __post_init__(self) -> None:
        for name in ("feature_dim", "vocab_size", "hidden_dim", "num_layers", "decoder_hidden_dim",
                     "decoder_layers", "embed_dim", "attn_dim", "max_len"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vocab_size < 5:
            raise ValueError(f"vocab_size must be > 4 (specials + one word), got {self.vocab_size}")
        if self.aux_dim < 0:
            raise ValueError(f"aux_dim must be >= 0, got {self.aux_dim}")
        for name in ("dropout", "input_dropout", "feature_dropout", "scheduled_sampling", "label_smoothing"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def input_dim(self) -> int:
        return self.feature_dim + self.aux_dim


@dataclass
class CaptionBatch:
    """A collated batch. Frame features are padded to the longest clip, tokens to the longest caption.

    Attributes:
        features: (B, T, D) float32, D = feature_dim + aux_dim.
        lengths: (B,) int64 number of valid frames per clip (>= 1).
        tokens: (B, L) int64 ``<bos> w... <eos> <pad>...`` or None at inference.
        clip_ids: clip id per row (several rows may share a clip: one per reference caption).
    """

    features: torch.Tensor
    lengths: torch.Tensor
    tokens: torch.Tensor | None = None
    clip_ids: list[str] = field(default_factory=list)

    def to(self, device: torch.device | str) -> CaptionBatch:
        return CaptionBatch(
            features=self.features.to(device),
            lengths=self.lengths.to(device),
            tokens=None if self.tokens is None else self.tokens.to(device),
            clip_ids=list(self.clip_ids),
        )

    def __len__(self) -> int:
        return int(self.features.shape[0])


@dataclass
class EncoderMemory:
    """What the decoder attends to; rows can be re-indexed for beam search.

    Attributes:
        states: (N, T, H) encoder outputs.
        keys: (N, T, A) attention keys ``W_enc states`` (precomputed once).
        mask: (N, T) bool, True on valid frames.
        init: initial decoder (h, c), each (decoder_layers, N, H_dec).
    """

    states: torch.Tensor
    keys: torch.Tensor
    mask: torch.Tensor
    init: LSTMState

    def index_select(self, index: torch.Tensor) -> EncoderMemory:
        """Rows ``index`` (N',) of the memory (e.g. ``repeat_interleave`` for beams)."""
        return EncoderMemory(
            states=self.states.index_select(0, index),
            keys=self.keys.index_select(0, index),
            mask=self.mask.index_select(0, index),
            init=(self.init[0].index_select(1, index), self.init[1].index_select(1, index)),
        )


class AdditiveAttention(nn.Module):
    """``score(q, k_t) = v^T tanh(W_q q + k_t)`` with masked softmax over t."""

    def __init__(self, query_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(query_dim, attn_dim, bias=False)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # query (N, Q), keys (N, T, A), values (N, T, H), mask (N, T)
        scores = self.v(torch.tanh(keys + self.query(query).unsqueeze(1))).squeeze(-1)  # (N, T)
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (N, T)
        context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)  # (N, H)
        return context, weights


class CaptionModel(nn.Module):
    """Encoder-decoder caption model; see the module docstring.

    ``vocab`` (optional) is attached so a model loaded from a checkpoint can turn ids into words;
    it is not a parameter and is stored in the checkpoint's ``model_config``.
    """

    def __init__(self, cfg: CaptionConfig, vocab: Vocabulary | None = None) -> None:
        super().__init__()
        if vocab is not None and len(vocab) != cfg.vocab_size:
            raise ValueError(f"vocabulary has {len(vocab)} tokens but vocab_size={cfg.vocab_size}")
        self.cfg = cfg
        self.vocab = vocab
        # per-dimension standardisation of the encoder input, fitted on training data (set_input_stats)
        self.register_buffer("input_mean", torch.zeros(cfg.input_dim))
        self.register_buffer("input_std", torch.ones(cfg.input_dim))
        self.encoder = StackedLSTMEncoder(
            EncoderConfig(cfg.input_dim, cfg.hidden_dim, cfg.num_layers, cfg.dropout, cfg.input_dropout)
        )
        H, Hd = cfg.hidden_dim, cfg.decoder_hidden_dim
        self.init_h = nn.Linear(2 * H, cfg.decoder_layers * Hd)
        self.init_c = nn.Linear(2 * H, cfg.decoder_layers * Hd)
        self.attn_keys = nn.Linear(H, cfg.attn_dim)
        self.attention = AdditiveAttention(Hd, cfg.attn_dim)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=PAD_ID)
        self.decoder = nn.LSTM(
            cfg.embed_dim + H, Hd, num_layers=cfg.decoder_layers, batch_first=True,
            dropout=cfg.dropout if cfg.decoder_layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(cfg.dropout)
        out_dim = cfg.embed_dim if cfg.tie_embeddings else Hd
        self.pre_out = nn.Linear(Hd + H + cfg.embed_dim, out_dim)
        self.out = nn.Linear(out_dim, cfg.vocab_size)
        if cfg.tie_embeddings:
            self.out.weight = self.embed.weight

    # ------------------------------------------------------------------ input statistics
    @torch.no_grad()
    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-4) -> None:
        """Standardise inputs with training-set ``mean``/``std`` (D,); tiny std is clamped to ``eps``."""
        if mean.shape != (self.cfg.input_dim,) or std.shape != (self.cfg.input_dim,):
            raise InputShapeError(f"input stats must have shape ({self.cfg.input_dim},), got "
                                  f"{tuple(mean.shape)} and {tuple(std.shape)}")
        self.input_mean.copy_(mean.float())
        self.input_std.copy_(std.float().clamp_min(eps))

    # ------------------------------------------------------------------ encoder
    def _check_inputs(self, features: torch.Tensor, lengths: torch.Tensor) -> None:
        if features.dim() != 3 or features.shape[-1] != self.cfg.input_dim:
            raise InputShapeError(f"caption model expects features (B, T, {self.cfg.input_dim}), "
                                  f"got {tuple(features.shape)}")
        if lengths.shape != features.shape[:1]:
            raise InputShapeError(f"lengths must have shape ({features.shape[0]},), got {tuple(lengths.shape)}")
        if features.shape[1] == 0 or bool((lengths < 1).any()) or bool((lengths > features.shape[1]).any()):
            raise InputShapeError(f"every clip needs 1..{features.shape[1]} frames, got lengths {lengths.tolist()}")
        if not bool(torch.isfinite(features).all()):
            raise InputShapeError("caption features hold NaN or inf values")

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> EncoderMemory:
        """Frame features (B, T, D) + lengths (B,) -> :class:`EncoderMemory`."""
        self._check_inputs(features, lengths)
        x = (features - self.input_mean) / self.input_std  # (B, T, D)
        if self.training and self.cfg.feature_dropout > 0 and self.cfg.aux_dim > 0:
            # hide the backbone part of whole clips (0 = the training mean after standardisation)
            keep = (torch.rand(x.shape[0], 1, 1, device=x.device) >= self.cfg.feature_dropout).to(x.dtype)
            fd = self.cfg.feature_dim
            x = torch.cat([x[..., :fd] * keep, x[..., fd:]], dim=-1)
        states, (h_n, _) = self.encoder(x, lengths=lengths)  # (B, T, H), (layers, B, H)
        T = features.shape[1]
        mask = torch.arange(T, device=features.device)[None, :] < lengths.to(features.device)[:, None]  # (B, T)
        mean = (states * mask.unsqueeze(-1)).sum(1) / lengths.to(states.dtype).unsqueeze(-1)  # (B, H)
        summary = torch.cat([h_n[-1], mean], dim=-1)  # (B, 2H)
        B, L, Hd = features.shape[0], self.cfg.decoder_layers, self.cfg.decoder_hidden_dim
        h0 = torch.tanh(self.init_h(summary)).view(B, L, Hd).transpose(0, 1).contiguous()
        c0 = self.init_c(summary).view(B, L, Hd).transpose(0, 1).contiguous()
        return EncoderMemory(states=states, keys=self.attn_keys(states), mask=mask, init=(h0, c0))

    # ------------------------------------------------------------------ decoder
    def step(
        self, prev_tokens: torch.Tensor, state: LSTMState, memory: EncoderMemory
    ) -> tuple[torch.Tensor, LSTMState, torch.Tensor]:
        """One decoder step: previous tokens (N,) -> logits (N, V), new state, attention (N, T)."""
        h, _ = state
        context, weights = self.attention(h[-1], memory.keys, memory.states, memory.mask)  # (N, H), (N, T)
        emb = self.drop(self.embed(prev_tokens))  # (N, E)
        out, new_state = self.decoder(torch.cat([emb, context], -1).unsqueeze(1), state)  # (N, 1, Hd)
        feat = torch.tanh(self.pre_out(self.drop(torch.cat([out[:, 0], context, emb], -1))))
        return self.out(self.drop(feat)), new_state, weights

    def forward(self, batch: CaptionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits (B, L-1, V) for ``tokens[:, 1:]`` and the mean token cross-entropy."""
        if batch.tokens is None:
            raise InputShapeError("CaptionModel.forward needs target tokens; use decode.generate() to caption")
        tokens = batch.tokens  # (B, L)
        if tokens.dim() != 2 or tokens.shape[0] != batch.features.shape[0] or tokens.shape[1] < 2:
            raise InputShapeError(f"tokens must be (B, L>=2) for B={batch.features.shape[0]}, "
                                  f"got {tuple(tokens.shape)}")
        memory = self.encode(batch.features, batch.lengths)
        state = memory.init
        steps = tokens.shape[1] - 1
        prev = tokens[:, 0]
        sample_p = self.cfg.scheduled_sampling if self.training else 0.0
        all_logits = []
        for t in range(steps):
            logits, state, _ = self.step(prev, state, memory)  # (B, V)
            all_logits.append(logits)
            prev = tokens[:, t + 1]
            if sample_p > 0.0 and t + 1 < steps:
                own = logits.detach().argmax(-1)
                use_own = torch.rand(own.shape, device=own.device) < sample_p
                # never replace padding: it only feeds positions the loss ignores anyway
                prev = torch.where(use_own & (prev != PAD_ID), own, prev)
        logits = torch.stack(all_logits, 1)  # (B, L-1, V)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
            ignore_index=PAD_ID, label_smoothing=self.cfg.label_smoothing,
        )
        return logits, loss

    # ------------------------------------------------------------------ checkpoint support
    def model_config(self) -> dict[str, Any]:
        """JSON-able dict that :func:`build_model` turns back into this architecture (+ vocabulary)."""
        return {"model": dataclasses.asdict(self.cfg),
                "vocab": None if self.vocab is None else self.vocab.to_dict()}


def build_model(model_config: dict[str, Any]) -> CaptionModel:
    """Registry builder: ``{"model": CaptionConfig fields, "vocab": Vocabulary.to_dict()}`` -> model."""
    if "model" in model_config:
        cfg = CaptionConfig(**model_config["model"])
        vocab_data = model_config.get("vocab")
    else:  # a bare CaptionConfig dict
        cfg = CaptionConfig(**model_config)
        vocab_data = None
    vocab = Vocabulary.from_dict(vocab_data) if vocab_data else None
    return CaptionModel(cfg, vocab)


__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "CaptionBatch", "CaptionConfig", "CaptionModel", "EncoderMemory",
           "build_model"]
