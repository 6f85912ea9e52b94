"""``vidseq score VIDEO... --model CKPT [--out DIR]``: per-frame anomaly scores and events of videos.

Per video, writes ``DIR/<stem>_scores.csv`` (``frame_index,timestamp_s,score,is_anomaly``; rows are flushed as
they are scored, into a temporary file renamed at the end) and ``DIR/<stem>_events.json`` (threshold,
events, mode). ``--unsupervised`` needs no model: normality is learnt from the first ``--fit-seconds`` of the video's
timestamps (default ``anomaly.fit_s``, the same rule as ``process`` and ``monitor``), those seconds are
not scored, and the outputs say ``"mode": "unsupervised-online-<N>s"``; a shorter video is not scored
and the events JSON says why.
A video already scored with the same content and settings is skipped (``--force`` redoes it);
``--ray`` spreads the videos over Ray workers (docs/cluster.md).

Examples::

    vidseq score clip.avi --model runs/ped2/best.pt --out scores/
    vidseq score clip.avi --unsupervised --fit-seconds 20 --out scores/
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vidseq.cli.common import add_ray_args, expand_sources, run_jobs, unique_stems
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
    p.add_argument("sources", nargs="+", metavar="VIDEO",
                   help="video files, image folders, folders of videos, globs, webcam index or stream URL "
                        "(unsupervised: files only)")
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
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="unsupervised: override a key of that config (repeatable), e.g. "
                        "--set model.smooth_sigma_s=0.5 (a trained model's settings come from its checkpoint)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--device", default="cpu", help="backbone device for the frame stream (default cpu)")
    p.add_argument("--force", action="store_true", help="re-score videos already scored with the same settings")
    p.add_argument("--no-progress", action="store_true", help="no progress lines (with --ray)")
    add_ray_args(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from vidseq.cli.common import check_single_source, prepare_output_dir
    from vidseq.io import remove_if_empty
    from vidseq.jobs import ScoreJob
    from vidseq.video.sources import source_kind

    if args.unsupervised == (args.model is not None):
        raise ConfigError("give either --model CKPT or --unsupervised")
    for flag, value in (("--fit-seconds", args.fit_seconds), ("--false-alarms-per-hour", args.false_alarms_per_hour)):
        if value is not None and (not args.unsupervised or not value > 0):
            raise ConfigError(f"{flag} needs --unsupervised and a positive value")
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.overrides and not args.unsupervised:
        raise ConfigError("--set applies to --unsupervised; a trained model's settings come from its checkpoint")
    unsupervised, settings = None, None
    if args.unsupervised:  # every setting is checked before any work or any file
        from vidseq.tasks.anomaly.online import NormalitySettings

        if args.config is not None or args.overrides:
            from vidseq.cli.common import resolve_config
            from vidseq.tasks.anomaly.config import AnomalyTaskConfig

            unsupervised = resolve_config(AnomalyTaskConfig, "anomaly", args, {}).model
        settings = NormalitySettings(**({} if args.false_alarms_per_hour is None
                                        else {"false_alarms_per_hour": args.false_alarms_per_hour}))
    sources = expand_sources(args.sources)
    files = [s for s in sources if source_kind(s) in ("file", "folder")]
    if files:
        check_single_source(files)
    job = ScoreJob(args.out, model=args.model, unsupervised=unsupervised, fit_seconds=args.fit_seconds,
                   max_frames=args.max_frames, device=args.device, force=args.force, settings=settings)
    created = prepare_output_dir(args.out)  # an unwritable folder fails now, not after the scoring
    try:
        return run_jobs(job, sources, unique_stems(sources), args.out, args)
    finally:
        if created:
            remove_if_empty(args.out)
