"""Importers on tiny fixtures written here, and on ../shared/data when present."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_video

from vidseq.errors import DatasetError
from vidseq.sequences.importers import (
    ImportOptions,
    import_dataset,
    read_clip_labels_csv,
    read_mot_gt,
    read_ucsd_m,
)
from vidseq.sequences.manifest import validate

# ----------------------------------------------------------------------------------------------- UCSD Ped2

PED2_TRAIN = {"Train001": 5, "Train002": 7, "Train003": 4}
PED2_TEST = {"Test001": 6, "Test002": 5}
PED2_LABELS = {"Test001": [0, 0, 1, 1, 1, 0], "Test002": [1, 1, 1, 1, 1]}


def _labels_csv(labels: dict[str, list[int]], base: int = 1) -> str:
    rows = ["clip,frame,anomalous"]
    for clip, ys in labels.items():
        rows += [f"{clip},{i + base},{y}" for i, y in enumerate(ys)]
    return "\n".join(rows) + "\n"


def _ped2_m(labels: dict[str, list[int]]) -> str:
    lines = ["TestVideoFile = {};"]
    for ys in labels.values():
        idx = np.flatnonzero(ys) + 1  # 1-based, one contiguous range each here
        lines.append(f"TestVideoFile{{end+1}}.gt_frame = [{idx[0]}:{idx[-1]}];")
    return "\n".join(lines) + "\n"


@pytest.fixture
def ped2_src(tmp_path: Path) -> Path:
    src = tmp_path / "ped2"
    for split, clips in (("train", PED2_TRAIN), ("test", PED2_TEST)):
        (src / split).mkdir(parents=True)
        for name, n in clips.items():
            write_video(src / split / f"{name}.avi", n_frames=n, size=(48, 32))
    (src / "test" / "labels.csv").write_text(_labels_csv(PED2_LABELS))
    (src / "test" / "UCSDped2.m").write_text(_ped2_m(PED2_LABELS))
    (src / "test" / "Test001_gt").mkdir()  # pixel masks folder: skipped
    return src


def test_ped2_videos(ped2_src: Path, tmp_path: Path) -> None:
    (ds,) = import_dataset("ucsd-ped2", ped2_src, tmp_path / "out")
    assert [c.id for c in ds.clips_for("train")] == list(PED2_TRAIN)
    assert [c.id for c in ds.clips_for("test")] == list(PED2_TEST)
    for c in ds.clips:
        assert c.frames == {**PED2_TRAIN, **PED2_TEST}[c.id]  # decoded, not from the header
        assert c.path.parent.parent.parent == ds.root  # videos/<split>/<id>.avi inside the dataset
        assert c.fps == pytest.approx(10.0)
    for cid, ys in PED2_LABELS.items():
        assert ds.clip(cid).load_labels().tolist() == ys
    assert ds.clip("Train002").load_labels().tolist() == [0] * 7  # normal-only training clips
    assert ds.meta["import"]["labels"] == ["labels.csv", "UCSDped2.m"]
    assert ds.meta["import"]["files"] == {"hardlink": 5}
    assert os.stat(ds.clip("Test001").path).st_ino == os.stat(ped2_src / "test" / "Test001.avi").st_ino
    s = validate(ds.root)
    assert (s.split("train").clips, s.split("train").frames) == (3, 16)
    assert (s.split("test").clips, s.split("test").frames, s.split("test").anomalous_frames) == (2, 11, 8)


def test_ped2_labels_must_agree(ped2_src: Path, tmp_path: Path) -> None:
    wrong = {**PED2_LABELS, "Test001": [0, 1, 1, 1, 1, 0]}
    (ped2_src / "test" / "UCSDped2.m").write_text(_ped2_m(wrong))
    with pytest.raises(DatasetError, match=r"clip 'Test001': labels in labels.csv and UCSDped2.m disagree .*\[1\]"):
        import_dataset("ucsd-ped2", ped2_src, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_ped2_frame_folders_m_file_and_val(tmp_path: Path) -> None:
    """Original layout: Train/Train001/*.tif frame folders, labels only from UCSDped2.m; copy mode."""
    src = tmp_path / "UCSDped2"
    for split, clips in (("Train", PED2_TRAIN), ("Test", PED2_TEST)):
        for name, n in clips.items():
            folder = src / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                cv2.imwrite(str(folder / f"{i + 1:03d}.tif"), np.full((16, 24, 3), 10 * i, np.uint8))
    (src / "Test" / "UCSDped2.m").write_text(_ped2_m(PED2_LABELS))
    (ds,) = import_dataset("ucsd-ped2", src, tmp_path / "out", ImportOptions(link="copy", val_clips=1))
    assert [c.id for c in ds.clips_for("val")] == ["Train003"]
    assert ds.clip("Train001").is_frame_folder and ds.clip("Train001").frames == 5
    assert ds.clip("Test001").load_labels().tolist() == PED2_LABELS["Test001"]
    assert ds.meta["import"]["files"] == {"copy": sum(PED2_TRAIN.values()) + sum(PED2_TEST.values())}
    assert not os.path.samefile(ds.clip("Test001").path / "001.tif", src / "Test" / "Test001" / "001.tif")


def test_ped2_symlink_and_force(ped2_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (ds,) = import_dataset("ucsd-ped2", ped2_src, out, ImportOptions(link="symlink"))
    assert ds.clip("Test001").path.is_symlink()
    assert validate(out).total.frames == 27
    with pytest.raises(DatasetError, match="folder exists and is not empty"):
        import_dataset("ucsd-ped2", ped2_src, out)
    (ds,) = import_dataset("ucsd-ped2", ped2_src, out, ImportOptions(force=True))
    assert not ds.clip("Test001").path.is_symlink()
    other = tmp_path / "not_a_dataset"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="refusing to replace a folder without dataset.yaml"):
        import_dataset("ucsd-ped2", ped2_src, other, ImportOptions(force=True))
    assert (other / "keep.txt").read_text() == "mine"


def test_ped2_label_length_mismatch(ped2_src: Path, tmp_path: Path) -> None:
    (ped2_src / "test" / "UCSDped2.m").unlink()
    short = {**PED2_LABELS, "Test002": [1, 1, 1]}
    (ped2_src / "test" / "labels.csv").write_text(_labels_csv(short))
    with pytest.raises(DatasetError, match=r"clip 'Test002': 3 labels for a video of 5 frames"):
        import_dataset("ucsd-ped2", ped2_src, tmp_path / "out")


def test_ped2_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="source folder not found"):
        import_dataset("ucsd-ped2", tmp_path / "nothing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no train/test folders"):
        import_dataset("ucsd-ped2", tmp_path / "empty", tmp_path / "out")


def test_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"unknown dataset kind 'ucsd-ped' \(did you mean 'ucsd-ped2'\?\)"):
        import_dataset("ucsd-ped", tmp_path, tmp_path / "out")


def test_label_readers(tmp_path: Path) -> None:
    p = tmp_path / "l.csv"
    p.write_text(_labels_csv({"A": [0, 1]}, base=0))
    assert read_clip_labels_csv(p)["A"].tolist() == [0, 1]
    p.write_text("clip,frame,anomalous\nA,1,0\nA,3,1\n")
    with pytest.raises(DatasetError, match=r"clip 'A': frames must run 1..N without gaps; missing \[2\]"):
        read_clip_labels_csv(p)
    p.write_text("clip,frame,anomalous\nA,1,0\nA,2,5\n")
    with pytest.raises(DatasetError, match=r"l.csv:3: anomalous must be 0 or 1, got '5'"):
        read_clip_labels_csv(p)
    m = tmp_path / "x.m"
    m.write_text("TestVideoFile{end+1}.gt_frame = [5:10, 20:22];\nTestVideoFile{end+1}.gt_frame = [1:3];\n")
    assert read_ucsd_m(m) == [[(4, 10), (19, 22)], [(0, 3)]]
    m.write_text("TestVideoFile{end+1}.gt_frame = [5-10];\n")
    with pytest.raises(DatasetError, match=r"x.m:1: cannot read range '5-10'"):
        read_ucsd_m(m)


# ---------------------------------------------------------------------------------------------------- Avenue


@pytest.fixture
def avenue_src(tmp_path: Path) -> Path:
    src = tmp_path / "avenue"
    (src / "training_videos").mkdir(parents=True)
    (src / "testing_videos").mkdir()
    write_video(src / "training_videos" / "01.avi", n_frames=4, size=(48, 32), fps=25.0)
    write_video(src / "training_videos" / "02.avi", n_frames=3, size=(48, 32), fps=25.0)
    write_video(src / "testing_videos" / "01.avi", n_frames=5, size=(48, 32), fps=25.0)
    write_video(src / "testing_videos" / "02.avi", n_frames=3, size=(48, 32), fps=25.0)
    return src


def test_avenue_mask_labels(avenue_src: Path, tmp_path: Path) -> None:
    from scipy.io import savemat

    masks = avenue_src / "testing_label_mask"
    masks.mkdir()
    for n, ys in ((1, [0, 1, 1, 0, 0]), (2, [0, 0, 1])):
        vol = np.empty((1, len(ys)), dtype=object)
        for i, y in enumerate(ys):
            m = np.zeros((8, 8), np.uint8)
            m[2, 3] = y
            vol[0, i] = m
        savemat(str(masks / f"{n}_label.mat"), {"volLabel": vol})
    (ds,) = import_dataset("avenue", avenue_src, tmp_path / "out")
    assert [c.id for c in ds.clips] == ["train_01", "train_02", "test_01", "test_02"]
    assert ds.clip("test_01").load_labels().tolist() == [0, 1, 1, 0, 0]
    assert ds.clip("test_02").load_labels().tolist() == [0, 0, 1]
    assert ds.clip("test_01").fps == pytest.approx(25.0)
    assert validate(ds.root).split("test").anomalous_frames == 3


def test_avenue_npy_labels(avenue_src: Path, tmp_path: Path) -> None:
    np.save(avenue_src / "frame_labels_avenue.npy", np.array([[0, 0, 0, 1, 1, 1, 1, 0]]))
    (ds,) = import_dataset("avenue", avenue_src, tmp_path / "out")
    assert ds.clip("test_01").load_labels().tolist() == [0, 0, 0, 1, 1]
    assert ds.clip("test_02").load_labels().tolist() == [1, 1, 0]
    np.save(avenue_src / "frame_labels_avenue.npy", np.zeros(7))
    with pytest.raises(DatasetError, match="7 labels for 8 test frames"):
        import_dataset("avenue", avenue_src, tmp_path / "out2")


def test_avenue_explicit_labels_csv(avenue_src: Path, tmp_path: Path) -> None:
    labels = tmp_path / "mine.csv"
    labels.write_text(_labels_csv({"01": [1, 1, 0, 0, 0], "02": [0, 0, 0]}))
    (ds,) = import_dataset("avenue", avenue_src, tmp_path / "out", ImportOptions(labels=labels))
    assert ds.clip("test_01").load_labels().tolist() == [1, 1, 0, 0, 0]
    with pytest.raises(DatasetError, match="labels file not found"):
        import_dataset("avenue", avenue_src, tmp_path / "out2", ImportOptions(labels=tmp_path / "none.csv"))


def test_avenue_without_labels_leaves_test_unlabelled(avenue_src: Path, tmp_path: Path) -> None:
    (ds,) = import_dataset("avenue", avenue_src, tmp_path / "out")
    assert ds.clip("test_01").labels is None
    assert ds.clip("train_01").load_labels().sum() == 0


# --------------------------------------------------------------------------------------------------- ETH/UCY


def _write_txt(path: Path, rows: list[tuple[float, float, float, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{f}\t{p}\t{x}\t{y}\n" for f, p, x, y in rows))


@pytest.fixture
def eth_src(tmp_path: Path) -> Path:
    root = tmp_path / "eth_ucy"
    walk = [(f, 1.0, 0.5 * i, 1.0) for i, f in enumerate(range(0, 100, 10))]
    walk += [(20, 2.0, 3.0, 3.0), (30, 2.0, 3.2, 3.1)]
    for scene in ("alpha", "beta"):
        _write_txt(root / scene / "train" / "a_train.txt", walk)
        _write_txt(root / scene / "train" / "b_train.txt", walk[:5])
        _write_txt(root / scene / "val" / "a_val.txt", walk[:4])
        _write_txt(root / scene / "test" / f"{scene}.txt", walk)
    return root


def test_eth_ucy_root_gives_one_dataset_per_scene(eth_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    datasets = import_dataset("eth-ucy", eth_src, out)
    assert [d.root for d in datasets] == [out / "alpha", out / "beta"]
    ds = datasets[0]
    assert ds.meta["scene"] == "alpha" and ds.name == "eth-ucy-alpha"
    assert [c.id for c in ds.clips] == ["train_a_train", "train_b_train", "val_a_val", "test_alpha"]
    test = ds.clip("test_alpha")
    assert test.path is None and test.track_units == "m" and test.split == "test"
    assert test.meta["frame_step"] == 10 and test.fps == pytest.approx(25.0)
    tr = test.load_tracks()
    assert len(tr) == 12 and tr.ids.tolist() == [1, 2]
    assert tr.frame.tolist() == sorted(tr.frame.tolist())
    assert tr.xywh[tr.track_id == 2].tolist() == [[3.0, 3.0, 0.0, 0.0], [3.2, 3.1, 0.0, 0.0]]
    s = validate(ds.root)
    assert (s.split("test").track_rows, s.split("test").tracks) == (12, 2)


def test_eth_ucy_single_scene(eth_src: Path, tmp_path: Path) -> None:
    (ds,) = import_dataset("eth-ucy", eth_src / "beta", tmp_path / "out")
    assert ds.root == tmp_path / "out" and ds.meta["scene"] == "beta"
    (ds,) = import_dataset("eth-ucy", eth_src, tmp_path / "out2", ImportOptions(scene="alpha"))
    assert ds.meta["scene"] == "alpha"
    with pytest.raises(DatasetError, match="unknown scene 'gamma'; found: alpha, beta"):
        import_dataset("eth-ucy", eth_src, tmp_path / "out3", ImportOptions(scene="gamma"))


def test_eth_ucy_bad_row(eth_src: Path, tmp_path: Path) -> None:
    bad = eth_src / "alpha" / "val" / "a_val.txt"
    bad.write_text("0\t1\t1.0\t2.0\n10\t1\t1.5\n")
    with pytest.raises(DatasetError, match=r"a_val.txt:2: expected 4 columns 'frame ped_id x y', got 3"):
        import_dataset("eth-ucy", eth_src / "alpha", tmp_path / "out")


# ------------------------------------------------------------------------------------------------------- MOT


@pytest.fixture
def mot_src(tmp_path: Path) -> Path:
    root = tmp_path / "MOT17"
    for split, seq, n in (("train", "MOT17-02-SDP", 6), ("train", "MOT17-04-SDP", 3), ("test", "MOT17-01-SDP", 4)):
        img = root / split / seq / "img1"
        img.mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(img / f"{i + 1:06d}.jpg"), np.full((20, 30, 3), 20 * i, np.uint8))
        (root / split / seq / "seqinfo.ini").write_text(
            f"[Sequence]\nname={seq}\nimDir=img1\nframeRate=30\nseqLength={n}\nimWidth=30\nimHeight=20\nimExt=.jpg\n")
    gt = root / "train" / "MOT17-02-SDP" / "gt"
    gt.mkdir()
    (gt / "gt.txt").write_text(
        "1,1,5,6,10,12,1,1,0.9\n2,1,6,6,10,12,1,1,0.8\n1,2,0,0,4,4,0,8,1.0\n3,3,1,1,2,2,1,3,0.5\n")
    gt2 = root / "train" / "MOT17-04-SDP" / "gt"
    gt2.mkdir()
    (gt2 / "gt.txt").write_text("1,7,1,1,3,3,1,-1,-1,-1\n")  # MOT15-style row
    return root


def test_mot(mot_src: Path, tmp_path: Path) -> None:
    (ds,) = import_dataset("mot", mot_src, tmp_path / "out", ImportOptions(val_clips=1))
    assert [(c.id, c.split) for c in ds.clips] == [("MOT17-02-SDP", "train"), ("MOT17-04-SDP", "val"),
                                                  ("MOT17-01-SDP", "test")]
    seq = ds.clip("MOT17-02-SDP")
    assert seq.is_frame_folder and seq.frames == 6 and seq.fps == pytest.approx(30.0)
    tr = seq.load_tracks()
    assert tr.frame.tolist() == [0, 1, 2]  # 0-based; the flag-0 distractor row is dropped
    assert tr.cls.tolist() == ["pedestrian", "pedestrian", "car"]
    assert tr.conf.tolist() == pytest.approx([0.9, 0.8, 0.5])
    assert ds.clip("MOT17-04-SDP").load_tracks().cls.tolist() == ["pedestrian"]
    assert ds.clip("MOT17-01-SDP").tracks is None
    (ds2,) = import_dataset("mot", mot_src, tmp_path / "out2", ImportOptions(keep_ignored=True))
    assert len(ds2.clip("MOT17-02-SDP").load_tracks()) == 4
    assert validate(ds.root).split("train").track_rows == 3


def test_mot_single_sequence_and_errors(mot_src: Path, tmp_path: Path) -> None:
    (ds,) = import_dataset("mot", mot_src / "train" / "MOT17-02-SDP", tmp_path / "one")
    assert [c.id for c in ds.clips] == ["MOT17-02-SDP"] and ds.clips[0].split == "train"
    gt = mot_src / "train" / "MOT17-02-SDP" / "gt" / "gt.txt"
    gt.write_text("9,1,5,6,10,12,1,1,0.9\n")
    with pytest.raises(DatasetError, match=r"gt.txt:1: frame 9 is past the sequence's 6 images"):
        read_mot_gt(gt, 6)
    gt.write_text("1,1,5,6,10,12,1,1,0.9\n1,1,5,6,10,12,1,1,0.9\n")
    with pytest.raises(DatasetError, match=r"gt.txt:2: track 1 already has a row for frame 1"):
        import_dataset("mot", mot_src, tmp_path / "bad")


# ---------------------------------------------------------------------------------------------- captions CSV


def test_captions_csv_msvd_style(tmp_path: Path) -> None:
    src = tmp_path / "msvd"
    (src / "videos").mkdir(parents=True)
    ids = ["-abc_1_5", "xyz_0_4", "qq_2_9"]
    for i, vid in enumerate(ids):
        write_video(src / "videos" / f"{vid}.avi", n_frames=3 + i, size=(48, 32))
    rows = ["VideoID,Start,End,WorkerID,Source,AnnotationTime,Language,Description"]
    rows += ["-abc,1,5,1,clean,10,English,a man plays guitar", "-abc,1,5,2,clean,10,English,someone plays a guitar",
             "-abc,1,5,3,clean,10,German,ein Mann spielt Gitarre", "xyz,0,4,1,clean,10,English,a cat jumps",
             "qq,2,9,1,clean,10,English,a dog runs", "missing,0,1,1,clean,10,English,no video here"]
    (src / "corpus.csv").write_text("\n".join(rows) + "\n")
    (ds,) = import_dataset("captions-csv", src, tmp_path / "out", ImportOptions(val_fraction=0.0, test_fraction=0.34))
    assert {c.id for c in ds.clips} == set(ids)
    guitar = ds.clip("-abc_1_5")
    assert guitar.captions == ["a man plays guitar", "someone plays a guitar"] and guitar.frames == 3
    assert [c.split for c in ds.clips].count("test") == 1
    assert ds.meta["import"]["missing_videos"] == 1
    assert validate(ds.root).total.captions == 4


def test_captions_csv_split_column_and_errors(tmp_path: Path) -> None:
    src = tmp_path / "vtt"
    src.mkdir()
    for vid in ("video0", "video1"):
        write_video(src / f"{vid}.mp4", n_frames=4, size=(48, 32), fourcc="mp4v")
    csv_path = src / "captions.csv"
    csv_path.write_text("video_id,caption,split\nvideo0,a man is talking,train\nvideo1,a car drives,validation\n")
    (ds,) = import_dataset("captions-csv", csv_path, tmp_path / "out")
    assert [(c.id, c.split) for c in ds.clips] == [("video0", "train"), ("video1", "val")]
    assert ds.clip("video0").frames == 4
    csv_path.write_text("video_id,caption,split\nvideo0,a man,training\n")
    with pytest.raises(DatasetError, match=r"captions.csv:2: split must be train, val or test, got 'training'"):
        import_dataset("captions-csv", csv_path, tmp_path / "out2")
    csv_path.write_text("vid_name,words\nvideo0,a man\n")
    with pytest.raises(DatasetError, match=r"captions.csv:1: need a video id column"):
        import_dataset("captions-csv", csv_path, tmp_path / "out3")
    csv_path.write_text("video_id,caption\nnot_here,a man\n")
    with pytest.raises(DatasetError, match="none of the 1 video ids in captions.csv has a video"):
        import_dataset("captions-csv", csv_path, tmp_path / "out4")


# ------------------------------------------------------------------------------------------ real shared data


@pytest.mark.slow
@pytest.mark.data
def test_real_ucsd_ped2(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "ucsd_ped2"
    if not src.is_dir():
        pytest.skip("ucsd_ped2 absent")
    (ds,) = import_dataset("ucsd-ped2", src, tmp_path / "ped2")
    s = validate(ds.root)
    assert (s.split("train").clips, s.split("train").frames) == (16, 2550)
    assert (s.split("test").clips, s.split("test").frames, s.split("test").anomalous_frames) == (12, 2010, 1648)
    assert s.split("train").anomalous_frames == 0
    per_clip = [int(c.load_labels().sum()) for c in ds.clips_for("test")]
    assert per_clip == [120, 86, 146, 150, 129, 159, 135, 180, 120, 150, 180, 93]  # SOURCE.txt
    assert ds.clip("Test001").load_labels()[59:61].tolist() == [0, 1]  # gt_frame = [61:180], 1-based


@pytest.mark.slow
@pytest.mark.data
def test_real_eth_ucy_eth_scene(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "eth_ucy"
    if not src.is_dir():
        pytest.skip("eth_ucy absent")
    (ds,) = import_dataset("eth-ucy", src, tmp_path / "eth", ImportOptions(scene="eth"))
    test = ds.clips_for("test")
    assert [c.id for c in test] == ["test_biwi_eth"]
    tr = test[0].load_tracks()
    assert len(tr) == 5492 and tr.ids.size == 360  # README: 5492 rows, 360 pedestrians
    assert {c.split for c in ds.clips} == {"train", "val", "test"}
    assert all(c.meta["frame_step"] == 10 for c in ds.clips)
