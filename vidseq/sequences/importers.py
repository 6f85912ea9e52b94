"""Importers: public benchmark layouts -> vidseq dataset folders (``vidseq data import KIND SRC DST``).

Kinds (:data:`IMPORTERS`):
    ucsd-ped2     ``train/`` + ``test/`` (also ``Train/``, ``Test/``, ``training/frames/``, ``testing/frames/``)
                  holding videos or frame folders (``*_gt`` mask folders are skipped); test labels from a
                  ``clip,frame,anomalous`` CSV, the ``UCSDped2.m`` ``gt_frame`` ranges or a concatenated
                  ``.npy`` (both CSV and ``.m`` present: they must agree).
    avenue        CUHK Avenue: ``training_videos/`` + ``testing_videos/`` (or the ped2 folder names);
                  labels from a CSV, a concatenated ``frame_labels_avenue.npy`` or ``testing_label_mask/*.mat``
                  (``volLabel`` per-frame masks; a frame is anomalous if its mask is non-empty).
    eth-ucy       Social-GAN txt layout ``<scene>/{train,val,test}/*.txt`` (tab-separated frame ped_id x y);
                  one trajectory-only clip per file; the folder name is the held-out test scene. SRC may be
                  one scene folder (-> one dataset) or the root with several (-> ``DST/<scene>/``).
    mot           MOTChallenge: ``{train,test}/<SEQ>/img1/`` + ``gt/gt.txt`` (+ ``seqinfo.ini``), or one
                  sequence folder; gt rows with consider-flag 0 are dropped unless ``keep_ignored``.
    captions-csv  MSVD / MSR-VTT style CSV (video id + caption columns, optional split / language columns)
                  plus a folder of videos named ``<video id>.<ext>``.

Videos and frames are hard-linked into the dataset when the file system allows it (no extra space, and the
dataset stays self-contained), else copied (``link="auto"``); ``link="symlink"`` makes small datasets that
depend on SRC staying where it is. Frame counts always come from decoding the videos (or counting the
images of frame folders), never from container headers. Every dataset is built in a hidden folder beside
DST and moved into place when complete.

API::

    datasets = import_dataset("ucsd-ped2", "/data/ucsd_ped2", "ds/ped2", ImportOptions(link="auto"))
"""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidseq import __version__
from vidseq.errors import DatasetError
from vidseq.registry import Registry
from vidseq.sequences.manifest import (
    SPLITS,
    VIDEO_EXTENSIONS,
    Clip,
    Dataset,
    LabelRanges,
    Tracks,
    check_destination,
    count_frames,
    list_images,
    load_dataset,
    make_work_dir,
    replace_folder,
    save_dataset,
    video_fps,
    write_tracks_csv,
)

logger = logging.getLogger(__name__)

LINK_MODES: tuple[str, ...] = ("auto", "hardlink", "symlink", "copy")
ETH_UCY_STEP_S = 0.4  # Social-GAN annotation interval (every 10th frame of 25 fps video)

# MOT16/17/20 gt class ids (MOTChallenge devkit)
MOT_CLASSES: dict[int, str] = {
    1: "pedestrian", 2: "person_on_vehicle", 3: "car", 4: "bicycle", 5: "motorbike", 6: "non_motorized_vehicle",
    7: "static_person", 8: "distractor", 9: "occluder", 10: "occluder_on_ground", 11: "occluder_full",
    12: "reflection", 13: "crowd",
}


@dataclass(frozen=True)
class ImportOptions:
    """Options shared by the importers (each uses the ones that apply to it).

    Attributes:
        link: how videos / frames get into the dataset: ``auto`` (hard link, else copy), ``hardlink``,
            ``symlink`` (absolute links to SRC) or ``copy``.
        val_clips: move the last N training clips to a ``val`` split (video benchmarks without one).
        name: dataset name (default: the kind, or ``eth-ucy-<scene>``).
        force: replace an existing dataset folder at DST.
        progress: tqdm progress bars (None: only on a tty).
        labels: explicit anomaly-labels file (ucsd-ped2, avenue).
        scene: ETH/UCY held-out scene to import (default: every scene found).
        videos: folder of videos (captions-csv; default: beside the CSV or its ``videos/`` subfolder).
        val_fraction, test_fraction: captions-csv split shares when the CSV has no split column.
        language: captions-csv: keep rows whose language column equals this (when there is one).
        keep_ignored: mot: keep gt rows whose consider flag is 0.
        fps: frame rate for frame-folder clips without one (default: the benchmark's known rate).
    """

    link: str = "auto"
    val_clips: int = 0
    name: str | None = None
    force: bool = False
    progress: bool | None = None
    labels: Path | None = None
    scene: str | None = None
    videos: Path | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    language: str = "English"
    keep_ignored: bool = False
    fps: float | None = None

    def __post_init__(self) -> None:
        if self.link not in LINK_MODES:
            raise DatasetError(f"unknown link mode '{self.link}'; known: {', '.join(LINK_MODES)}")
        if self.val_clips < 0:
            raise DatasetError(f"val_clips must be >= 0, got {self.val_clips}")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise DatasetError("val_fraction and test_fraction must be in [0, 1) with a sum below 1")


