from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_video

from vidseq.errors import (
    CameraError,
    CorruptVideoError,
    EmptyVideoError,
    InconsistentFramesError,
    SourceError,
    SourceNotFoundError,
)
from vidseq.video.sources import (
    Frame,
    iter_frames,
    list_images,
    open_source,
    source_kind,
)


def write_folder(folder: Path, n: int = 12, size=(40, 30), ext: str = ".png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((size[1], size[0], 3), i * 10, np.uint8)
        cv2.imwrite(str(folder / f"frame{i}{ext}"), img)
    return folder


def test_file_source_reads_all_frames(tiny_video: Path) -> None:
    with open_source(tiny_video) as src:
        assert src.info.kind == "file"
        assert (src.info.width, src.info.height) == (96, 64)
        assert src.info.fps == pytest.approx(10.0)
        assert src.info.frame_count == 12
        frames = list(src)
    assert [f.frame_index for f in frames] == list(range(12))
    assert frames[3].timestamp_s == pytest.approx(0.3)
    assert frames[0].image.shape == (64, 96, 3) and frames[0].image.dtype == np.uint8


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"stride": 3}, [0, 3, 6, 9]),
        ({"max_frames": 5}, [0, 1, 2, 3, 4]),
        ({"start_s": 0.5}, [5, 6, 7, 8, 9, 10, 11]),
        ({"start_s": 0.2, "end_s": 0.6}, [2, 3, 4, 5]),
        ({"stride": 2, "start_s": 0.3, "max_frames": 2}, [4, 6]),
    ],
)
def test_file_source_window(tiny_video: Path, kwargs: dict, expected: list[int]) -> None:
    with open_source(tiny_video, **kwargs) as src:
        got = [f.frame_index for f in src]
        assert got == expected
        assert src.expected_frames() == len(expected)


def test_resize(tiny_video: Path) -> None:
    frames = list(iter_frames(tiny_video, resize=(32, 24), max_frames=2))
    assert frames[0].image.shape == (24, 32, 3)


def test_frames_are_real_content(tiny_video: Path) -> None:
    frames = list(iter_frames(tiny_video))
    # the white square moves right 3 px per frame: its centroid must move
    xs = [np.argwhere(f.image[:, :, 0] > 200)[:, 1].mean() for f in frames]
    assert xs[-1] - xs[0] == pytest.approx(33, abs=2)


def test_folder_source_natural_sort(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "imgs", n=12)
    assert [p.name for p in list_images(folder)][:3] == ["frame0.png", "frame1.png", "frame2.png"]
    assert list_images(folder)[10].name == "frame10.png"
    with open_source(folder, fps=5) as src:
        assert src.info.kind == "folder" and src.info.frame_count == 12
        frames = list(src)
    assert [int(f.image[0, 0, 0]) for f in frames] == [i * 10 for i in range(12)]
    assert frames[5].timestamp_s == pytest.approx(1.0)


def test_folder_formats(tmp_path: Path) -> None:
    for ext in (".jpg", ".bmp", ".tif"):
        folder = write_folder(tmp_path / ext[1:], n=3, ext=ext)
        assert len(list(iter_frames(folder))) == 3


def test_kind_detection(tmp_path: Path) -> None:
    assert source_kind("0") == "camera"
    assert source_kind(1) == "camera"
    assert source_kind("rtsp://host/stream") == "stream"
    assert source_kind("http://host/video.mjpg") == "stream"
    assert source_kind(tmp_path) == "folder"
    assert source_kind(tmp_path / "a.mp4") == "file"


def test_missing_file() -> None:
    with pytest.raises(SourceNotFoundError, match="video not found"):
        open_source("/nonexistent/video.mp4")


def test_zero_byte_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(EmptyVideoError):
        open_source(p)


def test_garbage_file(tmp_path: Path) -> None:
    p = tmp_path / "garbage.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptVideoError, match="garbage.mp4"):
        list(iter_frames(p))


def test_truncated_file(tmp_path: Path, tiny_video: Path) -> None:
    p = tmp_path / "trunc.avi"
    p.write_bytes(tiny_video.read_bytes()[:300])
    with pytest.raises((CorruptVideoError, EmptyVideoError)):
        list(iter_frames(p))


def test_zero_frame_video(tmp_path: Path) -> None:
    p = tmp_path / "zero.avi"
    w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    w.release()
    with pytest.raises((EmptyVideoError, CorruptVideoError)):
        list(iter_frames(p))


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    with pytest.raises(EmptyVideoError):
        open_source(tmp_path / "e")


def test_mixed_size_folder(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "mix", n=3, size=(40, 30))
    cv2.imwrite(str(folder / "frame3.png"), np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(InconsistentFramesError, match="frame3.png"):
        list(iter_frames(folder))


def test_unreadable_camera() -> None:
    with pytest.raises(CameraError, match="camera 97"):
        open_source("97")


def test_unreachable_stream() -> None:
    with pytest.raises(CameraError):
        open_source("http://127.0.0.1:9/none.mjpg")


@pytest.mark.parametrize("kwargs", [{"stride": 0}, {"max_frames": 0}, {"start_s": 2, "end_s": 1}])
def test_bad_arguments(tiny_video: Path, kwargs: dict) -> None:
    with pytest.raises(SourceError):
        open_source(tiny_video, **kwargs)


def test_frame_validates_shape() -> None:
    with pytest.raises(ValueError):
        Frame(np.zeros((4, 4), np.uint8), 0, 0.0)


def test_realtime_file_source_drops_frames_for_slow_consumer(tmp_path: Path) -> None:
    video = write_video(tmp_path / "rt.avi", n_frames=30, fps=30.0)
    with open_source(video, realtime=True) as src:
        assert src.info.kind == "stream"
        got = []
        for f in src:
            got.append(f.frame_index)
            time.sleep(0.1)  # consumer 3x slower than the source
        stats = src.stats
    assert got == sorted(got) and len(got) < 30
    assert stats.dropped > 0 and stats.read == 30
    assert got[-1] >= 25  # lag does not grow: the consumer ends near the newest frame


def test_a_frame_after_a_drop_carries_the_dropped_frame_before_it(tmp_path: Path) -> None:
    """Motion is measured between consecutive source frames whatever the consumer's rate: a frame handed over
    after a drop carries the source frame just before it (the one the consumer never took), and only then."""
    video = write_video(tmp_path / "rt.avi", n_frames=30, fps=30.0)
    with open_source(video) as src:
        decoded = {f.frame_index: f.image for f in src}
    with open_source(video, realtime=True) as src:
        got = []
        for f in src:
            got.append((f.frame_index, f.previous))
            time.sleep(0.1)
    gaps = 0
    for (i0, _), (i1, prev) in zip(got, got[1:]):
        if i1 - i0 == 1:
            assert prev is None  # the consumer had that frame already
            continue
        gaps += 1
        assert prev is not None and prev.frame_index == i1 - 1 and prev.previous is None
        assert np.array_equal(prev.image, decoded[i1 - 1])
    assert gaps > 0


def test_realtime_close_stops_thread(tmp_path: Path) -> None:
    video = write_video(tmp_path / "rt2.avi", n_frames=50, fps=10.0)
    before = threading.active_count()
    src = open_source(video, realtime=True)
    next(iter(src))
    src.close()
    time.sleep(0.2)
    assert threading.active_count() <= before
