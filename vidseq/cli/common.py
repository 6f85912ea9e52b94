"""Argument helpers shared by command modules: config file + overrides, output paths."""

from __future__ import annotations

import argparse
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

from vidseq.config import default_config_path, load_config, parse_override

T = TypeVar("T")


def add_config_args(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help=f"YAML config (default: configs/{name}.yaml when present)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable), e.g. --set batch_size=32")


def resolve_config(cls: type[T], name: str, args: argparse.Namespace, flags: dict[str, Any]) -> T:
    """File (``--config`` or ``configs/<name>.yaml``) < explicit flags (unset ones are ignored) < ``--set``."""
    path = args.config if args.config is not None else default_config_path(name)
    overrides = {k: v for k, v in flags.items() if v is not None}
    overrides.update(dict(parse_override(o) for o in getattr(args, "overrides", []) or []))
    return load_config(cls, path, overrides)


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")


def expand_sources(specs: list[str]) -> list[str]:
    """Expand globs and folders of videos; an image folder stays one source; URLs/camera indexes pass."""
    import glob

    from vidseq.errors import SourceNotFoundError
    from vidseq.video.sources import list_images, source_kind

    out: list[str] = []
    for spec in specs:
        if source_kind(spec) in ("camera", "stream"):
            out.append(spec)
            continue
        if any(ch in spec for ch in "*?[") and not Path(spec).exists():
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise SourceNotFoundError(f"no files match {spec}")
            out.extend(matches)
            continue
        p = Path(spec)
        if p.is_dir() and not list_images(p):
            videos = sorted(str(v) for v in p.iterdir() if v.suffix.lower() in VIDEO_SUFFIXES)
            if not videos:
                raise SourceNotFoundError(f"folder has no videos or images: {p}")
            out.extend(videos)
        else:
            out.append(spec)
    return out


def unique_stems(sources: list[str]) -> dict[str, str]:
    """source -> output stem; stems that collide get their parent folder's name prefixed."""
    stems = {s: Path(s).stem or "source" for s in sources}
    counts: dict[str, int] = {}
    for st in stems.values():
        counts[st] = counts.get(st, 0) + 1
    return {s: (f"{Path(s).parent.name}_{st}" if counts[st] > 1 else st) for s, st in stems.items()}


def check_single_source(sources: list[str]) -> None:
    """With one source, fail on a bad one before loading a model or writing anything."""
    if len(sources) == 1:
        from vidseq.video.sources import open_source

        with open_source(sources[0]):
            pass


def for_each_source(command: str, sources: list[str], run_one: Callable[[str], None]) -> int:
    """Run ``run_one`` per source. One source: its error propagates (the CLI prints one line);
    several: each failure is reported and the rest still run; exit 2 if any failed."""
    import sys

    from vidseq.errors import VidseqError

    failed = 0
    for spec in sources:
        try:
            run_one(spec)
        except VidseqError as exc:
            if len(sources) == 1:
                raise
            print(f"vidseq {command}: error: {exc}", file=sys.stderr)
            failed += 1
    if failed:
        print(f"vidseq {command}: {failed} of {len(sources)} sources failed", file=sys.stderr)
        return 2
    return 0


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    """``--runtime`` / ``--precision`` (every network of the command; see vidseq.features.runtime)."""
    parser.add_argument("--runtime", choices=("auto", "torch", "openvino"), default=None,
                        help="auto = OpenVINO on CPU when installed, PyTorch on CUDA/MPS")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"), default=None,
                        help="auto = bf16 on a CPU with native bf16 (OpenVINO), else fp32; int8 = OpenVINO "
                             "post-training quantisation calibrated on frames of your own video (needs nncf)")
