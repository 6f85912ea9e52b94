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
    for concurrent, lag in ((True, 0), (True, 3), (False, 0)):
        cfg = load_config(ProcessConfig, None, ["runtime=torch", "anomaly.fit_s=0.5", "video=false", "plot=false",
                                                f"concurrent_heads={concurrent}", f"heads_lag_frames={lag}"])
        res = process_video(tiny_video, tmp_path / f"{concurrent}-{lag}", cfg, progress=False)
        outs[concurrent, lag] = (res.out_dir / "frames.csv").read_text()
        prof = res.summary["profile"]
        assert {"detector", "anomaly", "decode"} <= set(prof)
        assert abs(sum(v["share"] for v in prof.values()) - 1.0) < 0.01
    assert outs[True, 0] == outs[False, 0] == outs[True, 3]
    assert any(line.split(",")[2] for line in outs[True, 0].splitlines()[1:])  # frames were scored


class _SlowHead(_SpyHead):
    """A side head whose steps wait for the test's go-ahead, then mark the frame it stepped on."""

    def __init__(self) -> None:
        super().__init__("anomaly")
        self.go = threading.Event()
        self.done: list[int] = []

    def step(self, result: Any, proc: Any) -> None:
        assert self.go.wait(30)
        result.anomaly_score = float(result.frame.frame_index)
        self.done.append(result.frame.frame_index)


def test_the_side_head_may_run_behind_and_its_results_wait_for_it(tiny_video: Path) -> None:
    cfg = load_config(ProcessConfig, None, ["runtime=torch", "heads_lag_frames=2"])
    head = _SlowHead()
    proc = FrameProcessor(cfg, 10.0, heads=[head])
    with open_source(tiny_video, max_frames=4) as src:
        frames = list(src)
    # two frames go through the detector while the head has not finished the first: nothing is handed out
    assert proc.step(frames[0]) == [] and proc.step(frames[1]) == []
    assert head.done == []
    head.go.set()
    out = proc.step(frames[2])  # waits for frame 0's step only, and hands out what the head has finished
    out += proc.step(frames[3]) + proc.finish()
    assert [r.frame.frame_index for r in out] == [f.frame_index for f in frames]
    assert all(r.anomaly_score == float(r.frame.frame_index) for r in out)  # every result carries its head output
    assert head.done == [f.frame_index for f in frames]


def test_by_default_the_lag_is_what_the_head_asks_for(tiny_video: Path) -> None:
    head = _SlowHead()
    head.lag_frames = 2  # type: ignore[attr-defined]
    proc = FrameProcessor(load_config(ProcessConfig, None, ["runtime=torch"]), 10.0, heads=[head])
    with open_source(tiny_video, max_frames=3) as src:
        frames = list(src)
    assert proc.step(frames[0]) == [] and proc.step(frames[1]) == []  # the head is still on frame 0
    head.go.set()
    out = proc.step(frames[2]) + proc.finish()
    assert [r.frame.frame_index for r in out] == [f.frame_index for f in frames]
    # the anomaly head asks for 2 x (its analysis stride - 1): 2 on a 25 fps source (every other frame analysed),
    # 0 at 10 fps (every frame analysed: nothing held back)
    for fps, lag in ((25.0, 2), (10.0, 0)):
        p = FrameProcessor(load_config(ProcessConfig, None, ["runtime=torch"]), fps)
        anomaly = p.head("anomaly")
        assert anomaly is not None and anomaly.lag_frames == lag  # type: ignore[attr-defined]
        p.close()


def test_a_side_head_error_is_raised_by_a_later_step_or_finish(tiny_video: Path) -> None:
    class Broken(_SpyHead):
        def step(self, result: Any, proc: Any) -> None:
            raise RuntimeError("head broke")

    cfg = load_config(ProcessConfig, None, ["runtime=torch", "heads_lag_frames=2"])
    proc = FrameProcessor(cfg, 10.0, heads=[Broken("anomaly")])
    with open_source(tiny_video, max_frames=1) as src:
        frame = next(iter(src))
    proc.step(frame)  # the error is still in the worker's future
    with pytest.raises(RuntimeError, match="head broke"):
        proc.finish()
    proc.close()  # idempotent after an error


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


@pytest.mark.skipif(rt.openvino_version() is None, reason="openvino not installed")
@pytest.mark.parametrize("runtime", ["openvino", "torch"])
def test_torch_runs_single_threaded_beside_openvino_networks(tiny_video: Path, runtime: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv("VIDSEQ_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = load_config(ProcessConfig, None, [f"runtime={runtime}", "precision=fp32", "anomaly.enabled=false"])
        proc = FrameProcessor(cfg, 10.0)
        # openvino: PyTorch's small ops (NMS, pooling) on one thread while the processor runs, the networks on 2
        assert torch.get_num_threads() == (1 if runtime == "openvino" else 2)
        assert rt.num_threads() == 2
        with open_source(tiny_video, max_frames=2) as src:
            for frame in src:
                proc.step(frame)
        proc.finish()
        assert torch.get_num_threads() == 2  # restored by close()
    finally:
        torch.set_num_threads(before)
