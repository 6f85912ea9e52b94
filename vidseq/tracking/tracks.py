"""Detections + ultralytics tracking -> per-object tracks, in the same forward pass as frame features.

:class:`ObjectTracker` runs the detector held by a :class:`~vidseq.features.backbones.YoloBackbone` on each
frame (eager PyTorch or its OpenVINO export, one graph with two outputs: predictions and the last backbone
stage), ultralytics' ``non_max_suppression`` and ultralytics' tracker (ByteTrack or BoT-SORT, not a home-made
one) exactly as ``model.track`` wires them; the last backbone stage of that same pass gives the frame feature
(global average) and one appearance feature per box (average of the map cells under the box).

The network input is the frame's own size letterboxed to a multiple of 32, its long side capped at
``TrackerConfig.imgsz`` and never upscaled (``upscale: true`` restores ultralytics' letterbox to ``imgsz``);
the size used is in :meth:`ObjectTracker.describe` (and so in ``summary.json``).

When the detector is not a general one (e.g. the offline fall-detection YOLOv8s with classes
Normal/Fall), boxes are labelled class-agnostically as ``"object"``: its class names are not truth.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from vidseq.config import setting
from vidseq.errors import BackboneError
from vidseq.features.backbones import (
    Letterboxed,
    YoloBackbone,
    letterbox,
    network_input_hw,
)
from vidseq.video.sources import Frame

log = logging.getLogger(__name__)

# The 80 COCO class names ultralytics' COCO models carry (a detector with these names is "general").
COCO_NAMES = frozenset((
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
))


def is_general_detector(names: dict[int, str]) -> bool:
    """True when most class names are COCO names (the detector's labels can be shown as they are)."""
    if not names:
        return False
    known = sum(1 for n in names.values() if n in COCO_NAMES)
    return known >= max(2, int(0.8 * len(names)))


@dataclass(frozen=True)
class Detections:
    """One frame's boxes as parallel arrays (N boxes)."""

    frame_index: int
    timestamp_s: float
    xyxy: np.ndarray  # (N, 4) float32 pixels
    conf: np.ndarray  # (N,) float32
    class_id: np.ndarray  # (N,) int64
    track_id: np.ndarray  # (N,) int64, -1 when the tracker gave no id
    labels: tuple[str, ...]  # (N,)
    features: np.ndarray | None = None  # (N, D) float32 appearance features

    def __post_init__(self) -> None:
        n = self.xyxy.shape[0]
        if self.xyxy.shape != (n, 4):
            raise ValueError(f"xyxy must be (N, 4), got {self.xyxy.shape}")
        for name in ("conf", "class_id", "track_id"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must be ({n},), got {getattr(self, name).shape}")
        if len(self.labels) != n:
            raise ValueError(f"labels must have {n} entries, got {len(self.labels)}")
        if self.features is not None and self.features.shape[0] != n:
            raise ValueError(f"features must have {n} rows, got {self.features.shape[0]}")

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    @classmethod
    def empty(cls, frame_index: int, timestamp_s: float, dim: int | None = None) -> Detections:
        return cls(frame_index, timestamp_s, np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int64), np.zeros(0, np.int64), (),
                   None if dim is None else np.zeros((0, dim), np.float32))


@dataclass
class Track:
    """One tracked object: its boxes over time and a running mean appearance feature."""

    track_id: int
    label: str
    frame_index: list[int] = field(default_factory=list)
    timestamp_s: list[float] = field(default_factory=list)
    xyxy: list[np.ndarray] = field(default_factory=list)
    conf: list[float] = field(default_factory=list)
    feature_sum: np.ndarray | None = None

    def add(self, frame_index: int, timestamp_s: float, box: np.ndarray, conf: float,
            feature: np.ndarray | None) -> None:
        self.frame_index.append(frame_index)
        self.timestamp_s.append(timestamp_s)
        self.xyxy.append(np.asarray(box, np.float32))
        self.conf.append(float(conf))
        if feature is not None:
            self.feature_sum = feature.astype(np.float64) if self.feature_sum is None else self.feature_sum + feature

    @property
    def last_frame(self) -> int:
        return self.frame_index[-1]

    @property
    def feature(self) -> np.ndarray | None:
        """Mean appearance feature over the track's boxes."""
        return None if self.feature_sum is None else (self.feature_sum / len(self.frame_index)).astype(np.float32)

    def centers(self) -> np.ndarray:
        """(T, 2) box centres."""
        b = np.stack(self.xyxy)
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)

    def footpoints(self) -> np.ndarray:
        """(T, 2) bottom-centre points (where an object touches the ground)."""
        b = np.stack(self.xyxy)
        return np.stack([(b[:, 0] + b[:, 2]) / 2, b[:, 3]], axis=1)

    def heights(self) -> np.ndarray:
        b = np.stack(self.xyxy)
        return b[:, 3] - b[:, 1]

    def mot_rows(self) -> Iterable[tuple]:
        """Rows ``frame,id,x,y,w,h,class,conf`` (0-based frames; the dataset format's track CSV)."""
        for fi, box, c in zip(self.frame_index, self.xyxy, self.conf):
            x1, y1, x2, y2 = (float(v) for v in box)
            yield fi, self.track_id, round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2), self.label, \
                round(c, 4)


