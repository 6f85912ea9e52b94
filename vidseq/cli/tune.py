"""``vidseq tune TASK --data DATASET --out DIR [--config YAML] [--set key=value ...]``.

Label-free model selection: dispatches to the task module's ``tune`` (today: ``anomaly``), which writes
``DIR/TASK.yaml`` (the chosen config: pass it to ``vidseq train TASK --config``) and its evidence
(``selection.json``/``.csv``). Only training/validation clips are read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vidseq.config import default_config_path
from vidseq.io import atomic_write_json


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "tune", help="choose a head's settings without test labels (anomaly: pseudo-anomaly cross-fitting)",
        description="Compare the candidate settings of a head on its training data only and write the "
                    "winner as DIR/TASK.yaml plus the evidence (selection.json, selection.csv).",
        epilog="example:\n  vidseq tune anomaly --data ds/ped2 --out runs/ped2_tune\n"
               "  vidseq train anomaly --data ds/ped2 --config runs/ped2_tune/anomaly.yaml --out runs/ped2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("task", metavar="TASK", help="task to tune: anomaly")
    p.add_argument("--data", type=Path, required=True, metavar="DATASET", help="dataset folder (with dataset.yaml)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (chosen config, tables)")
    p.add_argument("--config", type=Path, default=None, metavar="YAML",
                   help="base task config with the search grid (default: configs/TASK.yaml)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. --set select.folds=4")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the summary to this JSON file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vidseq.cli.train import format_metrics
    from vidseq.registry import get_task_function

    tune = get_task_function(args.task, "tune")
    config = args.config if args.config is not None else default_config_path(args.task)
    summary = dict(tune(args.data, args.out, config=config, overrides=list(args.overrides)) or {})
    print(format_metrics(summary))
    if args.json is not None:
        atomic_write_json(args.json, summary)
    return 0
