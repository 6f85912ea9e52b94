"""Output sinks that survive being killed: an H.264 MP4 writer, CSV and JSON-lines row writers.

Every sink is a context manager that releases its file in ``finally``. They are built for long runs
that may be cut off (Ctrl-C, SIGKILL, OOM): what was written before the cut stays readable.

* :class:`VideoSink` encodes BGR uint8 frames to H.264 ``yuv420p`` in a *fragmented* MP4 (a ``moof``
  fragment is written at every keyframe, ``keyframe_interval_s`` apart). Browsers play it, and a file
  whose writer was killed still decodes up to its last complete fragment.
* :class:`CsvSink` and :class:`JsonlSink` write whole lines with one ``write`` system call each time
  they flush (every row by default), so a killed run leaves only complete rows on disk. With
  ``append=True`` they continue an existing file (a partial last line is cut off first).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import queue
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vidseq.errors import SinkError

log = logging.getLogger(__name__)

# Encoders tried in order after the requested one. PyAV wheels ship libx264 (GPL build); "h264" is
# whichever H.264 encoder FFmpeg picks; libopenh264 is the BSD one some distro builds carry. mpeg4
# (MPEG-4 Part 2) always exists but browsers do not play it, hence the warning.
FALLBACK_CODECS = ("libx264", "h264", "libopenh264", "mpeg4")
FRAGMENTED_MP4_FLAGS = "frag_keyframe+empty_moov+default_base_moof"


def available_encoder(preferred: str = "libx264") -> str:
    """Name of the first video encoder this PyAV build has: ``preferred``, then :data:`FALLBACK_CODECS`.

    Raises:
        SinkError: when none of them exists (a PyAV build without video encoders).
    """
    import av

    for name in (preferred, *FALLBACK_CODECS):
        try:
            av.codec.Codec(name, "w")
        except (av.codec.codec.UnknownCodecError, ValueError):
            continue
        return name
    raise SinkError(f"no video encoder among {[preferred, *FALLBACK_CODECS]} in this PyAV build")


def exact_rate(fps: float) -> Fraction:
    """Frame rate as an exact fraction: 25 -> 25/1, 29.97 -> 30000/1001, 12.5 -> 25/2."""
    if not math.isfinite(fps) or fps <= 0:
        raise SinkError(f"fps must be a positive finite number, got {fps}")
    for den in (1, 1001, 2, 4, 100):
        num = fps * den
        if abs(num - round(num)) < 1e-6 * max(1.0, num):
            return Fraction(round(num), den)
    return Fraction(fps).limit_denominator(100000)


class VideoSink:
    """Write BGR uint8 ``(H, W, 3)`` frames to an MP4 that browsers play (H.264, yuv420p, BT.601 tags).

    Frames must all have the ``size`` given at construction. H.264 with 4:2:0 chroma needs even
    dimensions, so an odd width/height is padded by one replicated edge pixel (``even="pad"``) or
    cropped (``even="crop"``); :attr:`output_size` says what is stored.

    Example:
        >>> with VideoSink("out.mp4", fps=25, size=(640, 480)) as sink:  # doctest: +SKIP
        ...     for frame in iter_frames("in.avi"):
        ...         sink.write(frame.image)

    Args:
        path: output ``.mp4`` path (parent folders are created).
        fps: frames per second; non-integer rates such as 29.97 are stored exactly (30000/1001).
        size: ``(width, height)`` of the frames that will be written.
        codec: preferred encoder; when the PyAV build lacks it, :data:`FALLBACK_CODECS` are tried.
        crf: x264 constant rate factor (0 lossless .. 51 worst; 23 is x264's default).
        preset: x264 speed preset (``ultrafast`` .. ``veryslow``).
        keyframe_interval_s: seconds between keyframes; also the fragment length, i.e. at most this
            much video (plus the encoder's few frames of look-ahead) is lost when the process is killed.
        fragmented: write a fragmented MP4 (kill-safe). ``False`` writes a classic MP4 with the index
            at the front (``+faststart``), which is unreadable if the writer dies before ``close``.
        even: ``"pad"`` or ``"crop"`` odd dimensions to even.
        atomic: write to a temporary file beside ``path`` and rename it on a clean ``close``; on an
            exception inside the ``with`` block the temporary file is removed (no partial output).
        threads: encoder threads (0 lets the encoder choose).
        background: encode in a worker thread (at most ``background`` frames queued; 0 = in the caller's
            thread). :meth:`write` then returns at once, the caller must not modify a frame after handing it
            over, and an encoder error is raised by the next :meth:`write` or by :meth:`close`.
            :attr:`encode_seconds` is the worker's busy time.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        size: tuple[int, int],
        *,
        codec: str = "libx264",
        crf: int = 23,
        preset: str = "veryfast",
        keyframe_interval_s: float = 2.0,
        fragmented: bool = True,
        even: Literal["pad", "crop"] = "pad",
        atomic: bool = False,
        threads: int = 0,
        background: int = 0,
    ) -> None:
        import av

        width, height = (int(v) for v in size)
        if width < 2 or height < 2:
            raise SinkError(f"{path}: video size must be at least 2x2, got {width}x{height}")
        if even not in ("pad", "crop"):
            raise SinkError(f"{path}: even must be 'pad' or 'crop', got {even!r}")
        self.path = Path(path)
        self.fps = float(fps)
        self.rate = exact_rate(fps)
        self.size = (width, height)
        self.even = even
        if even == "pad":
            self.output_size = (width + width % 2, height + height % 2)
        else:
            self.output_size = (width - width % 2, height - height % 2)
        self.frames_written = 0
        self._closed = False
        self.codec_name = available_encoder(codec)
        if self.codec_name != codec:
            log.warning("%s: encoder %s is not in this PyAV build; using %s", self.path, codec, self.codec_name)
        if self.codec_name == "mpeg4":
            log.warning("%s: no H.264 encoder available; writing MPEG-4 Part 2, which browsers do not play",
                        self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp: Path | None = None
        if atomic:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.part.", suffix=".mp4", dir=self.path.parent)
            os.close(fd)
            self._tmp = Path(tmp)
        movflags = FRAGMENTED_MP4_FLAGS if fragmented else "+faststart"
        try:
            # flush_packets makes FFmpeg hand each finished fragment to the OS at once instead of
            # holding it in its 32 KiB I/O buffer, which a SIGKILL would throw away.
            self._container = av.open(str(self._tmp or self.path), mode="w", format="mp4",
                                      options={"movflags": movflags, "flush_packets": "1"})
        except (OSError, av.error.FFmpegError) as exc:
            self._discard_tmp()
            raise SinkError(f"cannot create video {self.path}: {exc}") from exc
        try:
            self._stream = self._container.add_stream(self.codec_name, rate=self.rate,
                                                      options=self._codec_options(crf, preset))
            cc = self._stream.codec_context
            self._stream.width, self._stream.height = self.output_size
            self._stream.pix_fmt = "yuv420p"
            cc.gop_size = max(1, round(keyframe_interval_s * self.fps))
            cc.thread_count = threads
            # swscale converts BGR->YUV with BT.601 coefficients in limited range; say so in the
            # stream so browsers and players decode the colours back the same way.
            cc.colorspace = 6  # AVCOL_SPC_SMPTE170M
            cc.color_primaries = 6  # AVCOL_PRI_SMPTE170M
            cc.color_trc = 6  # AVCOL_TRC_SMPTE170M
            cc.color_range = 1  # AVCOL_RANGE_MPEG
            if self.codec_name in ("mpeg4", "libopenh264"):
                # These encoders take a bitrate rather than a CRF: ~0.15 bit per pixel per frame.
                cc.bit_rate = int(self.output_size[0] * self.output_size[1] * self.fps * 0.15)
        except BaseException:
            self._container.close()
            self._discard_tmp()
            raise
        self.encode_seconds = 0.0
        self._error: BaseException | None = None  # a worker error not yet raised to the caller
        self._failed = False  # the worker failed: nothing more is encoded and the file is not kept
        self._queue: queue.Queue[np.ndarray | None] | None = None
        self._worker: threading.Thread | None = None
        if background > 0:
            self._queue = queue.Queue(maxsize=int(background))
            self._worker = threading.Thread(target=self._drain, name="vidseq-encode", daemon=True)
            self._worker.start()

    def _drain(self) -> None:
        assert self._queue is not None
        while True:
            image = self._queue.get()
            if image is None:
                return
            if self._failed:
                continue  # keep draining so the producer never blocks on a full queue
            try:
                self._encode(image)
            except BaseException as exc:  # noqa: BLE001 - handed to the producer
                self._error, self._failed = exc, True

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            exc, self._error = self._error, None
            if isinstance(exc, SinkError):
                raise exc
            raise SinkError(f"{self.path}: encoding failed: {exc}") from exc

    def _discard_tmp(self) -> None:
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()

    def _codec_options(self, crf: int, preset: str) -> dict[str, str]:
        if self.codec_name in ("libx264", "h264"):
            import av

            # "h264" resolves to libx264 in PyAV wheels; only x264 understands crf/preset.
            if av.codec.Codec(self.codec_name, "w").name == "libx264":
                # bf=0: no B-frames, so the first frame is shown at t=0 (the fragmented MP4 has no edit
                # list to hide the reorder delay), frame i at exactly i/fps, and fewer frames wait
                # in the encoder when the process is killed; costs ~7% size at the same CRF.
                return {"crf": str(crf), "preset": preset, "bf": "0"}
        return {}

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._finish(error=exc_type is not None)

    # -- writing ---------------------------------------------------------------------------------
    def _fit(self, image: np.ndarray) -> np.ndarray:
        """Pad or crop an odd-sized frame to :attr:`output_size`."""
        w, h = self.output_size
        if image.shape[1] == w and image.shape[0] == h:
            return image
        if self.even == "crop":
            return image[:h, :w]
        import cv2

        return cv2.copyMakeBorder(image, 0, h - image.shape[0], 0, w - image.shape[1], cv2.BORDER_REPLICATE)

    def write(self, image: np.ndarray) -> None:
        """Encode one BGR uint8 ``(H, W, 3)`` frame of the sink's ``size``.

        Raises:
            SinkError: wrong shape/dtype, or the sink is closed.
        """
        if self._closed:
            raise SinkError(f"{self.path}: write after close")
        w, h = self.size
        if image.shape != (h, w, 3) or image.dtype != np.uint8:
            raise SinkError(f"{self.path}: frame must be ({h}, {w}, 3) uint8 like the sink size {w}x{h}, "
                            f"got {image.shape} {image.dtype}")
        if self._queue is not None:
            self._raise_worker_error()
            self._queue.put(image)
            return
        self._encode(image)

    def _encode(self, image: np.ndarray) -> None:
        import av
        import cv2

        t0 = time.perf_counter()
        # OpenCV's BGR -> I420 (BT.601, limited range: what the stream's colour tags say) costs a quarter of
        # swscale's bgr24 -> yuv420p here, and averages each 2x2 block's chroma instead of sampling it.
        yuv = cv2.cvtColor(np.ascontiguousarray(self._fit(image)), cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = self.frames_written
        frame.time_base = 1 / self.rate
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1
        self.encode_seconds += time.perf_counter() - t0

    def close(self) -> None:
        """Flush the encoder and finish the file. Safe to call twice."""
        self._finish(error=False)

    def _finish(self, *, error: bool) -> None:
        """Flush and close. After an exception in the ``with`` block (``error``) the frames written so
        far are still flushed so the partial video is usable, except with ``atomic=True`` where the
        temp file is removed."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            assert self._queue is not None
            self._queue.put(None)  # frames already queued are encoded first
            self._worker.join()
            self._worker = None
            if self._failed:  # the video is incomplete: never renamed into place
                try:
                    self._container.close()
                finally:
                    self._discard_tmp()
                if not error:
                    self._raise_worker_error()
                return
        try:
            try:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
            finally:
                self._container.close()
        except BaseException:
            self._discard_tmp()
            raise
        if self._tmp is not None:
            if error:
                self._discard_tmp()
            else:
                os.replace(self._tmp, self.path)
        if self.frames_written == 0:
            log.warning("%s: no frames were written; the video is empty", self.path)


# -- row sinks ---------------------------------------------------------------------------------


class _LineSink:
    """Shared machinery: buffered complete lines, flushed by row count or age, one write per flush."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        append: bool = False,
        flush_every: int = 1,
        flush_interval_s: float | None = None,
        fsync: bool = False,
    ) -> None:
        if flush_every < 1:
            raise SinkError(f"{path}: flush_every must be >= 1, got {flush_every}")
        self.path = Path(path)
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self.fsync = fsync
        self.rows_written = 0  # rows written by this sink (not counting rows already in an appended file)
        self._pending: list[str] = []
        self._last_flush = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.existing_text = ""
        if append and self.path.exists():
            self.existing_text = _cut_partial_line(self.path)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC),
                                       0o644)

    def __enter__(self) -> _LineSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add(self, line: str) -> None:
        if self._fd is None:
            raise SinkError(f"{self.path}: write after close")
        self._pending.append(line)
        self.rows_written += 1
        if len(self._pending) >= self.flush_every or (
            self.flush_interval_s is not None and time.monotonic() - self._last_flush >= self.flush_interval_s
        ):
            self.flush()

    def flush(self) -> None:
        """Write the buffered lines with a single ``write`` (so a kill never leaves half a line)."""
        self._last_flush = time.monotonic()
        if not self._pending or self._fd is None:
            return
        data = "".join(self._pending).encode("utf-8")
        self._pending.clear()
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        """Flush what is buffered and close the file. Safe to call twice."""
        if self._fd is None:
            return
        try:
            self.flush()
        finally:
            os.close(self._fd)
            self._fd = None


