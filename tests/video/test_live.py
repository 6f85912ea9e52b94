"""Live sources without a camera: a local MJPEG-over-HTTP server that drops and refuses connections,
and video files played in real time. Everything binds to 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_video

from vidseq.errors import CameraError
from vidseq.video.sources import LiveSource, RealtimeFileSource, open_source

pytestmark = pytest.mark.timeout(60)

SIZE = (160, 120)
BITS = 16  # frame index encoded in 2 rows x 8 blocks of 20x20 px (survives JPEG)


def encode_index(i: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    w, h = size
    img = np.full((h, w, 3), 90, np.uint8)
    for bit in range(BITS):
        row, col = divmod(bit, 8)
        img[row * 20:(row + 1) * 20, col * 20:(col + 1) * 20] = 255 if (i >> bit) & 1 else 0
    return img


def decode_index(img: np.ndarray) -> int:
    value = 0
    for bit in range(BITS):
        row, col = divmod(bit, 8)
        if img[row * 20 + 5:(row + 1) * 20 - 5, col * 20 + 5:(col + 1) * 20 - 5].mean() > 128:
            value |= 1 << bit
    return value


class MjpegServer:
    """``multipart/x-mixed-replace`` JPEG stream on 127.0.0.1 (what IP cameras serve as MJPEG over HTTP).

    Every frame carries a global counter (``self.index``) drawn into its pixels, so a test can tell
    which frame it got and how far behind the newest one it is. The first connection is cut after
    ``drop_after`` frames; new connections are then answered 503 for ``down_s`` seconds.
    """

    def __init__(self, fps: float = 25.0, drop_after: int | None = None, down_s: float = 0.0) -> None:
        self.fps = fps
        self.drop_after = drop_after
        self.down_s = down_s
        self.index = 0  # next frame the server will send
        self.connections = 0
        self.refused = 0
        self.dropped_at: float | None = None
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._jpeg_cache: dict[int, bytes] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                server._serve(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            if self._stop.is_set() or time.monotonic() < self._down_until:
                self.refused += 1
                handler.send_error(503)
                return
            self.connections += 1
            conn = self.connections
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=vidseqframe")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        sent = 0
        try:
            while not self._stop.is_set():
                with self._lock:
                    i = self.index
                    self.index += 1
                ok, jpg = cv2.imencode(".jpg", encode_index(i), [cv2.IMWRITE_JPEG_QUALITY, 90])
                data = jpg.tobytes()
                handler.wfile.write(b"--vidseqframe\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                    % len(data) + data + b"\r\n")
                handler.wfile.flush()
                sent += 1
                if conn == 1 and self.drop_after is not None and sent >= self.drop_after:
                    with self._lock:
                        self._down_until = time.monotonic() + self.down_s
                        self.dropped_at = time.monotonic()
                    handler.connection.shutdown(socket.SHUT_RDWR)  # abrupt cut mid-stream
                    return
                self._stop.wait(1.0 / self.fps)
        except OSError:  # client went away
            pass

    def close(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mjpeg_server() -> Iterator:
    servers: list[MjpegServer] = []

    def start(**kw: object) -> MjpegServer:
        servers.append(MjpegServer(**kw))  # type: ignore[arg-type]
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_index_codec_survives_jpeg() -> None:
    for i in (0, 1, 37, 255, 1000, 65535):
        ok, jpg = cv2.imencode(".jpg", encode_index(i), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert decode_index(cv2.imdecode(jpg, cv2.IMREAD_COLOR)) == i


def test_mjpeg_stream_opens_as_live_source(mjpeg_server) -> None:
    server = mjpeg_server(fps=30)
    with open_source(server.url) as src:
        assert isinstance(src, LiveSource)
        assert src.info.kind == "stream" and (src.info.width, src.info.height) == SIZE
        assert src.info.frame_count is None
        got = []
        for frame in src:
            got.append((frame.frame_index, decode_index(frame.image), frame.timestamp_s))
            if len(got) == 15:
                break
    idx = [g[0] for g in got]
    served = [g[1] for g in got]
    assert idx == sorted(idx) and len(set(idx)) == 15
    assert served == sorted(served) and len(set(served)) == 15  # newer and newer frames, no repeats
    assert all(b[2] >= a[2] for a, b in zip(got, got[1:]))


def test_reconnects_after_drop_and_counts_the_gap(mjpeg_server) -> None:
    server = mjpeg_server(fps=25, drop_after=20, down_s=0.6)
    src = LiveSource(server.url, open_timeout_s=3, reconnect_backoff_s=0.1, max_backoff_s=0.4, max_reconnect_s=20)
    served: list[int] = []
    reconnected_at: int | None = None
    try:
        for frame in src:  # bounded: breaks after 20 frames past the reconnect, or by the test timeout
            served.append(decode_index(frame.image))
            if reconnected_at is None and src.stats.reconnects:
                reconnected_at = len(served)
            if reconnected_at is not None and len(served) >= reconnected_at + 20:
                break
    finally:
        src.close()
    stats = src.stats
    assert stats.reconnects >= 1 and server.connections >= 2
    assert server.refused >= 1  # it really retried while the server was down
    assert len(stats.gaps_s) >= 1
    assert 0.6 <= stats.gaps_s[0] < 10.0  # at least the time the server refused connections
    # frames keep coming after the reconnect and are newer than everything before the cut
    before, after = served[: reconnected_at - 1], served[reconnected_at:]
    assert len(after) >= 19
    assert min(after) > max(before)
    assert served == sorted(served)


def test_slow_consumer_gets_latest_frames_with_bounded_lag(mjpeg_server) -> None:
    server = mjpeg_server(fps=30)
    lags = []
    captured: list[float] = []
    with LiveSource(server.url, open_timeout_s=3) as src:
        for n, frame in enumerate(src):
            lags.append(server.index - 1 - decode_index(frame.image))  # frames behind the newest sent
            captured.append(src.capture_time(frame))
            assert captured[-1] <= time.monotonic()
            if n == 14:
                break
            time.sleep(0.2)  # consumer at ~5 fps against a 30 fps stream
        stats = src.stats
    # a FIFO would be ~6 frames further behind after every frame (~80 by the end); latest-frame
    # reading keeps the lag at a few frames however long it runs
    assert max(lags[5:]) <= 12
    assert np.mean(lags[5:]) <= 6
    assert stats.dropped >= 40
    assert stats.read - stats.yielded - stats.dropped in (0, 1)  # every frame read is taken or dropped
    assert captured == sorted(captured)


def test_close_stops_reader_thread_promptly(mjpeg_server) -> None:
    server = mjpeg_server(fps=30)
    src = LiveSource(server.url, open_timeout_s=3)
    it = iter(src)
    for _ in range(3):
        next(it)
    thread = src._thread
    assert thread.is_alive()
    t0 = time.monotonic()
    src.close()
    closed_in = time.monotonic() - t0
    assert not thread.is_alive()
    assert closed_in < 3.0  # the reader checks the stop flag between frames (30 fps here)
    assert next(it, None) is None  # iteration ends after close
    reads = src.stats.read
    time.sleep(0.3)
    assert src.stats.read == reads


def test_gives_up_after_max_reconnect_s(mjpeg_server) -> None:
    server = mjpeg_server(fps=30, drop_after=5, down_s=60)
    src = LiveSource(server.url, open_timeout_s=2, reconnect_backoff_s=0.1, max_backoff_s=0.2, max_reconnect_s=1.0)
    frames = 0
    with pytest.raises(CameraError, match="lost .* for more than"):
        for _ in src:  # bounded by max_reconnect_s: the reader gives up and the iteration raises
            frames += 1
    assert 1 <= frames <= 6
    assert not src._thread.is_alive()


def test_unreachable_stream_fails_fast() -> None:
    # a loopback port that was free a moment ago has no listener: the connection is refused at once
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CameraError, match="cannot open stream"):
        LiveSource(f"http://127.0.0.1:{port}/none.mjpg", open_timeout_s=2)


# -- files played in real time -----------------------------------------------------------------


def test_realtime_file_fast_consumer_gets_every_frame_at_file_pace(tmp_path: Path) -> None:
    video = write_video(tmp_path / "rt.avi", n_frames=12, fps=20.0)
    t0 = time.monotonic()
    with RealtimeFileSource(video) as src:
        frames = list(src)
        stats = src.stats
    elapsed = time.monotonic() - t0
    assert [f.frame_index for f in frames] == list(range(12))
    assert [f.timestamp_s for f in frames] == pytest.approx([i / 20 for i in range(12)])
    assert stats.dropped == 0 and stats.read == 12
    assert elapsed >= 11 / 20 * 0.9  # paced at the file's fps, not as fast as decoding allows


def test_realtime_speed_factor(tmp_path: Path) -> None:
    video = write_video(tmp_path / "fast.avi", n_frames=40, fps=20.0)
    t0 = time.monotonic()
    with RealtimeFileSource(video, speed=4.0) as src:
        n = sum(1 for _ in src)
    elapsed = time.monotonic() - t0
    assert elapsed >= 39 / 80 * 0.9
    assert n >= 1 and src.stats.read == 40


def test_realtime_with_max_frames_and_stride(tmp_path: Path) -> None:
    video = write_video(tmp_path / "mf.avi", n_frames=30, fps=50.0)
    with open_source(video, realtime=True, max_frames=4) as src:
        got = [f.frame_index for f in src]
        thread = src._thread
    assert len(got) == 4 and got == sorted(got)
    assert not thread.is_alive()  # leaving the with-block stops the player early


def test_realtime_iteration_ends_after_close(tmp_path: Path) -> None:
    video = write_video(tmp_path / "cl.avi", n_frames=40, fps=25.0)
    src = RealtimeFileSource(video)
    it = iter(src)
    next(it)
    time.sleep(0.1)  # a newer frame is waiting when we close
    src.close()
    assert next(it, None) is None
    assert not src._thread.is_alive()


def test_realtime_frames_carry_real_content(tmp_path: Path) -> None:
    video = write_video(tmp_path / "c.avi", n_frames=10, fps=25.0)
    with open_source(video, realtime=True) as src:
        frames = list(src)
    xs = [np.argwhere(f.image[:, :, 0] > 200)[:, 1].mean() for f in frames]
    # the square moves 3 px/frame: position follows the frame index of what we got
    assert all(abs((x - xs[0]) - 3 * (f.frame_index - frames[0].frame_index)) < 2 for x, f in zip(xs, frames))
