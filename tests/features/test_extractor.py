from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vidseq.errors import (
    CorruptVideoError,
    InputShapeError,
    SourceNotFoundError,
    VidseqError,
)
from vidseq.features.backbones import create_backbone
from vidseq.features.extractor import (
    FeatureSequence,
    extract_features,
    load_features,
    save_features,
)
from vidseq.video.sources import iter_frames


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("resnet18", pretrained=False, device="cpu", imgsz=64)


def test_extract_matches_direct_backbone(tiny_video: Path, backbone) -> None:
    seq = extract_features(tiny_video, backbone, batch_size=5, progress=False)
    assert seq.features.shape == (12, 512)
    assert seq.frame_index.tolist() == list(range(12))
    np.testing.assert_allclose(seq.timestamp_s, np.arange(12) / 10.0)
    direct = backbone.extract([f.image for f in iter_frames(tiny_video)])
    np.testing.assert_allclose(seq.features, direct, rtol=1e-4, atol=1e-4)
    assert seq.meta["backbone"] == "resnet18" and seq.meta["weights"]["pretrained"] is False
    assert len(seq.meta["content_sha256"]) == 64


def test_stride_and_window(tiny_video: Path, backbone) -> None:
    seq = extract_features(tiny_video, backbone, stride=2, start_s=0.2, max_frames=3, progress=False)
    assert seq.frame_index.tolist() == [2, 4, 6]


def test_cache_hit_and_invalidation(tmp_path: Path, tiny_video: Path, backbone, make_video) -> None:
    out = tmp_path / "f.npz"
    first = extract_features(tiny_video, backbone, out_path=out, progress=False)
    assert first.meta["cache_hit"] is False and out.is_file()
    mtime = out.stat().st_mtime_ns
    second = extract_features(tiny_video, backbone, out_path=out, progress=False)
    assert second.meta["cache_hit"] is True and out.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first.features, second.features)
    # other settings -> recompute
    third = extract_features(tiny_video, backbone, out_path=out, stride=2, progress=False)
    assert third.meta["cache_hit"] is False and len(third) == 6
    # other content, same name -> recompute
    make_video(tiny_video, n_frames=5)
    fourth = extract_features(tiny_video, backbone, out_path=out, progress=False)
    assert fourth.meta["cache_hit"] is False and len(fourth) == 5


def test_cache_dir(tmp_path: Path, tiny_video: Path, backbone) -> None:
    a = extract_features(tiny_video, backbone, cache_dir=tmp_path / "c", progress=False)
    files = list((tmp_path / "c").glob("tiny-*.npz"))
    assert len(files) == 1
    b = extract_features(tiny_video, backbone, cache_dir=tmp_path / "c", progress=False)
    assert b.meta["cache_hit"] and np.array_equal(a.features, b.features)


def test_roundtrip_and_no_pickle(tmp_path: Path) -> None:
    seq = FeatureSequence(np.ones((3, 4), np.float32), np.arange(3), np.arange(3) / 2, {"a": 1})
    p = save_features(tmp_path / "x.npz", seq)
    back = load_features(p)
    assert back.meta == {"a": 1} and back.features.shape == (3, 4)
    with np.load(p, allow_pickle=False) as z:
        assert json.loads(str(z["meta"])) == {"a": 1}
    assert not list(tmp_path.glob("*.part*"))


def test_bad_files(tmp_path: Path, backbone) -> None:
    with pytest.raises(SourceNotFoundError):
        extract_features(tmp_path / "none.mp4", backbone, out_path=tmp_path / "o.npz")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(CorruptVideoError):
        extract_features(bad, backbone, out_path=tmp_path / "o.npz")
    assert not (tmp_path / "o.npz").exists()
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(VidseqError, match="junk.npz"):
        load_features(tmp_path / "junk.npz")
    nan = FeatureSequence(np.full((2, 3), np.nan, np.float32), np.arange(2), np.arange(2.0), {})
    save_features(tmp_path / "nan.npz", nan)
    with pytest.raises(InputShapeError, match="NaN"):
        load_features(tmp_path / "nan.npz")


def test_shape_validation() -> None:
    with pytest.raises(InputShapeError):
        FeatureSequence(np.ones(3, np.float32), np.arange(3), np.arange(3.0))
    with pytest.raises(InputShapeError):
        FeatureSequence(np.ones((3, 2), np.float32), np.arange(2), np.arange(3.0))


def test_image_folder(tmp_path: Path, backbone) -> None:
    import cv2

    folder = tmp_path / "seq"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), np.full((40, 50, 3), i * 40, np.uint8))
    seq = extract_features(folder, backbone, progress=False, out_path=tmp_path / "seq.npz")
    assert len(seq) == 4 and seq.meta["source_kind"] == "folder"
    assert extract_features(folder, backbone, progress=False, out_path=tmp_path / "seq.npz").meta["cache_hit"]


def test_decode_error_in_thread_propagates(tmp_path: Path, backbone) -> None:
    import cv2

    folder = tmp_path / "mixed"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), np.zeros((20, 20, 3), np.uint8))
    cv2.imwrite(str(folder / "1.png"), np.zeros((30, 20, 3), np.uint8))
    with pytest.raises(VidseqError, match="mixes frame sizes"):
        extract_features(folder, backbone, batch_size=1, progress=False, out_path=tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
