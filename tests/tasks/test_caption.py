"""Caption head: model, overfitting to exact captions, checkpoints, metrics, object features, task end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseq.errors import CaptionError, ConfigError, InputShapeError
from vidseq.models.caption.decode import DecodeConfig, generate
from vidseq.models.caption.model import (
    CaptionBatch,
    CaptionConfig,
    CaptionModel,
    build_model,
)
from vidseq.models.caption.vocab import PAD_ID, Vocabulary

CAPTIONS = [
    "a red circle moves left",
    "a blue square moves right then stops",
    "a red square moves left then stops",
    "a blue circle moves right",
]


def _tiny(vocab_size: int, feature_dim: int = 8, **kw: object) -> CaptionModel:
    cfg = CaptionConfig(feature_dim=feature_dim, vocab_size=vocab_size, hidden_dim=32, num_layers=1,
                        decoder_hidden_dim=32, embed_dim=16, attn_dim=16, dropout=0.0, **kw)  # type: ignore[arg-type]
    return CaptionModel(cfg)


def _batch(vocab: Vocabulary, feats: list[torch.Tensor], caps: list[str]) -> CaptionBatch:
    from vidseq.tasks.caption.task import collate

    items = [(f, vocab.encode(c), f"clip{i}") for i, (f, c) in enumerate(zip(feats, caps))]
    return collate(items)


def test_forward_shapes_and_masked_loss() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    torch.manual_seed(0)
    model = _tiny(len(vocab), aux_dim=4, feature_dim=4)
    feats = [torch.randn(t, 8) for t in (5, 9, 3, 7)]
    batch = _batch(vocab, feats, CAPTIONS)
    logits, loss = model(batch)
    assert logits.shape == (4, batch.tokens.shape[1] - 1, len(vocab))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


def test_padding_does_not_change_results() -> None:
    """Packed encoder + masked attention: a clip decodes the same alone and padded inside a batch."""
    vocab = Vocabulary.build(CAPTIONS)
    torch.manual_seed(1)
    model = _tiny(len(vocab)).eval()
    short = torch.randn(1, 3, 8)
    long = torch.randn(1, 9, 8)
    padded = torch.zeros(2, 9, 8)
    padded[0, :3] = short[0]
    padded[1] = long[0]
    lengths = torch.tensor([3, 9])
    mem_b = model.encode(padded, lengths)
    mem_a = model.encode(short, torch.tensor([3]))
    assert torch.allclose(mem_b.init[0][:, :1], mem_a.init[0], atol=1e-6)
    cfg = DecodeConfig(beam_size=3, max_len=8)
    assert generate(model, padded, lengths, cfg)[0].tokens == generate(model, short, torch.tensor([3]), cfg)[0].tokens


@pytest.mark.parametrize("tie", [False, True])
def test_tiny_model_overfits_to_exact_captions(tie: bool) -> None:
    vocab = Vocabulary.build(CAPTIONS)
    torch.manual_seed(0)
    model = _tiny(len(vocab), tie_embeddings=tie, scheduled_sampling=0.1)
    if tie:
        assert model.out.weight is model.embed.weight
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(t, 8, generator=g) for t in (6, 4, 8, 5)]
    batch = _batch(vocab, feats, CAPTIONS)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    model.train()
    for _ in range(40):
        opt.zero_grad()
        _, loss = model(batch)
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    for beam in (1, 3):
        hyps = generate(model, batch.features, batch.lengths, DecodeConfig(beam_size=beam, max_len=12))
        assert [vocab.decode(h.tokens) for h in hyps] == CAPTIONS
        assert all(h.finished for h in hyps)


def test_feature_dropout_hides_backbone_part_in_training_only() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    torch.manual_seed(0)
    model = _tiny(len(vocab), feature_dim=6, aux_dim=2, feature_dropout=0.5)
    x = torch.randn(8, 5, 8)
    hidden = x.clone()
    hidden[..., :6] = 0.0  # the training mean (input stats are 0/1 here)
    lengths = torch.full((8,), 5)
    model.train()
    torch.manual_seed(3)
    keep = torch.rand(8, 1, 1) >= 0.5  # the draw encode() makes with the same seed
    torch.manual_seed(3)
    got = model.encode(x, lengths).states
    want = model.encode(torch.where(keep, x, hidden), lengths).states
    assert 0 < int(keep.sum()) < 8
    # rows whose backbone part was dropped match the hidden input (dropout off: dropout=0.0 in _tiny)
    assert torch.allclose(got[~keep[:, 0, 0]], want[~keep[:, 0, 0]], atol=1e-6)
    model.eval()
    assert not torch.allclose(model.encode(x, lengths).states, model.encode(hidden, lengths).states)


def test_bad_inputs_are_rejected_clearly() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    model = _tiny(len(vocab)).eval()
    with pytest.raises(InputShapeError, match=r"\(B, T, 8\)"):
        model.encode(torch.randn(2, 5, 7), torch.tensor([5, 5]))
    with pytest.raises(InputShapeError, match="NaN"):
        x = torch.randn(1, 4, 8)
        x[0, 2, 3] = float("nan")
        model.encode(x, torch.tensor([4]))
    with pytest.raises(InputShapeError, match="frames"):
        model.encode(torch.randn(2, 4, 8), torch.tensor([4, 0]))
    with pytest.raises(InputShapeError, match="frames"):
        model.encode(torch.randn(1, 4, 8), torch.tensor([5]))
    with pytest.raises(InputShapeError, match="target tokens"):
        model(CaptionBatch(torch.randn(1, 4, 8), torch.tensor([4])))
    with pytest.raises(ValueError, match="vocab_size"):
        CaptionConfig(feature_dim=8, vocab_size=4)
    with pytest.raises(ValueError, match="scheduled_sampling"):
        CaptionConfig(feature_dim=8, vocab_size=10, scheduled_sampling=1.5)
    with pytest.raises(ValueError, match="vocabulary has"):
        CaptionModel(CaptionConfig(feature_dim=8, vocab_size=10), vocab)


def test_checkpoint_round_trip_keeps_vocab_and_input_stats(tmp_path: Path) -> None:
    from vidseq.train.checkpoint import load_model, save_checkpoint

    vocab = Vocabulary.build(CAPTIONS)
    torch.manual_seed(0)
    model = _tiny(len(vocab))
    model.vocab = vocab
    model.set_input_stats(torch.arange(8.0), torch.full((8,), 2.0))
    path = save_checkpoint(tmp_path / "m.pt", model=model, model_name="caption_s2vt",
                           model_config=model.model_config())
    loaded, ckpt = load_model(path)
    assert isinstance(loaded, CaptionModel)
    assert loaded.vocab == vocab and loaded.vocab.tokens == vocab.tokens
    assert torch.equal(loaded.input_mean, torch.arange(8.0))
    x = torch.randn(2, 5, 8)
    lengths = torch.tensor([5, 2])
    cfg = DecodeConfig(beam_size=2, max_len=6)
    model.eval()
    assert [h.tokens for h in generate(loaded, x, lengths, cfg)] == [h.tokens for h in generate(model, x, lengths, cfg)]
    assert isinstance(build_model(json.loads(json.dumps(model.model_config()))), CaptionModel)


# ---------------------------------------------------------------------------------------------- metrics


def test_metrics_perfect_and_wrong_captions() -> None:
    from vidseq.tasks.caption.metrics import caption_metrics

    refs = {f"c{i}": [c, c.replace("moves", "goes")] for i, c in enumerate(CAPTIONS)}
    perfect = caption_metrics(refs, {k: v[0] for k, v in refs.items()}, meteor=False, tokenizer="simple")
    assert perfect["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["rouge_l"] == pytest.approx(1.0)
    assert perfect["cider"] > 1.0
    assert perfect["meteor"] is None and "not computed" in perfect["meteor_status"]
    wrong = caption_metrics(refs, {k: "the scene is empty" for k in refs}, meteor=False, tokenizer="simple")
    assert wrong["bleu4"] < 0.01 and wrong["cider"] < 0.1
    empty = caption_metrics(refs, {k: "" for k in refs}, meteor=False, tokenizer="simple")
    assert empty["bleu1"] == pytest.approx(0.0, abs=1e-6)


def test_metrics_bad_inputs() -> None:
    from vidseq.tasks.caption.metrics import caption_metrics

    with pytest.raises(CaptionError, match="different clips"):
        caption_metrics({"a": ["x y"]}, {"b": "x y"}, meteor=False)
    with pytest.raises(CaptionError, match="no reference"):
        caption_metrics({"a": []}, {"a": "x"}, meteor=False)
    with pytest.raises(CaptionError, match="no clips"):
        caption_metrics({}, {}, meteor=False)


@pytest.mark.slow
def test_meteor_with_java_or_reported_unavailable() -> None:
    """METEOR runs pycocoevalcap's jar when java exists; otherwise it is None with a reason (never a number)."""
    from vidseq.tasks.caption.metrics import caption_metrics, java_available

    refs = {"a": ["a red circle moves left"], "b": ["a blue square moves right"]}
    out = caption_metrics(refs, {"a": "a red circle moves left", "b": "a green square moves up"}, meteor=True)
    if java_available():
        assert out["meteor_status"].startswith("ok")
        assert 0.0 < out["meteor"] < 1.0
    else:
        assert out["meteor"] is None and out["meteor_status"].startswith("unavailable")


