"""Per-object appearance: backbone features of moving-region crops.

A moving region (:mod:`vidseq.features.regions`) is found at the motion working resolution; its box is
recovered from its attributes (:func:`region_boxes`), mapped to the full frame, enlarged by a margin, cut
out and resized to a square (:func:`crop_regions`), and :class:`CropEncoder` runs the crops through a
backbone in batches: one vector per object, parallel to the region attribute rows. The anomaly model's
``crops`` stream fits a density on the vectors of normal objects (what a normal object looks like), so a
vehicle where only pedestrians appear scores high even at walking speed.

Example::

    enc = CropEncoder(CropConfig(), create_backbone("mobilenet_v2", imgsz=64, feature_dim=256))
    vectors = enc.encode(frame.image, region_attrs, working_size=(360, 240))   # (N, 256)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidseq.errors import ConfigError, InputShapeError
from vidseq.features.regions import ATTRIBUTE_NAMES

_H, _W, _YB, _XC = (ATTRIBUTE_NAMES.index(n) for n in ("height", "width", "y_bottom", "x_center"))


@dataclass(frozen=True)
class CropConfig:
    """How object crops are cut and encoded.

    Attributes:
        size: square side (px) the crop is resized to before the backbone.
        margin: the box grows by this fraction of its size on every side (context around the object).
        feature_dim: backbone output width (``None``: native; else the backbone's fixed orthogonal projection).
        batch_size: crops per backbone call.
    """

    size: int = 64
    margin: float = 0.15
    feature_dim: int | None = 256
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.size < 32:
            raise ConfigError(f"crops.size must be >= 32 (backbone input), got {self.size}")
        if not 0 <= self.margin <= 2:
            raise ConfigError(f"crops.margin must be in [0, 2], got {self.margin}")
        if self.feature_dim is not None and self.feature_dim < 1:
            raise ConfigError(f"crops.feature_dim must be positive or null, got {self.feature_dim}")
        if self.batch_size < 1:
            raise ConfigError(f"crops.batch_size must be >= 1, got {self.batch_size}")


def region_boxes(attrs: np.ndarray) -> np.ndarray:
    """``(N, A)`` region attributes -> ``(N, 4)`` float32 xyxy boxes at the working resolution
    (the attributes hold height, width, bottom edge and centre x, so the box is exact)."""
    a = np.asarray(attrs, np.float32).reshape(-1, len(ATTRIBUTE_NAMES))
    x1 = a[:, _XC] - a[:, _W] / 2
    return np.stack([x1, a[:, _YB] - a[:, _H], x1 + a[:, _W], a[:, _YB]], 1)


def crop_regions(image: np.ndarray, boxes: np.ndarray, working_size: tuple[int, int], margin: float,
                 ) -> list[np.ndarray]:
    """Crops of ``image`` (BGR ``(H, W, 3)``) under ``boxes`` given at ``working_size`` ``(w, h)``.

    Boxes are scaled to the image, grown by ``margin`` per side, clipped to the image (at least 2x2 px).
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputShapeError(f"crops: frames must be BGR (H, W, 3), got {image.shape}")
    hi, wi = image.shape[:2]
    ww, wh = working_size
    if ww <= 0 or wh <= 0:
        raise InputShapeError(f"crops: bad working size {working_size}")
    sx, sy = wi / ww, hi / wh
    out = []
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        mx, my = margin * (x2 - x1), margin * (y2 - y1)
        a0 = int(np.clip(np.floor((x1 - mx) * sx), 0, wi - 2))
        b0 = int(np.clip(np.floor((y1 - my) * sy), 0, hi - 2))
        a1 = int(np.clip(np.ceil((x2 + mx) * sx), a0 + 2, wi))
        b1 = int(np.clip(np.ceil((y2 + my) * sy), b0 + 2, hi))
        out.append(image[b0:b1, a0:a1])
    return out


class CropEncoder:
    """Encodes object crops with a backbone (:class:`vidseq.features.backbones.Backbone` contract).

    Args:
        cfg: crop settings.
        backbone: built at ``imgsz = cfg.size`` and ``feature_dim = cfg.feature_dim``
            (see :func:`make_crop_encoder`).
    """

    def __init__(self, cfg: CropConfig, backbone: Any) -> None:
        self.cfg = cfg
        self.backbone = backbone

    @property
    def feature_dim(self) -> int:
        return int(self.backbone.feature_dim)

    def info(self) -> dict[str, Any]:
        return {"size": self.cfg.size, "margin": self.cfg.margin, "backbone": self.backbone.info()}

    def _run(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.feature_dim), np.float32)
        return np.concatenate([self.backbone.extract(list(crops[i:i + self.cfg.batch_size]))
                               for i in range(0, len(crops), self.cfg.batch_size)]).astype(np.float32)

    def encode(self, image: np.ndarray, attrs: np.ndarray, working_size: tuple[int, int]) -> np.ndarray:
        """One frame: ``(N, A)`` region attributes -> ``(N, feature_dim)`` float32."""
        return self._run(crop_regions(image, region_boxes(attrs), working_size, self.cfg.margin))

    def encode_clip(self, frames: Iterable[np.ndarray], attrs_per_frame: Sequence[np.ndarray],
                    working_size: tuple[int, int]) -> np.ndarray:
        """Every frame of a clip (crops batched across frames): rows in frame order, then region order.

        Raises:
            InputShapeError: fewer frames than ``attrs_per_frame`` entries.
        """
        chunks: list[np.ndarray] = []
        pending: list[np.ndarray] = []
        seen = 0
        for image, attrs in zip(_frames(frames), attrs_per_frame, strict=False):
            seen += 1
            if len(attrs):
                pending.extend(c.copy() for c in crop_regions(image, region_boxes(attrs), working_size,
                                                              self.cfg.margin))
            if len(pending) >= self.cfg.batch_size:
                chunks.append(self._run(pending))
                pending = []
        if seen != len(attrs_per_frame):
            raise InputShapeError(f"crops: {seen} frames for {len(attrs_per_frame)} frames of regions")
        chunks.append(self._run(pending))
        return np.concatenate(chunks)


def _frames(frames: Iterable[Any]) -> Iterator[np.ndarray]:
    for f in frames:
        yield f.image if hasattr(f, "image") else np.asarray(f)


def make_crop_encoder(cfg: CropConfig, backbone: str = "mobilenet_v2", weights: str | None = None,
                      device: str = "cpu") -> CropEncoder:
    """A :class:`CropEncoder` over a pretrained backbone (weights through the one resolver)."""
    from vidseq.features.backbones import create_backbone

    bb = create_backbone(backbone, weights=weights, pretrained=True, device=device, imgsz=cfg.size,
                         feature_dim=cfg.feature_dim)
    return CropEncoder(cfg, bb)


__all__ = ["CropConfig", "CropEncoder", "crop_regions", "make_crop_encoder", "region_boxes"]
