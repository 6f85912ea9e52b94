"""Dataset format: a folder with ``dataset.yaml`` listing clips, splits and annotations (format version 1).

A dataset is self-contained: every path in the manifest is relative to the folder and may not escape it
(no absolute paths, no ``..``). Frame numbers are 0-based everywhere (the ``frame_index`` that
:mod:`vidseq.video.sources` yields); importers convert 1-based sources (MOT, UCSD ``.m`` files).

Example ``dataset.yaml``::

    version: 1
    name: ucsd-ped2
    description: UCSD Anomaly Ped2
    meta: {source: ...}                  # free mapping
    clips:
      - id: Test001                      # unique, [A-Za-z0-9_.-]
        split: test                      # train | val | test
        path: videos/test/Test001.avi    # video file or frame folder; optional for trajectory-only clips
        fps: 10.0
        frames: 180                      # frame count (importers read it from the video)
        labels: {ranges: [[60, 180]]}    # anomalous frames [start, stop), 0-based; or a CSV path
        tracks: tracks/Test001.csv       # MOT-style CSV rows frame,id,x,y,w,h,class[,conf]
        track_units: px                  # px (pixels, default) or m (metres, world coordinates)
        captions: [a person walks left]
        meta: {}

Annotation files:
    labels CSV: ``frame,anomalous`` (header optional), one row per frame 0..T-1 in order, anomalous 0/1.
    tracks CSV: ``frame,id,x,y,w,h,class[,conf]`` (header optional); ``x, y`` is the box's top-left corner,
        ``w, h >= 0`` (0 for point trajectories), ``class`` a name, ``conf`` a score or visibility in [0, 1].
        A track id appears at most once per frame.

API::

    ds = load_dataset("ds/ped2")                  # Dataset; schema-checked, raises DatasetError
    for clip in ds.clips_for("test"):
        clip.path                                 # absolute Path (video / frame folder) or None
        y = clip.load_labels()                    # (T,) uint8 0/1
        tr = clip.load_tracks()                   # Tracks: parallel arrays frame, track_id, xywh, cls, conf
    summary = validate("ds/ped2")                 # DatasetSummary; raises DatasetError on the first problem
    problems, summary = check_dataset("ds/ped2")  # every problem, one line each (summary None if any)
    save_dataset(ds)                              # atomic dataset.yaml (paths written relative)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import yaml

from vidseq.errors import DatasetError
from vidseq.io import atomic_write_text
from vidseq.registry import suggest
from vidseq.video.frames import VIDEO_EXTENSIONS, list_images

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "dataset.yaml"
SPLITS: tuple[str, ...] = ("train", "val", "test")
TRACK_UNITS: tuple[str, ...] = ("px", "m")
TRACK_COLUMNS: tuple[str, ...] = ("frame", "id", "x", "y", "w", "h", "class", "conf")
LABEL_COLUMNS: tuple[str, ...] = ("frame", "anomalous")

_ID_RE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")
_TOP_KEYS = ("version", "name", "description", "meta", "clips")
_CLIP_KEYS = ("id", "split", "path", "fps", "frames", "labels", "tracks", "track_units", "captions", "meta")


# ----------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class LabelRanges:
    """Anomalous frame ranges ``[start, stop)`` (0-based, stop exclusive); all other frames are normal.

    ``LabelRanges(())`` states "labelled, nothing anomalous" (e.g. normal-only training clips).
    """

    ranges: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranges", tuple((int(a), int(b)) for a, b in self.ranges))

    def to_array(self, num_frames: int) -> np.ndarray:
        """(num_frames,) uint8 0/1 labels."""
        out = np.zeros(num_frames, np.uint8)
        for a, b in self.ranges:
            out[a:b] = 1
        return out

    @classmethod
    def from_array(cls, labels: np.ndarray) -> LabelRanges:
        """Run-length encode (T,) 0/1 labels into ranges."""
        y = np.asarray(labels).astype(bool).astype(np.int8)
        edges = np.diff(np.concatenate([[0], y, [0]]))
        starts = np.flatnonzero(edges == 1)
        stops = np.flatnonzero(edges == -1)
        return cls(tuple((int(a), int(b)) for a, b in zip(starts, stops, strict=True)))


@dataclass(frozen=True)
class Tracks:
    """MOT-style track rows as parallel arrays (one row per object and frame).

    Attributes:
        frame: (N,) int64 0-based frame index.
        track_id: (N,) int64 track id (unique per frame).
        xywh: (N, 4) float64 box top-left x, y, width, height (pixels, or metres with w = h = 0).
        cls: (N,) str class names.
        conf: (N,) float32 confidence / visibility; NaN where the file has no conf column.
    """

    frame: np.ndarray
    track_id: np.ndarray
    xywh: np.ndarray
    cls: np.ndarray
    conf: np.ndarray

    def __post_init__(self) -> None:
        n = self.frame.shape[0]
        for name, shape in (("frame", (n,)), ("track_id", (n,)), ("xywh", (n, 4)), ("cls", (n,)), ("conf", (n,))):
            if getattr(self, name).shape != shape:
                raise DatasetError(f"tracks: {name} must have shape {shape}, got {getattr(self, name).shape}")

    @classmethod
    def empty(cls) -> Tracks:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, "U1"),
                   np.zeros(0, np.float32))

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    @property
    def xyxy(self) -> np.ndarray:
        """(N, 4) x1, y1, x2, y2."""
        out = self.xywh.copy()
        out[:, 2:] += out[:, :2]
        return out

    @property
    def centers(self) -> np.ndarray:
        """(N, 2) box centres."""
        return self.xywh[:, :2] + self.xywh[:, 2:] / 2.0

    @property
    def ids(self) -> np.ndarray:
        """Sorted unique track ids."""
        return np.unique(self.track_id)

    def select(self, mask: np.ndarray) -> Tracks:
        return Tracks(self.frame[mask], self.track_id[mask], self.xywh[mask], self.cls[mask], self.conf[mask])

    def for_track(self, track_id: int) -> Tracks:
        """Rows of one track, sorted by frame."""
        sub = self.select(self.track_id == track_id)
        return sub.select(np.argsort(sub.frame, kind="stable"))

    def for_frame(self, frame: int) -> Tracks:
        return self.select(self.frame == frame)


@dataclass
class Clip:
    """One clip of a dataset. Paths are absolute once the clip belongs to a :class:`Dataset`.

    Attributes:
        id: unique id within the dataset (letters, digits, ``_ - .``; not starting with ``.``).
        split: ``train``, ``val`` or ``test``.
        path: video file or frame folder; ``None`` for trajectory-only clips (then ``tracks`` is required).
        fps: frame rate of the video / of the frame numbering used by labels and tracks.
        frames: number of frames (0-based frame indices run 0..frames-1).
        labels: per-frame anomaly labels: a CSV file path or :class:`LabelRanges`; ``None`` = unlabelled.
        tracks: MOT-style tracks CSV path.
        track_units: ``px`` (pixel boxes) or ``m`` (world metres, point trajectories).
        captions: reference captions.
        meta: free JSON/YAML-able metadata.
    """

    id: str
    split: str
    path: Path | None = None
    fps: float | None = None
    frames: int | None = None
    labels: Path | LabelRanges | None = None
    tracks: Path | None = None
    track_units: str = "px"
    captions: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def has_video(self) -> bool:
        return self.path is not None

    @property
    def is_frame_folder(self) -> bool:
        return self.path is not None and self.path.is_dir()

    @property
    def num_anomalous(self) -> int:
        return int(self.load_labels().sum()) if self.labels is not None else 0

    def load_labels(self) -> np.ndarray:
        """(T,) uint8 per-frame anomaly labels (0 normal, 1 anomalous).

        Raises:
            DatasetError: the clip has no labels, the file is malformed, or ranges lack ``frames``.
        """
        if self.labels is None:
            raise DatasetError(f"clip '{self.id}': has no labels")
        if isinstance(self.labels, LabelRanges):
            if self.frames is None:
                raise DatasetError(f"clip '{self.id}': labels: ranges need the clip's 'frames' count")
            return self.labels.to_array(self.frames)
        return read_labels_csv(self.labels, clip_id=self.id, num_frames=self.frames)

    def load_tracks(self) -> Tracks:
        """MOT-style tracks of this clip (:class:`Tracks`); raises DatasetError when absent or malformed."""
        if self.tracks is None:
            raise DatasetError(f"clip '{self.id}': has no tracks")
        return read_tracks_csv(self.tracks, clip_id=self.id,
                               num_frames=self.frames if self.path is not None else None)

    def to_dict(self, root: Path) -> dict[str, Any]:
        """The manifest entry, paths relative to ``root`` (raises DatasetError if one lies outside)."""
        out: dict[str, Any] = {"id": self.id, "split": self.split}
        if self.path is not None:
            out["path"] = _relative(self.path, root, self.id, "path")
        if self.fps is not None:
            out["fps"] = float(self.fps)
        if self.frames is not None:
            out["frames"] = int(self.frames)
        if isinstance(self.labels, LabelRanges):
            out["labels"] = {"ranges": [[a, b] for a, b in self.labels.ranges]}
        elif self.labels is not None:
            out["labels"] = _relative(self.labels, root, self.id, "labels")
        if self.tracks is not None:
            out["tracks"] = _relative(self.tracks, root, self.id, "tracks")
            if self.track_units != "px":
                out["track_units"] = self.track_units
        if self.captions:
            out["captions"] = list(self.captions)
        if self.meta:
            out["meta"] = self.meta
        return out


@dataclass
class Dataset:
    """A dataset folder: ``root`` plus its clips. Relative clip paths are resolved against ``root``.

    Attributes:
        root: absolute dataset folder (lexically absolute: symlinks are not resolved).
        name: dataset name.
        clips: clips in manifest order.
        description: free text.
        meta: free mapping (importer / generator provenance).
        version: manifest format version.
    """

    root: Path
    name: str
    clips: list[Clip] = field(default_factory=list)
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.root = Path(os.path.abspath(self.root))
        for clip in self.clips:
            self._absolutize(clip)

    def _absolutize(self, clip: Clip) -> None:
        if clip.path is not None and not Path(clip.path).is_absolute():
            clip.path = self.root / clip.path
        if clip.labels is not None and not isinstance(clip.labels, LabelRanges) and not Path(clip.labels).is_absolute():
            clip.labels = self.root / clip.labels
        if clip.tracks is not None and not Path(clip.tracks).is_absolute():
            clip.tracks = self.root / clip.tracks

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def add(self, clip: Clip) -> Clip:
        """Append a clip (relative paths are resolved against ``root``)."""
        self._absolutize(clip)
        self.clips.append(clip)
        return clip

    def resolve(self, relative: str | os.PathLike[str]) -> Path:
        """Absolute path of a dataset-relative path (raises DatasetError if it would escape the folder)."""
        problem = _path_problem(relative)
        if problem:
            raise DatasetError(f"{self.root}: path {problem}")
        return self.root / PurePosixPath(str(relative))

    def clips_for(self, split: str | Iterable[str]) -> list[Clip]:
        """Clips of one split (or several), in manifest order."""
        wanted = {split} if isinstance(split, str) else set(split)
        unknown = wanted - set(SPLITS)
        if unknown:
            raise DatasetError(f"unknown split(s) {', '.join(sorted(unknown))}; known: {', '.join(SPLITS)}")
        return [c for c in self.clips if c.split in wanted]

    def clip(self, clip_id: str) -> Clip:
        for c in self.clips:
            if c.id == clip_id:
                return c
        hint = suggest(clip_id, [c.id for c in self.clips])
        raise DatasetError(f"{self.manifest_path}: no clip '{clip_id}'{hint}")

    @property
    def splits(self) -> list[str]:
        """Splits that have clips, in train/val/test order."""
        present = {c.split for c in self.clips}
        return [s for s in SPLITS if s in present]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version, "name": self.name}
        if self.description:
            out["description"] = self.description
        if self.meta:
            out["meta"] = self.meta
        out["clips"] = [c.to_dict(self.root) for c in self.clips]
        return out


@dataclass(frozen=True)
class SplitSummary:
    """Counts of one split (or of the whole dataset for ``split='total'``)."""

    split: str
    clips: int = 0
    frames: int = 0
    labelled_frames: int = 0
    anomalous_frames: int = 0
    tracks: int = 0
    track_rows: int = 0
    captions: int = 0

    def __add__(self, other: SplitSummary) -> SplitSummary:
        vals = {f.name: getattr(self, f.name) + getattr(other, f.name)
                for f in dataclasses.fields(self) if f.name != "split"}
        return SplitSummary(split=self.split, **vals)


@dataclass(frozen=True)
class DatasetSummary:
    """Per-split counts from :func:`validate`."""

    name: str
    root: Path
    version: int
    splits: tuple[SplitSummary, ...]

    @property
    def total(self) -> SplitSummary:
        out = SplitSummary("total")
        for s in self.splits:
            out = out + s
        return out

    def split(self, name: str) -> SplitSummary:
        for s in self.splits:
            if s.split == name:
                return s
        return SplitSummary(name)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "root": str(self.root), "version": self.version,
                "splits": {s.split: {k: v for k, v in dataclasses.asdict(s).items() if k != "split"}
                           for s in (*self.splits, self.total)}}

    def format_table(self) -> str:
        cols = ("clips", "frames", "labelled_frames", "anomalous_frames", "tracks", "track_rows", "captions")
        heads = ("split", "clips", "frames", "labelled", "anomalous", "tracks", "track_rows", "captions")
        rows = [[s.split, *(str(getattr(s, c)) for c in cols)] for s in (*self.splits, self.total)]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
        def fmt(cells: list[str] | tuple[str, ...]) -> str:  # split name left-aligned, numbers right-aligned
            return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

        lines = [f"dataset '{self.name}' (format v{self.version}): {self.root}", fmt(heads)]
        lines += [fmt(r) for r in rows]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- helpers


def _path_problem(value: Any) -> str | None:
    """Why ``value`` is not an acceptable dataset-relative path, or None."""
    if not isinstance(value, (str, os.PathLike)):
        return f"must be a relative path string, got {type(value).__name__}"
    text = str(value)
    if not text.strip():
        return "is empty"
    if "\\" in text:
        return f"'{text}' must use '/' separators"
    p = PurePosixPath(text)
    if p.is_absolute() or re.match(r"^[A-Za-z]:", text):
        return f"'{text}' is absolute; paths must be relative to the dataset folder"
    if ".." in p.parts:
        return f"'{text}' escapes the dataset folder ('..' is not allowed)"
    return None


def _relative(path: Path | str, root: Path, clip_id: str, fieldname: str) -> str:
    p = Path(path)
    if not p.is_absolute():
        rel = PurePosixPath(str(path))
    else:
        try:
            rel = PurePosixPath(Path(os.path.abspath(p)).relative_to(root).as_posix())
        except ValueError:
            raise DatasetError(f"clip '{clip_id}': {fieldname}: {p} is outside the dataset folder {root}") from None
    problem = _path_problem(str(rel))
    if problem:
        raise DatasetError(f"clip '{clip_id}': {fieldname}: {problem}")
    return str(rel)


def count_frames(path: str | os.PathLike[str]) -> int:
    """Number of frames of a video file (decoded one by one with OpenCV) or of a frame folder (image files).

    Container metadata is not trusted: frame counts in AVI/MP4 headers can be wrong.

    Raises:
        DatasetError: missing path, or a file OpenCV cannot open.
    """
    p = Path(path)
    if p.is_dir():
        return len(list_images(p))
    if not p.is_file():
        raise DatasetError(f"video not found: {p}")
    import cv2

    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise DatasetError(f"cannot open video: {p}")
        n = 0
        while cap.grab():  # grab() demuxes and decodes but skips colour conversion
            n += 1
    finally:
        cap.release()
    return n


def video_fps(path: str | os.PathLike[str]) -> float | None:
    """Frame rate from the container (None for frame folders or when unknown)."""
    p = Path(path)
    if p.is_dir() or not p.is_file():
        return None
    import cv2

    cap = cv2.VideoCapture(str(p))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return fps if fps > 0 and math.isfinite(fps) else None


# -------------------------------------------------------------------------------------- annotation files


def _data_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line_number, fields) of non-empty CSV lines; a header line (first field not numeric) is skipped."""
    with path.open(newline="", encoding="utf-8") as fh:
        for line_no, rec in enumerate(csv.reader(fh), 1):
            fields = [f.strip() for f in rec]
            if not fields or not "".join(fields):
                continue
            if line_no == 1 and fields[0].lower() == "frame":
                continue
            yield line_no, fields


