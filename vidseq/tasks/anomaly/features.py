"""Per-frame inputs of the anomaly streams, for a whole clip (cached) or one live frame at a time.

:class:`FeatureComputer` holds the streaming state (previous frame for optical flow, background model
for moving regions, the backbone) and turns each BGR frame into a
:class:`vidseq.models.anomaly.model.FrameFeatures`. :func:`extract_clip_features` runs it over a video
file and stores the result as a :class:`ClipFeatures` ``.npz`` under ``cache_dir`` (keyed by the file's
content hash and every setting that changes the numbers), so training and evaluation decode each video
once. Appearance features come from :func:`vidseq.features.extractor.extract_features` (its own cache).
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from vidseq.errors import EmptyVideoError, InputShapeError, VidseqError
from vidseq.features.camera import CameraConfig
from vidseq.features.crops import CropEncoder
from vidseq.features.motion import MotionConfig, MotionExtractor
from vidseq.features.regions import (
    ATTRIBUTE_NAMES,
    RegionConfig,
    RegionDetector,
    region_attributes,
)
from vidseq.io import atomic_path
from vidseq.models.anomaly.clip import ClipFeatures
from vidseq.models.anomaly.model import AnomalyConfig, FrameFeatures

log = logging.getLogger(__name__)

CLIP_FEATURES_VERSION = 1
APPEARANCE_BATCH = 16  # frames per backbone call when a whole clip is in memory (as extract_features batches)


def save_clip_features(path: str | Path, cf: ClipFeatures) -> Path:
    """Write ``cf`` as one ``.npz`` (atomically); appearance and crop features too when present."""
    arrays = {k: getattr(cf, k) for k in ("frame_index", "timestamp_s", "valid", "descriptors", "region_attrs",
                                          "region_frame")}
    arrays["magnitude_maps"] = cf.magnitude_maps.astype(np.float16)
    if cf.appearance is not None:
        arrays["appearance"] = cf.appearance
    if cf.region_crops is not None:
        arrays["region_crops"] = cf.region_crops.astype(np.float16)
    meta = {"clip_id": cf.clip_id, "fps": cf.fps, "working_size": list(cf.working_size), **cf.meta}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(meta, default=str)), **arrays)
    return Path(path)


def load_clip_features(path: str | Path) -> ClipFeatures:
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return ClipFeatures(
                clip_id=meta.pop("clip_id"), fps=float(meta.pop("fps")), frame_index=z["frame_index"],
                timestamp_s=z["timestamp_s"], magnitude_maps=z["magnitude_maps"].astype(np.float32),
                valid=z["valid"].astype(bool), descriptors=z["descriptors"], region_attrs=z["region_attrs"],
                region_frame=z["region_frame"], working_size=tuple(meta.pop("working_size")), meta=meta,
                appearance=z["appearance"] if "appearance" in z.files else None,
                region_crops=z["region_crops"].astype(np.float32) if "region_crops" in z.files else None)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise VidseqError(f"unreadable anomaly feature file {p}: {exc}") from None


class FeatureComputer:
    """Streaming per-frame feature computation (motion, regions, optional appearance and object crops).

    Args:
        motion: optical-flow settings.
        regions: moving-region settings, or None to skip regions (no objects / crops stream).
        backbone: a :class:`vidseq.features.backbones.Backbone` for appearance, or None.
        crops: a :class:`vidseq.features.crops.CropEncoder` for the regions' crops (needs ``regions``), or None.
        camera: camera-nuisance compensation before flow (:mod:`vidseq.features.camera`), or None (raw
            frames, as cached training features are computed). :attr:`last_cut` says whether the latest
            frame followed a scene cut, :attr:`last_view` is its prepared gray frame (to recognise a view seen
            before).
        frame_step: source frames between two analysed frames (:class:`~vidseq.features.motion.MotionExtractor`
            measures flow across dropped frames per step).
    """

    def __init__(self, motion: MotionConfig, regions: RegionConfig | None = None, backbone: Any = None,
                 crops: CropEncoder | None = None, camera: CameraConfig | None = None, frame_step: int = 1) -> None:
        if crops is not None and regions is None:
            raise InputShapeError("object crops need moving regions (regions settings)")
        self.motion = MotionExtractor(motion, camera, frame_step)
        self.last_cut = False
        self.regions = RegionDetector(regions) if regions is not None else None
        self.backbone = backbone
        self.crops = crops

    @property
    def last_view(self) -> np.ndarray | None:
        """The latest frame as the camera compensation prepared it (None without compensation)."""
        cam = self.motion.camera
        return None if cam is None else cam.last_frame

    def step(self, image: np.ndarray, frame_index: int = 0, timestamp_s: float = 0.0,
             appearance: np.ndarray | None = None, previous: tuple[np.ndarray, int] | None = None,
             ) -> FrameFeatures:
        """Features of the next frame. ``appearance`` may be given precomputed (batched extraction);
        ``previous`` is the source frame before it that a live reader dropped (``(image, frame_index)``, see
        :meth:`vidseq.features.motion.MotionExtractor.step`)."""
        m = self.motion.step(image, frame_index, timestamp_s, previous)
        self.last_cut = m.cut
        if self.regions is not None:
            # objects are found and measured in the frame's own pixels (a registered camera's home view would
            # cut them at its moving edge; their tracks only compare each object with itself over a second)
            flow = m.flow if m.frame_flow is None else m.frame_flow
            regs = self.regions.step(m.gray, flow, frame_index)
            attrs = region_attributes(regs, flow)
        else:
            attrs = np.zeros((0, len(ATTRIBUTE_NAMES)), np.float32)
        if appearance is None and self.backbone is not None:
            appearance = self.backbone.extract([image])[0]
        crops = None
        if self.crops is not None:
            crops = self.crops.encode(image, attrs, tuple(self.motion.working_size or (0, 0)))
        return FrameFeatures(frame_index=m.frame_index, timestamp_s=m.timestamp_s, magnitude_map=m.magnitude_map,
                             valid=m.valid, descriptor=m.descriptor, region_attrs=attrs, appearance=appearance,
                             region_crops=crops, home_cover=m.home_cover)


def feature_settings(cfg: AnomalyConfig) -> dict[str, Any]:
    """Settings that change the cached per-frame features (regions are always computed for the cache,
    so one cache serves every stream combination)."""
    out = {"motion": asdict(cfg.motion), "regions": asdict(cfg.regions), "version": CLIP_FEATURES_VERSION}
    pixels = pixel_compensation(cfg)
    if pixels is not None:  # (absent for raw pixels: raw features keep their cache keys)
        out["pixels"] = asdict(pixels)
    return out


def pixel_compensation(cfg: AnomalyConfig) -> CameraConfig | None:
    """What a model's clips go through before their features are computed for fitting
    (``cfg.normalise_pixels``): photometric normalisation and denoising, nothing that needs a moving camera or
    a stream (no stabilisation, registration or scene cuts); None for raw pixels."""
    if not cfg.normalise_pixels:
        return None
    return CameraConfig(stabilise=False, register=False, scene_cut=False)


def make_backbone(cfg: AnomalyConfig, device: str = "cpu") -> Any:
    """The frame stream's backbone (None when no stream needs appearance)."""
    if not cfg.needs_appearance:
        return None
    from vidseq.features.backbones import create_backbone

    f = cfg.frame
    return create_backbone(f.backbone, weights=f.weights, pretrained=True, device=device, imgsz=f.imgsz,
                           feature_dim=f.feature_dim)


