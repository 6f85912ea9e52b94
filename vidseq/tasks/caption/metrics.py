"""Caption metrics with the COCO caption evaluation code (``pycocoevalcap``).

BLEU-1..4, ROUGE-L and CIDEr(-D as implemented by pycocoevalcap's ``Cider``) are pure Python.
METEOR runs ``meteor-1.5.jar`` and the PTB tokenizer runs Stanford CoreNLP: both need ``java`` on
``PATH``. When Java (or the jar) fails, METEOR is reported as ``None`` with the reason in
``meteor_status`` -- it is never estimated -- and tokenization falls back to the project's Python
tokenizer (:func:`vidseq.models.caption.vocab.tokenize`: lower-case, punctuation dropped, which is
what the PTB tokenizer + pycocoevalcap's punctuation filter produce for plain captions).

All scores are on pycocoevalcap's native scale (0..1 for BLEU/METEOR/ROUGE-L, CIDEr about 0..10);
reports multiply by 100 where they say so.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from vidseq.errors import CaptionError
from vidseq.models.caption.vocab import tokenize

log = logging.getLogger(__name__)

TokenizerName = Literal["auto", "ptb", "simple"]


def _require_pycocoevalcap() -> None:
    try:
        import pycocoevalcap  # noqa: F401
    except ModuleNotFoundError:
        raise CaptionError("caption metrics need pycocoevalcap: pip install 'vidseq[caption]'") from None


def java_available() -> bool:
    return shutil.which("java") is not None


def _tokenize_all(
    refs: Mapping[str, Sequence[str]], hyps: Mapping[str, str], tokenizer: TokenizerName
) -> tuple[dict[str, list[str]], dict[str, list[str]], str]:
    use_ptb = tokenizer == "ptb" or (tokenizer == "auto" and java_available())
    if use_ptb:
        try:
            from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

            tok = PTBTokenizer()
            gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
            res = tok.tokenize({k: [{"caption": hyps[k]}] for k in refs})
            if all(len(gts[k]) == len(refs[k]) for k in refs) and all(len(res[k]) == 1 for k in refs):
                return gts, res, "ptb"
            log.warning("PTB tokenizer returned a different number of lines; using the Python tokenizer")
        except (OSError, KeyError, ValueError) as exc:
            if tokenizer == "ptb":
                raise CaptionError(f"PTB tokenizer (java) failed: {exc}") from None
            log.warning("PTB tokenizer (java) failed (%s); using the Python tokenizer", exc)
    gts = {k: [" ".join(tokenize(c)) for c in v] for k, v in refs.items()}
    res = {k: [" ".join(tokenize(hyps[k]))] for k in refs}
    return gts, res, "simple"


def _meteor(gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[float | None, str]:
    if not java_available():
        return None, "unavailable: java not found on PATH"
    try:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            score, _ = scorer.compute_score(gts, res)
        finally:
            # the wrapper only stops its java process in __del__; do it now
            scorer.meteor_p.stdin.close()
            scorer.meteor_p.kill()
            scorer.meteor_p.wait()
            scorer.meteor_p = _Closed()  # type: ignore[assignment]
        return float(score), "ok (pycocoevalcap meteor-1.5.jar)"
    except Exception as exc:  # noqa: BLE001 - any java/jar failure means "unavailable", never a number
        log.warning("METEOR unavailable: %s", exc)
        return None, f"unavailable: {type(exc).__name__}: {exc}"


class _Closed:
    """Stands in for the killed METEOR process so the wrapper's ``__del__`` is a no-op."""

    class _Pipe:
        def close(self) -> None:
            pass

    stdin = _Pipe()

    def kill(self) -> None:
        pass

    def wait(self) -> None:
        pass


def caption_metrics(
    refs: Mapping[str, Sequence[str]],
    hyps: Mapping[str, str],
    *,
    meteor: bool = True,
    tokenizer: TokenizerName = "auto",
) -> dict[str, Any]:
    """Corpus-level caption metrics.

    Args:
        refs: clip id -> reference captions (at least one each).
        hyps: clip id -> generated caption; must have exactly the keys of ``refs``.
        meteor: also compute METEOR (starts a JVM, about 10 s).
        tokenizer: ``"ptb"`` (Stanford PTB tokenizer, java), ``"simple"`` (Python), ``"auto"`` (ptb when
            java is present).

    Returns:
        ``{"bleu1".."bleu4", "rouge_l", "cider", "meteor" (float or None), "meteor_status", "tokenizer",
        "n_clips"}``.

    Raises:
        CaptionError: empty input, mismatched ids, a clip without references, missing pycocoevalcap.
    """
    _require_pycocoevalcap()
    if not refs:
        raise CaptionError("no clips to score")
    if set(refs) != set(hyps):
        missing = sorted(set(refs) ^ set(hyps))[:5]
        raise CaptionError(f"references and hypotheses cover different clips, e.g. {missing}")
    for k, v in refs.items():
        if not v:
            raise CaptionError(f"clip {k!r} has no reference captions")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    keys = {str(k): k for k in refs}
    gts, res, tok_name = _tokenize_all({str(k): list(v) for k, v in refs.items()},
                                       {str(k): hyps[k] for k in refs}, tokenizer)
    # pycocoevalcap's BLEU/ROUGE choke on empty hypotheses; an empty caption scores as one unknown word
    res = {k: [v[0] if v[0].strip() else "<empty>"] for k, v in res.items()}
    out: dict[str, Any] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for i, b in enumerate(bleu, start=1):
        out[f"bleu{i}"] = float(b)
    out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    out["cider"] = float(Cider().compute_score(gts, res)[0])
    if meteor:
        out["meteor"], out["meteor_status"] = _meteor(gts, res)
    else:
        out["meteor"], out["meteor_status"] = None, "not computed (meteor=False)"
    out["tokenizer"] = tok_name
    out["n_clips"] = len(keys)
    return out


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The float-valued entries of :func:`caption_metrics` output (for training logs)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