def _as_int(text: str) -> int | None:
    try:
        v = float(text)
    except ValueError:
        return None
    if not math.isfinite(v) or not v.is_integer() or abs(v) >= 2**63:  # frame/id columns are int64
        return None
    return int(v)


def read_labels_csv(path: str | os.PathLike[str], clip_id: str = "?", num_frames: int | None = None) -> np.ndarray:
    """Read a ``frame,anomalous`` CSV into (T,) uint8 labels.

    Rows must list frames 0, 1, 2, ... in order; ``anomalous`` is 0 or 1; with ``num_frames`` the file must
    have exactly that many rows.

    Raises:
        DatasetError: ``<file>:<line>: clip '<id>': labels: <problem>``.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: clip '{clip_id}': labels: file not found")
    values: list[int] = []
    last_line = 0
    for line_no, fields in _data_rows(p):
        last_line = line_no
        where = f"{p}:{line_no}: clip '{clip_id}': labels"
        if len(fields) != 2:
            raise DatasetError(f"{where}: expected 2 columns 'frame,anomalous', got {len(fields)}")
        frame = _as_int(fields[0])
        if frame is None:
            raise DatasetError(f"{where}: frame must be an integer, got '{fields[0]}'")
        if frame != len(values):
            raise DatasetError(f"{where}: expected frame {len(values)} (rows list frames 0, 1, 2, ... in order), "
                               f"got {frame}")
        if fields[1] not in ("0", "1"):
            raise DatasetError(f"{where}: anomalous must be 0 or 1, got '{fields[1]}'")
        values.append(int(fields[1]))
    if num_frames is not None and len(values) != num_frames:
        raise DatasetError(f"{p}:{last_line}: clip '{clip_id}': labels: {len(values)} rows for a clip of "
                           f"{num_frames} frames")
    return np.asarray(values, np.uint8)


def write_labels_csv(path: str | os.PathLike[str], labels: np.ndarray) -> Path:
    """Write (T,) 0/1 labels as ``frame,anomalous`` CSV (atomic)."""
    y = np.asarray(labels).astype(np.uint8).ravel()
    if y.size and y.max() > 1:
        raise DatasetError(f"{path}: labels must be 0/1")
    buf = io.StringIO()
    buf.write("frame,anomalous\n")
    for i, v in enumerate(y):
        buf.write(f"{i},{int(v)}\n")
    return atomic_write_text(path, buf.getvalue())


def read_tracks_csv(path: str | os.PathLike[str], clip_id: str = "?", num_frames: int | None = None) -> Tracks:
    """Read a MOT-style ``frame,id,x,y,w,h,class[,conf]`` CSV.

    Args:
        path: the CSV file (header optional).
        clip_id: named in error messages.
        num_frames: when given, every frame must lie in ``[0, num_frames)``.

    Raises:
        DatasetError: ``<file>:<line>: clip '<id>': tracks: <problem>``.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: clip '{clip_id}': tracks: file not found")
    frames: list[int] = []
    ids: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    classes: list[str] = []
    confs: list[float] = []
    seen: dict[tuple[int, int], int] = {}
    for line_no, fields in _data_rows(p):
        where = f"{p}:{line_no}: clip '{clip_id}': tracks"
        if len(fields) not in (7, 8):
            raise DatasetError(f"{where}: expected 7 or 8 columns 'frame,id,x,y,w,h,class[,conf]', got {len(fields)}")
        frame, tid = _as_int(fields[0]), _as_int(fields[1])
        if frame is None or frame < 0:
            raise DatasetError(f"{where}: frame must be an integer >= 0, got '{fields[0]}'")
        if num_frames is not None and frame >= num_frames:
            raise DatasetError(f"{where}: frame {frame} is past the clip's last frame {num_frames - 1}")
        if tid is None:
            raise DatasetError(f"{where}: id must be an integer, got '{fields[1]}'")
        try:
            box = tuple(float(v) for v in fields[2:6])
        except ValueError:
            raise DatasetError(f"{where}: x,y,w,h must be numbers, got '{','.join(fields[2:6])}'") from None
        if not all(math.isfinite(v) for v in box):
            raise DatasetError(f"{where}: x,y,w,h must be finite, got '{','.join(fields[2:6])}'")
        if box[2] < 0 or box[3] < 0:
            raise DatasetError(f"{where}: w and h must be >= 0, got {fields[4]},{fields[5]}")
        if not fields[6]:
            raise DatasetError(f"{where}: class is empty")
        conf = math.nan
        if len(fields) == 8 and fields[7] != "":
            try:
                conf = float(fields[7])
            except ValueError:
                raise DatasetError(f"{where}: conf must be a number, got '{fields[7]}'") from None
            if not math.isfinite(conf):
                raise DatasetError(f"{where}: conf must be finite, got '{fields[7]}'")
        key = (frame, tid)
        if key in seen:
            raise DatasetError(f"{where}: track {tid} already has a row for frame {frame} (line {seen[key]})")
        seen[key] = line_no
        frames.append(frame)
        ids.append(tid)
        boxes.append(box)  # type: ignore[arg-type]
        classes.append(fields[6])
        confs.append(conf)
    if not frames:
        return Tracks.empty()
    return Tracks(np.asarray(frames, np.int64), np.asarray(ids, np.int64), np.asarray(boxes, np.float64).reshape(-1, 4),
                  np.asarray(classes, dtype=str), np.asarray(confs, np.float32))


