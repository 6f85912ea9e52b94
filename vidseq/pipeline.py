"""One streaming pass per video: frames -> YOLO (detections + features) -> tracker -> heads -> sinks.

:class:`FrameProcessor` is the per-frame core shared by ``vidseq process`` (files) and
``vidseq monitor`` (live): one YOLO forward pass gives boxes and the frame/box features, ultralytics
tracks the boxes, and each available head steps once with its state carried frame to frame (constant
work per frame, no window recomputation). :func:`process_video` adds the sinks: per-video CSV/JSONL files
flushed as they go, an H.264 ``annotated.mp4``, ``anomaly.png`` and ``summary.json`` (``status:
running`` until the end, so a killed run is recognisable; a re-run overwrites it).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vidseq import __version__
from vidseq.config import to_dict
from vidseq.io import atomic_write_json
from vidseq.registry import STREAM_HEADS
from vidseq.tasks.anomaly.head import AnomalySettings
from vidseq.tasks.caption.head import CaptionSettings
from vidseq.tasks.stream import FrameResult, StreamHead
from vidseq.tasks.trajectory.head import TrajectorySettings
from vidseq.tracking.tracks import ObjectTracker, TrackerConfig
from vidseq.video.sources import Frame, open_source

log = logging.getLogger(__name__)

FRAMES_COLUMNS = ("frame_index", "timestamp_s", "anomaly_score", "is_anomaly", "n_objects")
TRACKS_COLUMNS = ("frame", "id", "x", "y", "w", "h", "class", "conf")


@dataclass(frozen=True)
class ProcessConfig:
    """``configs/process.yaml``."""

    backbone_weights: str | None = None  # YOLO weights; None = resolver (COCO file if present, else packaged)
    device: str = "auto"
    feature_dim: int = 512
    stride: int = 1
    max_frames: int | None = None
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    anomaly: AnomalySettings = field(default_factory=AnomalySettings)
    trajectory: TrajectorySettings = field(default_factory=TrajectorySettings)
    caption: CaptionSettings = field(default_factory=CaptionSettings)
    video: bool = True  # annotated.mp4
    plot: bool = True  # anomaly.png
    history_s: float = 3.0  # drawn path length


class FrameProcessor:
    """The per-frame core: detection + tracking + heads, with state carried between frames."""

    def __init__(self, cfg: ProcessConfig, fps: float, *, heads: list[StreamHead] | None = None) -> None:
        from vidseq.features.backbones import create_backbone

        self.cfg = cfg
        self.fps = fps
        self.backbone = create_backbone("yolo", weights=cfg.backbone_weights, device=cfg.device,
                                        imgsz=cfg.tracker.imgsz, feature_dim=cfg.feature_dim)
        self.tracker = ObjectTracker(self.backbone, cfg.tracker)  # type: ignore[arg-type]
        self.notes: list[str] = []
        self._pending: deque[FrameResult] = deque()
        self._pending_index: dict[int, FrameResult] = {}
        self.heads: list[StreamHead] = heads if heads is not None else self._default_heads()

    @property
    def device(self) -> str:
        return str(self.backbone.device)

    def _default_heads(self) -> list[StreamHead]:
        """Every registered head (:data:`vidseq.registry.STREAM_HEADS`) its settings enable; a head that fails
        to import is an error, never a silent drop."""
        heads: list[StreamHead] = []
        for name in STREAM_HEADS.names():
            head = STREAM_HEADS.load(name)(self.cfg, self)
            if head is not None:
                heads.append(head)
        if self.cfg.caption.enabled and not any(h.name == "caption" for h in heads):
            self.notes.append("no caption model given (caption.model): captions.jsonl is empty")
        return heads

    def head(self, name: str) -> StreamHead | None:
        """The running head called ``name``, if any."""
        return next((h for h in self.heads if h.name == name), None)

    def describe(self) -> dict[str, Any]:
        return {"detector": {"weights": self.backbone.weights.as_dict(), **self.tracker.describe()},
                "backbone": {k: v for k, v in self.backbone.info().items() if k != "class_names"},
                "heads": {h.name: h.describe() for h in self.heads}, "notes": self.notes}

    @property
    def delay_frames(self) -> int:
        """Frames a result is held back: heads with centred smoothing need that many future frames."""
        return max((int(h.delay_frames) for h in self.heads), default=0)

    def pending(self, frame_index: int) -> FrameResult | None:
        """A result not yet handed out (heads fill in delayed scores through this)."""
        return self._pending_index.get(frame_index)

    def newest_pending(self) -> FrameResult | None:
        """The most recent result still held back, if any."""
        return self._pending[-1] if self._pending else None

    def step(self, frame: Frame) -> list[FrameResult]:
        """Process one frame; returns the results that are complete now (oldest first).

        With no delaying head that is exactly this frame's result; otherwise results come out
        :attr:`delay_frames` frames later, and :meth:`finish` returns the rest at the end of a stream.
        """
        dets, feature = self.tracker.update(frame)
        result = FrameResult(frame, dets, feature)
        keep = max(2, round(self.cfg.history_s * self.fps))
        result.paths = {t.track_id: t.footpoints()[-keep:] for t in self.tracker.active(frame.frame_index)}
        self._pending.append(result)
        self._pending_index[frame.frame_index] = result
        for head in self.heads:
            head.step(result, self)
        return self._release(self.delay_frames)

    def finish(self) -> list[FrameResult]:
        """End of stream: let heads complete their delayed outputs and return every held result."""
        for head in self.heads:
            head.finish(self)
        return self._release(0)

    def _release(self, hold: int) -> list[FrameResult]:
        out: list[FrameResult] = []
        while len(self._pending) > hold:
            r = self._pending.popleft()
            self._pending_index.pop(r.frame.frame_index, None)
            out.append(r)
        return out


# -- process_video ----------------------------------------------------------------------------------

@dataclass
class ProcessSummary:
    out_dir: Path
    frames: int
    status: Literal["complete", "skipped"]
    summary: dict[str, Any]


def settings_hash(source: str, cfg: ProcessConfig) -> str:
    import hashlib

    from vidseq.features.extractor import content_hash

    blob = json.dumps({"content": content_hash(source), "config": to_dict(cfg), "version": __version__},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def process_video(source: str | Path, out_dir: str | Path, cfg: ProcessConfig, *, force: bool = False,
                  progress: bool = True, processor: FrameProcessor | None = None) -> ProcessSummary:
    """Run the whole pipeline on one video file or image folder into ``out_dir``.

    A complete earlier run with the same content and settings is skipped (``force`` re-runs);
    an incomplete or different one is overwritten.
    """
    from tqdm import tqdm

    from vidseq.video.sinks import CsvSink, JsonlSink, VideoSink

    out = Path(out_dir)
    src = open_source(source, stride=cfg.stride, max_frames=cfg.max_frames)
    try:
        key = settings_hash(str(source), cfg)
        summary_path = out / "summary.json"
        if summary_path.is_file() and not force:
            try:
                old = json.loads(summary_path.read_text())
            except (OSError, json.JSONDecodeError):
                old = {}
            if old.get("status") == "complete" and old.get("settings_hash") == key:
                log.info("%s: already processed with the same settings (use --force to redo)", out)
                return ProcessSummary(out, int(old.get("frames", 0)), "skipped", old)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        info = src.info
        proc = processor or FrameProcessor(cfg, info.fps)
        summary: dict[str, Any] = {
            "status": "running", "source": str(source), "settings_hash": key, "vidseq_version": __version__,
            "video": {"fps": info.fps, "width": info.width, "height": info.height, "frame_count": info.frame_count},
            "config": to_dict(cfg), **proc.describe(), "frames": 0,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_json(summary_path, summary)
        scores: list[tuple[float, float | None, bool | None]] = []
        n_frames = 0
        t0 = time.perf_counter()
        last_flush = t0
        stage_s = {"pipeline": 0.0, "draw": 0.0, "encode": 0.0}
        with CsvSink(out / "frames.csv", FRAMES_COLUMNS, flush_every=25, flush_interval_s=1.0) as frames_csv, \
                CsvSink(out / "tracks.csv", TRACKS_COLUMNS, flush_every=50, flush_interval_s=1.0) as tracks_csv, \
                JsonlSink(out / "forecasts.jsonl", flush_every=25, flush_interval_s=1.0) as forecasts_out, \
                JsonlSink(out / "captions.jsonl") as captions_out, \
                tqdm(total=src.expected_frames(), unit="frame", desc=Path(str(source)).name,
                     disable=not progress, dynamic_ncols=True) as bar:
            sink = VideoSink(out / "annotated.mp4", info.fps / cfg.stride, (info.width, info.height)) \
                if cfg.video else None
            drawer = FrameDrawer(cfg, info.fps) if cfg.video else None
            try:
                def emit(results: list[FrameResult]) -> None:
                    nonlocal n_frames
                    for r in results:
                        tb = time.perf_counter()
                        _write_frame_rows(r, frames_csv, tracks_csv, forecasts_out, captions_out)
                        scores.append((r.frame.timestamp_s, r.anomaly_score, r.is_anomaly))
                        if sink is not None and drawer is not None:
                            image = drawer.draw(r, proc)
                            tc = time.perf_counter()
                            sink.write(image)
                            stage_s["draw"] += tc - tb
                            stage_s["encode"] += time.perf_counter() - tc
                        n_frames += 1

                for frame in src:
                    ta = time.perf_counter()
                    done = proc.step(frame)
                    stage_s["pipeline"] += time.perf_counter() - ta
                    emit(done)
                    bar.update(1)
                    now = time.perf_counter()
                    if now - last_flush > 2.0:
                        summary.update(frames=n_frames, fps_achieved=round(n_frames / (now - t0), 2),
                                       heads=proc.describe()["heads"])  # e.g. "learning normality: 42/120 s"
                        anomaly = proc.head("anomaly")
                        if anomaly is not None and hasattr(anomaly, "status_text"):
                            bar.set_postfix_str(anomaly.status_text(), refresh=False)
                        atomic_write_json(summary_path, summary)
                        last_flush = now
                ta = time.perf_counter()
                done = proc.finish()
                stage_s["pipeline"] += time.perf_counter() - ta
                emit(done)
            finally:
                if sink is not None:
                    sink.close()
        elapsed = time.perf_counter() - t0
        events = _finish_heads(proc, out, scores, cfg)
        summary.update(
            status="complete", frames=n_frames, elapsed_s=round(elapsed, 2),
            fps_achieved=round(n_frames / max(elapsed, 1e-9), 2),
            stage_seconds={k: round(v, 2) for k, v in stage_s.items()},
            counts={"tracks": len(proc.tracker.all_tracks()), "events": len(events),
                    "anomalous_frames": int(sum(1 for _, _, a in scores if a))},
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        summary.update(proc.describe())
        atomic_write_json(summary_path, summary)
        return ProcessSummary(out, n_frames, "complete", summary)
    finally:
        src.close()


def _write_frame_rows(r: FrameResult, frames_csv: Any, tracks_csv: Any, forecasts_out: Any,
                      captions_out: Any) -> None:
    f = r.frame
    frames_csv.write({"frame_index": f.frame_index, "timestamp_s": round(f.timestamp_s, 4),
                      "anomaly_score": None if r.anomaly_score is None else round(r.anomaly_score, 5),
                      "is_anomaly": r.is_anomaly, "n_objects": len(r.detections)})
    d = r.detections
    for i in range(len(d)):
        if d.track_id[i] < 0:
            continue
        x1, y1, x2, y2 = (float(v) for v in d.xyxy[i])
        tracks_csv.write((f.frame_index, int(d.track_id[i]), round(x1, 2), round(y1, 2), round(x2 - x1, 2),
                          round(y2 - y1, 2), d.labels[i], round(float(d.conf[i]), 4)))
    for tid, fc in r.forecasts.items():
        forecasts_out.write({"frame_index": f.frame_index, "timestamp_s": round(f.timestamp_s, 4),
                             "track_id": int(tid), "forecast_xy": np.round(fc, 2).tolist()})
    if r.caption is not None:
        captions_out.write({"frame_index": f.frame_index, "timestamp_s": round(f.timestamp_s, 4),
                            "caption": r.caption})


def _finish_heads(proc: FrameProcessor, out: Path, scores: list[tuple[float, float | None, bool | None]],
                  cfg: ProcessConfig) -> list[dict[str, Any]]:
    """events.json (and anomaly.png) from the anomaly head when present."""
    events: list[dict[str, Any]] = []
    threshold = None
    for head in proc.heads:
        if head.name == "anomaly":
            events = head.events()
            threshold = head.threshold
    atomic_write_json(out / "events.json", {"events": events, "threshold": threshold})
    if cfg.plot:
        ts = np.array([s[0] for s in scores])
        sc = np.array([np.nan if s[1] is None else s[1] for s in scores], dtype=float)
        from vidseq.viz import plot_anomaly_timeline

        plot_anomaly_timeline(out / "anomaly.png", ts, sc, threshold, events, title=out.name)
    return events


class FrameDrawer:
    """Overlays for annotated.mp4: boxes + ids, history and forecast paths, score bar, caption."""

    def __init__(self, cfg: ProcessConfig, fps: float) -> None:
        self.cfg = cfg
        self.history_frames = max(2, round(cfg.history_s * fps))
        self.last_forecast: dict[int, tuple[int, np.ndarray]] = {}
        self.caption: str | None = None
        self.scores: deque[float] = deque(maxlen=max(10, round(10 * fps)))  # last 10 s, for the bar

    def draw(self, r: FrameResult, proc: FrameProcessor) -> np.ndarray:
        from vidseq import viz

        img = r.frame.image.copy()
        d = r.detections
        fi = r.frame.frame_index
        for tid, fc in r.forecasts.items():
            self.last_forecast[int(tid)] = (fi, fc)
        items = [(int(d.track_id[i]), d.labels[i], d.xyxy[i], float(d.conf[i])) for i in range(len(d))]
        for tid, pts in r.paths.items():
            fc = self.last_forecast.get(tid)
            forecast = fc[1] if fc is not None and fi - fc[0] <= self.history_frames else None
            img = viz.draw_paths(img, pts, forecast, copy=False)
        img = viz.draw_tracks(img, items, copy=False)
        if r.caption is not None:
            self.caption = r.caption
        if r.anomaly_score is not None:
            thr = next((h.threshold for h in proc.heads if h.name == "anomaly"), None)
            self.scores.append(r.anomaly_score)
            if thr is not None:
                img = viz.draw_score_bar(img, r.anomaly_score, thr, bool(r.is_anomaly), history=self.scores,
                                         copy=False)
        if self.caption:
            img = viz.draw_caption(img, self.caption, copy=False)
        return img
