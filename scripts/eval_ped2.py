#!/usr/bin/env python
"""UCSD Ped2 frame-level anomaly benchmark: import, tune (label-free), train, evaluate (through the vidseq CLI).

Usage: python scripts/eval_ped2.py DATA_DIR [--work DIR] [--workers 2] [--no-grid] [--tune-set KEY=VALUE ...]

Stages (wall time of each is printed):
  import      vidseq data import ucsd-ped2 DATA_DIR WORK/ds
  tune        vidseq tune anomaly: streams, fusion, smoothing and speed settings chosen on pseudo-anomalies
              injected into held-out NORMAL training clips (2-fold cross-fitting); no test clip is read
  train       vidseq train anomaly --config WORK/tune/anomaly.yaml (features cached in WORK/cache)
  eval        vidseq eval anomaly on the test split (the only stage that reads test labels)
  grid        reporting only, after the fact: every candidate of the tuning grid scored on the test split,
              with the rank correlation between the pseudo-anomaly criterion and the test criterion
The metrics JSON is the LAST line of stdout: auc_micro, auc_micro_minmax (+ tuning and grid summaries).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stage(name: str, cmd: list[str], times: dict[str, float]) -> None:
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    times[name] = round(time.perf_counter() - t0, 1)
    tail = "\n".join(proc.stdout.strip().splitlines()[-12:])
    print(tail, flush=True)
    print(f"== {name}: {times[name]:.1f} s (exit {proc.returncode})", flush=True)
    if proc.returncode != 0:
        sys.exit(proc.returncode)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="UCSD Ped2 folder (train/, test/, labels)")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a new temp folder)")
    ap.add_argument("--workers", type=int, default=2, help="feature extraction processes")
    ap.add_argument("--no-grid", action="store_true", help="skip the reporting-only grid-on-test stage")
    ap.add_argument("--tune-set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra config overrides for the tune stage, e.g. select.pseudo.seed=3 (protocol spread)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vidseq_ped2_"))
    work.mkdir(parents=True, exist_ok=True)
    vidseq = [sys.executable, "-m", "vidseq", "-q"]
    ds, cache = work / "ds", work / "cache"
    common = [f"cache_dir={cache}", f"workers={args.workers}", "progress=false"]
    times: dict[str, float] = {}
    t_all = time.perf_counter()
    stage("import", vidseq + ["data", "import", "ucsd-ped2", str(args.data), str(ds), "--force"], times)
    tune_dir = work / "tune"
    stage("tune", vidseq + ["tune", "anomaly", "--data", str(ds), "--out", str(tune_dir), "--config",
                            str(REPO / "configs" / "anomaly.yaml"), "--set", *common, *args.tune_set], times)
    selection = json.loads((tune_dir / "selection.json").read_text())
    run = work / "run"
    stage("train", vidseq + ["train", "anomaly", "--data", str(ds), "--out", str(run), "--config",
                             str(tune_dir / "anomaly.yaml"), "--set", *common], times)
    stage("eval", vidseq + ["eval", "anomaly", "--model", str(run / "best.pt"), "--data", str(ds),
                            "--json", str(work / "metrics.json"), "--set", *common], times)
    metrics = json.loads((work / "metrics.json").read_text())
    out = {"auc_micro": metrics["auc_micro"], "auc_micro_minmax": metrics["auc_micro_minmax"],
           "chosen": selection["chosen"]["label"], "streams": metrics["streams"],
           "pseudo_auc_micro": selection["chosen"]["auc_micro"],
           "pseudo_auc_micro_minmax": selection["chosen"]["auc_micro_minmax"],
           "threshold": metrics["threshold"], "precision": metrics["precision"], "recall": metrics["recall"],
           "fpr": metrics["fpr"], "auc_per_clip_mean": metrics["auc_per_clip_mean"],
           "unsupervised_self": {"auc_micro": metrics["auc_micro_unsup_self"],
                                 "auc_micro_minmax": metrics["auc_micro_minmax_unsup_self"]}}
    if not args.no_grid:
        print("== grid: every tuning candidate on the test split (reporting only)", flush=True)
        t0 = time.perf_counter()
        from vidseq.tasks.anomaly.tune import grid_report

        rep = grid_report(ds, tune_dir, split="test", overrides=common)
        from vidseq.io import atomic_write_json

        atomic_write_json(work / "grid_test.json", rep)
        times["grid"] = round(time.perf_counter() - t0, 1)
        keep = ("label", "auc_micro", "auc_micro_minmax", "pseudo_auc_micro", "pseudo_auc_micro_minmax")
        out["grid"] = {"candidates": len(rep["rows"]), "spearman_pseudo_vs_test": rep["spearman_pseudo_vs_split"],
                       "chosen_rank_on_test": rep["chosen_rank_on_split"],
                       "best_on_test": {k: rep["best_on_split"][k] for k in keep}}
        print(f"== grid: {times['grid']:.1f} s ({work / 'grid_test.json'})", flush=True)
    times["total"] = round(time.perf_counter() - t_all, 1)
    out["stage_seconds"] = times
    out["work"] = str(work)
    print(f"total wall time {times['total']:.1f} s; work folder {work}", flush=True)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(REPO))
    sys.exit(main())
