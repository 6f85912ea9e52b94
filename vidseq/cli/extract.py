"""``vidseq extract SOURCE... --out DIR``: per-frame backbone features, one file per video."""

from __future__ import annotations

import argparse
import logging
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

log = logging.getLogger(__name__)


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
    p.add_argument("--imgsz", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--stride", type=int, default=None)
    p.add_argument("--start-s", type=float, default=None)
    p.add_argument("--end-s", type=float, default=None)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--device", default=None, help="auto | cpu | cuda[:N] | mps")
    p.add_argument("--no-progress", action="store_true")
    add_runtime_args(p)
    add_config_args(p, "extract")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vidseq.config import save_config
    from vidseq.features.extractor import ExtractConfig, backbone_from_config, extract_features

    flags = {k: getattr(args, k) for k in ("backbone", "weights", "pretrained", "feature_dim", "imgsz",
                                            "batch_size", "stride", "start_s", "end_s", "max_frames", "device",
                                            "runtime", "precision")}
    cfg = resolve_config(ExtractConfig, "extract", args, flags)
    sources = expand_sources(args.sources)
    stems = unique_stems(sources)
    check_single_source(sources)
    backbone = backbone_from_config(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, args.out / "extract_config.yaml")
    w = backbone.weights
    print(f"backbone {backbone.name} ({backbone.feature_dim}-d) weights: "
          f"{w.path if w.pretrained else 'random init'} [{w.source}], runtime {backbone.runtime} "
          f"{backbone.precision}", file=sys.stderr)

    def run_one(spec: str) -> None:
        target = args.out / f"{stems[spec]}.npz"
        seq = extract_features(spec, backbone, batch_size=cfg.batch_size, stride=cfg.stride,
                               start_s=cfg.start_s, end_s=cfg.end_s, max_frames=cfg.max_frames,
                               prefetch=cfg.prefetch, out_path=target,
                               progress=not args.no_progress and sys.stderr.isatty())
        status = "cache hit" if seq.meta.get("cache_hit") else f"{seq.meta.get('fps_achieved')} frames/s"
        print(f"{target}\t{len(seq)} frames x {seq.feature_dim}\t{status}")

    return for_each_source("extract", sources, run_one)
