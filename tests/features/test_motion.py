"""Motion descriptors: flow speed of a moving pattern, streaming state, descriptor layout, caching, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidseq.errors import ConfigError, InputShapeError
from vidseq.features.motion import (
    CELL_STATS,
    MotionConfig,
    MotionExtractor,
    cell_statistics,
    descriptor_names,
    working_size,
)


def moving_texture(n: int = 6, speed: float = 3.0, size: tuple[int, int] = (128, 96)) -> list[np.ndarray]:
    """BGR frames: a textured 32x32 patch moving right by ``speed`` px/frame over a static gray background."""
    w, h = size
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 255, (32, 32)).astype(np.uint8)
    out = []
    for i in range(n):
        img = np.full((h, w), 128, np.uint8)
        x = int(10 + i * speed)
        img[40:72, x:x + 32] = tex
        out.append(np.repeat(img[..., None], 3, 2))
    return out


@pytest.mark.parametrize("method", ["farneback", "dis"])
def test_flow_measures_the_patch_speed(method: str) -> None:
    ext = MotionExtractor(MotionConfig(method=method, width=0, grid=(3, 4), map_stride=4))
    frames = moving_texture(speed=3.0)
    first = ext.step(frames[0], 0, 0.0)
    assert not first.valid and not first.flow.any()
    m = ext.step(frames[1], 1, 0.1)
    assert m.valid and m.flow.shape == (96, 128, 2) and m.magnitude_map.shape == (24, 32)
    inside = m.flow[46:66, 20:36]  # interior of the patch at its new position
    assert np.median(inside[..., 0]) == pytest.approx(3.0, abs=0.6)
    assert abs(np.median(inside[..., 1])) < 0.5
    if method == "farneback":  # DIS's variational refinement spreads flow into flat areas
        assert np.abs(m.flow[:20]).max() < 0.5  # static background stays still
    assert m.descriptor.shape == (ext.descriptor_dim,) and m.descriptor.dtype == np.float32


def test_flow_across_dropped_frames_is_measured_per_step() -> None:
    """A live reader that drops frames hands over frames 2-3 indices apart: the patch moved 2-3x as far, and
    its speed must still read 1.5 px per analysed step (or a model learnt at full rate sees every walker as fast)."""
    frames = moving_texture(n=12, speed=1.5)

    def patch_speed(ext: MotionExtractor, picks: list[int]) -> list[float]:
        out = []
        for i in picks:
            m = ext.step(frames[i], i, i / 10)
            if m.valid:
                x = int(10 + i * 1.5)  # the patch's interior at its new position
                out.append(float(np.median(m.flow[46:66, x + 8:x + 24, 0])))
        return out

    picks = [0, 2, 5, 7, 10]  # gaps 2, 3, 2, 3 source frames
    assert patch_speed(MotionExtractor(MotionConfig(width=0)), picks) == pytest.approx([1.5] * 4, abs=0.3)
    # every 2nd frame analysed by design (frame_step 2): a step of 2 frames reads as one step, a drop on top of it
    # (4 frames) as one too
    per_two = patch_speed(MotionExtractor(MotionConfig(width=0), frame_step=2), [0, 2, 6, 8])
    assert per_two == pytest.approx([3.0] * 3, abs=0.5)
    ext = MotionExtractor(MotionConfig(width=0))
    assert ext.steps_since(5) == 1.0  # no previous frame
    with pytest.raises(InputShapeError, match="frame_step"):
        MotionExtractor(MotionConfig(), frame_step=0)


def small_fast_object(n: int, speed: float, size: tuple[int, int] = (160, 96)) -> list[np.ndarray]:
    """BGR frames: a textured 16x16 patch crossing a textured static background at ``speed`` px/frame."""
    import cv2

    w, h = size
    rng = np.random.default_rng(1)
    bg = cv2.GaussianBlur(rng.integers(60, 200, (h, w)).astype(np.uint8), (0, 0), 2.0)
    tex = cv2.GaussianBlur(rng.integers(0, 255, (16, 16)).astype(np.uint8), (0, 0), 1.0)
    out = []
    for i in range(n):
        img = bg.copy()
        x = int(8 + i * speed)
        img[40:56, x:x + 16] = tex
        out.append(np.repeat(img[..., None], 3, 2))
    return out


@pytest.mark.parametrize("camera", [False, True])
def test_a_dropped_frame_handed_over_keeps_flow_between_consecutive_frames(camera: bool) -> None:
    """A small object moving a quarter of its size per frame: across a dropped frame dense flow loses it (half
    its size), between the consecutive source frames a live reader also hands over it does not."""
    from vidseq.features.camera import CameraConfig

    frames = small_fast_object(n=12, speed=4.0)
    cam = CameraConfig() if camera else None

    def peak_speed(previous: bool) -> list[float]:
        ext = MotionExtractor(MotionConfig(width=0), cam)
        out = []
        for i in (0, 2, 4, 6, 8):
            m = ext.step(frames[i], i, i / 10, (frames[i - 1], i - 1) if previous and i else None)
            if m.valid:
                x = int(8 + i * 4.0)  # the patch at its new position
                out.append(float(np.abs(m.flow[40:56, x:x + 16, 0]).max()))
        return out

    assert peak_speed(True) == pytest.approx([4.0] * 4, abs=0.8)  # a step is one source frame
    assert max(peak_speed(False)) < 2.0  # the analysed frames alone: the object is lost
    # every 2nd frame analysed by design (frame_step 2): one source frame is half a step, read as 8 a step
    ext = MotionExtractor(MotionConfig(width=0), cam, frame_step=2)
    ext.step(frames[0], 0, 0.0)
    m = ext.step(frames[3], 3, 0.3, (frames[2], 2))  # 3 frames on, more than a step: the frame before is used
    assert float(np.abs(m.flow[40:56, 20:36, 0]).max()) == pytest.approx(8.0, abs=1.6)
    m = ext.step(frames[5], 5, 0.5, (frames[4], 4))  # a step of 2 as designed: the analysed frames are used
    assert float(np.abs(m.flow[40:56, 28:44, 0]).max()) < 4.0


def test_descriptor_layout_and_cell_statistics() -> None:
    cfg = MotionConfig(grid=(2, 3))
    assert len(descriptor_names(cfg)) == MotionExtractor(cfg).descriptor_dim == 2 * 3 * len(CELL_STATS) + 4
    flow = np.zeros((40, 60, 2), np.float32)
    flow[:20, :20, 0] = 2.0  # top-left cell moves right at 2 px/frame
    stats = cell_statistics(flow, np.zeros((40, 60), np.float32), (2, 3), 0.5)
    assert stats.shape == (2, 3, len(CELL_STATS))
    assert stats[0, 0, 0] == pytest.approx(2.0) and stats[0, 0, 2] == pytest.approx(2.0)
    assert stats[0, 0, 4] == pytest.approx(1.0) and stats[1, 2].sum() == 0


def test_working_size_keeps_aspect_and_stride() -> None:
    assert working_size(720, 480, MotionConfig(width=360, map_stride=4)) == (360, 240)
    assert working_size(100, 50, MotionConfig(width=0, map_stride=4)) == (100, 48)


def test_reset_and_bad_inputs() -> None:
    ext = MotionExtractor(MotionConfig(width=0))
    frames = moving_texture(n=2)
    ext.step(frames[0])
    ext.reset()
    assert not ext.step(frames[1]).valid
    with pytest.raises(InputShapeError, match="size changed"):
        ext.step(np.zeros((50, 50, 3), np.uint8))
    with pytest.raises(InputShapeError):
        MotionExtractor().step(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ConfigError):
        MotionConfig(grid=(0, 3))


def test_whole_clip_motion_is_cached(tmp_path: Path, tiny_video: Path) -> None:
    from vidseq.models.anomaly.model import AnomalyConfig
    from vidseq.tasks.anomaly.features import extract_clip_features, load_clip_features

    cfg = AnomalyConfig(motion=MotionConfig(width=0, grid=(2, 2)))
    seq = extract_clip_features(tiny_video, cfg, cache_dir=tmp_path)
    assert len(seq) == 12 and not seq.valid[0] and seq.valid[1:].all()
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    again = extract_clip_features(tiny_video, cfg, cache_dir=tmp_path)
    np.testing.assert_allclose(again.descriptors, seq.descriptors)
    assert load_clip_features(files[0]).magnitude_maps.shape == seq.magnitude_maps.shape
    # the moving square of the fixture moves right by 3 px/frame
    assert seq.descriptors[1:, 2::len(CELL_STATS)][:, :4].max() > 0.1
