"""``vidseq <command>``: one entry point; each command lives in its own module of this package.

A command module exposes ``register(subparsers) -> argparse.ArgumentParser`` and sets
``parser.set_defaults(func=handler)``; ``handler(args) -> int``. Command modules only parse,
load config and call the library. Library errors (:class:`vidseq.errors.VidseqError`) print as one
line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from vidseq import __version__
from vidseq.errors import VidseqError
from vidseq.registry import Registry

# command name -> module whose ``register(subparsers)`` adds it
COMMANDS: Registry[ModuleType] = Registry("command", {
    "extract": "vidseq.cli.extract",
    "data": "vidseq.cli.data",
    "tune": "vidseq.cli.tune",
    "train": "vidseq.cli.train",
    "eval": "vidseq.cli.evaluate",
    "score": "vidseq.cli.score",
    "caption": "vidseq.cli.caption",
    "process": "vidseq.cli.process",
    "monitor": "vidseq.cli.monitor",
    "feedback": "vidseq.cli.feedback",
})


DESCRIPTION = """\
vidseq: detect, track, forecast, score and caption people and objects in video.

Start with `vidseq process VIDEO --out runs/` (every output for a video file or image folder) or
`vidseq monitor --source 0|rtsp://...|FILE` (live alerts). `vidseq COMMAND --help` lists each command's
options; every command with a config takes `--config FILE` and `--set section.key=value`."""

EPILOG = """\
examples:
  vidseq process clip.mp4 --out runs/ --max-frames 300
  vidseq monitor --source rtsp://127.0.0.1:8554/cam --duration 600 --out runs/cam
  vidseq score clip.avi --unsupervised --fit-seconds 20 --out scores/
failure behaviour (locks, interrupted and failed runs): docs/failures.md"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidseq", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vidseq {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS.names():
        COMMANDS.load(name).register(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("ultralytics", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = list(sub_action.choices)
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is not None and first not in commands:
        print(f"vidseq: error: {COMMANDS.unknown(first)}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except VidseqError as exc:
        print(f"vidseq {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"vidseq {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `vidseq eval ... | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        from vidseq.io import is_output_oserror

        if not is_output_oserror(exc):  # anything else is a bug: keep the traceback
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"vidseq {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
