"""``vidseq score VIDEO --model CKPT [--out DIR]``: per-frame anomaly scores and events of one video.

Writes ``DIR/<stem>_scores.csv`` (``frame_index,timestamp_s,score,is_anomaly``; rows are flushed as
they are scored, into a temporary file renamed at the end) and ``DIR/<stem>_events.json`` (threshold,
events, mode). ``--unsupervised`` needs no model: normality is fitted on the video itself (the first
``--fit-seconds``, or the whole file) and the outputs say ``"mode": "unsupervised-..."``.

Examples::

    vidseq score clip.avi --model runs/ped2/best.pt --out scores/
    vidseq score clip.avi --unsupervised --fit-seconds 20 --out scores/
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

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
                   help="unsupervised: fit on the first S seconds (default: the whole video)")
    p.add_argument("--config", type=Path, default=None, metavar="YAML",
                   help="unsupervised: task config whose 'model' section is used (default configs/anomaly.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="unsupervised: override a key of that config (repeatable), e.g. "
                        "--set model.smooth_sigma_s=0.5 (a trained model's settings come from its checkpoint)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--device", default="cpu", help="backbone device for the frame stream (default cpu)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vidseq.cli.common import check_single_source, prepare_output_dir
    from vidseq.io import OutputLock, remove_if_empty
    from vidseq.video.sources import source_kind

    if args.unsupervised == (args.model is not None):
        raise ConfigError("give either --model CKPT or --unsupervised")
    if args.fit_seconds is not None and (not args.unsupervised or args.fit_seconds <= 0):
        raise ConfigError("--fit-seconds needs --unsupervised and a positive value")
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.overrides and not args.unsupervised:
        raise ConfigError("--set applies to --unsupervised; a trained model's settings come from its checkpoint")
    cfg = None
    if args.unsupervised:  # every setting is checked before any work or any file
        from vidseq.cli.common import resolve_config
        from vidseq.tasks.anomaly.config import AnomalyTaskConfig

        cfg = resolve_config(AnomalyTaskConfig, "anomaly", args, {}).model
    if source_kind(str(args.video)) in ("file", "folder"):
        check_single_source([str(args.video)])
    created = prepare_output_dir(args.out)  # an unwritable folder fails now, not after the scoring
    stem = Path(str(args.video)).stem or "source"
    csv_path = args.out / f"{stem}_scores.csv"
    json_path = args.out / f"{stem}_events.json"
    try:
        with OutputLock(csv_path):
            return _score(args, cfg, csv_path, json_path)
    finally:
        if created:
            remove_if_empty(args.out)


def _score(args: argparse.Namespace, cfg: Any, csv_path: Path, json_path: Path) -> int:
    from vidseq.io import atomic_open, atomic_write_json
    from vidseq.tasks.anomaly.scoring import (
        ScoreRow,
        VideoScores,
        score_video,
        score_video_unsupervised,
    )

    result: VideoScores
    if not args.unsupervised:  # a bad checkpoint fails before the output file is opened
        from vidseq.tasks.anomaly.task import load_anomaly_model

        model, cal, _ = load_anomaly_model(args.model)
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
            result = score_video_unsupervised(args.video, cfg, fit_seconds=args.fit_seconds, on_row=on_row,
                                              max_frames=args.max_frames)
        else:
            result = score_video(args.video, model, cal, on_row=on_row, max_frames=args.max_frames,
                                 device=args.device)
    doc = result.events_dict()
    if args.model is not None:
        doc["model"] = str(args.model)
    atomic_write_json(json_path, doc)
    flagged = sum(r.is_anomaly for r in result.rows)
    label = "UNSUPERVISED " if result.mode != "trained" else ""
    print(f"{label}mode={result.mode} frames={len(result.rows)} flagged={flagged} events={len(result.events)} "
          f"threshold={result.calibration.threshold:.4g}")
    print(f"wrote {csv_path} and {json_path}")
    return 0
