"""``vidseq monitor``: a live loop over a camera, stream or file, with anomaly alerts and event clips.

The source is read with latest-frame semantics (lag never grows; drops are counted and shown), the
shared :class:`~vidseq.pipeline.FrameProcessor` scores each frame, and alert rules turn scores into
events: a run of anomalous frames at least ``min_duration_s`` long raises an alert unless one was raised
less than ``cooldown_s`` ago. Each event is saved as a clip with ``pre_roll_s`` seconds before it (from a
ring buffer) and ``post_roll_s`` after, and appended to ``events.jsonl``. Without a trained anomaly model
the anomaly head learns normality from the first seconds (said on screen and in the logs).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vidseq.config import to_dict
from vidseq.io import atomic_write_json
from vidseq.pipeline import FrameDrawer, FrameProcessor, ProcessConfig
from vidseq.tasks.stream import FrameResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertSettings:
    min_duration_s: float = 1.0  # anomalous for at least this long before an alert
    cooldown_s: float = 10.0  # no new alert within this long after the previous one started
    pre_roll_s: float = 3.0  # clip seconds before the alert
    post_roll_s: float = 3.0  # clip seconds after the event ends
    max_clip_s: float = 60.0  # a clip never grows beyond this


@dataclass(frozen=True)
class MonitorConfig:
    """``configs/monitor.yaml``."""

    pipeline: ProcessConfig = field(default_factory=ProcessConfig)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    duration_s: float | None = None  # stop after this long (None: until the source ends or Ctrl-C)
    save_clips: bool = True
    show: bool = False  # on-screen window (needs a display)
    realtime: bool = True  # a file source is played at its own fps like a camera


@dataclass
class MonitorStats:
    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    alerts: int = 0
    latency_ms: list[float] = field(default_factory=list)  # capture -> score, per frame
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> dict[str, Any]:
        lat = np.array(self.latency_ms) if self.latency_ms else np.array([np.nan])
        elapsed = time.monotonic() - self.started
        return {"frames": self.frames, "dropped": self.dropped, "reconnects": self.reconnects, "alerts": self.alerts,
                "elapsed_s": round(elapsed, 2), "fps": round(self.frames / max(elapsed, 1e-9), 2),
                "latency_ms_median": None if np.isnan(lat).all() else round(float(np.nanmedian(lat)), 1),
                "latency_ms_p95": None if np.isnan(lat).all() else round(float(np.nanpercentile(lat, 95)), 1)}


class AlertRule:
    """Anomalous runs -> events with minimum duration and cooldown."""

    def __init__(self, settings: AlertSettings) -> None:
        self.s = settings
        self.run_start: float | None = None
        self.last_alert: float | None = None
        self.active: dict[str, Any] | None = None

    def update(self, t: float, is_anomaly: bool, score: float | None) -> tuple[dict[str, Any] | None,
                                                                              dict[str, Any] | None]:
        """Returns ``(started_event, ended_event)`` for time ``t``."""
        started = ended = None
        if is_anomaly:
            if self.run_start is None:
                self.run_start = t
            if self.active is None and t - self.run_start >= self.s.min_duration_s and (
                    self.last_alert is None or self.run_start - self.last_alert >= self.s.cooldown_s):
                self.active = {"start_s": self.run_start, "alert_s": t, "peak_score": score, "peak_s": t}
                self.last_alert = self.run_start
                started = self.active
            if self.active is not None and score is not None and (self.active["peak_score"] is None
                                                                  or score > self.active["peak_score"]):
                self.active.update(peak_score=score, peak_s=t)
        else:
            self.run_start = None
            if self.active is not None:
                self.active["end_s"] = t
                ended, self.active = self.active, None
        return started, ended


class _ClipWriter:
    """An event clip: the pre-roll ring, then live frames until post-roll after the event ends."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], pre: list[np.ndarray]) -> None:
        from vidseq.video.sinks import VideoSink

        self.path = path
        self.sink = VideoSink(path, fps, size)
        for img in pre:
            self.sink.write(img)
        self.close_at: float | None = None

    def write(self, img: np.ndarray) -> None:
        self.sink.write(img)

    def close(self) -> None:
        self.sink.close()


