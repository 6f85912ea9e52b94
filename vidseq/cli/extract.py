"""``vidseq extract SOURCE... --out DIR``: per-frame backbone features, one file per video."""

from __future__ import annotations

import argparse
import logging
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

log = logging.getLogger(__name__)

PROGRESS_LOG_INTERVAL_S = 10.0  # seconds between progress log lines without a terminal


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("extract", help="per-frame features of videos / image folders (cached)",
                       description="Extract one feature vector per frame; writes DIR/<video>.npz "
                                   "(features, frame_index, timestamp_s, metadata) atomically.")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="video files, image folders, folders of videos, globs")
    p.add_argument("--out", "-o", type=Path, required=True, help="output folder")
    p.add_argument("--backbone", "-b", default=None, help="resnet18 | resnet34 | mobilenet_v2 | yolo")
    p.add_argument("--weights", default=None, help="explicit weights file (or YOLO .pt/.yaml)")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_const", const=False, default=None,
                   help="random init (recorded in metadata)")
    p.add_argument("--feature-dim", type=int, default=None, help="output width (default 512)")
    p.add_argument("--imgsz", type=int, default=None, help="backbone input size (px)")
    p.add_argument("--batch-size", type=int, default=None, help="frames per forward pass")
    p.add_argument("--stride", type=int, default=None, metavar="N", help="every N-th frame (default 1)")
    p.add_argument("--start-s", type=float, default=None, metavar="S", help="start at S seconds")
    p.add_argument("--end-s", type=float, default=None, metavar="S", help="stop at S seconds")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    p.add_argument("--device", default=None, help="auto | cpu | cuda[:N] | mps")
    p.add_argument("--no-progress", action="store_true")
    add_runtime_args(p)
    add_config_args(p, "extract")
    add_ray_args(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vidseq.config import save_config
    from vidseq.features.extractor import ExtractConfig
    from vidseq.io import remove_if_empty
    from vidseq.jobs import ExtractJob

    flags = {k: getattr(args, k) for k in ("backbone", "weights", "pretrained", "feature_dim", "imgsz",
                                            "batch_size", "stride", "start_s", "end_s", "max_frames", "device",
                                            "runtime", "precision")}
    cfg = resolve_config(ExtractConfig, "extract", args, flags)
    sources = expand_sources(args.sources)
    stems = unique_stems(sources)
    check_single_source(sources)
    created = prepare_output_dir(args.out)  # an unwritable folder fails now, before any model loads
    try:
        bar = not args.no_progress and sys.stderr.isatty() and args.ray is None
        log_every = None if args.no_progress or bar else PROGRESS_LOG_INTERVAL_S
        job = ExtractJob(cfg, args.out, progress=bar, log_every_s=log_every)
        if args.ray is None:  # serial: load the backbone here (errors before any output)
            backbone = job.backbone
            w = backbone.weights
            print(f"backbone {backbone.name} ({backbone.feature_dim}-d) weights: "
                  f"{w.path if w.pretrained else 'random init'} [{w.source}], runtime {backbone.runtime} "
                  f"{backbone.precision}", file=sys.stderr)
        save_config(cfg, args.out / "extract_config.yaml")
        return run_jobs(job, sources, stems, args.out, args)
    finally:
        if created:
            remove_if_empty(args.out)
