"""The pipeline on the runtimes: heads beside the detector, the per-stage profile, runtime/input in summary.json."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from vidseq.config import load_config
from vidseq.features import runtime as rt
from vidseq.pipeline import FrameProcessor, ProcessConfig, process_video
from vidseq.video.sources import open_source


class _SpyHead:
    """Records the thread each step ran on and whether the frame's detections were filled in by then."""

    delay_frames = 0

    def __init__(self, name: str) -> None:
        self.name = name
        self.threads: list[str] = []

    def step(self, result: Any, proc: Any) -> None:
        self.threads.append(threading.current_thread().name)

    def describe(self) -> dict[str, Any]:
        return {}

    def finish(self, ctx: Any) -> None:  # the StreamHead protocol
        return None


@pytest.mark.parametrize("concurrent", [True, False])
def test_frame_only_heads_run_beside_the_detector(tiny_video: Path, concurrent: bool) -> None:
    cfg = load_config(ProcessConfig, None, ["runtime=torch", f"concurrent_heads={concurrent}"])
    anomaly, other = _SpyHead("anomaly"), _SpyHead("trajectory")
    proc = FrameProcessor(cfg, 10.0, heads=[anomaly, other])
    with open_source(tiny_video, max_frames=3) as src:
        for frame in src:
            proc.step(frame)
    proc.finish()
    main = threading.current_thread().name
    assert all(t == main for t in other.threads)  # reads tracks: after the detector, on this thread
    assert len(anomaly.threads) == 3
    assert all((t != main) == concurrent for t in anomaly.threads)
    prof = proc.profile(3)
    assert {"detector", "anomaly", "trajectory"} <= set(prof)


def test_concurrent_heads_give_identical_outputs(tmp_path: Path, make_video: Any) -> None:
    tiny_video = make_video(tmp_path / "short.avi", n_frames=40)  # enough frames for the 0.5 s warm-up's threshold
    outs = {}
    for concurrent in (True, False):
        cfg = load_config(ProcessConfig, None, ["runtime=torch", "anomaly.fit_s=0.5", "video=false", "plot=false",
                                                f"concurrent_heads={concurrent}"])
        res = process_video(tiny_video, tmp_path / str(concurrent), cfg, progress=False)
        outs[concurrent] = (res.out_dir / "frames.csv").read_text()
        prof = res.summary["profile"]
        assert {"detector", "anomaly", "decode"} <= set(prof)
        assert abs(sum(v["share"] for v in prof.values()) - 1.0) < 0.01
    assert outs[True] == outs[False]
    assert any(line.split(",")[2] for line in outs[True].splitlines()[1:])  # frames were scored


@pytest.mark.skipif(rt.openvino_version() is None, reason="openvino not installed")
def test_summary_records_runtime_export_and_input(tmp_path: Path, tiny_video: Path) -> None:
    cfg = load_config(ProcessConfig, None, ["runtime=openvino", "precision=fp32", "video=false", "plot=false",
                                            "anomaly.enabled=false"])
    res = process_video(tiny_video, tmp_path / "ov", cfg, progress=False)
    s = json.loads((res.out_dir / "summary.json").read_text())
    d = s["detector"]
    assert (d["runtime"], d["precision"]) == ("openvino", "fp32")
    assert d["network_input"] == {"height": 64, "width": 96}  # the 96x64 video is not upscaled to 640
    assert d["export"]["input_shape"] == [1, 3, 64, 96] and "cache_hit" in d["export"]
    assert s["backbone"]["runtime"] == "openvino"
