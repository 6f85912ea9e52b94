from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidseq.cli import main
from vidseq.config import load_config
from vidseq.errors import ConfigError
from vidseq.monitor import AlertRule, AlertSettings, MonitorConfig, run_monitor

FAST = ["pipeline.backbone_weights=yolov8n.yaml", "pipeline.tracker.imgsz=128", "pipeline.trajectory.model=null"]


def test_alert_rule_min_duration_and_cooldown() -> None:
    rule = AlertRule(AlertSettings(min_duration_s=0.3, cooldown_s=2.0, merge_gap_s=0.0))
    fps = 10
    flags = [0] * 5 + [1] * 2 + [0] * 3 + [1] * 6 + [0] * 5 + [1] * 6 + [0] * 30 + [1] * 5 + [0]
    started, ended = [], []
    for i, f in enumerate(flags):
        s, e = rule.update(i / fps, bool(f), float(f))
        if s:
            started.append(round(s["start_s"], 2))
        if e:
            ended.append(round(e["end_s"], 2))
    # 2-frame blip too short; the 6-frame run alerts; the next run is inside the cooldown; the last alerts
    assert started == [1.0, 5.7]
    assert ended == [1.6, 6.2]


def test_a_run_that_outlasts_the_cooldown_still_alerts() -> None:
    """The cooldown spaces alerts out; a long anomaly that starts just after a (false) alert is not swallowed."""
    rule = AlertRule(AlertSettings(min_duration_s=0.3, cooldown_s=2.0))
    flags = [1] * 5 + [0] * 5 + [1] * 30 + [0]  # alert at 0.3 s; the next run starts at 1.0 s and lasts 3 s
    started = []
    for i, f in enumerate(flags):
        s, _ = rule.update(i / 10, bool(f), float(f))
        if s:
            started.append((round(s["start_s"], 2), round(s["alert_s"], 2)))
    assert len(started) == 2 and started[0] == (0.0, 0.3)
    assert started[1][0] == 1.0 and 2.3 <= started[1][1] <= 2.4  # raised when the cooldown ends, dated from the run


def alerts_raised(settings: AlertSettings, runs: list[tuple]) -> list[tuple[float, float]]:
    """``(start_s, alert_s)`` of the alerts raised for ``runs`` of ``(frames, score[, cause])`` at 10 frames/s
    (score 0: normal frames)."""
    rule, out, i = AlertRule(settings), [], 0
    for n, score, *cause in runs:
        for _ in range(n):
            s, _ = rule.update(i / 10, score > 0, score if score > 0 else None, *cause)
            if s:
                out.append((round(s["start_s"], 2), round(s["alert_s"], 2)))
            i += 1
    return out


def test_a_strong_run_inside_the_cooldown_of_a_weak_alert_is_not_swallowed() -> None:
    """A short, weak false alarm must not silence a real event seconds later: a run scoring over ``escalate`` x the
    last alert's peak alerts at once. A run like the last one stays held by the cooldown."""
    weak_then_strong = [(12, 1.2), (30, 0.0), (20, 5.0), (5, 0.0)]  # 1.2 s at 1.2; 3 s later 2 s at 5
    assert alerts_raised(AlertSettings(), weak_then_strong) == [(0.0, 1.0), (4.2, 5.2)]
    assert alerts_raised(AlertSettings(escalate=None), weak_then_strong) == [(0.0, 1.0)]
    alike = [(12, 1.2), (30, 0.0), (20, 1.5), (5, 0.0)]
    assert alerts_raised(AlertSettings(), alike) == [(0.0, 1.0)]


def test_a_trained_model_s_track_evidence_alerts_after_half_a_second() -> None:
    """A trained model's ``tracks`` score adds up a track's evidence over the seconds it has been followed, so a
    wrong-way walker crosses the threshold late and, when the track breaks (a clip join, camera shake), only
    briefly: 0.5 s of such frames (``integrated``) alerts. The same run on a per-frame cue, or on a stream's own
    unsupervised ``tracks`` (not integrated), does not, nor with the setting off; integrated seconds count
    whatever cue the run began on."""
    brief = [(7, 1.5, "tracks", True), (20, 0.0)]
    assert alerts_raised(AlertSettings(), brief) == [(0.0, 0.5)]
    assert alerts_raised(AlertSettings(), [(7, 1.5, "tracks", False), (20, 0.0)]) == []
    assert alerts_raised(AlertSettings(), [(7, 1.5, "speed"), (20, 0.0)]) == []
    assert alerts_raised(AlertSettings(tracks_min_duration_s=None), brief) == []
    assert alerts_raised(AlertSettings(), [(5, 1.5, "tracks", True), (20, 0.0)]) == []  # 0.4 s: too short
    mixed = [(4, 1.5, "speed"), (6, 1.5, "tracks", True), (20, 0.0)]  # 0.3 s of speed, then tracks steps
    assert alerts_raised(AlertSettings(), mixed) == [(0.0, 0.8)]
    with pytest.raises(ConfigError):
        load_config(MonitorConfig, None, ["alerts.tracks_min_duration_s=-1"])


