"""``vidseq caption`` and the caption task through the CLI: captions-csv import -> train -> eval -> caption."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseq.cli import main

SMALL = [  # a tiny, fast configuration (random-init backbone at 32 px, small LSTMs, no java)
    "features.backbone=resnet18", "features.pretrained=false", "features.imgsz=32", "features.max_frames=4",
    "features.max_objects=1", "features.device=cpu", "model.hidden_dim=16", "model.num_layers=1",
    "model.decoder_hidden_dim=16", "model.embed_dim=8", "model.attn_dim=8", "train.epochs=2",
    "train.batch_size=4", "train.tensorboard=false", "train.device=cpu", "meteor=false", "tokenizer=simple",
    "progress=false",
]


def write_square_video(path: Path, colour: tuple[int, int, int], dx: int, n: int = 12) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for t in range(n):
        img = np.full((48, 64, 3), 80, np.uint8)
        x = 8 + dx * t if dx > 0 else 48 + dx * t
        img[18:28, x:x + 8] = colour
        writer.write(img)
    writer.release()
    return path


def make_caption_model(path: Path, feature_cfg: dict | None = None) -> Path:
    """A random caption checkpoint with object-only inputs (no training, no backbone)."""
    from vidseq.config import to_dict
    from vidseq.models.caption.model import CaptionConfig, CaptionModel
    from vidseq.models.caption.vocab import Vocabulary
    from vidseq.tasks.caption.inputs import CaptionFeatureConfig
    from vidseq.tasks.caption.task import CaptionTaskConfig
    from vidseq.train.checkpoint import save_checkpoint

    feats = CaptionFeatureConfig(**(feature_cfg or {"backbone": "none", "max_frames": 4, "max_objects": 1}))
    vocab = Vocabulary.build(["a red square moves left", "a blue square moves right"])
    torch.manual_seed(0)
    model = CaptionModel(CaptionConfig(feature_dim=feats.aux_dim, vocab_size=len(vocab), hidden_dim=8,
                                       num_layers=1, decoder_hidden_dim=8, embed_dim=8, attn_dim=8, max_len=6), vocab)
    cfg = CaptionTaskConfig(features=feats)
    return save_checkpoint(path, model=model, model_name="caption_s2vt", model_config=model.model_config(),
                           config=to_dict(cfg))


def test_caption_prints_windows_and_writes_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = write_square_video(tmp_path / "v.avi", (0, 0, 220), 4, n=25)  # 2.5 s at 10 fps
    ckpt = make_caption_model(tmp_path / "m.pt")
    assert main(["caption", str(video), "--model", str(ckpt)]) == 0
    whole = capsys.readouterr().out.strip().splitlines()
    assert len(whole) == 1 and whole[0]
    assert main(["caption", str(video), "--model", str(ckpt), "--window-s", "1", "--beam", "1",
                 "--out", str(tmp_path / "o")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("[")
    rows = [json.loads(x) for x in (tmp_path / "o" / "captions.jsonl").read_text().splitlines()]
    assert [(r["start_s"], r["end_s"]) for r in rows] == [(0.0, 1.0), (1.0, 2.0), (2.0, 2.5)]
    assert all(set(r) >= {"video", "caption", "logprob", "frames"} for r in rows)
    assert [r["frames"] for r in rows] == [4, 4, 4]
    assert main(["caption", str(video), "--model", str(ckpt), "--out", str(tmp_path / "x.jsonl")]) == 0
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 1


def test_caption_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vidseq.train.checkpoint import save_checkpoint

    video = write_square_video(tmp_path / "v.avi", (0, 0, 220), 4)
    ckpt = make_caption_model(tmp_path / "m.pt")
    assert main(["caption", str(tmp_path / "missing.avi"), "--model", str(ckpt)]) == 2
    assert "video not found" in capsys.readouterr().err
    assert main(["caption", str(video), "--model", str(tmp_path / "nope.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["caption", str(video), "--model", str(ckpt), "--beam", "0"]) == 2
    assert "--beam" in capsys.readouterr().err
    assert main(["caption", str(video), "--model", str(ckpt), "--window-s", "-1"]) == 2
    other = save_checkpoint(tmp_path / "other.pt", model=torch.nn.Linear(2, 2), model_name="caption_s2vt",
                            model_config={"model": {"feature_dim": 2, "vocab_size": 9}})
    assert main(["caption", str(video), "--model", str(other)]) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.slow
def test_captions_csv_import_train_eval_caption(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An MSVD-style CSV + videos folder -> vidseq dataset -> train 2 epochs -> eval --json -> caption."""
    src = tmp_path / "msvd"
    (src / "videos").mkdir(parents=True)
    combos = [("red", (0, 0, 220), 4, "right"), ("blue", (220, 0, 0), -4, "left"),
              ("red", (0, 0, 220), -4, "left"), ("blue", (220, 0, 0), 4, "right")]
    rows = []
    for i in range(8):
        name, colour, dx, word = combos[i % 4]
        write_square_video(src / "videos" / f"vid{i}.avi", colour, dx)
        rows += [{"VideoID": f"vid{i}", "Language": "English", "Description": f"A {name} square moves {word}."},
                 {"VideoID": f"vid{i}", "Language": "English", "Description": f"the {name} box goes {word}"},
                 {"VideoID": f"vid{i}", "Language": "German", "Description": "ein quadrat"}]
    with open(src / "captions.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["VideoID", "Language", "Description"])
        writer.writeheader()
        writer.writerows(rows)
    ds = tmp_path / "ds"
    assert main(["data", "import", "captions-csv", str(src / "captions.csv"), str(ds), "--val-fraction", "0.25",
                 "--test-fraction", "0.25"]) == 0
    run = tmp_path / "run"
    assert main(["train", "caption", "--data", str(ds), "--out", str(run), "--set", *SMALL,
                 "--json", str(tmp_path / "train.json")]) == 0
    train_metrics = json.loads((tmp_path / "train.json").read_text())
    assert train_metrics["split"] == "test" and train_metrics["n_clips"] == 2
    assert 0.0 <= train_metrics["bleu4"] <= 1.0 and train_metrics["meteor"] is None
    ck = torch.load(run / "best.pt", weights_only=True)
    assert ck["model_name"] == "caption_s2vt"
    assert "square" in ck["model_config"]["vocab"]["tokens"] and "quadrat" not in ck["model_config"]["vocab"]["tokens"]
    assert ck["metadata"]["inputs"]["backbone"]["weights"]["pretrained"] is False
    hyps = [json.loads(x) for x in (run / "captions_test.jsonl").read_text().splitlines()]
    assert len(hyps) == 2 and all(h["references"] for h in hyps)
    capsys.readouterr()

    assert main(["eval", "caption", "--model", str(run / "best.pt"), "--data", str(ds), "--json",
                 str(tmp_path / "eval.json"), "--set", "decode.beam_size=1", "eval_split=val"]) == 0
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["split"] == "val" and ev["beam_size"] == 1 and "cider" in ev
    assert main(["eval", "caption", "--model", str(run / "best.pt"), "--data", str(ds),
                 "--set", "features.imgsz=64"]) == 2
    assert "would change the model's inputs" in capsys.readouterr().err

    assert main(["caption", str(src / "videos" / "vid0.avi"), "--model", str(run / "best.pt")]) == 0
    assert capsys.readouterr().out.strip()
