"""``vidseq process VIDEO... --out DIR``: the full pipeline, one output folder per video."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidseq.cli.common import (
    add_config_args,
    add_ray_args,
    add_runtime_args,
    check_single_source,
    expand_sources,
    prepare_output_dir,
    resolve_config,
    run_jobs,
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
    add_runtime_args(p)
    p.add_argument("--no-video", dest="video", action="store_const", const=False, default=None,
                   help="do not write annotated.mp4 (faster)")
    p.add_argument("--force", action="store_true",
                   help="re-run videos already processed, and replace a complete result made with other settings")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (on a terminal) or progress log lines (otherwise)")
    add_config_args(p, "process")
    add_ray_args(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vidseq.config import save_config
    from vidseq.io import remove_if_empty
    from vidseq.jobs import ProcessJob
    from vidseq.pipeline import PROGRESS_LOG_INTERVAL_S, ProcessConfig

    flags = {"backbone_weights": args.weights, "anomaly.model": args.anomaly_model,
             "trajectory.model": args.trajectory_model, "caption.model": args.caption_model,
             "max_frames": args.max_frames, "stride": args.stride, "device": args.device, "video": args.video,
             "runtime": args.runtime, "precision": args.precision}
    cfg = resolve_config(ProcessConfig, "process", args, flags)
    sources = expand_sources(args.sources)
    stems = unique_stems(sources)
    check_single_source(sources)
    created = prepare_output_dir(args.out)  # an unwritable folder fails now, before any model loads
    try:
        bar = not args.no_progress and sys.stderr.isatty() and args.ray is None
        log_every = None if args.no_progress or bar else PROGRESS_LOG_INTERVAL_S
        job = ProcessJob(cfg, args.out, force=args.force, progress=bar, log_every_s=log_every)
        code = run_jobs(job, sources, stems, args.out, args)
        # the settings of the results in DIR, beside them (a failed run's settings are in its summary.json)
        if any(job.output_path(stems[s]).exists() for s in sources):
            save_config(cfg, args.out / "process_config.yaml")
        return code
    finally:
        if created:
            remove_if_empty(args.out)
