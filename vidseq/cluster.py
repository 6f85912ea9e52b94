"""Many videos on a Ray cluster: one video per work unit, fault-tolerant, same files as one machine.

``vidseq process|extract SOURCES... --ray [auto|ADDRESS]`` hands the per-video job of the command
(:mod:`vidseq.jobs`, the very object the serial loop calls) to Ray actors:

* each worker is an actor that checks it can write to ``--out``, loads what the job shares between
  videos once (:meth:`VideoJob.setup`) and then takes videos from the driver until none are left;
  a video is a stateful stream (tracker, LSTM state), so it never leaves the worker it started on;
* a worker that dies (killed, OOM, node lost) is replaced and its video retried on the new worker,
  up to ``max_retries`` times; a bad video (corrupt, unreadable) fails once, is reported and the
  other videos finish;
* ``OUT/run_summary.json`` (written atomically after every video) lists done, skipped-complete and
  failed videos with reasons and attempts; ``OUT/run_logs/<stem>.log`` holds each video's worker log;
* re-running skips complete videos, because the jobs do (same content and settings).

``auto`` starts a local Ray instance sized to this machine; an address (``ray://host:10001``,
``host:6379``) joins a running cluster. Outputs are written by the workers to ``--out`` as *they*
see it: every node needs the same path on shared storage (NFS, a mounted bucket), and a worker that
cannot write there stops the run at once with a clear message (see ``docs/cluster.md``).

Ray is imported only by :func:`run_on_ray`; without ``--ray`` nothing here touches it.

Fault drill (documented test hook): ``VIDSEQ_RAY_CHAOS_KILL=stem[,stem...]`` in the driver's
environment makes the worker that takes one of those videos for the *first* time SIGKILL its own
process as soon as the video's first output file appears, i.e. mid-video. The retry must then
complete it; the tests and ``docs/cluster.md`` use this to show the recovery path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import signal
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidseq.errors import VidseqError
from vidseq.io import atomic_write_json, atomic_write_text
from vidseq.jobs import VideoJob, VideoResult

log = logging.getLogger(__name__)

CHAOS_ENV = "VIDSEQ_RAY_CHAOS_KILL"
LOG_DIR = "run_logs"
SUMMARY_NAME = "run_summary.json"


class ClusterError(VidseqError):
    """Ray is missing, the cluster cannot be reached, or workers cannot write the outputs."""


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray.

    Attributes:
        address: ``"auto"`` = start a local instance sized to this machine; otherwise a cluster address.
        workers: number of actors (default: cluster CPUs // ``cpus_per_worker``, at most one per video).
        cpus_per_worker: CPUs reserved per actor (Ray also sets the actor's OMP/torch threads to it).
        gpus_per_worker: GPUs per actor (0 on CPU clusters; a fraction lets actors share a GPU).
        max_retries: how often a video whose worker died is tried again on a new worker.
        object_store_memory: bytes for a local instance's object store (the jobs pass paths, not frames).
    """

    address: str = "auto"
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_retries: int = 2
    object_store_memory: int = 200 * 1024**2


@dataclass
class RunSummary:
    """What a run did; :meth:`as_dict` is ``run_summary.json``."""

    command: str
    out: str
    total: int
    address: str = ""
    workers: int = 0
    done: list[dict[str, Any]] = field(default_factory=list)
    skipped_complete: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    worker_deaths: int = 0
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    startup_s: float = 0.0
    elapsed_s: float = 0.0
    status: str = "running"

    @property
    def finished(self) -> int:
        return len(self.done) + len(self.skipped_complete) + len(self.failed)

    @property
    def frames(self) -> int:
        return sum(int(d.get("frames", 0)) for d in self.done)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "command": self.command, "out": self.out, "address": self.address,
            "workers": self.workers, "total": self.total, "counts": {
                "done": len(self.done), "skipped_complete": len(self.skipped_complete),
                "failed": len(self.failed), "worker_deaths": self.worker_deaths},
            "frames": self.frames, "startup_s": round(self.startup_s, 2), "elapsed_s": round(self.elapsed_s, 2),
            "frames_per_s": round(self.frames / self.elapsed_s, 2) if self.elapsed_s > 0 else None,
            "started": self.started, "done": self.done, "skipped_complete": self.skipped_complete,
            "failed": self.failed,
        }


