"""vidseq data: import public benchmarks, validate dataset folders, render synthetic scenes.

Examples::

    vidseq data import ucsd-ped2 ../shared/data/ucsd_ped2 ds/ped2
    vidseq data import eth-ucy ../shared/data/eth_ucy ds/eth_ucy          # one dataset per scene
    vidseq data validate ds/ped2                                          # counts per split
    vidseq data synth ds/synth --clips 24 --seed 0 --holdout "red circle left"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vidseq.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from vidseq.sequences.importers import IMPORTERS, LINK_MODES

    parser = subparsers.add_parser("data", help="import, validate and synthesize clip datasets",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    imp = sub.add_parser("import", help="convert a public benchmark into a vidseq dataset folder",
                         description="Convert a public benchmark into a vidseq dataset folder "
                                     "(videos hard-linked when possible, else copied).")
    imp.add_argument("kind", choices=list(IMPORTERS), help="benchmark layout")
    imp.add_argument("src", type=Path, help="benchmark folder (captions-csv: the CSV or its folder)")
    imp.add_argument("dst", type=Path, help="dataset folder to create")
    imp.add_argument("--link", choices=LINK_MODES, default="auto",
                     help="how videos get into the dataset (auto: hard link, else copy)")
    imp.add_argument("--val-clips", type=int, default=0, help="move the last N training clips to a val split")
    imp.add_argument("--name", help="dataset name")
    imp.add_argument("--labels", type=Path, help="ucsd-ped2/avenue: anomaly labels file (.csv, .m, .npy)")
    imp.add_argument("--scene", help="eth-ucy: import only this held-out scene")
    imp.add_argument("--videos", type=Path, help="captions-csv: folder with the videos")
    imp.add_argument("--val-fraction", type=float, default=0.1, help="captions-csv without a split column")
    imp.add_argument("--test-fraction", type=float, default=0.2, help="captions-csv without a split column")
    imp.add_argument("--language", default="English", help="captions-csv: keep rows of this language")
    imp.add_argument("--keep-ignored", action="store_true", help="mot: keep gt rows with consider flag 0")
    imp.add_argument("--fps", type=float, help="frame rate for frame-folder clips that state none")
    imp.add_argument("--force", action="store_true", help="replace an existing dataset folder")
    imp.set_defaults(func=_import)

    val = sub.add_parser("validate", help="check a dataset folder and print counts per split",
                         description="Check a dataset folder (schema, files, every label and track row) and "
                                     "print counts per split. Problems: one line each on stderr, exit 2.")
    val.add_argument("dir", type=Path, help="dataset folder (or its dataset.yaml)")
    val.add_argument("--deep", action="store_true", help="decode every video and check its frame count")
    val.add_argument("--json", type=Path, help="also write the counts as JSON")
    val.set_defaults(func=_validate)

    syn = sub.add_parser("synth", help="render a synthetic dataset with exact tracks, anomalies and captions",
                         description="Render small videos of moving shapes with exact ground truth. "
                                     "Options override --config (default configs/synth.yaml if present).")
    syn.add_argument("dst", type=Path, help="dataset folder to create")
    syn.add_argument("--config", type=Path, help="SynthConfig YAML")
    syn.add_argument("--clips", type=int, help="number of clips (train/val/test)")
    syn.add_argument("--seed", type=int, help="master seed")
    syn.add_argument("--frames", type=int, help="frames per clip")
    syn.add_argument("--size", help="WxH, e.g. 160x120")
    syn.add_argument("--fps", type=float, help="frame rate")
    syn.add_argument("--anomaly-rate", type=float, help="share of test clips with an injected anomaly")
    syn.add_argument("--holdout", action="append", metavar="'COLOUR SHAPE MOTION'",
                     help="composition kept out of train/val ('*' = any); repeatable")
    syn.add_argument("--no-video", action="store_true", help="annotations only (trajectory-only clips)")
    syn.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any SynthConfig field")
    syn.add_argument("--force", action="store_true", help="replace an existing dataset folder")
    syn.set_defaults(func=_synth)

    def _help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=_help)
    return parser


def _import(args: argparse.Namespace) -> int:
    from vidseq.sequences.importers import ImportOptions, import_dataset

    opts = ImportOptions(link=args.link, val_clips=args.val_clips, name=args.name, force=args.force,
                         labels=args.labels, scene=args.scene, videos=args.videos, val_fraction=args.val_fraction,
                         test_fraction=args.test_fraction, language=args.language, keep_ignored=args.keep_ignored,
                         fps=args.fps)
    for ds in import_dataset(args.kind, args.src, args.dst, opts):
        counts = {s: len(ds.clips_for(s)) for s in ds.splits}
        print(f"{ds.root}: {len(ds.clips)} clips ({', '.join(f'{n} {s}' for s, n in counts.items())})")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from vidseq.io import atomic_write_json
    from vidseq.sequences.manifest import check_dataset

    problems, summary = check_dataset(args.dir, deep=args.deep)
    for problem in problems:
        print(f"vidseq data validate: error: {problem}", file=sys.stderr)
    if problems or summary is None:
        return 2
    print(summary.format_table())
    if args.json:
        atomic_write_json(args.json, summary.to_dict())
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size must look like 160x120, got '{text}'") from None
    return w, h


def _synth(args: argparse.Namespace) -> int:
    from vidseq.config import default_config_path, load_config, parse_override
    from vidseq.sequences.synth import SynthConfig, describe, generate_dataset

    flags = {"clips": args.clips, "seed": args.seed, "frames": args.frames, "fps": args.fps,
             "anomaly_rate": args.anomaly_rate}
    overrides: dict[str, object] = {k: v for k, v in flags.items() if v is not None}
    if args.size:
        overrides["width"], overrides["height"] = _parse_size(args.size)
    if args.holdout:
        overrides["holdout"] = list(args.holdout)
    if args.no_video:
        overrides["video"] = False
    overrides.update(parse_override(item) for item in args.set)  # --set wins over the flags
    config = args.config if args.config is not None else default_config_path("synth")
    cfg = load_config(SynthConfig, config, overrides)
    ds = generate_dataset(args.dst, cfg, force=args.force)
    info = describe(cfg)
    splits = ", ".join(f"{n} {s}" for s, n in info["splits"].items() if n)
    print(f"{ds.root}: {len(ds.clips)} clips ({splits}); anomalous test clips: "
          f"{json.dumps(info['anomalous_clips'])}")
    return 0
