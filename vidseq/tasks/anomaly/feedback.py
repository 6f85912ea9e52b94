"""People's verdicts on alarms: mark an event as a false alarm or confirmed; false alarms become normal data.

Public API (the CLI ``vidseq feedback`` and the web dashboard call the same functions):

* :func:`mark_event` ``(run_dir, event_id, label, note=None) -> dict``: appends one ``{"type":
  "feedback", ...}`` line to ``run_dir/events.jsonl`` (a ``vidseq monitor`` folder, or a ``vidseq process``
  output folder whose ``events.json`` numbers its events) and returns it.
* :func:`feedback_labels` ``(run_dir) -> dict[int, str]``: the latest label of every event.
* :func:`false_alarm_features` ``(run_dir, cfg, camera=None, skip=()) -> iterator of (key, ClipFeatures)``:
  the frames of every event currently labelled ``false_alarm`` (read again from the source file when it
  is a file, else from the event's saved clip), for
  :meth:`vidseq.tasks.anomaly.online.OnlineNormality.add_normal`. A running ``vidseq monitor`` polls it
  for its own folder and learns those frames at its next update.

Example::

    mark_event("runs/cam", 3, "false_alarm")     # event 3 of events.jsonl was nothing
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vidseq.errors import ConfigError, VidseqError
from vidseq.features.camera import CameraConfig
from vidseq.models.anomaly.clip import ClipFeatures
from vidseq.models.anomaly.model import AnomalyConfig

log = logging.getLogger(__name__)

LABELS = ("false_alarm", "confirmed")
CONTEXT_S = 1.0  # seconds of source video learnt either side of a false alarm


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: skipping an unreadable line", path)
    return out


def run_events(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Events of a run folder by id: monitor alerts (``events.jsonl``) and process events (``events.json``)."""
    d = Path(run_dir)
    if not d.is_dir():
        raise VidseqError(f"{d}: no such run folder")
    events: dict[str, dict[str, Any]] = {}
    source = None
    summary = d / "monitor_summary.json" if (d / "monitor_summary.json").is_file() else d / "summary.json"
    if summary.is_file():
        try:
            source = json.loads(summary.read_text()).get("source")
        except (OSError, json.JSONDecodeError):
            source = None
    for rec in _read_jsonl(d / "events.jsonl"):
        if rec.get("type") == "alert" and "id" in rec:
            events[str(rec["id"])] = {**rec, "source": source}
        elif rec.get("type") == "end" and "id" in rec and str(rec["id"]) in events:
            events[str(rec["id"])]["end_s"] = rec.get("end_s")
    if (d / "events.json").is_file():
        try:
            doc = json.loads((d / "events.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise VidseqError(f"{d / 'events.json'}: unreadable ({exc})") from None
        for i, e in enumerate(doc.get("events", [])):
            events.setdefault(str(e.get("id", i + 1)), {**e, "source": source})
    return events


def mark_event(run_dir: str | Path, event_id: str | int, label: str, note: str | None = None) -> dict[str, Any]:
    """Record a verdict on one event of ``run_dir`` (appended to its ``events.jsonl``).

    Raises:
        ConfigError: unknown label.
        VidseqError: no such run folder or event (the message lists the known ids).
    """
    if label not in LABELS:
        raise ConfigError(f"--label must be one of {', '.join(LABELS)}, got {label!r}")
    events = run_events(run_dir)
    key = event_key(events, event_id)
    if key is None:
        known = ", ".join(sorted(events)) or "none"
        raise VidseqError(f"{run_dir}: no event {event_id} (events: {known})")
    ev = events[key]
    rec = {"type": "feedback", "id": key, "event_id": key, "label": label,
           "start_s": ev.get("start_s"), "end_s": ev.get("end_s"), "clip": ev.get("clip"), "source": ev.get("source"),
           "note": note, "wall_time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = Path(run_dir) / "events.jsonl"
    with open(path, "a", encoding="utf-8") as fh:  # one line appended whole: readers never see half a record
        fh.write(json.dumps(rec, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return rec


def event_key(events: dict[str, Any], event_id: str | int) -> str | None:
    """The id in ``events`` that ``event_id`` names: the id itself, or its number (``3`` for ``cam-0003``)."""
    key = str(event_id)
    if key in events:
        return key
    if key.isdigit():
        hits = [k for k in events if k.rsplit("-", 1)[-1].isdigit() and int(k.rsplit("-", 1)[-1]) == int(key)]
        if len(hits) == 1:
            return hits[0]
    return None


def feedback_labels(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The latest feedback record of every event of ``run_dir`` (from the CLI or the dashboard)."""
    out: dict[str, dict[str, Any]] = {}
    for rec in _read_jsonl(Path(run_dir) / "events.jsonl"):
        if rec.get("type") == "feedback" and ("event_id" in rec or "id" in rec):
            out[str(rec.get("event_id", rec.get("id")))] = rec
    return out


def false_alarm_features(run_dir: str | Path, cfg: AnomalyConfig, *, camera: CameraConfig | None = None,
                         skip: Iterable[str] = (), analysis_fps: float | None = None
                         ) -> Iterator[tuple[str, ClipFeatures]]:
    """Stream features of the frames of every event labelled ``false_alarm`` (keys in ``skip`` left out).

    ``analysis_fps`` picks the frames as the head that learns them analyses its own (:class:`FrameStride`), so
    the flow spans the same time.

    The frames come from the source file (the event's span plus :data:`CONTEXT_S` either side) when the
    run's source is a readable file, else from the event's clip in ``run_dir`` (a live camera: the clip is
    the only record; its drawn overlays are a small part of the frame).
    """
    seen = set(skip)
    for eid, rec in sorted(feedback_labels(run_dir).items()):
        key = f"event-{eid}"
        if rec.get("label") != "false_alarm" or key in seen:
            continue
        try:
            cf = _event_features(Path(run_dir), rec, cfg, camera, key, analysis_fps)
        except VidseqError as exc:
            log.warning("feedback %s: cannot read its frames: %s", key, exc)
            continue
        if cf is not None:
            yield key, cf


def _event_features(run_dir: Path, rec: dict[str, Any], cfg: AnomalyConfig, camera: CameraConfig | None,
                    key: str, analysis_fps: float | None) -> ClipFeatures | None:
    from vidseq.tasks.anomaly.features import FeatureComputer
    from vidseq.tasks.anomaly.online import FrameStride
    from vidseq.video.sources import open_source

    source, start, end = rec.get("source"), rec.get("start_s"), rec.get("end_s")
    clip = rec.get("clip")
    if source and Path(str(source)).is_file() and start is not None:
        lo, hi = float(start) - CONTEXT_S, float(end if end is not None else start) + CONTEXT_S
        path, keep = str(source), (lambda t: lo <= t <= hi)
    elif clip and (run_dir / str(clip)).is_file():
        path, keep = str(run_dir / str(clip)), (lambda t: True)
    else:
        log.warning("feedback %s: neither the source file nor the clip is available", key)
        return None
    frames = []
    with open_source(path) as src:
        stride = FrameStride(src.info.fps or 25.0, analysis_fps)
        comp = FeatureComputer(cfg.motion, cfg.regions if cfg.needs_regions else None, camera=camera,
                               frame_step=stride.stride)
        for fr in src:
            if keep(fr.timestamp_s):
                if stride.due(fr.frame_index, fr.timestamp_s):
                    frames.append(comp.step(fr.image, fr.frame_index, fr.timestamp_s))
            elif frames:
                break
    if len(frames) < 2:
        return None
    return ClipFeatures.from_frames(key, stride.fps, frames, tuple(comp.motion.working_size or (0, 0)))


__all__ = ["LABELS", "false_alarm_features", "feedback_labels", "mark_event", "run_events"]
