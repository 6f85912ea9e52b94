"""Synthetic scenes: determinism, exact ground truth, anomaly semantics, compositional captions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from vidseq.config import load_config
from vidseq.errors import ConfigError, DatasetError
from vidseq.sequences.manifest import count_frames, load_dataset, validate
from vidseq.sequences.synth import (
    ANOMALY_TYPES,
    COLOURS,
    Composition,
    SynthConfig,
    caption_for,
    clip_plan,
    compositions,
    generate_dataset,
    plan_scene,
    render_scene,
    split_compositions,
    split_counts,
)

REPO = Path(__file__).resolve().parents[2]
SMALL = SynthConfig(clips=6, seed=7, frames=30, width=96, height=72, anomaly_rate=1.0, test_fraction=0.34)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_dataset(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", SMALL)
    b = generate_dataset(tmp_path / "b", SMALL)
    fa, fb = _files(a.root), _files(b.root)
    assert set(fa) == set(fb)
    annotations = [k for k in fa if not k.endswith(".avi")]
    assert "dataset.yaml" in annotations and any(k.startswith("tracks/") for k in annotations)
    for k in annotations:
        assert fa[k] == fb[k], k
    for k in fa:  # videos too, with the same OpenCV build
        assert fa[k] == fb[k], k
    c = generate_dataset(tmp_path / "c", dataclasses.replace(SMALL, seed=8))
    assert _files(c.root)["dataset.yaml"] != fa["dataset.yaml"]


def test_dataset_layout_and_validation(tmp_path: Path) -> None:
    ds = generate_dataset(tmp_path / "s", SMALL)
    counts = split_counts(SMALL)
    assert counts == {"train": 3, "val": 1, "test": 2}
    assert [len(ds.clips_for(s)) for s in ("train", "val", "test")] == [3, 1, 2]
    s = validate(ds.root, deep=True)  # decodes every video: frame counts match the manifest
    assert s.total.frames == 6 * 30
    assert s.split("train").anomalous_frames == 0 and s.split("val").anomalous_frames == 0
    assert s.split("test").anomalous_frames > 0
    for clip in ds.clips:
        assert count_frames(clip.path) == clip.frames == 30
        assert len(clip.captions) == 3 and clip.meta["compositions"]
        assert clip.load_tracks().ids.tolist() == [o["id"] for o in clip.meta["objects"]
                                                   if o["first_frame"] is not None]
    assert ds.meta["generator"] == "vidseq.sequences.synth" and ds.meta["config"]["seed"] == 7
    with pytest.raises(DatasetError, match="folder exists and is not empty"):
        generate_dataset(tmp_path / "s", SMALL)
    assert generate_dataset(tmp_path / "s", SMALL, force=True).root == ds.root


def test_tracks_are_exact_boxes_of_the_rendered_objects() -> None:
    cfg = dataclasses.replace(SMALL, pixel_noise=0.0)
    scene = plan_scene(cfg, index=0, split="train")
    frames = render_scene(scene)  # (T, H, W, 3)
    assert frames.shape == (30, 72, 96, 3) and frames.dtype == np.uint8
    tr = scene.tracks()
    checked = 0
    for i in range(len(tr)):
        if tr.conf[i] < 1.0:  # occluded or cut by the frame edge
            continue
        obj = next(o for o in scene.objects if o.id == tr.track_id[i])
        cx, cy = tr.centers[i]
        colour = frames[tr.frame[i], int(round(cy)), int(round(cx))]
        assert np.abs(colour.astype(int) - COLOURS[obj.composition.colour]).max() <= 1
        x, y, w, h = tr.xywh[i]
        assert w == h == pytest.approx(2 * obj.radius, abs=1e-3)
        # just outside the box (when inside the image) is background, not the object colour
        ox = int(np.floor(x - 2))
        if ox >= 0:
            outside = frames[tr.frame[i], int(round(cy)), ox].astype(int)
            assert np.abs(outside - COLOURS[obj.composition.colour]).max() > 10
        checked += 1
    assert checked > 10


def test_rows_only_while_the_box_meets_the_frame() -> None:
    scene = plan_scene(SMALL, index=1, split="train")
    tr = scene.tracks()
    x1, y1, x2, y2 = tr.xyxy.T
    assert ((x2 > 0) & (x1 < 96) & (y2 > 0) & (y1 < 72)).all()
    assert ((tr.conf >= 0) & (tr.conf <= 1)).all()


@pytest.mark.parametrize("anomaly", ANOMALY_TYPES)
def test_injected_anomaly_semantics(anomaly: str) -> None:
    cfg = SynthConfig(frames=80, seed=3)
    scene = plan_scene(cfg, index=11, split="test", anomaly=anomaly)
    (event,) = scene.anomalies
    assert event.type == anomaly
    y = scene.labels
    assert y.dtype == np.uint8 and y.sum() == event.stop - event.start > 5
    assert y[: event.start].sum() == 0 and event.start >= 0.15 * 80  # normal frames before the anomaly
    obj = next(o for o in scene.objects if o.id == event.object_id)
    assert obj.anomaly == anomaly
    normals = [o for o in scene.objects if o.anomaly is None]
    step = np.diff(obj.centers, axis=0)[event.start:event.stop - 1]
    if anomaly == "wrong_speed":
        fastest_normal = max(np.abs(np.diff(o.centers[:, 0])).max() for o in normals) if normals else 1.6
        assert np.abs(step[:, 0]).mean() > 2.0 * fastest_normal
        assert obj.composition.motion.startswith("fast-")
    elif anomaly == "wrong_direction":
        assert np.abs(step[:, 1]).mean() > 0.5 and np.abs(step[:, 0]).max() < 1e-9
        assert obj.composition.motion in ("up", "down")
    elif anomaly == "unusual_object":
        assert obj.composition.shape == "star"
    else:
        assert obj.composition.motion.endswith("-loiter")
        after = obj.centers[event.start:]
        assert np.ptp(after[:, 0]) < 0.2 * cfg.width  # stays around one spot
        assert np.abs(step).sum(axis=1).mean() > 0.1  # ... but keeps moving
    assert any(MOTION in scene.captions[0] for MOTION in ("quickly", "up", "down", "star", "wanders"))


def test_normal_dynamics_are_horizontal_at_typical_speeds() -> None:
    cfg = SynthConfig(seed=5)
    for index in range(8):
        scene = plan_scene(cfg, index, "train")
        for obj in scene.objects:
            vx = np.diff(obj.centers[:, 0])
            moving = np.abs(vx) > 0.05
            assert obj.composition.motion in cfg.motions and obj.anomaly is None
            direction = -1 if obj.composition.motion.startswith("left") else 1
            assert np.median(vx[moving]) * direction > 0.5
            assert np.median(np.abs(vx[moving])) < 2.0
            assert np.ptp(obj.centers[:, 1]) < 16  # stays in its lane
            if obj.composition.motion.endswith("-stop"):
                assert np.abs(vx[-5:]).max() == 0.0


def test_anomalies_only_in_test_and_types_cycle() -> None:
    cfg = SynthConfig(clips=20, seed=1, anomaly_rate=1.0, test_fraction=0.4)
    plan = clip_plan(cfg)
    assert all(a is None for _, _, split, a in plan if split != "test")
    assert [a for *_, a in plan if a][:4] == list(ANOMALY_TYPES)
    with pytest.raises(ConfigError, match="test clips only"):
        plan_scene(cfg, 0, "train", anomaly="loitering")
    half = clip_plan(dataclasses.replace(cfg, anomaly_rate=0.5))
    assert sum(a is not None for *_, a in half) == 4


def test_holdout_compositions() -> None:
    cfg = SynthConfig(clips=30, seed=2, holdout=("red * left", "* triangle right-stop"), holdout_fraction=1.0,
                      test_fraction=0.3, anomaly_rate=0.0)
    seen, held = split_compositions(cfg)
    assert len(seen) + len(held) == len(compositions(cfg)) == 4 * 3 * 4
    assert Composition("red", "circle", "left") in held and Composition("blue", "triangle", "right-stop") in held
    assert Composition("red", "circle", "right") in seen
    for cid, index, split, anomaly in clip_plan(cfg):
        scene = plan_scene(cfg, index, split, anomaly, clip_id=cid)
        flags = [o.held_out for o in scene.objects]
        if split in ("train", "val"):
            assert not any(flags), cid
        else:
            assert flags[0], cid  # holdout_fraction=1: every test clip is built around a held-out composition
    with pytest.raises(ConfigError, match="every composition is held out"):
        plan_scene(SynthConfig(holdout=("* * *",)), 0, "train")


def test_captions_are_compositional() -> None:
    a, b = Composition("red", "circle", "left-stop"), Composition("blue", "square", "right")
    assert a.phrase() == "a red circle moves left then stops"
    assert caption_for([a]) == "a red circle moves left then stops"
    assert caption_for([a, b]) == "a red circle moves left then stops and a blue square moves right"
    assert caption_for([a, b], 1) == ("a red circle goes to the left and then stops while a blue square goes to "
                                      "the right")
    assert a.matches("red * *") and a.matches("* circle left-stop") and not a.matches("* * left")
    scene = plan_scene(SynthConfig(seed=4), 2, "val")
    visible = [o for k, o in enumerate(scene.objects) if (scene.visibility[:, k] > 0).any()]
    for o in visible:
        assert o.composition.phrase().removeprefix("a ") in scene.captions[0]


def test_frames_max_and_no_video(tmp_path: Path) -> None:
    cfg = SynthConfig(clips=4, seed=0, frames=20, frames_max=40, video=False)
    ds = generate_dataset(tmp_path / "nv", cfg)
    lengths = {c.frames for c in ds.clips}
    assert all(20 <= n <= 40 for n in lengths) and len(lengths) > 1
    assert all(c.path is None and c.tracks is not None for c in ds.clips)
    assert load_dataset(ds.root).clips[0].load_labels().shape == (ds.clips[0].frames,)


@pytest.mark.parametrize("changes,message", [
    ({"frames": 5}, "frames must be >= 20"),
    ({"colours": ("red", "mauve")}, "unknown colour 'mauve'"),
    ({"motions": ("left", "zigzag")}, "unknown motion 'zigzag'"),
    ({"holdout": ("red circle",)}, "must be 'colour shape motion'"),
    ({"holdout": ("red circle sideways",)}, "unknown 'sideways'"),
    ({"val_fraction": 0.6, "test_fraction": 0.5}, "must be < 1"),
    ({"anomaly_rate": 1.5}, r"anomaly_rate must be in \[0, 1\]"),
])
def test_config_errors(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SynthConfig(**changes)  # type: ignore[arg-type]


def test_config_file_loads() -> None:
    cfg = load_config(SynthConfig, REPO / "configs" / "synth.yaml", ["seed=3", "holdout=[red circle left]"])
    assert cfg.seed == 3 and cfg.holdout == ("red circle left",)
    assert dataclasses.replace(cfg, seed=0, holdout=()) == SynthConfig()
