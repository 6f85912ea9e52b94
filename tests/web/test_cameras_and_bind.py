"""Several cameras in one process (one dead), camera YAML files, ``--web`` address and token policy."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from vidseq.cli import main
from vidseq.config import load_config
from vidseq.errors import ConfigError
from vidseq.monitor import CameraMonitor, MonitorConfig, load_cameras
from vidseq.web import WebError, WebSettings, parse_bind, resolve_token, serve_monitor

FAST = ["pipeline.backbone_weights=yolov8n.yaml", "pipeline.tracker.imgsz=128", "pipeline.trajectory.model=null",
        "pipeline.anomaly.fit_s=1.0"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("text, host, port", [
    ("8080", "127.0.0.1", 8080), ("127.0.0.1:0", "127.0.0.1", 0), ("0.0.0.0:9000", "0.0.0.0", 9000),
    ("[::1]:8081", "::1", 8081), ("localhost:1", "localhost", 1),
])
def test_parse_bind(text: str, host: str, port: int) -> None:
    b = parse_bind(text)
    assert (b.host, b.port) == (host, port)


@pytest.mark.parametrize("text", ["abc", "127.0.0.1:", ":80", "1.2.3.4:70000", "[::1]8080", "host:-1"])
def test_parse_bind_rejects(text: str) -> None:
    with pytest.raises(WebError):
        parse_bind(text)


def test_token_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDSEQ_WEB_TOKEN", raising=False)
    assert resolve_token(parse_bind("127.0.0.1:1"), None) == (None, False)
    with pytest.raises(WebError, match="--token"):
        resolve_token(parse_bind("0.0.0.0:1"), None)
    with pytest.raises(WebError, match="8-256"):
        resolve_token(parse_bind("0.0.0.0:1"), "short")
    with pytest.raises(WebError, match="8-256"):
        resolve_token(parse_bind("0.0.0.0:1"), "has spaces; and=cookie")
    token, generated = resolve_token(parse_bind("0.0.0.0:1"), "auto")
    assert generated and len(token) >= 32
    assert resolve_token(parse_bind("0.0.0.0:1"), "auto")[0] != token
    monkeypatch.setenv("VIDSEQ_WEB_TOKEN", "from-the-environment")
    assert resolve_token(parse_bind("0.0.0.0:1"), None) == ("from-the-environment", False)


def test_cli_refuses_public_bind_without_token(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch, make_video) -> None:
    monkeypatch.delenv("VIDSEQ_WEB_TOKEN", raising=False)
    video = make_video(tmp_path / "cam.avi")
    out = tmp_path / "out"
    assert main(["monitor", "--source", str(video), "--out", str(out), "--web", "0.0.0.0:0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidseq monitor: error: --web 0.0.0.0:0 listens beyond")
    assert not out.exists()  # refused before anything was loaded or written


def test_load_cameras_overrides_and_errors(tmp_path: Path) -> None:
    base = load_config(MonitorConfig, None, ["alerts.cooldown_s=5"])
    f = tmp_path / "cams.yaml"
    f.write_text("cameras:\n"
                 "  - {name: door, source: 0, alerts: {threshold: 0.7}}\n"
                 "  - {name: yard, source: rtsp://cam/yard, alerts.min_duration_s: 2, pipeline: {anomaly: {fit_s: 30}}}\n")
    door, yard = load_cameras(f, base)
    assert (door.name, door.source, door.cfg.alerts.threshold, door.cfg.alerts.cooldown_s) == ("door", "0", 0.7, 5.0)
    assert yard.cfg.alerts.threshold is None and yard.cfg.alerts.min_duration_s == 2.0
    assert yard.cfg.alerts.cooldown_s == 5.0 and yard.cfg.pipeline.anomaly.fit_s == 30.0
    bad = {
        "cameras: []\n": "non-empty list",
        "cameras:\n  - {source: 0}\n": "'name'",
        "cameras:\n  - {name: 'a b', source: 0}\n": "'name'",
        "cameras:\n  - {name: a}\n": "'source'",
        "cameras:\n  - {name: a, source: 0}\n  - {name: a, source: 1}\n": "duplicate",
        "cameras:\n  - {name: a, source: 0, alerts: {treshold: 1}}\n": "did you mean 'alerts.threshold'",
        "cams: []\n": "unknown top-level key",
    }
    for text, message in bad.items():
        f.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_cameras(f, base)


def test_dead_camera_reconnects_while_the_other_scores(tmp_path: Path, make_video) -> None:
    """Two cameras, one a dead URL: the good one learns and scores, the dead one says reconnecting; the
    dashboard shows both; stopping ends every thread."""
    cfg = load_config(MonitorConfig, None, [*FAST, "realtime=true"])
    video = make_video(tmp_path / "good.avi", n_frames=600, size=(96, 64), fps=15.0)  # 40 s: outlasts a slow start
    dead_url = f"http://127.0.0.1:{closed_port()}/cam.mjpg"
    cams = [CameraMonitor("good", str(video), tmp_path / "good", cfg, persistent=True),
            CameraMonitor("dead", dead_url, tmp_path / "dead", cfg, persistent=True)]
    stop = threading.Event()
    urls: list[str] = []
    threads_before = set(threading.enumerate())
    server = threading.Thread(target=serve_monitor, args=(cams, parse_bind("127.0.0.1:0"), WebSettings(), stop),
                              kwargs={"announce": urls.append}, name="test-serve")
    server.start()
    try:
        deadline = time.monotonic() + 60  # generous: the box may be loaded
        while not urls and time.monotonic() < deadline:
            time.sleep(0.05)
        base = urls[0].split()[1].rstrip("/")
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            status = httpx.get(base + "/api/status", timeout=5).json()
            states = {c["name"]: c["state"] for c in status["cameras"]}
            if states.get("good") == "scoring" and states.get("dead") == "reconnecting":
                break
            time.sleep(0.2)
        assert states == {"good": "scoring", "dead": "reconnecting"}
        dead = next(c for c in status["cameras"] if c["name"] == "dead")
        assert "cannot open stream" in dead["detail"] and dead["frames"] == 0
        metrics = httpx.get(base + "/metrics", timeout=5).text
        assert 'vidseq_camera_up{camera="good",state="scoring"} 1' in metrics
        assert 'vidseq_camera_up{camera="dead",state="reconnecting"} 0' in metrics
    finally:
        stop.set()
        server.join(30)
    assert not server.is_alive()
    leftover = [t for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert not [t.name for t in leftover if t.name.startswith(("vidseq", "test-serve"))]
    assert (tmp_path / "good" / "monitor_summary.json").is_file() and (tmp_path / "dead" / "events.jsonl").is_file()


def test_cli_cameras_file_runs_each_camera_into_its_folder(tmp_path: Path, make_video,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    video = make_video(tmp_path / "lobby.avi", n_frames=45, size=(96, 64), fps=15.0)
    cams = tmp_path / "cams.yaml"
    cams.write_text(f"cameras:\n  - {{name: lobby, source: '{video}', alerts: {{threshold: 0.5}}}}\n"
                    f"  - {{name: gone, source: 'http://127.0.0.1:{closed_port()}/x.mjpg'}}\n")
    out = tmp_path / "out"
    args = ["monitor", "--cameras", str(cams), "--out", str(out), "--duration", "4",
            *[a for kv in FAST for a in ("--set", kv)]]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(x) for x in lines if x.startswith("{")]
    assert [r["camera"] for r in rows] == ["lobby", "gone"]
    assert rows[0]["frames"] > 0 and rows[1]["frames"] == 0
    for name in ("lobby", "gone"):
        assert (out / name / "monitor_summary.json").is_file() and (out / name / "events.jsonl").is_file()


def test_cli_port_in_use_is_one_line(tmp_path: Path, make_video, capsys: pytest.CaptureFixture[str]) -> None:
    video = make_video(tmp_path / "cam.avi")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["monitor", "--source", str(video), "--out", str(tmp_path / "out"), "--web",
                     f"127.0.0.1:{port}", *[a for kv in FAST for a in ("--set", kv)]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"vidseq monitor: error: cannot listen on 127.0.0.1:{port}")


def test_a_live_camera_without_frames_shows_reconnecting(tmp_path: Path) -> None:
    from vidseq.monitor import STALL_S

    cam = CameraMonitor("door", "rtsp://door.local/stream", tmp_path, load_config(MonitorConfig, None, []))
    assert cam.state()[0] == "connecting"
    cam._live = True  # as after opening a live source and scoring a frame
    cam._publish(np.zeros((4, 4, 3), np.uint8), time.monotonic(), 0.1, False, True, head=object())
    assert cam.state()[0] == "scoring"
    cam._last_frame_at = time.monotonic() - STALL_S - 1  # the reader stopped delivering (lost stream)
    state, detail = cam.state()
    assert state == "reconnecting" and detail.startswith("no frame for")


def test_latency_history_is_bounded_for_long_runs() -> None:
    from vidseq.monitor import LATENCY_WINDOW, MonitorStats

    stats = MonitorStats()
    stats.latency_ms.extend([5.0] * LATENCY_WINDOW + [7.0] * 10)
    assert len(stats.latency_ms) == LATENCY_WINDOW and stats.latency_ms[-1] == 7.0
    assert stats.summary()["latency_ms_median"] == 5.0