def check_output_writable(out: str | Path) -> None:
    """Create and remove a probe file in ``out``; raise :class:`ClusterError` naming this host if that fails."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".vidseq-write-probe.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ClusterError(f"worker on {socket.gethostname()} cannot write to {out} ({exc.strerror or exc}); "
                           "--out must be the same writable path on every node (shared storage)") from None


class VideoWorker:
    """The body of a Ray actor: one per worker process, takes one video at a time.

    Kept a plain class (made remote in :func:`run_on_ray`) so it can be used and tested without Ray.
    """

    def __init__(self, job: VideoJob, out: str, chaos_stems: frozenset[str] = frozenset()) -> None:
        self.job = job
        self.out = out
        self.chaos_stems = chaos_stems

    def start(self) -> dict[str, Any]:
        """Check ``out`` is writable from here and load the job's shared models; returns where we run."""
        check_output_writable(self.out)
        self.job.setup()
        return {"host": socket.gethostname(), "pid": os.getpid()}

    def run(self, source: str, stem: str, attempt: int) -> dict[str, Any]:
        """Process one video; never raises for a bad video (the failure is returned with its log)."""
        buf = io.StringIO()
        handler = logging.StreamHandler(buf)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("vidseq")  # this package's records only; Ray's own logs stay Ray's
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        where = f"{socket.gethostname()} pid {os.getpid()}"
        log.info("%s: attempt %d on %s", source, attempt, where)
        if attempt == 1 and stem in self.chaos_stems:
            self._kill_when_started(stem)
        cpu0 = time.process_time()
        try:
            res = self.job.run(source, stem)
            return {"ok": True, "result": res.as_dict(), "log": buf.getvalue(), "worker": where,
                    "cpu_s": round(time.process_time() - cpu0, 3)}
        except VidseqError as exc:
            log.error("%s: %s", source, exc)
            return {"ok": False, "reason": str(exc), "log": buf.getvalue(), "worker": where}
        except Exception as exc:  # a bug, not the video: keep the traceback in the log, report the rest
            log.exception("%s failed", source)
            return {"ok": False, "reason": f"{type(exc).__name__}: {exc}", "log": buf.getvalue(), "worker": where}
        finally:
            root.removeHandler(handler)

    def _kill_when_started(self, stem: str) -> None:
        """Fault drill (see module docstring): SIGKILL this process once the video's output appears."""
        target = self.job.output_path(stem)

        def started() -> bool:  # `process` writes into a hidden staging folder renamed into place at the end
            if target.suffix:
                return target.parent.exists()
            return (target / "frames.csv").exists() or any(target.parent.glob(f".{target.name}.partial.*/frames.csv"))

        def watch() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not started():
                time.sleep(0.005)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs Ray: pip install 'vidseq[ray]'") from None
    return ray


def _connect(ray: Any, opts: RayOptions) -> bool:
    """Start or join Ray; returns whether this call started it (and must shut it down).

    A process that already runs Ray (``ray.init`` done, e.g. a notebook or a test) keeps using it.
    """
    if opts.address != "auto":
        _check_reachable(opts.address)
    if ray.is_initialized():
        return False
    env = {k: v for k, v in os.environ.items() if k.startswith("VIDSEQ_")}
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "runtime_env": {"env_vars": env} if env else None}
    try:
        if opts.address == "auto":
            ray.init(address="local", num_cpus=os.cpu_count() or 1,
                     object_store_memory=opts.object_store_memory, **kwargs)
        else:
            kwargs.pop("include_dashboard")
            ray.init(address=opts.address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = _first_line(exc)
        raise ClusterError(f"cannot {'start' if opts.address == 'auto' else 'join'} Ray "
                           f"({opts.address}): {first}") from None
    return True


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after Ray's minute of retries, when nothing listens at ``[ray://]HOST:PORT``."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterError(f"--ray {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach Ray at {address} ({exc.strerror or exc}); start it with "
                           "`ray start --head` or give its address") from None