# --------------------------------------------------------------------------------------------- building


class _Builder:
    """Builds a dataset in a hidden work folder beside ``dst``; :meth:`finish` moves it into place."""

    def __init__(self, dst: str | os.PathLike[str], opts: ImportOptions, kind: str, src: Path, name: str,
                 description: str) -> None:
        self.final = Path(os.path.abspath(dst))
        check_destination(self.final, opts.force)
        self.opts = opts
        self.work = make_work_dir(self.final)
        self.placed: Counter[str] = Counter()
        self.ds = Dataset(root=self.work, name=name, description=description,
                          meta={"import": {"kind": kind, "source": str(Path(os.path.abspath(src))),
                                           "vidseq": __version__}})

    def __enter__(self) -> _Builder:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            shutil.rmtree(self.work, ignore_errors=True)

    def place(self, src: Path, rel: str) -> Path:
        """Link or copy a video file or frame folder to ``<dataset>/<rel>``; returns the new absolute path."""
        dst = self.work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if self.opts.link == "symlink":
            os.symlink(os.path.abspath(src), dst, target_is_directory=src.is_dir())
            self.placed["symlink"] += 1
            return dst
        if src.is_dir():
            dst.mkdir()
            for img in list_images(src):
                self._place_file(img, dst / img.name)
        else:
            self._place_file(src, dst)
        return dst

    def _place_file(self, src: Path, dst: Path) -> None:
        if self.opts.link in ("auto", "hardlink"):
            try:
                os.link(src, dst)
                self.placed["hardlink"] += 1
                return
            except OSError as exc:
                if self.opts.link == "hardlink":
                    raise DatasetError(f"cannot hard-link {src} into {self.final}: {exc.strerror}") from None
                logger.debug("hard link failed for %s (%s); copying", src, exc.strerror)
        shutil.copyfile(src, dst)
        self.placed["copy"] += 1

    def add(self, clip: Clip) -> None:
        self.ds.add(clip)

    def finish(self) -> Dataset:
        if not self.ds.clips:
            raise DatasetError(f"no clips found to import into {self.final}")
        if self.placed:
            self.ds.meta["import"]["files"] = dict(sorted(self.placed.items()))
        save_dataset(self.ds)
        replace_folder(self.work, self.final)
        ds = load_dataset(self.final)
        counts = Counter(c.split for c in ds.clips)
        logger.info("imported %s: %s", self.final, ", ".join(f"{counts[s]} {s}" for s in SPLITS if counts[s]))
        return ds


def _tqdm(items: Sequence[Any], opts: ImportOptions, desc: str) -> Iterable[Any]:
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="clip", disable=None if opts.progress is None else not opts.progress)


def _safe_id(text: str) -> str:
    out = re.sub(r"[^A-Za-z0-9_.\-]+", "_", text).strip("._") or "clip"
    return out


def _trailing_int(text: str) -> int | None:
    m = re.search(r"(\d+)$", text)
    return int(m.group(1)) if m else None


