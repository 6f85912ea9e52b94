from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidseq.cli import main
from vidseq.features.extractor import load_features

FAST = ["--backbone", "resnet18", "--no-pretrained", "--imgsz", "64", "--no-progress"]


def test_extract_end_to_end(tmp_path: Path, tiny_video: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "feats"
    assert main(["extract", str(tiny_video), "--out", str(out), *FAST]) == 0
    seq = load_features(out / "tiny.npz")
    assert seq.features.shape == (12, 512)
    assert (out / "extract_config.yaml").is_file()
    assert "12 frames x 512" in capsys.readouterr().out
    assert main(["extract", str(tiny_video), "--out", str(out), *FAST]) == 0
    assert "cache hit" in capsys.readouterr().out


def test_overrides_and_config_file(tmp_path: Path, tiny_video: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("backbone: resnet18\npretrained: false\nimgsz: 64\nstride: 3\n")
    out = tmp_path / "o"
    assert main(["extract", str(tiny_video), "--out", str(out), "--config", str(cfg), "--set", "feature_dim=32",
                 "--no-progress"]) == 0
    seq = load_features(out / "tiny.npz")
    assert seq.features.shape == (4, 32) and seq.frame_index.tolist() == [0, 3, 6, 9]


def test_folder_of_videos_with_same_stems(tmp_path: Path, make_video) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    make_video(tmp_path / "a" / "clip.avi", n_frames=3)
    make_video(tmp_path / "b" / "clip.avi", n_frames=4)
    out = tmp_path / "o"
    assert main(["extract", str(tmp_path / "a"), str(tmp_path / "b" / "*.avi"), "--out", str(out), *FAST]) == 0
    assert sorted(p.name for p in out.glob("*.npz")) == ["a_clip.npz", "b_clip.npz"]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing.mp4", "video not found"),
        (lambda d: (d / "garbage.mp4").write_bytes(np.random.bytes(3000)) and d / "garbage.mp4", "cannot decode"),
    ],
)
def test_bad_source_one_line_error(tmp_path: Path, make, match: str, capsys: pytest.CaptureFixture[str]) -> None:
    src = make(tmp_path)
    out = tmp_path / "out"
    assert main(["extract", str(src), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and err[0].startswith("vidseq extract: error:")
    assert not out.exists() or not list(out.glob("*.npz"))


def test_unknown_key_and_command(tmp_path: Path, tiny_video: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", str(tiny_video), "--out", str(tmp_path), "--set", "batchsize=3"]) == 2
    assert "did you mean 'batch_size'" in capsys.readouterr().err
    assert main(["extrct", "x"]) == 2
    assert "did you mean 'extract'" in capsys.readouterr().err


def test_console_entry_point(tmp_path: Path, tiny_video: Path) -> None:
    """The real entry point: a subprocess, exit codes and a single error line without traceback."""
    r = subprocess.run([sys.executable, "-m", "vidseq", "extract", str(tmp_path / "nope.mp4"), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "video not found" in r.stderr
