"""Caption tokenizer and vocabulary, built from training captions and stored inside checkpoints.

Tokenization is deliberately simple and deterministic (no Java, no downloads): lower-case, keep
runs of letters/digits (with an inner apostrophe, ``man's``), drop every other character.
The vocabulary serialises to plain JSON-able data (:meth:`Vocabulary.to_dict`) so a checkpoint
holds everything needed to turn token ids back into words.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from vidseq.errors import CaptionError

log = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words; punctuation is dropped.

    >>> tokenize("A Red circle, moves LEFT... then stops!")
    ['a', 'red', 'circle', 'moves', 'left', 'then', 'stops']
    """
    if not isinstance(text, str):
        raise CaptionError(f"caption must be a string, got {type(text).__name__}")
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def normalize_caption(text: str) -> str:
    """The caption as the model sees it: tokens joined by single spaces."""
    return " ".join(tokenize(text))


@dataclass(frozen=True)
class Vocabulary:
    """Token <-> id mapping; ids 0..3 are ``<pad> <bos> <eos> <unk>``.

    Attributes:
        tokens: id -> token, starting with :data:`SPECIALS`.
        counts: training-set count of each non-special token (kept for reporting).
    """

    tokens: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if tuple(self.tokens[: len(SPECIALS)]) != SPECIALS:
            raise CaptionError(f"vocabulary must start with {', '.join(SPECIALS)}")
        if len(set(self.tokens)) != len(self.tokens):
            raise CaptionError("vocabulary has duplicate tokens")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls, captions: Iterable[str], *, min_count: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """Build from training captions: words seen ``>= min_count`` times, most frequent first.

        Ties are broken alphabetically so the same captions always give the same ids.

        Raises:
            CaptionError: no captions, or no word survives ``min_count``.
        """
        if min_count < 1:
            raise CaptionError(f"min_count must be >= 1, got {min_count}")
        counter: Counter[str] = Counter()
        n = 0
        for cap in captions:
            counter.update(tokenize(cap))
            n += 1
        if n == 0:
            raise CaptionError("cannot build a vocabulary from zero captions")
        kept = sorted(((w, c) for w, c in counter.items() if c >= min_count and w not in SPECIALS),
                      key=lambda wc: (-wc[1], wc[0]))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIALS))]
        if not kept:
            raise CaptionError(f"no word occurs >= {min_count} times in {n} captions")
        dropped = len(counter) - len(kept)
        if dropped:
            log.info("vocabulary: %d words kept, %d rare words map to %s", len(kept), dropped, UNK)
        return cls(tokens=SPECIALS + tuple(w for w, _ in kept), counts=dict(kept))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (stored in checkpoints)."""
        return {"tokens": list(self.tokens), "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabulary:
        if not isinstance(data, dict) or "tokens" not in data:
            raise CaptionError("vocabulary data must be a mapping with a 'tokens' list")
        return cls(tokens=tuple(str(t) for t in data["tokens"]),
                   counts={str(k): int(v) for k, v in dict(data.get("counts", {})).items()})

    # ------------------------------------------------------------------ lookup
    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index  # type: ignore[attr-defined]

    def id(self, token: str) -> int:
        """Id of ``token`` (``<unk>``'s id when unknown)."""
        return self._index.get(token, UNK_ID)  # type: ignore[attr-defined]

    def encode(
        self,
        text: str,
        *,
        max_len: int | None = None,
        on_overflow: Literal["truncate", "error"] = "truncate",
        add_special: bool = True,
    ) -> list[int]:
        """Caption -> ids ``[<bos>, w1, ..., wn, <eos>]``; unknown words become ``<unk>``.

        Args:
            text: the caption.
            max_len: most word tokens kept (``<bos>``/``<eos>`` not counted); ``None`` = no limit.
            on_overflow: ``"truncate"`` keeps the first ``max_len`` words (``<eos>`` still ends the
                sequence), ``"error"`` raises.
            add_special: add ``<bos>``/``<eos>``.

        Raises:
            CaptionError: the caption has no words, or is too long with ``on_overflow="error"``.
        """
        words = tokenize(text)
        if not words:
            raise CaptionError(f"empty caption {text!r} (no words after removing punctuation)")
        if max_len is not None and len(words) > max_len:
            if on_overflow == "error":
                raise CaptionError(f"caption has {len(words)} words, more than max_len={max_len}: {text[:60]!r}")
            words = words[:max_len]
        ids = [self.id(w) for w in words]
        return [BOS_ID, *ids, EOS_ID] if add_special else ids

    def decode(self, ids: Sequence[int], *, strip_special: bool = True) -> str:
        """Ids -> caption text; stops at the first ``<eos>``; ``<pad>``/``<bos>`` are dropped."""
        out: list[str] = []
        for i in ids:
            i = int(i)
            if i == EOS_ID and strip_special:
                break
            if strip_special and i in (PAD_ID, BOS_ID):
                continue
            if not 0 <= i < len(self.tokens):
                raise CaptionError(f"token id {i} outside the vocabulary of {len(self.tokens)} tokens")
            out.append(self.tokens[i])
        return " ".join(out)
