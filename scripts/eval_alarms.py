#!/usr/bin/env python
"""Alarm benchmark (issue 15): false events per hour, event recall, delay and frame AUC of the streaming alarms.

Usage: python scripts/eval_alarms.py DATA_DIR [--minutes 20] [--seeds 4] [--seed-set dev|report]
       [--modes unsupervised,trained,live] [--cache-dir DIR] [--out report.json] [--set KEY=VALUE ...]

Builds generated camera streams (nuisances + injected events) from the NORMAL clips of DATA_DIR/train only
(DATA_DIR/test is never read), runs them through vidseq's streaming pass (FrameProcessor with the anomaly
head, the monitor's AlertRule) in each mode and prints a table, then, as the LAST stdout line, the summary
JSON. The full report (per nuisance, per event kind) goes to --out. What it builds and measures:
vidseq/tasks/anomaly/alarm_bench.py and docs/alarms.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="eval_alarms", description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", type=Path, help="UCSD Ped2-layout folder (only train/ is read)")
    ap.add_argument("--minutes", type=float, default=20.0, help="footage in all streams together (default 20)")
    ap.add_argument("--seeds", type=int, default=4, help="streams, one per seed of the set (default 4)")
    ap.add_argument("--seed-set", choices=("dev", "report"), default="dev",
                    help="dev: develop against these; report: the disjoint set to quote (default dev)")
    ap.add_argument("--modes", default="unsupervised,trained,live", help="comma-separated modes")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="streams, trained model and results (default $VIDSEQ_CACHE/alarm_bench or "
                         "~/.cache/vidseq/alarm_bench)")
    ap.add_argument("--out", type=Path, default=None, help="full report JSON (default CACHE/report_<set>.json)")
    ap.add_argument("--lead-s", type=float, default=30.0, help="clean start of every stream (s)")
    ap.add_argument("--events-after-s", type=float, default=None,
                    help="no injected event before this (s; default: the anomaly warm-up anomaly.fit_s, which is "
                         "taken as normal and not scored)")
    ap.add_argument("--tolerance-s", type=float, default=1.0, help="alert-event matching tolerance (s)")
    ap.add_argument("--live-slowdown", type=float, default=2.0, help="live mode: processing time per frame, in "
                                                                       "frame intervals")
    ap.add_argument("--imgsz", type=int, default=160,
                    help="YOLO input size of the pass (its frame feature is not used by the anomaly head)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="process-config override for every mode (e.g. anomaly.fit_s=60)")
    ap.add_argument("--alert-set", dest="alert_overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="alert-rule override (AlertSettings, e.g. min_duration_s=2)")
    ap.add_argument("--train-set", dest="train_overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="vidseq train anomaly override for the trained mode")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except KeyboardInterrupt:
        print("eval_alarms: error: interrupted", file=sys.stderr)
        return 2
    except Exception as exc:
        from vidseq.errors import VidseqError

        if not isinstance(exc, (VidseqError, OSError, ValueError, RuntimeError)):
            raise
        print(f"eval_alarms: error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from vidseq.config import to_dict, with_overrides
    from vidseq.monitor import AlertRule, AlertSettings
    from vidseq.pipeline import FrameProcessor, ProcessConfig
    from vidseq.tasks.anomaly.alarm_bench import BenchConfig, run_benchmark

    if not args.data_dir.is_dir():
        raise FileNotFoundError(f"{args.data_dir}: no such folder")
    base = {"tracker": {"detector": "regions", "imgsz": args.imgsz}, "trajectory": {"enabled": False},
            "caption": {"enabled": False}, "video": False, "plot": False, "device": "cpu"}
    pcfg = with_overrides(ProcessConfig, base, args.overrides)
    after = args.events_after_s if args.events_after_s is not None else pcfg.anomaly.fit_s
    cfg = BenchConfig(minutes=args.minutes, seeds=args.seeds, seed_set=args.seed_set,
                      modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()), lead_s=args.lead_s,
                      events_after_s=after, tolerance_s=args.tolerance_s, live_slowdown=args.live_slowdown)
    alerts = with_overrides(AlertSettings, {}, args.alert_overrides)
    cache = args.cache_dir or Path(os.environ.get("VIDSEQ_CACHE", Path.home() / ".cache" / "vidseq")) / "alarm_bench"

    def make_processor(mode: str, fps: float, model: str | None) -> FrameProcessor:
        c = with_overrides(ProcessConfig, to_dict(pcfg), {"anomaly.model": model} if model else {})
        return FrameProcessor(c, fps)

    t0 = time.perf_counter()
    report = run_benchmark(args.data_dir, cfg, cache, make_processor, lambda: AlertRule(alerts),
                           settings={"process": to_dict(pcfg), "alerts": to_dict(alerts)},
                           train_overrides=args.train_overrides,
                           progress=lambda s: print(s, flush=True))
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    out = args.out or cache / f"report_{cfg.seed_set}.json"
    from vidseq.io import atomic_write_json

    atomic_write_json(out, report)
    print_table(report)
    print(f"full report: {out}  ({report['wall_s']:.0f} s)")
    print(json.dumps(report["summary"]), flush=True)
    return 0


def print_table(report: dict) -> None:
    cols = ("false_events_per_hour", "event_recall", "flagged_normal_frames", "auc", "median_delay_s")
    print(f"{'mode':<13}" + "".join(f"{c:>23}" for c in cols))
    for mode, r in report["modes"].items():
        print(f"{mode:<13}" + "".join(f"{r[c]!s:>23}" for c in cols))
    for mode, r in report["modes"].items():
        print(f"-- {mode}: false events per nuisance (per hour of it), recall of events under it")
        for k, b in r["by_nuisance"].items():
            print(f"   {k:<15} {b['normal_s']:>7.0f} s  false {b['false_events']:>3} "
                  f"({b['false_events_per_hour']}/h)  flagged {b['flagged_normal_frames']}  "
                  f"recall {b['event_recall']} of {b['events']}")
        print(f"-- {mode}: per event kind")
        for k, v in r["by_kind"].items():
            print(f"   {k:<15} recall {v['event_recall']} of {v['events']}  median delay {v['median_delay_s']} s")
        causes = ", ".join(f"{k} {c['alerts']} ({c['false_events']} false)" for k, c in r.get("by_cause", {}).items())
        print(f"-- {mode}: alerts by the stream behind them: {causes or 'none'}")
        missed = [e for e in r.get("events_detail", []) if not e["found"]]
        for e in missed:
            print(f"   missed: seed {e['seed']} {e['kind']:<15} {e['start_s']:>6}-{e['end_s']:<6} s  "
                  f"max score {e['max_score']}  under {', '.join(e['nuisances']) or 'no nuisance'}")


if __name__ == "__main__":
    sys.exit(main())