def _worker_count(ray: Any, opts: RayOptions, n_sources: int) -> int:
    if opts.workers is not None:
        if opts.workers < 1:
            raise ClusterError(f"--ray-workers must be >= 1, got {opts.workers}")
        return min(opts.workers, n_sources)
    cpus = float(ray.cluster_resources().get("CPU", 1))
    return max(1, min(n_sources, int(cpus // max(opts.cpus_per_worker, 1e-9))))


def run_on_ray(job: VideoJob, sources: list[str], stems: dict[str, str], out: Path, opts: RayOptions, *,
               report: Callable[[str], None] = print, progress: Callable[[str], None] | None = None) -> RunSummary:
    """Run ``job`` over ``sources`` on Ray actors; writes ``out/run_summary.json`` and ``out/run_logs/``.

    Args:
        job: the command's per-video job (its :meth:`run` is what the serial loop calls).
        sources: expanded sources; ``stems`` maps each to its output name (:func:`unique_stems`).
        out: output folder, the same path on every node.
        opts: Ray options.
        report: receives the per-video line the serial command prints (and error lines).
        progress: receives ``[done/total] ... frames/s`` lines (default: log at INFO).

    Returns:
        The :class:`RunSummary`; ``summary.failed`` non-empty means the command should exit non-zero.

    Raises:
        ClusterError: Ray missing, unreachable, or a worker cannot write ``out``.
    """
    ray = _import_ray()
    # workers on other nodes have their own working directory: hand them absolute paths
    out = Path(out).resolve()
    job = dataclasses.replace(job, out=out)  # type: ignore[type-var]
    stems = {_absolute(s): stem for s, stem in stems.items()}
    sources = [_absolute(s) for s in sources]
    progress = progress or (lambda line: log.info("%s", line))
    chaos = frozenset(s.strip() for s in os.environ.get(CHAOS_ENV, "").split(",") if s.strip())
    t0 = time.perf_counter()
    started_here = _connect(ray, opts)
    summary = RunSummary(command=job.command, out=str(out), total=len(sources), address=opts.address)
    summary_path = out / SUMMARY_NAME
    logs: dict[str, list[str]] = {s: [] for s in sources}
    actor_cls = ray.remote(num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker,
                           max_restarts=0, max_task_retries=0)(VideoWorker)
    actors: list[Any] = []  # every actor started, killed at the end
    idle: deque[Any] = deque()
    running: dict[Any, tuple[Any, str, int]] = {}  # object ref -> (actor, source, attempt)
    queue: deque[tuple[str, int]] = deque((s, 1) for s in sources)

    def new_actor() -> Any:
        actor = actor_cls.remote(job, str(out), chaos)
        actors.append(actor)
        try:
            info = ray.get(actor.start.remote())
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, VidseqError):
                raise ClusterError(str(cause)) from None
            raise ClusterError(f"a worker failed to start: {type(cause).__name__}: {cause}") from None
        except ray.exceptions.RayActorError as exc:
            raise ClusterError(f"a worker died while starting: {_first_line(exc)}") from None
        log.info("worker ready on %s pid %s", info["host"], info["pid"])
        return actor

    def finish_video(src: str) -> None:
        summary.elapsed_s = time.perf_counter() - t0
        atomic_write_json(summary_path, summary.as_dict())
        atomic_write_text(out / LOG_DIR / f"{stems[src]}.log", "".join(logs[src]))
        rate = summary.frames / max(summary.elapsed_s, 1e-9)
        progress(f"[{summary.finished}/{summary.total}] done={len(summary.done)} "
                 f"skipped={len(summary.skipped_complete)} failed={len(summary.failed)} "
                 f"{rate:.1f} frames/s overall ({summary.elapsed_s:.1f} s)")

    try:
        summary.workers = _worker_count(ray, opts, len(sources))
        idle.extend(new_actor() for _ in range(summary.workers))
        summary.startup_s = time.perf_counter() - t0
        progress(f"{summary.workers} Ray worker(s) ready in {summary.startup_s:.1f} s for {len(sources)} video(s)")
        t0 = time.perf_counter()  # frames/s counts processing, not Ray and worker start-up
        while queue or running:
            while queue and idle:
                src, attempt = queue.popleft()
                actor = idle.popleft()
                running[actor.run.remote(src, stems[src], attempt)] = (actor, src, attempt)
            ready, _ = ray.wait(list(running), num_returns=1)
            actor, src, attempt = running.pop(ready[0])
            try:
                res = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:
                # the worker process is gone (killed, OOM, node lost): a fresh worker retries the video
                summary.worker_deaths += 1
                why = _first_line(exc)
                logs[src].append(f"--- attempt {attempt}: worker died: {why}\n")
                with contextlib.suppress(Exception):
                    ray.kill(actor)
                retry = attempt <= opts.max_retries
                if retry or queue:
                    idle.append(new_actor())
                if retry:
                    log.warning("%s: worker died on attempt %d; retrying on a new worker", src, attempt)
                    queue.append((src, attempt + 1))
                    continue
                summary.failed.append({"source": src, "stem": stems[src], "attempts": attempt,
                                       "reason": f"worker died on each of {attempt} attempt(s): {why}"})
                report(f"vidseq {job.command}: error: {src}: worker died on each of {attempt} attempt(s)")
                finish_video(src)
                continue
            idle.append(actor)
            logs[src].append(f"--- attempt {attempt} on {res['worker']}\n{res['log']}")
            if res["ok"]:
                r = VideoResult(**res["result"])
                entry = {"source": src, "stem": stems[src], "output": r.output, "frames": r.frames,
                         "seconds": r.seconds, "cpu_s": res["cpu_s"], "attempts": attempt, "worker": res["worker"]}
                (summary.done if r.status == "complete" else summary.skipped_complete).append(entry)
                report(r.line)
                for note in r.notes:
                    report(f"  note: {note}")
            else:
                summary.failed.append({"source": src, "stem": stems[src], "attempts": attempt,
                                       "reason": res["reason"], "worker": res["worker"]})
                report(f"vidseq {job.command}: error: {src}: {res['reason']}")
            finish_video(src)
        summary.status = "failed" if summary.failed else "complete"
        summary.elapsed_s = time.perf_counter() - t0
        atomic_write_json(summary_path, summary.as_dict())
        return summary
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if started_here:
            ray.shutdown()


def _absolute(spec: str) -> str:
    """An existing local path as an absolute path; URLs, camera indexes and missing paths unchanged."""
    return str(Path(spec).resolve()) if "://" not in spec and Path(spec).exists() else spec


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
