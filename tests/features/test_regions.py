"""Moving regions: background subtraction finds moving boxes; flow-in-box velocity; normalisation; errors."""

from __future__ import annotations

import numpy as np
import pytest

from vidseq.errors import ConfigError, InputShapeError
from vidseq.features.motion import MotionConfig, MotionExtractor
from vidseq.features.regions import (
    ATTRIBUTE_NAMES,
    RegionConfig,
    RegionDetector,
    normalise_attributes,
    region_attributes,
)


def scene(n: int = 25) -> list[np.ndarray]:
    """Gray frames: a textured 12x20 box moving right at 2 px/frame and one moving down at 1 px/frame."""
    rng = np.random.default_rng(0)
    bg = rng.integers(100, 140, (96, 160)).astype(np.uint8)
    tex = rng.integers(0, 60, (20, 12)).astype(np.uint8)
    out = []
    for t in range(n):
        img = bg.copy()
        img[20:40, 10 + 2 * t:22 + 2 * t] = tex
        img[40 + t:60 + t, 120:132] = tex
        out.append(img)
    return out


@pytest.mark.parametrize("method", ["mog2", "knn", "flow"])
def test_finds_the_moving_boxes_with_their_velocity(method: str) -> None:
    det = RegionDetector(RegionConfig(method=method, min_area=30))
    ext = MotionExtractor(MotionConfig(width=0))
    frames = scene()
    for t, img in enumerate(frames):
        m = ext.step(img, t)
        regs = det.step(m.gray, m.flow, t)
    attrs = region_attributes(regs, m.flow)
    assert attrs.shape == (len(regs), len(ATTRIBUTE_NAMES)) and len(regs) >= 2
    t = len(frames) - 1
    right = np.argmin(np.hypot(attrs[:, 8] - (16 + 2 * t), attrs[:, 7] - 40))
    down = np.argmin(np.hypot(attrs[:, 8] - 126, attrs[:, 7] - (60 + t)))
    assert attrs[right, 2] == pytest.approx(2.0, abs=0.7) and abs(attrs[right, 3]) < 0.7
    assert attrs[down, 3] == pytest.approx(1.0, abs=0.5) and abs(attrs[down, 2]) < 0.5
    if method != "flow":  # flow smears beyond the object's edges
        assert attrs[right, 4] == pytest.approx(20, abs=6)  # box height


def test_normalise_attributes_divides_by_the_local_scale() -> None:
    attrs = np.array([[2.0, 3.0, 2.0, 0.0, 20.0, 10.0, 12.0, 40.0, 80.0]], np.float32)
    scale = np.full((24, 40), 2.0, np.float32)
    out = normalise_attributes(attrs, scale, (160, 96), map_stride=4)
    np.testing.assert_allclose(out[0, :7], attrs[0, :7] / 2.0)
    assert out[0, 7] == pytest.approx(40 / 96) and out[0, 8] == pytest.approx(0.5)
    assert normalise_attributes(np.zeros((0, 9), np.float32), scale, (160, 96)).shape == (0, 9)


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError):
        RegionConfig(min_area=0)
    with pytest.raises(InputShapeError, match="needs the frame's flow"):
        RegionDetector(RegionConfig(method="flow")).step(np.zeros((10, 10), np.uint8))
    with pytest.raises(InputShapeError):
        RegionDetector().step(np.zeros((10, 10), np.float32))
    regs = RegionDetector().step(np.zeros((10, 10), np.uint8))
    with pytest.raises(InputShapeError, match="differ in size"):
        region_attributes(regs, np.zeros((5, 5, 2), np.float32))
