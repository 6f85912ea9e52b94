#!/usr/bin/env python
"""ETH/UCY leave-one-scene-out benchmark of the trajectory forecaster (Social-GAN protocol).

For every scene: train on that scene folder's train/ (validating on val/, best epoch by K=1 val ADE) with
``vidseq.tasks.trajectory.task.train`` (the same code as ``vidseq train trajectory``), then score its
test/ folder. Prints ADE/FDE in metres per scene and their average for constant velocity, the model's
deterministic head (K=1) and best-of-K over its K=20 hypotheses (both heads belong to one network), and
a final JSON line ``{"ade_k1", "fde_k1", "ade_k20", "fde_k20", "cv_ade", "cv_fde"}``.

    python scripts/eval_eth_ucy.py ../shared/data/eth_ucy [--out runs/eth_ucy] [--threads 2]
        [--scenes eth,hotel] [-o train.epochs=5 ...] [--ship weights/trajectory_lstm_ethucy.pt]

Runs resume: a scene whose run folder already holds a finished run is only re-scored.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from vidseq.io import atomic_write_json  # noqa: E402
from vidseq.sequences.trajectories import ETH_UCY_SCENES  # noqa: E402
from vidseq.tasks.trajectory.task import export_model, load_task_config, train  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, help="ETH/UCY folder with <scene>/{train,val,test}/*.txt")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "eth_ucy", help="run folders, one per scene")
    p.add_argument("--config", type=Path, default=None, help="task config (default configs/trajectory.yaml)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. train.epochs=10 (repeatable)")
    p.add_argument("--scenes", default=",".join(ETH_UCY_SCENES), help="comma-separated scenes")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--ship", type=Path, default=None,
                   help="after the benchmark, train on the train parts of all five scenes (data.scene=all) and "
                        "export that model here (not timed with the benchmark)")
    return p.parse_args(argv)


def fmt(a: float, f: float) -> str:
    return f"{a:.3f}/{f:.3f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    scenes = [s.strip() for s in args.scenes.split(",") if s.strip()]
    unknown = [s for s in scenes if s not in ETH_UCY_SCENES]
    if unknown:
        print(f"error: unknown scene(s) {', '.join(unknown)}; known: {', '.join(ETH_UCY_SCENES)}", file=sys.stderr)
        return 2
    base = load_task_config(args.config, args.override)
    print(f"config: model={base.model} augment={base.augment} epochs={base.train.epochs} "
          f"batch={base.train.batch_size} lr={base.train.lr} threads={args.threads}", flush=True)
    rows: dict[str, dict[str, float]] = {}
    t_all = time.perf_counter()
    for scene in scenes:
        t0 = time.perf_counter()
        m = train(args.data, args.out / scene, config=args.config,
                  overrides=[*args.override, f"data.scene={scene}", "data.eval_split=test"],
                  resume=(args.out / scene / "last.pt").exists(), progress=False)
        m["time_s"] = time.perf_counter() - t0
        rows[scene] = m
        print(f"{scene:6s} n={int(m['test_n']):6d}  CV {fmt(m['test_cv_ade'], m['test_cv_fde'])}  "
              f"K=1 {fmt(m['test_ade'], m['test_fde'])}  K={int(m['test_k'])} {fmt(m['test_ade_k'], m['test_fde_k'])}"
              f"  (best epoch {int(m['best_epoch'])}, {m['time_s']:.0f} s)", flush=True)
    total_s = time.perf_counter() - t_all

    def avg(key: str) -> float:
        return sum(r[key] for r in rows.values()) / len(rows)

    k = int(next(iter(rows.values()))["test_k"])
    print()
    print(f"{'scene':8s}{'CV ADE/FDE':>16s}{'K=1 ADE/FDE':>16s}{f'K={k} ADE/FDE':>16s}{'agents':>9s}")
    for scene, r in rows.items():
        print(f"{scene:8s}{fmt(r['test_cv_ade'], r['test_cv_fde']):>16s}{fmt(r['test_ade'], r['test_fde']):>16s}"
              f"{fmt(r['test_ade_k'], r['test_fde_k']):>16s}{int(r['test_n']):9d}")
    print(f"{'avg':8s}{fmt(avg('test_cv_ade'), avg('test_cv_fde')):>16s}{fmt(avg('test_ade'), avg('test_fde')):>16s}"
          f"{fmt(avg('test_ade_k'), avg('test_fde_k')):>16s}")
    print(f"total {total_s:.0f} s with {args.threads} thread(s)")
    summary = {"ade_k1": round(avg("test_ade"), 4), "fde_k1": round(avg("test_fde"), 4),
               f"ade_k{k}": round(avg("test_ade_k"), 4), f"fde_k{k}": round(avg("test_fde_k"), 4),
               "cv_ade": round(avg("test_cv_ade"), 4), "cv_fde": round(avg("test_cv_fde"), 4)}
    atomic_write_json(args.out / "summary.json", {"summary": summary, "scenes": rows, "total_s": total_s,
                                                  "threads": args.threads, "overrides": args.override})
    if args.ship is not None:
        ship(args, summary)
    print(json.dumps(summary), flush=True)
    return 0


def ship(args: argparse.Namespace, summary: dict[str, float]) -> None:
    """Train on all scenes' train parts (val parts pick the epoch) and export a slim checkpoint."""
    t0 = time.perf_counter()
    m = train(args.data, args.out / "all", config=args.config, overrides=[*args.override, "data.scene=all"],
              resume=(args.out / "all" / "last.pt").exists(), progress=False)
    note = {
        "made_by": "scripts/eval_eth_ucy.py " + " ".join(sys.argv[1:]),
        "data": "ETH/UCY Social-GAN release: train/*.txt of all five scenes (val/*.txt for model selection)",
        "units": "metres, 0.4 s per step, 8 observed -> 12 predicted",
        "val_all_scenes": {k[4:]: v for k, v in m.items() if k.startswith("val_")},
        "leave_one_scene_out_benchmark": summary,
        "train_time_s": time.perf_counter() - t0,
        "threads": args.threads,
    }
    export_model(args.out / "all" / "best.pt", args.ship, extra=note)
    print(f"shipped {args.ship} ({args.ship.stat().st_size / 1e6:.2f} MB): val (all scenes) K=1 "
          f"{fmt(m['val_ade'], m['val_fde'])}, K={int(m['val_k'])} {fmt(m['val_ade_k'], m['val_fde_k'])}, "
          f"{note['train_time_s']:.0f} s", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
