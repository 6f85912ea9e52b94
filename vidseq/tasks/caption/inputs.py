"""Clip -> encoder input sequence: backbone features + object/track summary features, cached.

Every clip (or every window of a long video) becomes a ``(T, D)`` float32 array with
``T <= max_frames`` frames picked uniformly over the clip: per frame, the pooled backbone feature
(:mod:`vidseq.features.backbones`, random-init or pretrained as configured) followed by the
object features of :mod:`vidseq.tasks.caption.objects` (from the clip's tracks, or from moving
regions when it has none). Training, evaluation and ``vidseq caption`` all go through
:meth:`ClipEncoder.encode_frames`, so a model sees the same kind of input everywhere.

Frames are decoded once with OpenCV (``vidseq.video.sources``), shrunk so the longer side is at
most ``work_size`` (object features are computed at that size, the backbone resizes to its own
input size), and kept in memory per clip/window: meant for short clips (captioning datasets hold
clips of seconds); long videos are captioned window by window.

Inputs are cached as ``<cache_dir>/<clip id>-<key>.npz`` where the key hashes the video bytes, the
tracks file, the settings below and the backbone weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vidseq.errors import ConfigError, EmptyVideoError, InputShapeError
from vidseq.io import atomic_path, sha256_file
from vidseq.tasks.caption.objects import (
    ObjectBoxes,
    feature_size,
    moving_regions,
    object_features,
)

log = logging.getLogger(__name__)

INPUTS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class CaptionFeatureConfig:
    """How clips become encoder inputs (YAML section ``features``).

    Attributes:
        backbone: a :mod:`vidseq.features.backbones` name, or ``none`` for object features only.
        pretrained: load pretrained backbone weights (False = random init, recorded in metadata).
        weights: explicit backbone weights file.
        feature_dim: backbone output width (``None`` = native width).
        imgsz: backbone input size (``None`` = backbone default).
        batch_size: frames per backbone forward pass.
        stride: decode every ``stride``-th frame before picking ``max_frames`` of them.
        max_frames: frames per clip/window fed to the encoder (picked uniformly).
        objects: ``auto`` (tracks when the clip has them, else moving regions), ``tracks`` (clips
            without tracks get empty object slots), ``motion`` (always moving regions), ``none``.
        max_objects: object slots per frame.
        work_size: frames are shrunk so their longer side is at most this (object features, memory).
        device: backbone device.
    """

    backbone: str = "mobilenet_v2"
    pretrained: bool = True
    weights: str | None = None
    feature_dim: int | None = None
    imgsz: int | None = 112
    batch_size: int = 32
    stride: int = 1
    max_frames: int = 24
    objects: Literal["auto", "tracks", "motion", "none"] = "auto"
    max_objects: int = 2
    work_size: int = 320
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.max_frames < 1 or self.stride < 1 or self.batch_size < 1 or self.work_size < 32:
            raise ConfigError("features: max_frames, stride, batch_size must be >= 1 and work_size >= 32")
        if self.max_objects < 0:
            raise ConfigError(f"features.max_objects must be >= 0, got {self.max_objects}")
        if self.backbone == "none" and (self.objects == "none" or self.max_objects == 0):
            raise ConfigError("features: backbone 'none' needs object features (objects != none, max_objects > 0)")

    @property
    def aux_dim(self) -> int:
        return 0 if self.objects == "none" else feature_size(self.max_objects)


def uniform_indices(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` indices spread uniformly over ``range(n)`` (centres of k equal segments)."""
    if n <= k:
        return np.arange(n)
    return np.minimum(((np.arange(k) + 0.5) * n / k).astype(np.int64), n - 1)


@dataclass
class ClipInputs:
    """Encoder input of one clip or window."""

    features: np.ndarray  # (T, D) float32
    frame_index: np.ndarray  # (T,) int64
    timestamp_s: np.ndarray  # (T,) float64

    def __post_init__(self) -> None:
        T = self.features.shape[0]
        if self.features.ndim != 2 or self.frame_index.shape != (T,) or self.timestamp_s.shape != (T,):
            raise InputShapeError(f"clip inputs: features (T, D) with (T,) frame_index/timestamp_s, got "
                                  f"{self.features.shape}, {self.frame_index.shape}, {self.timestamp_s.shape}")


def shrink(image: np.ndarray, work_size: int) -> tuple[np.ndarray, float]:
    """``image`` scaled down (never up) so its longer side is at most ``work_size``; returns (image, scale)."""
    import cv2

    h, w = image.shape[:2]
    s = min(1.0, work_size / max(h, w))
    if s >= 1.0:
        return image, 1.0
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), s


