"""The alarm benchmark (alarm_bench.py): camera nuisances, injected events, metrics, and one tiny end-to-end run
through the real streaming pass (FrameProcessor + the monitor's AlertRule) on generated clips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from models.test_anomaly import H, W, background, make_scene, write_clip

from vidseq.errors import ConfigError, DatasetError
from vidseq.tasks.anomaly import alarm_bench as ab
from vidseq.tasks.anomaly.pseudo import Donor


def _scene() -> np.ndarray:
    """A BGR frame with one bright square on the textured background."""
    img = np.repeat(background()[:, :, None], 3, axis=2)
    img[50:60, 70:80] = 255
    return img


def _centroid(img: np.ndarray, level: int = 240) -> np.ndarray:
    ys, xs = np.nonzero(img[..., 0] >= level)
    return np.array([xs.mean(), ys.mean()])


# --------------------------------------------------------------------------------------------- nuisances


@pytest.mark.parametrize("gain", [0.6, 1.4])
def test_exposure_changes_mean_brightness_by_the_gain(gain: float) -> None:
    img = _scene()
    out = ab.apply_gain(img, gain)
    assert out.dtype == np.uint8 and out.shape == img.shape
    # a pure gain: the mean moves by the factor (up to saturation at 255, which only lowers it)
    ratio = out.mean() / img.mean()
    assert (abs(ratio - gain) < 0.02) if gain < 1 else (1.25 < ratio <= gain + 0.01)


def test_exposure_jump_is_a_step_and_drift_is_gradual() -> None:
    jump = ab.Span("exposure_jump", 10, 30, {"gain": 1.5})
    drift = ab.Span("exposure_drift", 40, 80, {"gain": 0.6})
    spans = [jump, drift]
    gains = [ab.camera_state(spans, t, 0).gain for t in range(90)]
    assert gains[9] == 1.0 and gains[10] == 1.5 and gains[29] == 1.5 and gains[30] == 1.0  # sudden, held
    steps = np.abs(np.diff(gains[40:81]))
    assert steps.max() < 0.05 and min(gains[40:80]) < 0.65  # slow, reaching the set gain mid-way


def test_noise_and_jpeg_degrade_the_image() -> None:
    img = _scene()
    noisy = ab.add_noise(img, 6.0, np.random.default_rng(0))
    assert 5.0 < float(np.std(noisy.astype(float) - img.astype(float))) < 7.0
    err = {q: float(np.abs(ab.jpeg_roundtrip(img, q).astype(float) - img).mean()) for q in (10, 95)}
    assert err[10] > 2 * err[95] > 0  # strong compression, visibly worse than mild


def test_shake_moves_content() -> None:
    img = _scene()
    c0 = _centroid(img)
    c1 = _centroid(ab.shift_image(img, 3.0, -2.0))
    np.testing.assert_allclose(c1 - c0, [3.0, -2.0], atol=0.3)
    states = [ab.camera_state([ab.Span("shake", 0, 50, {"amplitude_px": 2.0})], t, 1).shake for t in range(50)]
    offs = np.array(states)
    assert 1.0 < offs.std() < 3.0 and np.abs(offs).max() <= 4.0


def test_pan_zooms_in_and_sweeps_the_view() -> None:
    img = _scene()
    c0 = _centroid(img)
    left, right = ab.crop_view(img, 0.8, -1.0), ab.crop_view(img, 0.8, 1.0)
    # window moved left -> content moves right in the output, and the other way round
    assert _centroid(left)[0] > c0[0] + 5 and _centroid(right)[0] < c0[0] - 5
    assert (left[..., 0] >= 240).sum() > 1.3 * (img[..., 0] >= 240).sum()  # zoomed in
    pan = ab.Span("pan", 0, 100, {"zoom": 0.85})
    z = [ab.camera_state([pan], t, 0).zoom for t in range(101)]
    assert z[0] == 1.0 and z[100] == 1.0 and min(z) == pytest.approx(0.85) and np.abs(np.diff(z)).max() < 0.02


def test_scene_cut_mirrors_the_stream_inside_its_span() -> None:
    frame = _scene()
    truth = ab.StreamTruth(0, 10.0, (W, H), np.zeros(6, np.int64), [], [ab.Span("scene_cut", 2, 4, {})],
                           [ab.Span("clip", 0, 6, {"clip": "a"})])
    stats = ab.SceneStats([], np.zeros((H, W), np.float32), np.full(8, 1 / 8), 0.2)
    out = list(ab.render_frames(truth, [], stats, lambda name: [frame] * 6))
    assert np.array_equal(out[0], frame) and np.array_equal(out[5], frame)
    assert np.array_equal(out[2], frame[:, ::-1]) and not np.array_equal(out[2], frame)


def test_clip_joins_cross_fade_from_the_last_frame() -> None:
    a, b = np.zeros((H, W, 3), np.uint8), np.full((H, W, 3), 200, np.uint8)
    truth = ab.StreamTruth(0, 10.0, (W, H), np.zeros(10, np.int64), [], [ab.Span("clip_join", 4, 7, {})],
                           [ab.Span("clip", 0, 4, {"clip": "a"}), ab.Span("clip", 4, 10, {"clip": "b"})])
    stats = ab.SceneStats([], np.zeros((H, W), np.float32), np.full(8, 1 / 8), 0.2)
    means = [f.mean() for f in ab.render_frames(truth, [], stats, lambda n: [a] * 4 if n == "a" else [b] * 6)]
    np.testing.assert_allclose(means, [0, 0, 0, 0, 50, 100, 150, 200, 200, 200], atol=1)


# --------------------------------------------------------------------------------------------- injection


def _stats(activity: np.ndarray | None = None) -> ab.SceneStats:
    crop = np.full((20, 8, 3), 255, np.uint8)
    donor = Donor(crop, np.ones((20, 8), np.float32), bottom_y=90, height=20)
    act = np.zeros((H, W), np.float32) if activity is None else activity
    return ab.SceneStats([("a", donor), ("b", donor)], act, np.array([.3, .05, .15, .01, .3, .05, .1, .04]),
                         20 / 90)


@pytest.mark.parametrize("kind", ab.EVENT_KINDS)
def test_an_injected_object_is_where_the_ground_truth_says(kind: str) -> None:
    act = np.zeros((H, W), np.float32)
    act[60:100, :] = 0.5  # people walk in this band only
    stats = _stats(act)
    path, detail = ab.plan_object(kind, stats, (W, H), 10.0, "a", np.random.default_rng(2))
    donor = stats.donors[path.donor_index][1]
    base = np.zeros((H, W, 3), np.uint8)
    for j in range(len(path.cx)):
        img = base.copy()
        share = ab.paste_path(img, donor, path, j)
        if share < 0.99:
            continue
        c = _centroid(img, 200)
        h = donor.height * path.scale[j]
        np.testing.assert_allclose(c, [path.cx[j], path.bottom[j] - h / 2], atol=1.5)
    if kind == "off_path":
        assert path.bottom.min() - donor.height * path.scale.max() >= 100 or path.bottom.max() <= 60 \
            or detail["activity"] < 0.5
    if kind == "wrong_direction":
        assert detail["direction_deg"] == 135  # the least common bin of the histogram above
        d = np.array([path.cx[-1] - path.cx[0], path.bottom[-1] - path.bottom[0]])
        assert d[0] < 0 and d[1] > 0  # 135 degrees with y down: left and down
    if kind == "fast_object":
        assert detail["speed_h_per_s"] >= 2.5 and abs(path.cx[1] - path.cx[0]) >= 2.5 * 20 / 10
    if kind == "oversize":
        assert path.scale.min() >= 1.8
    if kind == "loitering":
        assert len(path.cx) >= 100 and np.ptp(path.cx) < 3 * donor.height


def test_stream_labels_mark_exactly_the_frames_with_a_pasted_object() -> None:
    frames = [np.repeat(background()[:, :, None], 3, axis=2)] * 40
    cfg = ab.BenchConfig(lead_s=2.0, event_gap_s=(2.0, 3.0), nuisance_s=(500.0, 500.0))
    stats = _stats()
    truth, paths = ab.plan_stream({"a": 40, "b": 40}, 10.0, (W, H), 300, 5, cfg, stats)
    assert truth.events and not [n for n in truth.nuisances if n.kind != "clip_join"]
    out = list(ab.render_frames(truth, paths, stats, lambda name: frames))
    changed = np.array([np.abs(o.astype(int) - frames[0]).max() > 50 for o in out])
    assert truth.labels.sum() > 0
    # every labelled frame shows the object; an unlabelled frame only shows it when less than 30 % visible
    assert changed[truth.labels == 1].all()
    for e in truth.events:
        assert truth.labels[e.start] == 1 and truth.labels[e.stop - 1] == 1 and e.start >= 20  # after the lead
    assert truth.normal_mask().sum() == 300 - sum(e.stop - e.start for e in truth.events)


def test_labels_follow_the_cameras_view_through_a_pan(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pan shows a window of the scene: an object outside it is not labelled, and an event the camera would
    show for less than ``min_visible_s`` is placed later instead (generator 5; 4 labelled what the scene held)."""
    assert ab.view_window(ab.CameraState(), (W, H)) == (0.0, 0.0, W, H)
    x0, y0, x1, y1 = ab.view_window(ab.CameraState(zoom=0.5, pan=1.0), (W, H))
    assert (x0, x1, y0, y1) == (W / 2, W, H / 4, 3 * H / 4)  # the right half of the scene, its middle rows
    monkeypatch.setattr(ab, "NUISANCES", ("pan",))
    frames = [np.repeat(background()[:, :, None], 3, axis=2)] * 40
    cfg = ab.BenchConfig(lead_s=1.0, event_gap_s=(1.0, 2.0), nuisance_s=(12.0, 15.0), clean_gap_s=(0.5, 1.0))
    stats = _stats()
    in_pan = 0
    for seed in range(3):
        truth, paths = ab.plan_stream({"a": 40, "b": 40}, 10.0, (W, H), 500, seed, cfg, stats)
        pans = np.zeros(500, bool)
        for n in truth.nuisances:
            if n.kind == "pan":
                pans[n.start:n.stop] = True
        shown = list(ab.render_frames(truth, paths, stats, lambda name: frames))
        empty = ab.StreamTruth(truth.seed, truth.fps, truth.size, truth.labels, [], truth.nuisances, truth.clips)
        bare = list(ab.render_frames(empty, [], stats, lambda name: frames))
        changed = np.array([np.abs(a.astype(int) - b).max() > 50 for a, b in zip(shown, bare, strict=True)])
        lab = truth.labels == 1
        assert changed[lab].all()  # every labelled frame shows the object in the camera's output
        assert all((truth.labels[e.start:e.stop] == 1).sum() >= 10 for e in truth.events)
        in_pan += int((lab & pans).sum())
    assert in_pan > 50  # the pans did hold events


