"""Batched feature extraction with decoding ahead of the model, and the on-disk feature files.

A decode thread reads frames, preprocesses them (resize, normalise: OpenCV and numpy release the
GIL) and puts ready batches on a bounded queue; the calling thread runs the backbone. Neither waits
for the other as long as the queue is neither empty nor full.

Feature files are ``.npz`` with ``features (T, D) float32``, ``frame_index (T,) int64``,
``timestamp_s (T,) float64`` and ``meta`` (a JSON string): backbone, weights (path, sha256, source),
input size, fps, source, content hash, cache key. They load with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vidseq import __version__
from vidseq.config import setting
from vidseq.errors import EmptyVideoError, InputShapeError, VidseqError
from vidseq.features.backbones import Backbone
from vidseq.io import atomic_path, sha256_file, sha256_files
from vidseq.video.sources import VideoSource, list_images, open_source, source_kind

log = logging.getLogger(__name__)

FEATURE_FORMAT_VERSION = 1


@dataclass
class FeatureSequence:
    """Per-frame features of one source."""

    features: np.ndarray  # (T, D) float32
    frame_index: np.ndarray  # (T,) int64
    timestamp_s: np.ndarray  # (T,) float64
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features.ndim != 2:
            raise InputShapeError(f"features must be (T, D), got shape {self.features.shape}")
        t = self.features.shape[0]
        if self.frame_index.shape != (t,) or self.timestamp_s.shape != (t,):
            raise InputShapeError(
                f"frame_index/timestamp_s must be ({t},), got {self.frame_index.shape}/{self.timestamp_s.shape}")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])


def save_features(path: str | Path, seq: FeatureSequence) -> Path:
    """Write atomically (a crash never leaves a half-written file under the final name)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, features=seq.features.astype(np.float32, copy=False),
                     frame_index=seq.frame_index.astype(np.int64, copy=False),
                     timestamp_s=seq.timestamp_s.astype(np.float64, copy=False),
                     meta=np.array(json.dumps(seq.meta, default=str)))
    return Path(path)


