"""Video sources: files, image folders, webcams and RTSP/HTTP streams behind one API.

``open_source(spec, ...)`` returns a context manager that exposes :class:`VideoInfo` and yields
:class:`Frame` records (BGR uint8 ``(H, W, 3)`` images). Files and folders are read in order;
live sources (webcam index, ``rtsp://``, ``http(s)://``) are read by a background thread that keeps
only the latest frame, so a slow consumer never builds up lag: frames it skips are counted in
``stats.dropped``. A live source whose reads fail reconnects with exponential backoff.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from vidseq.errors import (
    CameraError,
    CorruptVideoError,
    EmptyVideoError,
    InconsistentFramesError,
    SourceError,
    SourceNotFoundError,
)
from vidseq.video.frames import IMAGE_EXTENSIONS, list_images

log = logging.getLogger(__name__)

# FFmpeg inside OpenCV prints decoder noise ("moov atom not found") to stderr; our errors say it in
# one line instead. Users can still raise the level by setting the variable themselves.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
SourceKind = Literal["file", "folder", "camera", "stream"]


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a source before reading it."""

    source: str
    kind: SourceKind
    fps: float
    width: int
    height: int
    frame_count: int | None  # None for live sources or when the container does not say

    @property
    def duration_s(self) -> float | None:
        if self.frame_count is None or self.fps <= 0:
            return None
        return self.frame_count / self.fps


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``image`` is BGR uint8 (H, W, 3)."""

    image: np.ndarray
    frame_index: int  # index in the source (before stride), 0-based
    timestamp_s: float  # seconds from the source start (live: seconds since opening)
    # latest-frame readers: the source frame just before this one when the consumer did not take it (dropped),
    # so motion can still be measured between consecutive source frames; None otherwise
    previous: Frame | None = None

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"Frame.image must be (H, W, 3) uint8, got {self.image.shape} {self.image.dtype}")


@dataclass
class SourceStats:
    """Counters a live source keeps while running."""

    read: int = 0  # frames read from the device
    yielded: int = 0  # frames handed to the consumer
    dropped: int = 0  # frames read but replaced by a newer one before the consumer took them
    reconnects: int = 0
    gaps_s: list[float] = field(default_factory=list)  # durations without frames (disconnects)


def source_kind(spec: str | int | Path) -> SourceKind:
    """Classify a spec: ``0`` / ``"0"`` camera, URL stream, folder or file."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return "camera"
    s = str(spec)
    if s.lower().startswith(STREAM_PREFIXES):
        return "stream"
    return "folder" if Path(s).is_dir() else "file"