def test_events_start_after_the_warmup_while_nuisances_start_after_the_lead() -> None:
    """No event inside the normality warm-up (it could never be found); camera nuisances still fall in it."""
    cfg = ab.BenchConfig(lead_s=2.0, events_after_s=15.0, event_gap_s=(2.0, 3.0), nuisance_s=(3.0, 4.0),
                         clean_gap_s=(1.0, 2.0))
    truth, _ = ab.plan_stream({"a": 50, "b": 70}, 10.0, (W, H), 400, 3, cfg, _stats())
    assert truth.events and min(e.start for e in truth.events) >= 150
    assert min(n.start for n in truth.nuisances if n.kind != "clip_join") < 150
    with pytest.raises(ConfigError):
        ab.BenchConfig(events_after_s=-1.0)


def test_no_event_falls_in_the_other_cameras_view() -> None:
    """A scene cut's span shows a view new to the stream: every mode is learning it, so no event goes there."""
    cfg = ab.BenchConfig(lead_s=2.0, events_after_s=5.0, event_gap_s=(1.0, 2.0), nuisance_s=(4.0, 6.0),
                         clean_gap_s=(1.0, 2.0))
    cuts = 0
    for seed in range(6):
        truth, _ = ab.plan_stream({"a": 50, "b": 70}, 10.0, (W, H), 600, seed, cfg, _stats())
        spans = [n for n in truth.nuisances if n.kind == "scene_cut"]
        cuts += len(spans)
        assert truth.events
        assert not [(e, n) for e in truth.events for n in spans if e.start < n.stop + 10 and e.stop > n.start]
    assert cuts >= 3


