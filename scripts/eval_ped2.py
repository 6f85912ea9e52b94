#!/usr/bin/env python
"""UCSD Ped2 frame-level anomaly benchmark: import, extract, train, evaluate (through the vidseq CLI).

Usage: python scripts/eval_ped2.py DATA_DIR [--work DIR] [--workers 2] [--no-variants]

Stages (wall time of each is printed):
  import      vidseq data import ucsd-ped2 DATA_DIR WORK/ds
  train       vidseq train anomaly (configs/anomaly.yaml; features cached in WORK/cache)
  eval        vidseq eval anomaly on the test split
  variants    the three-stream fusion (speed + objects + frame LSTM) trained and evaluated the same way,
              giving the per-stream AUCs
The metrics JSON is the LAST line of stdout: auc_micro, auc_micro_minmax (+ per-variant numbers).
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
    ap.add_argument("--no-variants", action="store_true", help="skip the three-stream fusion run")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vidseq_ped2_"))
    work.mkdir(parents=True, exist_ok=True)
    vidseq = [sys.executable, "-m", "vidseq", "-q"]
    ds, cache = work / "ds", work / "cache"
    common = [f"cache_dir={cache}", f"workers={args.workers}", "progress=false"]
    times: dict[str, float] = {}
    t_all = time.perf_counter()
    stage("import", vidseq + ["data", "import", "ucsd-ped2", str(args.data), str(ds), "--force"], times)
    run = work / "run_default"
    stage("train", vidseq + ["train", "anomaly", "--data", str(ds), "--out", str(run), "--config",
                             str(REPO / "configs" / "anomaly.yaml"), "--set", *common], times)
    stage("eval", vidseq + ["eval", "anomaly", "--model", str(run / "best.pt"), "--data", str(ds),
                            "--json", str(work / "metrics_default.json"), "--set", *common], times)
    metrics = json.loads((work / "metrics_default.json").read_text())
    out = {"auc_micro": metrics["auc_micro"], "auc_micro_minmax": metrics["auc_micro_minmax"],
           "streams": metrics["streams"], "threshold": metrics["threshold"], "precision": metrics["precision"],
           "recall": metrics["recall"], "fpr": metrics["fpr"], "auc_per_clip_mean": metrics["auc_per_clip_mean"]}
    variants: dict[str, dict[str, float]] = {
        "default_unsmoothed": {"auc_micro": metrics["auc_micro_unsmoothed"],
                               "auc_micro_minmax": metrics["auc_micro_minmax_unsmoothed"]},
        "unsupervised_self": {"auc_micro": metrics["auc_micro_unsup_self"],
                              "auc_micro_minmax": metrics["auc_micro_minmax_unsup_self"]},
    }
    if not args.no_variants:
        run3 = work / "run_fusion3"
        streams = "model.streams=[speed,objects,frame]"
        stage("train_fusion3", vidseq + ["train", "anomaly", "--data", str(ds), "--out", str(run3), "--config",
                                         str(REPO / "configs" / "anomaly.yaml"), "--set", streams, *common], times)
        stage("eval_fusion3", vidseq + ["eval", "anomaly", "--model", str(run3 / "best.pt"), "--data", str(ds),
                                        "--json", str(work / "metrics_fusion3.json"), "--set", *common,
                                        "variants=true"], times)
        m3 = json.loads((work / "metrics_fusion3.json").read_text())
        variants["speed+objects+frame"] = {"auc_micro": m3["auc_micro"], "auc_micro_minmax": m3["auc_micro_minmax"]}
        for s in ("speed", "objects", "frame"):
            variants[f"{s}_only"] = {"auc_micro": m3[f"auc_micro_{s}"], "auc_micro_minmax": m3[f"auc_micro_minmax_{s}"]}
    times["total"] = round(time.perf_counter() - t_all, 1)
    out["variants"] = variants
    out["stage_seconds"] = times
    out["work"] = str(work)
    print(f"total wall time {times['total']:.1f} s; work folder {work}", flush=True)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
