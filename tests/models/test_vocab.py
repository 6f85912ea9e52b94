"""Caption tokenizer and vocabulary: normalisation, unknown words, round trip, bad inputs."""

from __future__ import annotations

import json

import pytest

from vidseq.errors import CaptionError
from vidseq.models.caption.vocab import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIALS,
    UNK_ID,
    Vocabulary,
    tokenize,
)

CAPS = ["A red circle moves left.", "a red circle moves left then stops", "A blue square moves UP!",
        "a blue square, then a red triangle"]


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("A Red circle, moves LEFT... then stops!", ["a", "red", "circle", "moves", "left", "then", "stops"]),
        ("  the man's dog  ", ["the", "man's", "dog"]),
        ("two-step 3 times", ["two", "step", "3", "times"]),
        ("...!?", []),
        ("", []),
    ],
)
def test_tokenize(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


def test_build_orders_by_count_then_alpha_and_keeps_specials_first() -> None:
    v = Vocabulary.build(CAPS)
    assert v.tokens[:4] == SPECIALS
    assert v.tokens[4] == "a"  # most frequent word
    assert (v.id("<pad>"), v.id("<bos>"), v.id("<eos>"), v.id("<unk>")) == (PAD_ID, BOS_ID, EOS_ID, UNK_ID)
    assert Vocabulary.build(reversed(CAPS)).tokens == v.tokens  # deterministic


def test_min_count_maps_rare_words_to_unk() -> None:
    v = Vocabulary.build(CAPS, min_count=2)
    assert "stops" not in v and "red" in v
    ids = v.encode("a red circle stops")
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert ids[-2] == UNK_ID
    assert v.decode(ids) == "a red circle <unk>"


def test_unknown_words_become_unk() -> None:
    v = Vocabulary.build(CAPS)
    assert v.encode("a purple hexagon", add_special=False) == [v.id("a"), UNK_ID, UNK_ID]


def test_round_trip_through_json() -> None:
    v = Vocabulary.build(CAPS, min_count=1, max_size=10)
    assert len(v) == 10
    v2 = Vocabulary.from_dict(json.loads(json.dumps(v.to_dict())))
    assert v2 == v and v2.tokens == v.tokens and v2.counts == v.counts
    for cap in CAPS:
        ids = v.encode(cap)
        assert v2.encode(cap) == ids
        assert v2.decode(ids) == v.decode(ids)
    full = Vocabulary.build(CAPS)
    assert full.decode(full.encode(CAPS[1])) == "a red circle moves left then stops"


def test_decode_stops_at_eos_and_skips_pad() -> None:
    v = Vocabulary.build(CAPS)
    ids = [BOS_ID, v.id("red"), v.id("circle"), EOS_ID, v.id("blue"), PAD_ID]
    assert v.decode(ids) == "red circle"
    assert v.decode([v.id("red"), PAD_ID, v.id("circle")]) == "red circle"
    with pytest.raises(CaptionError, match="outside the vocabulary"):
        v.decode([999])


@pytest.mark.parametrize("bad", ["", "   ", "?!..."])
def test_empty_caption_is_rejected(bad: str) -> None:
    v = Vocabulary.build(CAPS)
    with pytest.raises(CaptionError, match="empty caption"):
        v.encode(bad)


def test_overlong_caption_truncated_or_rejected() -> None:
    v = Vocabulary.build(CAPS)
    long = " ".join(["red"] * 30)
    ids = v.encode(long, max_len=5)
    assert ids == [BOS_ID] + [v.id("red")] * 5 + [EOS_ID]
    with pytest.raises(CaptionError, match="more than max_len=5"):
        v.encode(long, max_len=5, on_overflow="error")


def test_bad_vocabulary_data() -> None:
    with pytest.raises(CaptionError):
        Vocabulary.build([])
    with pytest.raises(CaptionError):
        Vocabulary.build(["!!", "?"])
    with pytest.raises(CaptionError):
        Vocabulary.from_dict({"tokens": ["a", "b"]})
    with pytest.raises(CaptionError):
        Vocabulary.from_dict({"words": []})
    with pytest.raises(CaptionError):
        Vocabulary(tokens=SPECIALS + ("a", "a"))
