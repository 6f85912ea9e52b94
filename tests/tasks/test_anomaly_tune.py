"""Label-free model selection: pseudo-anomaly injection (pseudo.py) and the cross-fitted search (select.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from models.test_anomaly import H, make_scene, write_clip

from vidseq.errors import ConfigError, InputShapeError
from vidseq.models.anomaly.model import gaussian_kernel, smooth_scores
from vidseq.tasks.anomaly.pseudo import PseudoConfig, find_donors, inject
from vidseq.tasks.anomaly.tune import (
    Candidate,
    SelectionConfig,
    candidates,
    choose,
    smooth_vectorised,
)


def _frames(seed: int, n: int = 80) -> list[np.ndarray]:
    return list(make_scene(seed, n_frames=n)[0])


def test_donors_are_the_moving_objects_of_a_clip() -> None:
    donors = find_donors(_frames(3), every=2)
    assert donors, "the three walkers must be found"
    for d in donors:
        assert d.crop.shape[:2] == d.alpha.shape and d.crop.dtype == np.uint8
        assert 12 <= d.height <= 32  # walkers are 16 px tall (two may touch)
        assert 0 < d.bottom_y <= H and d.alpha.max() > 0.9


def test_skip_segments_replay_the_source_with_a_stride() -> None:
    src = _frames(4, 120)
    cfg = PseudoConfig(segments=1, skip_strides=(3,), min_len_s=1.0, max_len_s=1.0)
    out, y, events = inject(src, fps=10.0, donors=[], kinds=["skip"], cfg=cfg, seed=1)
    (ev,) = events
    assert ev.kind == "skip" and ev.stop - ev.start == 11  # 10 strided frames + the frame whose flow spans 3
    assert len(out) == len(src) - 2 * 10
    assert y.sum() == 11 and y[ev.start:ev.stop].all()
    src_start = ev.start  # nothing was dropped before the segment
    for j in range(10):
        assert out[ev.start + j] is src[src_start + 3 * j]
    assert out[-1] is src[-1]


def test_object_segments_change_only_their_frames_and_are_deterministic() -> None:
    src = _frames(5, 120)
    donors = find_donors(_frames(6), every=2)
    kinds = ["fast_object", "large_object"]
    out, y, events = inject(src, fps=10.0, donors=donors, kinds=kinds, seed=7)
    out2, y2, _ = inject(src, fps=10.0, donors=donors, kinds=kinds, seed=7)
    assert [e.kind for e in events] == kinds and len(out) == len(src)
    assert np.array_equal(y, y2) and all(np.array_equal(a, b) for a, b in zip(out, out2, strict=True))
    inside = np.zeros(len(src), bool)
    for e in events:
        inside[e.start:e.stop] = True
    changed = np.array([not np.array_equal(a, b) for a, b in zip(out, src, strict=True)])
    assert not changed[~inside].any()
    assert changed[y == 1].all() and y.sum() >= 10
    assert not y[~inside].any()


def test_rotated_object_is_a_turned_cut_out_at_walking_speed() -> None:
    src = _frames(5, 120)
    donors = find_donors(_frames(6), every=2)
    out, y, events = inject(src, fps=10.0, donors=donors, kinds=["rotated_object"], seed=4)
    (ev,) = events
    assert ev.kind == "rotated_object" and "scale 1.00" in ev.detail and "speed 0.80" in ev.detail
    changed = np.array([not np.array_equal(a, b) for a, b in zip(out, src, strict=True)])
    assert changed[y == 1].all() and y.sum() >= 10 and not changed[:ev.start].any()
    # the pasted thing is wider than tall, unlike the upright walkers
    diff = np.abs(out[ev.start + 5].astype(int) - src[ev.start + 5].astype(int)).max(2) > 10
    ys, xs = np.nonzero(diff)
    assert xs.max() - xs.min() > ys.max() - ys.min()


def test_bad_pseudo_inputs_raise() -> None:
    with pytest.raises(InputShapeError, match="no frames"):
        inject([], fps=10.0, donors=[], kinds=["skip"])
    with pytest.raises(InputShapeError, match="differ in size"):
        inject([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)], fps=10.0, donors=[], kinds=["skip"])
    with pytest.raises(ConfigError, match="unknown"):
        PseudoConfig(kinds=("teleport",))
    with pytest.raises(ConfigError, match="folds"):
        SelectionConfig(folds=1)
    # too short for any segment: nothing injected, nothing labelled
    out, y, ev = inject(_frames(1, 20), fps=10.0, donors=[], kinds=["skip"])
    assert len(out) == 20 and y.sum() == 0 and ev == []


def test_vectorised_smoothing_equals_the_streaming_smoother() -> None:
    x = np.random.default_rng(0).normal(size=57)
    for sigma in (0.0, 1.0, 3.0):
        k = gaussian_kernel(sigma, 3.0)
        assert np.allclose(smooth_vectorised(x, k), smooth_scores(x, k), atol=1e-12)


def test_grid_and_choice() -> None:
    sel = SelectionConfig(streams=(("speed",), ("objects",), ("speed", "objects")), secondary_weights=(1.0, 0.5),
                          fusions=("mean",), smooth_sigma_s=(0.0, 0.3), speed_windows=(5, 9),
                          speed_frame_quantiles=(0.99,), speed_temporals=(3,), speed_cells=(2, 3))
    grid = candidates(sel)
    # speed: 2 sigma x 2 cells x 2 windows; objects: 2 sigma x 2 cells; pair: 2 weights x 2 sigma x 2 cells x 2 windows
    assert len(grid) == 8 + 4 + 16 and len(set(grid)) == len(grid)
    assert {c.speed_cell for c in grid if c.streams == ("objects",)} == {2, 3}
    c = Candidate(("speed", "objects"), (1.0, 0.5), "max", 0.3, 5, 0.99, 5, 2)
    assert c.keys() == ["speed@2,5,5,0.99", "objects@2"]
    from vidseq.models.anomaly.model import AnomalyConfig

    cfg = c.apply(AnomalyConfig())
    assert cfg.streams == ("speed", "objects") and cfg.weights == (1.0, 0.5) and cfg.fusion == "max"
    assert cfg.speed.window == 5 and cfg.speed.frame_quantile == 0.99 and cfg.smooth_sigma_s == 0.3
    assert cfg.speed.temporal == 5 and cfg.speed.cell == 2
    rows = [{"index": 0, "streams": ["speed", "objects"], "criterion": 0.9505},
            {"index": 1, "streams": ["speed"], "criterion": 0.950},
            {"index": 2, "streams": ["objects"], "criterion": 0.90}]
    assert choose(rows)["index"] == 1  # within 0.001: fewer streams win
    rows[0]["criterion"] = 0.96
    assert choose(rows)["index"] == 0


@pytest.mark.slow
def test_tune_reads_no_test_clip_and_its_config_trains(tmp_path: Path) -> None:
    """`vidseq tune anomaly` on generated normal clips; the test clip is garbage, so reading it would fail."""
    from vidseq.cli import main
    from vidseq.config import load_config
    from vidseq.sequences.manifest import Clip, Dataset, LabelRanges, save_dataset
    from vidseq.tasks.anomaly.config import AnomalyTaskConfig

    root = tmp_path / "ds"
    (root / "videos").mkdir(parents=True)
    clips = []
    for i, split in enumerate(["train"] * 3 + ["val"]):
        frames, _ = make_scene(30 + i, n_frames=90)
        path = write_clip(root / "videos" / f"n{i}.avi", frames)
        clips.append(Clip(id=f"n{i}", split=split, path=path, fps=10.0, frames=len(frames),
                          labels=LabelRanges.from_array(np.zeros(len(frames), int))))
    bad = root / "videos" / "test.avi"
    bad.write_bytes(b"not a video")
    clips.append(Clip(id="t0", split="test", path=bad, fps=10.0, frames=30,
                      labels=LabelRanges.from_array(np.ones(30, int))))
    save_dataset(Dataset(root=root, name="tiny", clips=clips))
    out = tmp_path / "tune"
    sets = ["model.motion.width=160", "progress=false", f"cache_dir={tmp_path / 'cache'}", "val_clips=0",
            "select.streams=[[speed],[objects],[crops],[speed,objects]]", "select.speed_windows=[5,9]",
            "select.speed_frame_quantiles=[0.998]", "select.smooth_sigma_s=[0,0.3]", "select.secondary_weights=[1]",
            "select.speed_temporals=[3]", "select.speed_cells=[3]", "select.pseudo_clip_s=7",
            "select.fusions=[mean]", "select.pseudo.min_len_s=1.0", "select.pseudo.max_len_s=2.0",
            "select.rounds=2"]
    assert main(["-q", "tune", "anomaly", "--data", str(root), "--out", str(out), "--set", *sets]) == 0
    sel = json.loads((out / "selection.json").read_text())
    assert sel["candidates"] == len(sel["rows"]) == 4 + 2 + 2 + 4
    assert sel["pseudo_frames"] > 0 and sum(sel["pseudo_anomalous_by_kind"].values()) > 0
    # rounds=2: two independently drawn versions of each held-out clip; pseudo_clip_s=7: only the first 70 of
    # each clip's 90 frames
    assert sum(f["pseudo_clips"] for f in sel["folds"]) == 2 * 4
    assert sel["pseudo_frames"] <= 2 * 4 * 70
    held = sorted(c for f in sel["folds"] for c in f["held_out"])
    assert held == ["n0", "n1", "n2", "n3"]  # every normal clip held out once, the test clip never
    best = sel["chosen"]
    assert best["criterion"] == max(r["criterion"] for r in sel["rows"]) or len(best["streams"]) == 1
    assert best["auc_micro"] > 0.7  # the synthetic pseudo-anomalies are easy for the motion streams
    tuned = load_config(AnomalyTaskConfig, out / "anomaly.yaml")
    assert list(tuned.model.streams) == best["streams"] and tuned.model.speed.window == best["speed_window"]
    assert (out / "selection.csv").read_text().count("\n") == len(sel["rows"]) + 1
    run = tmp_path / "run"
    assert main(["-q", "train", "anomaly", "--data", str(root), "--out", str(run), "--config",
                 str(out / "anomaly.yaml"), "--set", "val_clips=1"]) == 0
    assert (run / "best.pt").is_file()


def test_tune_refuses_clips_too_short_for_any_pseudo_anomaly(tmp_path: Path) -> None:
    from vidseq.errors import DatasetError
    from vidseq.sequences.manifest import Clip, Dataset, LabelRanges, save_dataset
    from vidseq.tasks.anomaly.tune import tune

    root = tmp_path / "ds"
    (root / "videos").mkdir(parents=True)
    clips = []
    for i in range(2):
        frames, _ = make_scene(40 + i, n_frames=20)
        path = write_clip(root / "videos" / f"s{i}.avi", frames)
        clips.append(Clip(id=f"s{i}", split="train", path=path, fps=10.0, frames=20,
                          labels=LabelRanges.from_array(np.zeros(20, int))))
    save_dataset(Dataset(root=root, name="short", clips=clips))
    sets = ["model.motion.width=160", "progress=false", "val_clips=0", "select.streams=[[speed]]",
            "select.speed_windows=[9]", "select.speed_frame_quantiles=[0.998]", "select.smooth_sigma_s=[0]"]
    with pytest.raises(DatasetError, match="no pseudo-anomaly fits"):
        tune(root, tmp_path / "tune", overrides=sets)
    assert not (tmp_path / "tune" / "anomaly.yaml").exists()


@pytest.mark.slow
def test_pseudo_clips_in_worker_processes_equal_one_by_one(tmp_path: Path) -> None:
    """Cache misses computed in 2 spawned processes give the same clips, in order, as computing them here;
    a second call loads them from the cache."""
    from vidseq.features.motion import MotionConfig
    from vidseq.models.anomaly.model import AnomalyConfig
    from vidseq.tasks.anomaly.data import ClipRef
    from vidseq.tasks.anomaly.tune import pseudo_clips

    refs = [ClipRef(f"c{i}", write_clip(tmp_path / f"c{i}.avi", make_scene(60 + i, n_frames=70)[0]), "train")
            for i in range(3)]
    from vidseq.models.anomaly.model import CropStreamConfig
    from vidseq.tasks.anomaly.features import make_crop_encoder

    cfg = AnomalyConfig(streams=("speed", "objects", "crops"), motion=MotionConfig(width=160),
                        crops=CropStreamConfig(feature_dim=64))
    sel = SelectionConfig(pseudo=PseudoConfig(min_len_s=1.0, max_len_s=2.0))
    donors = find_donors(_frames(70), every=2)
    specs = [(refs[0], ["skip", "fast_object"], 1), (refs[1], ["large_object", "skip"], 2),
             (refs[2], ["rotated_object", "large_object"], 3)]
    crops = make_crop_encoder(cfg)
    one = pseudo_clips(specs, cfg, sel, lambda: donors, ["d"], None, None, crops=crops, workers=1)
    cache = str(tmp_path / "cache")
    two = pseudo_clips(specs, cfg, sel, lambda: donors, ["d"], None, cache, crops=crops, workers=2)
    again = pseudo_clips(specs, cfg, sel, lambda: [], ["d"], None, cache, crops=crops,
                         workers=2)  # all cached: no donors needed
    for (a, ya, ka), (b, yb, kb), (c, yc, _) in zip(one, two, again, strict=True):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(ka, kb)
        np.testing.assert_array_equal(a.magnitude_maps, b.magnitude_maps)
        np.testing.assert_array_equal(a.descriptors, b.descriptors)
        np.testing.assert_array_equal(yb, yc)
        np.testing.assert_allclose(c.magnitude_maps, b.magnitude_maps, atol=1e-2, rtol=1e-3)  # float16 cache
        assert a.region_crops.shape == (len(a.region_attrs), 64)
        np.testing.assert_allclose(b.region_crops, a.region_crops, atol=1e-3, rtol=1e-3)  # 1 vs 2 torch threads
        np.testing.assert_allclose(c.region_crops, b.region_crops, atol=1e-2, rtol=1e-2)
    assert sum(int(y.sum()) for _, y, _ in one) > 0


def test_the_grid_fixes_its_own_standardisation_and_regions_whatever_the_default_model() -> None:
    """``vidseq train anomaly``'s untuned default (speed + tracks on flow regions, quantiles, normalised pixels)
    is not what the tune grid's candidates were built with (background-subtraction regions, mean/std, raw pixels):
    every candidate, and the config tune writes, take the grid's own settings."""
    from vidseq.tasks.anomaly.config import AnomalyTaskConfig, SelectionConfig
    from vidseq.tasks.anomaly.tune import candidates, search_config

    tc = AnomalyTaskConfig()
    assert tc.model.standardise == "quantile" and tc.model.regions.method == "flow" and tc.model.normalise_pixels
    base = search_config(tc.model, tc.select)
    assert base.standardise == "meanstd" and base.regions.method == "mog2" and not base.normalise_pixels
    tuned = candidates(tc.select)[-1].apply(base)
    assert (tuned.standardise, tuned.regions.method, tuned.normalise_pixels) == ("meanstd", "mog2", False)
    assert search_config(tc.model, SelectionConfig(standardise="quantile", regions_method="flow")).regions.method \
        == "flow"
    with pytest.raises(ConfigError, match="select.regions_method"):
        SelectionConfig(regions_method="blobs")
