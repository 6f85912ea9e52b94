"""Argument helpers shared by command modules: config file + overrides, output paths."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vidseq.config import default_config_path, load_config, parse_override

if TYPE_CHECKING:
    from vidseq.jobs import VideoJob

T = TypeVar("T")


# a key that exists in each command's config, for the --set help example
SET_EXAMPLES = {"process": "tracker.conf=0.4", "monitor": "alerts.cooldown_s=30", "extract": "batch_size=32",
                "anomaly": "model.smooth_sigma_s=0.5", "trajectory": "train.epochs=5", "caption": "train.epochs=5",
                "synth": "clips=4"}


def add_config_args(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help=f"YAML config (default: configs/{name}.yaml when present)")
    example = SET_EXAMPLES.get(name, "KEY=VALUE")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config key with its full dotted name (repeatable), e.g. --set {example}")


def prepare_output_dir(path: Path) -> bool:
    """Create ``path`` if needed and check it is writable before any work starts (one-line error, exit 2).
    Returns True if it was created (see :func:`vidseq.io.remove_if_empty`)."""
    from vidseq.io import ensure_writable_dir

    return ensure_writable_dir(path)


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


def add_ray_args(parser: argparse.ArgumentParser) -> None:
    """``--ray [auto|ADDRESS]`` and its knobs (see docs/cluster.md)."""
    g = parser.add_argument_group("cluster (Ray; pip install 'vidseq[ray]')")
    g.add_argument("--ray", nargs="?", const="auto", default=None, metavar="auto|ADDRESS",
                   help="one video per Ray worker: 'auto' starts a local Ray sized to this machine, ADDRESS "
                        "joins a cluster (e.g. ray://head:10001); --out must be shared storage on every node")
    g.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="worker actors (default: cluster CPUs / --ray-cpus, at most one per video)")
    g.add_argument("--ray-cpus", type=float, default=1.0, metavar="C", help="CPUs per worker (default 1)")
    g.add_argument("--ray-gpus", type=float, default=0.0, metavar="G", help="GPUs per worker (default 0)")
    g.add_argument("--ray-retries", type=int, default=2, metavar="N",
                   help="retries of a video whose worker died (default 2)")


def run_jobs(job: VideoJob, sources: list[str], stems: dict[str, str], out: Path,
             args: argparse.Namespace) -> int:
    """Run ``job`` on every source: serially here, or on Ray actors with ``--ray`` (Ray is imported only then).

    Both paths call the same ``job.run``; exit code 2 when any source failed.
    """
    import sys

    if getattr(args, "ray", None) is None:
        job.setup()

        def run_one(spec: str) -> None:
            res = job.run(spec, stems[spec])
            print(res.line)
            for note in res.notes:
                print(f"  note: {note}", file=sys.stderr)

        return for_each_source(job.command, sources, run_one)

    from vidseq.cluster import RayOptions, run_on_ray

    if args.ray_retries < 0:
        from vidseq.errors import ConfigError

        raise ConfigError(f"--ray-retries must be >= 0, got {args.ray_retries}")
    opts = RayOptions(address=args.ray, workers=args.ray_workers, cpus_per_worker=args.ray_cpus,
                      gpus_per_worker=args.ray_gpus, max_retries=args.ray_retries)
    show = not getattr(args, "no_progress", False)
    summary = run_on_ray(job, sources, stems, out, opts,
                         report=lambda line: print(line, file=sys.stderr if line.startswith("vidseq ") else
                                                   sys.stdout, flush=True),
                         progress=(lambda line: print(line, file=sys.stderr, flush=True)) if show else None)
    if summary.failed:
        print(f"vidseq {job.command}: {len(summary.failed)} of {summary.total} sources failed "
              f"(see {out / 'run_summary.json'})", file=sys.stderr)
        return 2
    return 0


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    """``--runtime`` / ``--precision`` (every network of the command; see vidseq.features.runtime)."""
    parser.add_argument("--runtime", choices=("auto", "torch", "openvino"), default=None,
                        help="auto = OpenVINO on CPU when installed, PyTorch on CUDA/MPS")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"), default=None,
                        help="auto = bf16 on a CPU with native bf16 (OpenVINO), else fp32; int8 = OpenVINO "
                             "post-training quantisation calibrated on frames of your own video (needs nncf)")