def test_a_scene_cut_in_the_warm_up_delays_the_first_event() -> None:
    """A cut inside the warm-up pauses it: an event before the prolonged warm-up ends would be learnt as normal."""
    assert ab.warm_up_end(100, [ab.Span("scene_cut", 30, 55, {}), ab.Span("noise", 10, 20, {})], 10.0) == 135
    assert ab.warm_up_end(100, [ab.Span("scene_cut", 120, 150, {})], 10.0) == 100  # after the warm-up: no pause
    cfg = ab.BenchConfig(lead_s=2.0, events_after_s=8.0, event_gap_s=(1.0, 2.0), nuisance_s=(4.0, 6.0),
                         clean_gap_s=(1.0, 2.0))
    early = 0
    for seed in range(12):
        truth, _ = ab.plan_stream({"a": 50, "b": 70}, 10.0, (W, H), 600, seed, cfg, _stats())
        cuts = [n for n in truth.nuisances if n.kind == "scene_cut" and n.start < 80]
        early += bool(cuts)
        assert truth.events[0].start >= ab.warm_up_end(80, truth.nuisances, 10.0)
    assert early >= 2  # the seeds do put cuts inside the warm-up


def test_truth_round_trips_through_json() -> None:
    stats = _stats()
    truth, _ = ab.plan_stream({"a": 50, "b": 70}, 10.0, (W, H), 400, 1, ab.BenchConfig(lead_s=1.0), stats)
    back = ab.StreamTruth.from_dict(json.loads(json.dumps(truth.to_dict())))
    assert back.events == truth.events and back.nuisances == truth.nuisances
    assert np.array_equal(back.labels, truth.labels)


