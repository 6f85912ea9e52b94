"""Inference runtimes for every network: eager PyTorch or OpenVINO (CPU), with a cache of exported models.

``runtime``: ``auto`` (OpenVINO on CPU when the ``openvino`` package imports, PyTorch on CUDA/MPS), ``torch`` or
``openvino``. ``precision``: ``auto`` (bf16 when the CPU has native bf16 — AVX-512 BF16 / AMX — else fp32),
``fp32``, ``bf16`` or ``int8`` (OpenVINO only; post-training quantisation with ``nncf`` on frames of the user's
own video, opt-in).

Exports are cached under :func:`export_cache_dir` (``$VIDSEQ_CACHE_DIR/openvino`` or
``~/.cache/vidseq/openvino``, never inside the repository), one folder per network name / input shape / IR
precision holding ``model.xml``, ``model.bin`` and ``manifest.json``. The manifest holds the full key (weights
sha256, input shape, IR precision, library versions, export settings); a folder whose manifest does not match
is stale and is rebuilt. Folders are written under a temporary name and renamed into place, so a crash never
leaves an export that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vidseq.errors import BackboneError, InputShapeError

log = logging.getLogger(__name__)

Runtime = Literal["auto", "torch", "openvino"]
Precision = Literal["auto", "fp32", "bf16", "int8"]
RUNTIMES: tuple[str, ...] = ("auto", "torch", "openvino")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "int8")
EXPORT_FORMAT_VERSION = 1
MANIFEST = "manifest.json"

# OpenVINO's CPU plugin precision hint for each compile precision (int8 IRs keep their float layers in bf16
# where the CPU has it).
_OV_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "bf16"}


_SCOPE: ContextVar[tuple[str, str] | None] = ContextVar("vidseq_runtime_scope", default=None)


@contextmanager
def runtime_scope(runtime: str, precision: str) -> Iterator[None]:
    """Networks built inside (by code that does not name a runtime, e.g. a head's feature backbone) use
    ``runtime``/``precision``: how ``vidseq process --runtime torch`` reaches every network it runs."""
    token = _SCOPE.set((runtime, precision))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def default_runtime() -> tuple[str, str]:
    """The ``(runtime, precision)`` used when a caller names none: the innermost :func:`runtime_scope`, else
    the environment (``VIDSEQ_RUNTIME``, ``VIDSEQ_PRECISION``), else ``("auto", "auto")``."""
    scoped = _SCOPE.get()
    if scoped is not None:
        return scoped
    return os.environ.get("VIDSEQ_RUNTIME", "auto") or "auto", os.environ.get("VIDSEQ_PRECISION", "auto") or "auto"


class RuntimeUnavailableError(BackboneError):
    """The requested runtime/precision cannot run here (package missing, device not supported)."""


@lru_cache(maxsize=1)
def openvino_version() -> str | None:
    """The installed OpenVINO version, or None when the package does not import."""
    try:
        import openvino as ov
    except Exception:  # noqa: BLE001 - a broken install is the same as none for `auto`
        return None
    return str(ov.__version__)


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively on this machine."""
    if openvino_version() is None:
        return False
    import openvino as ov

    try:
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001
        return False
    return "BF16" in caps


def resolve_runtime(runtime: str, device: torch.device) -> str:
    """``auto`` -> ``openvino`` on CPU when installed, else ``torch``; explicit choices are checked."""
    if runtime not in RUNTIMES:
        import difflib

        close = difflib.get_close_matches(runtime, RUNTIMES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise RuntimeUnavailableError(f"unknown runtime '{runtime}'{hint}; choose from {', '.join(RUNTIMES)}")
    if runtime == "auto":
        return "openvino" if device.type == "cpu" and openvino_version() is not None else "torch"
    if runtime == "openvino":
        if device.type != "cpu":
            raise RuntimeUnavailableError(f"runtime 'openvino' runs on the CPU only, but device is '{device}' "
                                          "(use --device cpu or --runtime torch)")
        if openvino_version() is None:
            raise RuntimeUnavailableError("runtime 'openvino' requested but the openvino package is not installed "
                                          "(pip install openvino)")
    return runtime


def resolve_precision(precision: str, runtime: str, *, half: bool = False) -> str:
    """The precision a network runs at: ``auto`` -> bf16 (OpenVINO on a bf16 CPU) / fp16 (torch half) / fp32."""
    if precision not in PRECISIONS:
        raise RuntimeUnavailableError(f"unknown precision '{precision}'; choose from {', '.join(PRECISIONS)}")
    if runtime == "torch":
        if precision in ("bf16", "int8"):
            raise RuntimeUnavailableError(f"precision '{precision}' needs runtime 'openvino' (torch runs fp32, or "
                                          "fp16 on CUDA)")
        return "fp16" if half else "fp32"
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    if precision == "bf16" and not cpu_has_bf16():
        log.warning("this CPU has no native bf16: OpenVINO emulates it (slow); consider --precision fp32")
    if precision == "int8":
        try:
            import nncf  # noqa: F401
        except Exception:  # noqa: BLE001
            raise RuntimeUnavailableError("precision 'int8' needs the nncf package (pip install nncf)") from None
    return precision


def export_cache_dir() -> Path:
    """Where exported networks live: ``$VIDSEQ_CACHE_DIR/openvino`` or ``~/.cache/vidseq/openvino``."""
    env = os.environ.get("VIDSEQ_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vidseq"
    return base / "openvino"


def library_versions() -> dict[str, str | None]:
    """Versions that change an export (part of the cache key)."""
    from vidseq import __version__

    out: dict[str, str | None] = {"vidseq": __version__, "torch": torch.__version__, "openvino": openvino_version()}
    try:
        import ultralytics

        out["ultralytics"] = ultralytics.__version__
    except Exception:  # noqa: BLE001
        out["ultralytics"] = None
    return out


def ir_precision(precision: str) -> str:
    """fp32 and bf16 share one fp32 IR (bf16 is a compile-time hint); int8 has its own quantised IR."""
    return "int8" if precision == "int8" else "fp32"


@dataclass(frozen=True)
class ExportKey:
    """Everything an exported network depends on; a cached export with a different key is stale."""

    name: str  # e.g. "resnet18", "yolo-yolov8s"
    weights_sha256: str | None  # None: no weights file (random init): never cached
    input_shape: tuple[int, ...]  # (B, 3, H, W); B = -1 for a dynamic batch
    ir_precision: str  # fp32 | int8
    versions: dict[str, str | None] = field(default_factory=library_versions)
    extra: dict[str, Any] = field(default_factory=dict)  # export settings, e.g. the calibration source

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weights_sha256": self.weights_sha256, "input_shape": list(self.input_shape),
                "ir_precision": self.ir_precision, "versions": self.versions, "extra": self.extra,
                "format": EXPORT_FORMAT_VERSION}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True, default=str).encode()).hexdigest()

    def folder_name(self) -> str:
        shape = "x".join("N" if s < 0 else str(s) for s in self.input_shape[2:])
        weights = (self.weights_sha256 or "random")[:8]
        return f"{self.name}-{weights}-{shape}-{self.ir_precision}"


