"""``vidseq score VIDEO --model CKPT [--out DIR]``: per-frame anomaly scores and events of one video.

Writes ``DIR/<stem>_scores.csv`` (``frame_index,timestamp_s,score,is_anomaly``; rows are flushed as
they are scored, into a temporary file renamed at the end) and ``DIR/<stem>_events.json`` (threshold,
events, mode). ``--unsupervised`` needs no model: normality is learnt from the first ``--fit-seconds`` of the video's
timestamps (default ``anomaly.fit_s``, the same rule as ``process`` and ``monitor``), those seconds are
not scored, and the outputs say ``"mode": "unsupervised-online-<N>s"``; a shorter video is not scored
and the events JSON says why.

Examples::

    vidseq score clip.avi --model runs/ped2/best.pt --out scores/
    vidseq score clip.avi --unsupervised --fit-seconds 20 --out scores/
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vidseq.errors import ConfigError

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "score", help="per-frame anomaly scores + events of a video",
        description="Score every frame of a video with a trained anomaly model (or --unsupervised) and write "
                    "a per-frame CSV and an events JSON.",
        epilog="examples:\n  vidseq score clip.avi --model runs/ped2/best.pt --out scores/\n"
               "  vidseq score clip.avi --unsupervised --fit-seconds 20",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("video", help="video file, image folder, webcam index or stream URL (unsupervised: files only)")
    p.add_argument("--model", type=Path, default=None, metavar="CKPT", help="checkpoint from `vidseq train anomaly`")
    p.add_argument("--out", type=Path, default=Path("."), metavar="DIR", help="output folder (default: .)")
    p.add_argument("--unsupervised", action="store_true",
                   help="no model: fit normality on this video itself (labelled as such in the outputs)")
    p.add_argument("--fit-seconds", type=float, default=None, metavar="S",
                   help="unsupervised: learn normality from the first S seconds of video time (default: "
                        "anomaly.fit_s, as in process and monitor)")
    p.add_argument("--false-alarms-per-hour", type=float, default=None, metavar="N",
                   help="unsupervised: false-alarm budget that sets the threshold (default 1)")
    p.add_argument("--config", type=Path, default=None, metavar="YAML",
                   help="unsupervised: task config whose 'model' section is used (default: the model process "
                        "uses without a checkpoint)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--device", default="cpu", help="backbone device for the frame stream (default cpu)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vidseq.io import atomic_open, atomic_write_json
    from vidseq.tasks.anomaly.scoring import (
        ScoreRow,
        VideoScores,
        score_video,
        score_video_unsupervised,
    )

    if args.unsupervised == (args.model is not None):
        raise ConfigError("give either --model CKPT or --unsupervised")
    for flag, value in (("--fit-seconds", args.fit_seconds), ("--false-alarms-per-hour", args.false_alarms_per_hour)):
        if value is not None and (not args.unsupervised or not value > 0):
            raise ConfigError(f"{flag} needs --unsupervised and a positive value")
    stem = Path(str(args.video)).stem or "source"
    csv_path = args.out / f"{stem}_scores.csv"
    json_path = args.out / f"{stem}_events.json"
    result: VideoScores
    with atomic_open(csv_path, "w", encoding="utf-8", newline="") as fh:
        fh.write("frame_index,timestamp_s,score,is_anomaly\n")
        count = 0

        def on_row(r: ScoreRow) -> None:
            nonlocal count
            fh.write(f"{r.frame_index},{r.timestamp_s:.4f},{r.score:.6f},{int(r.is_anomaly)}\n")
            count += 1
            if count % 100 == 0:
                fh.flush()

        if args.unsupervised:
            from vidseq.config import load_config
            from vidseq.tasks.anomaly.config import AnomalyTaskConfig
            from vidseq.tasks.anomaly.online import NormalitySettings

            cfg = load_config(AnomalyTaskConfig, args.config).model if args.config is not None else None
            settings = NormalitySettings(**({} if args.false_alarms_per_hour is None
                                            else {"false_alarms_per_hour": args.false_alarms_per_hour}))
            result = score_video_unsupervised(args.video, cfg, fit_seconds=args.fit_seconds, on_row=on_row,
                                              max_frames=args.max_frames, settings=settings)
        else:
            from vidseq.tasks.anomaly.task import load_anomaly_model

            model, cal, _ = load_anomaly_model(args.model)
            result = score_video(args.video, model, cal, on_row=on_row, max_frames=args.max_frames,
                                 device=args.device)
    doc = result.events_dict()
    if args.model is not None:
        doc["model"] = str(args.model)
    atomic_write_json(json_path, doc)
    flagged = sum(r.is_anomaly for r in result.rows)
    label = "UNSUPERVISED " if result.mode != "trained" else ""
    thr = "none" if result.calibration is None else f"{result.calibration.threshold:.4g}"
    print(f"{label}mode={result.mode} frames={len(result.rows)} flagged={flagged} events={len(result.events)} "
          f"threshold={thr}")
    if result.info.get("not_scored"):
        print(f"note: {result.info['not_scored']}")
    print(f"wrote {csv_path} and {json_path}")
    return 0