def _fmt_num(v: float, decimals: int) -> str:
    s = f"{v:.{decimals}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def write_tracks_csv(path: str | os.PathLike[str], tracks: Tracks, decimals: int = 3) -> Path:
    """Write tracks as ``frame,id,x,y,w,h,class[,conf]`` CSV with a header (atomic, byte-deterministic).

    The ``conf`` column is written only when some row has a finite conf.
    """
    with_conf = bool(np.isfinite(tracks.conf).any()) if len(tracks) else False
    buf = io.StringIO()
    buf.write(",".join(TRACK_COLUMNS if with_conf else TRACK_COLUMNS[:7]) + "\n")
    for i in range(len(tracks)):
        cls_name = str(tracks.cls[i])
        if not cls_name or "," in cls_name or "\n" in cls_name:
            raise DatasetError(f"{path}: class name {cls_name!r} must be non-empty without commas")
        parts = [str(int(tracks.frame[i])), str(int(tracks.track_id[i]))]
        parts += [_fmt_num(float(v), decimals) for v in tracks.xywh[i]]
        parts.append(cls_name)
        if with_conf:
            c = float(tracks.conf[i])
            parts.append(_fmt_num(c, decimals) if math.isfinite(c) else "")
        buf.write(",".join(parts) + "\n")
    return atomic_write_text(path, buf.getvalue())


