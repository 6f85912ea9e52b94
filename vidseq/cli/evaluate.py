"""``vidseq eval TASK --model CKPT --data DATASET [--json metrics.json] [--set key=value ...]``.

Dispatches to the task module's ``evaluate``; prints the metrics and writes ``--json`` atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vidseq.errors import CheckpointError
from vidseq.io import atomic_write_json


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from vidseq.registry import TASKS

    p = subparsers.add_parser(
        "eval", help="evaluate a trained checkpoint on a dataset",
        description="Evaluate a checkpoint written by `vidseq train` on a dataset; prints the metrics and "
                    "optionally writes them to --json.",
    )
    p.add_argument("task", metavar="TASK", help=f"task to evaluate: {', '.join(TASKS)}")
    p.add_argument("--model", type=Path, required=True, metavar="CKPT", help="checkpoint (.pt) written by vidseq train")
    p.add_argument("--data", type=Path, required=True, metavar="DATASET", help="dataset folder (with dataset.yaml)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the metrics to this JSON file (atomically)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="evaluation overrides, e.g. --set split=test")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vidseq.cli.train import format_metrics
    from vidseq.registry import get_task_function

    evaluate = get_task_function(args.task, "evaluate")
    if not args.model.is_file():
        raise CheckpointError(f"checkpoint not found: {args.model}")
    metrics = dict(evaluate(args.model, args.data, overrides=list(args.overrides)) or {})
    print(format_metrics(metrics))
    if args.json is not None:
        atomic_write_json(args.json, metrics)
    return 0
