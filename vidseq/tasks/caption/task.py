"""``vidseq train caption`` / ``vidseq eval caption``: train and score the caption head on a dataset.

Data: a vidseq dataset folder whose clips have ``captions`` (several references per clip are used as
separate training pairs and all together as references when scoring). Clips become encoder inputs
with :class:`~vidseq.tasks.caption.inputs.ClipEncoder` (cached under ``<out>/cache``); the vocabulary
is built from the training captions; the model trains with :func:`vidseq.train.engine.fit` (val
metrics ``val_bleu4``/``val_cider`` from greedy decoding every epoch); ``best.pt`` then captions
the evaluation split with beam search and is scored with :mod:`vidseq.tasks.caption.metrics`.

Outputs in the run folder: the engine's files (``best.pt``, ``last.pt``, ``metrics.csv``,
``config.yaml``, ``tb/``) plus ``metrics.json`` (final metrics) and ``captions_<split>.jsonl``
(one line per clip: id, hypothesis, references).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from vidseq.config import load_config, parse_override, to_dict, with_overrides
from vidseq.errors import CaptionError, CheckpointError, ConfigError, DatasetError
from vidseq.io import atomic_open, atomic_write_json
from vidseq.models.caption.decode import DecodeConfig, generate
from vidseq.models.caption.model import (
    CaptionArchitecture,
    CaptionBatch,
    CaptionConfig,
    CaptionModel,
    build_model,
)
from vidseq.models.caption.vocab import PAD_ID, Vocabulary, normalize_caption
from vidseq.tasks.caption.inputs import CaptionFeatureConfig, ClipEncoder
from vidseq.tasks.caption.metrics import caption_metrics
from vidseq.train.engine import TrainConfig

log = logging.getLogger(__name__)

MODEL_NAME = "caption_s2vt"


# --------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class VocabConfig:
    """Vocabulary settings (YAML section ``vocab``)."""

    min_count: int = 1
    max_size: int | None = None
    max_len: int = 20  # most words per training caption
    on_overflow: Literal["truncate", "error"] = "truncate"


ModelSection = CaptionArchitecture
"""Architecture (YAML section ``model``): :class:`CaptionArchitecture`, whose defaults are the only ones; the
sizes that come from the data (``feature_dim``, ``vocab_size``, ``aux_dim``) and ``max_len`` (from ``decode``)
are added when the :class:`CaptionConfig` is built."""


def _default_train() -> TrainConfig:
    return TrainConfig(epochs=30, batch_size=32, lr=2e-3, monitor="val_cider", mode="max", patience=8)


@dataclass(frozen=True)
class CaptionTaskConfig:
    """``configs/caption.yaml``.

    Attributes:
        features: how clips become encoder inputs.
        vocab: tokenizer/vocabulary settings.
        model: architecture.
        decode: decoding for evaluation and ``vidseq caption``.
        train: engine settings (monitor ``val_cider``/``val_bleu4``/``val_loss``).
        val_fraction: share of train clips held out for validation when the dataset has no val split.
        eval_split: split captioned and scored after training / by ``vidseq eval`` (``val`` if absent).
        val_metrics: compute greedy ``val_bleu4``/``val_cider`` every epoch (else only ``val_loss``).
        meteor: compute METEOR in final evaluations (needs java; reported unavailable otherwise).
        tokenizer: metric tokenizer: ``auto`` (PTB via java when present), ``ptb``, ``simple``.
        cache_dir: input cache folder (default ``<out>/cache``; evaluation: beside the checkpoint).
        progress: progress bars.
    """

    features: CaptionFeatureConfig = field(default_factory=CaptionFeatureConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    model: ModelSection = field(default_factory=ModelSection)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    train: TrainConfig = field(default_factory=_default_train)
    val_fraction: float = 0.1
    eval_split: str = "test"
    val_metrics: bool = True
    meteor: bool = True
    tokenizer: Literal["auto", "ptb", "simple"] = "auto"
    cache_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.eval_split not in ("train", "val", "test"):
            raise ConfigError(f"eval_split must be train, val or test, got {self.eval_split!r}")


# --------------------------------------------------------------------------------------------- data


@dataclass
class ClipRecord:
    """One clip ready for training/scoring: encoder inputs + normalised reference captions."""

    id: str
    split: str
    inputs: np.ndarray  # (T, D) float32
    captions: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


def _clip_captions(clip: Any) -> list[str]:
    out = []
    for i, cap in enumerate(clip.captions):
        if not isinstance(cap, str) or not normalize_caption(cap):
            raise CaptionError(f"clip '{clip.id}': caption {i} is empty ({cap!r})")
        out.append(normalize_caption(cap))
    return out


def load_records(
    dataset: Any, splits: Sequence[str], encoder: ClipEncoder, cache_dir: Path | None, *,
    require_captions: bool = True, progress: bool = True,
) -> list[ClipRecord]:
    """Encode every clip of ``splits`` that has a video (and captions, when required)."""
    from tqdm import tqdm

    clips = [c for c in dataset.clips_for(list(splits)) if c.path is not None]
    skipped = [c.id for c in clips if not c.captions]
    if require_captions:
        clips = [c for c in clips if c.captions]
        if skipped:
            log.warning("%d clip(s) without captions skipped (e.g. %s)", len(skipped), skipped[0])
    out = []
    for clip in tqdm(clips, desc="caption inputs", unit="clip", disable=None if progress else True, leave=False):
        tracks = None
        if clip.tracks is not None and clip.track_units == "px":
            tracks = clip.load_tracks()
        x = encoder.encode_clip(clip.path, tracks=tracks, tracks_path=clip.tracks if tracks is not None else None,
                                clip_id=clip.id, fps=clip.fps, cache_dir=cache_dir)
        out.append(ClipRecord(clip.id, clip.split, x.features, _clip_captions(clip), dict(clip.meta)))
    return out


class CaptionPairs(TorchDataset):
    """(clip, caption) pairs: item ``i`` is ``(inputs (T, D) tensor, token ids, clip id)``."""

    def __init__(self, records: Sequence[ClipRecord], vocab: Vocabulary, vcfg: VocabConfig) -> None:
        self.records = list(records)
        self.pairs: list[tuple[int, list[int]]] = []
        for r_i, rec in enumerate(self.records):
            for cap in rec.captions:
                self.pairs.append((r_i, vocab.encode(cap, max_len=vcfg.max_len, on_overflow=vcfg.on_overflow)))
        self._inputs = [torch.from_numpy(np.ascontiguousarray(r.inputs)) for r in self.records]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[int], str]:
        r_i, ids = self.pairs[i]
        return self._inputs[r_i], ids, self.records[r_i].id


def collate_inputs(inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (T_i, D) tensors to (B, T_max, D) with zeros; lengths (B,)."""
    lengths = torch.tensor([x.shape[0] for x in inputs], dtype=torch.long)
    feats = torch.zeros(len(inputs), int(lengths.max()), inputs[0].shape[1], dtype=torch.float32)
    for i, x in enumerate(inputs):
        feats[i, : x.shape[0]] = x
    return feats, lengths