def make_crop_encoder(cfg: AnomalyConfig, device: str = "cpu") -> CropEncoder | None:
    """The crops stream's encoder (the frame stream's backbone at the crop size; None without that stream)."""
    if not cfg.needs_crops:
        return None
    from vidseq.features.crops import make_crop_encoder as make

    return make(cfg.crops.crop, cfg.frame.backbone, cfg.frame.weights, device)


def add_crop_features(path: str | Path, cf: ClipFeatures, encoder: CropEncoder, *,
                      cache_dir: str | Path | None = None, max_frames: int | None = None,
                      progress: bool = False) -> ClipFeatures:
    """Fill ``cf.region_crops`` for the video at ``path`` (decoded again; cached in ``cache_dir`` by the
    video's content, the region settings and the encoder)."""
    from tqdm import tqdm

    from vidseq.features.extractor import cache_key, content_hash
    from vidseq.video.sources import open_source

    target = None
    key = None
    if cache_dir is not None and (digest := content_hash(path)) is not None:
        key = cache_key(digest, {"regions_key": cf.meta.get("cache_key"), "n_regions": len(cf.region_attrs),
                                 "crops": encoder.info(), "max_frames": max_frames, "version": CLIP_FEATURES_VERSION})
        target = Path(cache_dir) / f"{cf.clip_id}-crops-{key[:16]}.npz"
        if target.is_file():
            try:
                with np.load(target, allow_pickle=False) as z:
                    if str(z["key"]) == key and z["crops"].shape[0] == len(cf.region_attrs):
                        cf.region_crops = z["crops"].astype(np.float32)
                        return cf
            except (OSError, KeyError, ValueError, zipfile.BadZipFile):
                log.warning("ignoring unreadable cache file %s", target)
    with open_source(path, max_frames=max_frames) as src:
        frames = tqdm(src, desc=f"object crops {cf.clip_id}", total=len(cf), disable=not progress, unit="f")
        crops = encoder.encode_clip(frames, cf.regions_of(), cf.working_size)
    order = np.argsort(cf.region_frame, kind="stable")  # encode_clip's rows are in frame order
    out = np.empty_like(crops)
    out[order] = crops
    cf.region_crops = out
    if target is not None:
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, key=np.array(key), crops=out.astype(np.float16))
    return cf


