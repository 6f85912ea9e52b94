"""Frame-level ROC AUCs (rank form, grouped) used by evaluation and the label-free search."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vidseq.errors import InputShapeError


def frame_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC of scores ``s`` for 0/1 labels ``y`` (NaN when one class is missing).

    Mann-Whitney form (ties count one half), equal to ``sklearn.metrics.roc_auc_score`` (a test checks)
    and much faster on a few thousand frames; ``tune`` computes it for every candidate.
    """
    return float(group_aucs(y, s)[-1])


def group_aucs(y: np.ndarray, s: np.ndarray, group: np.ndarray | None = None, n_groups: int = 0) -> np.ndarray:
    """AUC of each group of positives against *all* negatives: ``(n_groups + 1,)``, the last entry over all
    positives (NaN where a group has no positive or there is no negative).

    ``group`` gives each frame's group in ``[0, n_groups)`` (read for positives only; not needed when
    ``n_groups`` is 0). One sort of the negatives serves every group: a positive's count is the negatives
    below it plus half those tied.
    """
    y = np.asarray(y)
    s = np.asarray(s, np.float64)
    if len(y) != len(s):
        raise InputShapeError(f"AUC: {len(y)} labels for {len(s)} scores")
    if n_groups and (group is None or len(group) != len(s)):
        raise InputShapeError(f"AUC: {n_groups} groups need one group id per score ({len(s)})")
    if not np.isfinite(s).all():
        raise InputShapeError("AUC: scores contain NaN/inf")
    pos = y == 1
    neg = np.sort(s[~pos])
    out = np.full(n_groups + 1, np.nan)
    if len(neg) == 0 or not pos.any():
        return out
    sp = s[pos]
    lo, hi = np.searchsorted(neg, sp, "left"), np.searchsorted(neg, sp, "right")
    wins = lo + 0.5 * (hi - lo)  # (n_pos,)
    if n_groups:
        g = np.asarray(group)[pos]
        if g.min() < 0 or g.max() >= n_groups:
            raise InputShapeError(f"AUC: group ids must lie in [0, {n_groups})")
        sums, counts = np.bincount(g, wins, n_groups), np.bincount(g, minlength=n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:n_groups] = np.where(counts > 0, sums / (counts * len(neg)), np.nan)
    out[n_groups] = wins.sum() / (len(sp) * len(neg))
    return out


def minmax(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def micro_aucs(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> tuple[float, float]:
    """(AUC over pooled frames, AUC over pooled per-video min-max normalised frames)."""
    y = np.concatenate(labels)
    return frame_auc(y, np.concatenate(scores)), frame_auc(y, np.concatenate([minmax(s) for s in scores]))

