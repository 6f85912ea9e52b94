"""`vidseq score`: per-frame CSV + events JSON, unsupervised mode, clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_video

from vidseq.cli import main
from vidseq.features.motion import MotionConfig
from vidseq.models.anomaly.fit import fit_anomaly_model
from vidseq.models.anomaly.model import AnomalyConfig
from vidseq.tasks.anomaly.features import extract_clip_features
from vidseq.tasks.anomaly.online import MIN_WARMUP_FRAMES
from vidseq.train.checkpoint import save_checkpoint

CFG = AnomalyConfig(streams=("speed", "objects"), motion=MotionConfig(width=0))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("score")
    clips = [extract_clip_features(write_video(d / f"n{i}.avi", n_frames=14), CFG) for i in range(2)]
    model, cal, info = fit_anomaly_model(CFG, clips[:1], clips[1:])
    return save_checkpoint(d / "model.pt", model=model, model_name="anomaly_fusion",
                           model_config=model.model_config(), extra={"calibration": cal.to_dict(), "fit": info})


def test_score_writes_csv_and_events(checkpoint: Path, tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", n_frames=16)
    out = tmp_path / "out"
    assert main(["-q", "score", str(video), "--model", str(checkpoint), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "clip_scores.csv").open()))
    assert list(rows[0]) == ["frame_index", "timestamp_s", "score", "is_anomaly"]
    assert [int(r["frame_index"]) for r in rows] == list(range(16))
    assert all(np.isfinite(float(r["score"])) and r["is_anomaly"] in ("0", "1") for r in rows)
    doc = json.loads((out / "clip_events.json").read_text())
    assert doc["mode"] == "trained" and doc["frames"] == 16 and isinstance(doc["events"], list)
    assert doc["threshold"] >= doc["low_threshold"]
    assert not list(out.glob(".*part*"))  # no temp files left behind


def test_unsupervised_mode_is_labelled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "u.avi", n_frames=16)
    assert main(["-q", "score", str(video), "--unsupervised", "--fit-seconds", "1", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "u_events.json").read_text())
    assert doc["mode"] == "unsupervised-online-1s" and "unsupervised" in doc["info"]["note"]
    assert "UNSUPERVISED" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "u_scores.csv").open()))
    # the warm-up (1 s, and at least MIN_WARMUP_FRAMES frames) is learnt, not scored
    assert [int(r["frame_index"]) for r in rows] == list(range(max(10, MIN_WARMUP_FRAMES), 16))
    assert doc["info"]["normality"]["state"] == "scoring" and doc["threshold"] is not None


def test_unsupervised_clip_shorter_than_the_warmup_says_nothing_was_scored(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default warm-up (the same as process and monitor) is longer than this clip: no rows, and why."""
    video = write_video(tmp_path / "s.avi", n_frames=16)
    assert main(["-q", "score", str(video), "--unsupervised", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "s_events.json").read_text())
    assert doc["threshold"] is None and doc["events"] == [] and doc["frames"] == 0
    assert "nothing scored" in doc["info"]["not_scored"] and "60 s" in doc["info"]["not_scored"]
    assert "nothing scored" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--fit-seconds", "--false-alarms-per-hour"])
def test_non_positive_durations_are_one_line_errors(flag: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "z.avi", n_frames=4)
    assert main(["score", str(video), "--unsupervised", flag, "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidseq score: error:") and flag in err and "\n" not in err


@pytest.mark.parametrize("case", ["no_model_flag", "both", "empty", "other_size", "bad_ckpt"])
def test_errors_are_one_line(case: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "v.avi", n_frames=6)
    args = ["score", str(video), "--model", str(checkpoint), "--out", str(tmp_path / "o")]
    if case == "no_model_flag":
        args = ["score", str(video)]
    elif case == "both":
        args.append("--unsupervised")
    elif case == "empty":
        empty = tmp_path / "empty"
        empty.mkdir()
        args[1] = str(empty)
    elif case == "other_size":
        args[1] = str(write_video(tmp_path / "big.avi", n_frames=6, size=(128, 96)))
    elif case == "bad_ckpt":
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"not a checkpoint")
        args[3] = str(bad)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidseq score: error:") and "\n" not in err
    assert not (tmp_path / "o" / "v_scores.csv").exists()  # nothing half-written