def test_runs_a_moment_apart_add_up_their_anomalous_time() -> None:
    """Someone pacing up and down is flagged in short runs, each under ``min_duration_s``: runs less than
    ``merge_gap_s`` apart add up (the gaps do not count), and the alert is dated from the first run. Without
    merging they raise nothing; runs farther apart stay apart; an alert ends with its run, so an event a few
    seconds later is alerted on by itself."""
    pacing = [(7, 1.2), (10, 0.0), (7, 1.2), (10, 0.0), (7, 1.2), (30, 0.0)]  # 0.6 s flagged, 1 s gaps
    assert alerts_raised(AlertSettings(merge_gap_s=0.0), pacing) == []
    assert alerts_raised(AlertSettings(merge_gap_s=1.5), pacing) == [(0.0, 2.1)]  # 0.6 + 0.4 s of the second
    assert alerts_raised(AlertSettings(merge_gap_s=0.5), pacing) == []
    far = [(7, 1.2), (20, 0.0), (7, 1.2), (30, 0.0)]  # 2 s apart
    assert alerts_raised(AlertSettings(merge_gap_s=1.5), far) == []
    # the alert ends with its run: the second event (cooldown 0) alerts after its own min_duration_s
    two = [(15, 1.2), (10, 0.0), (15, 1.2), (5, 0.0)]
    assert alerts_raised(AlertSettings(merge_gap_s=1.5, cooldown_s=0.0), two) == [(0.0, 1.0), (2.5, 3.5)]
    with pytest.raises(Exception, match="merge_gap_s"):
        load_config(MonitorConfig, None, ["alerts.merge_gap_s=-1"])


def test_bad_escalate_is_refused() -> None:
    from vidseq.errors import ConfigError

    with pytest.raises(ConfigError, match="escalate"):
        load_config(MonitorConfig, None, ["alerts.escalate=1.0"])
    assert load_config(MonitorConfig, None, ["alerts.escalate=null"]).alerts.escalate is None


def test_an_alert_names_the_anomaly_stream_behind_most_of_its_run() -> None:
    rule = AlertRule(AlertSettings(min_duration_s=0.2, cooldown_s=0.0))
    causes = [None, "speed", "direction", "direction", "direction", "speed", None]
    flags = [0, 1, 1, 1, 1, 1, 0]
    started = ended = None
    for i, (f, c) in enumerate(zip(flags, causes, strict=True)):
        s, e = rule.update(i / 10, bool(f), float(f), c)
        started, ended = started or s, ended or e
    assert started is not None and ended is not None and ended["cause"] == "direction"
    # a new run counts its own frames only
    for i, c in enumerate(["speed"] * 4 + [None]):
        s, e = rule.update(1.0 + i / 10, c is not None, 1.0, c)
        ended = e or ended
    assert ended["cause"] == "speed"


def test_monitor_realtime_file(tmp_path: Path, make_video) -> None:
    video = make_video(tmp_path / "cam.avi", n_frames=30, size=(96, 64), fps=15.0)
    cfg = load_config(MonitorConfig, None, [*FAST, "realtime=true"])
    out = tmp_path / "mon"
    result = run_monitor(str(video), out, cfg)
    assert result["frames"] > 0 and result["frames"] + result["dropped"] <= 30
    assert result["latency_ms_median"] is not None and result["latency_ms_p95"] >= result["latency_ms_median"]
    summary = json.loads((out / "monitor_summary.json").read_text())
    assert summary["status"] == "stopped"
    assert (out / "events.jsonl").is_file()


def test_monitor_cli_bad_camera(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["monitor", "--source", "93", "--out", str(tmp_path)]) == 2
    assert "cannot open camera 93" in capsys.readouterr().err