# ----------------------------------------------------------------------------------------------- metrics


def test_event_matching_false_events_and_delay() -> None:
    alerts = [ab.Alert(4.0, 5.0, 6.0),  # before event 1, within tolerance of nothing -> false
              ab.Alert(10.5, 11.5, 13.0),  # on event 1 (10-12)
              ab.Alert(20.0, 21.0, 21.5),  # false
              ab.Alert(29.6, 30.6, 31.0)]  # ends 0.4 s before... starts within 1 s tolerance of event 2 (30.2)?
    events = [(10.0, 12.0), (30.2, 33.0), (50.0, 52.0)]
    found, false = ab.match_alerts(alerts, events, tolerance_s=1.0)
    assert found == [1, 3, None] and false == [True, False, True, False]
    assert ab.detection_delays(alerts, events, found) == pytest.approx([1.5, 0.4])
    # the delay counts until the alert is raised (the head's smoothing holds results back), when recorded
    late = [ab.Alert(10.5, 11.5, 13.0, raised_s=12.4)]
    assert ab.detection_delays(late, events[:1], [0]) == pytest.approx([2.4])
    found0, false0 = ab.match_alerts(alerts, [(40.0, 41.0)], tolerance_s=0.0)
    assert found0 == [None] and all(false0)


def test_measure_counts_false_events_per_hour_recall_and_flags() -> None:
    fps, n = 10.0, 3600  # 6 minutes
    labels = np.zeros(n, np.int64)
    labels[1000:1030] = 1
    labels[2000:2050] = 1
    truth = ab.StreamTruth(0, fps, (W, H), labels, [ab.Span("fast_object", 1000, 1030), ab.Span("oversize", 2000, 2050)],
                           [ab.Span("noise", 500, 800, {"sigma": 5.0})], [ab.Span("clip", 0, n, {"clip": "a"})])
    score = np.where(labels == 1, 5.0, 0.0)
    flagged = labels == 1
    score[600:620], flagged[600:620] = 4.0, True  # one false run, under the noise nuisance
    alerts = [ab.Alert(60.0, 61.0, 62.0, cause="place"), ab.Alert(100.0, 100.8, 103.0, cause="speed")]
    run = ab.ModeRun(np.ones(n, bool), score, flagged, alerts, wall_s=1.0)
    m = ab.measure(truth, run, tolerance_s=1.0)
    s = ab.summarise(m)
    assert m.false_events == 1 and m.events == 2 and m.found == 1
    assert s["event_recall"] == 0.5 and s["median_delay_s"] == pytest.approx(0.8)
    assert s["flagged_normal_frames"] == pytest.approx(20 / (n - 80), abs=1e-4)
    assert s["auc"] > 0.99
    assert s["by_nuisance"]["noise"]["false_events"] == 1 and s["by_nuisance"]["clean"]["false_events"] == 0
    assert s["by_nuisance"]["noise"]["false_events_per_hour"] == pytest.approx(3600 / 30, rel=1e-3)
    assert s["by_kind"]["fast_object"]["event_recall"] == 1.0 and s["by_kind"]["oversize"]["event_recall"] == 0.0
    # which stream raised each alert, and what happened to each event
    assert s["by_cause"] == {"place": {"alerts": 1, "false_events": 1, "join_alerts": 0},
                             "speed": {"alerts": 1, "false_events": 0, "join_alerts": 0}}
    assert [(e["kind"], e["found"], e["cause"], e["nuisances"]) for e in s["events_detail"]] == [
        ("fast_object", True, "speed", []), ("oversize", False, None, [])]
    # an alert whose run starts at a clip join is counted apart, not as a false event
    truth.nuisances.append(ab.Span("clip_join", 3000, 3010))
    run.alerts.append(ab.Alert(300.5, 301.5, 302.0))
    s2 = ab.summarise(ab.measure(truth, run, tolerance_s=1.0))
    assert s2["false_events"] == 1 and s2["join_alerts"] == 1 and s2["by_nuisance"]["clip_join"]["false_events"] == 1