def _find_dir(src: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        p = src / name
        if p.is_dir():
            return p
    return None


def _video_entries(folder: Path) -> list[Path]:
    """Video files and frame folders of a split folder, natural order; ``*_gt`` folders are skipped."""
    from natsort import natsorted

    out = []
    for p in folder.iterdir():
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            out.append(p)
        elif p.is_dir() and not p.name.lower().endswith("_gt") and list_images(p):
            out.append(p)
    return natsorted(out, key=lambda p: p.name)


# ------------------------------------------------------------------------------------- anomaly labels


def read_clip_labels_csv(path: Path) -> dict[str, np.ndarray]:
    """``clip,frame,anomalous`` CSV -> {clip: (T,) uint8}. Frames may be 1-based (UCSD) or 0-based.

    The base is detected per file: 0-based if any frame is 0, else 1-based. Every clip must list each of
    its frames exactly once.

    Raises:
        DatasetError: ``<file>:<line>: <problem>``.
    """
    rows: dict[str, dict[int, int]] = {}
    first_line: dict[tuple[str, int], int] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for line_no, rec in enumerate(csv.reader(fh), 1):
            fields = [f.strip() for f in rec]
            if not fields or not "".join(fields):
                continue
            if line_no == 1 and fields[0].lower() in ("clip", "video", "clip_id", "video_id"):
                continue
            if len(fields) != 3:
                raise DatasetError(f"{path}:{line_no}: expected 3 columns 'clip,frame,anomalous', got {len(fields)}")
            clip, frame_s, value = fields
            try:
                frame = int(frame_s)
            except ValueError:
                raise DatasetError(f"{path}:{line_no}: frame must be an integer, got '{frame_s}'") from None
            if value not in ("0", "1"):
                raise DatasetError(f"{path}:{line_no}: anomalous must be 0 or 1, got '{value}'")
            if (clip, frame) in first_line:
                raise DatasetError(f"{path}:{line_no}: clip '{clip}' frame {frame} repeats line "
                                   f"{first_line[(clip, frame)]}")
            first_line[(clip, frame)] = line_no
            rows.setdefault(clip, {})[frame] = int(value)
    if not rows:
        raise DatasetError(f"{path}: no label rows")
    base = 0 if any(0 in r for r in rows.values()) else 1
    out = {}
    for clip, r in rows.items():
        frames = sorted(r)
        expected = list(range(base, base + len(frames)))
        if frames != expected:
            missing = sorted(set(range(base, frames[-1] + 1)) - set(frames))
            raise DatasetError(f"{path}: clip '{clip}': frames must run {base}..N without gaps; missing "
                               f"{missing[:5]}")
        out[clip] = np.asarray([r[f] for f in frames], np.uint8)
    return out


_GT_RE = re.compile(r"gt_frame\s*=\s*\[([^\]]*)\]")


def read_ucsd_m(path: Path) -> list[list[tuple[int, int]]]:
    """UCSD ``TestVideoFile{end+1}.gt_frame = [a:b, ...];`` lines -> per test clip 0-based ``[start, stop)``.

    The k-th ``gt_frame`` line belongs to the k-th test clip; ``a:b`` is 1-based and inclusive.
    """
    out: list[list[tuple[int, int]]] = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        m = _GT_RE.search(line)
        if not m:
            continue
        ranges = []
        for token in re.split(r"[,\s]+", m.group(1).strip()):
            if not token:
                continue
            parts = token.split(":")
            try:
                if len(parts) == 1:
                    a = b = int(parts[0])
                elif len(parts) == 2:
                    a, b = int(parts[0]), int(parts[1])
                else:
                    raise ValueError
            except ValueError:
                raise DatasetError(f"{path}:{line_no}: cannot read range '{token}' (expected a:b)") from None
            if a < 1 or b < a:
                raise DatasetError(f"{path}:{line_no}: range {a}:{b} needs 1 <= a <= b")
            ranges.append((a - 1, b))
        out.append(ranges)
    if not out:
        raise DatasetError(f"{path}: no 'gt_frame = [a:b]' lines")
    return out


def _ranges_to_array(ranges: Sequence[tuple[int, int]], num_frames: int, where: str) -> np.ndarray:
    y = np.zeros(num_frames, np.uint8)
    for a, b in ranges:
        if b > num_frames:
            raise DatasetError(f"{where}: range {a + 1}:{b} (1-based) ends past the clip's {num_frames} frames")
        y[a:b] = 1
    return y


def _read_avenue_masks(folder: Path, clip_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """``testing_label_mask/<n>_label.mat`` (``volLabel``: 1 x T cell of masks) -> {clip: (T,) labels}."""
    from scipy.io import loadmat

    out: dict[str, np.ndarray] = {}
    files = {_trailing_int(p.stem.replace("_label", "")): p for p in folder.glob("*_label.mat")}
    for cid in clip_ids:
        p = files.get(_trailing_int(cid))
        if p is None:
            continue
        try:
            mat = loadmat(str(p))
        except Exception as exc:  # scipy raises several types for malformed files
            raise DatasetError(f"{p}: cannot read MATLAB file: {exc}") from None
        if "volLabel" not in mat:
            raise DatasetError(f"{p}: no 'volLabel' variable")
        vol = np.asarray(mat["volLabel"]).ravel()
        out[cid] = np.asarray([np.asarray(m).any() for m in vol], np.uint8)
    return out


def _match_labels(labels: dict[str, np.ndarray], clip_ids: Sequence[str], source: Path) -> dict[str, np.ndarray]:
    """Map label keys (``Test001``, ``01``, ``1`` ...) to clip ids, by name or by trailing number."""
    by_num: dict[int, str] = {}
    for key in labels:
        n = _trailing_int(key)
        if n is not None:
            by_num.setdefault(n, key)
    out = {}
    for cid in clip_ids:
        key = cid if cid in labels else by_num.get(_trailing_int(cid) or -1)
        if key is not None:
            out[cid] = labels[key]
    unmatched = set(labels) - {k for k in labels if k in clip_ids or _trailing_int(k) in
                               {_trailing_int(c) for c in clip_ids}}
    if unmatched:
        raise DatasetError(f"{source}: labels for unknown clip(s) {', '.join(sorted(unmatched)[:5])}; "
                           f"test clips: {', '.join(clip_ids[:5])}{' ...' if len(clip_ids) > 5 else ''}")
    return out


def _load_test_labels(sources: Sequence[Path], clip_ids: Sequence[str], frames: dict[str, int]) -> tuple[
        dict[str, np.ndarray], list[str]]:
    """Per-clip labels from the first label files found; several sources are cross-checked."""
    results: list[tuple[Path, dict[str, np.ndarray]]] = []
    for src in sources:
        if src.is_dir():
            got = _read_avenue_masks(src, clip_ids)
        elif src.suffix.lower() == ".csv":
            got = _match_labels(read_clip_labels_csv(src), clip_ids, src)
        elif src.suffix.lower() == ".m":
            ranges = read_ucsd_m(src)
            if len(ranges) != len(clip_ids):
                raise DatasetError(f"{src}: {len(ranges)} gt_frame lines for {len(clip_ids)} test clips")
            got = {cid: _ranges_to_array(r, frames[cid], f"{src}: clip '{cid}'")
                   for cid, r in zip(clip_ids, ranges, strict=True)}
        elif src.suffix.lower() == ".npy":
            flat = np.load(src, allow_pickle=False).ravel()
            total = sum(frames[c] for c in clip_ids)
            if flat.size != total:
                raise DatasetError(f"{src}: {flat.size} labels for {total} test frames (concatenated in clip order)")
            if not np.isin(flat, (0, 1)).all():
                raise DatasetError(f"{src}: labels must be 0/1")
            got, start = {}, 0
            for cid in clip_ids:
                got[cid] = flat[start:start + frames[cid]].astype(np.uint8)
                start += frames[cid]
        else:
            raise DatasetError(f"{src}: unknown label format (use .csv, .m, .npy or a testing_label_mask folder)")
        results.append((src, got))
    if not results:
        return {}, []
    base_src, base = results[0]
    for other_src, other in results[1:]:
        for cid in clip_ids:
            a, b = base.get(cid), other.get(cid)
            if a is None or b is None:
                continue
            if a.shape != b.shape or not np.array_equal(a, b):
                diff = (np.flatnonzero(a != b)[:1].tolist() if a.shape == b.shape else "length")
                raise DatasetError(f"clip '{cid}': labels in {base_src.name} and {other_src.name} disagree "
                                   f"(first differing 0-based frame: {diff})")
    for cid, y in base.items():
        if y.size != frames[cid]:
            raise DatasetError(f"{base_src}: clip '{cid}': {y.size} labels for a video of {frames[cid]} frames")
    return base, [s.name for s, _ in results]


# ------------------------------------------------------------------------------ anomaly benchmarks


def _import_anomaly_benchmark(
    kind: str, src: Path, dst: Path, opts: ImportOptions, *, train_names: Sequence[str],
    test_names: Sequence[str], id_format: Callable[[str, Path], str], default_fps: float,
    label_candidates: Callable[[Path, Path], list[Path]], description: str,
) -> list[Dataset]:
    if not src.is_dir():
        raise DatasetError(f"{kind}: source folder not found: {src}")
    train_dir = _find_dir(src, train_names)
    test_dir = _find_dir(src, test_names)
    if train_dir is None and test_dir is None:
        raise DatasetError(f"{kind}: no train/test folders in {src} (looked for {', '.join(train_names)} and "
                           f"{', '.join(test_names)})")
    entries: list[tuple[str, str, Path]] = []  # (split, id, source)
    for split, folder in (("train", train_dir), ("test", test_dir)):
        if folder is None:
            continue
        found = _video_entries(folder)
        if not found:
            raise DatasetError(f"{kind}: no videos or frame folders in {folder}")
        entries += [(split, id_format(split, p), p) for p in found]
    if opts.val_clips:
        train_idx = [i for i, e in enumerate(entries) if e[0] == "train"]
        if opts.val_clips >= len(train_idx):
            raise DatasetError(f"{kind}: val_clips={opts.val_clips} leaves no training clips ({len(train_idx)})")
        for i in train_idx[-opts.val_clips:]:
            entries[i] = ("val", entries[i][1], entries[i][2])
    with _Builder(dst, opts, kind, src, opts.name or kind, description) as b:
        clips: list[Clip] = []
        frames: dict[str, int] = {}
        for split, cid, path in _tqdm(entries, opts, f"import {kind}"):
            folder = "frames" if path.is_dir() else "videos"
            rel = f"{folder}/{split}/{cid}{'' if path.is_dir() else path.suffix.lower()}"
            placed = b.place(path, rel)
            n = count_frames(placed)
            if n == 0:
                raise DatasetError(f"{kind}: {path} has no frames")
            frames[cid] = n
            fps = video_fps(placed) or opts.fps or default_fps
            clips.append(Clip(id=cid, split=split, path=placed, fps=fps, frames=n,
                              meta={"source": str(path.relative_to(src))}))
        test_ids = [c.id for c in clips if c.split == "test"]
        sources = [opts.labels] if opts.labels else label_candidates(src, test_dir or src)
        for p in sources:
            if not p.exists():
                raise DatasetError(f"{kind}: labels file not found: {p}")
        labels, used = _load_test_labels(sources, test_ids, frames) if test_ids else ({}, [])
        if test_ids and not labels:
            logger.warning("%s: no test labels found in %s; test clips are unlabelled", kind, src)
        for clip in clips:
            if clip.split in ("train", "val"):
                clip.labels = LabelRanges(())  # the benchmarks' training videos are normal-only
            elif clip.id in labels:
                clip.labels = LabelRanges.from_array(labels[clip.id])
            else:
                logger.warning("%s: no labels for test clip %s", kind, clip.id)
            b.add(clip)
        b.ds.meta["import"]["labels"] = used
        return [b.finish()]


def _ped2_id(split: str, path: Path) -> str:
    stem = path.stem if path.is_file() else path.name
    n = _trailing_int(stem)
    if re.fullmatch(r"(?i)(train|test)\d+", stem) or n is None:
        return _safe_id(stem[0].upper() + stem[1:])
    return f"{'Train' if split == 'train' else 'Test'}{n:03d}"


def _ped2_labels(src: Path, test_dir: Path) -> list[Path]:
    out: list[Path] = []
    for folder in dict.fromkeys((test_dir, src)):
        for name in ("labels.csv", "UCSDped2.m", "frame_labels_ped2.npy"):
            p = folder / name
            if p.is_file() and p not in out:
                out.append(p)
    return out


def import_ucsd_ped2(src: Path, dst: Path, opts: ImportOptions) -> list[Dataset]:
    """UCSD Ped2: 16 normal training clips, 12 test clips with frame-level labels (10 fps)."""
    return _import_anomaly_benchmark(
        "ucsd-ped2", src, dst, opts, train_names=("train", "Train", "training/frames", "training", "Training"),
        test_names=("test", "Test", "testing/frames", "testing", "Testing"), id_format=_ped2_id,
        default_fps=10.0, label_candidates=_ped2_labels,
        description="UCSD Anomaly Detection Dataset, Ped2 (Mahadevan et al., CVPR 2010)")


def _avenue_id(split: str, path: Path) -> str:
    stem = path.stem if path.is_file() else path.name
    n = _trailing_int(stem)
    return f"{split}_{n:02d}" if n is not None else _safe_id(f"{split}_{stem}")


def _avenue_labels(src: Path, test_dir: Path) -> list[Path]:
    out: list[Path] = []
    for folder in dict.fromkeys((test_dir, src)):
        for name in ("labels.csv", "frame_labels_avenue.npy"):
            p = folder / name
            if p.is_file() and p not in out:
                out.append(p)
    for name in ("testing_label_mask", "ground_truth_demo/testing_label_mask"):
        p = src / name
        if p.is_dir():
            out.append(p)
            break
    return out


def import_avenue(src: Path, dst: Path, opts: ImportOptions) -> list[Dataset]:
    """CUHK Avenue: 16 training videos, 21 test videos with frame labels (25 fps)."""
    return _import_anomaly_benchmark(
        "avenue", src, dst, opts,
        train_names=("training_videos", "training/frames", "training", "train", "Train"),
        test_names=("testing_videos", "testing/frames", "testing", "test", "Test"), id_format=_avenue_id,
        default_fps=25.0, label_candidates=_avenue_labels,
        description="CUHK Avenue (Lu et al., ICCV 2013)")


# ---------------------------------------------------------------------------------------------- ETH/UCY


def read_social_gan_txt(path: Path) -> np.ndarray:
    """Social-GAN ``frame ped_id x y`` (tab or space separated) -> (R, 4) float64; integral frame and id.

    Raises:
        DatasetError: ``<file>:<line>: <problem>``.
    """
    rows: list[tuple[float, float, float, float]] = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise DatasetError(f"{path}:{line_no}: expected 4 columns 'frame ped_id x y', got {len(parts)}")
            try:
                vals = tuple(float(v) for v in parts)
            except ValueError:
                raise DatasetError(f"{path}:{line_no}: non-numeric value in {line.strip()!r}") from None
            if not all(np.isfinite(vals)):
                raise DatasetError(f"{path}:{line_no}: NaN/inf value in {line.strip()!r}")
            if not (vals[0].is_integer() and vals[1].is_integer()) or vals[0] < 0:
                raise DatasetError(f"{path}:{line_no}: frame and ped_id must be integers >= 0, got "
                                   f"{parts[0]} {parts[1]}")
            rows.append(vals)  # type: ignore[arg-type]
    if not rows:
        raise DatasetError(f"{path}: no trajectory rows")
    return np.asarray(rows, np.float64)


def _eth_scene_dirs(src: Path, scene: str | None) -> list[Path]:
    if not src.is_dir():
        raise DatasetError(f"eth-ucy: source folder not found: {src}")
    if any((src / s).is_dir() for s in SPLITS):
        if scene is not None and scene != src.name:
            raise DatasetError(f"eth-ucy: {src} is the scene folder '{src.name}', not '{scene}'")
        return [src]
    from natsort import natsorted

    scenes = natsorted((p for p in src.iterdir() if p.is_dir() and any((p / s).is_dir() for s in SPLITS)),
                       key=lambda p: p.name)
    if not scenes:
        raise DatasetError(f"eth-ucy: no scene folders with train/val/test subfolders in {src}")
    if scene is not None:
        names = [p.name for p in scenes]
        if scene not in names:
            raise DatasetError(f"eth-ucy: unknown scene '{scene}'; found: {', '.join(names)}")
        scenes = [p for p in scenes if p.name == scene]
    return scenes


def _import_eth_scene(scene_dir: Path, dst: Path, opts: ImportOptions) -> Dataset:
    from natsort import natsorted

    scene = scene_dir.name
    name = opts.name or f"eth-ucy-{scene}"
    desc = (f"ETH/UCY pedestrian trajectories, Social-GAN split with '{scene}' held out as test "
            "(Pellegrini et al. ICCV'09; Lerner et al. CGF'07; Gupta et al. CVPR'18)")
    with _Builder(dst, opts, "eth-ucy", scene_dir, name, desc) as b:
        b.ds.meta["scene"] = scene
        files = [(split, p) for split in SPLITS if (scene_dir / split).is_dir()
                 for p in natsorted((scene_dir / split).glob("*.txt"), key=lambda p: p.name)]
        if not files:
            raise DatasetError(f"eth-ucy: no .txt files in {scene_dir}/{{train,val,test}}")
        for split, path in _tqdm(files, opts, f"import eth-ucy/{scene}"):
            rows = read_social_gan_txt(path)
            order = np.lexsort((rows[:, 1], rows[:, 0]))
            rows = rows[order]
            n = len(rows)
            tracks = Tracks(frame=rows[:, 0].astype(np.int64), track_id=rows[:, 1].astype(np.int64),
                            xywh=np.column_stack([rows[:, 2], rows[:, 3], np.zeros(n), np.zeros(n)]),
                            cls=np.full(n, "pedestrian"), conf=np.full(n, np.nan, np.float32))
            dup = np.flatnonzero((np.diff(tracks.frame) == 0) & (np.diff(tracks.track_id) == 0))
            if dup.size:
                i = dup[0]
                raise DatasetError(f"{path}: pedestrian {tracks.track_id[i]} appears twice in frame {tracks.frame[i]}")
            uniq = np.unique(tracks.frame)
            diffs = np.diff(uniq)
            step = int(np.bincount(diffs).argmax()) if diffs.size else 10
            cid = _safe_id(f"{split}_{path.stem}")
            rel = f"tracks/{split}/{path.stem}.csv"
            write_tracks_csv(b.work / rel, tracks, decimals=5)
            b.add(Clip(id=cid, split=split, path=None, fps=step / ETH_UCY_STEP_S, tracks=b.work / rel,
                       track_units="m",
                       meta={"scene": scene, "source": f"{split}/{path.name}", "frame_step": step,
                             "step_s": ETH_UCY_STEP_S, "pedestrians": int(np.unique(tracks.track_id).size),
                             "point": "x,y are world positions in metres (w = h = 0)"}))
        return b.finish()


def import_eth_ucy(src: Path, dst: Path, opts: ImportOptions) -> list[Dataset]:
    """ETH/UCY (Social-GAN files): one dataset per held-out scene; trajectory-only clips (tracks in metres)."""
    scenes = _eth_scene_dirs(src, opts.scene)
    if len(scenes) == 1:
        return [_import_eth_scene(scenes[0], dst, opts)]
    return [_import_eth_scene(s, dst / s.name, opts) for s in scenes]


# -------------------------------------------------------------------------------------------------- MOT


def _read_seqinfo(path: Path) -> dict[str, str]:
    import configparser

    if not path.is_file():
        return {}
    cp = configparser.ConfigParser()
    try:
        cp.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise DatasetError(f"{path}: cannot parse: {exc}") from None
    return dict(cp["Sequence"]) if cp.has_section("Sequence") else {}


def read_mot_gt(path: Path, num_frames: int, keep_ignored: bool = False) -> Tracks:
    """MOTChallenge ``gt.txt`` -> :class:`Tracks` with 0-based frames.

    Columns ``frame,id,x,y,w,h,flag,class,visibility`` (MOT16/17/20): rows with ``flag == 0`` are dropped
    unless ``keep_ignored``; ``class`` maps through :data:`MOT_CLASSES`; ``conf`` = visibility. MOT15-style
    rows (``...,conf,-1,-1,-1``) become ``pedestrian`` rows without conf.

    Raises:
        DatasetError: ``<file>:<line>: <problem>``.
    """
    frames, ids, boxes, classes, confs = [], [], [], [], []
    seen: dict[tuple[int, int], int] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for line_no, rec in enumerate(csv.reader(fh), 1):
            fields = [f.strip() for f in rec]
            if not fields or not "".join(fields):
                continue
            if len(fields) < 6:
                raise DatasetError(f"{path}:{line_no}: expected at least 6 columns frame,id,x,y,w,h; got "
                                   f"{len(fields)}")
            try:
                vals = [float(v) for v in fields]
            except ValueError:
                raise DatasetError(f"{path}:{line_no}: non-numeric value in {','.join(fields)!r}") from None
            frame, tid = vals[0], vals[1]
            if not frame.is_integer() or not tid.is_integer() or frame < 1:
                raise DatasetError(f"{path}:{line_no}: frame (1-based) and id must be integers, got "
                                   f"{fields[0]},{fields[1]}")
            if frame > num_frames:
                raise DatasetError(f"{path}:{line_no}: frame {int(frame)} is past the sequence's {num_frames} images")
            mot16 = len(vals) >= 9 and vals[7] >= 1 and vals[7].is_integer()
            if mot16 and vals[6] == 0 and not keep_ignored:
                continue
            if vals[4] < 0 or vals[5] < 0:
                raise DatasetError(f"{path}:{line_no}: negative box size {fields[4]}x{fields[5]}")
            key = (int(frame) - 1, int(tid))
            if key in seen:
                raise DatasetError(f"{path}:{line_no}: track {int(tid)} already has a row for frame {int(frame)} "
                                   f"(line {seen[key]})")
            seen[key] = line_no
            frames.append(key[0])
            ids.append(key[1])
            boxes.append(vals[2:6])
            classes.append(MOT_CLASSES.get(int(vals[7]), f"class{int(vals[7])}") if mot16 else "pedestrian")
            confs.append(min(max(vals[8], 0.0), 1.0) if mot16 else np.nan)
    if not frames:
        return Tracks.empty()
    order = np.lexsort((np.asarray(ids), np.asarray(frames)))
    return Tracks(np.asarray(frames, np.int64)[order], np.asarray(ids, np.int64)[order],
                  np.asarray(boxes, np.float64).reshape(-1, 4)[order], np.asarray(classes, dtype=str)[order],
                  np.asarray(confs, np.float32)[order])


def _mot_sequences(src: Path) -> list[tuple[str, Path]]:
    from natsort import natsorted

    if not src.is_dir():
        raise DatasetError(f"mot: source folder not found: {src}")
    if (src / "img1").is_dir():
        return [("train" if (src / "gt" / "gt.txt").is_file() else "test", src)]
    out = []
    for split in ("train", "test"):
        folder = src / split
        if folder.is_dir():
            out += [(split, p) for p in natsorted(folder.iterdir(), key=lambda p: p.name) if (p / "img1").is_dir()]
    if not out:
        raise DatasetError(f"mot: no sequences (folders with img1/) in {src}, {src}/train or {src}/test")
    return out


def import_mot(src: Path, dst: Path, opts: ImportOptions) -> list[Dataset]:
    """MOTChallenge sequences: frame folders + gt tracks (train) or frames only (test)."""
    seqs = _mot_sequences(src)
    if opts.val_clips:
        train = [i for i, (s, _) in enumerate(seqs) if s == "train"]
        if opts.val_clips >= len(train):
            raise DatasetError(f"mot: val_clips={opts.val_clips} leaves no training sequences ({len(train)})")
        for i in train[-opts.val_clips:]:
            seqs[i] = ("val", seqs[i][1])
    with _Builder(dst, opts, "mot", src, opts.name or "mot", "MOTChallenge sequences") as b:
        for split, seq in _tqdm(seqs, opts, "import mot"):
            info = _read_seqinfo(seq / "seqinfo.ini")
            img_dir = seq / info.get("imdir", "img1")
            cid = _safe_id(seq.name)
            placed = b.place(img_dir, f"frames/{split}/{cid}")
            n = count_frames(placed)
            if n == 0:
                raise DatasetError(f"mot: {img_dir} has no images")
            if "seqlength" in info and info["seqlength"].strip().isdigit() and int(info["seqlength"]) != n:
                logger.warning("mot: %s: seqinfo.ini says %s frames, found %d images", seq.name, info["seqlength"], n)
            try:
                fps = float(info.get("framerate", "")) if info.get("framerate") else None
            except ValueError:
                fps = None
            clip = Clip(id=cid, split=split, path=placed, fps=fps or opts.fps or 30.0, frames=n,
                        meta={"source": str(seq.relative_to(src)) if seq != src else seq.name})
            gt = seq / "gt" / "gt.txt"
            if gt.is_file():
                tracks = read_mot_gt(gt, n, keep_ignored=opts.keep_ignored)
                rel = f"tracks/{split}/{cid}.csv"
                write_tracks_csv(b.work / rel, tracks)
                clip.tracks = b.work / rel
                clip.meta["track_conf"] = "visibility" if np.isfinite(tracks.conf).any() else None
            b.add(clip)
        return [b.finish()]


# ------------------------------------------------------------------------------------------ captions CSV

_ID_COLUMNS = ("video_id", "videoid", "video", "vid", "clip_id", "clip", "id", "name")
_CAPTION_COLUMNS = ("caption", "sentence", "description", "text")


def _find_column(header: Sequence[str], names: Sequence[str]) -> str | None:
    low = {h.lower().strip(): h for h in header}
    for n in names:
        if n in low:
            return low[n]
    return None


def read_captions_csv(path: Path, language: str = "English") -> tuple[dict[str, list[str]], dict[str, str]]:
    """MSVD / MSR-VTT style CSV -> ({video id: [captions]}, {video id: split}).

    Header required. The video id comes from a ``video_id``-like column (MSVD's full corpus CSV:
    ``VideoID_Start_End``); captions from ``caption``/``sentence``/``description``; a ``split`` column
    (train/val/validation/test) is used when present; with a ``language`` column only rows of ``language``
    are kept.
    """
    captions: dict[str, list[str]] = {}
    splits: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        id_col = _find_column(header, _ID_COLUMNS)
        cap_col = _find_column(header, _CAPTION_COLUMNS)
        start_col, end_col = _find_column(header, ("start",)), _find_column(header, ("end",))
        lang_col = _find_column(header, ("language", "lang"))
        split_col = _find_column(header, ("split", "subset"))
        if id_col is None or cap_col is None:
            raise DatasetError(f"{path}:1: need a video id column ({', '.join(_ID_COLUMNS)}) and a caption column "
                               f"({', '.join(_CAPTION_COLUMNS)}); header is {','.join(header)}")
        for row in reader:
            line_no = reader.line_num
            vid = (row.get(id_col) or "").strip()
            if not vid:
                raise DatasetError(f"{path}:{line_no}: empty video id")
            if start_col and end_col and row.get(start_col) and row.get(end_col):
                vid = f"{vid}_{row[start_col].strip()}_{row[end_col].strip()}"
            if lang_col and (row.get(lang_col) or "").strip().lower() != language.lower():
                continue
            text = " ".join((row.get(cap_col) or "").split())
            if not text:
                continue
            captions.setdefault(vid, []).append(text)
            if split_col:
                s = (row.get(split_col) or "").strip().lower()
                s = {"validation": "val", "valid": "val", "dev": "val"}.get(s, s)
                if s not in SPLITS:
                    raise DatasetError(f"{path}:{line_no}: split must be train, val or test, got "
                                       f"'{row.get(split_col)}'")
                if splits.setdefault(vid, s) != s:
                    raise DatasetError(f"{path}:{line_no}: video '{vid}' is in split '{splits[vid]}' and '{s}'")
    if not captions:
        raise DatasetError(f"{path}: no captions" + (f" in language '{language}'" if language else ""))
    return captions, splits


def import_captions_csv(src: Path, dst: Path, opts: ImportOptions) -> list[Dataset]:
    """Video captioning CSV + videos folder -> clips with captions."""
    from natsort import natsorted

    if src.is_dir():
        csvs = sorted(src.glob("*.csv"))
        if len(csvs) != 1:
            raise DatasetError(f"captions-csv: {src} must hold exactly one .csv (found {len(csvs)}); pass the CSV "
                               f"file as SRC")
        csv_path = csvs[0]
    elif src.is_file():
        csv_path = src
    else:
        raise DatasetError(f"captions-csv: source not found: {src}")
    captions, splits = read_captions_csv(csv_path, opts.language)
    video_dirs = [opts.videos] if opts.videos else [csv_path.parent / "videos", csv_path.parent]
    videos: dict[str, Path] = {}
    for folder in video_dirs:
        if folder is None or not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
                videos.setdefault(p.stem, p)
        if videos:
            break
    if opts.videos and not opts.videos.is_dir():
        raise DatasetError(f"captions-csv: videos folder not found: {opts.videos}")
    ids = natsorted(v for v in captions if v in videos)
    missing = [v for v in captions if v not in videos]
    if not ids:
        raise DatasetError(f"captions-csv: none of the {len(captions)} video ids in {csv_path.name} has a video in "
                           f"{', '.join(str(d) for d in video_dirs if d)}")
    if missing:
        logger.warning("captions-csv: %d of %d captioned videos not found (e.g. %s); skipped", len(missing),
                       len(captions), missing[0])
    if not splits:
        n = len(ids)
        n_test = int(round(n * opts.test_fraction))
        n_val = int(round(n * opts.val_fraction))
        for i, vid in enumerate(ids):
            splits[vid] = "train" if i < n - n_val - n_test else ("val" if i < n - n_test else "test")
    with _Builder(dst, opts, "captions-csv", csv_path, opts.name or csv_path.stem,
                  f"video captions from {csv_path.name}") as b:
        used: set[str] = set()
        for vid in _tqdm(ids, opts, "import captions"):
            cid = _safe_id(vid)
            if cid in used:
                raise DatasetError(f"captions-csv: video ids '{vid}' and another map to the same clip id '{cid}'")
            used.add(cid)
            src_video = videos[vid]
            placed = b.place(src_video, f"videos/{cid}{src_video.suffix.lower()}")
            n = count_frames(placed)
            if n == 0:
                raise DatasetError(f"captions-csv: {src_video} has no frames")
            b.add(Clip(id=cid, split=splits.get(vid, "train"), path=placed, fps=video_fps(placed), frames=n,
                       captions=captions[vid], meta={"video_id": vid} if cid != vid else {}))
        b.ds.meta["import"]["missing_videos"] = len(missing)
        return [b.finish()]


# ---------------------------------------------------------------------------------------------- registry

IMPORTERS: Registry[Callable[[Path, Path, ImportOptions], list[Dataset]]] = Registry("dataset kind", {
    "ucsd-ped2": import_ucsd_ped2,
    "avenue": import_avenue,
    "eth-ucy": import_eth_ucy,
    "mot": import_mot,
    "captions-csv": import_captions_csv,
}, error=DatasetError, plural="known")


def import_dataset(kind: str, src: str | os.PathLike[str], dst: str | os.PathLike[str],
                   options: ImportOptions | None = None) -> list[Dataset]:
    """Import a benchmark into one dataset folder (``eth-ucy`` with several scenes: one per scene under DST).

    Raises:
        DatasetError: unknown kind (lists the valid ones), missing or malformed source files.
    """
    return IMPORTERS.load(kind)(Path(src), Path(dst), options or ImportOptions())


__all__ = ["IMPORTERS", "LINK_MODES", "MOT_CLASSES", "ImportOptions", "import_avenue", "import_captions_csv",
           "import_dataset", "import_eth_ucy", "import_mot", "import_ucsd_ped2", "read_captions_csv",
           "read_clip_labels_csv", "read_mot_gt", "read_social_gan_txt", "read_ucsd_m"]