def run_monitor(source: str, out_dir: str | Path, cfg: MonitorConfig, *,
                stop: threading.Event | None = None) -> dict[str, Any]:
    """Monitor ``source`` until it ends, ``duration_s`` passes, ``stop`` is set or Ctrl-C."""
    from vidseq.video.sinks import JsonlSink
    from vidseq.video.sources import open_source

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    src = open_source(source, realtime=cfg.realtime)
    info = src.info
    pipeline = cfg.pipeline
    if pipeline.anomaly.feedback_dir is None:  # false alarms marked with `vidseq feedback` are learnt as normal
        pipeline = replace(pipeline, anomaly=replace(pipeline.anomaly, feedback_dir=str(out)))
    proc = FrameProcessor(pipeline, info.fps)
    drawer = FrameDrawer(cfg.pipeline, info.fps)
    stats = MonitorStats()
    rule = AlertRule(cfg.alerts)
    ring: deque[np.ndarray] = deque(maxlen=max(1, round(cfg.alerts.pre_roll_s * info.fps)))
    clip: _ClipWriter | None = None
    size = (info.width, info.height)
    status_path = out / "monitor_summary.json"
    anomaly_head = next((h for h in proc.heads if h.name == "anomaly"), None)
    log.info("monitoring %s (%s, %.1f fps); anomaly: %s", source, info.kind, info.fps,
             anomaly_head.describe() if anomaly_head is not None else "not available")
    prev_handler = None
    if threading.current_thread() is threading.main_thread():
        prev_handler = signal.signal(signal.SIGINT, lambda *_: stop.set())
    base = {"source": str(source), "config": to_dict(cfg), **proc.describe()}
    window = "vidseq monitor"
    t_end = None if cfg.duration_s is None else time.monotonic() + cfg.duration_s
    try:
        with JsonlSink(out / "events.jsonl", append=True) as events:
            for frame in src:
                done = proc.step(frame)
                if not done:
                    continue
                r = done[-1]  # live: only the newest completed result is shown and alerted on
                frame = r.frame
                cap = src.capture_time(frame)  # capture -> score, including any smoothing delay
                if cap is not None:
                    stats.latency_ms.append((time.monotonic() - cap) * 1000.0)
                stats.frames += 1
                stats.dropped = src.stats.dropped
                stats.reconnects = src.stats.reconnects
                img = drawer.draw(r, proc)
                _draw_status(img, r, stats, anomaly_head, info.fps)
                started, ended = rule.update(frame.timestamp_s, bool(r.is_anomaly), r.anomaly_score)
                if started is not None:
                    stats.alerts += 1
                    started["id"] = stats.alerts  # `vidseq feedback RUN_DIR --event ID` refers to it
                    name = f"event_{stats.alerts:04d}_{frame.frame_index:08d}.mp4"
                    rec = {"type": "alert", "id": stats.alerts, "frame_index": frame.frame_index, **started,
                           "clip": name if cfg.save_clips else None, "wall_time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                    events.write(rec)
                    log.warning("ALERT at %.1f s (score %.3f)", frame.timestamp_s, r.anomaly_score or float("nan"))
                    if cfg.save_clips and clip is None:
                        clip = _ClipWriter(out / name, info.fps, size, list(ring))
                if ended is not None:
                    events.write({"type": "end", **ended})
                    if clip is not None:
                        clip.close_at = frame.timestamp_s + cfg.alerts.post_roll_s
                if clip is not None:
                    clip.write(img)
                    if (clip.close_at is not None and frame.timestamp_s >= clip.close_at) or \
                            frame.timestamp_s - (rule.last_alert or 0) > cfg.alerts.max_clip_s:
                        clip.close()
                        clip = None
                ring.append(img)
                if cfg.show:
                    import cv2

                    cv2.imshow(window, img)
                    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                        break
                if stats.frames % 50 == 0:  # heads' state refreshed: "learning 42/120 s", then the threshold
                    atomic_write_json(status_path, {**base, **proc.describe(), "status": "running", **stats.summary()})
                if stop.is_set() or (t_end is not None and time.monotonic() >= t_end):
                    break
    finally:
        if clip is not None:
            clip.close()
        src.close()
        if prev_handler is not None:
            signal.signal(signal.SIGINT, prev_handler)
        if cfg.show:
            try:
                import cv2

                cv2.destroyAllWindows()
            except Exception:  # noqa: BLE001 - no GUI backend: nothing to close
                pass
    proc.finish()  # heads complete (the anomaly head saves its normality when asked to)
    result = {**base, **proc.describe(), "status": "stopped", **stats.summary()}
    atomic_write_json(status_path, result)
    return result


def _draw_status(img: np.ndarray, r: FrameResult, stats: MonitorStats, head: Any, fps: float) -> None:
    from vidseq import viz

    lat = stats.latency_ms[-1] if stats.latency_ms else float("nan")
    lines = [f"{stats.frames} frames  lag {lat:.0f} ms  dropped {stats.dropped}  reconnects {stats.reconnects}"]
    if head is not None and not r.anomaly_ready:
        lines.append(head.status_text() if hasattr(head, "status_text") else "learning normality")
    viz.draw_status(img, lines, copy=False)
