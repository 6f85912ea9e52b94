from __future__ import annotations

import csv
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidseq.errors import SinkError
from vidseq.video.sinks import (
    CsvSink,
    JsonlSink,
    VideoSink,
    available_encoder,
    exact_rate,
    read_jsonl,
)

REPO = Path(__file__).resolve().parents[2]


def frame_with_index(i: int, size: tuple[int, int] = (96, 64)) -> np.ndarray:
    """A frame whose index is readable after lossy coding: 8 bits as black/white blocks + a moving bar."""
    w, h = size
    img = np.full((h, w, 3), 60, np.uint8)
    block = w // 8
    for bit in range(8):
        if (i >> bit) & 1:
            img[: h // 2, bit * block:(bit + 1) * block] = 255
        else:
            img[: h // 2, bit * block:(bit + 1) * block] = 0
    img[h // 2:, :, 2] = 200  # reddish lower half, BGR (60, 60, 200), to check colours survive
    return img


def read_index(img: np.ndarray) -> int:
    h, w = img.shape[:2]
    block = w // 8
    cells = [img[: h // 4, b * block + block // 4:(b + 1) * block - block // 4] for b in range(8)]
    return sum(1 << b for b, cell in enumerate(cells) if cell.mean() > 128)


def decode_cv2(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames, fps


def decode_av(path: Path) -> tuple[list[np.ndarray], list[float], object, str]:
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        rate, codec = stream.average_rate, stream.codec_context.name
        frames, times = [], []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="bgr24"))
            times.append(float(f.time))
    return frames, times, rate, codec


def write_clip(path: Path, n: int, fps: float, size: tuple[int, int], **kw) -> VideoSink:
    with VideoSink(path, fps, size, **kw) as sink:
        for i in range(n):
            sink.write(frame_with_index(i, size))
    return sink


def test_h264_encoder_is_available() -> None:
    # PyAV wheels bundle libx264; if this fails the fallback chain is in use and browsers may not play.
    assert available_encoder() == "libx264"


@pytest.mark.parametrize(("fps", "size"), [(10.0, (96, 64)), (29.97, (96, 64)), (12.5, (97, 63))])
def test_mp4_decodes_with_cv2_and_av(tmp_path: Path, fps: float, size: tuple[int, int]) -> None:
    path = tmp_path / "out.mp4"
    sink = write_clip(path, 25, fps, size)
    assert sink.frames_written == 25 and sink.codec_name == "libx264"
    out_w, out_h = size[0] + size[0] % 2, size[1] + size[1] % 2
    assert sink.output_size == (out_w, out_h)

    frames, times, rate, codec = decode_av(path)
    assert codec == "h264"
    assert len(frames) == 25
    assert frames[0].shape == (out_h, out_w, 3)
    assert float(rate) == pytest.approx(fps, rel=1e-4)
    assert times[0] == pytest.approx(0.0, abs=1e-6)  # first frame at t=0 (no B-frame delay)
    assert np.allclose(np.diff(times), 1 / fps, atol=2e-3)
    assert [read_index(f[:size[1], :size[0]]) for f in frames] == list(range(25))

    frames_cv, fps_cv = decode_cv2(path)
    assert len(frames_cv) == 25 and frames_cv[0].shape == (out_h, out_w, 3)
    assert fps_cv == pytest.approx(fps, rel=1e-3)
    # colours survive BGR -> yuv420p -> BGR (BT.601 both ways): lower half is BGR (60, 60, 200)
    bgr = frames_cv[5][size[1] * 3 // 4, size[0] // 2].astype(int)
    assert np.abs(bgr - [60, 60, 200]).max() < 12


def test_odd_size_crop(tmp_path: Path) -> None:
    path = tmp_path / "crop.mp4"
    sink = write_clip(path, 5, 10, (97, 63), even="crop")
    frames, *_ = decode_av(path)
    assert sink.output_size == (96, 62) and frames[0].shape == (62, 96, 3) and len(frames) == 5


def test_padding_replicates_edges(tmp_path: Path) -> None:
    path = tmp_path / "pad.mp4"
    with VideoSink(path, 10, (33, 21)) as sink:
        for _ in range(3):
            sink.write(np.full((21, 33, 3), 200, np.uint8))
    frames, *_ = decode_av(path)
    assert frames[0].shape == (22, 34, 3)
    assert abs(int(frames[0][21, 33].mean()) - 200) < 8  # pad pixel is the edge colour, not black


def test_wrong_frame_size_and_write_after_close(tmp_path: Path) -> None:
    sink = VideoSink(tmp_path / "x.mp4", 10, (32, 24))
    with pytest.raises(SinkError, match=r"x\.mp4.*\(24, 32, 3\)"):
        sink.write(np.zeros((24, 30, 3), np.uint8))
    with pytest.raises(SinkError):
        sink.write(np.zeros((24, 32, 3), np.float32))
    sink.write(np.zeros((24, 32, 3), np.uint8))
    sink.close()
    sink.close()  # idempotent
    with pytest.raises(SinkError, match="after close"):
        sink.write(np.zeros((24, 32, 3), np.uint8))
    assert len(decode_av(tmp_path / "x.mp4")[0]) == 1


@pytest.mark.parametrize("kwargs", [{"fps": 0}, {"fps": float("nan")}, {"size": (1, 10)}, {"even": "grow"}])
def test_bad_sink_arguments(tmp_path: Path, kwargs: dict) -> None:
    args = {"fps": 10, "size": (32, 24)} | kwargs
    with pytest.raises(SinkError):
        VideoSink(tmp_path / "bad.mp4", args.pop("fps"), args.pop("size"), **args)


def test_unwritable_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises((SinkError, OSError)):
        VideoSink(tmp_path / "file" / "sub" / "v.mp4", 10, (32, 24))


@pytest.mark.parametrize(("fps", "expected"), [(25, (25, 1)), (29.97002997, (30000, 1001)), (12.5, (25, 2)),
                                               (23.976023976, (24000, 1001))])
def test_rate_fraction(fps: float, expected: tuple[int, int]) -> None:
    r = exact_rate(fps)
    assert (r.numerator, r.denominator) == expected


def test_atomic_sink_renames_on_success_and_removes_on_error(tmp_path: Path) -> None:
    final = tmp_path / "a.mp4"
    with VideoSink(final, 10, (32, 24), atomic=True) as sink:
        sink.write(np.zeros((24, 32, 3), np.uint8))
        assert not final.exists()
    assert final.exists() and len(decode_av(final)[0]) == 1
    with pytest.raises(RuntimeError), VideoSink(tmp_path / "b.mp4", 10, (32, 24), atomic=True) as sink:
        sink.write(np.zeros((24, 32, 3), np.uint8))
        raise RuntimeError("boom")
    assert not (tmp_path / "b.mp4").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


def test_background_encoding_writes_the_same_frames(tmp_path: Path) -> None:
    """Encoding in a worker thread gives the frames, in order, that encoding in the caller's thread gives."""
    write_clip(tmp_path / "fg.mp4", 30, 10, (96, 64))
    sink = write_clip(tmp_path / "bg.mp4", 30, 10, (96, 64), background=4)
    assert sink.frames_written == 30 and sink.encode_seconds > 0
    fg, bg = decode_av(tmp_path / "fg.mp4")[0], decode_av(tmp_path / "bg.mp4")[0]
    assert [read_index(f) for f in bg] == list(range(30))
    assert all(np.array_equal(a, b) for a, b in zip(fg, bg, strict=True))


def test_background_encoding_error_reaches_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An encoder failure in the worker is raised by a later write or by close, and an atomic sink leaves
    nothing under its name."""
    final = tmp_path / "e.mp4"
    sink = VideoSink(final, 10, (32, 24), atomic=True, background=2)

    def broken(image: np.ndarray) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(sink, "_encode", broken)
    with pytest.raises(SinkError, match="disk full"):
        for _ in range(50):
            sink.write(np.zeros((24, 32, 3), np.uint8))
        sink.close()
    sink.close()
    assert not final.exists() and list(tmp_path.iterdir()) == []


def test_fallback_to_another_encoder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = write_clip(tmp_path / "f.mp4", 4, 10, (32, 24), codec="no_such_encoder")
    assert sink.codec_name == "libx264"
    assert "no_such_encoder" in caplog.text
    assert len(decode_av(tmp_path / "f.mp4")[0]) == 4


def test_mpeg4_last_resort_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = write_clip(tmp_path / "m.mp4", 4, 10, (32, 24), codec="mpeg4")
    assert sink.codec_name == "mpeg4" and "browsers do not play" in caplog.text
    assert len(decode_cv2(tmp_path / "m.mp4")[0]) == 4


# -- killed writers ----------------------------------------------------------------------------

KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from vidseq.video.sinks import CsvSink, JsonlSink, VideoSink
    out = sys.argv[1]
    size = (64, 48)
    with VideoSink(out + "/v.mp4", 20, size, keyframe_interval_s=0.5) as v, \\
            CsvSink(out + "/rows.csv", ["frame_index", "timestamp_s", "score", "is_anomaly"]) as c, \\
            JsonlSink(out + "/rows.jsonl") as j:
        for i in range(100000):
            v.write(frame_with_index(i % 256, size))
            c.write({"frame_index": i, "timestamp_s": i / 20, "score": 0.5 + i * 1e-3, "is_anomaly": i % 7 == 0})
            j.write({"frame_index": i, "xy": [[1.5, 2.0]] * 3})
            print(i, flush=True)
            time.sleep(0.002)
""")


def test_sigkill_leaves_decodable_video_and_complete_rows(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text("import numpy as np\n" + inspect.getsource(frame_with_index) + KILLED_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    last = -1
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # bounded: the writer prints one line per frame
            last = int(line)
            if last >= 45:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert last >= 45, "writer died before writing 45 frames"

    # Video: fragments close at every keyframe (every 10 frames); everything up to the last complete
    # fragment decodes, in order, with both decoders.
    frames, times, _, codec = decode_av(tmp_path / "v.mp4")
    assert codec == "h264"
    assert len(frames) >= 30
    assert [read_index(f) for f in frames] == list(range(len(frames)))
    frames_cv, _ = decode_cv2(tmp_path / "v.mp4")
    assert len(frames_cv) == len(frames)

    # CSV/JSONL: every row printed was on disk already; no partial row.
    with open(tmp_path / "rows.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= last + 1
    assert [int(r["frame_index"]) for r in rows] == list(range(len(rows)))
    assert all(r["score"] and r["is_anomaly"] in ("0", "1") for r in rows)
    records = read_jsonl(tmp_path / "rows.jsonl")
    assert len(records) >= last + 1 and records[-1]["xy"] == [[1.5, 2.0]] * 3


# -- CSV / JSONL -------------------------------------------------------------------------------


def test_csv_sink_rows_and_formatting(tmp_path: Path) -> None:
    path = tmp_path / "frames.csv"
    with CsvSink(path, ["frame_index", "score", "flag", "label"]) as sink:
        sink.write({"frame_index": np.int64(0), "score": np.float32(0.25), "flag": True, "label": "a,b"})
        sink.write([1, float("nan"), False, None])
        sink.write({"frame_index": 2})
        assert sink.rows_written == 3
    text = path.read_text()
    assert text.splitlines()[0] == "frame_index,score,flag,label"
    rows = list(csv.reader(text.splitlines()))
    assert rows[1] == ["0", "0.25", "1", "a,b"]
    assert rows[2] == ["1", "", "0", ""]
    assert rows[3] == ["2", "", "", ""]


def test_csv_sink_rejects_unknown_columns(tmp_path: Path) -> None:
    with CsvSink(tmp_path / "x.csv", ["a", "b"]) as sink:
        with pytest.raises(SinkError, match="unknown CSV columns"):
            sink.write({"a": 1, "c": 2})
        with pytest.raises(SinkError, match="2 columns"):
            sink.write([1, 2, 3])
    with pytest.raises(SinkError):
        CsvSink(tmp_path / "y.csv", ["a", "a"])


def test_csv_flush_every_n_rows(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    sink = CsvSink(path, ["i"], flush_every=3)
    for i in range(4):
        sink.write([i])
    # header + 3 rows flushed, 4th row buffered
    assert path.read_text().splitlines() == ["i", "0", "1", "2"]
    sink.close()
    assert path.read_text().splitlines() == ["i", "0", "1", "2", "3"]


def test_csv_flush_interval(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    with CsvSink(path, ["i"], flush_every=1000, flush_interval_s=0.0) as sink:
        sink.write([7])
        assert path.read_text().splitlines() == ["i", "7"]


def test_csv_append_resumes_and_cuts_partial_row(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    with CsvSink(path, ["i", "x"]) as sink:
        sink.write([0, 1.0])
        sink.write([1, 2.0])
    with open(path, "a") as fh:
        fh.write("2,3.")  # a row cut by a kill
    with CsvSink(path, ["i", "x"], append=True) as sink:
        assert sink.rows_before == 2
        sink.write([2, 3.0])
    assert path.read_text().splitlines() == ["i,x", "0,1.0", "1,2.0", "2,3.0"]
    with pytest.raises(SinkError, match="header"):
        CsvSink(path, ["i", "y"], append=True)
    # append to a file that does not exist yet writes the header
    with CsvSink(tmp_path / "new.csv", ["i"], append=True) as sink:
        sink.write([5])
    assert (tmp_path / "new.csv").read_text().splitlines() == ["i", "5"]


def test_csv_overwrite_truncates(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text("old,stuff\n1,2\n")
    with CsvSink(path, ["a"]) as sink:
        sink.write([1])
    assert path.read_text() == "a\n1\n"


def test_jsonl_sink(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    with JsonlSink(path) as sink:
        sink.write({"i": np.int32(3), "xy": np.arange(4, dtype=np.float32).reshape(2, 2), "nan": float("nan"),
                    "p": Path("a/b")})
        sink.write({"caption": "a person walks — fast"})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {"i": 3, "xy": [[0.0, 1.0], [2.0, 3.0]], "nan": None, "p": "a/b"}
    assert read_jsonl(path)[1]["caption"].endswith("fast")
    with open(path, "a") as fh:
        fh.write('{"i": 9')  # partial line from a kill
    with JsonlSink(path, append=True) as sink:
        assert sink.rows_before == 2
        sink.write({"i": 4})
    assert [r.get("i") for r in read_jsonl(path)] == [3, None, 4]


# -- browser playback (optional: needs a Chromium binary) ----------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_mp4_plays_in_headless_chromium(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from check_mp4_in_browser import check_video, find_chromium
    finally:
        sys.path.remove(str(REPO / "scripts"))
    video = tmp_path / "annotated.mp4"
    write_clip(video, 40, 20, (161, 121))
    report = check_video(video, find_chromium(), timeout_s=20)
    assert report["ok"], report
    assert report["videoWidth"] == 162 and report["videoHeight"] == 122
    assert report["duration"] == pytest.approx(2.0, abs=0.06)
