"""Per-video work units shared by the serial CLI loop and the Ray workers (:mod:`vidseq.cluster`).

A job holds everything one command needs to turn one source into its outputs: the resolved config,
the output folder and whatever is loaded once per process (:meth:`setup`, e.g. the extraction
backbone). :meth:`run` handles one source and returns a :class:`VideoResult`; it is the same call
whether the loop runs in ``vidseq process`` itself or inside a Ray actor on another machine, so both
paths write identical files. Jobs are plain frozen dataclasses so Ray can pickle them to workers.

Nothing here imports Ray.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol


@dataclass
class VideoResult:
    """What happened to one source: its output, frame count, wall time and the line the CLI prints."""

    source: str
    stem: str
    output: str
    status: Literal["complete", "skipped"]
    frames: int
    seconds: float
    line: str
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class VideoJob(Protocol):
    """One command's per-video work (see the module docstring)."""

    command: str
    out: Path

    def setup(self) -> None:
        """Load what is shared by every video this process handles (called once per worker)."""

    def output_path(self, stem: str) -> Path:
        """Where the outputs of the source with output name ``stem`` go."""

    def run(self, source: str, stem: str) -> VideoResult:
        """Process one source; raises :class:`vidseq.errors.VidseqError` for a bad one."""


class _LoadedOnce:
    """Jobs that load a model once per process into ``_state``: pickled (to Ray workers) without it."""

    def __getstate__(self) -> dict[str, Any]:  # ship the settings, not a loaded model
        state = dict(self.__dict__)
        state["_state"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@dataclass(frozen=True)
class ProcessJob:
    """``vidseq process``: :func:`vidseq.pipeline.process_video` into ``out/<stem>/``.

    The detector is built per video, as in the serial path: ultralytics keeps tracker state on the
    model, so a model shared between streams would carry one video's tracks into the next.
    """

    cfg: Any  # ProcessConfig
    out: Path
    force: bool = False
    progress: bool = False
    log_every_s: float | None = None  # progress log lines without a terminal
    command: str = "process"

    def setup(self) -> None:
        return None

    def output_path(self, stem: str) -> Path:
        return self.out / stem

    def run(self, source: str, stem: str) -> VideoResult:
        from vidseq.pipeline import process_video

        t0 = time.perf_counter()
        res = process_video(source, self.output_path(stem), self.cfg, force=self.force, progress=self.progress,
                            log_every_s=self.log_every_s)
        s = res.summary
        if res.status == "skipped":
            line = f"{res.out_dir}\talready complete (same content and settings; --force to redo)"
        else:
            c = s.get("counts", {})
            line = (f"{res.out_dir}\t{res.frames} frames\t{s.get('fps_achieved')} frames/s\t"
                    f"{c.get('tracks', 0)} tracks\t{c.get('events', 0)} anomaly events")
        return VideoResult(str(source), stem, str(res.out_dir), res.status, res.frames,
                           round(time.perf_counter() - t0, 3), line, list(s.get("notes", [])))


@dataclass(frozen=True)
class ExtractJob(_LoadedOnce):
    """``vidseq extract``: :func:`vidseq.features.extractor.extract_features` into ``out/<stem>.npz``.

    The backbone is stateless between videos, so it is loaded once per process (:meth:`setup`).
    """

    cfg: Any  # ExtractConfig
    out: Path
    progress: bool = False
    log_every_s: float | None = None  # progress log lines without a terminal
    command: str = "extract"
    _state: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def setup(self) -> None:
        if "backbone" not in self._state:
            from vidseq.features.extractor import backbone_from_config

            self._state["backbone"] = backbone_from_config(self.cfg)

    @property
    def backbone(self) -> Any:
        self.setup()
        return self._state["backbone"]

    def output_path(self, stem: str) -> Path:
        return self.out / f"{stem}.npz"

    def run(self, source: str, stem: str) -> VideoResult:
        from vidseq.features.extractor import extract_features
        from vidseq.io import OutputLock

        cfg = self.cfg
        target = self.output_path(stem)
        t0 = time.perf_counter()
        with OutputLock(target):  # two runs writing the same file: the second fails with one line
            seq = extract_features(source, self.backbone, batch_size=cfg.batch_size, stride=cfg.stride,
                                   start_s=cfg.start_s, end_s=cfg.end_s, max_frames=cfg.max_frames,
                                   prefetch=cfg.prefetch, out_path=target, progress=self.progress,
                                   log_every_s=self.log_every_s)
        hit = bool(seq.meta.get("cache_hit"))
        status = "cache hit" if hit else f"{seq.meta.get('fps_achieved')} frames/s"
        return VideoResult(str(source), stem, str(target), "skipped" if hit else "complete", len(seq),
                           round(time.perf_counter() - t0, 3),
                           f"{target}\t{len(seq)} frames x {seq.feature_dim}\t{status}")


@dataclass(frozen=True)
class ScoreJob(_LoadedOnce):
    """``vidseq score``: per-frame anomaly scores into ``out/<stem>_scores.csv`` + ``out/<stem>_events.json``.

    With ``model`` the checkpoint is loaded once per process (:meth:`setup`); without it
    (``unsupervised`` set) normality is fitted on each video itself. A video whose events file
    carries the same ``settings_hash`` (content, checkpoint bytes, settings, version) is skipped
    unless ``force``.
    """

    out: Path
    model: Path | None = None
    unsupervised: Any = None  # AnomalyConfig for --unsupervised (None with settings: the default process uses)
    settings: Any = None  # NormalitySettings: --unsupervised (warm-up rule and false-alarm budget)
    fit_seconds: float | None = None
    max_frames: int | None = None
    device: str = "cpu"
    force: bool = False
    command: str = "score"
    _state: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        from vidseq.errors import ConfigError

        if (self.model is None) == (self.unsupervised is None and self.settings is None):
            raise ConfigError("give either --model CKPT or --unsupervised")

    def setup(self) -> None:
        if self.model is not None and "model" not in self._state:
            from vidseq.io import sha256_file
            from vidseq.tasks.anomaly.task import load_anomaly_model

            model, cal, _ = load_anomaly_model(self.model)
            self._state.update(model=model, calibration=cal, model_sha256=sha256_file(self.model))

    def output_path(self, stem: str) -> Path:
        return self.out / f"{stem}_events.json"

    def settings_hash(self, source: str) -> str | None:
        """Key of a complete earlier result; None for live sources (never skipped)."""
        import hashlib
        import json

        from vidseq import __version__
        from vidseq.config import to_dict
        from vidseq.features.extractor import content_hash

        self.setup()
        content = content_hash(source)
        if content is None:
            return None
        blob = {"content": content, "model_sha256": self._state.get("model_sha256"),
                "unsupervised": None if self.unsupervised is None else to_dict(self.unsupervised),
                "normality": None if self.settings is None else to_dict(self.settings),
                "fit_seconds": self.fit_seconds, "max_frames": self.max_frames,
                "device": self.device if self.model is not None else None, "version": __version__}
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()

    def run(self, source: str, stem: str) -> VideoResult:
        from vidseq.io import OutputLock

        with OutputLock(self.out / f"{stem}_scores.csv"):  # a second run on the same files fails with one line
            return self._run(source, stem)

    def _run(self, source: str, stem: str) -> VideoResult:
        import json

        from vidseq.io import atomic_open, atomic_write_json
        from vidseq.tasks.anomaly.scoring import (
            ScoreRow,
            VideoScores,
            score_video,
            score_video_unsupervised,
        )

        self.setup()
        t0 = time.perf_counter()
        csv_path = self.out / f"{stem}_scores.csv"
        json_path = self.output_path(stem)
        key = self.settings_hash(source)
        if key is not None and not self.force and json_path.is_file() and csv_path.is_file():
            try:
                old = json.loads(json_path.read_text())
            except (OSError, json.JSONDecodeError):
                old = {}
            if old.get("settings_hash") == key:
                return VideoResult(str(source), stem, str(json_path), "skipped", int(old.get("frames", 0)),
                                   round(time.perf_counter() - t0, 3),
                                   f"{json_path}\talready complete (same content and settings; --force to redo)")
        json_path.unlink(missing_ok=True)  # the events file marks completion: none until this run ends
        result: VideoScores
        with atomic_open(csv_path, "w", encoding="utf-8", newline="") as fh:
            fh.write("frame_index,timestamp_s,score,is_anomaly\n")
            count = 0

            def on_row(r: ScoreRow) -> None:
                nonlocal count
                fh.write(f"{r.frame_index},{r.timestamp_s:.4f},{r.score:.6f},{int(r.is_anomaly)}\n")
                count += 1
                if count % 100 == 0:
                    fh.flush()

            if self.model is None:
                result = score_video_unsupervised(source, self.unsupervised, fit_seconds=self.fit_seconds,
                                                  on_row=on_row, max_frames=self.max_frames, settings=self.settings)
            else:
                result = score_video(source, self._state["model"], self._state["calibration"], on_row=on_row,
                                     max_frames=self.max_frames, device=self.device)
        doc = result.events_dict()
        if self.model is not None:
            doc["model"] = str(self.model)
        if key is not None:
            doc["settings_hash"] = key
        atomic_write_json(json_path, doc)
        flagged = sum(r.is_anomaly for r in result.rows)
        label = "UNSUPERVISED " if result.mode != "trained" else ""
        thr = "none" if result.calibration is None else f"{result.calibration.threshold:.4g}"
        line = (f"{label}mode={result.mode} frames={len(result.rows)} flagged={flagged} "
                f"events={len(result.events)} threshold={thr}\n"
                + (f"note: {result.info['not_scored']}\n" if result.info.get("not_scored") else "")
                + f"wrote {csv_path} and {json_path}")
        return VideoResult(str(source), stem, str(json_path), "complete", len(result.rows),
                           round(time.perf_counter() - t0, 3), line)
