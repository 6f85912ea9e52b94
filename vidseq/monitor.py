"""``vidseq monitor``: a live loop over a camera, stream or file, with anomaly alerts and event clips.

The source is read with latest-frame semantics (lag never grows; drops are counted and shown), the
shared :class:`~vidseq.pipeline.FrameProcessor` scores each frame, and alert rules turn scores into
events: a run of anomalous frames at least ``min_duration_s`` long (runs less than ``merge_gap_s`` apart adding up
their anomalous seconds) raises an alert once no alert was raised in the last ``cooldown_s`` (a run that began
inside the cooldown and outlasts it alerts when it is over).
Each event is saved as a clip with ``pre_roll_s`` seconds before it (from a ring buffer) and ``post_roll_s``
after, and appended to ``events.jsonl``. Without a trained anomaly model
the anomaly head learns normality from the first seconds (said on screen and in the logs).

Several cameras run in one process (:func:`load_cameras`, :func:`run_cameras`): each
:class:`CameraMonitor` has its own thread, reader, learning, threshold, alerts and output folder, and keeps
a thread-safe live state (latest annotated frame, figures, recent scores, events) that a dashboard
(:mod:`vidseq.web`) reads without ever blocking the pipeline. A camera that cannot be reached is retried
with backoff and shows ``reconnecting``; the others keep scoring.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vidseq.config import read_yaml, setting, to_dict, with_overrides
from vidseq.errors import CameraError, ConfigError, SourceNotFoundError, VidseqError
from vidseq.io import atomic_open, atomic_write_json
from vidseq.pipeline import FrameDrawer, FrameProcessor, ProcessConfig
from vidseq.tasks.stream import FrameResult

log = logging.getLogger(__name__)

LATENCY_WINDOW = 10_000
"""Frames whose latency the monitor keeps for its median/p95."""

STATUS_LOG_INTERVAL_S = 30.0
"""Seconds between the status log lines of a running monitor."""


@dataclass(frozen=True)
class AlertSettings:
    min_duration_s: float = 1.0  # anomalous for at least this long before an alert
    # ... or this long on frames whose score is a trained model's `tracks` evidence (FrameResult.anomaly_integrated):
    # it adds up a track's seconds already, so it crosses the threshold late and, when the track breaks, briefly.
    # Not a stream's own first minute: too short to trust a brief track (docs/alarms.md, "Stop 37"). None: off
    tracks_min_duration_s: float | None = setting(0.5, ge=0.0)
    # anomalous runs less than this far apart count as one run until it alerts (their anomalous seconds add up,
    # not the gaps): someone pacing up and down is flagged in short runs as they turn (docs/alarms.md, "Stop 29")
    merge_gap_s: float = setting(1.5, ge=0.0)
    cooldown_s: float = 10.0  # no new alert within this long after the previous one was raised
    # ... unless the run's score rises above this multiple of the last alert's peak (a stronger situation, not the
    # same one going on: a short false alarm must not silence a real event seconds later); None: the cooldown holds
    escalate: float | None = setting(2.0, gt=1.0)
    pre_roll_s: float = 3.0  # clip seconds before the alert
    post_roll_s: float = 3.0  # clip seconds after the event ends
    max_clip_s: float = 60.0  # a clip never grows beyond this
    # alert when the score is >= this (standardised scores: may be negative); None: the anomaly model's own threshold
    threshold: float | None = setting(None, ge=-1e9)


@dataclass(frozen=True)
class MonitorConfig:
    """``configs/monitor.yaml``."""

    # live: each frame is shown and alerted on as soon as it is scored, so the anomaly head never runs behind
    # the detector (heads_lag_frames 0; `process` lets it, for throughput); a stalled camera then holds nothing
    pipeline: ProcessConfig = field(default_factory=lambda: ProcessConfig(heads_lag_frames=0))
    alerts: AlertSettings = field(default_factory=AlertSettings)
    duration_s: float | None = setting(None, gt=0.0)  # stop after this long (None: until the source ends or Ctrl-C)
    save_clips: bool = True
    show: bool = False  # on-screen window (needs a display)
    realtime: bool = True  # a file source is played at its own fps like a camera




@dataclass
class MonitorStats:
    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    alerts: int = 0
    scored: int = 0  # frames that got an anomaly score (not in a normality warm-up)
    # capture -> score, per frame; the last LATENCY_WINDOW frames only, so a monitor running for weeks keeps
    # constant memory (percentiles are over that window)
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    started: float = field(default_factory=time.monotonic)
    profile: dict[str, Any] = field(default_factory=dict)  # per-stage seconds/share (FrameProcessor.profile)

    def summary(self) -> dict[str, Any]:
        lat = np.array(self.latency_ms) if self.latency_ms else np.array([np.nan])
        elapsed = time.monotonic() - self.started
        return {"frames": self.frames, "dropped": self.dropped, "reconnects": self.reconnects, "alerts": self.alerts,
                "anomaly_scored_frames": self.scored, "elapsed_s": round(elapsed, 2),
                "fps": round(self.frames / max(elapsed, 1e-9), 2),
                "latency_ms_median": None if np.isnan(lat).all() else round(float(np.nanmedian(lat)), 1),
                "latency_ms_p95": None if np.isnan(lat).all() else round(float(np.nanpercentile(lat, 95)), 1),
                "profile": self.profile}


class AlertRule:
    """Anomalous runs -> events with minimum duration and cooldown."""

    def __init__(self, settings: AlertSettings) -> None:
        self.s = settings
        self.run_start: float | None = None  # the anomalous run's first frame (None: no run)
        self._part_start: float | None = None  # the first frame of its part going on (None: in a gap)
        self._done_s = 0.0  # anomalous seconds of its parts that ended
        self._integrated_s = 0.0  # the run's anomalous seconds on integrated evidence (each frame's step in its part)
        self._last_anomalous = 0.0  # its last anomalous frame
        self.active: dict[str, Any] | None = None
        self._causes: Counter[str] = Counter()  # the anomalous run's frames per stream that drove them
        self._run_peak: float | None = None  # highest score of the current anomalous run
        self._last: dict[str, Any] | None = None  # the last alert's record (its peak_score kept up to date)

    @property
    def last_alert(self) -> float | None:
        """Stream time the last alert was raised (None before the first)."""
        return None if self._last is None else self._last["alert_s"]

    def _cooling(self, t: float) -> bool:
        """Whether the cooldown holds a run at ``t``: within ``cooldown_s`` of the last alert, unless the run has
        escalated (its peak above ``escalate`` x the last alert's, both positive)."""
        if self._last is None or t - self._last["alert_s"] >= self.s.cooldown_s:
            return False
        last_peak = self._last["peak_score"]
        return not (self.s.escalate is not None and self._run_peak is not None and last_peak is not None
                    and last_peak > 0 and self._run_peak > self.s.escalate * last_peak)

    def update(self, t: float, is_anomaly: bool, score: float | None, cause: str | None = None,
               integrated: bool = False) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Returns ``(started_event, ended_event)`` for time ``t``; ``cause`` (the anomaly stream behind the
        frame's score) makes the event's ``cause`` the one behind most of its anomalous frames; ``integrated``
        (:attr:`~vidseq.tasks.stream.FrameResult.anomaly_integrated`) counts the frame's step towards
        ``tracks_min_duration_s`` too.

        Anomalous runs less than ``merge_gap_s`` apart are one run until it is alerted on: their anomalous
        seconds add up (the gaps do not count) towards ``min_duration_s``. An alert ends with the first frame
        that is not anomalous, as without merging (an event a few seconds later is alerted on by itself)."""
        started = ended = None
        if is_anomaly:
            if self.run_start is None:
                self.run_start, self._done_s, self._integrated_s = t, 0.0, 0.0
            if self._part_start is None:
                self._part_start = t
            elif integrated:  # the step since the part's frame before
                self._integrated_s += t - self._last_anomalous
            self._last_anomalous = t
            if cause is not None:
                self._causes[cause] += 1
            if score is not None and (self._run_peak is None or score > self._run_peak):
                self._run_peak = score
            # The cooldown spaces alerts out; it never swallows a run that outlasts it (a run that began inside
            # it alerts once it is over, with the run's own start), nor one that escalates.
            anomalous_s = self._done_s + t - self._part_start
            tracks_min = self.s.tracks_min_duration_s
            long_enough = anomalous_s >= self.s.min_duration_s or (
                tracks_min is not None and self._integrated_s > 0 and self._integrated_s >= tracks_min - 1e-9)
            if self.active is None and long_enough and not self._cooling(t):
                self.active = {"start_s": self.run_start, "alert_s": t, "peak_score": score, "peak_s": t}
                started = self._last = self.active
            if self.active is not None and score is not None and (self.active["peak_score"] is None
                                                                  or score > self.active["peak_score"]):
                self.active.update(peak_score=score, peak_s=t)
            if self.active is not None and self._causes:
                self.active["cause"] = self._causes.most_common(1)[0][0]
            return started, ended
        if self._part_start is not None:  # a part of the run ends at this frame
            self._done_s += self._last_anomalous - self._part_start
            self._part_start = None
        # an alert ends with its run's part; a run not yet alerted on waits merge_gap_s for its next part
        if self.run_start is not None and (self.active is not None or t - self._last_anomalous > self.s.merge_gap_s):
            self.run_start = self._run_peak = None
            self._causes.clear()
            if self.active is not None:
                self.active["end_s"] = t
                ended, self.active = self.active, None
        return started, ended


class _ClipWriter:
    """An event clip: the pre-roll ring, then live frames until post-roll after the event ends."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], pre: list[np.ndarray]) -> None:
        from vidseq.video.sinks import VideoSink

        self.path = path
        self.sink = VideoSink(path, fps, size, atomic=True)  # under its name only once complete
        for img in pre:
            self.sink.write(img)
        self.close_at: float | None = None

    def write(self, img: np.ndarray) -> None:
        self.sink.write(img)

    def close(self) -> None:
        self.sink.close()


CAMERA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
STALL_S = 3.0  # a live camera without a new frame for this long is shown as reconnecting
SCORE_HISTORY = 3000  # recent scores kept per camera for the dashboard chart


@dataclass(frozen=True)
class CameraSpec:
    """One camera of a multi-camera config: a unique name, its source and its resolved config."""

    name: str
    source: str
    cfg: MonitorConfig


def camera_name(source: str) -> str:
    """A dashboard/folder name for a source: the file stem, ``camera0`` or ``stream`` (URL-safe)."""
    from vidseq.video.sources import source_kind

    kind = source_kind(source)
    if kind == "camera":
        return f"camera{source}"
    if kind == "stream":
        return "stream"
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", Path(source).stem).strip("_-")[:64]
    return stem if stem and CAMERA_NAME.fullmatch(stem) else "camera"


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def load_cameras(path: str | Path, base: MonitorConfig) -> list[CameraSpec]:
    """Cameras from a YAML file ``cameras: [{name, source, ...overrides}]``.

    Each entry's other keys override ``base`` (the resolved ``configs/monitor.yaml`` + flags) for that
    camera only, nested (``alerts: {threshold: 0.5}``) or dotted (``alerts.threshold: 0.5``).

    Raises:
        ConfigError: no cameras, a missing/invalid/duplicate name, a missing source, an unknown key.
    """
    data = read_yaml(path)
    extra = sorted(set(data) - {"cameras"})
    if extra:
        raise ConfigError(f"{path}: unknown top-level key '{extra[0]}' (expected only 'cameras')")
    entries = data.get("cameras")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: 'cameras' must be a non-empty list of {{name, source, ...}} mappings")
    specs: list[CameraSpec] = []
    base_dict = to_dict(base)
    for i, entry in enumerate(entries):
        where = f"{path}: cameras[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping, got {type(entry).__name__}")
        entry = dict(entry)
        name, source = entry.pop("name", None), entry.pop("source", None)
        if not isinstance(name, str) or not CAMERA_NAME.fullmatch(name):
            raise ConfigError(f"{where}: 'name' must be 1-64 letters, digits, '_' or '-' (got {name!r})")
        if any(s.name == name for s in specs):
            raise ConfigError(f"{where}: duplicate camera name '{name}'")
        if source is None or isinstance(source, (dict, list, bool)):
            raise ConfigError(f"{where}: 'source' (webcam index, URL or file) is required")
        try:
            cfg = with_overrides(MonitorConfig, base_dict, _flatten(entry))
        except ConfigError as exc:
            raise ConfigError(f"{where} ({name}): {exc}") from None
        specs.append(CameraSpec(name, str(source), cfg))
    return specs


class _EventLog:
    """``events.jsonl`` shared by the pipeline thread and the dashboard: each record is appended whole,
    under a lock, through a short-lived :class:`~vidseq.video.sinks.JsonlSink` (events are rare)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create the file (or cut a partial last line a killed run left) before anything happens."""
        from vidseq.video.sinks import JsonlSink

        with self._lock, JsonlSink(self.path, append=True):
            pass

    def write(self, record: dict[str, Any]) -> None:
        from vidseq.video.sinks import JsonlSink

        with self._lock, JsonlSink(self.path, append=True) as sink:
            sink.write(record)


class CameraMonitor:
    """One camera: its pipeline loop (:meth:`run`) and a thread-safe live state for dashboards.

    Args:
        name: URL-safe camera name (dashboard, metrics, event ids).
        source: webcam index, stream URL or video file.
        out_dir: this camera's output folder (events.jsonl, clips, thumbnails, monitor_summary.json).
        cfg: this camera's config.
        persistent: a camera that cannot be opened, or is lost for good, is retried with backoff
            (state ``reconnecting``) instead of ending the run with an error.
    """

    def __init__(self, name: str, source: str, out_dir: str | Path, cfg: MonitorConfig, *,
                 persistent: bool = False) -> None:
        if not CAMERA_NAME.fullmatch(name):
            raise ConfigError(f"camera name must be 1-64 letters, digits, '_' or '-', got {name!r}")
        self.name = name
        self.source = str(source)
        self.out = Path(out_dir)
        self.cfg = cfg
        self.persistent = persistent
        self.stats = MonitorStats()
        self.error: VidseqError | None = None
        self.result: dict[str, Any] | None = None
        self.fps_source: float | None = None
        self.threshold: float | None = cfg.alerts.threshold
        self._log = _EventLog(self.out / "events.jsonl")
        self._lock = threading.Lock()
        self._state = "connecting"
        self._detail = ""
        self._live = False
        self._last_frame_at: float | None = None
        self._frame_times: deque[float] = deque(maxlen=64)
        self._image: np.ndarray | None = None
        self._image_seq = 0
        self._scores: deque[tuple[int, float, float, bool]] = deque(maxlen=SCORE_HISTORY)
        self._score_seq = 0
        self._events: list[dict[str, Any]] = []
        self._events_version = 0
        self._reopens = 0  # sources reopened by this monitor after a failure (persistent cameras)
        self._base: dict[str, Any] = {"camera": name, "source": self.source, "config": to_dict(cfg)}

    # -- live state (any thread) -------------------------------------------------------------------
    @property
    def clip_dir(self) -> Path:
        return self.out

    def _set_state(self, state: str, detail: str = "") -> None:
        with self._lock:
            self._state, self._detail = state, detail

    def state(self) -> tuple[str, str]:
        """``(state, detail)``: connecting, learning, scoring, running, reconnecting, ended, stopped, failed."""
        with self._lock:
            state, detail = self._state, self._detail
            stalled = (self._live and state in ("learning", "scoring", "running") and self._last_frame_at is not None
                       and time.monotonic() - self._last_frame_at > STALL_S)
        if stalled:
            return "reconnecting", f"no frame for {time.monotonic() - self._last_frame_at:.0f} s"
        return state, detail

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready figures for ``/api/status`` and ``/metrics``."""
        state, detail = self.state()
        with self._lock:
            times = list(self._frame_times)
            lat = self.stats.latency_ms[-1] if self.stats.latency_ms else None
            last_score = self._scores[-1][2] if self._scores else None
            n_events = len(self._events)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        if times and time.monotonic() - times[-1] > STALL_S:
            fps = 0.0
        return {"name": self.name, "source": self.source, "state": state, "detail": detail,
                "fps": round(fps, 2), "source_fps": self.fps_source, "frames": self.stats.frames,
                "dropped": self.stats.dropped, "reconnects": self.stats.reconnects, "alerts": self.stats.alerts,
                "latency_ms": None if lat is None else round(lat, 1), "threshold": self.threshold,
                "score": last_score, "events": n_events, "error": None if self.error is None else str(self.error)}

    def latest_image(self) -> tuple[int, np.ndarray | None]:
        """``(sequence number, annotated BGR frame)``; the array is never modified after it is published."""
        with self._lock:
            return self._image_seq, self._image

    def scores_since(self, seq: int) -> list[tuple[int, float, float, bool]]:
        """``(seq, wall time s, score, anomalous)`` of scores newer than ``seq`` (oldest first)."""
        with self._lock:
            return [s for s in self._scores if s[0] > seq]

    def events(self) -> tuple[int, list[dict[str, Any]]]:
        """``(version, events of this run)``; the version grows whenever an event starts, ends or gets feedback."""
        with self._lock:
            return self._events_version, [dict(e) for e in self._events]

    def add_feedback(self, event_id: str, label: str) -> dict[str, Any] | None:
        """Record an operator's verdict on an event (appended to events.jsonl); None for an unknown id."""
        with self._lock:
            event = next((e for e in self._events if e["id"] == event_id), None)
            if event is None:
                return None
        # the same record as `vidseq feedback`: a false alarm's span is learnt as normal by the anomaly head
        record = {"type": "feedback", "id": event_id, "event_id": event_id, "label": label,
                  "start_s": event.get("start_s"), "end_s": event.get("end_s"), "clip": event.get("clip"),
                  "source": self.source, "wall_time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self._log.write(record)
        with self._lock:
            event["feedback"] = label
            self._events_version += 1
            return dict(event)

    # -- the loop ------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> dict[str, Any]:
        """Monitor until the source ends (files), ``duration_s`` passes or ``stop`` is set.

        Raises:
            VidseqError: a source that cannot be opened or is lost, unless ``persistent``.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        status, error = "stopped", None
        try:
            self._log.open()
            self._run(stop)
            state = "stopped" if stop.is_set() else "ended"
            self._set_state(state)
        except VidseqError as exc:
            self.error = exc
            self._set_state("failed", str(exc))
            status, error = "failed", str(exc)
            raise
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except BaseException as exc:  # the loop did not end normally: say so instead of leaving "running"
            status, error = "failed", str(exc) or type(exc).__name__
            raise
        finally:
            with self._lock:
                self._live = False
            self.result = {"camera": self.name, "source": self.source, "status": status, "error": error,
                           "state": self.state()[0], **self.stats.summary()}
            with contextlib.suppress(OSError):
                atomic_write_json(self.out / "monitor_summary.json", {**self._base, **self.result})
        return self.result

    def _run(self, stop: threading.Event) -> None:
        from vidseq.video.sources import open_source, source_kind

        live = source_kind(self.source) in ("camera", "stream")
        t_end = None if self.cfg.duration_s is None else time.monotonic() + self.cfg.duration_s
        backoff, first = 0.5, True
        ctx = _PipelineContext(self)
        try:
            while not stop.is_set() and (t_end is None or time.monotonic() < t_end):
                self._set_state("connecting" if first else "reconnecting")
                try:
                    src = open_source(self.source, realtime=self.cfg.realtime)
                except CameraError as exc:
                    if not self.persistent:
                        raise
                    log.warning("%s: %s; retrying in %.1f s", self.name, exc, backoff)
                    self._set_state("reconnecting", str(exc))
                    if stop.wait(backoff):
                        break
                    backoff = min(backoff * 2, 8.0)
                    first = False
                    continue
                with self._lock:
                    self._live = live
                if not first:
                    self._reopens += 1
                    self.stats.reconnects += 1
                first, backoff = False, 0.5
                finished = threading.Event()
                if live:
                    threading.Thread(target=_close_when_due, args=(src, stop, t_end, finished, self.name),
                                     name=f"vidseq-monitor-stop-{self.name}", daemon=True).start()
                try:
                    ctx.play(src, stop, t_end)
                except CameraError as exc:
                    if stop.is_set() or (t_end is not None and time.monotonic() >= t_end):
                        break  # closed from outside because it was time to stop
                    if not self.persistent:
                        raise
                    log.warning("%s: %s; reconnecting", self.name, exc)
                finally:
                    finished.set()
                    ctx.source_closed(src)
                    src.close()
                if not live:
                    break  # a file ended
        finally:
            ctx.close()  # an open clip is finished even when the loop ends with an error

    def _publish(self, img: np.ndarray, now: float, score: float | None, is_anomaly: bool, ready: bool,
                 head: Any) -> None:
        with self._lock:
            self._image = img
            self._image_seq += 1
            self._last_frame_at = now
            self._frame_times.append(now)
            if score is not None:
                self._score_seq += 1
                self._scores.append((self._score_seq, time.time(), float(score), bool(is_anomaly)))
            if head is None:
                self._state, self._detail = "running", "no anomaly head"
            elif not ready:
                self._state = "learning"
                self._detail = head.status_text() if hasattr(head, "status_text") else "learning normality"
            else:
                self._state, self._detail = "scoring", ""

    def _add_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._events.append(event)
            self._events_version += 1

    def _update_event(self, event_id: str, **fields: Any) -> None:
        with self._lock:
            for e in self._events:
                if e["id"] == event_id:
                    e.update(fields)
            self._events_version += 1


def _close_when_due(src: Any, stop: threading.Event, t_end: float | None, finished: threading.Event,
                    name: str) -> None:
    """A stalled stream yields nothing, so the frame loop would not see Ctrl-C or the deadline until the read
    timeout and the reconnect window ran out: close the source from outside when it is time to stop."""
    while not finished.wait(0.25):
        if stop.is_set() or (t_end is not None and time.monotonic() >= t_end + 1.0):
            log.info("%s: stopping: no frame arrived in time; closing the source", name)
            src.close()
            return


class _PipelineContext:
    """Pipeline state that survives reconnects: processor, drawer, alert rule, pre-roll ring, open clip."""

    def __init__(self, cam: CameraMonitor) -> None:
        self.cam = cam
        self.proc: Any = None
        self.drawer: Any = None
        self.head: Any = None
        self.rule = AlertRule(cam.cfg.alerts)
        self.ring: deque[np.ndarray] = deque(maxlen=1)
        self.clip: _ClipWriter | None = None
        self.clip_events: list[str] = []  # events whose clip is the one recording
        self.dropped_before = 0  # counters of earlier source objects (reconnects)
        self.reconnects_before = 0
        self.active_id: str | None = None
        self.last_log = time.monotonic()
        self.stage_s = {"decode (wait for a frame)": 0.0, "draw": 0.0, "alerts+clips": 0.0}  # + the processor's

    def _setup(self, info: Any) -> None:
        cam = self.cam
        cfg = cam.cfg
        from vidseq.video.sources import source_kind

        pipeline = cfg.pipeline
        if pipeline.anomaly.feedback_dir is None:  # false alarms marked with `vidseq feedback` are learnt as normal
            pipeline = replace(pipeline, anomaly=replace(pipeline.anomaly, feedback_dir=str(cam.out)))
        self.proc = FrameProcessor(pipeline, info.fps,
                                   frame_hw=(info.height, info.width) if info.height and info.width else None,
                                   calibration_source=cam.source if source_kind(cam.source) in ("file", "folder")
                                   else None)
        self.drawer = FrameDrawer(cfg.pipeline, info.fps)
        self.drawer.status_lines = 2  # _draw_status: counters + the warm-up line
        self.ring = deque(maxlen=max(1, round(cfg.alerts.pre_roll_s * info.fps)))
        self.head = next((h for h in self.proc.heads if h.name == "anomaly"), None)
        cam.fps_source = info.fps
        cam.stats.started = time.monotonic()  # fps counts from here, not from the model load
        log.info("%s: monitoring %s (%s, %.1f fps); anomaly: %s", cam.name, cam.source, info.kind, info.fps,
                 self.head.describe() if self.head is not None else "not available")
        cam._base = {"camera": cam.name, "source": cam.source, "config": to_dict(cfg), **self.proc.describe()}

    def play(self, src: Any, stop: threading.Event, t_end: float | None) -> None:
        import cv2

        cam, cfg, stats = self.cam, self.cam.cfg, self.cam.stats
        info = src.info
        if self.proc is None:
            self._setup(info)
        fps = info.fps
        size = (info.width, info.height)
        status_path = cam.out / "monitor_summary.json"
        t_wait = time.perf_counter()
        for frame in src:
            self.stage_s["decode (wait for a frame)"] += time.perf_counter() - t_wait
            done = self.proc.step(frame)
            if not done:
                t_wait = time.perf_counter()
                continue
            r = done[-1]  # live: only the newest completed result is shown and alerted on
            frame = r.frame
            now = time.monotonic()
            cap = src.capture_time(frame)  # capture -> score, including any smoothing delay
            if cap is not None:
                stats.latency_ms.append((now - cap) * 1000.0)
            stats.frames += 1
            stats.dropped = self.dropped_before + src.stats.dropped
            stats.reconnects = cam._reopens + self.reconnects_before + src.stats.reconnects
            if (frame.image.shape[1], frame.image.shape[0]) != size:  # a reconnected camera changed size
                size = (frame.image.shape[1], frame.image.shape[0])
                self._close_clip()
                self.ring.clear()
            t_draw = time.perf_counter()
            img = self.drawer.draw(r, self.proc)
            _draw_status(img, r, stats, self.head, fps)
            t_alert = time.perf_counter()
            self.stage_s["draw"] += t_alert - t_draw
            if cam.threshold is None and self.head is not None and getattr(self.head, "threshold", None) is not None:
                cam.threshold = float(self.head.threshold)
            score = r.anomaly_score
            stats.scored += score is not None
            if cfg.alerts.threshold is not None and score is not None:
                is_anomaly = score >= cfg.alerts.threshold
            else:
                is_anomaly = bool(r.is_anomaly)
            started, ended = self.rule.update(frame.timestamp_s, is_anomaly, score, r.anomaly_cause,
                                              r.anomaly_integrated)
            if started is not None:
                self._start_event(started, frame, img, fps, size)
            if ended is not None:
                cam._log.write({"type": "end", "id": self.active_id, **ended})
                cam._update_event(self.active_id, end_s=ended["end_s"],
                                  duration_s=round(ended["end_s"] - ended["start_s"], 3),
                                  peak_score=ended["peak_score"], cause=ended.get("cause"))
                self.active_id = None
                if self.clip is not None:
                    self.clip.close_at = frame.timestamp_s + cfg.alerts.post_roll_s
            elif self.active_id is not None and self.rule.active is not None:
                cam._update_event(self.active_id, peak_score=self.rule.active["peak_score"])
            if self.clip is not None:
                self.clip.write(img)
                if (self.clip.close_at is not None and frame.timestamp_s >= self.clip.close_at) or \
                        frame.timestamp_s - (self.rule.last_alert or 0) > cfg.alerts.max_clip_s:
                    self._close_clip()
            self.ring.append(img)
            self.stage_s["alerts+clips"] += time.perf_counter() - t_alert
            cam._publish(img, now, score, is_anomaly, bool(r.anomaly_ready), self.head)
            if cfg.show:
                cv2.imshow(f"vidseq monitor: {cam.name}", img)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    stop.set()
            if stats.frames % 50 == 0:
                stats.profile = self.proc.profile(stats.frames, self.stage_s)
                # heads' state refreshed: "learning 42/120 s", then the threshold
                atomic_write_json(status_path, {**cam._base, **self.proc.describe(), "status": "running",
                                                **stats.summary()})
                forget_finished_tracks(self.proc, frame.timestamp_s)
            if now - self.last_log >= STATUS_LOG_INTERVAL_S:  # without a terminal, a service log shows it is alive
                self.last_log = now
                st = stats.summary()
                log.info("%s: %d frames, %.1f frames/s, dropped %d, reconnects %d, alerts %d, lag p95 %s ms",
                         cam.name, st["frames"], st["fps"], st["dropped"], st["reconnects"], st["alerts"],
                         st["latency_ms_p95"])
            if stop.is_set() or (t_end is not None and time.monotonic() >= t_end):
                break
            t_wait = time.perf_counter()

    def _start_event(self, started: dict[str, Any], frame: Any, img: np.ndarray, fps: float,
                     size: tuple[int, int]) -> None:
        import cv2

        cam, cfg, stats = self.cam, self.cam.cfg, self.cam.stats
        stats.alerts += 1
        stem = f"event_{stats.alerts:04d}_{frame.frame_index:08d}"
        event_id = f"{cam.name}-{stats.alerts:04d}"
        thumb = f"{stem}.jpg"
        h, w = img.shape[:2]
        scale = min(1.0, 320 / max(w, 1))
        small = cv2.resize(img, (max(2, round(w * scale)), max(2, round(h * scale))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if ok:
            with atomic_open(cam.out / thumb, "wb") as fh:
                fh.write(buf.tobytes())
        clip = f"{stem}.mp4" if cfg.save_clips else None
        if clip is not None and self.clip is not None:
            # the previous event's clip is still recording (post-roll): it goes on and holds this event too
            clip = self.clip.path.name
            self.clip.close_at = None
        rec = {"type": "alert", "id": event_id, "camera": cam.name, "frame_index": frame.frame_index, **started,
               "clip": clip, "thumbnail": thumb if ok else None, "wall_time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        cam._log.write(rec)
        cam._add_event({**rec, "end_s": None, "duration_s": None, "clip_ready": False, "feedback": None})
        self.active_id = event_id
        log.warning("%s: ALERT at %.1f s (score %.3f%s)", cam.name, frame.timestamp_s,
                    started["peak_score"] if started["peak_score"] is not None else float("nan"),
                    f", {started['cause']}" if started.get("cause") else "")
        if clip is not None and self.clip is None:
            # atomic: the clip appears under its name only once complete (a browser never gets half a file)
            self.clip = _ClipWriter(cam.out / clip, fps, size, list(self.ring))
        if clip is not None:
            self.clip_events.append(event_id)

    def _close_clip(self) -> None:
        if self.clip is not None:
            self.clip.close()
            for event_id in self.clip_events:
                self.cam._update_event(event_id, clip_ready=True)
            self.clip, self.clip_events = None, []

    def source_closed(self, src: Any) -> None:
        self.dropped_before += src.stats.dropped
        self.reconnects_before += src.stats.reconnects

    def close(self) -> None:
        self._close_clip()
        if self.proc is not None:
            self.cam.stats.profile = self.proc.profile(self.cam.stats.frames, self.stage_s)
            try:
                self.proc.finish()  # heads complete (the anomaly head saves its normality when asked to)
                self.cam._base = {**self.cam._base, **self.proc.describe()}
            finally:
                self.proc.close()
        if self.proc is not None and self.cam.cfg.show:
            try:
                import cv2

                cv2.destroyAllWindows()
            except Exception:  # noqa: BLE001 - no GUI backend: nothing to close
                pass


class _StopOnSignals:
    """SIGINT/SIGTERM set ``stop`` (main thread only); the previous handlers come back on exit."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, lambda *_: self.stop.set())
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def run_monitor(source: str, out_dir: str | Path, cfg: MonitorConfig, *,
                stop: threading.Event | None = None) -> dict[str, Any]:
    """Monitor one ``source`` until it ends, ``duration_s`` passes, ``stop`` is set, Ctrl-C or SIGTERM."""
    stop = stop or threading.Event()
    cam = CameraMonitor(camera_name(source), source, out_dir, cfg)
    with _StopOnSignals(stop):
        cam.run(stop)
    return {**cam._base, "status": "stopped", **cam.stats.summary()}


def check_sources(specs: list[CameraSpec]) -> None:
    """Fail early on a file or folder source that does not exist (live sources are retried instead)."""
    from vidseq.video.sources import source_kind

    for spec in specs:
        if source_kind(spec.source) in ("file", "folder") and not Path(spec.source).exists():
            raise SourceNotFoundError(f"camera '{spec.name}': source not found: {spec.source}")


def run_cameras(cams: list[CameraMonitor], stop: threading.Event, *, keep_alive: bool = False,
                on_idle: Any = None) -> list[dict[str, Any]]:
    """Run every camera in its own thread until all end or ``stop`` is set (Ctrl-C, SIGTERM).

    With ``keep_alive`` (a dashboard is serving) the call returns only when ``stop`` is set, even after
    every source ended, unless a camera has a ``duration_s``. A non-persistent camera that fails
    stops the others, and its error is raised once all threads have finished.
    """
    failures: list[VidseqError] = []
    crashed: list[str] = []

    def work(cam: CameraMonitor) -> None:
        try:
            cam.run(stop)
        except VidseqError as exc:
            log.error("%s: %s", cam.name, exc)
            if not cam.persistent:
                failures.append(exc)
                stop.set()
        except Exception:  # a bug: log it with its traceback, stop everything
            log.exception("%s: camera thread crashed", cam.name)
            crashed.append(cam.name)
            stop.set()

    threads = [threading.Thread(target=work, args=(c,), name=f"vidseq-camera-{c.name}", daemon=True) for c in cams]
    timed = any(c.cfg.duration_s is not None for c in cams)
    with _StopOnSignals(stop):
        for t in threads:
            t.start()
        idle_said = False
        while not stop.is_set():
            alive = any(t.is_alive() for t in threads)
            if not alive and (not keep_alive or timed or failures or crashed):
                break
            if not alive and not idle_said:
                idle_said = True
                if on_idle is not None:
                    on_idle()
            stop.wait(0.2)
        stop.set()
        for t in threads:
            t.join()
    if failures:
        raise failures[0]
    if crashed:
        raise RuntimeError(f"camera thread(s) {', '.join(crashed)} crashed (traceback above)")
    return [c.result or {"camera": c.name, "status": "not started"} for c in cams]


FINISHED_TRACKS_KEEP_S = 30.0
"""A live monitor forgets tracks that ended longer ago than this (the heads have long let go of them)."""


def forget_finished_tracks(proc: FrameProcessor, now_s: float) -> None:
    """Keep memory and per-frame work flat over days: ``process`` keeps every track for its summary, a live
    monitor never reports finished tracks, and the heads walk the finished list each step."""
    finished = proc.tracker.finished
    finished[:] = [t for t in finished if now_s - t.timestamp_s[-1] < FINISHED_TRACKS_KEEP_S]


def _draw_status(img: np.ndarray, r: FrameResult, stats: MonitorStats, head: Any, fps: float) -> None:
    from vidseq import viz

    lat = stats.latency_ms[-1] if stats.latency_ms else float("nan")
    lines = [f"{stats.frames} frames  lag {lat:.0f} ms  dropped {stats.dropped}  reconnects {stats.reconnects}"]
    if head is not None and not r.anomaly_ready:
        lines.append(head.status_text() if hasattr(head, "status_text") else "learning normality")
    viz.draw_status(img, lines, copy=False)
