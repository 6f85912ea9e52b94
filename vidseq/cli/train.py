"""``vidseq train TASK --data DATASET [--config YAML] --out RUN_DIR [--resume] [--set key=value ...]``.

Dispatches to the task module (``vidseq.registry.TASKS``), which loads its config, builds datasets and
calls the shared engine. Also the torchrun target: ``torchrun --nproc_per_node=2 -m vidseq train ...``
runs DDP (only rank 0 prints and writes files).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

from vidseq.config import default_config_path
from vidseq.errors import ConfigError
from vidseq.io import atomic_write_json


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from vidseq.registry import TASKS

    p = subparsers.add_parser(
        "train", help="train a head on a dataset (resumable; DDP under torchrun)",
        description="Train a head on a dataset with the shared engine. Written to RUN_DIR every epoch:\n"
                    "last.pt, best.pt, metrics.csv, tb/ (TensorBoard) and config.yaml.",
        epilog="examples:\n  vidseq train anomaly --data ds/ped2 --config configs/anomaly.yaml --out runs/ped2\n"
               "  vidseq train anomaly --data ds/ped2 --out runs/ped2 --resume\n"
               "  vidseq train anomaly --normal-dir my_camera_clips/ --out runs/cam\n"
               "  torchrun --nproc_per_node=2 -m vidseq train trajectory --data ds/eth --out runs/eth",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("task", metavar="TASK", help=f"task to train: {', '.join(TASKS)}")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, metavar="DATASET", help="dataset folder (with dataset.yaml)")
    src.add_argument("--normal-dir", type=Path, metavar="FOLDER",
                     help="anomaly: a folder of your own normal clips (videos or image folders), no manifest needed")
    p.add_argument("--config", type=Path, default=None, metavar="YAML",
                   help="task config YAML (default: configs/TASK.yaml when present)")
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run directory (checkpoints, metrics.csv, tb/)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. --set train.epochs=5 train.lr=3e-4")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the final metrics to this JSON file")
    p.set_defaults(func=run)
    return p


def format_metrics(metrics: dict[str, Any]) -> str:
    """One ``key: value`` line per metric (floats with 6 significant digits)."""
    lines = []
    for key, value in metrics.items():
        if isinstance(value, float) and math.isfinite(value):
            value = f"{value:.6g}"
        lines.append(f"{key}: {value}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from vidseq.registry import get_task_function
    from vidseq.train.distributed import is_main_process

    if args.normal_dir is not None and args.task != "anomaly":
        raise ConfigError("--normal-dir is for `vidseq train anomaly` (a folder of normal clips)")
    train = get_task_function(args.task, "train")
    if not is_main_process():  # under torchrun only rank 0 reports progress; other ranks keep warnings
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
    config = args.config if args.config is not None else default_config_path(args.task)
    data = args.normal_dir if args.normal_dir is not None else args.data
    metrics = train(data, args.out, config=config, overrides=list(args.overrides), resume=args.resume)
    if is_main_process():
        metrics = dict(metrics or {})
        print(format_metrics(metrics))
        if args.json is not None:
            atomic_write_json(args.json, metrics)
    return 0