@dataclass
class ExportRecord:
    """How a compiled network came to be (written to summary.json / feature metadata)."""

    path: str
    cache_hit: bool
    export_s: float
    compile_s: float
    precision: str
    key: dict[str, Any]
    check: dict[str, Any] | None = None  # int8: agreement with fp32 measured at export (check.json)
    threads: int | None = None  # OpenVINO inference threads

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "cache_hit": self.cache_hit, "threads": self.threads,
                "export_s": round(self.export_s, 2),
                "compile_s": round(self.compile_s, 2), "precision": self.precision, "check": self.check,
                "key_sha256": hashlib.sha256(json.dumps(self.key, sort_keys=True, default=str).encode()).hexdigest(),
                "weights_sha256": self.key.get("weights_sha256"), "input_shape": self.key.get("input_shape"),
                "versions": self.key.get("versions")}


def cached_export(key: ExportKey, export: Callable[[Path], None], cache_dir: Path | None = None) -> tuple[Path, bool,
                                                                                                         float]:
    """The folder holding ``model.xml`` for ``key``: reused when its manifest matches, else (re)built.

    ``export(folder)`` writes ``model.xml``/``model.bin`` into an empty temporary folder; the folder is then
    renamed into place with its manifest. Returns ``(folder, cache_hit, export_seconds)``.
    """
    root = cache_dir or export_cache_dir()
    final = root / key.folder_name()
    want = key.as_dict()
    if _manifest_matches(final, want):
        return final, True, 0.0
    if final.exists():
        log.info("cached export %s is stale (different weights, shape or library versions): rebuilding", final)
    root.mkdir(parents=True, exist_ok=True)
    log.warning("exporting %s to OpenVINO (input %s, %s): one time, cached in %s", key.name,
                "x".join(map(str, key.input_shape)), key.ir_precision, root)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        export(tmp)
        if not (tmp / "model.xml").is_file() or not (tmp / "model.bin").is_file():
            raise BackboneError(f"OpenVINO export of {key.name} wrote no model.xml/model.bin")
        (tmp / MANIFEST).write_text(json.dumps({**want, "files": _file_digests(tmp),
                                                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                                               indent=1, default=str))
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process renamed its export into place first; use theirs if it is the same key.
            if _manifest_matches(final, want):
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    elapsed = time.perf_counter() - t0
    log.warning("exported %s in %.1f s -> %s", key.name, elapsed, final)
    return final, False, elapsed


def _file_digests(folder: Path) -> dict[str, str]:
    from vidseq.io import sha256_file

    return {name: sha256_file(folder / name) for name in ("model.xml", "model.bin")}


def _manifest_matches(folder: Path, want: dict[str, Any]) -> bool:
    """The folder holds an export for exactly this key, with files unchanged since it was written."""
    try:
        have = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    have.pop("created", None)
    files = have.pop("files", None)
    if json.loads(json.dumps(want, default=str)) != have:
        return False
    try:
        return files == _file_digests(folder)
    except OSError:
        return False


def export_torch_module(module: torch.nn.Module, example: torch.Tensor, folder: Path, *,
                        dynamic_batch: bool = False,
                        calibration: Callable[[], Sequence[np.ndarray]] | None = None) -> None:
    """``module`` -> ``folder/model.{xml,bin}`` (fp32 weights; int8 when ``calibration`` yields inputs)."""
    import warnings

    import openvino as ov

    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)  # torch.jit.trace deprecation, used by OpenVINO
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        shape = list(example.shape)
        if dynamic_batch:
            shape[0] = -1
        model = ov.convert_model(module, example_input=example, input=[ov.PartialShape(shape)])
    if calibration is not None:
        model = quantize_int8(model, calibration())
    ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)


