"""Caption decoding: beam width 1 == greedy, batching, length/no-repeat rules, n-best ordering."""

from __future__ import annotations

import pytest
import torch

from vidseq.models.caption.decode import (
    DecodeConfig,
    banned_ngram_tokens,
    beam_search,
    generate,
    greedy_decode,
)
from vidseq.models.caption.model import CaptionConfig, CaptionModel
from vidseq.models.caption.vocab import EOS_ID

D, V = 12, 20


def _model(seed: int, **kw: object) -> CaptionModel:
    torch.manual_seed(seed)
    cfg = CaptionConfig(feature_dim=D, vocab_size=V, hidden_dim=24, decoder_hidden_dim=24, embed_dim=16,
                        attn_dim=16, dropout=0.2, **kw)  # type: ignore[arg-type]
    m = CaptionModel(cfg)
    # larger output weights give peaked, varied distributions instead of near-uniform ones
    with torch.no_grad():
        m.out.weight.mul_(4.0)
        m.out.bias.normal_(0, 1.0)
    return m.eval()


def _inputs(seed: int, B: int = 6, T: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, T, D, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    return feats, lengths


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("max_len", "min_len", "no_repeat"), [(8, 1, 0), (5, 0, 2), (12, 3, 1)])
def test_beam_width_one_equals_greedy(seed: int, max_len: int, min_len: int, no_repeat: int) -> None:
    m = _model(seed, tie_embeddings=seed % 2 == 0)
    feats, lengths = _inputs(seed)
    mem = m.encode(feats, lengths)
    greedy = greedy_decode(m, mem, max_len=max_len, min_len=min_len, no_repeat_ngram=no_repeat)
    beam = beam_search(m, mem, beam_size=1, max_len=max_len, min_len=min_len, no_repeat_ngram=no_repeat,
                       length_penalty=0.7)
    assert [h.tokens for h in greedy] == [b[0].tokens for b in beam]
    assert [h.finished for h in greedy] == [b[0].finished for b in beam]
    assert [h.logprob for h in greedy] == pytest.approx([b[0].logprob for b in beam], abs=1e-9)


def test_generate_beam1_goes_through_greedy_and_beam_is_batched() -> None:
    m = _model(5)
    feats, lengths = _inputs(5, B=4)
    batched = generate(m, feats, lengths, DecodeConfig(beam_size=3, max_len=10))
    single = [generate(m, feats[i:i + 1, : int(lengths[i])], lengths[i:i + 1], DecodeConfig(beam_size=3, max_len=10))[0]
              for i in range(4)]
    assert [h.tokens for h in batched] == [h.tokens for h in single]
    assert [h.logprob for h in batched] == pytest.approx([h.logprob for h in single], abs=1e-4)


def test_beam_finds_at_least_greedy_logprob_and_nbest_sorted() -> None:
    m = _model(7)
    feats, lengths = _inputs(7)
    mem = m.encode(feats, lengths)
    greedy = greedy_decode(m, mem, max_len=10)
    beams = beam_search(m, mem, beam_size=5, max_len=10, n_best=5)
    for g, hyps in zip(greedy, beams):
        assert len(hyps) == 5
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        if g.finished and hyps[0].finished:
            assert hyps[0].logprob >= g.logprob - 1e-9


def test_max_and_min_len_rules() -> None:
    m = _model(3)
    with torch.no_grad():  # make <eos> overwhelmingly likely
        m.out.bias[EOS_ID] = 50.0
    feats, lengths = _inputs(3)
    for beam in (1, 3):
        hyps = generate(m, feats, lengths, DecodeConfig(beam_size=beam, max_len=6, min_len=2))
        assert all(len(h.tokens) == 2 and h.finished for h in hyps)
        hyps = generate(m, feats, lengths, DecodeConfig(beam_size=beam, max_len=6, min_len=0))
        assert all(len(h.tokens) == 0 for h in hyps)
    with torch.no_grad():  # now make <eos> impossible to prefer: hypotheses stop at max_len
        m.out.bias[EOS_ID] = -50.0
    for beam in (1, 3):
        hyps = generate(m, feats, lengths, DecodeConfig(beam_size=beam, max_len=6))
        assert all(len(h.tokens) == 6 and not h.finished for h in hyps)


@pytest.mark.parametrize("beam", [1, 4])
def test_no_repeat_ngram(beam: int) -> None:
    m = _model(11)
    with torch.no_grad():  # one word dominates: without the rule it repeats forever
        m.out.bias[9] = 30.0
        m.out.bias[EOS_ID] = -30.0
    feats, lengths = _inputs(11)
    plain = generate(m, feats, lengths, DecodeConfig(beam_size=beam, max_len=8))
    assert all(h.tokens.count(9) == 8 for h in plain)
    for n in (1, 2, 3):
        for h in generate(m, feats, lengths, DecodeConfig(beam_size=beam, max_len=8, no_repeat_ngram=n)):
            grams = [h.tokens[i:i + n] for i in range(len(h.tokens) - n + 1)]
            assert len(grams) == len(set(grams)), (n, h.tokens)


@pytest.mark.parametrize(
    ("seq", "n", "banned"),
    [([], 2, set()), ([5], 1, {5}), ([5, 6, 5], 2, {6}), ([5, 6, 7, 5, 6], 3, {7}), ([5, 6], 3, set())],
)
def test_banned_ngram_tokens(seq: list[int], n: int, banned: set[int]) -> None:
    assert banned_ngram_tokens(seq, n) == banned


def test_decode_config_validation() -> None:
    with pytest.raises(ValueError):
        DecodeConfig(beam_size=0)
    with pytest.raises(ValueError):
        DecodeConfig(max_len=3, min_len=4)
    with pytest.raises(ValueError):
        DecodeConfig(length_penalty=-1)
