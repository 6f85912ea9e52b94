"""``vidseq monitor --source 0|rtsp://...|http://...|FILE`` or ``--cameras cams.yaml``: live scoring with alerts
and event clips, optionally with a web dashboard (``--web [HOST:]PORT``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vidseq.cli.common import (
    add_config_args,
    add_runtime_args,
    prepare_output_dir,
    resolve_config,
)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("monitor", help="watch cameras/streams/files live; alert on anomalies, save event clips",
                       description="Live loop with the latest-frame reader (lag never grows), reconnect with "
                                   "backoff, anomaly alerts (threshold, minimum duration, cooldown), event clips "
                                   "with pre/post-roll, events.jsonl log; several cameras from a YAML file; "
                                   "a live web dashboard with --web.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--source", help="webcam index (0), rtsp:// or http(s):// URL, or a video file")
    what.add_argument("--cameras", type=Path, metavar="YAML",
                      help="several cameras in one process: a YAML file 'cameras: [{name, source, ...overrides}]'; "
                           "each camera writes to OUT/<name>/")
    p.add_argument("--out", "-o", type=Path, default=Path("runs/monitor"), metavar="DIR",
                   help="folder for events.jsonl, event clips and monitor_summary.json (default runs/monitor)")
    p.add_argument("--anomaly-model", default=None, metavar="PATH",
                   help="trained checkpoint, or a normality saved with --save-model (reused: no warm-up; default: "
                        "learn normality from the first anomaly.fit_s seconds)")
    p.add_argument("--save-model", default=None, metavar="PATH",
                   help="save this camera's learnt normality here (after the warm-up, each update and at the end)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds (> 0; default: until the source ends or Ctrl-C)")
    p.add_argument("--realtime", dest="realtime", action="store_const", const=True, default=None,
                   help="play a file at its own fps as if it were a camera (default for files)")
    p.add_argument("--as-fast-as-possible", dest="realtime", action="store_const", const=False,
                   help="read a file as fast as processing allows")
    p.add_argument("--show", dest="show", action="store_const", const=True, default=None, help="on-screen window")
    p.add_argument("--device", default=None, help="auto | cpu | cuda[:N] | mps (default auto)")
    add_runtime_args(p)
    p.add_argument("--web", nargs="?", const="127.0.0.1:8080", default=None, metavar="[HOST:]PORT",
                   help="serve the live dashboard (default address 127.0.0.1:8080; port 0 picks a free one); "
                        "an address beyond loopback needs --token")
    p.add_argument("--token", default=None,
                   help="dashboard token required on every request (header 'Authorization: Bearer TOKEN' or "
                        "?token=TOKEN); 'auto' generates one and prints it once; default $VIDSEQ_WEB_TOKEN")
    add_config_args(p, "monitor")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vidseq.io import remove_if_empty
    from vidseq.monitor import MonitorConfig

    flags = {"pipeline.anomaly.model": args.anomaly_model, "pipeline.anomaly.save_model": args.save_model,
             "duration_s": args.duration, "realtime": args.realtime,
             "show": args.show, "pipeline.device": args.device,
             "pipeline.runtime": args.runtime, "pipeline.precision": args.precision}
    web = None
    if args.web is not None:  # address and token are checked before any model is loaded
        from vidseq.web import WebSettings, parse_bind, resolve_token

        bind = parse_bind(args.web)
        token, generated = resolve_token(bind, args.token)
        web = (bind, WebSettings(token=token, loopback_only=bind.host in ("127.0.0.1", "localhost")), generated)
    cfg = resolve_config(MonitorConfig, "monitor", args, flags)
    keys = ("frames", "fps", "dropped", "reconnects", "alerts", "latency_ms_median", "latency_ms_p95")
    created = prepare_output_dir(args.out)  # an unwritable folder fails now, before any model loads
    try:
        return _run(args, cfg, web, keys)
    finally:
        if created:
            remove_if_empty(args.out)


def _run(args: argparse.Namespace, cfg: Any, web: Any, keys: tuple[str, ...]) -> int:
    import threading

    from vidseq.monitor import (
        CameraMonitor,
        CameraSpec,
        camera_name,
        check_sources,
        load_cameras,
        run_cameras,
        run_monitor,
    )

    if args.cameras is None and web is None:
        result = run_monitor(args.source, args.out, cfg)
        print(json.dumps({k: result.get(k) for k in keys}))
        print(f"events: {args.out / 'events.jsonl'}")
        return 0
    if args.cameras is not None:
        specs = load_cameras(args.cameras, cfg)
        dirs = [args.out / s.name for s in specs]
    else:
        specs = [CameraSpec(camera_name(args.source), args.source, cfg)]
        dirs = [args.out]
    check_sources(specs)
    several = len(specs) > 1
    cams = [CameraMonitor(s.name, s.source, d, s.cfg, persistent=several) for s, d in zip(specs, dirs)]
    stop = threading.Event()
    if web is not None:
        from vidseq.web import serve_monitor

        results = serve_monitor(cams, web[0], web[1], stop, show_token=web[2],
                                announce=lambda line: print(line, flush=True))
    else:
        results = run_cameras(cams, stop)
    for r, d in zip(results, dirs):
        print(json.dumps({"camera": r.get("camera"), **{k: r.get(k) for k in keys}}))
        print(f"events: {d / 'events.jsonl'}")
    return 0