def quantize_int8(model: Any, samples: Sequence[np.ndarray]) -> Any:
    """Post-training INT8 quantisation with nncf on unlabeled network inputs (each ``(1, 3, H, W)`` float32)."""
    import nncf

    if not samples:
        raise BackboneError("int8 calibration needs at least one frame")
    dataset = nncf.Dataset(list(samples))
    return nncf.quantize(model, dataset, subset_size=len(samples), preset=nncf.QuantizationPreset.MIXED)


def num_threads() -> int:
    """OpenVINO's threads per network: ``$VIDSEQ_NUM_THREADS``, else PyTorch's own budget
    (``torch.get_num_threads()``: the physical cores, ``$OMP_NUM_THREADS``, or what a worker process set with
    ``torch.set_num_threads``; while :class:`SmallTorchOps` holds PyTorch at one thread, the budget it had),
    so both runtimes get the same cores and parallel workers do not oversubscribe."""
    raw = os.environ.get("VIDSEQ_NUM_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    held = SmallTorchOps.budget()
    return held if held is not None else max(1, torch.get_num_threads())


class SmallTorchOps:
    """Hold PyTorch at one intra-op thread while the networks run on OpenVINO.

    PyTorch is then left with small operations (NMS, pooling boxes, the heads' LSTM steps). At its default
    thread count, each of them wakes an OpenMP team whose threads keep spinning after it, and that spinning
    takes the CPU the OpenVINO network and the anomaly head's thread need (docs/runtime.md has the figures).
    Nested holders share one hold; the last :meth:`release` restores the thread count that the first
    :meth:`acquire` found.
    """

    _lock = threading.Lock()
    _holders = 0
    _saved = 1

    def __init__(self) -> None:
        self._held = False

    @classmethod
    def budget(cls) -> int | None:
        """The thread count PyTorch had before the hold, while one is held; else None."""
        with cls._lock:
            return cls._saved if cls._holders else None

    def acquire(self) -> None:
        cls = type(self)
        with cls._lock:
            if self._held:
                return
            if cls._holders == 0:
                cls._saved = max(1, torch.get_num_threads())
                torch.set_num_threads(1)
            cls._holders += 1
            self._held = True

    def release(self) -> None:
        cls = type(self)
        with cls._lock:
            if not self._held:
                return
            self._held = False
            cls._holders -= 1
            if cls._holders == 0:
                torch.set_num_threads(cls._saved)


@lru_cache(maxsize=1)
def _core() -> Any:
    import openvino as ov

    core = ov.Core()
    try:
        # OpenVINO's own blob cache: later compiles of the same IR skip graph compilation.
        cache = export_cache_dir() / "compiled"
        cache.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(cache)})
    except Exception as exc:  # noqa: BLE001 - an unwritable cache only costs compile time
        log.debug("OpenVINO compile cache disabled: %s", exc)
    return core


