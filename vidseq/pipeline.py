"""One streaming pass per video: frames -> YOLO (detections + features) -> tracker -> heads -> sinks.

:class:`FrameProcessor` is the per-frame core shared by ``vidseq process`` (files) and
``vidseq monitor`` (live): one YOLO forward pass gives boxes and the frame/box features, ultralytics
tracks the boxes, and each available head steps once with its state carried frame to frame (constant
work per frame, no window recomputation). :func:`process_video` adds the sinks: per-video CSV/JSONL files
flushed as they go, an H.264 ``annotated.mp4``, ``anomaly.png`` and ``summary.json``, written into a
staging folder under a per-video lock and renamed into place when complete (failure behaviour:
docs/failures.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vidseq import __version__
from vidseq.config import setting, to_dict
from vidseq.errors import VidseqError
from vidseq.io import atomic_write_json
from vidseq.registry import STREAM_HEADS
from vidseq.tasks.anomaly.head import AnomalySettings
from vidseq.tasks.caption.head import CaptionSettings
from vidseq.tasks.stream import FrameResult, StreamHead
from vidseq.tasks.trajectory.head import TrajectorySettings
from vidseq.tracking.tracks import Detections, ObjectTracker, TrackerConfig
from vidseq.video.sources import Frame, open_source

log = logging.getLogger(__name__)

FRAMES_COLUMNS = ("frame_index", "timestamp_s", "anomaly_score", "is_anomaly", "n_objects")
TRACKS_COLUMNS = ("frame", "id", "x", "y", "w", "h", "class", "conf")


@dataclass(frozen=True)
class ProcessConfig:
    """``configs/process.yaml``."""

    backbone_weights: str | None = None  # YOLO weights; None = resolver (COCO file if present, else packaged)
    device: str = "auto"
    runtime: Literal["auto", "torch", "openvino"] = "auto"  # every network of the run (vidseq.features.runtime)
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"  # int8: the detector, calibrated on frames below
    calibration: str | None = None  # int8 calibration video/folder (no labels); None = the processed video itself
    calibration_frames: int = setting(50, ge=1)
    feature_dim: int = setting(512, ge=1)
    stride: int = setting(1, ge=1)
    max_frames: int | None = setting(None, ge=1)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    anomaly: AnomalySettings = field(default_factory=AnomalySettings)
    trajectory: TrajectorySettings = field(default_factory=TrajectorySettings)
    caption: CaptionSettings = field(default_factory=CaptionSettings)
    video: bool = True  # annotated.mp4
    plot: bool = True  # anomaly.png
    history_s: float = 3.0  # drawn path length
    concurrent_heads: bool = True  # the anomaly head (flow, regions) runs in a thread beside the detector
    # frames that thread may run behind the detector (0: the detector waits for it every frame); results are
    # held back that many frames more, outputs are identical. null: what the head asks for (the anomaly head:
    # 2 x (its analysis stride - 1), so 2 on a 25-30 fps source analysed every other frame, 0 when every frame is)
    heads_lag_frames: int | None = setting(None, ge=0)


class FrameProcessor:
    """The per-frame core: detection + tracking + heads, with state carried between frames."""

    def __init__(self, cfg: ProcessConfig, fps: float, *, heads: list[StreamHead] | None = None,
                 frame_hw: tuple[int, int] | None = None, calibration_source: str | None = None) -> None:
        """Args:
            cfg: the run's settings.
            fps: the source's frame rate.
            heads: replaces the default heads (tests).
            frame_hw: the source's ``(height, width)`` when known: the detector's input is sized and its
                network exported/loaded now rather than on the first frame.
            calibration_source: video/folder whose frames calibrate ``precision: int8`` when ``cfg.calibration``
                is not set (``process`` passes the video itself).
        """
        from vidseq.features.backbones import create_backbone
        from vidseq.features.runtime import SmallTorchOps, runtime_scope

        self.cfg = cfg
        self.fps = fps
        calib = None
        if cfg.precision == "int8":
            calib = _calibration_frames(cfg.calibration or calibration_source, cfg.calibration_frames)
        self.backbone = create_backbone("yolo", weights=cfg.backbone_weights, device=cfg.device,
                                        imgsz=cfg.tracker.imgsz, feature_dim=cfg.feature_dim, runtime=cfg.runtime,
                                        precision=cfg.precision, calibration=calib)
        self.tracker = ObjectTracker(self.backbone, cfg.tracker)  # type: ignore[arg-type]
        if frame_hw is not None:
            self.tracker.prepare(frame_hw)
        self.notes: list[str] = []
        self.stage_s: dict[str, float] = {}  # seconds per head
        self._pool: Any = None  # one worker thread for heads that run beside the detector
        self._side: deque[Any] = deque()  # its steps not yet joined (futures, oldest first), one per frame
        self._pending: deque[FrameResult] = deque()
        self._pending_index: dict[int, FrameResult] = {}
        # Networks the heads build (anomaly/caption feature backbones) take the run's runtime and precision.
        self._scope = lambda: runtime_scope(cfg.runtime, cfg.precision)
        # With the detector on OpenVINO, PyTorch only runs small operations: one thread for them (see
        # SmallTorchOps), until close(); the networks keep the cores they were given.
        self._small_torch = SmallTorchOps()
        if getattr(self.backbone, "runtime", None) == "openvino":
            self._small_torch.acquire()
        try:
            with self._scope():
                self.heads: list[StreamHead] = heads if heads is not None else self._default_heads()
        except BaseException:
            self._small_torch.release()
            raise

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
            self.notes.append("no caption model given (caption.model): no captions are made")
        return heads

    def head(self, name: str) -> StreamHead | None:
        """The running head called ``name``, if any."""
        return next((h for h in self.heads if h.name == name), None)

    def describe(self) -> dict[str, Any]:
        self._join_side()  # the heads' state as of the newest frame, never read while a head writes it
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
        result = FrameResult(frame, Detections.empty(frame.frame_index, frame.timestamp_s), np.zeros(0, np.float32))
        self._pending.append(result)
        self._pending_index[frame.frame_index] = result
        # Heads that read only the frame (the anomaly head: optical flow, moving regions, its own backbone)
        # run in a worker thread while the detector runs here; OpenCV, OpenVINO and PyTorch release the GIL,
        # so on two cores the two overlap. Results are identical to running them one after the other.
        # The thread may run up to heads_lag_frames frames behind (a head that analyses every other frame then
        # spreads that frame's work over the detector's next frames); the results it has not finished, and the
        # frames its smoothing still writes into, are held back until it has.
        side = [h for h in self.heads if self._concurrent(h)]
        with self._scope():
            if side:
                pool = self._side_pool()
                self._side.append(pool.submit(self._side_steps, side, result))
            try:
                dets, feature = self.tracker.update(frame)
                result.detections, result.feature = dets, feature
                keep = max(2, round(self.cfg.history_s * self.fps))
                result.paths = {t.track_id: t.footpoints()[-keep:] for t in self.tracker.active(frame.frame_index)}
            finally:
                self._join_side(self._lag(side))  # re-raises a head's error here
            for head in self.heads:  # a head may build its backbone lazily, on its first frame (in the scope)
                if head not in side:
                    self._timed_step(head, result)
        return self._release(self.delay_frames + len(self._side))

    def _concurrent(self, head: Any) -> bool:
        return self.cfg.concurrent_heads and bool(getattr(head, "reads_frame_only", head.name == "anomaly"))

    def _side_pool(self) -> Any:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidseq-heads")
        return self._pool

    def _lag(self, side: list[Any]) -> int:
        """Frames the side heads may run behind: ``heads_lag_frames``, else what they ask for (``lag_frames``;
        the anomaly head spreads an analysed frame's work over the frames it skips after it)."""
        if self.cfg.heads_lag_frames is not None:
            return int(self.cfg.heads_lag_frames)
        return max((int(getattr(h, "lag_frames", 0)) for h in side), default=0)

    def _side_steps(self, heads: list[Any], result: FrameResult) -> None:
        for head in heads:
            self._timed_step(head, result)

    def _join_side(self, keep: int = 0, *, errors: bool = True) -> None:
        """Wait until at most ``keep`` frames' side-head steps are outstanding; a step's error is raised, or
        dropped with ``errors=False``."""
        while len(self._side) > keep:
            fut = self._side.popleft()
            if errors:
                fut.result()
            else:
                with contextlib.suppress(Exception):
                    fut.result()

    def _timed_step(self, head: Any, result: FrameResult) -> None:
        t0 = time.perf_counter()
        with self._scope():
            head.step(result, self)
        self.stage_s[head.name] = self.stage_s.get(head.name, 0.0) + time.perf_counter() - t0

    def close(self) -> None:
        """Stop the worker thread (idempotent). Steps still outstanding are finished; their errors are not
        raised here (:meth:`finish` raises them)."""
        self._join_side(errors=False)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._small_torch.release()

    def __del__(self) -> None:
        # a processor dropped without close() (e.g. its run failed before the first frame) gives PyTorch its
        # threads back; the worker thread, if any, ends with the interpreter
        small = self.__dict__.get("_small_torch")
        if small is not None:
            small.release()

    def profile(self, frames: int, extra: dict[str, float] | None = None) -> dict[str, Any]:
        """Per-stage seconds, share of their sum and ms/frame: the tracker's stages (letterbox, detector,
        nms+tracker or regions), each head (anomaly = flow + regions + crops + its LSTM steps, ...) and the
        caller's ``extra`` stages (decode, draw, encode ...)."""
        return stage_profile({**self.tracker.stage_s, **self.stage_s, **(extra or {})}, frames)

    def finish(self) -> list[FrameResult]:
        """End of stream: let heads complete their delayed outputs and return every held result."""
        self._join_side()
        self.close()
        for head in self.heads:
            head.finish(self)
        return self._release(0)

    def drain(self) -> list[FrameResult]:
        """A run that stops early (an error, Ctrl-C): every result held back, as it is now — the side heads'
        outstanding steps finished (their errors dropped), delayed scores not filled in. Heads are not
        finished; :meth:`close` still has to be called."""
        self._join_side(errors=False)
        return self._release(0)

    def _release(self, hold: int) -> list[FrameResult]:
        out: list[FrameResult] = []
        while len(self._pending) > hold:
            r = self._pending.popleft()
            self._pending_index.pop(r.frame.frame_index, None)
            if r.frame.previous is not None:  # read by the heads only: not kept by whoever holds results
                r.frame = replace(r.frame, previous=None)
            out.append(r)
        return out


def stage_profile(stage_s: dict[str, float], frames: int) -> dict[str, Any]:
    """``{stage: {"seconds", "share", "ms_per_frame"}}`` (stages that took no time are left out), largest first."""
    total = sum(stage_s.values()) or 1e-9
    rows = sorted(((k, v) for k, v in stage_s.items() if v > 0), key=lambda kv: -kv[1])
    return {k: {"seconds": round(v, 3), "share": round(v / total, 3),
                "ms_per_frame": round(1000 * v / max(1, frames), 2)} for k, v in rows}


def _calibration_frames(source: str | None, n: int) -> Callable[[], list[np.ndarray]]:
    if source is None:
        raise VidseqError("precision int8 needs calibration frames: set calibration=VIDEO (a video or image "
                          "folder like the ones you will process; no labels needed)")
    from vidseq.features.extractor import calibration_frames

    return calibration_frames(source, n)


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


PROGRESS_LOG_INTERVAL_S = 10.0
"""Seconds between progress log lines when no progress bar is shown (stdout/stderr not a terminal)."""


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}


