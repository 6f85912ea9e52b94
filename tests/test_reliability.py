"""Issue 17: nothing lost, nothing misleading. One test (or table) per defect; each fails without its fix."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import time
import typing
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_video

from vidseq.cli import build_parser, main
from vidseq.config import (
    DEFAULT_RANGE,
    default_config_path,
    field_range,
    load_config,
    setting,
)
from vidseq.errors import CameraError, ConfigError, OutputError, OutputLockedError
from vidseq.io import OutputLock, ensure_writable_dir
from vidseq.pipeline import FrameProcessor, ProcessConfig, process_video
from vidseq.registry import CONFIGS

FAST = ["backbone_weights=yolov8n.yaml", "tracker.imgsz=128", "trajectory.model=null"]
FAST_ARGS = [arg for s in FAST for arg in ("--set", s)]


def fast_cfg(**extra: object) -> ProcessConfig:
    return load_config(ProcessConfig, None, [*FAST, *(f"{k}={v}" for k, v in extra.items())])


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def one_error_line(err: str, command: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("vidseq")]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"vidseq {command}: error: "), err
    return lines[0]


class FailingProcessor(FrameProcessor):
    """The real per-frame core that raises ``exc`` when it reaches frame ``at``."""

    def __init__(self, cfg: ProcessConfig, fps: float, at: int, exc: BaseException) -> None:
        super().__init__(cfg, fps)
        self.at, self.exc = at, exc

    def step(self, frame):
        if frame.frame_index == self.at:
            raise self.exc
        return super().step(frame)


# -- 1. locks and staged folders --------------------------------------------------------------------

def test_second_run_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", n_frames=4)
    out = tmp_path / "o" / "v"
    # another run holds it (flock: a second open file description conflicts, even in one process)
    with OutputLock(out), pytest.raises(OutputLockedError, match=rf"being written by another run \(pid {os.getpid()} "):
        process_video(video, out, fast_cfg(), progress=False)
    assert not out.exists()
    assert process_video(video, out, fast_cfg(), progress=False).status == "complete"
    assert not (out.parent / ".v.lock").exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    out = tmp_path / "v"
    (tmp_path / ".v.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    caplog.set_level(logging.INFO, logger="vidseq.io")
    video = write_video(tmp_path / "v.avi", n_frames=3)
    assert process_video(video, out, fast_cfg(), progress=False).status == "complete"
    assert "stale lock" in caplog.text


def test_killed_run_leaves_nothing_at_the_final_path_and_rerun_cleans_up(tmp_path: Path) -> None:
    """A staging folder of a killed run (kill -9) is never mistaken for a result, and is removed next time."""
    video = write_video(tmp_path / "v.avi", n_frames=3)
    out = tmp_path / "v"
    leftover = tmp_path / ".v.partial.abc123"
    leftover.mkdir()
    (leftover / "summary.json").write_text('{"status": "running"}')
    assert process_video(video, out, fast_cfg(), progress=False).status == "complete"
    assert not leftover.exists() and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_two_processes_into_one_folder_never_mix(tmp_path: Path) -> None:
    """The issue's reproduction: two CLI runs with different settings into one --out at the same time."""
    video = write_video(tmp_path / "clip.avi", n_frames=40, size=(96, 64))
    out = tmp_path / "R"
    base = [sys.executable, "-m", "vidseq", "-q", "process", str(video), "--out", str(out), "--no-progress",
            *FAST_ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    a = subprocess.Popen([*base, "--max-frames", "30", "--set", "tracker.conf=0.5"], stderr=subprocess.PIPE,
                         text=True, env=env)
    b = subprocess.Popen([*base, "--max-frames", "20"], stderr=subprocess.PIPE, text=True, env=env)
    (_, err_a), (_, err_b) = a.communicate(timeout=300), b.communicate(timeout=300)
    codes = sorted([a.returncode, b.returncode])
    # one wins; the other is refused by the lock or (if it came second) by the complete result with other settings
    assert codes == [0, 2], (err_a, err_b)
    loser = err_a if a.returncode else err_b
    assert re.search(r"being written by another run|other settings", loser), loser
    s = json.loads((out / "clip" / "summary.json").read_text())
    rows = (out / "clip" / "frames.csv").read_text().strip().splitlines()[1:]
    assert s["status"] == "complete" and len(rows) == s["frames"] == s["config"]["max_frames"]
    assert count_frames(out / "clip" / "annotated.mp4") == s["frames"]


# -- 2. unwritable output folders -------------------------------------------------------------------

def unwritable_dirs(tmp_path: Path) -> list[Path]:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    dirs = [blocker / "out"]  # a path under a file can never be created, even by root
    if os.geteuid() != 0:  # root writes through permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        dirs.append(ro)
    return dirs


@pytest.mark.parametrize("command", ["process", "monitor", "extract", "score"])
def test_unwritable_output_is_one_line_before_any_work(command: str, tmp_path: Path, capsys, monkeypatch) -> None:
    video = write_video(tmp_path / "v.avi", n_frames=3)

    def no_work(*a: object, **k: object) -> None:
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr("vidseq.tasks.anomaly.scoring.score_video_unsupervised", no_work)
    monkeypatch.setattr("vidseq.pipeline.process_video", no_work)
    monkeypatch.setattr("vidseq.monitor.run_monitor", no_work)
    monkeypatch.setattr("vidseq.features.extractor.backbone_from_config", no_work)
    for out in unwritable_dirs(tmp_path):
        args = {"process": ["process", str(video), "--out", str(out)],
                "monitor": ["monitor", "--source", str(video), "--out", str(out)],
                "extract": ["extract", str(video), "--out", str(out)],
                "score": ["score", str(video), "--unsupervised", "--out", str(out)]}[command]
        assert main(args) == 2
        line = one_error_line(capsys.readouterr().err, command)
        assert re.search(r"cannot create output folder|not writable|not a folder", line), line


def test_ensure_writable_dir_reports_what_it_created(tmp_path: Path) -> None:
    assert ensure_writable_dir(tmp_path / "new" / "deep") is True
    assert ensure_writable_dir(tmp_path / "new" / "deep") is False
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match="not a folder"):
        ensure_writable_dir(tmp_path / "f")