@dataclass(frozen=True)
class TrackerConfig:
    """Detector + tracker settings (part of the process/monitor configs)."""

    detector: Literal["yolo", "regions"] = "yolo"  # regions: class-agnostic moving regions (static cameras)
    tracker: Literal["bytetrack", "botsort"] = "bytetrack"
    conf: float = setting(0.25, ge=0.0, le=1.0)  # detections below are dropped before reporting (trackers still see >= 0.1)
    iou: float = setting(0.7, ge=0.0, le=1.0)
    imgsz: int = setting(640, ge=32, le=8192)  # the network input's long side at most (frames are never upscaled unless `upscale`)
    upscale: bool = False  # true: scale frames up to imgsz like ultralytics' letterbox (more pixels, slower)
    max_det: int = setting(100, ge=1)
    class_agnostic: Literal["auto", "yes", "no"] = "auto"  # auto: yes unless the detector has COCO names
    track_timeout_s: float = 2.0  # a track unseen this long is finished (its forecast stops)


class ObjectTracker:
    """Ultralytics tracking on a :class:`YoloBackbone`, one frame at a time, with features from the same pass."""

    def __init__(self, backbone: YoloBackbone, cfg: TrackerConfig = TrackerConfig()) -> None:
        if not isinstance(backbone, YoloBackbone):
            raise BackboneError("tracking needs the 'yolo' backbone (detections and features from one pass)")
        self.backbone = backbone
        self.cfg = cfg
        names = backbone.class_names
        general = is_general_detector(names)
        self.class_agnostic = cfg.class_agnostic == "yes" or (cfg.class_agnostic == "auto" and not general)
        self.names = names
        if self.class_agnostic:
            log.info("detector classes %s are not a general label set: boxes are labelled 'object'",
                     sorted(set(names.values()))[:6])
        self.tracks: dict[int, Track] = {}
        self.finished: list[Track] = []
        self._regions: _RegionTracking | None = None
        self._byte: Any = None  # ultralytics BYTETracker / BOTSORT, built on the first frame
        # Seconds spent per stage since construction (read by the pipeline's profile).
        self.stage_s: dict[str, float] = {"letterbox": 0.0, "detector": 0.0, "nms+tracker": 0.0, "regions": 0.0}
        self.input_hw: tuple[int, int] | None = None  # network input (H, W), set by prepare()
        self._frame_hw: tuple[int, int] | None = None
        if cfg.detector == "regions":
            self.class_agnostic = True

    def describe(self) -> dict[str, object]:
        bb = self.backbone
        hw = self.input_hw
        return {"detector": "yolo" if self.cfg.detector == "yolo" else "moving regions (background subtraction)",
                "tracker": self.cfg.tracker, "class_agnostic": self.class_agnostic,
                "detector_classes": self.names, "conf": self.cfg.conf, "imgsz": self.cfg.imgsz,
                "upscale": self.cfg.upscale,
                "network_input": None if hw is None else {"height": hw[0], "width": hw[1]},
                "runtime": bb.runtime, "precision": bb.precision, "export": bb.export_info()}

    def prepare(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        """Size the network input for ``(h, w)`` frames and build/load its network (an OpenVINO export is
        made once per input size and cached); returns the input ``(H, W)``."""
        hw = network_input_hw(frame_hw[0], frame_hw[1], self.cfg.imgsz, stride=self.backbone.stride,
                              upscale=self.cfg.upscale)
        if hw != self.input_hw:
            if self.input_hw is not None:
                log.warning("frame size changed to %dx%d: network input %dx%d", frame_hw[1], frame_hw[0], hw[1], hw[0])
            self.input_hw = hw
            self._frame_hw = frame_hw
            if self.backbone.runtime == "openvino":
                self.backbone.detector_network(hw)
        return hw

    def update(self, frame: Frame) -> tuple[Detections, np.ndarray]:
        """Detect + track on one frame. Returns the frame's detections and its ``(D,)`` feature."""
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import scale_boxes

        bb = self.backbone
        h, w = frame.image.shape[:2]
        if (h, w) != self._frame_hw:
            self.prepare((h, w))
        assert self.input_hw is not None
        t0 = time.perf_counter()
        lb = letterbox(frame.image, self.input_hw, upscale=self.cfg.upscale)
        t1 = time.perf_counter()
        pred, fmap = bb.detect(lb.x)  # (1, 4 + nc, N), (1, C, H/32, W/32)
        t2 = time.perf_counter()
        self.stage_s["letterbox"] += t1 - t0
        self.stage_s["detector"] += t2 - t1
        frame_feature = self._frame_feature(fmap)
        if self.cfg.detector == "regions":
            out = self._update_regions(frame, fmap, lb, frame_feature)
            self.stage_s["regions"] += time.perf_counter() - t2
            return out
        det = non_max_suppression(pred, conf_thres=0.1, iou_thres=self.cfg.iou, max_det=self.cfg.max_det,
                                  nc=len(self.names) if self.names else 0)[0]  # (n, 6) x1 y1 x2 y2 conf cls
        det = det.numpy()
        xyxy = scale_boxes(self.input_hw, det[:, :4].copy(), (h, w))
        boxes = _BoxArray(xyxy.astype(np.float32), det[:, 4].astype(np.float32), det[:, 5].astype(np.float32))
        tracker = self._tracker()
        tracked = tracker.update(boxes, frame.image)  # (M, 8) x1 y1 x2 y2 id conf cls idx
        if len(tracked):
            xyxy, conf = tracked[:, :4].astype(np.float32), tracked[:, 5].astype(np.float32)
            cls, ids = tracked[:, 6].astype(np.int64), tracked[:, 4].astype(np.int64)
        elif any(not t.is_activated for t in tracker.tracked_stracks):
            # As ultralytics' track callback: a frame with only unconfirmed new tracks shows no boxes.
            xyxy, conf, cls, ids = boxes.xyxy[:0], boxes.conf[:0], boxes.cls[:0].astype(np.int64), np.zeros(0, np.int64)
        else:
            xyxy, conf, cls = boxes.xyxy, boxes.conf, boxes.cls.astype(np.int64)
            ids = np.full(len(conf), -1, np.int64)
        keep = conf >= self.cfg.conf
        xyxy, conf, cls, ids = xyxy[keep], conf[keep], cls[keep], ids[keep]
        if len(xyxy) == 0:
            dets = Detections.empty(frame.frame_index, frame.timestamp_s, bb.feature_dim)
        else:
            labels = tuple("object" if self.class_agnostic else self.names.get(int(c), str(int(c))) for c in cls)
            feats = self._box_features(fmap, xyxy, lb)
            dets = Detections(frame.frame_index, frame.timestamp_s, xyxy, conf, cls, ids, labels, feats)
        self._update_tracks(dets)
        self.stage_s["nms+tracker"] += time.perf_counter() - t2
        return dets, frame_feature

    def _frame_feature(self, fmap: torch.Tensor) -> np.ndarray:
        f = fmap[0].float().mean(dim=(1, 2))  # (C,)
        proj = self.backbone.projection
        if proj is not None:
            f = f @ proj.cpu()
        return f.numpy()  # (D,)

    def _tracker(self) -> Any:
        if self._byte is None:
            from ultralytics.trackers.bot_sort import BOTSORT
            from ultralytics.trackers.byte_tracker import BYTETracker
            from ultralytics.utils import YAML, IterableSimpleNamespace
            from ultralytics.utils.checks import check_yaml

            args = IterableSimpleNamespace(**YAML.load(check_yaml(f"{self.cfg.tracker}.yaml")))
            args.device = "cpu"
            self._byte = (BOTSORT if self.cfg.tracker == "botsort" else BYTETracker)(args=args)
        return self._byte

    def _update_regions(self, frame: Frame, fmap: torch.Tensor, lb: Letterboxed,
                        frame_feature: np.ndarray) -> tuple[Detections, np.ndarray]:
        """Moving regions + ultralytics' tracker; the frame feature from the backbone's pass."""
        if self._regions is None:
            self._regions = _RegionTracking(self.cfg, fps=25.0)
        xyxy, ids = self._regions.update(frame.image)
        n = len(xyxy)
        feats = self._box_features(fmap, xyxy, lb) if n else None
        dets = Detections(frame.frame_index, frame.timestamp_s, xyxy.astype(np.float32), np.ones(n, np.float32),
                          np.zeros(n, np.int64), ids.astype(np.int64), ("object",) * n, feats)
        self._update_tracks(dets)
        return dets, frame_feature

    def _box_features(self, fmap: torch.Tensor, xyxy: np.ndarray, lb: Letterboxed) -> np.ndarray:
        """Average the map under each box (boxes mapped through the letterbox: ``ratio`` and ``pad``)."""
        fm = fmap[0].float()  # (C, h, w)
        c, mh, mw = fm.shape
        in_h, in_w = lb.x.shape[2:]
        r = lb.ratio
        pad_x, pad_y = lb.pad
        out = np.empty((len(xyxy), c), np.float32)
        for i, (x1, y1, x2, y2) in enumerate(xyxy):
            gx1 = int(np.clip(np.floor((x1 * r + pad_x) / in_w * mw), 0, mw - 1))
            gy1 = int(np.clip(np.floor((y1 * r + pad_y) / in_h * mh), 0, mh - 1))
            gx2 = int(np.clip(np.ceil((x2 * r + pad_x) / in_w * mw), gx1 + 1, mw))
            gy2 = int(np.clip(np.ceil((y2 * r + pad_y) / in_h * mh), gy1 + 1, mh))
            out[i] = fm[:, gy1:gy2, gx1:gx2].mean(dim=(1, 2)).numpy()
        proj = self.backbone.projection
        if proj is not None:
            out = out @ proj.cpu().numpy()
        return out

    def _update_tracks(self, dets: Detections) -> None:
        for i in range(len(dets)):
            tid = int(dets.track_id[i])
            if tid < 0:
                continue
            track = self.tracks.get(tid)
            if track is None:
                track = self.tracks[tid] = Track(tid, dets.labels[i])
            feat = dets.features[i] if dets.features is not None else None
            track.add(dets.frame_index, dets.timestamp_s, dets.xyxy[i], float(dets.conf[i]), feat)
        timeout = self.cfg.track_timeout_s
        for tid in [t for t, tr in self.tracks.items() if dets.timestamp_s - tr.timestamp_s[-1] > timeout]:
            self.finished.append(self.tracks.pop(tid))

    def active(self, frame_index: int) -> list[Track]:
        """Tracks seen in ``frame_index``."""
        return [t for t in self.tracks.values() if t.last_frame == frame_index]

    def all_tracks(self) -> list[Track]:
        return sorted(self.finished + list(self.tracks.values()), key=lambda t: t.track_id)

    def reset(self) -> None:
        """Forget all tracks and the tracker state (e.g. before the next video)."""
        if self._byte is not None:
            self._byte.reset()
        if self._regions is not None:
            self._regions.tracker.reset()
        self.tracks.clear()
        self.finished.clear()


class _BoxArray:
    """The numpy detections interface ultralytics' trackers read (conf, cls, xywh, xyxy, boolean indexing)."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xyxy = xyxy
        self.conf = conf
        self.cls = cls

    @property
    def xywh(self) -> np.ndarray:
        b = self.xyxy
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, idx: np.ndarray) -> _BoxArray:
        return _BoxArray(self.xyxy[idx], self.conf[idx], self.cls[idx])


class _RegionTracking:
    """Background-subtraction regions (on a frame scaled to <= 480 px wide) tracked by ultralytics' ByteTrack."""

    def __init__(self, cfg: TrackerConfig, fps: float, max_width: int = 480) -> None:
        from ultralytics.trackers.bot_sort import BOTSORT
        from ultralytics.trackers.byte_tracker import BYTETracker
        from ultralytics.utils import YAML, IterableSimpleNamespace
        from ultralytics.utils.checks import check_yaml

        from vidseq.features.regions import RegionConfig, RegionDetector

        args = IterableSimpleNamespace(**YAML.load(check_yaml(f"{cfg.tracker}.yaml")))
        if cfg.tracker == "botsort":
            args.with_reid = False
            args.gmc_method = "none"
        self.tracker = (BOTSORT if cfg.tracker == "botsort" else BYTETracker)(args)
        self.detector = RegionDetector(RegionConfig(min_area=30))
        self.max_width = max_width

    def update(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        h, w = image.shape[:2]
        scale = min(1.0, self.max_width / w)
        small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) \
            if scale < 1 else image
        regions = self.detector.step(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        xyxy = regions.xyxy / scale
        n = len(xyxy)
        out = self.tracker.update(_BoxArray(xyxy, np.full(n, 0.9, np.float32), np.zeros(n, np.float32)), image)
        if len(out) == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        return out[:, :4].astype(np.float32), out[:, 4].astype(np.int64)
