from __future__ import annotations

import numpy as np
import pytest
import torch

from vidseq.errors import BackboneError, InputShapeError
from vidseq.features.backbones import BACKBONES, create_backbone, orthogonal_projection

FAST = {  # random-init variants: no weights needed, build in seconds
    "resnet18": {"pretrained": False},
    "resnet34": {"pretrained": False},
    "mobilenet_v2": {"pretrained": False},
    "yolo": {"pretrained": False, "weights": "yolov8n.yaml"},
}


def frames(n: int, h: int = 72, w: int = 128, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_every_registry_entry_is_covered() -> None:
    assert set(FAST) == set(BACKBONES)


@pytest.mark.parametrize("name", sorted(FAST))
@pytest.mark.parametrize("feature_dim", [512, None, 128])
def test_backbone_dims(name: str, feature_dim: int | None) -> None:
    bb = create_backbone(name, device="cpu", imgsz=64, feature_dim=feature_dim, **FAST[name])
    out = bb.extract(frames(2))
    expected = feature_dim or bb.native_dim
    assert bb.feature_dim == expected
    assert out.shape == (2, expected) and out.dtype == np.float32
    assert np.isfinite(out).all()
    info = bb.info()
    assert info["weights"]["pretrained"] is False
    assert info["projection"] is None if expected == bb.native_dim else info["projection"]


@pytest.mark.parametrize("name", sorted(FAST))
def test_batch_equals_single(name: str) -> None:
    bb = create_backbone(name, device="cpu", imgsz=64, **FAST[name])
    imgs = frames(3)
    batch = bb.extract(imgs)
    single = np.concatenate([bb.extract([im]) for im in imgs])
    np.testing.assert_allclose(batch, single, rtol=1e-4, atol=1e-4)


def test_native_widths() -> None:
    assert create_backbone("resnet18", pretrained=False, device="cpu", imgsz=64).native_dim == 512
    assert create_backbone("resnet34", pretrained=False, device="cpu", imgsz=64).native_dim == 512
    assert create_backbone("mobilenet_v2", pretrained=False, device="cpu", imgsz=64).native_dim == 1280
    assert create_backbone("yolo", pretrained=False, weights="yolov8s.yaml", device="cpu", imgsz=64).native_dim == 512


def test_projection_is_orthogonal_and_fixed() -> None:
    p = orthogonal_projection(1280, 512)
    torch.testing.assert_close(p.T @ p, torch.eye(512), atol=1e-4, rtol=0)
    assert torch.equal(p, orthogonal_projection(1280, 512))
    up = orthogonal_projection(256, 512)
    torch.testing.assert_close(up @ up.T, torch.eye(256), atol=1e-4, rtol=0)


def test_unknown_backbone_suggests() -> None:
    with pytest.raises(BackboneError, match="did you mean 'resnet18'"):
        create_backbone("resnet81")


def test_wrong_input_shape() -> None:
    bb = create_backbone("resnet18", pretrained=False, device="cpu", imgsz=64)
    with pytest.raises(InputShapeError):
        bb.forward_features(torch.zeros(1, 4, 64, 64))
    with pytest.raises(InputShapeError):
        bb.extract([np.zeros((10, 10), np.uint8)])


def test_bad_feature_dim_and_device() -> None:
    with pytest.raises(BackboneError):
        create_backbone("resnet18", pretrained=False, feature_dim=0)
    if not torch.cuda.is_available():
        with pytest.raises(BackboneError, match="CUDA"):
            create_backbone("resnet18", pretrained=False, device="cuda")


def test_yolo_hook_gives_features_from_detection_pass() -> None:
    bb = create_backbone("yolo", pretrained=False, weights="yolov8n.yaml", device="cpu", imgsz=64)
    x = bb.preprocess(frames(2))
    with torch.inference_mode():
        bb.net(x)  # the detection forward pass ultralytics runs
        f = bb.last_features()
        assert torch.allclose(f, bb.forward_features(x), atol=1e-5)


def test_conv_bn_fusion_keeps_outputs_and_drops_batchnorm() -> None:
    import torchvision

    from vidseq.features.backbones import fuse_conv_bn

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    for m in net.modules():  # non-trivial BN statistics, so folding them is actually exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    trunk = torch.nn.Sequential(*list(net.children())[:-2]).eval()
    fused = fuse_conv_bn(trunk)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(fused(x), trunk(x), rtol=1e-4, atol=1e-4)


def test_fusion_leaves_untraceable_modules_alone() -> None:
    from vidseq.features.backbones import fuse_conv_bn

    class DataDependent(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) if x.sum() > 0 else x  # control flow on values: fx cannot trace

    m = DataDependent()
    assert fuse_conv_bn(m) is m and not m.training