def collate(items: list[tuple[torch.Tensor, list[int], str]]) -> CaptionBatch:
    feats, lengths = collate_inputs([it[0] for it in items])
    L = max(len(it[1]) for it in items)
    tokens = torch.full((len(items), L), PAD_ID, dtype=torch.long)
    for i, (_, ids, _) in enumerate(items):
        tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return CaptionBatch(features=feats, lengths=lengths, tokens=tokens, clip_ids=[it[2] for it in items])


def input_stats(records: Sequence[ClipRecord]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean/std over every frame of the training clips."""
    allx = np.concatenate([r.inputs for r in records]).astype(np.float64)
    return torch.from_numpy(allx.mean(0)).float(), torch.from_numpy(allx.std(0)).float()


# --------------------------------------------------------------------------------------------- decode + score


@torch.no_grad()
def caption_records(
    model: CaptionModel, records: Sequence[ClipRecord], dcfg: DecodeConfig, *, batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> dict[str, str]:
    """Clip id -> generated caption."""
    if model.vocab is None:
        raise CheckpointError("caption model has no vocabulary")
    out: dict[str, str] = {}
    for i in range(0, len(records), batch_size):
        chunk = records[i:i + batch_size]
        feats, lengths = collate_inputs([torch.from_numpy(r.inputs) for r in chunk])
        hyps = generate(model, feats.to(device), lengths.to(device), dcfg)
        for rec, h in zip(chunk, hyps):
            out[rec.id] = model.vocab.decode(h.tokens)
    return out


def score(records: Sequence[ClipRecord], hyps: dict[str, str], *, meteor: bool, tokenizer: str) -> dict[str, Any]:
    refs = {r.id: r.captions for r in records}
    return caption_metrics(refs, {k: hyps[k] for k in refs}, meteor=meteor, tokenizer=tokenizer)  # type: ignore[arg-type]


def retrieval_captions(
    train: Sequence[ClipRecord], query: Sequence[ClipRecord], mean: torch.Tensor | np.ndarray,
    std: torch.Tensor | np.ndarray,
) -> dict[str, str]:
    """Nearest-neighbour baseline: each query clip gets the first caption of the training clip whose
    time-averaged standardised input is closest (Euclidean)."""
    m = np.asarray(mean, np.float64)
    s = np.maximum(np.asarray(std, np.float64), 1e-4)

    def pooled(recs: Sequence[ClipRecord]) -> np.ndarray:
        return np.stack([((r.inputs - m) / s).mean(0) for r in recs])  # (N, D)

    a, q = pooled(train), pooled(query)
    d = (q ** 2).sum(1)[:, None] - 2.0 * q @ a.T + (a ** 2).sum(1)[None, :]  # (Q, N)
    nn_idx = d.argmin(1)
    return {r.id: train[int(j)].captions[0] for r, j in zip(query, nn_idx)}


def write_captions_jsonl(path: Path, records: Sequence[ClipRecord], hyps: dict[str, str]) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps({"id": r.id, "caption": hyps[r.id], "references": r.captions}) + "\n")
    return path


# --------------------------------------------------------------------------------------------- the TrainTask


class CaptionTrainTask:
    """:class:`vidseq.train.engine.TrainTask` for the caption head."""

    name = "caption"
    model_name = MODEL_NAME

    def __init__(self, cfg: CaptionTaskConfig, train_records: list[ClipRecord], val_records: list[ClipRecord],
                 vocab: Vocabulary, encoder_info: dict[str, Any], input_dim_split: tuple[int, int]) -> None:
        self.cfg = cfg
        self.vocab = vocab
        self.train_records = train_records
        self.val_records = val_records
        self.train_dataset = CaptionPairs(train_records, vocab, cfg.vocab)
        self.val_dataset = CaptionPairs(val_records, vocab, cfg.vocab) if val_records else None
        self.mean, self.std = input_stats(train_records)
        feature_dim, aux_dim = input_dim_split
        if feature_dim == 0:  # object features only: they are the "frame features"
            feature_dim, aux_dim = aux_dim, 0
        # the user's architecture section plus the sizes that come from the data
        self.caption_config = CaptionConfig(feature_dim=feature_dim, vocab_size=len(vocab), aux_dim=aux_dim,
                                            max_len=cfg.decode.max_len, **asdict(cfg.model))
        self.metadata = {"inputs": encoder_info, "vocab_size": len(vocab),
                         "train_clips": len(train_records), "val_clips": len(val_records),
                         "train_pairs": len(self.train_dataset)}

    def model_config(self) -> dict[str, Any]:
        return {"model": to_dict(self.caption_config), "vocab": self.vocab.to_dict()}

    def build_model(self) -> nn.Module:
        model = build_model(self.model_config())
        model.set_input_stats(self.mean, self.std)
        return model

    def collate(self, items: list) -> CaptionBatch:
        return collate(items)

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        if not self.cfg.val_metrics or not self.val_records:
            return {}
        device = next(model.parameters()).device
        greedy = DecodeConfig(beam_size=1, max_len=self.cfg.decode.max_len, min_len=self.cfg.decode.min_len,
                              no_repeat_ngram=self.cfg.decode.no_repeat_ngram)
        hyps = caption_records(model, self.val_records, greedy, device=device)  # type: ignore[arg-type]
        m = score(self.val_records, hyps, meteor=False, tokenizer="simple")
        return {"val_bleu4": m["bleu4"], "val_cider": m["cider"]}


# --------------------------------------------------------------------------------------------- entry points


def _split_val(records: list[ClipRecord], fraction: float, seed: int) -> tuple[list[ClipRecord], list[ClipRecord]]:
    if fraction <= 0 or len(records) < 2:
        return records, []
    idx = list(range(len(records)))
    random.Random(seed).shuffle(idx)
    n_val = max(1, int(round(fraction * len(records))))
    val = set(idx[:n_val])
    return [r for i, r in enumerate(records) if i not in val], [r for i, r in enumerate(records) if i in val]


def _eval_split(dataset: Any, wanted: str, *, required: bool = True) -> str | None:
    """``wanted`` if it has captioned clips, else ``test``, else ``val`` (None or DatasetError if none)."""
    present = {c.split for c in dataset.clips if c.captions and c.path is not None}
    for s in (wanted, "test", "val"):
        if s in present:
            if s != wanted:
                log.warning("no captioned '%s' clips: evaluating on '%s'", wanted, s)
            return s
    if not required:
        return None
    raise DatasetError(f"{dataset.root}: no captioned clips in split '{wanted}', 'test' or 'val' to evaluate")


def train(data: Path, out: Path, *, config: Path | None = None, overrides: Sequence[str] = (),
          resume: bool = False) -> dict[str, Any]:
    """Train the caption head on dataset ``data`` into run folder ``out``; returns the final metrics."""
    from vidseq.sequences.manifest import load_dataset
    from vidseq.train.engine import fit

    cfg = load_config(CaptionTaskConfig, config, list(overrides))
    out = Path(out)
    dataset = load_dataset(data)
    encoder = ClipEncoder(cfg.features)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
    train_recs = load_records(dataset, ["train"], encoder, cache, progress=cfg.progress)
    if not train_recs:
        raise DatasetError(f"{dataset.manifest_path}: no training clips with a video and captions")
    val_recs = load_records(dataset, ["val"], encoder, cache, progress=cfg.progress)
    if not val_recs:
        train_recs, val_recs = _split_val(train_recs, cfg.val_fraction, cfg.train.seed)
        if val_recs:
            log.info("no val split: holding out %d of the training clips for validation", len(val_recs))
    vocab = Vocabulary.build((c for r in train_recs for c in r.captions), min_count=cfg.vocab.min_count,
                             max_size=cfg.vocab.max_size)
    log.info("caption vocabulary: %d tokens from %d training captions", len(vocab),
             sum(len(r.captions) for r in train_recs))
    split = _eval_split(dataset, cfg.eval_split, required=not val_recs)
    task = CaptionTrainTask(cfg, train_recs, val_recs, vocab, encoder.info(),
                            (encoder.feature_dim, encoder.aux_dim))
    result = fit(task, cfg.train, out, resume=resume, config_dict=to_dict(cfg), progress=cfg.progress)

    if split is None or split == "val":  # val clips (from the dataset or held out of train)
        split, eval_recs = "val", val_recs
    else:
        eval_recs = load_records(dataset, [split], encoder, cache, progress=cfg.progress)
    metrics = _evaluate_records(result.best_path, eval_recs, cfg, out, split)
    metrics.update({"best_epoch": result.best_epoch, "epochs_run": len(result.history),
                    "monitor": result.monitor, "best_monitor": result.best_metric})
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def _evaluate_records(ckpt_path: Path, records: list[ClipRecord], cfg: CaptionTaskConfig, out_dir: Path,
                      split: str) -> dict[str, Any]:
    from vidseq.train.checkpoint import load_model

    model, _ = load_model(ckpt_path)
    hyps = caption_records(model, records, cfg.decode)  # type: ignore[arg-type]
    metrics = score(records, hyps, meteor=cfg.meteor, tokenizer=cfg.tokenizer)
    write_captions_jsonl(out_dir / f"captions_{split}.jsonl", records, hyps)
    return {"split": split, "beam_size": cfg.decode.beam_size, **metrics}


def config_from_checkpoint(ckpt: dict[str, Any], overrides: Sequence[str] = ()) -> CaptionTaskConfig:
    """The run's resolved config with evaluation overrides; changing ``features`` is refused (except
    ``device``/``batch_size``) because the model was trained on those inputs."""
    items = [parse_override(text) for text in overrides]
    for key, _ in items:
        if key.startswith("features.") and key.split(".", 1)[1] not in ("device", "batch_size"):
            raise ConfigError(f"override '{key}' would change the model's inputs; only features.device and "
                              f"features.batch_size can change at evaluation")
    try:
        return with_overrides(CaptionTaskConfig, dict(ckpt.get("config") or {}), dict(items))
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"checkpoint config: {exc}") from None


def load_caption_model(path: Path) -> tuple[CaptionModel, dict[str, Any], CaptionTaskConfig]:
    """(model, checkpoint, task config) of a caption checkpoint."""
    from vidseq.train.checkpoint import load_model

    model, ckpt = load_model(path)
    if ckpt.get("model_name") != MODEL_NAME or not isinstance(model, CaptionModel):
        raise CheckpointError(f"{path}: holds model '{ckpt.get('model_name')}', not a caption model ({MODEL_NAME})")
    if model.vocab is None:
        raise CheckpointError(f"{path}: caption checkpoint has no vocabulary")
    return model, ckpt, config_from_checkpoint(ckpt)


def evaluate(model: Path, data: Path, *, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Caption the evaluation split of ``data`` with checkpoint ``model`` and score it.

    Overrides: ``eval_split=val``, ``decode.beam_size=5``, ``meteor=false``, ``tokenizer=simple``...
    Captions are written beside the checkpoint as ``captions_<split>.jsonl``.
    """
    from vidseq.sequences.manifest import load_dataset

    model = Path(model)
    _, ckpt, _ = load_caption_model(model)
    cfg = config_from_checkpoint(ckpt, overrides)
    dataset = load_dataset(data)
    split = _eval_split(dataset, cfg.eval_split)
    assert split is not None
    encoder = ClipEncoder(cfg.features)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else model.parent / "cache"
    records = load_records(dataset, [split], encoder, cache, progress=cfg.progress)
    return _evaluate_records(model, records, cfg, model.parent, split)


__all__ = ["CaptionTaskConfig", "CaptionTrainTask", "ClipRecord", "ModelSection", "VocabConfig", "caption_records",
           "collate", "config_from_checkpoint", "evaluate", "load_caption_model",
           "load_records", "retrieval_captions", "score", "train"]