# ------------------------------------------------------------------------------------------ load / save


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map key paths (e.g. ``('clips', 3, 'labels')``) to 1-based YAML line numbers."""
    lines: dict[tuple[Any, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    seen: set[int] = set()

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        if id(node) in seen:  # an alias of an enclosing node (`&a [*a]`): a cycle, not more content
            return
        seen.add(id(node))
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                lines[(*path, key)] = k.start_mark.line + 1
                walk(v, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, (*path, i))

    if root is not None:
        walk(root, ())
    return lines


class _Where:
    """Builds ``<manifest>:<line>: clip '<id>': <field>: ...`` prefixes."""

    def __init__(self, manifest: Path, lines: dict[tuple[Any, ...], int]) -> None:
        self.manifest = manifest
        self.lines = lines

    def __call__(self, path: tuple[Any, ...], clip_id: str | None = None, fieldname: str | None = None) -> str:
        line = None
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                line = self.lines[path[:n]]
                break
        loc = f"{self.manifest}:{line}" if line else str(self.manifest)
        parts = [loc]
        if clip_id is not None:
            parts.append(f"clip '{clip_id}'")
        if fieldname is not None:
            parts.append(fieldname)
        return ": ".join(parts)


def _parse_clip(raw: Any, index: int, where: _Where, root: Path) -> Clip:
    path = ("clips", index)
    if not isinstance(raw, dict):
        raise DatasetError(f"{where(path)}: clip entry {index} must be a mapping, got {type(raw).__name__}")
    clip_id = raw.get("id")
    if clip_id is None:
        raise DatasetError(f"{where(path)}: clip entry {index}: missing required field 'id'")
    if not isinstance(clip_id, (str, int)) or isinstance(clip_id, bool) or not _ID_RE.match(str(clip_id)):
        raise DatasetError(f"{where((*path, 'id'))}: clip entry {index}: id {clip_id!r} must match "
                           f"[A-Za-z0-9_-][A-Za-z0-9_.-]* (no spaces or '/')")
    cid = str(clip_id)

    def err(fieldname: str, msg: str) -> DatasetError:
        return DatasetError(f"{where((*path, fieldname), cid, fieldname)}: {msg}")

    for key in raw:
        if key not in _CLIP_KEYS:
            raise DatasetError(f"{where((*path, key), cid)}: unknown field '{key}'{suggest(str(key), _CLIP_KEYS)}; "
                               f"known: {', '.join(_CLIP_KEYS)}")
    split = raw.get("split")
    if split is None:
        raise DatasetError(f"{where(path, cid)}: missing required field 'split' ({'|'.join(SPLITS)})")
    if split not in SPLITS:
        raise err("split", f"{split!r} is not one of {', '.join(SPLITS)}{suggest(str(split), SPLITS)}")

    def rel_path(fieldname: str) -> Path | None:
        value = raw.get(fieldname)
        if value is None:
            return None
        problem = _path_problem(value)
        if problem:
            raise err(fieldname, problem)
        return root / PurePosixPath(str(value))

    video = rel_path("path")
    tracks = rel_path("tracks")
    if video is None and tracks is None:
        raise DatasetError(f"{where(path, cid)}: needs 'path' (video or frame folder) or 'tracks' (trajectory-only)")

    fps = raw.get("fps")
    if fps is not None:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
            raise err("fps", f"must be a positive number, got {fps!r}")
        fps = float(fps)
    frames = raw.get("frames")
    if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames <= 0):
        raise err("frames", f"must be a positive integer, got {frames!r}")

    labels_raw = raw.get("labels")
    labels: Path | LabelRanges | None = None
    if isinstance(labels_raw, dict):
        extra = set(labels_raw) - {"ranges"}
        if extra:
            raise err("labels", f"unknown key '{sorted(extra)[0]}' (a mapping takes only 'ranges')")
        ranges = labels_raw.get("ranges")
        if not isinstance(ranges, list):
            raise err("labels", "ranges must be a list of [start, stop] pairs")
        pairs: list[tuple[int, int]] = []
        for j, pair in enumerate(ranges):
            ok = (isinstance(pair, list) and len(pair) == 2
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in pair))
            if not ok:
                raise DatasetError(f"{where((*path, 'labels', 'ranges', j), cid, 'labels')}: range {j} must be "
                                   f"[start, stop] integers, got {pair!r}")
            a, b = pair
            if a < 0 or b <= a:
                raise DatasetError(f"{where((*path, 'labels', 'ranges', j), cid, 'labels')}: range {j} [{a}, {b}] "
                                   f"needs 0 <= start < stop")
            if frames is not None and b > frames:
                raise DatasetError(f"{where((*path, 'labels', 'ranges', j), cid, 'labels')}: range {j} [{a}, {b}] "
                                   f"ends past the clip's {frames} frames")
            if pairs and a < pairs[-1][1]:
                raise DatasetError(f"{where((*path, 'labels', 'ranges', j), cid, 'labels')}: range {j} [{a}, {b}] "
                                   f"overlaps or precedes the previous range")
            pairs.append((a, b))
        if frames is None:
            raise err("labels", "ranges need the clip's 'frames' count")
        labels = LabelRanges(tuple(pairs))
    elif labels_raw is not None:
        labels = rel_path("labels")

    units = raw.get("track_units", "px")
    if units not in TRACK_UNITS:
        raise err("track_units", f"{units!r} is not one of {', '.join(TRACK_UNITS)}")
    captions = raw.get("captions", [])
    if captions is None:
        captions = []
    if not isinstance(captions, list):
        raise err("captions", f"must be a list of strings, got {type(captions).__name__}")
    for j, cap in enumerate(captions):
        if not isinstance(cap, str) or not cap.strip():
            raise DatasetError(f"{where((*path, 'captions', j), cid, 'captions')}: caption {j} must be a non-empty "
                               f"string, got {cap!r}")
    meta = raw.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise err("meta", f"must be a mapping, got {type(meta).__name__}")
    return Clip(id=cid, split=split, path=video, fps=fps, frames=frames, labels=labels, tracks=tracks,
                track_units=units, captions=list(captions), meta=dict(meta))


def _manifest_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.is_dir() or p.name != MANIFEST_NAME and not p.suffix:
        p = p / MANIFEST_NAME
    if not p.is_file():
        raise DatasetError(f"{p}: dataset manifest not found")
    return p


def load_dataset(path: str | os.PathLike[str], *, check_files: bool = True) -> Dataset:
    """Read and schema-check ``dataset.yaml`` (given the folder or the file).

    Args:
        path: dataset folder or its ``dataset.yaml``.
        check_files: also check that every referenced file/folder exists (annotation contents are checked
            by :func:`validate`).

    Raises:
        DatasetError: one line naming the manifest line, clip and field.
    """
    manifest = _manifest_file(path)
    root = Path(os.path.abspath(manifest.parent))
    text = manifest.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f":{mark.line + 1}" if mark is not None else ""
        raise DatasetError(f"{manifest}{loc}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    where = _Where(manifest, _line_index(text))
    if not isinstance(data, dict):
        raise DatasetError(f"{manifest}: top level must be a mapping with 'version', 'name' and 'clips'")
    for key in data:
        if key not in _TOP_KEYS:
            raise DatasetError(f"{where((key,))}: unknown top-level field '{key}'{suggest(str(key), _TOP_KEYS)}; "
                               f"known: {', '.join(_TOP_KEYS)}")
    version = data.get("version")
    if version is None:
        raise DatasetError(f"{manifest}: missing required field 'version' (current format: {FORMAT_VERSION})")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DatasetError(f"{where(('version',))}: version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise DatasetError(f"{where(('version',))}: format version {version} is newer than this vidseq supports "
                           f"({FORMAT_VERSION})")
    name = data.get("name", root.name)
    if not isinstance(name, (str, int)) or isinstance(name, bool):
        raise DatasetError(f"{where(('name',))}: name must be a string, got {name!r}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise DatasetError(f"{where(('description',))}: description must be a string")
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise DatasetError(f"{where(('meta',))}: meta must be a mapping, got {type(meta).__name__}")
    raw_clips = data.get("clips")
    if raw_clips is None:
        raise DatasetError(f"{manifest}: missing required field 'clips'")
    if not isinstance(raw_clips, list):
        raise DatasetError(f"{where(('clips',))}: clips must be a list, got {type(raw_clips).__name__}")
    clips: list[Clip] = []
    first_line: dict[str, int] = {}
    for i, raw in enumerate(raw_clips):
        clip = _parse_clip(raw, i, where, root)
        if clip.id in first_line:
            raise DatasetError(f"{where(('clips', i, 'id'), clip.id, 'id')}: duplicate id (first used on line "
                               f"{first_line[clip.id]})")
        first_line[clip.id] = where.lines.get(("clips", i, "id"), 0)
        if check_files:
            _check_files(clip, i, where)
        clips.append(clip)
    return Dataset(root=root, name=str(name), clips=clips, description=description, meta=dict(meta), version=version)


def _check_files(clip: Clip, index: int, where: _Where) -> None:
    checks: list[tuple[str, Path | None, str]] = [("path", clip.path, "any"), ("tracks", clip.tracks, "file")]
    if clip.labels is not None and not isinstance(clip.labels, LabelRanges):
        checks.append(("labels", clip.labels, "file"))
    for fieldname, p, kind in checks:
        if p is None:
            continue
        rel = p.relative_to(where.manifest.parent.absolute()) if p.is_absolute() else p
        loc = where(("clips", index, fieldname), clip.id, fieldname)
        if not p.exists():
            broken = " (broken symlink)" if p.is_symlink() else ""
            raise DatasetError(f"{loc}: file not found: {rel}{broken}")
        if kind == "file" and not p.is_file():
            raise DatasetError(f"{loc}: {rel} is not a file")
        if fieldname == "path" and p.is_file() and p.suffix.lower() not in VIDEO_EXTENSIONS:
            raise DatasetError(f"{loc}: {rel} is not a video file ({', '.join(sorted(VIDEO_EXTENSIONS))}) "
                               f"or a frame folder")
        if fieldname == "path" and p.is_dir() and not list_images(p):
            raise DatasetError(f"{loc}: frame folder {rel} has no images")


def save_dataset(dataset: Dataset, root: str | os.PathLike[str] | None = None) -> Path:
    """Write ``dataset.yaml`` atomically (paths relative to the dataset root). Returns the manifest path.

    Args:
        dataset: the dataset; its clip paths must lie inside its root.
        root: write to another folder instead (paths are still made relative to ``dataset.root``).
    """
    out = Path(root) / MANIFEST_NAME if root is not None else dataset.manifest_path
    text = yaml.safe_dump(dataset.to_dict(), sort_keys=False, allow_unicode=True, width=120)
    return atomic_write_text(out, text)


# ---------------------------------------------------------------------------------------------- validate


def _clip_summary(clip: Clip, where: _Where, index: int, deep: bool) -> SplitSummary:
    frames = clip.frames
    if clip.path is not None and (frames is None or deep):
        try:
            counted = count_frames(clip.path)
        except DatasetError as exc:
            raise DatasetError(f"{where(('clips', index, 'path'), clip.id, 'path')}: {exc}") from None
        if frames is not None and counted != frames:
            raise DatasetError(f"{where(('clips', index, 'frames'), clip.id, 'frames')}: manifest says {frames} "
                               f"frames but {clip.path.name} has {counted}")
        if counted == 0:
            raise DatasetError(f"{where(('clips', index, 'path'), clip.id, 'path')}: {clip.path.name} has no frames")
        frames = counted
        clip.frames = counted
    labelled = anomalous = 0
    if clip.labels is not None:
        if clip.path is None and frames is None and not isinstance(clip.labels, LabelRanges):
            y = read_labels_csv(clip.labels, clip.id)
        else:
            y = clip.load_labels()
        labelled, anomalous = int(y.size), int(y.sum())
    n_tracks = rows = 0
    if clip.tracks is not None:
        tr = clip.load_tracks()
        n_tracks, rows = int(tr.ids.size), len(tr)
    return SplitSummary(clip.split, clips=1, frames=frames if clip.path is not None and frames else 0,
                        labelled_frames=labelled, anomalous_frames=anomalous, tracks=n_tracks, track_rows=rows,
                        captions=len(clip.captions))


def _summaries(path: str | os.PathLike[str], deep: bool) -> Iterator[tuple[DatasetError | None, Any]]:
    """Yield (problem, None) per problem and finally (None, DatasetSummary) when there were none."""
    try:
        ds = load_dataset(path, check_files=False)
    except DatasetError as exc:
        yield exc, None
        return
    manifest = ds.manifest_path
    where = _Where(manifest, _line_index(manifest.read_text(encoding="utf-8")))
    per_split = {s: SplitSummary(s) for s in SPLITS}
    failed = False
    for i, clip in enumerate(ds.clips):
        try:
            _check_files(clip, i, where)
            per_split[clip.split] = per_split[clip.split] + _clip_summary(clip, where, i, deep)
        except DatasetError as exc:
            failed = True
            yield exc, None
    if not failed:
        splits = tuple(per_split[s] for s in SPLITS if per_split[s].clips)
        yield None, DatasetSummary(ds.name, ds.root, ds.version, splits)


def check_dataset(path: str | os.PathLike[str], *, deep: bool = False) -> tuple[list[str], DatasetSummary | None]:
    """Every problem of a dataset (one line each) and, when there are none, its per-split counts.

    See :func:`validate` for what is checked.
    """
    problems: list[str] = []
    summary: DatasetSummary | None = None
    for exc, result in _summaries(path, deep):
        if exc is not None:
            problems.append(str(exc))
        else:
            summary = result
    return problems, summary


def find_problems(path: str | os.PathLike[str], *, deep: bool = False) -> list[str]:
    """Every problem of a dataset (one line each); empty when it is valid."""
    return check_dataset(path, deep=deep)[0]


def validate(path: str | os.PathLike[str], *, deep: bool = False) -> DatasetSummary:
    """Fully check a dataset and count it per split.

    Checks the manifest schema, that every file exists and no path escapes the folder, every labels and
    tracks row, label length against ``frames``, and track frames against ``frames``. Clips without
    ``frames`` have their videos decoded to count frames; ``deep=True`` decodes every video and checks its
    frame count against the manifest.

    Raises:
        DatasetError: the first problem (``<file>:<line>: clip '<id>': <field>: <problem>``), with
            ``(and N more problems)`` appended when there are several.
    """
    problems, summary = check_dataset(path, deep=deep)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DatasetError(f"{problems[0]}{more}")
    assert summary is not None
    return summary


# ------------------------------------------------------------------------------------ output folders


def check_destination(final: Path, force: bool) -> None:
    """Refuse to write a dataset into an existing non-empty folder unless ``force`` and it is a dataset."""
    if final.exists() and not final.is_dir():
        raise DatasetError(f"{final}: exists and is not a folder")
    if final.is_dir() and any(final.iterdir()):
        if not force:
            raise DatasetError(f"{final}: folder exists and is not empty (pass --force to replace a dataset)")
        if not (final / MANIFEST_NAME).is_file():
            raise DatasetError(f"{final}: refusing to replace a folder without {MANIFEST_NAME}")


def make_work_dir(final: Path) -> Path:
    """A fresh hidden folder beside ``final`` to build a dataset in (mode 0o777 minus the umask)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)
    return work


def replace_folder(work: Path, final: Path) -> None:
    """Move a finished dataset folder ``work`` to ``final``; an old ``final`` is removed only afterwards."""
    old = None
    if final.is_dir() and not any(final.iterdir()):
        final.rmdir()
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(work, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