def test_disk_errors_during_a_run_are_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import errno

    video = write_video(tmp_path / "v.avi", n_frames=3)

    def full(*a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "v" / "frames.csv"))

    monkeypatch.setattr("vidseq.pipeline.process_video", full)
    assert main(["process", str(video), "--out", str(tmp_path / "o"), *FAST_ARGS]) == 2
    assert "No space left on device" in one_error_line(capsys.readouterr().err, "process")


# -- 3. failed / interrupted runs, validation before writing -----------------------------------------

def mixed_size_folder(path: Path, n_ok: int = 6) -> Path:
    path.mkdir()
    for i in range(n_ok + 2):
        size = (64, 48) if i < n_ok else (80, 60)
        img = np.full((size[1], size[0], 3), 40 + 10 * i, np.uint8)
        cv2.imwrite(str(path / f"{i:03d}.png"), img)
    return path


def test_failure_after_frames_is_marked_failed_with_the_reason(tmp_path: Path, capsys) -> None:
    frames = mixed_size_folder(tmp_path / "frames")
    out = tmp_path / "o"
    assert main(["process", str(frames), "--out", str(out), "--no-progress", *FAST_ARGS]) == 2
    one_error_line(capsys.readouterr().err, "process")
    s = json.loads((out / "frames" / "summary.json").read_text())
    assert s["status"] == "failed" and "mixes frame sizes" in s["error"] and s["frames"] == 6
    assert len((out / "frames" / "frames.csv").read_text().strip().splitlines()) == 1 + 6
    assert count_frames(out / "frames" / "annotated.mp4") == 6  # closed properly, not corrupt