def load_features(path: str | Path) -> FeatureSequence:
    """Read a feature file; malformed files raise :class:`VidseqError` with the path."""
    p = Path(path)
    if not p.is_file():
        raise VidseqError(f"feature file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            seq = FeatureSequence(z["features"], z["frame_index"], z["timestamp_s"], json.loads(str(z["meta"])))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # a cut or overwritten file is not a zip
        raise VidseqError(f"cannot read feature file {p}: {exc}") from None
    if not np.isfinite(seq.features).all():
        raise InputShapeError(f"feature file {p} holds NaN/inf values")
    return seq


def content_hash(spec: str | Path) -> str | None:
    """sha256 of a file, or of an image folder's names and contents; None for live sources."""
    kind = source_kind(spec)
    if kind == "file":
        return sha256_file(spec)
    if kind == "folder":
        folder = Path(spec)
        return sha256_files(list_images(folder), folder)
    return None


def cache_key(content_sha256: str, settings: dict[str, Any]) -> str:
    blob = json.dumps({"content": content_sha256, "settings": settings, "format": FEATURE_FORMAT_VERSION},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


_END = object()


def _prefetch_batches(src: VideoSource, backbone: Backbone, batch_size: int, depth: int,
                      stop: threading.Event) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(batch (B,3,S,S), frame_index (B,), timestamp_s (B,))`` decoded in a helper thread."""
    q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            images: list[np.ndarray] = []
            idx: list[int] = []
            ts: list[float] = []
            for frame in src:
                images.append(frame.image)
                idx.append(frame.frame_index)
                ts.append(frame.timestamp_s)
                if len(images) == batch_size:
                    if not put((backbone.preprocess_np(images), np.array(idx, np.int64), np.array(ts))):
                        return
                    images, idx, ts = [], [], []
            if images:
                put((backbone.preprocess_np(images), np.array(idx, np.int64), np.array(ts)))
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer thread
            put(exc)

    thread = threading.Thread(target=work, name="vidseq-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)


def extract_features(
    spec: str | Path,
    backbone: Backbone,
    *,
    batch_size: int = 16,
    stride: int = 1,
    start_s: float | None = None,
    end_s: float | None = None,
    max_frames: int | None = None,
    prefetch: int = 4,
    out_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    content_sha256: str | None = None,
    log_every_s: float | None = None,
) -> FeatureSequence:
    """Extract one feature vector per frame of ``spec``.

    Args:
        spec: video file, image folder (or live source, then no caching).
        backbone: from :func:`vidseq.features.backbones.create_backbone`.
        out_path: write the result there; if a file with the same cache key exists, load it instead.
        cache_dir: alternatively, cache as ``<cache_dir>/<stem>-<key16>.npz``.
        progress: tqdm bar with frames/s.
        log_every_s: log a progress line at this interval instead (no terminal: CI logs, services).

    Returns:
        The :class:`FeatureSequence`; ``meta["cache_hit"]`` says whether it came from disk.
    """
    if batch_size < 1:
        raise VidseqError(f"batch_size must be >= 1, got {batch_size}")
    settings = {
        **{k: v for k, v in backbone.info().items() if k != "weights"},
        "weights_sha256": backbone.weights.sha256, "weights_name": backbone.weights.name,
        "stride": stride, "start_s": start_s, "end_s": end_s, "max_frames": max_frames,
    }
    settings.pop("class_names", None)
    settings.pop("half", None)
    with open_source(spec, stride=stride, start_s=start_s, end_s=end_s, max_frames=max_frames) as src:
        digest = content_sha256 or content_hash(spec)
        key = cache_key(digest, settings) if digest else None
        target: Path | None = None
        if out_path is not None:
            target = Path(out_path)
        elif cache_dir is not None and key is not None:
            target = Path(cache_dir) / f"{Path(str(spec)).stem}-{key[:16]}.npz"
        if target is not None and key is not None and target.is_file():
            try:
                cached = load_features(target)
                if cached.meta.get("cache_key") == key:
                    log.info("cache hit: %s", target)
                    cached.meta["cache_hit"] = True
                    return cached
            except VidseqError:
                log.warning("ignoring unreadable cache file %s", target)
        seq = _run(src, backbone, batch_size=batch_size, prefetch=prefetch, progress=progress,
                   log_every_s=log_every_s)
    seq.meta.update({
        "source": str(spec), "source_kind": src.info.kind, "content_sha256": digest, "cache_key": key,
        "fps": src.info.fps, "width": src.info.width, "height": src.info.height,
        "source_frame_count": src.info.frame_count, "stride": stride, "start_s": start_s, "end_s": end_s,
        "max_frames": max_frames, **backbone.info(), "export": backbone.export_info(), "vidseq_version": __version__,
        "format_version": FEATURE_FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    if target is not None:
        save_features(target, seq)
        seq.meta["path"] = str(target)
    seq.meta["cache_hit"] = False
    return seq


def _run(src: VideoSource, backbone: Backbone, *, batch_size: int, prefetch: int,
         progress: bool, log_every_s: float | None = None) -> FeatureSequence:
    from tqdm import tqdm

    feats: list[np.ndarray] = []
    idx: list[np.ndarray] = []
    ts: list[np.ndarray] = []
    stop = threading.Event()
    t0 = time.perf_counter()
    name = Path(str(src.info.source)).name
    expected = src.expected_frames()
    last_log = t0
    done = 0
    with tqdm(total=src.expected_frames(), unit="frame", desc=f"extract {name}", disable=not progress,
              dynamic_ncols=True, leave=False) as bar, torch.inference_mode():
        for batch, fi, fts in _prefetch_batches(src, backbone, batch_size, prefetch, stop):
            out = backbone.forward_features(backbone.to_device(batch))  # (B, D)
            feats.append(out.cpu().numpy())
            idx.append(fi)
            ts.append(fts)
            bar.update(len(fi))
            done += len(fi)
            if log_every_s is not None and time.perf_counter() - last_log >= log_every_s:
                last_log = time.perf_counter()
                log.info("extract %s: %d%s frames, %.1f frames/s", name, done, f"/{expected}" if expected else "",
                         done / max(last_log - t0, 1e-9))
    elapsed = time.perf_counter() - t0
    if not feats:
        raise EmptyVideoError(f"no frames decoded from {src.info.source}")
    features = np.concatenate(feats).astype(np.float32, copy=False)
    if not np.isfinite(features).all():
        raise InputShapeError(f"backbone produced NaN/inf features for {src.info.source}")
    n = features.shape[0]
    log.info("%s: %d frames in %.1f s (%.1f frames/s)", name, n, elapsed, n / max(elapsed, 1e-9))
    return FeatureSequence(features, np.concatenate(idx), np.concatenate(ts).astype(np.float64),
                           {"frames": n, "elapsed_s": round(elapsed, 3), "fps_achieved": round(n / max(elapsed, 1e-9), 2)})


@dataclass(frozen=True)
class ExtractConfig:
    """``configs/extract.yaml``: settings of ``vidseq extract``."""

    backbone: str = "mobilenet_v2"
    weights: str | None = None  # explicit weights file; None = resolver order (see vidseq.features.weights)
    pretrained: bool = True
    feature_dim: int | None = setting(512, ge=1)  # None keeps the backbone's native width
    imgsz: int | None = setting(None, ge=32, le=8192)  # None = backbone default (224 torchvision, 320 YOLO)
    batch_size: int = setting(16, ge=1)
    stride: int = setting(1, ge=1)
    start_s: float | None = None
    end_s: float | None = None
    max_frames: int | None = setting(None, ge=1)
    device: str = "auto"
    prefetch: int = setting(4, ge=1)
    half: bool | None = None  # None = fp16 on CUDA only
    runtime: Literal["auto", "torch", "openvino"] = "auto"  # auto = OpenVINO on CPU when installed
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"  # auto = bf16 on a bf16 CPU (OpenVINO), else fp32
    calibration: str | None = None  # int8: video/folder whose frames calibrate the quantisation (no labels)
    calibration_frames: int = 50

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.stride < 1 or self.prefetch < 1:
            raise ValueError("batch_size, stride and prefetch must be >= 1")
        if self.precision == "int8" and not self.calibration:
            raise ValueError("precision int8 needs calibration=VIDEO (frames of your own video or dataset)")


def backbone_from_config(cfg: ExtractConfig) -> Backbone:
    from vidseq.features.backbones import create_backbone

    calibration = None
    if cfg.precision == "int8" and cfg.calibration:
        calibration = calibration_frames(cfg.calibration, cfg.calibration_frames)
    return create_backbone(cfg.backbone, weights=cfg.weights, pretrained=cfg.pretrained, device=cfg.device,
                           imgsz=cfg.imgsz, feature_dim=cfg.feature_dim, half=cfg.half, runtime=cfg.runtime,
                           precision=cfg.precision, calibration=calibration)


def calibration_frames(source: str | Path, n: int) -> Callable[[], list[np.ndarray]]:
    """A callable giving up to ``n`` BGR frames spread over the video/folder ``source`` (INT8 calibration on the
    user's own, unlabeled frames); its ``key`` (content hash + n) enters the export cache key."""
    if n < 1:
        raise VidseqError(f"calibration_frames must be >= 1, got {n}")
    digest = content_hash(source)
    if digest is None:
        raise VidseqError(f"int8 calibration needs a video file or image folder, not a live source: {source}")

    def frames() -> list[np.ndarray]:
        with open_source(source) as probe:
            total = probe.info.frame_count or n
        with open_source(source, stride=max(1, total // n), max_frames=n) as src:
            out = [f.image for f in src]
        if not out:
            raise EmptyVideoError(f"no frames decoded from calibration source {source}")
        log.info("int8 calibration: %d frames of %s", len(out), source)
        return out

    frames.key = f"{digest}:{n}"  # type: ignore[attr-defined]
    return frames
