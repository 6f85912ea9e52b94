"""Batched caption decoding: greedy and beam search over :class:`~vidseq.models.caption.model.CaptionModel`.

Both decoders share the same rules so that a beam of width 1 reproduces greedy decoding exactly:

- scores are log-probabilities accumulated in float64;
- ``min_len`` forbids ``<eos>`` before that many words; ``max_len`` stops after that many words
  (the hypothesis then ends without ``<eos>``);
- ``no_repeat_ngram = n > 0`` forbids any word that would repeat an n-gram already in the hypothesis;
- beam search ranks candidates by ``log P / lp(len)`` with the GNMT length penalty
  ``lp(len) = ((5 + len) / 6) ** length_penalty`` (``len`` counts generated tokens including ``<eos>``;
  ``length_penalty = 0`` ranks by raw log-probability). A finished hypothesis keeps its slot and
  score; all candidates of one live beam share one length, so with one beam the ranking is the
  argmax of the next-token distribution, i.e. greedy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidseq.models.caption.model import CaptionModel, EncoderMemory
from vidseq.models.caption.vocab import BOS_ID, EOS_ID, PAD_ID


@dataclass(frozen=True)
class DecodeConfig:
    """Decoding options (YAML section ``decode``)."""

    beam_size: int = 3
    max_len: int = 20
    min_len: int = 1
    length_penalty: float = 0.0
    no_repeat_ngram: int = 0

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {self.max_len}")
        if not 0 <= self.min_len <= self.max_len:
            raise ValueError(f"min_len must be in [0, max_len={self.max_len}], got {self.min_len}")
        if self.no_repeat_ngram < 0:
            raise ValueError(f"no_repeat_ngram must be >= 0, got {self.no_repeat_ngram}")
        if self.length_penalty < 0:
            raise ValueError(f"length_penalty must be >= 0, got {self.length_penalty}")


@dataclass(frozen=True)
class Hypothesis:
    """One decoded caption: word ids (no specials), summed log-probability, ranking score."""

    tokens: tuple[int, ...]
    logprob: float
    score: float
    finished: bool


def banned_ngram_tokens(seq: list[int], n: int) -> set[int]:
    """Tokens that would complete an n-gram already present in ``seq``."""
    if n <= 0 or len(seq) < n - 1:
        return set()
    if n == 1:
        return set(seq)
    prefix = tuple(seq[len(seq) - n + 1:])
    return {seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i:i + n - 1]) == prefix}


def _apply_rules(logp: torch.Tensor, seqs: list[list[int]], t: int, min_len: int, no_repeat: int) -> torch.Tensor:
    """Mask forbidden tokens in ``logp`` (N, V) in place: specials, early ``<eos>``, repeated n-grams."""
    logp[:, PAD_ID] = float("-inf")
    logp[:, BOS_ID] = float("-inf")
    if t < min_len:
        logp[:, EOS_ID] = float("-inf")
    if no_repeat > 0:
        for row, seq in enumerate(seqs):
            banned = banned_ngram_tokens(seq, no_repeat)
            if banned:
                logp[row, list(banned)] = float("-inf")
    return logp


@torch.no_grad()
def greedy_decode(
    model: CaptionModel, memory: EncoderMemory, *, max_len: int = 20, min_len: int = 1, no_repeat_ngram: int = 0
) -> list[Hypothesis]:
    """Argmax decoding for every row of ``memory``; returns one hypothesis per row."""
    N = memory.states.shape[0]
    device = memory.states.device
    state = memory.init
    prev = torch.full((N,), BOS_ID, dtype=torch.long, device=device)
    seqs: list[list[int]] = [[] for _ in range(N)]
    logprob = torch.zeros(N, dtype=torch.float64, device=device)
    done = torch.zeros(N, dtype=torch.bool, device=device)
    for t in range(max_len):
        logits, state, _ = model.step(prev, state, memory)
        logp = _apply_rules(torch.log_softmax(logits.double(), -1), seqs, t, min_len, no_repeat_ngram)
        best_lp, tok = logp.max(-1)  # (N,), (N,)
        tok = torch.where(done, torch.full_like(tok, PAD_ID), tok)
        logprob = logprob + torch.where(done, torch.zeros_like(best_lp), best_lp)
        for row in range(N):
            if not done[row] and int(tok[row]) != EOS_ID:
                seqs[row].append(int(tok[row]))
        done = done | (tok == EOS_ID)
        prev = tok
        if bool(done.all()):
            break
    return [Hypothesis(tuple(s), float(lp), float(lp), bool(d))
            for s, lp, d in zip(seqs, logprob.tolist(), done.tolist())]


def _length_penalty(length: torch.Tensor, alpha: float) -> torch.Tensor:
    if alpha == 0.0:
        return torch.ones_like(length, dtype=torch.float64)
    return ((5.0 + length.double()) / 6.0) ** alpha


@torch.no_grad()
def beam_search(
    model: CaptionModel,
    memory: EncoderMemory,
    *,
    beam_size: int = 3,
    max_len: int = 20,
    min_len: int = 1,
    length_penalty: float = 0.0,
    no_repeat_ngram: int = 0,
    n_best: int = 1,
) -> list[list[Hypothesis]]:
    """Batched beam search; returns the ``n_best`` hypotheses per row of ``memory``, best first."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    B = memory.states.shape[0]
    K = beam_size
    device = memory.states.device
    mem = memory.index_select(torch.arange(B, device=device).repeat_interleave(K))  # rows b*K + k
    state = mem.init
    prev = torch.full((B * K,), BOS_ID, dtype=torch.long, device=device)
    seqs: list[list[int]] = [[] for _ in range(B * K)]
    cum = torch.zeros(B, K, dtype=torch.float64, device=device)
    cum[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    lengths = torch.zeros(B, K, dtype=torch.long, device=device)  # tokens generated incl. <eos>
    finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    V = model.cfg.vocab_size
    for t in range(max_len):
        logits, state, _ = model.step(prev, state, mem)
        logp = _apply_rules(torch.log_softmax(logits.double(), -1), seqs, t, min_len, no_repeat_ngram)
        fin = finished.view(-1)
        # a finished beam proposes exactly one continuation (PAD) at no cost, keeping its score
        logp[fin] = float("-inf")
        logp[fin, PAD_ID] = 0.0
        cand = cum.view(-1, 1) + logp  # (B*K, V) raw log-prob
        cand_len = torch.where(fin, lengths.view(-1), lengths.view(-1) + 1)  # (B*K,)
        norm = cand / _length_penalty(cand_len, length_penalty).unsqueeze(-1)  # (B*K, V)
        top_norm, top_idx = norm.view(B, K * V).topk(K, dim=-1)  # (B, K)
        beam_idx = top_idx // V  # (B, K) source beam within the item
        tok = top_idx % V
        rows = (torch.arange(B, device=device).unsqueeze(1) * K + beam_idx).view(-1)  # (B*K,)
        cum = cand.view(B, K * V).gather(1, top_idx)
        lengths = cand_len[rows].view(B, K)
        was_finished = fin[rows].view(B, K)
        finished = was_finished | (tok == EOS_ID)
        # dead candidates (-inf, e.g. fewer than K valid words) stay -inf and never win
        new_seqs = []
        for r, tk, wf in zip(rows.tolist(), tok.view(-1).tolist(), was_finished.view(-1).tolist()):
            s = seqs[r]
            new_seqs.append(s if wf or tk == EOS_ID else s + [tk])
        seqs = new_seqs
        state = (state[0].index_select(1, rows), state[1].index_select(1, rows))
        prev = tok.view(-1)
        if bool(finished.all()):
            break
    final = cum / _length_penalty(lengths, length_penalty)  # (B, K)
    out: list[list[Hypothesis]] = []
    for b in range(B):
        order = torch.argsort(final[b], descending=True, stable=True).tolist()
        hyps = [Hypothesis(tuple(seqs[b * K + k]), float(cum[b, k]), float(final[b, k]), bool(finished[b, k]))
                for k in order if torch.isfinite(cum[b, k])]
        out.append(hyps[:n_best])
    return out


@torch.no_grad()
def generate(
    model: CaptionModel, features: torch.Tensor, lengths: torch.Tensor, cfg: DecodeConfig | None = None
) -> list[Hypothesis]:
    """Caption a batch: features (B, T, D), lengths (B,) -> best hypothesis per clip (model in eval mode)."""
    cfg = cfg or DecodeConfig()
    was_training = model.training
    model.eval()
    try:
        memory = model.encode(features, lengths)
        if cfg.beam_size == 1:
            return greedy_decode(model, memory, max_len=cfg.max_len, min_len=cfg.min_len,
                                 no_repeat_ngram=cfg.no_repeat_ngram)
        beams = beam_search(model, memory, beam_size=cfg.beam_size, max_len=cfg.max_len, min_len=cfg.min_len,
                            length_penalty=cfg.length_penalty, no_repeat_ngram=cfg.no_repeat_ngram)
        return [b[0] for b in beams]
    finally:
        model.train(was_training)


def caption_texts(
    model: CaptionModel, features: torch.Tensor, lengths: torch.Tensor, cfg: DecodeConfig | None = None
) -> list[str]:
    """Like :func:`generate` but returns caption strings (needs ``model.vocab``)."""
    if model.vocab is None:
        raise ValueError("model has no vocabulary attached; load it from a checkpoint or pass vocab=")
    return [model.vocab.decode(h.tokens) for h in generate(model, features, lengths, cfg)]
