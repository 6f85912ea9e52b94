"""`vidseq data import|validate|synth` end to end (in-process, plus one real subprocess run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_video

from vidseq.cli import main


@pytest.fixture
def ped2_src(tmp_path: Path) -> Path:
    src = tmp_path / "ped2"
    for split, clips in (("train", {"Train001": 4, "Train002": 5}), ("test", {"Test001": 6})):
        (src / split).mkdir(parents=True)
        for name, n in clips.items():
            write_video(src / split / f"{name}.avi", n_frames=n, size=(48, 32))
    (src / "test" / "UCSDped2.m").write_text("TestVideoFile{end+1}.gt_frame = [3:5];\n")
    return src


def test_import_then_validate(ped2_src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dst = tmp_path / "ds" / "ped2"
    assert main(["data", "import", "ucsd-ped2", str(ped2_src), str(dst)]) == 0
    assert "3 clips (2 train, 1 test)" in capsys.readouterr().out
    json_path = tmp_path / "counts.json"
    assert main(["data", "validate", str(dst), "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^train\s+2\s+9\s+9\s+0\s", out, re.M), out
    assert re.search(r"^test\s+1\s+6\s+6\s+3\s", out, re.M), out
    assert re.search(r"^total\s+3\s+15\s+15\s+3\s", out, re.M), out
    import json

    counts = json.loads(json_path.read_text())
    assert counts["splits"]["test"]["anomalous_frames"] == 3
    # importing again without --force is a one-line user error
    assert main(["data", "import", "ucsd-ped2", str(ped2_src), str(dst)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --force" in err[0]
    assert main(["data", "import", "ucsd-ped2", str(ped2_src), str(dst), "--force", "--val-clips", "1",
                 "--link", "copy"]) == 0
    assert "(1 train, 1 val, 1 test)" in capsys.readouterr().out


@pytest.mark.parametrize("case,expected", [
    ("missing", r"dataset.yaml:\d+: clip 'Test001': path: file not found: videos/test/Test001.avi$"),
    ("dotdot", r"dataset.yaml:\d+: clip 'Test001': path: '../Test001.avi' escapes the dataset folder"),
    ("bad_label_row", r"labels.csv:3: clip 'Test001': labels: anomalous must be 0 or 1, got '7'$"),
])
def test_validate_errors_are_one_line(ped2_src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      case: str, expected: str) -> None:
    dst = tmp_path / "ds"
    assert main(["-q", "data", "import", "ucsd-ped2", str(ped2_src), str(dst)]) == 0
    capsys.readouterr()
    manifest = yaml.safe_load((dst / "dataset.yaml").read_text())
    clip = next(c for c in manifest["clips"] if c["id"] == "Test001")
    if case == "missing":
        (dst / clip["path"]).unlink()
    elif case == "dotdot":
        clip["path"] = "../Test001.avi"
    else:
        (dst / "labels.csv").write_text("frame,anomalous\n0,0\n1,7\n2,0\n3,0\n4,0\n5,0\n")
        clip["labels"] = "labels.csv"
    (dst / "dataset.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    assert main(["data", "validate", str(dst)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("vidseq data validate: error: ")
    assert re.search(expected, lines[0]), lines[0]
    assert captured.out == ""


def test_synth_same_seed_same_annotations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--clips", "4", "--seed", "11", "--frames", "24", "--size", "64x48", "--anomaly-rate", "1"]
    assert main(["data", "synth", str(tmp_path / "a"), *args]) == 0
    assert main(["data", "synth", str(tmp_path / "b"), *args]) == 0
    assert "4 clips (2 train, 1 val, 1 test)" in capsys.readouterr().out
    for rel in ["dataset.yaml", *(f"tracks/{p.name}" for p in (tmp_path / "a" / "tracks").iterdir())]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert main(["data", "validate", str(tmp_path / "a")]) == 0
    assert re.search(r"^total\s+4\s+96\s", capsys.readouterr().out, re.M)
    cfg = yaml.safe_load((tmp_path / "a" / "dataset.yaml").read_text())["meta"]["config"]
    assert (cfg["width"], cfg["height"], cfg["frames"], cfg["seed"]) == (64, 48, 24, 11)


def test_synth_options_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    assert main(["data", "synth", str(out), "--clips", "3", "--frames", "20", "--no-video",
                 "--holdout", "red circle left", "--set", "noise=0.5"]) == 0
    meta = yaml.safe_load((out / "dataset.yaml").read_text())["meta"]
    assert meta["config"]["noise"] == 0.5 and meta["config"]["video"] is False
    assert meta["held_out_compositions"] == ["red circle left"]
    capsys.readouterr()
    assert main(["data", "synth", str(tmp_path / "t"), "--set", "nois=1"]) == 2
    assert "unknown config key 'nois' (did you mean 'noise'?)" in capsys.readouterr().err
    assert main(["data", "synth", str(tmp_path / "t"), "--size", "big"]) == 2
    assert "--size must look like 160x120" in capsys.readouterr().err
    assert main(["data", "synth", str(tmp_path / "t"), "--holdout", "pink circle left"]) == 2
    assert "unknown 'pink'" in capsys.readouterr().err


def test_bad_kind_and_bare_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["data", "import", "ucsd", "a", "b"])
    assert exc.value.code == 2
    assert "invalid choice: 'ucsd'" in capsys.readouterr().err
    assert main(["data"]) == 2
    assert "SUBCOMMAND" in capsys.readouterr().out


def test_python_m_vidseq_validate(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "v").mkdir(parents=True)
    write_video(root / "v" / "a.avi", n_frames=5)
    np.savetxt(root / "a.csv", np.c_[np.arange(5), [0, 0, 1, 1, 0]], fmt="%d", delimiter=",")
    (root / "dataset.yaml").write_text(
        "version: 1\nname: sub\nclips:\n  - {id: a, split: test, path: v/a.avi, labels: a.csv}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "vidseq", "data", "validate", str(root)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert re.search(r"^test\s+1\s+5\s+5\s+2\s", res.stdout, re.M), res.stdout
    (root / "a.csv").write_text("0,0\n1,0\n2,1\n3,1\n9,0\n")
    res = subprocess.run([sys.executable, "-m", "vidseq", "data", "validate", str(root)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"vidseq data validate: error: {root}/a.csv:5: clip 'a': labels: expected frame 4 (rows list frames "
        f"0, 1, 2, ... in order), got 9"]