def extract_clip_features(path: str | Path, cfg: AnomalyConfig, *, clip_id: str | None = None,
                          cache_dir: str | Path | None = None, backbone: Any = None,
                          crops: CropEncoder | None = None,
                          max_frames: int | None = None, progress: bool = False) -> ClipFeatures:
    """Compute (or load from ``cache_dir``) the stream inputs of a video file or image folder
    (object crop features too when ``crops`` is given).

    Raises:
        EmptyVideoError: the source has no frames.
    """
    from tqdm import tqdm

    from vidseq.features.extractor import cache_key, content_hash, extract_features
    from vidseq.video.sources import open_source

    name = clip_id or Path(str(path)).stem
    settings = {**feature_settings(cfg), "max_frames": max_frames}
    target = None
    key = None
    cf: ClipFeatures | None = None
    if cache_dir is not None:
        digest = content_hash(path)
        if digest is not None:
            key = cache_key(digest, settings)
            target = Path(cache_dir) / f"{name}-anomaly-{key[:16]}.npz"
            if target.is_file():
                try:
                    cf = load_clip_features(target)
                    if cf.meta.get("cache_key") != key:
                        cf = None
                except VidseqError:
                    log.warning("ignoring unreadable cache file %s", target)
    if cf is None:
        comp = FeatureComputer(cfg.motion, cfg.regions if (cfg.needs_regions or target is not None) else None,
                               camera=pixel_compensation(cfg))
        maps, valid, desc, idx, ts, attrs, rframe = [], [], [], [], [], [], []
        t0 = time.perf_counter()
        with open_source(path, max_frames=max_frames) as src:
            fps = src.info.fps
            for i, frame in enumerate(tqdm(src, desc=f"anomaly features {name}", disable=not progress, unit="f")):
                f = comp.step(frame.image, frame.frame_index, frame.timestamp_s)
                maps.append(f.magnitude_map)
                valid.append(f.valid)
                desc.append(f.descriptor)
                idx.append(f.frame_index)
                ts.append(f.timestamp_s)
                attrs.append(f.region_attrs)
                rframe.append(np.full(len(f.region_attrs), i, np.int64))
        if not maps:
            raise EmptyVideoError(f"no frames in {path}")
        cf = ClipFeatures(name, float(fps), np.array(idx, np.int64), np.array(ts, np.float64), np.stack(maps),
                          np.array(valid, bool), np.stack(desc).astype(np.float32),
                          np.concatenate(attrs).astype(np.float32).reshape(-1, len(ATTRIBUTE_NAMES)),
                          np.concatenate(rframe), tuple(comp.motion.working_size or (0, 0)),
                          meta={"source": str(path), "cache_key": key, "seconds": time.perf_counter() - t0})
        if target is not None:
            save_clip_features(target, cf)
    if backbone is not None:
        seq = extract_features(path, backbone, cache_dir=cache_dir, progress=progress, max_frames=max_frames)
        if len(seq) != len(cf):
            raise InputShapeError(f"{name}: {len(seq)} appearance frames vs {len(cf)} motion frames")
        cf.appearance = seq.features.astype(np.float32)
    if crops is not None:
        add_crop_features(path, cf, crops, cache_dir=cache_dir, max_frames=max_frames, progress=progress)
    return cf


def features_from_frames(frames: Any, cfg: AnomalyConfig, *, fps: float, clip_id: str = "frames",
                         backbone: Any = None, crops: CropEncoder | None = None) -> ClipFeatures:
    """:class:`ClipFeatures` of in-memory BGR frames (``(T, H, W, 3)`` uint8 array or a list of frames);
    object crop features too when ``crops`` is given (batched over the clip)."""
    comp = FeatureComputer(cfg.motion, cfg.regions if cfg.needs_regions else None, camera=pixel_compensation(cfg))
    maps, valid, desc, attrs, rframe = [], [], [], [], []
    for i, image in enumerate(frames):
        f = comp.step(np.asarray(image), i, i / fps)
        maps.append(f.magnitude_map)
        valid.append(f.valid)
        desc.append(f.descriptor)
        attrs.append(f.region_attrs)
        rframe.append(np.full(len(f.region_attrs), i, np.int64))
    if not maps:
        raise EmptyVideoError(f"{clip_id}: no frames")
    app = [] if backbone is None else [backbone.extract([np.asarray(im) for im in frames[i:i + APPEARANCE_BATCH]])
                                       for i in range(0, len(maps), APPEARANCE_BATCH)]
    t = len(maps)
    working = tuple(comp.motion.working_size or (0, 0))
    region_crops = None if crops is None else crops.encode_clip(frames, attrs, working)
    return ClipFeatures(clip_id, float(fps), np.arange(t, dtype=np.int64), np.arange(t) / float(fps), np.stack(maps),
                        np.array(valid, bool), np.stack(desc).astype(np.float32),
                        np.concatenate(attrs).astype(np.float32).reshape(-1, len(ATTRIBUTE_NAMES)),
                        np.concatenate(rframe), working, np.concatenate(app).astype(np.float32) if app else None,
                        region_crops=region_crops)