def _cut_partial_line(path: Path) -> str:
    """Truncate ``path`` after its last newline (drops a row cut by a kill); return the kept text."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        log.warning("%s: dropping a partial last line (%d bytes) before appending", path, len(data) - end)
        with open(path, "r+b") as fh:
            fh.truncate(end)
    return data[:end].decode("utf-8", errors="replace")


def _plain(value: Any) -> Any:
    """numpy scalars/arrays, Paths and non-finite floats to JSON/CSV-friendly Python values."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


class CsvSink(_LineSink):
    """Append rows to a CSV with a fixed header, flushed so a killed run leaves a valid file.

    Rows are mappings (keys must be columns; missing ones are written empty) or sequences in column
    order. Floats are written with ``repr`` precision; NaN/inf become empty cells; bools ``1``/``0``.

    Args:
        path: output CSV path.
        columns: header names, written once at the top.
        append: continue an existing file whose header matches ``columns`` (resume); a partial last
            row left by a kill is cut off. Without it the file is truncated.
        flush_every: write to the OS every this many rows (1 = every row).
        flush_interval_s: also flush when this many seconds passed since the last flush.
        fsync: fsync after each flush (survives power loss, slower; a process kill needs no fsync).

    Attributes:
        rows_before: data rows the file already held when opened with ``append=True``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: Sequence[str],
        *,
        append: bool = False,
        flush_every: int = 1,
        flush_interval_s: float | None = None,
        fsync: bool = False,
    ) -> None:
        self.columns = [str(c) for c in columns]
        if not self.columns or len(set(self.columns)) != len(self.columns):
            raise SinkError(f"{path}: CSV columns must be non-empty and unique, got {self.columns}")
        self._index = {c: i for i, c in enumerate(self.columns)}
        super().__init__(path, append=append, flush_every=flush_every, flush_interval_s=flush_interval_s,
                         fsync=fsync)
        self.rows_before = 0
        if self.existing_text:  # appending to a file with content: check its header
            lines = self.existing_text.splitlines()
            header = next(csv.reader([lines[0]])) if lines else []
            if header != self.columns:
                self.close()
                raise SinkError(f"{self.path}: cannot append, its header {header} differs from {self.columns}")
            self.rows_before = len(lines) - 1
        else:
            self._pending.append(self._format(self.columns))
            self.flush()
        self.existing_text = ""  # not kept in memory

    @staticmethod
    def _cell(value: Any) -> Any:
        value = _plain(value)
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float):
            return repr(value)
        return "" if value is None else value

    def _format(self, cells: Iterable[Any]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(cells)
        return buf.getvalue()

    def write(self, row: Mapping[str, Any] | Sequence[Any]) -> None:
        """Add one row (mapping by column name, or a sequence in column order).

        Raises:
            SinkError: unknown column names or a sequence of the wrong length.
        """
        if isinstance(row, Mapping):
            unknown = [k for k in row if k not in self._index]
            if unknown:
                raise SinkError(f"{self.path}: unknown CSV columns {unknown}; columns are {self.columns}")
            cells = [self._cell(row.get(c)) for c in self.columns]
        else:
            if len(row) != len(self.columns):
                raise SinkError(f"{self.path}: row has {len(row)} values for {len(self.columns)} columns")
            cells = [self._cell(v) for v in row]
        self._add(self._format(cells))

    def write_rows(self, rows: Iterable[Mapping[str, Any] | Sequence[Any]]) -> None:
        for row in rows:
            self.write(row)

    def __enter__(self) -> CsvSink:
        return self


class JsonlSink(_LineSink):
    """Append one JSON object per line (JSON Lines), flushed so a killed run leaves valid lines.

    numpy arrays and scalars become lists and numbers; NaN/inf become ``null`` (strict JSON).

    Args: as :class:`CsvSink` minus ``columns``.

    Attributes:
        rows_before: lines the file already held when opened with ``append=True``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        append: bool = False,
        flush_every: int = 1,
        flush_interval_s: float | None = None,
        fsync: bool = False,
    ) -> None:
        super().__init__(path, append=append, flush_every=flush_every, flush_interval_s=flush_interval_s,
                         fsync=fsync)
        self.rows_before = sum(1 for line in self.existing_text.splitlines() if line.strip())
        self.existing_text = ""

    def write(self, obj: Mapping[str, Any] | Any) -> None:
        """Add one record (any JSON-able value; usually a dict)."""
        self._add(json.dumps(_plain(obj), allow_nan=False, ensure_ascii=False, default=str) + "\n")

    def __enter__(self) -> JsonlSink:
        return self


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """Read a JSON Lines file (skips blank lines)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
