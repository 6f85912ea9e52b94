"""Networks and fitted scorers: arrays/tensors and records in, arrays out.

No module here opens a video, reads or writes a file, or imports :mod:`vidseq.train`, :mod:`vidseq.tasks`,
the pipeline or the CLI (``tests/test_layers.py``). Models depend on the backbone contract (``feature_dim``),
never on a particular backbone.

* :mod:`.encoder`: the shared stacked-LSTM encoder.
* :mod:`.trajectory`: :class:`TrajectoryConfig` + :class:`TrajectoryModel`, constant velocity, ADE/FDE.
* :mod:`.caption`: vocabulary, :class:`CaptionConfig` + :class:`CaptionModel`, greedy/beam decoding.
* :mod:`.anomaly`: the anomaly streams, fusion, calibration/events, fitting from :class:`ClipFeatures`.
"""

from __future__ import annotations

from vidseq.registry import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "StackedLSTMEncoder": "vidseq.models.encoder:StackedLSTMEncoder",
    "EncoderConfig": "vidseq.models.encoder:EncoderConfig",
    "TrajectoryConfig": "vidseq.models.trajectory:TrajectoryConfig",
    "TrajectoryModel": "vidseq.models.trajectory:TrajectoryModel",
    "CaptionConfig": "vidseq.models.caption.model:CaptionConfig",
    "CaptionArchitecture": "vidseq.models.caption.model:CaptionArchitecture",
    "CaptionModel": "vidseq.models.caption.model:CaptionModel",
    "Vocabulary": "vidseq.models.caption.vocab:Vocabulary",
    "AnomalyConfig": "vidseq.models.anomaly.model:AnomalyConfig",
    "AnomalyModel": "vidseq.models.anomaly.model:AnomalyModel",
    "ClipFeatures": "vidseq.models.anomaly.clip:ClipFeatures",
    "Calibration": "vidseq.models.anomaly.calibrate:Calibration",
})
