"""Anomaly head: injected anomalies score high, calibration, streaming == offline, checkpoints, bad inputs."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseq.errors import CheckpointError, ConfigError, DatasetError, InputShapeError
from vidseq.features.motion import MotionConfig
from vidseq.models.anomaly.calibrate import (
    CalibrationConfig,
    calibrate,
    find_events,
    hysteresis,
)
from vidseq.models.anomaly.fit import fit_anomaly_model, fit_unsupervised, score_clip
from vidseq.models.anomaly.model import (
    AnomalyConfig,
    CenteredWindow,
    FramePredictor,
    gaussian_kernel,
    score_frames,
    smooth_scores,
)
from vidseq.tasks.anomaly.features import features_from_frames

W, H = 160, 120


def background() -> np.ndarray:
    """Static textured background, the same for every clip (one fixed camera)."""
    rng = np.random.default_rng(1234)
    g = np.linspace(150, 210, W, dtype=np.float32)[None, :].repeat(H, 0)
    g += rng.normal(0, 6, (H, W)).astype(np.float32)
    return np.clip(g, 0, 255).astype(np.uint8)


def make_scene(seed: int, n_frames: int = 50, anomaly: str | None = None, start: int = 15,
               ) -> tuple[np.ndarray, np.ndarray]:
    """BGR frames ``(T, H, W, 3)`` of textured boxes walking left/right in a lane, and 0/1 labels.

    Anomalies (one extra object from ``start``): ``speed`` (4x faster), ``direction`` (walks down),
    ``new_object`` (a much bigger object), ``appearance`` (a walker of normal size and speed that looks
    different: bright stripes instead of the walkers' dark texture).
    """
    rng = np.random.default_rng(seed)
    bg = background()
    objs = []  # x, y, vx, vy, w, h, t0
    for _ in range(3):
        objs.append([rng.uniform(0, W), rng.uniform(55, 85), rng.uniform(1.0, 1.6) * rng.choice([-1, 1]), 0.0,
                     10, 16, 0])
    if anomaly == "speed":
        objs.append([-12.0, rng.uniform(55, 85), 6.0, 0.0, 10, 16, start])
    elif anomaly == "direction":
        objs.append([rng.uniform(40, 120), -18.0, 0.0, 1.4, 10, 16, start])
    elif anomaly == "new_object":
        objs.append([-30.0, rng.uniform(50, 70), 1.3, 0.0, 28, 34, start])
    elif anomaly == "appearance":
        objs.append([-12.0, rng.uniform(55, 85), 1.3, 0.0, 10, 16, start])
    tex = rng.integers(20, 90, (40, 40)).astype(np.uint8)
    odd = np.where((np.arange(40)[:, None] // 3) % 2 == 0, 250, 5).repeat(40, 1).astype(np.uint8)
    frames = np.empty((n_frames, H, W, 3), np.uint8)
    labels = np.zeros(n_frames, np.uint8)
    for t in range(n_frames):
        img = bg.copy()
        for k, (x0, y0, vx, vy, w, h, t0) in enumerate(objs):
            if t < t0:
                continue
            x, y = x0 + vx * (t - t0), y0 + vy * (t - t0)
            if k < 3:  # normal walkers wrap around
                x = (x + 20) % (W + 40) - 20
            xi, yi = int(round(x)), int(round(y))
            xa, ya, xb, yb = max(xi, 0), max(yi, 0), min(xi + w, W), min(yi + h, H)
            if xa < xb and ya < yb:
                t_obj = odd if (k == 3 and anomaly == "appearance") else tex
                img[ya:yb, xa:xb] = t_obj[ya - yi:yb - yi, xa - xi:xb - xi]
                labels[t] = labels[t] or k == 3
        frames[t] = img[..., None].repeat(3, 2)
    return frames, labels


CFG = AnomalyConfig(streams=("speed", "objects"), motion=MotionConfig(width=W))


def write_clip(path: Path, frames: np.ndarray, fps: float = 10.0) -> Path:
    """Frames -> an MJPG .avi (what the dataset tests feed the CLI)."""
    import cv2

    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    for f in frames:
        wr.write(f)
    wr.release()
    return path


@pytest.fixture(scope="module")
def fitted():
    train = [features_from_frames(make_scene(s)[0], CFG, fps=10.0, clip_id=f"train{s}") for s in range(5)]
    val = [features_from_frames(make_scene(100 + s)[0], CFG, fps=10.0, clip_id=f"val{s}") for s in range(2)]
    model, cal, info = fit_anomaly_model(CFG, train, val)
    return model, cal, info, train


@functools.lru_cache(maxsize=None)
def _test_clip(seed: int, anomaly: str | None):
    """Labels and features of a test scene (cached: normal scenes are shared by every case)."""
    frames, y = make_scene(seed, anomaly=anomaly)
    return y, features_from_frames(frames, CFG, fps=10.0)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


@pytest.mark.slow
@pytest.mark.parametrize("anomaly,stream,min_auc", [
    ("speed", "speed", 0.9),
    ("speed", "final", 0.9),
    ("direction", "objects", 0.85),
    ("new_object", "objects", 0.85),
])
def test_injected_anomalies_score_higher_than_normal(fitted, anomaly: str, stream: str, min_auc: float) -> None:
    model, _, _, _ = fitted
    ys, ss = [], []
    for seed in (200, 201):
        for kind in (anomaly, None):
            y, cf = _test_clip(seed + (0 if kind else 50), kind)
            sc = score_clip(model, cf)
            s = sc.arrays["score"] if stream == "final" else smooth_scores(sc.z(model, stream), model.kernel(10.0))
            ys.append(y)
            ss.append(s)
    assert _auc(np.concatenate(ys), np.concatenate(ss)) >= min_auc


def test_streaming_equals_offline_and_checkpoint_roundtrip(fitted, tmp_path: Path) -> None:
    from vidseq.tasks.anomaly.scoring import VideoScorer
    from vidseq.tasks.anomaly.task import load_anomaly_model
    from vidseq.train.checkpoint import save_checkpoint

    model, cal, _, _ = fitted
    frames, _ = make_scene(7, n_frames=30, anomaly="speed", start=5)
    offline = score_clip(model, features_from_frames(frames, CFG, fps=10.0)).arrays["score"]
    path = save_checkpoint(tmp_path / "a.pt", model=model, model_name="anomaly_fusion",
                           model_config=model.model_config(), extra={"calibration": cal.to_dict()})
    raw = torch.load(path, weights_only=True)  # loads without pickled objects
    assert raw["model_name"] == "anomaly_fusion"
    loaded, cal2, _ = load_anomaly_model(path)
    assert cal2 == cal
    live = VideoScorer(loaded, cal2, fps=10.0)
    rows = []
    for i, image in enumerate(frames):
        got = live.step(image, i, i / 10.0)
        assert all(r.frame_index <= i - live.delay_frames for r in got)  # fixed delay
        rows.extend(got)
    rows.extend(live.finish())
    assert [r.frame_index for r in rows] == list(range(len(frames)))
    np.testing.assert_allclose([r.score for r in rows], offline, rtol=0, atol=1e-9)
    assert [r.is_anomaly for r in rows] == list(cal.flags(offline))


def test_offline_speed_scores_equal_the_streaming_speed_stream(fitted) -> None:
    from vidseq.models.anomaly.model import speed_scores_offline

    model, _, _, _ = fitted
    _, cf = _test_clip(11, "speed")
    cf.valid = cf.valid.copy()
    cf.valid[[0, 1, 20]] = False  # leading fill and a dropped frame in the middle
    for temporal, window, q in [(3, 9, 0.998), (1, 1, 1.0), (5, 13, 0.99)]:
        m = replace(model.speed.cfg, temporal=temporal, window=window, frame_quantile=q)
        model.speed.cfg = m
        streaming = score_clip(model, cf, normalise=False).arrays["raw_speed"]
        offline = speed_scores_offline(cf.magnitude_maps, cf.valid, model.speed.scale_map.numpy(), m)
        assert np.allclose(streaming, offline, atol=1e-9)
    model.speed.cfg = CFG.speed


def test_centered_window_matches_direct_computation() -> None:
    x = np.random.default_rng(0).normal(size=23)
    k = gaussian_kernel(1.5, 3.0)
    r = len(k) // 2
    padded = np.concatenate([[x[0]] * r, x, [x[-1]] * r])
    expected = np.convolve(padded, k[::-1], mode="valid")
    np.testing.assert_allclose(smooth_scores(x, k), expected, atol=1e-12)
    win = CenteredWindow(2, lambda xs: float(sum(xs)))
    out = [v for i in range(3) for v in win.push(float(i))] + win.finish()
    assert out == [(0, 0 + 0 + 0 + 1 + 2.0), (1, 0 + 0 + 1 + 2 + 2.0), (2, 0 + 1 + 2 + 2 + 2.0)]


def test_calibration_percentile_fpr_and_events() -> None:
    normal = np.random.default_rng(0).normal(size=10000)
    cal = calibrate(normal, CalibrationConfig(percentile=99.0, low_percentile=90.0))
    assert cal.threshold == pytest.approx(np.percentile(normal, 99))
    assert cal.normal_fpr == pytest.approx(0.01, abs=0.002)
    assert calibrate(normal, CalibrationConfig(fpr=0.01)).threshold == pytest.approx(cal.threshold)
    assert cal.low_threshold < cal.threshold
    s = np.zeros(40)
    s[5:15] = 5.0  # long event
    s[15:17] = cal.low_threshold + 0.01  # hysteresis keeps it on
    s[20] = 5.0  # too short (min 0.5 s = 5 frames at 10 fps) -> dropped
    s[30:33] = 5.0
    s[34:37] = 5.0  # gap of 1 frame < merge_gap 0.3 s -> merged with 30:33
    flags = hysteresis(s, cal.threshold, cal.low_threshold)
    assert flags[5:17].all() and not flags[17]
    ev = find_events(s, cal, fps=10.0)
    assert [(e.start_frame, e.end_frame) for e in ev] == [(5, 16), (30, 36)]
    assert ev[0].peak_score == 5.0 and ev[0].start_s == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [np.array([]), np.array([1.0, np.nan])])
def test_calibration_rejects_bad_scores(bad: np.ndarray) -> None:
    with pytest.raises(InputShapeError):
        calibrate(bad)


def test_bad_inputs_raise_clear_errors(fitted) -> None:
    model, _, _, train = fitted
    f = next(train[0].frames(3))
    sc = model.scorer(10.0)
    with pytest.raises(InputShapeError, match="magnitude map"):  # other video size than training
        sc.push(replace(f, magnitude_map=np.zeros((5, 5), np.float32)))
    with pytest.raises(InputShapeError, match="NaN"):
        sc.push(replace(f, magnitude_map=np.full_like(f.magnitude_map, np.nan)))
    with pytest.raises(InputShapeError, match="NaN"):
        sc.push(replace(f, region_attrs=np.full((1, f.region_attrs.shape[1] if f.region_attrs.size else 9), np.nan,
                                                np.float32)))
    with pytest.raises(InputShapeError, match="fps|frame rate"):
        model.scorer(0.0)
    with pytest.raises(ConfigError):
        AnomalyConfig(streams=("speed", "nope"))
    with pytest.raises(ConfigError):
        AnomalyConfig(streams=("speed",), weights=(1.0, 2.0))


def test_frame_stream_feature_dim_mismatch_and_nan() -> None:
    cfg = replace(CFG, streams=("speed", "frame"),
                  frame=replace(CFG.frame, appearance=True, motion=True, hidden_dim=16, num_layers=1))
    frames, _ = make_scene(3, n_frames=12)
    cf = features_from_frames(frames, cfg, fps=10.0)
    cf.appearance = np.random.default_rng(0).normal(size=(len(cf), 8)).astype(np.float32)
    pred = FramePredictor(8 + cf.descriptors.shape[1], hidden_dim=16, num_layers=1)
    model, _, _ = fit_anomaly_model(cfg, [cf], [cf], frame_predictor=pred)
    good = list(cf.frames())
    out = score_frames(model, good, 10.0)
    assert len(out) == len(cf) and np.isfinite([o.score for o in out]).all()
    with pytest.raises(InputShapeError, match="appearance feature has 4 dims"):
        model.scorer(10.0).push(replace(good[0], appearance=np.zeros(4, np.float32)))
    with pytest.raises(InputShapeError, match="NaN"):
        model.scorer(10.0).push(replace(good[0], appearance=np.full(8, np.nan, np.float32)))
    with pytest.raises(InputShapeError, match="motion descriptor"):
        model.scorer(10.0).push(replace(good[0], descriptor=np.zeros(3, np.float32)))


def test_cross_fit_calibration_uses_every_normal_clip_out_of_fold(fitted) -> None:
    from vidseq.models.anomaly.fit import cross_fit_calibrate

    _, _, _, train = fitted
    val = [features_from_frames(make_scene(100 + s)[0], CFG, fps=10.0, clip_id=f"val{s}") for s in range(2)]
    normal = list(train) + val
    model, _, _ = fit_anomaly_model(CFG, normal, val)
    cal, info = cross_fit_calibrate(model, normal, 3)
    assert info["calibration"] == "cross-fit, 3 folds" and cal.num_normal_frames == sum(len(c) for c in normal)
    assert set(info["stream_mean"]) == {"speed", "objects"} and np.isfinite(cal.threshold)
    assert model.stream_std.numel() == 2 and float(model.stream_std.min()) > 0
    y, cf = _test_clip(7, "speed")
    s = score_clip(model, cf).arrays["score"]
    assert _auc(y, s) > 0.8 and cal.flags(s)[y == 1].mean() > cal.flags(s)[y == 0].mean()
    with pytest.raises(DatasetError, match="cross-fit"):
        cross_fit_calibrate(model, normal[:2], 3)
    from vidseq.tasks.anomaly.config import AnomalyTaskConfig

    with pytest.raises(ConfigError, match="cross_fit_folds"):
        AnomalyTaskConfig(cross_fit_folds=1)


def test_unsupervised_mode_flags_the_rare_fast_object() -> None:
    frames = np.concatenate([make_scene(11, n_frames=60)[0], make_scene(12, n_frames=30, anomaly="speed", start=0)[0]])
    y = np.r_[np.zeros(60), make_scene(12, n_frames=30, anomaly="speed", start=0)[1]]
    cf = features_from_frames(frames, replace(CFG, streams=("speed",)), fps=10.0)
    model, cal, info = fit_unsupervised(cf, replace(CFG, streams=("speed",)), fit_seconds=5.0)
    assert info["mode"] == "unsupervised-first-5s" and info["fit_frames"] == 50
    s = score_clip(model, cf).arrays["score"]
    assert _auc(y[55:], s[55:]) > 0.9 or _auc(y, s) > 0.9
    _, _, info_self = fit_unsupervised(cf, replace(CFG, streams=("speed",)), None)
    assert info_self["mode"] == "unsupervised-self"


def test_registry_and_config_file_load() -> None:
    from vidseq.config import config_class, load_config
    from vidseq.registry import MODELS, build_model

    assert "anomaly_fusion" in MODELS and "anomaly_frame_lstm" in MODELS
    cfg = load_config(config_class("anomaly"), Path(__file__).resolve().parents[2] / "configs" / "anomaly.yaml")
    assert "speed" in cfg.model.streams
    with pytest.raises(CheckpointError):
        build_model("anomaly_fusion", {"config": {}})


@pytest.mark.slow
def test_task_train_and_evaluate_on_a_tiny_dataset(tmp_path: Path) -> None:
    """`vidseq train anomaly` + `vidseq eval anomaly` end to end on generated videos."""
    from vidseq.cli import main
    from vidseq.sequences.manifest import Clip, Dataset, LabelRanges, save_dataset

    root = tmp_path / "ds"
    (root / "videos").mkdir(parents=True)
    clips = []
    plan = [("train", s, None) for s in range(3)] + [("val", 10, None), ("test", 20, "speed"), ("test", 21, None)]
    for i, (split, seed, anomaly) in enumerate(plan):
        frames, y = make_scene(seed, n_frames=30, anomaly=anomaly, start=8)
        path = write_clip(root / "videos" / f"c{i}.avi", frames)
        clips.append(Clip(id=f"c{i}", split=split, path=path, fps=10.0, frames=len(frames),
                          labels=LabelRanges.from_array(y)))
    save_dataset(Dataset(root=root, name="tiny", clips=clips))
    out = tmp_path / "run"
    sets = ["model.motion.width=160", "progress=false", f"cache_dir={tmp_path / 'cache'}"]
    assert main(["-q", "train", "anomaly", "--data", str(root), "--out", str(out), "--set", *sets]) == 0
    assert (out / "best.pt").is_file()
    js = tmp_path / "m.json"
    assert main(["-q", "eval", "anomaly", "--model", str(out / "best.pt"), "--data", str(root), "--json", str(js),
                 "--set", "progress=false"]) == 0
    import json

    m = json.loads(js.read_text())
    assert m["auc_micro"] > 0.8 and 0 <= m["auc_micro_minmax"] <= 1
    trained = json.loads((out / "metrics.json").read_text())  # configs/anomaly.yaml: cross_fit_folds 4
    assert trained["calibration"] == "cross-fit, 4 folds" and trained["val_frames"] == trained["train_frames"] == 120
    out_val = tmp_path / "run_val"
    assert main(["-q", "train", "anomaly", "--data", str(root), "--out", str(out_val), "--set", *sets,
                 "cross_fit_folds=0"]) == 0
    trained = json.loads((out_val / "metrics.json").read_text())
    assert trained["calibration"] == "validation clips" and trained["val_frames"] == 30
    assert {"auc_micro_unsup_self", "precision", "recall", "threshold"} <= set(m)
    # the frame-stream LSTM goes through the shared engine (motion descriptors only: no backbone download)
    out2 = tmp_path / "run_lstm"
    assert main(["-q", "train", "anomaly", "--data", str(root), "--out", str(out2), "--set", *sets,
                 "model.streams=[speed,frame]", "model.frame.appearance=false", "train.epochs=2",
                 "model.frame.window=8"]) == 0
    assert (out2 / "frame_lstm" / "best.pt").is_file()
    assert main(["-q", "eval", "anomaly", "--model", str(out2 / "best.pt"), "--data", str(root), "--json", str(js),
                 "--set", "progress=false"]) == 0
    m2 = json.loads(js.read_text())
    assert m2["streams"] == ["speed", "frame"] and "auc_micro_frame" in m2


@pytest.mark.slow
@pytest.mark.data
def test_ped2_smoke_two_training_clips(shared_data: Path) -> None:
    """Real data: fitted on Train001 (+ Train002 for calibration), Test001's bicycle frames score higher."""
    from vidseq.tasks.anomaly.features import extract_clip_features

    ped2 = shared_data / "ucsd_ped2"
    cfg = AnomalyConfig()  # the default: speed stream
    train = [extract_clip_features(ped2 / "train" / "Train001.avi", cfg)]
    val = [extract_clip_features(ped2 / "train" / "Train002.avi", cfg)]
    model, cal, _ = fit_anomaly_model(cfg, train, val)
    test = extract_clip_features(ped2 / "test" / "Test001.avi", cfg)
    y = np.zeros(len(test), int)
    y[60:] = 1  # UCSDped2.m: gt_frame = [61:180] (1-based)
    s = score_clip(model, test).arrays["score"]
    assert _auc(y, s) > 0.9
    assert cal.flags(s)[100:].mean() > 0.5 and cal.flags(s)[:50].mean() < 0.5


def test_frame_statistics_floor_quiet_cells() -> None:
    """A descriptor cell where nothing moved in training gets the floored std, so later motion there gives
    bounded z-scores; cells that moved keep their own std; appearance dims are untouched."""
    from vidseq.features.motion import CELL_STATS, descriptor_names
    from vidseq.models.anomaly.fit import frame_statistics

    cfg = replace(CFG, streams=("frame",), frame=replace(CFG.frame, appearance=True, motion=True))
    frames, _ = make_scene(4, n_frames=40)
    cf = features_from_frames(frames, cfg, fps=10.0)
    names = descriptor_names(cfg.motion)
    assert cf.descriptors.shape[1] == len(names)
    app = np.random.default_rng(0).normal(size=(len(cf), 8)).astype(np.float32)
    x = np.concatenate([app, cf.descriptors], 1)
    quiet = names.index(f"r0c0_{CELL_STATS[0]}")  # the top-left cell: the lane is lower down
    raw_std = x.std(0) + 1e-6
    cell_std = raw_std[8::len(CELL_STATS)][:54]  # the first statistic of every cell
    assert raw_std[8 + quiet] < 0.05 * np.sqrt((cell_std ** 2).mean())
    _, std = frame_statistics(x, cfg)
    _, off = frame_statistics(x, replace(cfg, frame=replace(cfg.frame, std_floor=0.0)))
    np.testing.assert_allclose(off, raw_std, rtol=1e-5)
    np.testing.assert_allclose(std[:8], raw_std[:8], rtol=1e-5)
    assert std[8 + quiet] > 9 * raw_std[8 + quiet]
    busy = int(np.argmax(raw_std[8:8 + len(CELL_STATS) * 54]))
    assert std[8 + busy] == pytest.approx(raw_std[8 + busy], rel=1e-5)
    with pytest.raises(ConfigError):
        replace(cfg.frame, std_floor=-1.0)


def test_micro_aucs_equal_sklearn_with_ties_and_reject_bad_scores() -> None:
    from sklearn.metrics import roc_auc_score

    from vidseq.tasks.anomaly.metrics import micro_aucs

    rng = np.random.default_rng(5)
    ys, ss = [], []
    for n in (40, 75, 120):
        y = (rng.random(n) < 0.4).astype(int)
        ys.append(y)
        ss.append(np.round(rng.normal(size=n) + 1.5 * y, 1))  # rounded: many ties
    auc, auc_mm = micro_aucs(ys, ss)
    y = np.concatenate(ys)
    assert auc == pytest.approx(roc_auc_score(y, np.concatenate(ss)), abs=1e-12)
    mm = np.concatenate([(s - s.min()) / (s.max() - s.min()) for s in ss])
    assert auc_mm == pytest.approx(roc_auc_score(y, mm), abs=1e-12)
    assert np.isnan(micro_aucs([np.zeros(5, int)], [np.arange(5.0)])[0])  # one class only
    with pytest.raises(InputShapeError, match="NaN"):
        micro_aucs([np.array([0, 1])], [np.array([0.1, np.nan])])


def test_group_aucs_equal_sklearn_per_group() -> None:
    from sklearn.metrics import roc_auc_score

    from vidseq.tasks.anomaly.metrics import group_aucs

    rng = np.random.default_rng(9)
    n = 300
    y = (rng.random(n) < 0.4).astype(int)
    group = rng.integers(0, 3, n)  # read for positives only
    group[(y == 1) & (group == 2)] = 0  # group 2 keeps no positive
    s = np.round(rng.normal(size=n) + y * (1 + group), 1)  # ties, and groups that differ
    out = group_aucs(y, s, group, 3)
    for g in (0, 1):
        m = (y == 0) | (group == g)
        assert out[g] == pytest.approx(roc_auc_score(y[m], s[m]), abs=1e-12)
    assert np.isnan(out[2])
    assert out[3] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    with pytest.raises(InputShapeError, match="group ids"):
        group_aucs(y, s, np.full(n, 3), 3)


def test_clip_appearance_is_batched_and_equals_frame_by_frame() -> None:
    from vidseq.features.backbones import create_backbone
    from vidseq.tasks.anomaly.features import APPEARANCE_BATCH

    bb = create_backbone("resnet18", pretrained=False, device="cpu", imgsz=64)
    frames, _ = make_scene(4, n_frames=APPEARANCE_BATCH + 5)  # one full batch and a partial one
    cf = features_from_frames(frames, replace(CFG, streams=("speed", "frame")), fps=10.0, backbone=bb)
    single = np.concatenate([bb.extract([f]) for f in frames])
    assert cf.appearance is not None and cf.appearance.shape == (len(frames), bb.feature_dim)
    np.testing.assert_allclose(cf.appearance, single, rtol=1e-4, atol=1e-5)
