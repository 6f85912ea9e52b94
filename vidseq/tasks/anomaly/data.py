"""The normal clips of an anomaly dataset folder and their stream inputs (cached, in parallel processes)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidseq.config import from_dict, to_dict
from vidseq.errors import DatasetError
from vidseq.models.anomaly.clip import ClipFeatures
from vidseq.models.anomaly.model import AnomalyConfig
from vidseq.tasks.anomaly.features import (
    extract_clip_features,
    make_backbone,
    make_crop_encoder,
)


@dataclass
class ClipRef:
    clip_id: str
    path: Path
    split: str


def clips_of(data: Path, splits: Sequence[str]) -> list[ClipRef]:
    from vidseq.sequences.manifest import load_dataset

    ds = load_dataset(data)
    out = []
    for c in ds.clips_for(list(splits)):
        if c.path is None:
            raise DatasetError(f"{ds.manifest_path}: clip '{c.id}' has no video path (anomaly needs videos)")
        out.append(ClipRef(c.id, Path(c.path), c.split))
    return out


def normal_clips_in(folder: Path) -> list[ClipRef]:
    """Every video file (and image-sequence folder) directly in ``folder``, as normal training clips.

    Raises:
        DatasetError: no such folder, or nothing playable in it.
    """
    from vidseq.video.frames import VIDEO_EXTENSIONS, list_images

    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder of normal clips")
    refs = []
    for p in sorted(folder.iterdir()):
        if (p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS) or (p.is_dir() and list_images(p)):
            refs.append(ClipRef(p.stem, p, "train"))
    if not refs:
        raise DatasetError(f"{folder}: no video files or image folders (normal clips) in it")
    return refs


def split_train_val(data: Path, val_clips: int) -> tuple[list[ClipRef], list[ClipRef]]:
    """Training and validation clips of a dataset folder, or of a plain folder of normal clips (no
    ``dataset.yaml``: every video in it is normal; the last ``val_clips`` are held out for validation)."""
    if data.is_dir() and not (data / "dataset.yaml").is_file():
        train, val = normal_clips_in(data), []
    else:
        train = clips_of(data, ["train"])
        val = clips_of(data, ["val"])
    if not train:
        raise DatasetError(f"{data}: no 'train' clips")
    if not val and val_clips:
        if val_clips >= len(train):
            raise DatasetError(f"{data}: val_clips={val_clips} leaves no training clips ({len(train)})")
        train, val = train[:-val_clips], train[-val_clips:]
    return train, val


def _extract_one(args: tuple[str, str, dict[str, Any], str | None]) -> ClipFeatures:
    import cv2

    path, clip_id, cfg_dict, cache_dir = args
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    cfg = from_dict(AnomalyConfig, cfg_dict)
    # object crops here too, so they are encoded in the worker processes (one encoder per clip: ~0.2 s)
    return extract_clip_features(path, cfg, clip_id=clip_id, cache_dir=cache_dir, crops=make_crop_encoder(cfg))


def extract_all(refs: Sequence[ClipRef], cfg: AnomalyConfig, cache_dir: str | None, workers: int,
                device: str = "cpu", progress: bool = True) -> list[ClipFeatures]:
    """Stream inputs of every clip (motion, regions and object crops in ``workers`` processes on CPU;
    appearance after)."""
    from tqdm import tqdm

    jobs = [(str(r.path), r.clip_id, to_dict(cfg), cache_dir) for r in refs]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        # spawn, not fork: this process has threads (PyTorch, OpenVINO, decoders), and a child forked while one
        # of them held a lock (libcrypto's, seen in a test run) waits for it forever; the pool's exit then hangs
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            feats = list(tqdm(pool.map(_extract_one, jobs), total=len(jobs), desc="clip features",
                              disable=not progress))
    else:
        feats = [_extract_one(j) for j in tqdm(jobs, desc="clip features", disable=not progress)]
    backbone = make_backbone(cfg, device)
    if backbone is not None:
        from vidseq.features.extractor import extract_features

        for r, cf in zip(refs, feats, strict=True):
            seq = extract_features(r.path, backbone, cache_dir=cache_dir, progress=progress)
            if len(seq) != len(cf):
                raise DatasetError(f"clip '{r.clip_id}': {len(seq)} appearance frames vs {len(cf)} motion frames")
            cf.appearance = seq.features.astype(np.float32)
    return feats

