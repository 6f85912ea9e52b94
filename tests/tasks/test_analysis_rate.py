"""The unsupervised head's analysis rate (``anomaly.analysis_fps``): a fast source has every k-th frame analysed,
the frames between take the score before them, and ``process`` and ``score`` analyse the same frames."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alarm_scene import Scene, scene_frames

from vidseq.cli import main
from vidseq.config import load_config
from vidseq.errors import ConfigError
from vidseq.pipeline import ProcessConfig, process_video
from vidseq.tasks.anomaly.online import FrameStride, NormalitySettings, ScoredRow

FAST = ["backbone_weights=yolov8n.yaml", "tracker.imgsz=128", "trajectory.model=null", "caption.enabled=false",
        "video=false", "plot=false"]


def test_frame_stride_analyses_every_kth_frame_and_repeats_its_row() -> None:
    st = FrameStride(25.0, 12.5)
    assert (st.stride, st.fps) == (2, 12.5)
    assert [st.due(i, i / 25) for i in range(5)] == [True, False, True, False, True]
    rows = st.expand([ScoredRow(0, 0.0, 3.0, True, "speed"), ScoredRow(2, 0.08, 1.0, False, None)])
    assert [(r.frame_index, r.timestamp_s, r.score, r.is_anomaly, r.cause) for r in rows] == [
        (0, 0.0, 3.0, True, "speed"), (1, 0.04, 3.0, True, "speed"), (2, 0.08, 1.0, False, None),
        (3, 0.12, 1.0, False, None)]
    assert st.expand([ScoredRow(4, 0.16, 0.5, False)]) == [ScoredRow(4, 0.16, 0.5, False)]  # 5 not seen yet
    # a live reader that dropped frames: the next frame at least `stride` indices on is analysed
    assert st.due(7, 0.28) and not st.due(8, 0.32) and st.due(9, 0.36)
    assert st.due(0, 0.0)  # a source that starts again is analysed from its first frame
    assert FrameStride(10.0, 12.5).stride == 1 and FrameStride(30.0, 12.5).stride == 2
    assert FrameStride(60.0, None).stride == 1 and FrameStride(60.0, 12.5).stride == 4  # never under 12.5 a second
    assert FrameStride(20.0, 12.5).stride == 1 and FrameStride(24.9, 12.5).stride == 1
    many = FrameStride(25.0, 12.5)  # warm-up frames never get a row: what they skipped is not kept forever
    for i in range(4 * FrameStride.KEPT):
        many.due(i, i / 25)
    assert len(many._followers) <= FrameStride.KEPT + 1


@pytest.mark.parametrize("value", [0, -5])
def test_analysis_fps_must_be_positive_or_null(value: float) -> None:
    with pytest.raises(ConfigError, match="analysis_fps"):
        NormalitySettings(analysis_fps=value)
    with pytest.raises(ConfigError, match="analysis_fps"):
        load_config(ProcessConfig, None, [f"anomaly.analysis_fps={value}"])
    assert load_config(ProcessConfig, None, ["anomaly.analysis_fps=null"]).anomaly.analysis_fps is None


def _write(frames: np.ndarray, path: Path, fps: float) -> Path:
    import cv2

    h, w = frames.shape[1:3]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    assert wr.isOpened()
    for f in frames:
        wr.write(f)
    wr.release()
    return path


@pytest.fixture(scope="module")
def fast_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[float, float]]:
    """A 25 fps camera: walkers for 30 s, a fast object at 22-25 s."""
    span = (22.0, 25.0)
    frames = scene_frames(Scene(seconds=30.0, fps=25.0, speed_px=0.6, fast=span, fast_speed_px=3.0, seed=3))
    return _write(frames, tmp_path_factory.mktemp("rate") / "cam25.avi", 25.0), span


def _scores(rows: list[dict[str, str]], key: str) -> np.ndarray:
    return np.array([float(r[key]) if r[key] not in ("", None) else np.nan for r in rows])


def test_a_25fps_camera_is_analysed_at_half_rate_and_process_and_score_agree(
        fast_clip: tuple[Path, tuple[float, float]], tmp_path: Path) -> None:
    video, span = fast_clip
    res = process_video(video, tmp_path / "p", load_config(ProcessConfig, None, [*FAST, "anomaly.fit_s=10"]),
                        progress=False)
    head = res.summary["heads"]["anomaly"]
    assert (head["analysis_stride"], head["analysis_fps"]) == (2, 12.5)
    with open(res.out_dir / "frames.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    s = _scores(rows, "anomaly_score")
    t = np.array([float(r["timestamp_s"]) for r in rows])
    scored = ~np.isnan(s)
    assert len(rows) == 750 and not scored[t < 9.9].any() and scored[(t > 10.5) & (t < 29)].all()
    first = int(np.flatnonzero(scored)[0])
    pairs = s[first:first + 2 * ((len(s) - first - 2) // 2)].reshape(-1, 2)
    pairs = pairs[~np.isnan(pairs).any(1)]
    assert len(pairs) > 200 and (pairs[:, 0] == pairs[:, 1]).all()  # the skipped frame takes the analysed score
    events = json.loads((res.out_dir / "events.json").read_text())["events"]
    assert any(e["start_s"] <= span[1] + 1 and e["end_s"] >= span[0] - 1 for e in events)
    assert not any(e["end_s"] < span[0] - 1 for e in events)  # nothing before the fast object

    out = tmp_path / "s"
    assert main(["-q", "score", str(video), "--unsupervised", "--fit-seconds", "10", "--out", str(out)]) == 0
    with open(out / "cam25_scores.csv", newline="") as fh:
        srows = list(csv.DictReader(fh))
    by_frame = {int(r["frame_index"]): float(r["score"]) for r in srows}
    common = [i for i in range(len(rows)) if scored[i] and i in by_frame]
    assert len(common) >= scored.sum() - 2
    assert np.allclose([s[i] for i in common], [by_frame[i] for i in common], rtol=1e-4, atol=1e-4)
    doc = json.loads((out / "cam25_events.json").read_text())
    assert doc["info"]["analysis_stride"] == 2


def test_every_frame_is_analysed_when_asked(fast_clip: tuple[Path, tuple[float, float]], tmp_path: Path) -> None:
    video, _ = fast_clip
    cfg = load_config(ProcessConfig, None, [*FAST, "anomaly.fit_s=10", "anomaly.analysis_fps=null", "max_frames=300"])
    res = process_video(video, tmp_path / "p", cfg, progress=False)
    head = res.summary["heads"]["anomaly"]
    assert (head["analysis_stride"], head["analysis_fps"]) == (1, 25.0)
    with open(res.out_dir / "frames.csv", newline="") as fh:
        s = _scores(list(csv.DictReader(fh)), "anomaly_score")
    v = s[~np.isnan(s)]
    assert len(v) > 20 and (v[1::2] != v[0::2][:len(v[1::2])]).any()
