#!/usr/bin/env python
"""Check that videos play in headless Chromium: decoded size, duration, playback and real pixels.

Serves the video's folder on 127.0.0.1 (with HTTP Range support, as a real web server would), opens
a page with a ``<video>`` tag in headless Chromium, lets it play, draws the current frame to a canvas
and has the page POST what it saw back to the server. Nothing leaves the machine.

Usage:
    python scripts/check_mp4_in_browser.py OUT/annotated.mp4 [more videos] [--json report.json]

Exit code 0 when every video played (readyState >= 2, finite duration > 0, videoWidth > 0, time
advanced, frame pixels not blank), 1 otherwise, 2 when no Chromium is installed.
Install Chromium on Debian/Ubuntu with ``apt-get install -y chromium``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
]

PAGE = """<!doctype html>
<html><body>
<video id="v" src="{src}" muted autoplay playsinline preload="auto"></video>
<canvas id="c"></canvas>
<script>
const v = document.getElementById('v');
const probe = {{
  h264_high: v.canPlayType('video/mp4; codecs="avc1.640028"'),
  h264_baseline: v.canPlayType('video/mp4; codecs="avc1.42E01E"'),
  vp9_webm: v.canPlayType('video/webm; codecs="vp9"'),
  vp9_mp4: v.canPlayType('video/mp4; codecs="vp09.00.10.08"'),
  av1_mp4: v.canPlayType('video/mp4; codecs="av01.0.05M.08"'),
  mpeg4_part2: v.canPlayType('video/mp4; codecs="mp4v.20.9"'),
}};
let sent = false;
function report(reason) {{
  if (sent) return; sent = true;
  let mean = null;
  try {{
    if (v.videoWidth > 0 && v.readyState >= 2) {{
      const c = document.getElementById('c');
      c.width = v.videoWidth; c.height = v.videoHeight;
      const ctx = c.getContext('2d');
      ctx.drawImage(v, 0, 0);
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
      mean = s / (d.length / 4 * 3);
    }}
  }} catch (e) {{ mean = 'error: ' + e; }}
  const r = {{
    reason: reason, readyState: v.readyState, networkState: v.networkState,
    duration: isFinite(v.duration) ? v.duration : String(v.duration),
    videoWidth: v.videoWidth, videoHeight: v.videoHeight, currentTime: v.currentTime,
    ended: v.ended, paused: v.paused,
    error: v.error ? {{code: v.error.code, message: v.error.message}} : null,
    frame_mean: mean, canPlayType: probe,
    decoded_frames: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : null,
    userAgent: navigator.userAgent,
  }};
  fetch('/__result__', {{method: 'POST', body: JSON.stringify(r)}});
}}
v.addEventListener('error', () => report('error'));
v.addEventListener('ended', () => report('ended'));
v.addEventListener('timeupdate', () => {{
  if (v.currentTime > Math.min(1.0, (v.duration || 2) / 2)) report('played');
}});
setTimeout(() => report('timeout'), {timeout_ms});
</script>
</body></html>
"""


class _Handler(SimpleHTTPRequestHandler):
    """Static files with single-range ``Range:`` support, the test page, and a result endpoint."""

    results: dict
    page: str

    def log_message(self, *args: object) -> None:  # keep stdout for the report
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.results["result"] = json.loads(body or b"{}")
        self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/__page__"):
            data = self.page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not path.is_file():
            super().do_GET()
            return
        size = path.stat().st_size
        start_s, _, end_s = rng.removeprefix("bytes=").partition("-")
        start = int(start_s) if start_s else max(0, size - int(end_s))
        end = min(size - 1, int(end_s)) if start_s and end_s else size - 1
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        with open(path, "rb") as fh:
            fh.seek(start)
            left = end - start + 1
            try:
                while left > 0:
                    chunk = fh.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        if exe := shutil.which(name):
            return exe
    return None


def check_video(video: Path, chromium: str, timeout_s: float = 15.0) -> dict:
    """Play ``video`` in headless Chromium; return what the page reported plus ``ok``."""
    results: dict = {}
    handler = type("Handler", (_Handler,), {"results": results,
                                            "page": PAGE.format(src=video.name, timeout_ms=int(timeout_s * 600))})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(video.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/__page__"
    with tempfile.TemporaryDirectory(prefix="vidseq-chromium-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", url]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        try:
            while "result" not in results and time.monotonic() - t0 < timeout_s and proc.poll() is None:
                time.sleep(0.1)
        finally:
            proc.terminate()
            try:
                _, stderr = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, stderr = proc.communicate()
            server.shutdown()
            server.server_close()
    res = dict(results.get("result") or {"reason": "no result from the page",
                                         "chromium_stderr_tail": (stderr or "")[-1500:]})
    res["video"] = str(video)
    res["seconds"] = round(time.monotonic() - t0, 2)
    mean = res.get("frame_mean")
    res["ok"] = bool(
        res.get("readyState", 0) >= 2
        and isinstance(res.get("duration"), (int, float)) and res["duration"] > 0
        and res.get("videoWidth", 0) > 0
        and res.get("currentTime", 0) > 0
        and res.get("error") is None
        and isinstance(mean, (int, float)) and mean > 1.0
    )
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="+", type=Path)
    ap.add_argument("--timeout", type=float, default=15.0, help="seconds per video (default 15)")
    ap.add_argument("--json", type=Path, help="also write the full report here")
    args = ap.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("no chromium found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
    reports = []
    for video in args.videos:
        if not video.is_file():
            print(f"{video}: not a file", file=sys.stderr)
            reports.append({"video": str(video), "ok": False, "reason": "not a file"})
            continue
        r = check_video(video.resolve(), chromium, args.timeout)
        reports.append(r)
        status = "PLAYS" if r["ok"] else "FAILS"
        print(f"{status} {video}: readyState={r.get('readyState')} duration={r.get('duration')} "
              f"size={r.get('videoWidth')}x{r.get('videoHeight')} currentTime={r.get('currentTime')} "
              f"frame_mean={r.get('frame_mean')} error={r.get('error')} ({r.get('reason')})")
    if reports and "canPlayType" in reports[0]:
        print(f"{version}: canPlayType {json.dumps(reports[0]['canPlayType'])}")
    if args.json:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from vidseq.io import atomic_write_json

        atomic_write_json(args.json, {"chromium": version, "videos": reports})
    return 0 if reports and all(r["ok"] for r in reports) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