def _config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf setting that differs (dotted keys)."""
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def process_video(source: str | Path, out_dir: str | Path, cfg: ProcessConfig, *, force: bool = False,
                  progress: bool = True, processor: FrameProcessor | None = None,
                  log_every_s: float | None = None) -> ProcessSummary:
    """Run the whole pipeline on one video file or image folder into ``out_dir``.

    The run holds a lock on ``out_dir`` (:class:`vidseq.io.OutputLock`; a second run into the same folder
    fails with one line) and writes into a hidden staging folder that replaces ``out_dir`` only when it is
    finished, so a reader never sees a mix of two runs. A complete earlier run with the same content and
    settings is skipped; one with other settings or content is replaced only with ``force`` (otherwise a
    :class:`~vidseq.errors.OutputError` lists the differences). An incomplete earlier result is replaced.

    A failure or Ctrl-C after frames were written publishes the partial outputs with ``summary.json``
    ``"status": "failed"`` (with ``"error"``) or ``"interrupted"`` -- unless a complete result is already in
    ``out_dir``, which is then kept untouched; a failure before any frame leaves nothing. ``log_every_s``
    logs a progress line at that interval (for runs without a terminal).
    """
    from vidseq.errors import OutputError
    from vidseq.io import OutputLock, publish_dir, staging_dir, stale_staging_dirs

    out = Path(out_dir)
    with OutputLock(out):
        for stale in stale_staging_dirs(out):  # left by a run that was killed (-9, power loss)
            log.info("%s: removing the staging folder of an unfinished earlier run", stale)
            shutil.rmtree(stale, ignore_errors=True)
        src = open_source(source, stride=cfg.stride, max_frames=cfg.max_frames)
        try:
            key = settings_hash(str(source), cfg)
            old = _read_summary(out / "summary.json")
            old_complete = old.get("status") == "complete"
            if old_complete and not force:
                if old.get("settings_hash") == key:
                    log.info("%s: already processed with the same settings (use --force to redo)", out)
                    return ProcessSummary(out, int(old.get("frames", 0)), "skipped", old)
                diffs = _config_differences(old.get("config") or {}, to_dict(cfg))
                what = ", ".join(diffs[:4]) + (f" (+{len(diffs) - 4} more)" if len(diffs) > 4 else "") \
                    if diffs else "other video content or vidseq version"
                raise OutputError(f"{out} holds a complete result made with other settings ({what}); "
                                  "use --force to replace it, or another --out")
            stage = staging_dir(out)
            state: dict[str, Any] = {"frames": 0, "summary": None}
            try:
                summary = _process_into(stage, source, src, cfg, key, progress=progress, processor=processor,
                                        log_every_s=log_every_s, state=state)
            except BaseException as exc:
                _fail(stage, out, exc, state, keep_old=old_complete)
                raise
            publish_dir(stage, out)
            return ProcessSummary(out, int(summary["frames"]), "complete", summary)
        finally:
            src.close()


def _fail(stage: Path, out: Path, exc: BaseException, state: dict[str, Any], *, keep_old: bool) -> None:
    """Record a failed/interrupted run: partial outputs with a marked summary.json, or nothing at all."""
    from vidseq.io import publish_dir

    summary = state.get("summary")
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    try:
        if summary is None or state.get("frames", 0) == 0:
            log.info("%s: run %s before any frame was written; nothing kept", out, status)
        elif keep_old:
            log.warning("%s: run %s after %d frames; the previous complete result is kept", out, status,
                        state["frames"])
        else:
            summary.update(status=status, frames=state["frames"],
                           error=(str(exc) or type(exc).__name__) if status == "failed" else None,
                           finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            atomic_write_json(stage / "summary.json", summary)
            publish_dir(stage, out)
            log.warning("%s: run %s after %d frames; partial outputs kept, summary.json says \"%s\"", out,
                        status, state["frames"], status)
            return
    except OSError as write_error:  # e.g. the disk filled up: do not hide the original error
        log.warning("%s: could not record the %s run (%s)", out, status, write_error)
    shutil.rmtree(stage, ignore_errors=True)


def _process_into(out: Path, source: str | Path, src: Any, cfg: ProcessConfig, key: str, *, progress: bool,
                  processor: FrameProcessor | None, log_every_s: float | None, state: dict[str, Any]
                  ) -> dict[str, Any]:
    """The streaming pass, writing every output into ``out`` (a staging folder); ``state`` tracks progress
    for the caller's failure handling."""
    from tqdm import tqdm

    from vidseq.video.sinks import CsvSink, JsonlSink, VideoSink

    summary_path = out / "summary.json"
    info = src.info
    proc = processor or FrameProcessor(cfg, info.fps, frame_hw=(info.height, info.width),
                                       calibration_source=str(source))
    summary: dict[str, Any] = {
        "status": "running", "source": str(source), "settings_hash": key, "vidseq_version": __version__,
        "video": {"fps": info.fps, "width": info.width, "height": info.height, "frame_count": info.frame_count},
        "config": to_dict(cfg), **proc.describe(), "frames": 0,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    state["summary"] = summary
    atomic_write_json(summary_path, summary)
    scores: list[tuple[float, float | None, bool | None]] = []
    n_frames = 0
    t0 = time.perf_counter()
    last_flush = last_log = t0
    expected = src.expected_frames()
    name = Path(str(source)).name
    stage_s = {"pipeline": 0.0, "draw": 0.0, "encode": 0.0, "decode": 0.0, "write rows": 0.0}
    with CsvSink(out / "frames.csv", FRAMES_COLUMNS, flush_every=25, flush_interval_s=1.0) as frames_csv, \
            CsvSink(out / "tracks.csv", TRACKS_COLUMNS, flush_every=50, flush_interval_s=1.0) as tracks_csv, \
            JsonlSink(out / "forecasts.jsonl", flush_every=25, flush_interval_s=1.0) as forecasts_out, \
            JsonlSink(out / "captions.jsonl") as captions_out, \
            tqdm(total=expected, unit="frame", desc=name, disable=not progress, dynamic_ncols=True) as bar:
        # encoded in a worker thread (PyAV releases the GIL): drawing the next frame overlaps encoding this one
        sink = VideoSink(out / "annotated.mp4", info.fps / cfg.stride, (info.width, info.height), background=8) \
            if cfg.video else None
        drawer = FrameDrawer(cfg, info.fps) if cfg.video else None
        try:
            def emit(results: list[FrameResult]) -> None:
                nonlocal n_frames
                for r in results:
                    tw = time.perf_counter()
                    _write_frame_rows(r, frames_csv, tracks_csv, forecasts_out, captions_out)
                    scores.append((r.frame.timestamp_s, r.anomaly_score, r.is_anomaly))
                    tb = time.perf_counter()
                    stage_s["write rows"] += tb - tw
                    if sink is not None and drawer is not None:
                        image = drawer.draw(r, proc)
                        tc = time.perf_counter()
                        sink.write(image)
                        stage_s["draw"] += tc - tb
                        stage_s["encode"] += time.perf_counter() - tc
                    n_frames += 1
                    state["frames"] = n_frames

            td = time.perf_counter()
            stepped = 0
            try:
                for frame in src:
                    ta = time.perf_counter()
                    stage_s["decode"] += ta - td
                    done = proc.step(frame)
                    stepped += 1
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
                    if log_every_s is not None and now - last_log >= log_every_s:  # frames processed so far
                        rate = stepped / max(now - t0, 1e-9)
                        total = f"/{expected}" if expected else ""
                        eta = f", about {(expected - stepped) / rate:.0f} s left" if expected and rate > 0 else ""
                        log.info("%s: %d%s frames, %.1f frames/s%s", name, stepped, total, rate, eta)
                        last_log = now
                    td = time.perf_counter()
                ta = time.perf_counter()
                done = proc.finish()
                stage_s["pipeline"] += time.perf_counter() - ta
                emit(done)
            except BaseException:
                # Frames already processed but held back (the anomaly head's lag, its smoothing) are written
                # before the run is marked failed/interrupted, without the scores they were still waiting for.
                with contextlib.suppress(Exception):
                    emit(proc.drain())
                raise
        finally:
            proc.close()
            if sink is not None:
                sink.close()
                stage_s["encode (background)"] = sink.encode_seconds
    elapsed = time.perf_counter() - t0
    events = _finish_heads(proc, out, scores, cfg)
    summary.update(
        status="complete", frames=n_frames, elapsed_s=round(elapsed, 2),
        fps_achieved=round(n_frames / max(elapsed, 1e-9), 2),
        stage_seconds={k: round(v, 2) for k, v in stage_s.items()},
        profile=proc.profile(n_frames, {k: v for k, v in stage_s.items() if k != "pipeline"}),
        counts={"tracks": len(proc.tracker.all_tracks()), "events": len(events),
                "anomalous_frames": int(sum(1 for _, _, a in scores if a))},
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    truncated = getattr(src, "truncated", False)
    if truncated:  # the container announced more frames than could be decoded
        summary.update(truncated=True, frames_read=int(getattr(src, "frames_read", n_frames)))
        proc.notes.append(f"truncated input: decoded {summary['frames_read']} of the "
                          f"{info.frame_count} frames the container announced")
    summary.update(proc.describe())
    atomic_write_json(summary_path, summary)
    return summary


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
        self.status_lines = 0  # a status panel drawn over the top-left later (monitor): labels keep clear

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
        if r.caption is not None:
            self.caption = r.caption
        # labels keep clear of the panels drawn over them next (score strip + caption, monitor status)
        bottom = (viz.score_bar_height(img) if r.anomaly_score is not None else 0) + \
            viz.caption_height(img, self.caption)
        img = viz.draw_tracks(img, items, copy=False, top=viz.status_height(img, self.status_lines), bottom=bottom)
        if r.anomaly_score is not None:
            thr = next((h.threshold for h in proc.heads if h.name == "anomaly"), None)
            self.scores.append(r.anomaly_score)
            if thr is not None:
                img = viz.draw_score_bar(img, r.anomaly_score, thr, bool(r.is_anomaly), history=self.scores,
                                         copy=False)
        if self.caption:
            img = viz.draw_caption(img, self.caption, copy=False)
        return img
