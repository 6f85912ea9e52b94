"""vidseq: video sequences -> features -> stacked-LSTM heads (trajectory, anomaly, caption).

The names a library user needs are importable from here (loaded on first use, so ``import vidseq`` stays
cheap: torch, ultralytics and OpenCV are imported by the modules that use them)::

    from vidseq import open_source, create_backbone, extract_features, process_video, ProcessConfig

Layers, each importing only those below it (enforced by ``tests/test_layers.py``): ``video`` -> ``features``
-> ``sequences`` / ``tracking`` -> ``models`` -> ``train`` -> ``tasks`` -> ``pipeline`` / ``monitor`` -> ``cli``;
the core (``errors``, ``io``, ``config``, ``registry``) may be imported by any of them.
"""

from __future__ import annotations

from vidseq.registry import lazy_exports

__version__ = "0.1.0"

_API = {
    # video
    "open_source": "vidseq.video.sources:open_source", "Frame": "vidseq.video.sources:Frame",
    "VideoInfo": "vidseq.video.sources:VideoInfo", "list_images": "vidseq.video.frames:list_images",
    "VideoSink": "vidseq.video.sinks:VideoSink", "CsvSink": "vidseq.video.sinks:CsvSink",
    "JsonlSink": "vidseq.video.sinks:JsonlSink",
    # features
    "create_backbone": "vidseq.features.backbones:create_backbone",
    "extract_features": "vidseq.features.extractor:extract_features",
    "load_features": "vidseq.features.extractor:load_features",
    "ExtractConfig": "vidseq.features.extractor:ExtractConfig",
    # sequences, tracking
    "load_dataset": "vidseq.sequences.manifest:load_dataset", "Dataset": "vidseq.sequences.manifest:Dataset",
    "ObjectTracker": "vidseq.tracking.tracks:ObjectTracker", "Detections": "vidseq.tracking.tracks:Detections",
    # models
    "AnomalyConfig": "vidseq.models.anomaly.model:AnomalyConfig",
    "AnomalyModel": "vidseq.models.anomaly.model:AnomalyModel",
    "TrajectoryModel": "vidseq.models.trajectory:TrajectoryModel",
    "CaptionModel": "vidseq.models.caption.model:CaptionModel",
    # train, tasks
    "load_model": "vidseq.train.checkpoint:load_model",
    "TrajectoryForecaster": "vidseq.tasks.trajectory.forecaster:TrajectoryForecaster",
    "Captioner": "vidseq.tasks.caption.captioner:Captioner",
    "load_anomaly_model": "vidseq.tasks.anomaly.task:load_anomaly_model",
    "score_video": "vidseq.tasks.anomaly.scoring:score_video",
    "StreamHead": "vidseq.tasks.stream:StreamHead", "FrameResult": "vidseq.tasks.stream:FrameResult",
    # pipeline, monitor
    "process_video": "vidseq.pipeline:process_video", "ProcessConfig": "vidseq.pipeline:ProcessConfig",
    "FrameProcessor": "vidseq.pipeline:FrameProcessor",
    "run_monitor": "vidseq.monitor:run_monitor", "MonitorConfig": "vidseq.monitor:MonitorConfig",
    # core
    "load_config": "vidseq.config:load_config", "VidseqError": "vidseq.errors:VidseqError",
}

__getattr__, __dir__ = lazy_exports(__name__, _API)
__all__ = ["__version__", *sorted(_API)]
