"""Dataset format: round trip, helpers, and every validation error (precise file:line: clip: field)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_video

from vidseq.errors import DatasetError
from vidseq.sequences.manifest import (
    FORMAT_VERSION,
    Clip,
    Dataset,
    LabelRanges,
    Tracks,
    check_dataset,
    count_frames,
    load_dataset,
    read_labels_csv,
    read_tracks_csv,
    save_dataset,
    validate,
    write_labels_csv,
    write_tracks_csv,
)

TRACKS_CSV = "frame,id,x,y,w,h,class,conf\n0,1,1.5,2,10,12,person,0.9\n1,1,2.5,2,10,12,person,0.8\n1,2,40,30,8,8,car,\n"


def make_dataset(root: Path) -> Path:
    """A small valid dataset: a video clip with CSV labels + tracks, a frame folder, a trajectory-only clip."""
    import cv2

    (root / "videos").mkdir(parents=True)
    write_video(root / "videos" / "a.avi", n_frames=6)
    frames = root / "frames" / "b"
    frames.mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(frames / f"{i}.png"), np.full((16, 24, 3), i * 40, np.uint8))
    write_labels_csv(root / "labels" / "a.csv", np.array([0, 0, 1, 1, 0, 0]))
    (root / "tracks").mkdir()
    (root / "tracks" / "a.csv").write_text(TRACKS_CSV)
    (root / "tracks" / "traj.csv").write_text("0,7,1.0,2.0,0,0,pedestrian\n10,7,1.5,2.5,0,0,pedestrian\n")
    manifest = {
        "version": 1,
        "name": "tiny",
        "meta": {"source": "test"},
        "clips": [
            {"id": "a", "split": "test", "path": "videos/a.avi", "fps": 10.0, "frames": 6, "labels": "labels/a.csv",
             "tracks": "tracks/a.csv", "captions": ["a square moves right"], "meta": {"k": 1}},
            {"id": "b", "split": "train", "path": "frames/b", "frames": 4, "labels": {"ranges": []}},
            {"id": "traj", "split": "val", "tracks": "tracks/traj.csv", "track_units": "m", "fps": 25.0},
        ],
    }
    (root / "dataset.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return root


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds")


def test_load_resolves_absolute_paths_and_helpers(dataset_dir: Path) -> None:
    ds = load_dataset(dataset_dir)
    assert ds.name == "tiny" and ds.version == FORMAT_VERSION and ds.root == dataset_dir
    a = ds.clip("a")
    assert a.path == dataset_dir / "videos" / "a.avi" and a.path.is_absolute()
    assert a.load_labels().tolist() == [0, 0, 1, 1, 0, 0]
    assert a.load_labels().dtype == np.uint8
    tr = a.load_tracks()
    assert len(tr) == 3 and tr.ids.tolist() == [1, 2]
    assert tr.xyxy[0].tolist() == [1.5, 2.0, 11.5, 14.0]
    assert tr.centers[2].tolist() == [44.0, 34.0]
    assert tr.cls.tolist() == ["person", "person", "car"]
    assert np.isnan(tr.conf[2]) and tr.conf[0] == pytest.approx(0.9)
    assert len(tr.for_track(1)) == 2 and len(tr.for_frame(1)) == 2
    assert ds.clip("b").is_frame_folder and ds.clip("b").load_labels().tolist() == [0, 0, 0, 0]
    traj = ds.clip("traj")
    assert traj.path is None and traj.track_units == "m" and len(traj.load_tracks()) == 2
    assert [c.id for c in ds.clips_for("train")] == ["b"]
    assert [c.id for c in ds.clips_for(["val", "test"])] == ["a", "traj"]
    assert ds.splits == ["train", "val", "test"]
    assert ds.resolve("videos/a.avi") == a.path
    with pytest.raises(DatasetError, match="escapes"):
        ds.resolve("../x.avi")
    with pytest.raises(DatasetError, match="did you mean 'a'"):
        ds.clip("aa")
    with pytest.raises(DatasetError, match="unknown split"):
        ds.clips_for("training")


def test_round_trip_is_stable(dataset_dir: Path) -> None:
    ds = load_dataset(dataset_dir)
    before = ds.to_dict()
    save_dataset(ds)
    first = (dataset_dir / "dataset.yaml").read_bytes()
    again = load_dataset(dataset_dir)
    assert again.to_dict() == before
    save_dataset(again)
    assert (dataset_dir / "dataset.yaml").read_bytes() == first
    # paths are written relative to the dataset folder
    assert yaml.safe_load(first)["clips"][0]["path"] == "videos/a.avi"


def test_programmatic_dataset_and_outside_paths(tmp_path: Path) -> None:
    root = tmp_path / "new"
    write_video(tmp_path / "outside.avi", n_frames=3)
    ds = Dataset(root=root, name="new", clips=[Clip(id="x", split="train", path=Path("v/x.avi"))])
    assert ds.clips[0].path == root / "v" / "x.avi"
    ds.add(Clip(id="y", split="train", path=tmp_path / "outside.avi"))
    with pytest.raises(DatasetError, match="clip 'y': path: .* is outside the dataset folder"):
        save_dataset(ds)


def test_label_ranges_round_trip() -> None:
    y = np.array([0, 1, 1, 0, 0, 1, 1, 1], np.uint8)
    r = LabelRanges.from_array(y)
    assert r.ranges == ((1, 3), (5, 8))
    assert r.to_array(8).tolist() == y.tolist()
    assert LabelRanges.from_array(np.zeros(4)).ranges == ()


def test_tracks_csv_round_trip(tmp_path: Path) -> None:
    tr = Tracks(np.array([0, 0, 3]), np.array([1, 2, 1]), np.array([[1.25, 2, 3, 4], [0, 0, 1, 1], [5, 6, 7, 8.5]]),
                np.array(["a", "b", "a"]), np.array([0.5, np.nan, 1.0], np.float32))
    p = write_tracks_csv(tmp_path / "t.csv", tr)
    assert p.read_text().splitlines()[:2] == ["frame,id,x,y,w,h,class,conf", "0,1,1.25,2,3,4,a,0.5"]
    back = read_tracks_csv(p)
    assert back.frame.tolist() == [0, 0, 3] and back.xywh.tolist() == tr.xywh.tolist()
    assert np.isnan(back.conf[1])
    no_conf = Tracks(tr.frame, tr.track_id, tr.xywh, tr.cls, np.full(3, np.nan, np.float32))
    assert write_tracks_csv(tmp_path / "u.csv", no_conf).read_text().splitlines()[0] == "frame,id,x,y,w,h,class"
    assert len(read_tracks_csv(tmp_path / "u.csv")) == 3


def test_tracks_shape_is_checked() -> None:
    with pytest.raises(DatasetError, match="xywh must have shape"):
        Tracks(np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros((2, 3)), np.array(["a", "b"]),
               np.zeros(2, np.float32))


def test_validate_counts(dataset_dir: Path) -> None:
    s = validate(dataset_dir)
    assert [x.split for x in s.splits] == ["train", "val", "test"]
    test = s.split("test")
    assert (test.clips, test.frames, test.labelled_frames, test.anomalous_frames) == (1, 6, 6, 2)
    assert (test.tracks, test.track_rows, test.captions) == (2, 3, 1)
    assert s.split("train").frames == 4
    assert s.split("val").frames == 0 and s.split("val").track_rows == 2  # trajectory-only: no video frames
    assert s.total.clips == 3 and s.total.frames == 10
    table = s.format_table()
    assert re.search(r"^test\s+1\s+6\s+6\s+2\s+2\s+3\s+1$", table, re.M), table
    assert s.to_dict()["splits"]["total"]["anomalous_frames"] == 2


def test_count_frames(tiny_video: Path, tmp_path: Path) -> None:
    assert count_frames(tiny_video) == 12
    with pytest.raises(DatasetError, match="video not found"):
        count_frames(tmp_path / "nope.avi")
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video")
    with pytest.raises(DatasetError, match="cannot open video"):
        count_frames(bad)


def test_symlinked_video_is_allowed(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    write_video(tmp_path / "real.avi", n_frames=5)
    os.symlink(tmp_path / "real.avi", root / "v.avi")
    (root / "dataset.yaml").write_text("version: 1\nname: s\nclips:\n  - {id: v, split: train, path: v.avi}\n")
    assert validate(root).total.frames == 5


def _edit_manifest(root: Path, clip: int, **changes: object) -> None:
    data = yaml.safe_load((root / "dataset.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            data["clips"][clip].pop(key, None)
        else:
            data["clips"][clip][key] = value
    (root / "dataset.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _line_of(root: Path, text: str) -> int:
    lines = (root / "dataset.yaml").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


# (edit, expected error regex); "{root}" is the dataset folder, "{line:TEXT}" the manifest line holding TEXT
MANIFEST_ERRORS = [
    ("missing_file", lambda r: _edit_manifest(r, 0, path="videos/missing.avi"),
     r"{root}/dataset.yaml:{line:videos/missing.avi}: clip 'a': path: file not found: videos/missing.avi$"),
    ("dotdot_path", lambda r: _edit_manifest(r, 0, path="../elsewhere/a.avi"),
     r"{root}/dataset.yaml:{line:../elsewhere}: clip 'a': path: '../elsewhere/a.avi' escapes the dataset folder"),
    ("nested_dotdot", lambda r: _edit_manifest(r, 0, tracks="tracks/../../t.csv"),
     r"clip 'a': tracks: 'tracks/../../t.csv' escapes the dataset folder"),
    ("absolute_path", lambda r: _edit_manifest(r, 0, labels="/etc/passwd"),
     r"dataset.yaml:{line:/etc/passwd}: clip 'a': labels: '/etc/passwd' is absolute"),
    ("unknown_field", lambda r: _edit_manifest(r, 0, captoins=["x"]),
     r"dataset.yaml:{line:captoins}: clip 'a': unknown field 'captoins' \(did you mean 'captions'\?\)"),
    ("bad_split", lambda r: _edit_manifest(r, 1, split="training"),
     r"dataset.yaml:{line:training}: clip 'b': split: 'training' is not one of train, val, test"),
    ("duplicate_id", lambda r: _edit_manifest(r, 1, id="a"),
     r"clip 'a': id: duplicate id \(first used on line \d+\)"),
    ("bad_id", lambda r: _edit_manifest(r, 1, id="has space"), r"id 'has space' must match"),
    ("no_path_no_tracks", lambda r: _edit_manifest(r, 1, path=None),
     r"clip 'b': needs 'path' \(video or frame folder\) or 'tracks'"),
    ("range_past_end", lambda r: _edit_manifest(r, 1, labels={"ranges": [[0, 2], [3, 9]]}),
     r"clip 'b': labels: range 1 \[3, 9\] ends past the clip's 4 frames"),
    ("range_order", lambda r: _edit_manifest(r, 1, labels={"ranges": [[2, 3], [0, 1]]}),
     r"clip 'b': labels: range 1 \[0, 1\] overlaps or precedes the previous range"),
    ("ranges_need_frames", lambda r: _edit_manifest(r, 1, frames=None),
     r"clip 'b': labels: ranges need the clip's 'frames' count"),
    ("bad_fps", lambda r: _edit_manifest(r, 0, fps=-1), r"clip 'a': fps: must be a positive number, got -1"),
    ("bad_frames", lambda r: _edit_manifest(r, 0, frames="six"), r"clip 'a': frames: must be a positive integer"),
    ("captions_not_list", lambda r: _edit_manifest(r, 0, captions="a caption"),
     r"clip 'a': captions: must be a list of strings, got str"),
    ("empty_caption", lambda r: _edit_manifest(r, 0, captions=["ok", ""]),
     r"dataset.yaml:\d+: clip 'a': captions: caption 1 must be a non-empty string"),
    ("bad_units", lambda r: _edit_manifest(r, 2, track_units="feet"),
     r"clip 'traj': track_units: 'feet' is not one of px, m"),
    ("frame_count_mismatch", lambda r: _edit_manifest(r, 0, frames=7),
     r"{root}/labels/a.csv:7: clip 'a': labels: 6 rows for a clip of 7 frames"),
    ("not_a_video", lambda r: (r / "videos" / "a.txt").write_text("x") and _edit_manifest(r, 0, path="videos/a.txt"),
     r"clip 'a': path: videos/a.txt is not a video file"),
    ("empty_frame_folder", lambda r: [p.unlink() for p in (r / "frames" / "b").iterdir()],
     r"clip 'b': path: frame folder frames/b has no images"),
]

FILE_ERRORS = [
    ("label_not_01", "labels/a.csv", "frame,anomalous\n0,0\n1,2\n",
     r"{root}/labels/a.csv:3: clip 'a': labels: anomalous must be 0 or 1, got '2'$"),
    ("label_not_int", "labels/a.csv", "frame,anomalous\n0,0\nx,1\n",
     r"labels/a.csv:3: clip 'a': labels: frame must be an integer, got 'x'"),
    ("label_gap", "labels/a.csv", "0,0\n1,0\n3,0\n", r"labels/a.csv:3: clip 'a': labels: expected frame 2"),
    ("label_columns", "labels/a.csv", "0,0\n1\n", r"labels/a.csv:2: clip 'a': labels: expected 2 columns"),
    ("tracks_columns", "tracks/a.csv", "0,1,2,3,4,5\n", r"tracks/a.csv:1: clip 'a': tracks: expected 7 or 8 columns"),
    ("tracks_negative", "tracks/a.csv", "0,1,2,3,-4,5,p\n", r"tracks/a.csv:1: clip 'a': tracks: w and h must be >= 0"),
    ("tracks_nan", "tracks/a.csv", "0,1,2,nan,4,5,p\n", r"tracks/a.csv:1: clip 'a': tracks: x,y,w,h must be finite"),
    ("tracks_duplicate", "tracks/a.csv", "0,1,2,3,4,5,p\n0,1,2,3,4,5,p\n",
     r"tracks/a.csv:2: clip 'a': tracks: track 1 already has a row for frame 0 \(line 1\)"),
    ("tracks_past_end", "tracks/a.csv", "6,1,2,3,4,5,p\n",
     r"tracks/a.csv:1: clip 'a': tracks: frame 6 is past the clip's last frame 5"),
    ("tracks_bad_id", "tracks/a.csv", "0,x,2,3,4,5,p\n", r"tracks/a.csv:1: clip 'a': tracks: id must be an integer"),
    ("tracks_empty_class", "tracks/a.csv", "0,1,2,3,4,5,\n", r"tracks/a.csv:1: clip 'a': tracks: class is empty"),
]


def _expand(pattern: str, root: Path) -> str:
    def line(m: re.Match[str]) -> str:
        return str(_line_of(root, m.group(1)))

    pattern = re.sub(r"\{line:([^}]+)\}", line, pattern)
    return pattern.replace("{root}", re.escape(str(root)))


@pytest.mark.parametrize("name,edit,pattern", MANIFEST_ERRORS, ids=[e[0] for e in MANIFEST_ERRORS])
def test_manifest_errors(dataset_dir: Path, name: str, edit, pattern: str) -> None:  # type: ignore[no-untyped-def]
    edit(dataset_dir)
    problems, summary = check_dataset(dataset_dir)
    assert summary is None
    assert len(problems) == 1, problems
    assert "\n" not in problems[0]
    assert re.search(_expand(pattern, dataset_dir), problems[0]), problems[0]
    with pytest.raises(DatasetError):
        validate(dataset_dir)


@pytest.mark.parametrize("name,rel,text,pattern", FILE_ERRORS, ids=[e[0] for e in FILE_ERRORS])
def test_annotation_file_errors(dataset_dir: Path, name: str, rel: str, text: str, pattern: str) -> None:
    (dataset_dir / rel).write_text(text)
    problems, _ = check_dataset(dataset_dir)
    assert len(problems) == 1, problems
    assert re.search(_expand(pattern, dataset_dir), problems[0]), problems[0]


TOP_LEVEL_ERRORS = [
    ("invalid_yaml", "version: 1\nclips: [\n", r"dataset.yaml:\d+: invalid YAML"),
    ("not_mapping", "- a\n- b\n", r"top level must be a mapping"),
    ("no_version", "name: x\nclips: []\n", r"missing required field 'version'"),
    ("newer_version", "version: 99\nclips: []\n", r"dataset.yaml:1: format version 99 is newer"),
    ("unknown_top", "version: 1\nclip: []\n",
     r"dataset.yaml:2: unknown top-level field 'clip' \(did you mean 'clips'\?\)"),
    ("no_clips", "version: 1\nname: x\n", r"missing required field 'clips'"),
    ("clip_not_mapping", "version: 1\nclips:\n  - just-a-string\n", r"dataset.yaml:3: clip entry 0 must be a mapping"),
    ("missing_split", "version: 1\nclips:\n  - {id: a, path: a.avi}\n", r"clip 'a': missing required field 'split'"),
]


@pytest.mark.parametrize("name,text,pattern", TOP_LEVEL_ERRORS, ids=[e[0] for e in TOP_LEVEL_ERRORS])
def test_top_level_errors(tmp_path: Path, name: str, text: str, pattern: str) -> None:
    (tmp_path / "dataset.yaml").write_text(text)
    with pytest.raises(DatasetError, match=pattern):
        load_dataset(tmp_path)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset manifest not found"):
        load_dataset(tmp_path)


def test_several_problems_are_all_reported(dataset_dir: Path) -> None:
    _edit_manifest(dataset_dir, 0, path="videos/missing.avi")
    (dataset_dir / "tracks" / "traj.csv").write_text("0,7,1,2,0,0\n")
    problems, _ = check_dataset(dataset_dir)
    assert len(problems) == 2
    with pytest.raises(DatasetError, match=r"\(and 1 more problems\)"):
        validate(dataset_dir)


def test_deep_validation_checks_frame_counts(dataset_dir: Path) -> None:
    _edit_manifest(dataset_dir, 0, frames=6)
    write_video(dataset_dir / "videos" / "a.avi", n_frames=8)  # the file changed behind the manifest
    assert validate(dataset_dir).split("test").frames == 6
    with pytest.raises(DatasetError, match=r"clip 'a': frames: manifest says 6 frames but a.avi has 8"):
        validate(dataset_dir, deep=True)


def test_frames_counted_when_absent(dataset_dir: Path) -> None:
    _edit_manifest(dataset_dir, 0, frames=None)
    assert validate(dataset_dir).split("test").frames == 6


def test_read_labels_csv_direct(tmp_path: Path) -> None:
    p = write_labels_csv(tmp_path / "l.csv", np.array([1, 0, 1]))
    assert read_labels_csv(p).tolist() == [1, 0, 1]
    with pytest.raises(DatasetError, match="3 rows for a clip of 4 frames"):
        read_labels_csv(p, num_frames=4)
    with pytest.raises(DatasetError, match="file not found"):
        read_labels_csv(tmp_path / "none.csv", clip_id="z")