def test_ctrl_c_is_marked_interrupted(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", n_frames=10)
    cfg = fast_cfg()
    proc = FailingProcessor(cfg, 10.0, at=5, exc=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        process_video(video, tmp_path / "v", cfg, progress=False, processor=proc)
    s = json.loads((tmp_path / "v" / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["frames"] == 5


def test_failure_before_any_frame_leaves_nothing(tmp_path: Path, capsys) -> None:
    video = write_video(tmp_path / "v.avi", n_frames=4)
    cfg = fast_cfg()
    proc = FailingProcessor(cfg, 10.0, at=0, exc=CameraError("boom"))
    with pytest.raises(CameraError):
        process_video(video, tmp_path / "o" / "v", cfg, progress=False, processor=proc)
    assert list((tmp_path / "o").iterdir()) == []
    # and through the CLI: missing weights -> no folder, no process_config.yaml
    out = tmp_path / "cli"
    assert main(["process", str(video), "--out", str(out), "--set", "backbone_weights=/nope/missing.pt"]) == 2
    one_error_line(capsys.readouterr().err, "process")
    assert not out.exists()


def test_a_failed_rerun_keeps_the_complete_result(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", n_frames=6)
    cfg = fast_cfg()
    assert process_video(video, tmp_path / "v", cfg, progress=False).status == "complete"
    proc = FailingProcessor(cfg, 10.0, at=3, exc=CameraError("boom"))
    with pytest.raises(CameraError):
        process_video(video, tmp_path / "v", cfg, force=True, progress=False, processor=proc)
    s = json.loads((tmp_path / "v" / "summary.json").read_text())
    assert s["status"] == "complete" and s["frames"] == 6


@pytest.mark.parametrize("override", ["stride=0", "tracker.imgsz=-5", "max_frames=0", "anomaly.fit_s=-3"])
def test_invalid_settings_write_nothing(override: str, tmp_path: Path, capsys) -> None:
    video = write_video(tmp_path / "v.avi", n_frames=3)
    out = tmp_path / "o"
    assert main(["process", str(video), "--out", str(out), "--set", override]) == 2
    line = one_error_line(capsys.readouterr().err, "process")
    assert override.split("=")[0] + ":" in line and "out of range" in line
    assert not out.exists()


# -- 4. ranges ----------------------------------------------------------------------------------------

def numeric_fields(cls: type, prefix: str = "") -> typing.Iterator[tuple[str, dataclasses.Field, object]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from numeric_fields(tp, f"{prefix}{f.name}.")
            continue
        args = typing.get_args(tp) or (tp,)
        flat = [a for arg in args for a in (typing.get_args(arg) or (arg,))]
        if any(a in (int, float) for a in flat):
            yield f"{prefix}{f.name}", f, tp


@pytest.mark.parametrize("name", CONFIGS.names())
def test_every_numeric_setting_has_a_range_that_its_default_and_yaml_meet(name: str) -> None:
    cls = CONFIGS.load(name)
    keys = list(numeric_fields(cls))
    assert keys
    cfg = load_config(cls, default_config_path(name))  # the shipped YAML passes its own ranges
    for key, f, _ in keys:
        assert field_range(f) is not None
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        with pytest.raises(ConfigError, match=re.escape(key)):  # and every key rejects a value out of range
            load_config(cls, default_config_path(name), {key: -1e12})


@dataclasses.dataclass(frozen=True)
class Inner:
    p: float = setting(0.5, ge=0.0, le=1.0)
    n: int = 3


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    sizes: tuple[int, ...] = setting((1, 2), ge=1)
    shift: float = setting(0.0, ge=-5.0, le=5.0)


def test_declared_range_mechanism() -> None:
    assert load_config(Outer, None, {"inner.p": 1.0, "shift": -5}).shift == -5
    for key, value, msg in [("inner.p", 1.5, r"inner\.p: 1\.5 is out of range \(>= 0, <= 1\)"),
                            ("inner.n", -1, r"inner\.n: -1 is out of range \(>= 0\)"),
                            ("sizes", [1, 0], r"sizes\[1\]: 0 is out of range"),
                            ("shift", float("inf"), r"shift: inf is out of range"),
                            ("inner.n", float("nan"), r"inner\.n")]:
        with pytest.raises(ConfigError, match=msg):
            load_config(Outer, None, {key: value})
    assert DEFAULT_RANGE.ge == 0


def test_monitor_duration_must_be_positive(tmp_path: Path, capsys) -> None:
    assert main(["monitor", "--source", str(tmp_path / "x.mp4"), "--duration", "-5", "--out",
                 str(tmp_path / "m")]) == 2
    assert "duration_s: -5.0 is out of range (> 0)" in one_error_line(capsys.readouterr().err, "monitor")
    assert not (tmp_path / "m").exists()


# -- 6. CLI texts -----------------------------------------------------------------------------------

def test_top_level_help_is_for_users(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "vidseq process VIDEO --out" in out and "``" not in out and "register(" not in out


@pytest.mark.parametrize("option", ["--out", "--max-frames", "--stride", "--device", "--no-video", "--no-progress"])
def test_process_options_have_help(option: str) -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    action = next(a for a in sub.choices["process"]._actions if option in a.option_strings)
    assert action.help and len(action.help) > 10


def test_every_set_example_in_help_is_a_real_key() -> None:
    from vidseq.config import parse_override

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        action = next((a for a in parser._actions if "--set" in a.option_strings), None)
        if action is None:
            continue
        example = re.search(r"--set (\S+=\S+)", action.help or "")
        assert example, name
        cfg_name = {"score": "anomaly", "tune": "anomaly", "train": None, "eval": None}.get(name, name)
        if cfg_name in CONFIGS.names():
            key, value = parse_override(example.group(1))
            load_config(CONFIGS.load(cfg_name), None, {key: value})


def test_score_takes_set(tmp_path: Path) -> None:
    video = write_video(tmp_path / "u.avi", n_frames=16)
    assert main(["-q", "score", str(video), "--unsupervised", "--fit-seconds", "1", "--out", str(tmp_path),
                 "--set", "model.smooth_sigma_s=0"]) == 0
    assert main(["-q", "score", str(video), "--unsupervised", "--out", str(tmp_path / "x"),
                 "--set", "model.smooth_sigma_s=-1"]) == 2
    assert not (tmp_path / "x").exists()


def test_unknown_key_hint_has_the_full_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'anomaly.fit_sx' \(did you mean 'anomaly.fit_s'\?\)"):
        load_config(ProcessConfig, None, {"anomaly.fit_sx": 3})


def test_caption_note_does_not_name_a_file_the_monitor_never_writes() -> None:
    proc = FrameProcessor(fast_cfg(), 10.0)
    assert proc.notes and not any("captions.jsonl" in n for n in proc.notes)


def test_closed_stream_port_is_not_described_as_a_camera() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from vidseq.video.sources import LiveSource

    with pytest.raises(CameraError) as info:
        LiveSource(f"http://127.0.0.1:{port}/video.mjpg", open_timeout_s=2.0)
    msg = str(info.value)
    assert "stream" in msg and "busy" not in msg and "permission" not in msg


# -- 7. progress without a terminal ----------------------------------------------------------------

def test_progress_is_logged_at_an_interval_without_a_tty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    video = write_video(tmp_path / "v.avi", n_frames=6)
    caplog.set_level(logging.INFO, logger="vidseq.pipeline")
    process_video(video, tmp_path / "a", fast_cfg(), progress=False, log_every_s=0.0)
    lines = [r.getMessage() for r in caplog.records if "frames/s" in r.getMessage()]
    assert len(lines) == 6 and lines[-1].startswith("v.avi: 6/6 frames")
    caplog.clear()
    process_video(video, tmp_path / "b", fast_cfg(), progress=False, log_every_s=None)
    assert not [r for r in caplog.records if "frames/s" in r.getMessage()]


def test_extract_logs_progress_without_a_tty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from vidseq.features.backbones import create_backbone
    from vidseq.features.extractor import extract_features

    video = write_video(tmp_path / "v.avi", n_frames=8)
    backbone = create_backbone("resnet18", pretrained=False, imgsz=32, feature_dim=8, device="cpu")
    caplog.set_level(logging.INFO, logger="vidseq.features.extractor")
    extract_features(video, backbone, batch_size=2, progress=False, log_every_s=0.0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("extract v.avi:")]
    assert len(lines) == 4 and lines[-1].startswith("extract v.avi: 8/8 frames")


def test_cli_without_tty_logs_progress(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", n_frames=4)
    code = ("import vidseq.pipeline as p; p.PROGRESS_LOG_INTERVAL_S = 0.0; from vidseq.cli import main; "
            f"raise SystemExit(main(['process', {str(video)!r}, '--out', {str(tmp_path / 'o')!r}, "
            f"*{FAST_ARGS!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "v.avi: 4/4 frames" in r.stderr


# -- 8. overlays scale with the frame --------------------------------------------------------------

@pytest.mark.parametrize("size", [(176, 144), (360, 240), (1920, 1080)])
def test_labels_stay_off_the_object_and_the_panels(size: tuple[int, int]) -> None:
    from vidseq import viz

    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    top, bottom = viz.status_height(img, 2), viz.score_bar_height(img) + viz.caption_height(img, "a caption")
    color = np.array(viz.color_for_id(7))

    def label_rows(box: np.ndarray) -> np.ndarray:
        """Rows holding the filled tag: pixels of the id colour that are not the box outline."""
        with_label = viz.draw_tracks(img, [(7, "person", box, 0.9)], top=top, bottom=bottom)
        outline = np.any(viz.draw_tracks(img, [(None, None, box, None)]) != 0, axis=2)  # same box, no tag
        tag = np.all(with_label == color, axis=2) & ~outline
        return np.where(tag.any(axis=1))[0]

    box = np.array([0.1 * w, 2, 0.3 * w, 0.5 * h])  # touching the top edge: no room above
    rows = label_rows(box)
    assert rows.size
    assert rows.min() >= box[3] and rows.max() < h - bottom  # below the box, above the bottom panels
    mid = np.array([0.4 * w, 0.4 * h, 0.6 * w, 0.6 * h])  # room above: the label sits above, below the status
    rows = label_rows(mid)
    assert rows.size and rows.max() <= round(mid[1]) and rows.min() >= top


def test_frame_drawer_labels_avoid_the_score_strip(tmp_path: Path) -> None:
    """process: a label never lands inside the score strip drawn after it."""
    from vidseq import viz
    from vidseq.pipeline import FrameDrawer
    from vidseq.tasks.stream import FrameResult
    from vidseq.tracking.tracks import Detections
    from vidseq.video.sources import Frame

    w, h = 360, 240
    frame = Frame(np.zeros((h, w, 3), np.uint8), 0, 0.0)
    dets = Detections(0, 0.0, xyxy=np.array([[100.0, 150.0, 140.0, 239.0]], np.float32),
                      conf=np.array([0.9], np.float32), class_id=np.array([0]), track_id=np.array([4]),
                      labels=("person",))
    r = FrameResult(frame, dets, np.zeros(4, np.float32))
    r.anomaly_score, r.is_anomaly = 1.0, False
    proc = type("P", (), {"heads": [type("H", (), {"name": "anomaly", "threshold": 2.0})()]})()
    img = FrameDrawer(fast_cfg(), 10.0).draw(r, proc)
    strip = viz.score_bar_height(img)
    color = np.array(viz.color_for_id(4))
    assert not np.all(img[h - strip:] == color, axis=2).any()
    assert np.all(img[: h - strip] == color, axis=2).sum() > 50


# -- 9. truncated input ----------------------------------------------------------------------------

def test_truncated_input_is_recorded(tmp_path: Path, capsys) -> None:
    full = write_video(tmp_path / "full.avi", n_frames=40)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.6)])
    assert main(["process", str(cut), "--out", str(tmp_path / "o"), "--no-progress", *FAST_ARGS]) == 0
    s = json.loads((tmp_path / "o" / "cut" / "summary.json").read_text())
    assert s["status"] == "complete" and s["truncated"] is True
    assert s["frames_read"] == s["frames"] < 40 and s["video"]["frame_count"] == 40
    assert "truncated input" in capsys.readouterr().err
    s_full = process_video(full, tmp_path / "f", fast_cfg(), progress=False).summary
    assert "truncated" not in s_full


# -- monitor: constant memory over long runs -------------------------------------------------------

def test_monitor_keeps_a_bounded_latency_window() -> None:
    from vidseq.monitor import LATENCY_WINDOW, MonitorStats

    stats = MonitorStats()
    for i in range(LATENCY_WINDOW + 500):
        stats.latency_ms.append(float(i))
    assert len(stats.latency_ms) == LATENCY_WINDOW  # a week-long run does not grow a list per frame
    assert stats.summary()["latency_ms_median"] == pytest.approx(500 + (LATENCY_WINDOW - 1) / 2, abs=1)


class StallingMjpegServer:
    """127.0.0.1 MJPEG server that sends ``n_frames`` frames and then keeps the connection open, silent;
    reconnections get no frames at all."""

    def __init__(self, n_frames: int = 30) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        _, jpg = cv2.imencode(".jpg", np.full((64, 96, 3), 120, np.uint8))
        data = jpg.tobytes()
        self.stop = threading.Event()
        self.stalled = threading.Event()
        self.connections = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # http.server API name
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=f")
                self.end_headers()
                server.connections += 1
                try:
                    for _ in range(n_frames if server.connections == 1 else 0):
                        self.wfile.write(b"--f\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data)
                                         + data + b"\r\n")
                        self.wfile.flush()
                        server.stop.wait(0.04)
                    server.stalled.set()
                    server.stop.wait(120)  # stall: connected, nothing sent
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/s.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.timeout(60)
def test_monitor_stops_during_a_stalled_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Ctrl-C (the stop event) ends the monitor while the stream sends nothing: the source is closed from
    outside instead of the loop waiting for the read timeout (10 s) and reconnects."""
    import threading

    from vidseq import monitor

    stepped = threading.Event()

    class Processor(FrameProcessor):
        def step(self, frame):
            stepped.set()
            return super().step(frame)

    monkeypatch.setattr(monitor, "FrameProcessor", Processor)
    server = StallingMjpegServer(n_frames=60)
    stop = threading.Event()

    def ctrl_c_during_the_stall() -> None:
        server.stalled.wait(50)
        stepped.wait(50)
        time.sleep(1.0)  # the loop is now waiting for a frame that does not come
        stop.set()

    threading.Thread(target=ctrl_c_during_the_stall, daemon=True).start()
    try:
        cfg = load_config(monitor.MonitorConfig, None, [f"pipeline.{s}" for s in FAST])
        caplog.set_level(logging.INFO, logger="vidseq.monitor")
        result = monitor.run_monitor(server.url, tmp_path / "m", cfg, stop=stop)
        assert "no frame arrived in time" in caplog.text  # ended by closing the stalled source
        assert result["status"] == "stopped" and result["frames"] > 0 and result["reconnects"] == 0
        assert json.loads((tmp_path / "m" / "monitor_summary.json").read_text())["status"] == "stopped"
    finally:
        server.close()


def test_monitor_forgets_long_finished_tracks() -> None:
    from vidseq.monitor import FINISHED_TRACKS_KEEP_S, forget_finished_tracks
    from vidseq.tracking.tracks import Track

    def track(tid: int, last_s: float) -> Track:
        t = Track(tid, "person")
        t.add(0, last_s, np.array([0, 0, 1, 1], np.float32), 0.9, None)
        return t

    proc = FrameProcessor(fast_cfg(), 10.0)
    proc.tracker.finished[:] = [track(1, 0.0), track(2, 100.0 - FINISHED_TRACKS_KEEP_S / 2)]
    forget_finished_tracks(proc, 100.0)
    assert [t.track_id for t in proc.tracker.finished] == [2]


@pytest.mark.timeout(120)
def test_monitor_stops_cleanly_on_sigterm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A service manager stops the monitor with SIGTERM: it ends like Ctrl-C, status "stopped", not "running".
    (The handler run_monitor installs is called directly: a real signal could reach pytest after the run.)"""
    import signal
    import threading

    from vidseq import monitor

    stepped = threading.Event()
    seen: dict[str, object] = {}

    class Processor(FrameProcessor):
        def step(self, frame):
            stepped.set()
            return super().step(frame)

    def service_manager_stop() -> None:
        stepped.wait(60)
        handler = signal.getsignal(signal.SIGTERM)
        seen["handler"] = handler
        if callable(handler):
            handler(signal.SIGTERM, None)

    monkeypatch.setattr(monitor, "FrameProcessor", Processor)
    video = write_video(tmp_path / "v.avi", n_frames=600, fps=25.0)
    cfg = load_config(monitor.MonitorConfig, None, [f"pipeline.{s}" for s in FAST])
    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=service_manager_stop, daemon=True).start()
    result = monitor.run_monitor(str(video), tmp_path / "m", cfg)  # realtime: 24 s of video
    assert callable(seen.get("handler")) and seen["handler"] is not before  # run_monitor handles SIGTERM
    assert result["status"] == "stopped" and 0 < result["frames"]
    assert json.loads((tmp_path / "m" / "monitor_summary.json").read_text())["status"] == "stopped"
    assert signal.getsignal(signal.SIGTERM) == before  # and puts the previous handler back