# ---------------------------------------------------------------------------------------------- object features


def _scene(n: int = 12, stop_at: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """A red 10x10 square moving right 4 px/frame over a grey textured background (BGR)."""
    rng = np.random.default_rng(0)
    bg = (np.full((60, 80, 3), 90) + rng.integers(-6, 7, (60, 80, 3))).astype(np.uint8)
    frames, xs = [], []
    for t in range(n):
        x = 5 + 4 * (min(t, stop_at) if stop_at is not None else t)
        img = bg.copy()
        img[20:30, x:x + 10] = (30, 30, 220)
        frames.append(img)
        xs.append(x)
    return frames, np.array(xs, np.float64)


def test_object_features_from_boxes() -> None:
    from vidseq.tasks.caption.objects import OBJECT_FIELDS, ObjectBoxes, object_features

    frames, xs = _scene()
    n = len(frames)
    boxes = ObjectBoxes(np.arange(n), np.ones(n, np.int64), np.stack([xs, np.full(n, 20.0), np.full(n, 10.0),
                                                                      np.full(n, 10.0)], 1))
    f = object_features(frames, np.arange(n), boxes, fps=10.0, max_objects=2).reshape(n, 2, len(OBJECT_FIELDS))
    col = {k: i for i, k in enumerate(OBJECT_FIELDS)}
    assert np.all(f[:, 0, col["present"]] == 1.0) and np.all(f[:, 1] == 0.0)
    assert f[3, 0, col["cx"]] == pytest.approx((xs[3] + 5) / 80)
    assert np.allclose(f[1:, 0, col["vx"]], 4 * 10 / 80)  # 4 px/frame at 10 fps, in widths/s
    assert f[0, 0, col["vx"]] == 0.0
    assert f[5, 0, col["r"]] > 0.8 and f[5, 0, col["b"]] < 0.2  # red in BGR
    assert f[5, 0, col["fill"]] > 0.9


def test_moving_regions_follow_an_object_that_stops() -> None:
    from vidseq.tasks.caption.objects import moving_regions

    frames, xs = _scene(n=16, stop_at=6)
    boxes = moving_regions(frames, np.arange(16))
    assert set(boxes.track_id.tolist()) == {0}
    assert boxes.frame.tolist() == list(range(16))  # found in every frame, also while it rests
    assert np.allclose(boxes.xywh[:, 0], xs, atol=1.0)


def test_clip_encoder_objects_only_and_windows(tiny_video: Path, tmp_path: Path) -> None:
    from vidseq.tasks.caption.inputs import (
        CaptionFeatureConfig,
        ClipEncoder,
        uniform_indices,
    )

    assert uniform_indices(10, 4).tolist() == [1, 3, 6, 8]
    assert uniform_indices(3, 8).tolist() == [0, 1, 2]
    enc = ClipEncoder(CaptionFeatureConfig(backbone="none", max_frames=5, max_objects=1))
    assert enc.input_dim == 12 and enc.feature_dim == 0
    x = enc.encode_clip(tiny_video, cache_dir=tmp_path / "cache")
    assert x.features.shape == (5, 12) and x.frame_index.tolist() == [1, 3, 6, 8, 10]
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    again = enc.encode_clip(tiny_video, cache_dir=tmp_path / "cache")
    assert np.array_equal(again.features, x.features)
    windows = list(enc.encode_windows(tiny_video, 0.5))  # 12 frames at 10 fps: 0.5 s windows
    assert [(round(a, 2), round(b, 2)) for a, b, _ in windows] == [(0.0, 0.5), (0.5, 1.0), (1.0, 1.2)]
    assert [w[2].features.shape[0] for w in windows] == [5, 5, 2]
    with pytest.raises(ConfigError):
        CaptionFeatureConfig(backbone="none", objects="none")


def test_retrieval_baseline_returns_nearest_training_caption() -> None:
    from vidseq.tasks.caption.task import ClipRecord, retrieval_captions

    train = [ClipRecord("a", "train", np.zeros((4, 3), np.float32), ["zero"]),
             ClipRecord("b", "train", np.full((6, 3), 5.0, np.float32), ["five", "5"])]
    query = [ClipRecord("q1", "test", np.full((2, 3), 4.0, np.float32), ["x"]),
             ClipRecord("q2", "test", np.full((3, 3), 1.0, np.float32), ["y"])]
    assert retrieval_captions(train, query, np.zeros(3), np.ones(3)) == {"q1": "five", "q2": "zero"}


def test_caption_config_file_loads() -> None:
    from vidseq.config import CONFIG_DIR, load_config
    from vidseq.tasks.caption.task import CaptionTaskConfig

    cfg = load_config(CaptionTaskConfig, CONFIG_DIR / "caption.yaml")
    assert cfg.train.monitor == "val_cider" and cfg.train.mode == "max"
    with pytest.raises(ConfigError, match="did you mean"):
        load_config(CaptionTaskConfig, CONFIG_DIR / "caption.yaml", ["decode.beam_sise=2"])


def test_collate_pads_tokens_and_frames() -> None:
    from vidseq.tasks.caption.task import collate

    vocab = Vocabulary.build(CAPTIONS)
    batch = collate([(torch.ones(3, 2), vocab.encode("a red circle"), "x"),
                     (torch.ones(5, 2), vocab.encode("a blue square moves right"), "y")])
    assert batch.features.shape == (2, 5, 2) and batch.lengths.tolist() == [3, 5]
    assert batch.features[0, 3:].abs().sum() == 0
    assert batch.tokens.shape == (2, 7) and batch.tokens[0, 5:].tolist() == [PAD_ID, PAD_ID]
    assert batch.clip_ids == ["x", "y"]