class VideoSource:
    """Base class: context manager + iterator of :class:`Frame`. Subclasses implement ``_frames``."""

    info: VideoInfo

    def __init__(
        self,
        *,
        stride: int = 1,
        start_s: float | None = None,
        end_s: float | None = None,
        max_frames: int | None = None,
        resize: tuple[int, int] | None = None,
    ) -> None:
        if stride < 1:
            raise SourceError(f"stride must be >= 1, got {stride}")
        if max_frames is not None and max_frames < 1:
            raise SourceError(f"max_frames must be >= 1, got {max_frames}")
        if start_s is not None and end_s is not None and end_s <= start_s:
            raise SourceError(f"end_s ({end_s}) must be after start_s ({start_s})")
        if resize is not None and (len(resize) != 2 or min(resize) < 1):
            raise SourceError(f"resize must be (width, height) > 0, got {resize}")
        self.stride = stride
        self.start_s = start_s
        self.end_s = end_s
        self.max_frames = max_frames
        self.resize = tuple(resize) if resize else None
        self.stats = SourceStats()
        self._closed = False
        self._last_yield: float | None = None

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True

    # -- iteration -------------------------------------------------------------------------------
    def _frames(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _resized(self, frame: Frame) -> Frame:
        """``frame`` at ``self.resize`` (without its ``previous``)."""
        import cv2

        assert self.resize is not None
        return Frame(cv2.resize(frame.image, self.resize, interpolation=cv2.INTER_AREA), frame.frame_index,
                     frame.timestamp_s)

    def __iter__(self) -> Iterator[Frame]:
        n_out = 0
        for frame in self._frames():
            if self.end_s is not None and frame.timestamp_s >= self.end_s:
                break
            if self.start_s is not None and frame.timestamp_s < self.start_s:
                continue
            if frame.frame_index % self.stride:
                continue
            prev = frame.previous if self.stride == 1 else None  # (with a stride the frame before is not a step)
            if self.resize is not None and (frame.image.shape[1], frame.image.shape[0]) != self.resize:
                frame, prev = self._resized(frame), None if prev is None else self._resized(prev)
            if prev is not frame.previous:
                frame = replace(frame, previous=prev)
            self.stats.yielded += 1
            self._last_yield = time.monotonic()
            yield frame
            n_out += 1
            if self.max_frames is not None and n_out >= self.max_frames:
                break

    def capture_time(self, frame: Frame) -> float | None:
        """``time.monotonic()`` when ``frame`` was captured (live) or handed out (files); for latency."""
        return self._last_yield

    def expected_frames(self) -> int | None:
        """How many frames iteration will yield, if the source knows its length."""
        n = self.info.frame_count
        if n is None:
            return None
        fps = self.info.fps or 0.0
        first, last = 0, n
        if fps > 0 and self.start_s is not None:
            first = min(n, math.ceil(self.start_s * fps - 1e-9))
        if fps > 0 and self.end_s is not None:
            last = min(n, math.ceil(self.end_s * fps - 1e-9))
        count = len(range(first + (-first) % self.stride, last, self.stride))
        return min(count, self.max_frames) if self.max_frames else count


def _ensure_3ch(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


class FileSource(VideoSource):
    """A video file decoded by OpenCV (FFmpeg backend)."""

    def __init__(self, path: str | Path, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        import cv2

        self.path = Path(path)
        if not self.path.exists():
            raise SourceNotFoundError(f"video not found: {self.path}")
        if not self.path.is_file():
            raise SourceError(f"not a file: {self.path}")
        if self.path.stat().st_size == 0:
            raise EmptyVideoError(f"video file is empty (0 bytes): {self.path}")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            self._cap.release()
            raise CorruptVideoError(f"cannot decode video (corrupt or unsupported format): {self.path}")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not math.isfinite(fps) or fps <= 0 or fps > 1000:
            log.warning("%s: container reports no usable fps (%s); assuming 25", self.path, fps)
            fps = 25.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if width <= 0 or height <= 0:
            self._cap.release()
            raise CorruptVideoError(f"video has no decodable stream: {self.path}")
        self.info = VideoInfo(str(self.path), "file", fps, width, height, count if count > 0 else None)
        self.truncated = False  # set after reading: far fewer frames decoded than the container announced
        self.frames_read = 0  # source frames decoded or skipped by the last full read

    def _frames(self) -> Iterator[Frame]:
        import cv2

        cap = self._cap
        fps = self.info.fps
        index = 0
        if self.start_s is not None and self.start_s > 0:
            # Seek near the start, then step to the exact frame index (seeks land on keyframes).
            target = int(math.ceil(self.start_s * fps - 1e-9))
            cap.set(cv2.CAP_PROP_POS_FRAMES, target)
            pos = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
            if pos != target:  # backend cannot seek exactly: read from the beginning
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            else:
                index = target
        got_any = False
        try:
            while not self._closed:
                # Frames skipped by stride or before start_s are grabbed without decoding to BGR.
                if index % self.stride or (self.start_s is not None and index / fps < self.start_s):
                    if not cap.grab():
                        break
                    index += 1
                    continue
                ok, image = cap.read()
                if not ok or image is None:
                    break
                got_any = True
                yield Frame(_ensure_3ch(image), index, index / fps)
                index += 1
        finally:
            self.close()
        if not got_any and index == 0:
            raise EmptyVideoError(f"video has no decodable frames (empty, truncated or corrupt): {self.path}")
        self.frames_read = index
        if self.info.frame_count and index < self.info.frame_count * 0.9 and self.max_frames is None \
                and self.end_s is None:
            self.truncated = True
            log.warning("%s: decoded %d of %d frames the container announced (truncated file?)",
                        self.path, index, self.info.frame_count)

    def close(self) -> None:
        super().close()
        cap = getattr(self, "_cap", None)
        if cap is not None:
            cap.release()


def _read_image(path: Path) -> np.ndarray | None:
    """``cv2.imread`` as BGR, or None when the file cannot be decoded -- including headers that claim more
    pixels than OpenCV allows (it raises ``cv2.error`` for those instead of returning None)."""
    import cv2

    try:
        return cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error:
        return None


class FolderSource(VideoSource):
    """An image sequence: every jpg/png/tif/bmp of a folder, natural sort, one fps for all."""

    def __init__(self, path: str | Path, *, fps: float = 25.0, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.path = Path(path)
        if not self.path.is_dir():
            raise SourceNotFoundError(f"image folder not found: {self.path}")
        self.files = list_images(self.path)
        if not self.files:
            raise EmptyVideoError(f"image folder has no {'/'.join(sorted(s[1:] for s in IMAGE_EXTENSIONS))} files: {self.path}")
        first = _read_image(self.files[0])
        if first is None:
            raise CorruptVideoError(f"cannot decode image: {self.files[0]}")
        h, w = first.shape[:2]
        self.info = VideoInfo(str(self.path), "folder", float(fps), w, h, len(self.files))

    def _frames(self) -> Iterator[Frame]:
        fps = self.info.fps
        size = (self.info.height, self.info.width)
        first = 0
        if self.start_s is not None:
            first = max(0, math.ceil(self.start_s * fps - 1e-9))
        for index in range(first, len(self.files)):
            if self._closed:
                return
            if index % self.stride:
                continue
            path = self.files[index]
            image = _read_image(path)
            if image is None:
                raise CorruptVideoError(f"cannot decode image: {path}")
            if image.shape[:2] != size:
                raise InconsistentFramesError(
                    f"image folder mixes frame sizes: {path.name} is {image.shape[1]}x{image.shape[0]}, "
                    f"{self.files[0].name} is {size[1]}x{size[0]}"
                )
            yield Frame(image, index, index / fps)


class _LatestFrame:
    """One-slot mailbox between a reader thread and the consumer: the newest frame wins.

    A frame replaced before the consumer took it is counted in ``stats.dropped``; the frame handed over
    next carries it as :attr:`Frame.previous` (motion is then measured between consecutive source frames
    whatever the consumer's rate). ``done`` ends the
    stream (set by the reader when it finishes, or by ``close()``); an exception passed to :meth:`end`
    is re-raised in the consumer.
    """

    def __init__(self, stats: SourceStats) -> None:
        self.stats = stats
        self.done = threading.Event()
        self._cond = threading.Condition()
        self._latest: tuple[np.ndarray, int, float] | None = None
        self._before: tuple[np.ndarray, int, float] | None = None  # the frame _latest replaced
        self._key = -1  # increments with every published frame
        self._taken = -1  # key of the frame the consumer took last
        self._error: BaseException | None = None

    def publish(self, image: np.ndarray, index: int, timestamp_s: float) -> None:
        with self._cond:
            self.stats.read += 1
            if self._latest is not None and self._taken != self._key:
                self.stats.dropped += 1
            self._before, self._latest = self._latest, (image, index, timestamp_s)
            self._key += 1
            self._cond.notify_all()

    def end(self, error: BaseException | None = None) -> None:
        with self._cond:
            if error is not None:
                self._error = error
            self.done.set()
            self._cond.notify_all()

    def frames(self, closed: Callable[[], bool]) -> Iterator[Frame]:
        while True:
            with self._cond:
                while self._taken == self._key and not self.done.is_set():
                    self._cond.wait(0.5)
                if closed() or self._taken == self._key:  # closed, or ended with nothing new
                    break
                assert self._latest is not None
                image, index, ts = self._latest
                # the frame before it went untaken (dropped): handed over with it
                before = self._before if self._before is not None and self._taken != self._key - 1 else None
                self._taken = self._key
            yield Frame(image, index, ts, None if before is None else Frame(*before))
        if self._error is not None:
            raise self._error


class LiveSource(VideoSource):
    """A webcam or network stream read by a background thread that keeps only the newest frame.

    The consumer always gets the most recent frame, so lag never grows; frames replaced before they
    were taken are counted in ``stats.dropped``. When reads fail the reader reopens the capture with
    exponential backoff (``reconnect_backoff_s`` doubling up to ``max_backoff_s``); after
    ``max_reconnect_s`` without a frame the iteration ends with a :class:`CameraError`.
    ``fps`` is what the device reports (live sources run at their own pace).
    """

    def __init__(
        self,
        spec: str | int,
        *,
        open_timeout_s: float = 10.0,
        reconnect_backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_reconnect_s: float = 60.0,
        **kw: object,
    ) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.spec: str | int = int(spec) if isinstance(spec, str) and spec.isdigit() else spec
        self.kind: SourceKind = "camera" if isinstance(self.spec, int) else "stream"
        self.open_timeout_s = open_timeout_s
        self.reconnect_backoff_s = reconnect_backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_reconnect_s = max_reconnect_s
        self._slot = _LatestFrame(self.stats)
        self._stop = self._slot.done
        self._seq = -1  # frames read from the device; the frame index (drops show as index gaps)
        self._t0 = time.monotonic()
        cap = self._open()
        if cap is None:
            if self.kind == "camera":
                raise CameraError(f"cannot open camera {self.spec} (not connected, busy, or no permission)")
            raise CameraError(f"cannot open stream {self.spec} (nothing answers at that address within "
                              f"{self.open_timeout_s:g} s, or it refused the connection or the path)")
        ok, image = cap.read()
        if not ok or image is None:
            cap.release()
            raise CameraError(f"opened {self.spec} but could not read a frame from it")
        import cv2

        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not math.isfinite(fps) or fps <= 0 or fps > 1000:
            fps = 30.0
        h, w = image.shape[:2]
        self.info = VideoInfo(str(self.spec), self.kind, fps, w, h, None)
        self._publish(_ensure_3ch(image))
        self._thread = threading.Thread(target=self._reader, args=(cap,), name=f"vidseq-live-{self.spec}",
                                        daemon=True)
        self._thread.start()

    def _open(self):  # noqa: ANN202 - cv2.VideoCapture
        import cv2

        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.open_timeout_s * 1000)]
        try:
            cap = cv2.VideoCapture(self.spec, cv2.CAP_ANY, params)
        except (cv2.error, TypeError):
            cap = cv2.VideoCapture(self.spec)
        if not cap.isOpened():
            cap.release()
            return None
        if self.kind == "camera":
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def _publish(self, image: np.ndarray) -> None:
        self._seq += 1
        self._slot.publish(image, self._seq, time.monotonic() - self._t0)

    def _reader(self, cap) -> None:  # noqa: ANN001
        error: Exception | None = None
        backoff = self.reconnect_backoff_s
        lost_at: float | None = None
        try:
            while not self._stop.is_set():
                ok, image = (cap.read() if cap is not None else (False, None))
                if ok and image is not None:
                    if lost_at is not None:
                        self.stats.gaps_s.append(time.monotonic() - lost_at)
                        lost_at = None
                        backoff = self.reconnect_backoff_s
                    self._publish(_ensure_3ch(image))
                    continue
                now = time.monotonic()
                if lost_at is None:
                    lost_at = now
                    log.warning("%s: read failed; reconnecting", self.spec)
                if now - lost_at > self.max_reconnect_s:
                    raise CameraError(f"lost {self.spec} for more than {self.max_reconnect_s:.0f} s; giving up")
                if cap is not None:
                    cap.release()
                    cap = None
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.max_backoff_s)
                cap = self._open()
                if cap is not None:
                    self.stats.reconnects += 1
                    log.info("%s: reconnected", self.spec)
        except Exception as exc:  # handed to the consumer thread
            error = exc
        finally:
            if cap is not None:
                cap.release()
            self._slot.end(error)

    def capture_time(self, frame: Frame) -> float | None:
        return self._t0 + frame.timestamp_s

    def _frames(self) -> Iterator[Frame]:
        try:
            yield from self._slot.frames(lambda: self._closed)
        finally:
            self.close()

    def close(self) -> None:
        super().close()
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            thread = getattr(self, "_thread", None)
            if thread is not None and thread is not threading.current_thread():
                # a read blocked on a stalled stream returns only at the read timeout; the daemon reader
                # then releases the capture by itself, so closing never waits longer than this
                thread.join(timeout=1.0)


class RealtimeFileSource(VideoSource):
    """A video file played at its own fps as if it were a camera: latest-frame semantics and drops.

    Used by ``vidseq monitor --realtime`` and by tests that need a live source without a camera.
    """

    def __init__(self, path: str | Path, *, speed: float = 1.0, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self._file = FileSource(path)
        self.info = VideoInfo(self._file.info.source, "stream", self._file.info.fps, self._file.info.width,
                              self._file.info.height, None)
        self.speed = speed
        self._slot = _LatestFrame(self.stats)
        self._done = self._slot.done
        self._play_t0 = time.monotonic()
        self._thread = threading.Thread(target=self._player, name="vidseq-realtime", daemon=True)
        self._thread.start()

    def capture_time(self, frame: Frame) -> float | None:
        return self._play_t0 + frame.timestamp_s / self.speed

    def _player(self) -> None:
        error: Exception | None = None
        t0 = self._play_t0
        try:
            for frame in self._file._frames():
                due = t0 + frame.timestamp_s / self.speed
                delay = due - time.monotonic()
                if delay > 0 and self._done.wait(delay):
                    break
                if self._done.is_set():
                    break
                self._slot.publish(frame.image, frame.frame_index, frame.timestamp_s)
        except Exception as exc:  # handed to the consumer thread
            error = exc
        finally:
            self._slot.end(error)

    def _frames(self) -> Iterator[Frame]:
        try:
            yield from self._slot.frames(lambda: self._closed)
        finally:
            self.close()

    def close(self) -> None:
        super().close()
        done = getattr(self, "_done", None)
        if done is not None:
            done.set()
            thread = getattr(self, "_thread", None)
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5)
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()


def open_source(
    spec: str | int | Path,
    *,
    stride: int = 1,
    start_s: float | None = None,
    end_s: float | None = None,
    max_frames: int | None = None,
    resize: tuple[int, int] | None = None,
    fps: float | None = None,
    realtime: bool = False,
) -> VideoSource:
    """Open a video file, image folder, webcam index or stream URL.

    Args:
        spec: path to a video file or image folder, webcam index (``0`` or ``"0"``), or URL.
        stride: keep every ``stride``-th frame (frame_index keeps counting source frames).
        start_s, end_s: time window in seconds (files and folders).
        max_frames: stop after this many yielded frames.
        resize: ``(width, height)`` to resize every frame to.
        fps: frame rate for image folders (default 25).
        realtime: play a file at its own fps with live-source semantics (latest frame, drops).

    Raises:
        SourceNotFoundError, CorruptVideoError, EmptyVideoError, CameraError: one-line messages.
    """
    kw = dict(stride=stride, start_s=start_s, end_s=end_s, max_frames=max_frames, resize=resize)
    kind = source_kind(spec)
    if kind == "camera" or kind == "stream":
        return LiveSource(spec if not isinstance(spec, Path) else str(spec), **kw)  # type: ignore[arg-type]
    if kind == "folder":
        return FolderSource(spec, fps=fps or 25.0, **kw)  # type: ignore[arg-type]
    if realtime:
        return RealtimeFileSource(spec, **kw)  # type: ignore[arg-type]
    return FileSource(spec, **kw)  # type: ignore[arg-type]


def iter_frames(spec: str | int | Path, **kwargs: object) -> Iterator[Frame]:
    """Generator over the frames of ``spec`` (same arguments as :func:`open_source`)."""
    with open_source(spec, **kwargs) as src:  # type: ignore[arg-type]
        yield from src
