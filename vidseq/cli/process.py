"""``vidseq process VIDEO... --out DIR``: the full pipeline, one output folder per video."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidseq.cli.common import (
    add_config_args,
    add_runtime_args,
    check_single_source,
    expand_sources,
    for_each_source,
    resolve_config,
    unique_stems,
)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("process", help="detect, track, forecast, score and annotate videos",
                       description="One streaming pass per video: YOLO detections + features, ultralytics "
                                   "tracking, trajectory forecasts, anomaly scores, captions; writes "
                                   "DIR/<video>/{frames.csv,tracks.csv,forecasts.jsonl,events.json,captions.jsonl,"
                                   "summary.json,annotated.mp4,anomaly.png}.")
    p.add_argument("sources", nargs="+", metavar="VIDEO", help="video files, image folders, folders of videos, globs")
    p.add_argument("--out", "-o", type=Path, required=True)
    p.add_argument("--weights", default=None, help="YOLO weights (.pt)")
    p.add_argument("--anomaly-model", default=None, help="checkpoint from `vidseq train anomaly`")
    p.add_argument("--trajectory-model", default=None, help="checkpoint from `vidseq train trajectory`")
    p.add_argument("--caption-model", default=None, help="checkpoint from `vidseq train caption`")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--stride", type=int, default=None)
    p.add_argument("--device", default=None)
    add_runtime_args(p)
    p.add_argument("--no-video", dest="video", action="store_const", const=False, default=None)
    p.add_argument("--force", action="store_true", help="re-run videos already processed with the same settings")
    p.add_argument("--no-progress", action="store_true")
    add_config_args(p, "process")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vidseq.config import save_config
    from vidseq.pipeline import ProcessConfig, process_video

    flags = {"backbone_weights": args.weights, "anomaly.model": args.anomaly_model,
             "trajectory.model": args.trajectory_model, "caption.model": args.caption_model,
             "max_frames": args.max_frames, "stride": args.stride, "device": args.device, "video": args.video,
             "runtime": args.runtime, "precision": args.precision}
    cfg = resolve_config(ProcessConfig, "process", args, flags)
    sources = expand_sources(args.sources)
    stems = unique_stems(sources)
    check_single_source(sources)
    args.out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, args.out / "process_config.yaml")

    def run_one(spec: str) -> None:
        res = process_video(spec, args.out / stems[spec], cfg, force=args.force,
                            progress=not args.no_progress and sys.stderr.isatty())
        s = res.summary
        if res.status == "skipped":
            print(f"{res.out_dir}\talready complete (same content and settings; --force to redo)")
        else:
            c = s.get("counts", {})
            print(f"{res.out_dir}\t{res.frames} frames\t{s.get('fps_achieved')} frames/s\t"
                  f"{c.get('tracks', 0)} tracks\t{c.get('events', 0)} anomaly events")
        for note in s.get("notes", []):
            print(f"  note: {note}", file=sys.stderr)

    return for_each_source("process", sources, run_one)
