"""``vidseq process VIDEO... --out DIR``: the full pipeline, one output folder per video."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidseq.cli.common import (
    add_config_args,
    check_single_source,
    expand_sources,
    for_each_source,
    prepare_output_dir,
    resolve_config,
    unique_stems,
)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("process", help="detect, track, forecast, score and annotate videos",
                       description="One streaming pass per video: YOLO detections + features, ultralytics "
                                   "tracking, trajectory forecasts, anomaly scores, captions; writes "
                                   "DIR/<video>/{frames.csv,tracks.csv,forecasts.jsonl,events.json,captions.jsonl,"
                                   "summary.json,annotated.mp4,anomaly.png}. Each video folder is written under a "
                                   "lock into a hidden staging folder and appears only when complete.",
                       epilog="examples:\n  vidseq process clip.mp4 --out runs/\n"
                              "  vidseq process videos/*.mp4 --out runs/ --max-frames 300 --set tracker.conf=0.4\n"
                              "failure behaviour: docs/failures.md",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="VIDEO", help="video files, image folders, folders of videos, globs")
    p.add_argument("--out", "-o", type=Path, required=True, metavar="DIR",
                   help="output folder; each video gets DIR/<video name>/")
    p.add_argument("--weights", default=None, help="YOLO weights (.pt)")
    p.add_argument("--anomaly-model", default=None, help="checkpoint from `vidseq train anomaly`")
    p.add_argument("--trajectory-model", default=None, help="checkpoint from `vidseq train trajectory`")
    p.add_argument("--caption-model", default=None, help="checkpoint from `vidseq train caption`")
    p.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="stop after N processed frames per video (default: all)")
    p.add_argument("--stride", type=int, default=None, metavar="N",
                   help="process every N-th frame (default 1: every frame)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda[:N] | mps (default auto)")
    p.add_argument("--no-video", dest="video", action="store_const", const=False, default=None,
                   help="do not write annotated.mp4 (faster)")
    p.add_argument("--force", action="store_true",
                   help="re-run videos already processed, and replace a complete result made with other settings")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (on a terminal) or progress log lines (otherwise)")
    add_config_args(p, "process")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vidseq.config import save_config
    from vidseq.io import remove_if_empty
    from vidseq.pipeline import PROGRESS_LOG_INTERVAL_S, ProcessConfig, process_video

    flags = {"backbone_weights": args.weights, "anomaly.model": args.anomaly_model,
             "trajectory.model": args.trajectory_model, "caption.model": args.caption_model,
             "max_frames": args.max_frames, "stride": args.stride, "device": args.device, "video": args.video}
    cfg = resolve_config(ProcessConfig, "process", args, flags)
    sources = expand_sources(args.sources)
    stems = unique_stems(sources)
    check_single_source(sources)
    created = prepare_output_dir(args.out)
    bar = not args.no_progress and sys.stderr.isatty()
    log_every = None if args.no_progress or bar else PROGRESS_LOG_INTERVAL_S

    def run_one(spec: str) -> None:
        res = process_video(spec, args.out / stems[spec], cfg, force=args.force, progress=bar,
                            log_every_s=log_every)
        # the settings of the results in DIR, beside them (a failed run's settings are in its summary.json)
        save_config(cfg, args.out / "process_config.yaml")
        s = res.summary
        if res.status == "skipped":
            print(f"{res.out_dir}\talready complete (same content and settings; --force to redo)")
        else:
            c = s.get("counts", {})
            print(f"{res.out_dir}\t{res.frames} frames\t{s.get('fps_achieved')} frames/s\t"
                  f"{c.get('tracks', 0)} tracks\t{c.get('events', 0)} anomaly events")
        for note in s.get("notes", []):
            print(f"  note: {note}", file=sys.stderr)

    try:
        return for_each_source("process", sources, run_one)
    finally:
        if created:
            remove_if_empty(args.out)
