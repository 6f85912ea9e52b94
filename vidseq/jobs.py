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

    def setup(self) -> None:
        """Load what is shared by every video this process handles (called once per worker)."""

    def output_path(self, stem: str) -> Path:
        """Where the outputs of the source with output name ``stem`` go."""

    def run(self, source: str, stem: str) -> VideoResult:
        """Process one source; raises :class:`vidseq.errors.VidseqError` for a bad one."""


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
    command: str = "process"

    def setup(self) -> None:
        return None

    def output_path(self, stem: str) -> Path:
        return self.out / stem

    def run(self, source: str, stem: str) -> VideoResult:
        from vidseq.pipeline import process_video

        t0 = time.perf_counter()
        res = process_video(source, self.output_path(stem), self.cfg, force=self.force, progress=self.progress)
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
class ExtractJob:
    """``vidseq extract``: :func:`vidseq.features.extractor.extract_features` into ``out/<stem>.npz``.

    The backbone is stateless between videos, so it is loaded once per process (:meth:`setup`).
    """

    cfg: Any  # ExtractConfig
    out: Path
    progress: bool = False
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

    def __getstate__(self) -> dict[str, Any]:  # ship the settings, not a loaded model
        state = dict(self.__dict__)
        state["_state"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def output_path(self, stem: str) -> Path:
        return self.out / f"{stem}.npz"

    def run(self, source: str, stem: str) -> VideoResult:
        from vidseq.features.extractor import extract_features

        cfg = self.cfg
        target = self.output_path(stem)
        t0 = time.perf_counter()
        seq = extract_features(source, self.backbone, batch_size=cfg.batch_size, stride=cfg.stride,
                               start_s=cfg.start_s, end_s=cfg.end_s, max_frames=cfg.max_frames,
                               prefetch=cfg.prefetch, out_path=target, progress=self.progress)
        hit = bool(seq.meta.get("cache_hit"))
        status = "cache hit" if hit else f"{seq.meta.get('fps_achieved')} frames/s"
        return VideoResult(str(source), stem, str(target), "skipped" if hit else "complete", len(seq),
                           round(time.perf_counter() - t0, 3),
                           f"{target}\t{len(seq)} frames x {seq.feature_dim}\t{status}")