def test_live_schedule_drops_frames_like_a_slow_consumer() -> None:
    keep = ab.live_schedule(1000, 10.0, 2.0, seed=0)
    assert keep[0] and 0.4 < keep.mean() < 0.6
    assert np.diff(np.flatnonzero(keep)).max() <= 3
    assert ab.live_schedule(50, 10.0, 1.0, seed=0).all()


def test_config_and_data_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="seed_set"):
        ab.BenchConfig(seed_set="test")
    with pytest.raises(ConfigError, match="modes"):
        ab.BenchConfig(modes=("offline",))
    with pytest.raises(ConfigError, match="minutes"):
        ab.BenchConfig(minutes=0)
    assert set(ab.SEED_SETS["dev"]).isdisjoint(ab.SEED_SETS["report"])
    with pytest.raises(DatasetError, match="train"):
        ab.list_normal_clips(tmp_path)
    (tmp_path / "test").mkdir()
    write_clip(tmp_path / "test" / "Test001.avi", make_scene(0, n_frames=5)[0])
    with pytest.raises(DatasetError, match="train"):  # the test split is never a source of streams
        ab.list_normal_clips(tmp_path)


# ------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_benchmark_runs_end_to_end_through_the_streaming_pass(tmp_path: Path) -> None:
    from vidseq.config import with_overrides
    from vidseq.monitor import AlertRule, AlertSettings
    from vidseq.pipeline import FrameProcessor, ProcessConfig

    data = tmp_path / "ped"
    (data / "train").mkdir(parents=True)
    for s in range(4):
        write_clip(data / "train" / f"Train{s + 1:03d}.avi", make_scene(s, n_frames=60)[0])
    cfg = ab.BenchConfig(minutes=0.4, seeds=1, modes=("unsupervised", "live"), lead_s=3.0,
                         event_gap_s=(2.0, 3.0), nuisance_s=(3.0, 4.0), clean_gap_s=(1.0, 2.0))
    pcfg = with_overrides(ProcessConfig, {"tracker": {"detector": "regions", "imgsz": 64},
                                          "trajectory": {"enabled": False}, "caption": {"enabled": False},
                                          "video": False, "plot": False, "device": "cpu",
                                          "anomaly": {"fit_s": 2.0}})
    calls: list[str] = []

    def make_processor(mode: str, fps: float, model: str | None) -> FrameProcessor:
        calls.append(mode)
        return FrameProcessor(pcfg, fps)

    report = ab.run_benchmark(data, cfg, tmp_path / "cache", make_processor,
                              lambda: AlertRule(AlertSettings(min_duration_s=0.3)), settings={"x": 1},
                              progress=lambda s: None)
    s = report["summary"]
    assert set(s) >= {"unsupervised", "live", "hours_normal", "events"} and s["seed_set"] == "dev"
    assert s["events"] >= 2 and 0 < s["hours_normal"] < 0.4 / 60
    for mode in ("unsupervised", "live"):
        r = report["modes"][mode]
        assert set(s[mode]) == {"false_events_per_hour", "event_recall", "flagged_normal_frames", "auc",
                                "median_delay_s"}
        assert r["false_events_per_hour"] is not None and 0 <= r["event_recall"] <= 1
        assert r["scored_share"] > 0.5
    assert report["modes"]["live"]["processed_share"] < 0.7 < report["modes"]["unsupervised"]["processed_share"]
    video = Path(report["streams"][0]["video"])
    assert video.is_file() and (video.parent / "truth.json").is_file()
    assert report["model_clips"] == ["Train001.avi", "Train002.avi"]  # streams only from the other half
    # a rerun with the same code and settings reads the cached streams and results
    calls.clear()
    again = ab.run_benchmark(data, cfg, tmp_path / "cache", make_processor,
                             lambda: AlertRule(AlertSettings(min_duration_s=0.3)), settings={"x": 1},
                             progress=lambda s: None)
    assert calls == [] and again["summary"] == s
    runs = [ab.ModeRun.from_npz(p) for p in (tmp_path / "cache" / "results").glob("*.npz")]
    assert len(runs) == 2 and all(a.raised_s is not None and a.raised_s >= a.alert_s for r in runs for a in r.alerts)
    # each frame's cause is kept (what raised a flag, for looking into a result): every flagged frame has one
    assert all(r.cause is not None and r.cause.shape == r.flagged.shape and (r.cause[r.flagged] != "").all()
               for r in runs)


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "no such folder"),
    (["{empty}"], "no train/"),
    (["{empty}", "--seed-set", "report", "--seeds", "99"], "seeds must be"),
    (["{empty}", "--modes", "offline"], "modes"),
])
def test_script_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "empty").mkdir()
    argv = [a.format(missing=tmp_path / "nope", empty=tmp_path / "empty") for a in args]
    res = subprocess.run([sys.executable, str(root / "scripts" / "eval_alarms.py"), *argv,
                          "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True,
                         timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(root)})
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eval_alarms: error:") and message in lines[0], res.stderr
    assert res.stdout == ""
