"""``vidseq monitor --source 0|rtsp://...|http://...|FILE``: live scoring with alerts and event clips."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vidseq.cli.common import add_config_args, resolve_config


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("monitor", help="watch a camera/stream/file live; alert on anomalies, save event clips",
                       description="Live loop with the latest-frame reader (lag never grows), reconnect with "
                                   "backoff, anomaly alerts (threshold, minimum duration, cooldown), event clips "
                                   "with pre/post-roll, events.jsonl log.")
    p.add_argument("--source", required=True, help="webcam index (0), rtsp:// or http(s):// URL, or a video file")
    p.add_argument("--out", "-o", type=Path, default=Path("runs/monitor"))
    p.add_argument("--anomaly-model", default=None, metavar="PATH",
                   help="trained checkpoint, or a normality saved with --save-model (reused: no warm-up)")
    p.add_argument("--save-model", default=None, metavar="PATH",
                   help="save this camera's learnt normality here (after the warm-up, each update and at the end)")
    p.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    p.add_argument("--realtime", dest="realtime", action="store_const", const=True, default=None,
                   help="play a file at its own fps as if it were a camera (default for files)")
    p.add_argument("--as-fast-as-possible", dest="realtime", action="store_const", const=False,
                   help="read a file as fast as processing allows")
    p.add_argument("--show", dest="show", action="store_const", const=True, default=None, help="on-screen window")
    p.add_argument("--device", default=None)
    add_config_args(p, "monitor")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vidseq.monitor import MonitorConfig, run_monitor

    flags = {"pipeline.anomaly.model": args.anomaly_model, "pipeline.anomaly.save_model": args.save_model,
             "duration_s": args.duration, "realtime": args.realtime,
             "show": args.show, "pipeline.device": args.device}
    cfg = resolve_config(MonitorConfig, "monitor", args, flags)
    result = run_monitor(args.source, args.out, cfg)
    keys = ("frames", "fps", "dropped", "reconnects", "alerts", "latency_ms_median", "latency_ms_p95")
    print(json.dumps({k: result.get(k) for k in keys}))
    print(f"events: {args.out / 'events.jsonl'}")
    return 0