class ClipEncoder:
    """Turns frames of a clip into encoder inputs; owns the backbone (built lazily)."""

    def __init__(self, cfg: CaptionFeatureConfig) -> None:
        self.cfg = cfg
        self._backbone: Any = None

    # ------------------------------------------------------------------ backbone
    @property
    def backbone(self) -> Any:
        if self._backbone is None and self.cfg.backbone != "none":
            from vidseq.features.backbones import create_backbone

            self._backbone = create_backbone(self.cfg.backbone, weights=self.cfg.weights,
                                             pretrained=self.cfg.pretrained, device=self.cfg.device,
                                             imgsz=self.cfg.imgsz, feature_dim=self.cfg.feature_dim)
            self._backbone.eval()
        return self._backbone

    @property
    def feature_dim(self) -> int:
        return 0 if self.cfg.backbone == "none" else int(self.backbone.feature_dim)

    @property
    def aux_dim(self) -> int:
        return self.cfg.aux_dim

    @property
    def input_dim(self) -> int:
        return self.feature_dim + self.aux_dim

    def info(self) -> dict[str, Any]:
        """JSON-able description stored in checkpoints (backbone weights included)."""
        out: dict[str, Any] = {"features": asdict(self.cfg), "feature_dim": self.feature_dim,
                               "aux_dim": self.aux_dim, "inputs_format_version": INPUTS_FORMAT_VERSION}
        if self.cfg.backbone != "none":
            info = dict(self.backbone.info())
            info.pop("class_names", None)
            out["backbone"] = info
        return out

    # ------------------------------------------------------------------ core
    def encode_frames(
        self,
        images: list[np.ndarray],
        frame_index: np.ndarray,
        timestamp_s: np.ndarray,
        *,
        fps: float,
        boxes: ObjectBoxes | None = None,
    ) -> ClipInputs:
        """Frames of one clip/window (already at work size) -> inputs of at most ``max_frames`` frames.

        Args:
            images: BGR uint8 frames.
            frame_index, timestamp_s: (N,) per frame.
            fps: frame rate (object velocities are per second).
            boxes: object boxes in the coordinates of ``images``; ``None`` = per ``cfg.objects``
                (moving regions for ``auto``/``motion``, empty slots for ``tracks``).
        """
        if not images:
            raise EmptyVideoError("no frames to caption")
        sel = uniform_indices(len(images), self.cfg.max_frames)
        imgs = [images[i] for i in sel]
        fi = np.asarray(frame_index, np.int64)[sel]
        ts = np.asarray(timestamp_s, np.float64)[sel]
        parts: list[np.ndarray] = []
        if self.cfg.backbone != "none":
            import torch

            bb = self.backbone
            feats = []
            with torch.inference_mode():
                for i in range(0, len(imgs), self.cfg.batch_size):
                    feats.append(bb.extract(imgs[i:i + self.cfg.batch_size]))
            parts.append(np.concatenate(feats).astype(np.float32))
        if self.cfg.objects != "none":
            if boxes is None and self.cfg.objects in ("auto", "motion"):
                boxes = moving_regions(imgs, fi)
            if boxes is None:
                boxes = ObjectBoxes.empty()
            parts.append(object_features(imgs, fi, boxes, fps=fps, max_objects=self.cfg.max_objects))
        x = np.concatenate(parts, axis=1).astype(np.float32)  # (T, D)
        if not np.isfinite(x).all():
            raise InputShapeError("caption inputs hold NaN/inf values")
        return ClipInputs(x, fi, ts)

    def _read(self, path: Path, *, start_s: float | None = None, end_s: float | None = None
              ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, float, float]:
        from vidseq.video.sources import open_source

        images, idx, ts = [], [], []
        scale = 1.0
        with open_source(path, stride=self.cfg.stride, start_s=start_s, end_s=end_s) as src:
            fps = float(src.info.fps or 25.0)
            for frame in src:
                img, scale = shrink(frame.image, self.cfg.work_size)
                images.append(img)
                idx.append(frame.frame_index)
                ts.append(frame.timestamp_s)
        if not images:
            raise EmptyVideoError(f"no frames decoded from {path}")
        return images, np.array(idx, np.int64), np.array(ts, np.float64), fps, scale

    # ------------------------------------------------------------------ clips
    def cache_key(self, path: Path, tracks_path: Path | None) -> str:
        settings: dict[str, Any] = {"cfg": asdict(self.cfg), "format": INPUTS_FORMAT_VERSION,
                                    "video": sha256_file(path) if Path(path).is_file() else _folder_hash(path),
                                    "tracks": sha256_file(tracks_path) if tracks_path else None}
        if self.cfg.backbone != "none":
            w = self.backbone.weights
            settings["weights"] = [w.name, w.sha256]
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()

    def encode_clip(
        self,
        path: Path,
        *,
        tracks: Any | None = None,
        tracks_path: Path | None = None,
        clip_id: str | None = None,
        fps: float | None = None,
        cache_dir: Path | None = None,
    ) -> ClipInputs:
        """Inputs of a whole clip (cached when ``cache_dir`` is given).

        Args:
            path: video file or frame folder.
            tracks: the clip's :class:`vidseq.sequences.manifest.Tracks` (pixel boxes) or None.
            tracks_path: the tracks file (part of the cache key).
            clip_id: cache file stem.
            fps: overrides the container frame rate (frame folders, manifests with ``fps``).
        """
        use_tracks = tracks if self.cfg.objects in ("auto", "tracks") else None
        target: Path | None = None
        if cache_dir is not None:
            key = self.cache_key(path, tracks_path if use_tracks is not None else None)
            target = Path(cache_dir) / f"{clip_id or Path(path).stem}-{key[:16]}.npz"
            if target.is_file():
                try:
                    with np.load(target, allow_pickle=False) as z:
                        return ClipInputs(z["features"], z["frame_index"], z["timestamp_s"])
                except (OSError, ValueError, KeyError, InputShapeError, zipfile.BadZipFile):
                    log.warning("ignoring unreadable cache file %s", target)
        images, idx, ts, src_fps, scale = self._read(Path(path))
        boxes = None
        if use_tracks is not None and len(use_tracks):
            boxes = ObjectBoxes(use_tracks.frame.astype(np.int64), use_tracks.track_id.astype(np.int64),
                                use_tracks.xywh.astype(np.float64) * scale,
                                visible=np.asarray(use_tracks.conf, np.float64))
        elif use_tracks is not None:
            boxes = ObjectBoxes.empty()
        out = self.encode_frames(images, idx, ts, fps=float(fps or src_fps), boxes=boxes)
        if target is not None:
            with atomic_path(target) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, features=out.features, frame_index=out.frame_index, timestamp_s=out.timestamp_s)
        return out

    def encode_windows(self, path: Path, window_s: float | None) -> Iterator[tuple[float, float, ClipInputs]]:
        """``(start_s, end_s, inputs)`` for consecutive windows of ``window_s`` seconds (None = whole video).

        Frames are streamed: only one window is held in memory. Object features use moving regions
        (a plain video has no tracks).
        """
        from vidseq.video.sources import open_source

        if window_s is not None and window_s <= 0:
            raise ConfigError(f"window length must be > 0 s, got {window_s}")
        with open_source(path, stride=self.cfg.stride) as src:
            fps = float(src.info.fps or 25.0)
            buf: list[np.ndarray] = []
            idx: list[int] = []
            ts: list[float] = []
            w0 = 0.0
            n_seen = 0
            for frame in src:
                n_seen += 1
                if window_s is not None and frame.timestamp_s >= w0 + window_s and buf:
                    yield w0, w0 + window_s, self.window_inputs(buf, idx, ts, fps)
                    buf, idx, ts = [], [], []
                    while frame.timestamp_s >= w0 + window_s:
                        w0 += window_s
                img, _ = shrink(frame.image, self.cfg.work_size)
                buf.append(img)
                idx.append(frame.frame_index)
                ts.append(frame.timestamp_s)
            if n_seen == 0:
                raise EmptyVideoError(f"no frames decoded from {path}")
            if buf:
                end = (w0 + window_s) if window_s is not None else ts[-1] + 1.0 / fps
                yield w0, min(end, ts[-1] + 1.0 / fps), self.window_inputs(buf, idx, ts, fps)

    def window_inputs(self, buf: list[np.ndarray], idx: list[int], ts: list[float], fps: float) -> ClipInputs:
        """Encoder inputs of one window of shrunk frames (``buf``) with their indices and timestamps."""
        boxes = None
        if self.cfg.objects == "tracks":  # a plain video has no tracks: moving regions stand in for them
            sel = uniform_indices(len(buf), self.cfg.max_frames)
            boxes = moving_regions([buf[i] for i in sel], np.asarray(idx)[sel])
        return self.encode_frames(buf, np.array(idx, np.int64), np.array(ts, np.float64), fps=fps, boxes=boxes)


def _folder_hash(path: Path) -> str:
    from vidseq.features.extractor import content_hash

    return content_hash(path) or str(path)
