"""Settings of ``vidseq train/eval/tune anomaly`` (``configs/anomaly.yaml``) and the run folder they create."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

from vidseq.config import load_config
from vidseq.errors import ConfigError
from vidseq.features.regions import RegionConfig, RegionMethod
from vidseq.models.anomaly.model import STREAMS, AnomalyConfig, LingerConfig, Standardisation
from vidseq.models.anomaly.tracks import TrackStreamConfig
from vidseq.tasks.anomaly.online import UNSUPERVISED_TRACK_ACCUMULATE
from vidseq.tasks.anomaly.pseudo import PseudoConfig
from vidseq.train.engine import TrainConfig


@dataclass(frozen=True)
class SelectionConfig:
    """The search (``select:`` section of ``configs/anomaly.yaml``).

    Attributes:
        folds: cross-fitting folds over the normal clips (>= 2).
        pseudo: pseudo-anomaly injection settings.
        rounds: independently drawn pseudo-anomaly versions of every held-out clip (round ``r`` uses seed
            ``pseudo.seed + r``; kinds keep rotating across rounds). More rounds = more pseudo events and less
            selection noise, at the cost of one feature extraction per extra version.
        streams: stream subsets tried.
        secondary_weights: fusion weight of every stream after the first (the first weighs 1).
        fusions: fusion rules tried for multi-stream candidates.
        smooth_sigma_s: temporal smoothing values tried (seconds).
        speed_windows: ``speed.window`` values tried.
        speed_frame_quantiles: ``speed.frame_quantile`` values tried.
        speed_temporals: ``speed.temporal`` values tried (frames averaged, odd).
        speed_cells: ``speed.cell`` values tried (scale-map cell; also normalises object attributes).
        frame_epochs: epochs of the frame-stream LSTM in each fold (the final training uses ``train.epochs``).
        donor_clips: clips per fold that donate cut-out objects.
        pseudo_clip_s: at most this many seconds of each clip are decoded for donors and pseudo-anomalies
            (they are held in memory as decoded frames, one clip per ``workers`` process; the clean statistics
            still use whole clips).
        standardise: how every candidate standardises its streams (``model.standardise`` of the tuned config).
        regions_method: how every candidate finds moving regions (``model.regions.method``). These two, and
            raw pixels (``model.normalise_pixels`` false), are fixed by the grid, not taken from the ``model``
            section: the grid's object streams were designed with background subtraction, mean/std
            standardisation and raw pixels (the Ped2 design was chosen with them), while the untuned default
            model (:func:`default_model`) uses flow regions, quantiles and normalised pixels.
    """

    folds: int = 2
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    rounds: int = 1
    streams: tuple[tuple[str, ...], ...] = (("speed",), ("objects",), ("crops",), ("frame",), ("speed", "objects"),
                                            ("speed", "crops"), ("speed", "frame"), ("speed", "objects", "crops"),
                                            ("speed", "objects", "frame"))
    secondary_weights: tuple[float, ...] = (1.0, 0.5, 0.25)
    fusions: tuple[str, ...] = ("mean", "max")
    smooth_sigma_s: tuple[float, ...] = (0.0, 0.3, 0.6)
    speed_windows: tuple[int, ...] = (5, 9, 13)
    speed_frame_quantiles: tuple[float, ...] = (0.99, 0.998, 1.0)
    speed_temporals: tuple[int, ...] = (1, 3, 5)
    speed_cells: tuple[int, ...] = (2, 3, 4)
    frame_epochs: int = 8
    donor_clips: int = 4
    pseudo_clip_s: float = 60.0
    standardise: Standardisation = "meanstd"
    regions_method: RegionMethod = "mog2"

    def __post_init__(self) -> None:
        for key, kind in (("standardise", Standardisation), ("regions_method", RegionMethod)):
            if getattr(self, key) not in get_args(kind):
                raise ConfigError(f"select.{key} must be one of {', '.join(get_args(kind))}, got "
                                  f"{getattr(self, key)!r}")
        if self.folds < 2:
            raise ConfigError(f"select.folds must be >= 2, got {self.folds}")
        for s in self.streams:
            if not s or any(x not in STREAMS for x in s) or len(set(s)) != len(s):
                raise ConfigError(f"select.streams: {list(s)} must be distinct names from {', '.join(STREAMS)}")
        if not (self.streams and self.smooth_sigma_s and self.speed_windows and self.speed_frame_quantiles
                and self.speed_temporals and self.speed_cells):
            raise ConfigError("select: streams, smooth_sigma_s and every speed_* list need values")
        if any(t < 1 or t % 2 == 0 for t in self.speed_temporals) or any(c < 1 for c in self.speed_cells):
            raise ConfigError("select.speed_temporals must be odd and >= 1, select.speed_cells >= 1")
        if any(f not in ("mean", "max") for f in self.fusions) or not self.fusions:
            raise ConfigError(f"select.fusions: use mean and/or max, got {list(self.fusions)}")
        if any(w <= 0 for w in self.secondary_weights) or not self.secondary_weights:
            raise ConfigError("select.secondary_weights must be > 0")
        if self.rounds < 1:
            raise ConfigError(f"select.rounds must be >= 1, got {self.rounds}")
        if self.frame_epochs < 1 or self.donor_clips < 1:
            raise ConfigError("select.frame_epochs and select.donor_clips must be >= 1")
        if not self.pseudo_clip_s > 0:
            raise ConfigError(f"select.pseudo_clip_s must be > 0, got {self.pseudo_clip_s}")



def default_model() -> AnomalyConfig:
    """The untuned model of ``vidseq train anomaly``: ``speed`` (how fast, for its place) and ``tracks`` (where
    tracked objects walk and which way, :mod:`vidseq.models.anomaly.tracks`), each quantile-standardised, the
    frame score their max, moving regions from the flow (what ``tracks`` follows), every frame's brightness and
    contrast normalised before its features (in training and on the stream: exposure changes move nothing).

    A camera's normal clips show every path people take, which a stream's first minute may not: a model
    trained on them is where a walker off the paths, or against the traffic, can be told from normal walkers.
    The speed stream alone does not see those (docs/alarms.md, "Stop 22"). A track's evidence above 2 is added
    up over its life (``tracks.accumulate``, as in unsupervised scoring; docs/alarms.md, "Stop 25").
    """
    return AnomalyConfig(streams=("speed", "tracks"), fusion="max", standardise="quantile", normalise_pixels=True,
                         regions=RegionConfig(method="flow"),
                         tracks=TrackStreamConfig(accumulate=UNSUPERVISED_TRACK_ACCUMULATE), linger=LingerConfig())


@dataclass(frozen=True)
class AnomalyTaskConfig:
    """``configs/anomaly.yaml``.

    Attributes:
        model: the anomaly model (:class:`AnomalyConfig`; default :func:`default_model`).
        train: engine settings for the frame-stream LSTM.
        val_clips: when the dataset has no ``val`` split, hold out this many of the last training clips.
        cross_fit_folds: >= 2: fit the model on every normal clip (train + val) and take the stream
            statistics and the threshold from out-of-fold scores of all of them
            (:func:`~vidseq.models.anomaly.fit.cross_fit_calibrate`); the validation clips then only
            early-stop the frame LSTM. 0: statistics and threshold from the validation clips.
        cache_dir: per-clip feature cache (``None``: ``<out>/cache`` when training; evaluation reuses
            the training run's cache folder when it still exists).
        workers: processes extracting clip features in parallel.
        split: split evaluated by :func:`evaluate`.
        variants: also report per-stream, unsmoothed and unsupervised AUCs in :func:`evaluate`.
        device: torch device for the backbone and LSTM.
        progress: progress bars.
        select: the label-free search of ``vidseq tune anomaly`` (:mod:`vidseq.tasks.anomaly.tune`).
    """

    model: AnomalyConfig = field(default_factory=default_model)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=15, batch_size=32, lr=1e-3,
                                                                   patience=4, device="cpu"))
    val_clips: int = 2
    cross_fit_folds: int = 0
    cache_dir: str | None = None
    workers: int = 1
    split: str = "test"
    variants: bool = True
    device: str = "cpu"
    progress: bool = True
    select: SelectionConfig = field(default_factory=SelectionConfig)

    def __post_init__(self) -> None:
        if self.val_clips < 0 or self.workers < 1:
            raise ConfigError("val_clips must be >= 0 and workers >= 1")
        if self.cross_fit_folds == 1 or self.cross_fit_folds < 0:
            raise ConfigError(f"cross_fit_folds must be 0 (off) or >= 2, got {self.cross_fit_folds}")


def load_task_config(config: Path | None, overrides: Sequence[str]) -> AnomalyTaskConfig:
    return load_config(AnomalyTaskConfig, config, list(overrides))


def prepare_run(config: Path | None, overrides: Sequence[str], out: Path) -> tuple[AnomalyTaskConfig, Path, str]:
    """Task config, the created output folder and the feature cache folder of a train/tune run."""
    tc = load_task_config(config, overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return tc, out, tc.cache_dir or str(out / "cache")

