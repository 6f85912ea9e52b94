"""Object crops: boxes recovered from region attributes, crops cut at full resolution, batched encoding."""

from __future__ import annotations

import numpy as np
import pytest

from vidseq.errors import ConfigError, InputShapeError
from vidseq.features.crops import (
    CropConfig,
    CropEncoder,
    crop_regions,
    make_crop_encoder,
    region_boxes,
)
from vidseq.features.regions import RegionDetector, region_attributes


def _moving_box_frames(n: int = 12) -> list[np.ndarray]:
    frames = []
    for t in range(n):
        img = np.full((90, 120, 3), 128, np.uint8)
        img[30:50, 10 + 4 * t:22 + 4 * t] = 20
        frames.append(img)
    return frames


def test_region_boxes_are_the_detector_boxes() -> None:
    det = RegionDetector()
    flow = np.zeros((90, 120, 2), np.float32)
    found = 0
    for img in _moving_box_frames():
        regs = det.step(img)
        attrs = region_attributes(regs, flow)
        np.testing.assert_array_equal(region_boxes(attrs), regs.xyxy)
        found += len(regs)
    assert found > 0


def test_crops_are_scaled_to_the_image_grown_by_the_margin_and_clipped() -> None:
    img = np.arange(200 * 400 * 3, dtype=np.uint32).reshape(200, 400, 3).astype(np.uint8)
    boxes = np.array([[10, 10, 20, 30], [-5, -5, 3, 3], [190, 90, 200, 100]], np.float32)
    a, b, c = crop_regions(img, boxes, working_size=(200, 100), margin=0.5)
    assert a.shape[:2] == (2 * 40, 2 * 20)  # (20 x 10 box + 50 % margin per side) x 2
    np.testing.assert_array_equal(a, img[0:80, 10:50])
    assert b.shape[0] >= 2 and b.shape[1] >= 2  # clipped at the top-left corner
    assert c.shape[:2] == (30, 30)  # clipped at the bottom-right corner
    with pytest.raises(InputShapeError, match="BGR"):
        crop_regions(img[..., 0], boxes, (200, 100), 0.1)
    with pytest.raises(ConfigError, match="crops.size"):
        CropConfig(size=16)


@pytest.mark.weights
def test_clip_encoding_equals_frame_by_frame_with_the_packaged_backbone() -> None:
    enc = make_crop_encoder(CropConfig(size=64, feature_dim=128, batch_size=5))
    assert enc.feature_dim == 128 and enc.backbone.weights.pretrained
    det = RegionDetector()
    flow = np.zeros((90, 120, 2), np.float32)
    frames = _moving_box_frames()
    attrs = [region_attributes(det.step(img), flow) for img in frames]
    per_frame = np.concatenate([enc.encode(img, a, (120, 90)) for img, a in zip(frames, attrs, strict=True)])
    whole = enc.encode_clip(frames, attrs, (120, 90))
    assert whole.shape == (sum(len(a) for a in attrs), 128) and len(whole) > 0
    np.testing.assert_allclose(whole, per_frame, atol=1e-4, rtol=1e-4)
    assert enc.encode(frames[0], np.zeros((0, attrs[1].shape[1]), np.float32), (120, 90)).shape == (0, 128)
    with pytest.raises(InputShapeError, match="frames for"):
        enc.encode_clip(frames[:3], attrs, (120, 90))


def test_encoder_uses_the_backbone_contract() -> None:
    from vidseq.features.backbones import create_backbone

    enc = CropEncoder(CropConfig(size=32, feature_dim=16), create_backbone("resnet18", pretrained=False, imgsz=32,
                                                                            feature_dim=16))
    x = enc.encode(np.zeros((40, 40, 3), np.uint8), np.array([[0, 0, 0, 0, 10, 8, 80, 30, 20]], np.float32),
                   (40, 40))
    assert x.shape == (1, 16) and np.isfinite(x).all()
