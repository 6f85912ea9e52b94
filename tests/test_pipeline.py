from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from vidseq.cli import main
from vidseq.config import load_config
from vidseq.errors import OutputError
from vidseq.pipeline import ProcessConfig, process_video

# random-init YOLOv8n: no weights needed, exercises every stage and every output file
FAST = ["backbone_weights=yolov8n.yaml", "tracker.imgsz=128", "trajectory.model=null"]


def fast_cfg(**extra: object) -> ProcessConfig:
    return load_config(ProcessConfig, None, [*FAST, *(f"{k}={v}" for k, v in extra.items())])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_process_writes_every_output(tmp_path: Path, make_video) -> None:
    video = make_video(tmp_path / "v.avi", n_frames=15, size=(96, 64), fps=10.0)
    res = process_video(video, tmp_path / "out", fast_cfg(), progress=False)
    out = res.out_dir
    for name in ("frames.csv", "tracks.csv", "forecasts.jsonl", "events.json", "captions.jsonl", "summary.json",
                 "annotated.mp4", "anomaly.png"):
        assert (out / name).is_file(), name
    rows = read_csv(out / "frames.csv")
    assert [int(r["frame_index"]) for r in rows] == list(range(15))
    assert list(rows[0]) == ["frame_index", "timestamp_s", "anomaly_score", "is_anomaly", "n_objects"]
    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 15
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["frames"] == 15
    assert summary["detector"]["weights"]["pretrained"] is False
    assert summary["heads"]["trajectory"]["forecaster"] == "constant velocity"
    assert json.loads((out / "events.json").read_text())["events"] == []


def test_rerun_skips_then_force(tmp_path: Path, make_video) -> None:
    video = make_video(tmp_path / "v.avi", n_frames=5)
    cfg = fast_cfg()
    assert process_video(video, tmp_path / "o", cfg, progress=False).status == "complete"
    assert process_video(video, tmp_path / "o", cfg, progress=False).status == "skipped"
    assert process_video(video, tmp_path / "o", cfg, force=True, progress=False).status == "complete"
    other = fast_cfg(max_frames=3)
    with pytest.raises(OutputError, match=r"other settings \(max_frames: None -> 3\).*--force"):
        process_video(video, tmp_path / "o", other, progress=False)  # a complete result is never lost silently
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["frames"] == 5
    res = process_video(video, tmp_path / "o", other, force=True, progress=False)
    assert res.status == "complete" and res.frames == 3


def test_cli_process_and_bad_input(tmp_path: Path, make_video, capsys: pytest.CaptureFixture[str]) -> None:
    video = make_video(tmp_path / "clip.avi", n_frames=4)
    args = ["process", str(video), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*args, *sum((["--set", s] for s in FAST), [])]) == 0
    assert (tmp_path / "o" / "clip" / "summary.json").is_file()
    assert (tmp_path / "o" / "process_config.yaml").is_file()
    assert main(["process", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vidseq process: error: video not found")
    assert not (tmp_path / "o2").exists()


@pytest.mark.slow
def test_sigkill_then_rerun(tmp_path: Path, make_video) -> None:
    """A run killed mid-way leaves its valid, incomplete files only in a hidden staging folder (nothing at the
    final path); the re-run removes it and completes."""
    video = make_video(tmp_path / "long.avi", n_frames=400, size=(160, 120), fps=25.0)
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "vidseq", "process", str(video), "--out", str(out), "--no-progress",
           *sum((["--set", s] for s in FAST), [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    summary = out / "long" / "summary.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            staged = list(out.glob(".long.partial.*/summary.json"))
            if staged and json.loads(staged[0].read_text()).get("frames", 0) > 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail("process never reported progress")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "long").exists()  # nothing at the final path looks like a result
    s = json.loads(staged[0].read_text())
    assert s["status"] == "running"  # marked incomplete
    rows = read_csv(staged[0].parent / "frames.csv")  # a valid CSV of the frames done so far
    assert 0 < len(rows) < 400
    assert [int(r["frame_index"]) for r in rows] == list(range(len(rows)))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    s = json.loads(summary.read_text())
    assert s["status"] == "complete" and s["frames"] == 400
    assert len(read_csv(out / "long" / "frames.csv")) == 400
    assert not list(out.glob(".long.*"))  # the killed run's staging folder and the lock are gone


@pytest.mark.slow
def test_unsupervised_anomaly_flags_injected_speed_anomaly(tmp_path: Path) -> None:
    """No trained model: normality from the first seconds, then the injected wrong-speed object is flagged."""
    import numpy as np

    from vidseq.sequences.manifest import load_dataset
    from vidseq.sequences.synth import SynthConfig, generate_dataset

    ds_dir = tmp_path / "syn"
    generate_dataset(ds_dir, SynthConfig(clips=6, seed=1))
    clip = next(c for c in load_dataset(ds_dir).clips if c.split == "test" and c.load_labels().any())
    y = clip.load_labels()
    res = process_video(clip.path, tmp_path / "o", fast_cfg(**{"anomaly.fit_s": 2.5}), progress=False)
    rows = read_csv(res.out_dir / "frames.csv")
    assert len(rows) == len(y)
    s = np.array([float(r["anomaly_score"]) if r["anomaly_score"] else np.nan for r in rows])
    scored = ~np.isnan(s)
    assert scored.sum() >= len(y) // 2 and not scored[:20].any()  # warm-up frames carry no score
    normal, anomalous = s[scored & (y == 0)], s[scored & (y == 1)]
    auc = (anomalous[:, None] > normal[None, :]).mean()
    assert auc > 0.9
    events = json.loads((res.out_dir / "events.json").read_text())["events"]
    assert events and any(e["start_frame"] <= np.flatnonzero(y)[-1] and e["end_frame"] >= np.flatnonzero(y)[0]
                          for e in events)
    assert "unsupervised" in res.summary["heads"]["anomaly"]["mode"]


def test_a_dropped_frame_reaches_the_heads_and_is_not_kept_with_the_results() -> None:
    """A live reader's frame after a drop carries the frame before it (``Frame.previous``) for the anomaly head's
    flow; the results handed out do not hold on to it (a monitor keeps results for its event clips)."""
    import numpy as np

    from vidseq.config import with_overrides
    from vidseq.pipeline import FrameProcessor
    from vidseq.video.sources import Frame

    cfg = with_overrides(ProcessConfig, {"tracker": {"detector": "regions"}, "trajectory": {"enabled": False},
                                         "caption": {"enabled": False}, "video": False, "plot": False}, [])
    proc = FrameProcessor(cfg, 10.0)
    seen: list[bool] = []
    head = next(h for h in proc.heads if h.name == "anomaly")
    step = head.computer.step

    def spy(*args, previous=None, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(previous is not None and previous[1] == args[1] - 1)
        return step(*args, previous=previous, **kw)

    head.computer.step = spy
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(8)]
    out = []
    try:
        for i in range(0, 8, 2):
            before = Frame(images[i - 1], i - 1, (i - 1) / 10) if i else None
            out += proc.step(Frame(images[i], i, i / 10, before))
        out += proc.finish()
    finally:
        proc.close()
    assert seen == [False, True, True, True]
    assert len(out) == 4 and all(r.frame.previous is None for r in out)
