"""``--runtime`` / ``--precision`` on the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidseq.cli import main
from vidseq.features import runtime as rt
from vidseq.features.extractor import load_features


@pytest.mark.skipif(rt.openvino_version() is None, reason="openvino not installed")
def test_extract_on_both_runtimes(tmp_path: Path, tiny_video: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--backbone", "mobilenet_v2", "--imgsz", "64", "--no-progress"]
    assert main(["extract", str(tiny_video), "--out", str(tmp_path / "t"), "--runtime", "torch", *common]) == 0
    assert main(["extract", str(tiny_video), "--out", str(tmp_path / "o"), "--runtime", "openvino",
                 "--precision", "fp32", *common]) == 0
    assert "runtime openvino fp32" in capsys.readouterr().err
    t, o = load_features(tmp_path / "t" / "tiny.npz"), load_features(tmp_path / "o" / "tiny.npz")
    assert (t.meta["runtime"], o.meta["runtime"]) == ("torch", "openvino")
    assert t.meta["export"] is None and o.meta["export"]["input_shape"] == [-1, 3, 64, 64]
    cos = (t.features * o.features).sum(1) / np.linalg.norm(t.features, axis=1) / np.linalg.norm(o.features, axis=1)
    assert cos.min() >= 0.9999


@pytest.mark.parametrize("argv,message", [
    (["--runtime", "openvino", "--device", "cuda"], "CUDA is not available|CPU only"),
    (["--runtime", "torch", "--precision", "bf16"], "needs runtime 'openvino'"),
])
def test_bad_runtime_choices_are_one_clear_line(tmp_path: Path, tiny_video: Path, capsys: pytest.CaptureFixture[str],
                                                argv: list[str], message: str) -> None:
    import re

    rc = main(["process", str(tiny_video), "--out", str(tmp_path / "p"), "--no-progress", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("vidseq process: error:") and re.search(message, err[-1])
    assert not (tmp_path / "p" / "tiny" / "summary.json").exists()
