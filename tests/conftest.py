"""Shared fixtures: tiny generated videos and image folders, the shared benchmark data when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``$VIDSEQ_SHARED_DATA`` or ``../shared/data`` beside the checkout; None when absent."""
    env = os.environ.get("VIDSEQ_SHARED_DATA")
    cand = Path(env) if env else REPO.parent / "shared" / "data"
    return cand if cand.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("../shared/data is absent")
    return d


def write_video(path: Path, n_frames: int = 12, size: tuple[int, int] = (96, 64), fps: float = 10.0,
                fourcc: str = "MJPG") -> Path:
    """Write a small video of a white square moving right over a gradient (BGR uint8)."""
    import cv2

    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    for i in range(n_frames):
        frame = np.zeros((h, w, 3), np.uint8)
        frame[:, :, 1] = np.linspace(0, 200, w, dtype=np.uint8)[None, :]
        x = 4 + i * 3
        frame[20:36, x:x + 16] = 255
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def tiny_video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "tiny.avi")


@pytest.fixture
def make_video():
    """Factory fixture: ``make_video(path, n_frames=12, size=(96, 64), fps=10.0)``."""
    return write_video