class CompiledNetwork:
    """An OpenVINO network compiled for the CPU: numpy ``(B, 3, H, W)`` float32 in, list of outputs out."""

    def __init__(self, folder: Path, precision: str, *, latency: bool = True, cache: bool = True) -> None:
        self.folder = folder
        self.precision = precision
        core = _core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _OV_HINT[precision],
                                  "PERFORMANCE_HINT": "LATENCY" if latency else "THROUGHPUT"}
        self.threads = num_threads()
        config["INFERENCE_NUM_THREADS"] = self.threads
        if not cache:
            config["CACHE_DIR"] = ""
        t0 = time.perf_counter()
        try:
            self.compiled = core.compile_model(str(folder / "model.xml"), "CPU", config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses with long texts
            raise BackboneError(f"cannot compile {folder / 'model.xml'} for the CPU: "
                                f"{str(exc).strip().splitlines()[0]}") from None
        self.compile_s = time.perf_counter() - t0
        self.n_outputs = len(self.compiled.outputs)
        pshape = self.compiled.input(0).get_partial_shape()
        self.input_shape = tuple(-1 if d.is_dynamic else d.get_length() for d in pshape)  # -1: dynamic
        # An infer request must not be used by two threads at once (it segfaults): one request per thread
        # (e.g. a head's worker thread, or the caption task's clip-encoding pool).
        self._local = threading.local()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """Run once; returns copies of every output (the request's buffers are reused by the next call)."""
        if x.ndim != len(self.input_shape) or any(w != -1 and w != h for w, h in zip(self.input_shape, x.shape)) \
                or x.shape[0] == 0:
            raise InputShapeError(f"network {self.folder.name} takes {self.input_shape} (-1: any), got {x.shape}")
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        res = request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return [np.array(res[self.compiled.output(i)], copy=True) for i in range(self.n_outputs)]


def load_network(key: ExportKey, export: Callable[[Path], None], precision: str, *, latency: bool = True,
                 cache_dir: Path | None = None) -> tuple[CompiledNetwork, ExportRecord]:
    """Export (or reuse) and compile; an unreadable cached export is rebuilt once.

    A network without a weights file (``key.weights_sha256`` None: random init, different every time) is
    exported to a temporary folder and compiled without touching any cache.
    """
    if key.weights_sha256 is None:
        with tempfile.TemporaryDirectory(prefix="vidseq-ov-") as tmp:
            t0 = time.perf_counter()
            export(Path(tmp))
            export_s = time.perf_counter() - t0
            net = CompiledNetwork(Path(tmp), precision, latency=latency, cache=False)
        return net, ExportRecord("(not cached: random init)", False, export_s, net.compile_s, precision, key.as_dict(),
                                 threads=net.threads)
    folder, hit, export_s = cached_export(key, export, cache_dir)
    try:
        net = CompiledNetwork(folder, precision, latency=latency)
    except BackboneError:
        if not hit:
            raise
        log.warning("cached export %s does not load: rebuilding", folder)
        (folder / MANIFEST).unlink(missing_ok=True)
        folder, hit, export_s = cached_export(key, export, cache_dir)
        net = CompiledNetwork(folder, precision, latency=latency)
    check = None
    if (folder / "check.json").is_file():
        try:
            check = json.loads((folder / "check.json").read_text())
        except (OSError, ValueError):
            check = None
    rec = ExportRecord(str(folder), hit, export_s, net.compile_s, precision, key.as_dict(), check, net.threads)
    return net, rec


__all__ = ["PRECISIONS", "RUNTIMES", "CompiledNetwork", "ExportKey", "ExportRecord", "RuntimeUnavailableError",
           "SmallTorchOps",
           "cached_export", "cpu_has_bf16", "default_runtime", "export_cache_dir", "export_torch_module",
           "library_versions", "load_network", "num_threads", "openvino_version", "quantize_int8",
           "resolve_precision", "resolve_runtime", "runtime_scope"]
