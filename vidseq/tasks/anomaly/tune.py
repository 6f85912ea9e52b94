"""Label-free model selection: ``vidseq tune anomaly`` picks streams, fusion, smoothing and speed settings.

Test labels must not choose the model, so candidates are compared on *pseudo-anomalies*
(:mod:`.pseudo`) injected into held-out normal training clips, by K-fold cross-fitting:

1. the normal clips (``train`` + ``val`` splits) are dealt into ``folds`` folds (clip ``i`` -> fold
   ``i % folds``);
2. for each fold, every fitted part (scale map, kNN bank, frame LSTM, stream statistics) is fitted on the
   other folds, and the fold's own clips are scored twice: clean (for the stream statistics, as the
   validation clips are in ``train``) and with injected pseudo-anomalies (labelled);
3. every candidate in the grid (stream subset x secondary weight x fusion x smoothing x speed window x
   speed frame quantile) is scored from the same raw stream scores: micro AUC over all pseudo clips with
   the training-statistics normalisation (``auc_micro``) and with per-clip min-max (``auc_micro_minmax``);
4. the candidate with the highest mean of the two wins (ties within 0.001 go to fewer streams, then to
   the smaller grid index).

Nothing here reads a clip of any split other than ``train``/``val``, nor any label file: the only labels
are the ones :func:`vidseq.tasks.anomaly.pseudo.inject` wrote.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vidseq.errors import DatasetError
from vidseq.models.anomaly.clip import ClipFeatures
from vidseq.models.anomaly.model import STREAMS, AnomalyConfig, gaussian_kernel
from vidseq.tasks.anomaly.config import SelectionConfig, load_task_config, prepare_run
from vidseq.tasks.anomaly.data import clips_of, extract_all, split_train_val
from vidseq.tasks.anomaly.features import (
    features_from_frames,
    load_clip_features,
    save_clip_features,
)
from vidseq.tasks.anomaly.frame_stream import train_frame_predictor
from vidseq.tasks.anomaly.metrics import group_aucs, minmax
from vidseq.tasks.anomaly.pseudo import KINDS, find_donors, inject

log = logging.getLogger(__name__)

PSEUDO_VERSION = 2  # 2: appearance / crop features live in the features file, not beside the labels


@dataclass(frozen=True)
class Candidate:
    """One point of the grid."""

    streams: tuple[str, ...]
    weights: tuple[float, ...]
    fusion: str
    smooth_sigma_s: float
    speed_window: int
    speed_frame_quantile: float
    speed_temporal: int = 3
    speed_cell: int = 3

    def label(self) -> str:
        w = "/".join(f"{x:g}" for x in self.weights)
        sp = ""
        if "speed" in self.streams:
            sp = (f" win {self.speed_window} q {self.speed_frame_quantile:g} t {self.speed_temporal}"
                  f" cell {self.speed_cell}")
        elif "objects" in self.streams:
            sp = f" cell {self.speed_cell}"
        fu = f" {self.fusion} {w}" if len(self.streams) > 1 else ""
        return f"{'+'.join(self.streams)}{fu} sigma {self.smooth_sigma_s:g}s{sp}"

    def apply(self, cfg: AnomalyConfig) -> AnomalyConfig:
        """``cfg`` with this candidate's settings."""
        weights = () if len(set(self.weights)) <= 1 else self.weights
        return replace(cfg, streams=self.streams, weights=weights, fusion=self.fusion,  # type: ignore[arg-type]
                       smooth_sigma_s=self.smooth_sigma_s,
                       speed=replace(cfg.speed, window=self.speed_window, frame_quantile=self.speed_frame_quantile,
                                     temporal=self.speed_temporal, cell=self.speed_cell))

    def keys(self) -> list[str]:
        """Raw-score keys of this candidate's streams (see :func:`fold_scores`)."""
        return [_speed_key(self.speed_cell, self.speed_temporal, self.speed_window, self.speed_frame_quantile)
                if s == "speed" else (f"objects@{self.speed_cell}" if s == "objects" else s) for s in self.streams]


def candidates(sel: SelectionConfig) -> list[Candidate]:
    """The grid, in a fixed order (single streams first)."""
    out: list[Candidate] = []
    for streams in sorted(sel.streams, key=len):
        multi = len(streams) > 1
        weights = [(1.0,) + (w,) * (len(streams) - 1) for w in sel.secondary_weights] if multi else [(1.0,)]
        fusions = sel.fusions if multi else ("mean",)
        has_speed = "speed" in streams
        wins = sel.speed_windows if has_speed else sel.speed_windows[:1]
        qs = sel.speed_frame_quantiles if has_speed else sel.speed_frame_quantiles[:1]
        temps = sel.speed_temporals if has_speed else sel.speed_temporals[:1]
        cells = sel.speed_cells if (has_speed or "objects" in streams) else sel.speed_cells[:1]
        for w, fu, sig, cell, tmp, win, q in itertools.product(weights, fusions, sel.smooth_sigma_s, cells, temps,
                                                                 wins, qs):
            out.append(Candidate(tuple(streams), w, fu, float(sig), int(win), float(q), int(tmp), int(cell)))
    return out


# --------------------------------------------------------------------------------------- raw scores


def search_config(model: AnomalyConfig, sel: SelectionConfig) -> AnomalyConfig:
    """``model`` with every stream the grid uses (what features are extracted and fitted for) and the grid's
    fixed standardisation, region method and raw pixels."""
    return replace(model, streams=tuple(sorted({s for c in sel.streams for s in c}, key=STREAMS.index)), weights=(),
                   standardise=sel.standardise, normalise_pixels=False,
                   regions=replace(model.regions, method=sel.regions_method))


@dataclass
class FoldScores:
    """Raw stream scores of one fold's pseudo clips, plus the stream statistics from its clean clips."""

    labels: list[np.ndarray]
    kinds: list[np.ndarray]  # per frame: "" for normal, else the injected kind
    fps: list[float]
    raw: InitVar[dict[str, list[np.ndarray]]]  # Candidate.keys() -> per clip raw scores (kept only as z)
    stats: dict[str, tuple[float, float]]  # same keys -> (mean, std) on the clean held-out clips
    z: dict[str, list[np.ndarray]] = field(init=False)  # standardised raw scores (NaN -> 0), as fusion uses

    def __post_init__(self, raw: dict[str, list[np.ndarray]]) -> None:
        self.z = {}
        for k, arrays in raw.items():
            mean, std = self.stats[k]
            self.z[k] = [np.where(np.isfinite(a), (a - mean) / std, 0.0) for a in arrays]


def _speed_key(cell: int, temporal: int, win: int, q: float) -> str:
    return f"speed@{cell},{temporal},{win},{q:g}"


def _read_frames(path: Path, max_seconds: float) -> tuple[list[np.ndarray], float]:
    """Decoded frames of the first ``max_seconds`` of a clip, and its fps."""
    import math

    from vidseq.video.sources import open_source

    with open_source(path) as src:
        fps = float(src.info.fps)
        limit = max(1, math.ceil(max_seconds * fps))
        frames = []
        for f in src:
            frames.append(f.image)
            if len(frames) >= limit:
                log.info("%s: pseudo-anomalies use its first %.0f s (select.pseudo_clip_s)", path, max_seconds)
                break
    return frames, fps


def _pseudo_target(ref: Any, content: str, cfg: AnomalyConfig, sel: SelectionConfig, kinds: Sequence[str],
                   seed: int, donor_ids: Sequence[str], backbone: Any, cache_dir: str | None,
                   crops: Any = None) -> Path | None:
    """Cache file of one pseudo-anomaly clip (None without a cache); its labels sit beside it.
    ``content`` identifies the source clip (its content hash)."""
    if cache_dir is None:
        return None
    from dataclasses import asdict

    from vidseq.features.extractor import cache_key
    from vidseq.tasks.anomaly.features import feature_settings

    settings = {"features": feature_settings(cfg), "pseudo": asdict(sel.pseudo), "kinds": list(kinds),
                "clip_s": sel.pseudo_clip_s,
                "seed": seed, "donors": list(donor_ids), "version": PSEUDO_VERSION,
                "appearance": None if backbone is None else backbone.info(),
                **({"crops": crops.info()} if crops is not None else {})}
    key = cache_key(content, settings)[:16]
    return Path(cache_dir) / f"{ref.clip_id}-pseudo-{key}.npz"


def _is_cached(target: Path) -> bool:
    return target.is_file() and target.with_suffix(".labels.npz").is_file()


def _load_pseudo(target: Path) -> tuple[ClipFeatures, np.ndarray, np.ndarray]:
    cf = load_clip_features(target)
    with np.load(target.with_suffix(".labels.npz"), allow_pickle=False) as z:
        labels, kind = z["labels"], z["kind"].astype(str)
    return cf, labels, kind


def pseudo_clip_features(ref: Any, cfg: AnomalyConfig, sel: SelectionConfig, kinds: Sequence[str], seed: int,
                         donors: Callable[[], Sequence[Any]], backbone: Any, target: Path | None,
                         crops: Any = None) -> tuple[ClipFeatures, np.ndarray, np.ndarray]:
    """Decode one clip, inject pseudo-anomalies and compute its stream inputs; saved to ``target`` (the
    cache entry from :func:`_pseudo_target`) when given. :func:`pseudo_clips` loads cached entries instead.

    Returns ``(features, labels (T,), kind per frame (T,) str)``.
    """
    frames, fps = _read_frames(ref.path, sel.pseudo_clip_s)
    out, labels, events = inject(frames, fps=fps, donors=donors(), kinds=kinds, cfg=sel.pseudo, seed=seed)
    del frames
    kind = np.full(len(out), "", dtype=object)
    for e in events:
        kind[e.start:e.stop] = e.kind
    kind = np.where(labels == 1, kind, "").astype(str)
    cf = features_from_frames(out, cfg, fps=fps, clip_id=f"{ref.clip_id}-pseudo", backbone=backbone, crops=crops)
    if target is not None:
        from vidseq.io import atomic_path

        save_clip_features(target, cf)
        with atomic_path(target.with_suffix(".labels.npz")) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, labels=labels, kind=kind)
    return cf, labels, kind


def _donor_objects(refs: Sequence[Any], max_seconds: float) -> list[Any]:
    """Cut-out objects of the donor clips ``refs`` (only decoded when a pseudo clip misses the cache)."""
    return [d for r in refs for d in find_donors(_read_frames(r.path, max_seconds)[0], max_donors=10)]


_WORKER: dict[str, Any] = {}


def _pseudo_worker_init(cfg: AnomalyConfig, device: str, donors: list[Any]) -> None:
    import cv2
    import torch

    from vidseq.tasks.anomaly.features import make_backbone, make_crop_encoder

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    _WORKER.update(backbone=make_backbone(cfg, device), crops=make_crop_encoder(cfg, device), donors=donors)


def _pseudo_job(args: tuple[Any, ...]) -> tuple[ClipFeatures, np.ndarray, np.ndarray]:
    ref, cfg, sel, kinds, seed, target = args
    return pseudo_clip_features(ref, cfg, sel, kinds, seed, lambda: _WORKER["donors"], _WORKER["backbone"], target,
                                _WORKER["crops"])


def pseudo_clips(specs: Sequence[tuple[Any, Sequence[str], int]], cfg: AnomalyConfig, sel: SelectionConfig,
                 donors: Callable[[], Sequence[Any]], donor_ids: Sequence[str], backbone: Any,
                 cache_dir: str | None, *, crops: Any = None, workers: int = 1, device: str = "cpu",
                 desc: str = "pseudo clips", progress: bool = False,
                 ) -> list[tuple[ClipFeatures, np.ndarray, np.ndarray]]:
    """:func:`pseudo_clip_features` of every ``(ref, kinds, seed)`` in ``specs``, in order.

    Cached clips are loaded here; the others are computed in ``workers`` processes on CPU (spawned, each
    with its own backbone and one thread; each holds one clip's decoded frames), else one by one.
    """
    from tqdm import tqdm

    from vidseq.features.extractor import content_hash

    contents: dict[str, str] = {}  # one content hash per source clip, however many versions it gets
    targets = []
    for ref, kinds, seed in specs:
        if cache_dir is not None and ref.clip_id not in contents:
            contents[ref.clip_id] = content_hash(ref.path) or ref.clip_id
        targets.append(_pseudo_target(ref, contents.get(ref.clip_id, ref.clip_id), cfg, sel, kinds, seed,
                                      donor_ids, backbone, cache_dir, crops))
    out: list[Any] = [None] * len(specs)
    todo = []
    for n, target in enumerate(targets):
        if target is not None and _is_cached(target):
            out[n] = _load_pseudo(target)
        else:
            todo.append(n)
    if workers > 1 and len(todo) > 1 and device == "cpu":
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        jobs = [(specs[n][0], cfg, sel, list(specs[n][1]), specs[n][2], targets[n]) for n in todo]
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=mp.get_context("spawn"),
                                 initializer=_pseudo_worker_init, initargs=(cfg, device, list(donors()))) as pool:
            for n, res in zip(todo, tqdm(pool.map(_pseudo_job, jobs), total=len(jobs), desc=desc,
                                         disable=not progress), strict=True):
                out[n] = res
    else:
        for n in tqdm(todo, desc=desc, disable=not progress):
            ref, kinds, seed = specs[n]
            out[n] = pseudo_clip_features(ref, cfg, sel, kinds, seed, donors, backbone, targets[n], crops)
    return out


def _raw(model: Any, clips: Sequence[ClipFeatures], streams: Sequence[str]) -> dict[str, list[np.ndarray]]:
    from vidseq.models.anomaly.fit import score_clip

    scored = [score_clip(model, cf, normalise=False) for cf in clips]
    return {s: [c.arrays[f"raw_{s}"] for c in scored] for s in streams}


def _stats(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    v = np.concatenate(list(arrays)) if arrays else np.zeros(0)
    v = v[np.isfinite(v)]
    mean = float(v.mean()) if len(v) else 0.0
    std = float(v.std()) if len(v) > 1 and v.std() > 1e-12 else 1.0
    return mean, std


def _speed_quantiles(clips: Sequence[ClipFeatures], scale: np.ndarray, temporal: int, window: int,
                     qs: Sequence[float]) -> list[np.ndarray]:
    """Per clip ``(Q, T)``: every frame quantile of one local-speed map setting."""
    from vidseq.models.anomaly.model import local_speed_maps

    return [np.quantile(local_speed_maps(cf.magnitude_maps, cf.valid, scale, temporal, window), qs, axis=1)
            for cf in clips]


def fold_scores(cfg: AnomalyConfig, sel: SelectionConfig, fit: Sequence[ClipFeatures], held: Sequence[ClipFeatures],
                pseudo: Sequence[ClipFeatures], *, frame_predictor: Any = None) -> dict[str, Any]:
    """Raw scores of every stream and setting on ``pseudo``; their statistics from the clean ``held`` clips.

    Per scale-map cell: the objects stream (its attributes are normalised by the scale map) and every
    speed setting (vectorised, :func:`~vidseq.models.anomaly.model.local_speed_maps`); the crops and frame
    streams once.
    """
    from vidseq.models.anomaly.fit import fit_parts, fit_scale_map

    streams = search_config(cfg, sel).streams
    raw: dict[str, list[np.ndarray]] = {}
    stats: dict[str, tuple[float, float]] = {}
    for n, cell in enumerate(sel.speed_cells):
        ccfg = replace(cfg, speed=replace(cfg.speed, cell=cell))
        others = [s for s in streams if s == "objects" or (s in ("crops", "frame") and n == 0)]
        model = None
        if others:
            model = fit_parts(replace(ccfg, streams=tuple(others), weights=()), fit, frame_predictor=frame_predictor)
            held_raw, p_raw = _raw(model, held, others), _raw(model, pseudo, others)
            for s in others:
                key = f"objects@{cell}" if s == "objects" else s
                raw[key], stats[key] = p_raw[s], _stats(held_raw[s])
        if "speed" not in streams:
            continue
        # the same scale map fit_parts just fitted for this cell, or fit it here
        scale = model.speed.scale_map.numpy() if model is not None else fit_scale_map(ccfg, fit)
        qs = list(sel.speed_frame_quantiles)
        for tmp, win in itertools.product(sel.speed_temporals, sel.speed_windows):
            # one local-speed map per clip and setting, every frame quantile from it: (Q, T) per clip
            p_q, h_q = (_speed_quantiles(clips, scale, tmp, win, qs) for clips in (pseudo, held))
            for j, q in enumerate(qs):
                key = _speed_key(cell, tmp, win, q)
                raw[key], stats[key] = [x[j] for x in p_q], _stats([x[j] for x in h_q])
    return {"raw": raw, "stats": stats}


# -------------------------------------------------------------------------------------------- scoring


def smooth_vectorised(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Vectorised twin of :func:`vidseq.models.anomaly.model.smooth_scores` (nearest padding)."""
    if len(kernel) == 1 or len(x) == 0:
        return x.astype(np.float64)
    r = len(kernel) // 2
    return np.convolve(np.pad(x.astype(np.float64), r, mode="edge"), kernel[::-1], mode="valid")


def candidate_scores(c: Candidate, folds: Sequence[FoldScores], truncate: float) -> list[np.ndarray]:
    """Final per-clip scores of candidate ``c`` over every fold's pseudo clips."""
    out = []
    for fs in folds:
        keys = c.keys()
        for i in range(len(fs.labels)):
            z = np.stack([fs.z[k][i] * w for k, w in zip(keys, c.weights, strict=True)])
            fused = z.max(0) if c.fusion == "max" else z.sum(0) / sum(c.weights)
            out.append(smooth_vectorised(fused, gaussian_kernel(c.smooth_sigma_s * fs.fps[i], truncate)))
    return out


def evaluate_candidates(cands: Sequence[Candidate], folds: Sequence[FoldScores], truncate: float, *,
                        progress: bool = False) -> list[dict[str, Any]]:
    """AUCs of every candidate on the pooled pseudo clips (+ per-kind AUCs: each kind's anomalous frames
    against all normal frames)."""
    from tqdm import tqdm

    kinds = np.concatenate([k for fs in folds for k in fs.kinds])
    y = np.concatenate([y for fs in folds for y in fs.labels])
    present = [kind for kind in KINDS if (kinds == kind).any()]
    group = np.zeros(len(kinds), np.int64)
    for j, kind in enumerate(present):
        group[kinds == kind] = j
    rows = []
    for i, c in enumerate(tqdm(cands, desc="candidates", disable=not progress)):
        scores = candidate_scores(c, folds, truncate)
        by_kind = group_aucs(y, np.concatenate(scores), group, len(present))
        auc = float(by_kind[-1])
        auc_mm = float(group_aucs(y, np.concatenate([minmax(s) for s in scores]))[-1])
        row: dict[str, Any] = {"index": i, "label": c.label(), "streams": list(c.streams), "weights": list(c.weights),
                               "fusion": c.fusion, "smooth_sigma_s": c.smooth_sigma_s, "speed_window": c.speed_window,
                               "speed_frame_quantile": c.speed_frame_quantile, "speed_temporal": c.speed_temporal,
                               "speed_cell": c.speed_cell, "auc_micro": auc,
                               "auc_micro_minmax": auc_mm, "criterion": (auc + auc_mm) / 2}
        for j, kind in enumerate(present):
            row[f"auc_micro_{kind}"] = float(by_kind[j])
        rows.append(row)
    return rows


def choose(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Highest criterion; ties (within 0.001) to fewer streams, then the earlier grid point."""
    best = max(r["criterion"] for r in rows)
    near = [r for r in rows if r["criterion"] >= best - 1e-3]
    return min(near, key=lambda r: (len(r["streams"]), r["index"]))


# ------------------------------------------------------------------------------------------- the run


def tune(data: Path, out: Path, *, config: Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Run the label-free selection; writes ``out/anomaly.yaml`` (train with it), ``selection.json``/``.csv``."""
    import csv

    from vidseq.config import save_config, to_dict
    from vidseq.io import atomic_open, atomic_write_json
    from vidseq.tasks.anomaly.features import make_backbone, make_crop_encoder

    tc, out, cache = prepare_run(config, overrides, out)
    sel = tc.select
    t0 = time.perf_counter()
    train_refs, val_refs = split_train_val(Path(data), tc.val_clips)
    refs = train_refs + val_refs  # every normal clip; labels of other splits are never opened
    if len(refs) < sel.folds:
        raise DatasetError(f"{data}: {len(refs)} normal clips for {sel.folds} folds")
    base = search_config(tc.model, sel)
    feats = extract_all(refs, base, cache, tc.workers, tc.device, tc.progress)
    backbone = make_backbone(base, tc.device)
    crops = make_crop_encoder(base, tc.device)
    folds: list[FoldScores] = []
    fold_info = []
    counter = 0
    for k in range(sel.folds):
        held_idx = [i for i in range(len(refs)) if i % sel.folds == k]
        fit_idx = [i for i in range(len(refs)) if i % sel.folds != k]
        fit_f, held_f = [feats[i] for i in fit_idx], [feats[i] for i in held_idx]
        donor_refs = [refs[i] for i in fit_idx[: sel.donor_clips]]
        donors = functools.cache(functools.partial(_donor_objects, tuple(donor_refs), sel.pseudo_clip_s))
        pseudo, labels, kinds, fps = [], [], [], []
        specs = []
        for rnd in range(sel.rounds):
            for i in held_idx:
                ks = [sel.pseudo.kinds[(counter + j) % len(sel.pseudo.kinds)] for j in range(sel.pseudo.segments)]
                counter += sel.pseudo.segments
                specs.append((refs[i], ks, (sel.pseudo.seed + rnd) * 1000 + i))
        for cf, y, kd in pseudo_clips(specs, base, sel, donors, [r.clip_id for r in donor_refs], backbone, cache,
                                      crops=crops, workers=tc.workers, device=tc.device,
                                      desc=f"fold {k + 1}/{sel.folds} pseudo clips", progress=tc.progress):
            pseudo.append(cf)
            labels.append(y)
            kinds.append(kd)
            fps.append(cf.fps)
        predictor = None
        if base.uses("frame"):
            predictor = train_frame_predictor(base, replace(tc.train, epochs=sel.frame_epochs, device=tc.device),
                                              fit_f, held_f, out / f"fold{k + 1}" / "frame_lstm", resume=False,
                                              progress=tc.progress, config_dict=to_dict(tc))
        log.info("fold %d/%d: fitting on %d clips, scoring %d held-out clips", k + 1, sel.folds, len(fit_f),
                 len(held_f))
        fs = fold_scores(base, sel, fit_f, held_f, pseudo, frame_predictor=predictor)
        folds.append(FoldScores(labels, kinds, fps, fs["raw"], fs["stats"]))
        fold_info.append({"fit": [refs[i].clip_id for i in fit_idx], "held_out": [refs[i].clip_id for i in held_idx],
                          "donor_clips": [r.clip_id for r in donor_refs],
                          "donors": len(donors()) if donors.cache_info().currsize else "cached",
                          "pseudo_clips": len(pseudo), "pseudo_frames": int(sum(len(y) for y in labels)),
                          "pseudo_anomalous": int(sum(int(y.sum()) for y in labels))})
    n_anom = sum(int(y.sum()) for fs in folds for y in fs.labels)
    if n_anom == 0:
        raise DatasetError(f"{data}: no pseudo-anomaly fits into the normal clips (clips shorter than "
                           f"{2 * sel.pseudo.min_len_s + 2:g} s?); lower select.pseudo.min_len_s or use longer clips")
    cands = candidates(sel)
    log.info("scoring %d candidates on %d pseudo frames (%d anomalous)", len(cands),
             sum(len(y) for fs in folds for y in fs.labels), n_anom)
    rows = evaluate_candidates(cands, folds, tc.model.smooth_truncate, progress=tc.progress)
    best = choose(rows)
    chosen = cands[best["index"]]
    tuned = replace(tc, model=chosen.apply(base))
    all_kinds = np.concatenate([k for fs in folds for k in fs.kinds])
    summary = {
        "protocol": "K-fold cross-fitting on normal train/val clips with injected pseudo-anomalies "
                    "(vidseq.tasks.anomaly.tune); no test clip or label is read",
        "folds": fold_info, "pseudo_frames": int(len(all_kinds)),
        "pseudo_anomalous_by_kind": {k: int((all_kinds == k).sum()) for k in KINDS},
        "candidates": len(rows), "chosen": best, "config": str(out / "anomaly.yaml"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(out / "selection.json", {**summary, "rows": rows})
    keys = list(rows[0].keys())
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_open(out / "selection.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in sorted(rows, key=lambda r: -r["criterion"]):
            w.writerow({k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()})
    save_config(tuned, out / "anomaly.yaml")  # last: its presence means the run completed
    return {"chosen": best["label"], "pseudo_auc_micro": best["auc_micro"],
            "pseudo_auc_micro_minmax": best["auc_micro_minmax"], "candidates": len(rows),
            "pseudo_frames": summary["pseudo_frames"], "seconds": summary["seconds"],
            "config": str(out / "anomaly.yaml")}


def grid_report(data: Path, tune_dir: Path, *, split: str = "test", overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Reporting only, AFTER selection: every grid candidate's AUC on a labelled split (e.g. test).

    Fits every part on the training clips (validation clips for the statistics), as ``vidseq train
    anomaly`` does, scores ``split`` with each candidate and pairs the result with the candidate's
    pseudo-anomaly AUC from ``tune_dir/selection.json``: this shows how well the label-free criterion
    ranks designs. It never feeds back into :func:`tune`.
    """
    from scipy.stats import spearmanr

    from vidseq.config import to_dict
    from vidseq.sequences.manifest import load_dataset

    tc = load_task_config(Path(tune_dir) / "anomaly.yaml", overrides)
    sel = tc.select
    chosen = json.loads((Path(tune_dir) / "selection.json").read_text())
    base = search_config(tc.model, sel)
    cache = tc.cache_dir or str(Path(tune_dir) / "cache")
    train_refs, val_refs = split_train_val(Path(data), tc.val_clips)
    test_refs = clips_of(Path(data), [split])
    ds = load_dataset(data)
    labels = [ds.clip(r.clip_id).load_labels().astype(np.int64) for r in test_refs]
    feats = extract_all(train_refs + val_refs + test_refs, base, cache, tc.workers, tc.device, tc.progress)
    n_tr, n_va = len(train_refs), len(val_refs)
    train_f, val_f, test_f = feats[:n_tr], feats[n_tr:n_tr + n_va], feats[n_tr + n_va:]
    predictor = None
    if base.uses("frame"):
        predictor = train_frame_predictor(base, replace(tc.train, device=tc.device), train_f, val_f,
                                          Path(tune_dir) / f"grid_{split}" / "frame_lstm", resume=False,
                                          progress=tc.progress, config_dict=to_dict(tc))
    fs = fold_scores(base, sel, train_f, val_f or train_f, test_f, frame_predictor=predictor)
    folds = [FoldScores(labels, [np.full(len(y), "", dtype=str) for y in labels], [cf.fps for cf in test_f],
                        fs["raw"], fs["stats"])]
    rows = evaluate_candidates(candidates(sel), folds, tc.model.smooth_truncate, progress=tc.progress)
    pseudo = {r["label"]: r for r in chosen["rows"]}
    for r in rows:
        p = pseudo.get(r["label"], {})
        r["pseudo_auc_micro"], r["pseudo_auc_micro_minmax"] = p.get("auc_micro"), p.get("auc_micro_minmax")
        r["pseudo_criterion"] = p.get("criterion")
        for k in [k for k in r if k.startswith("auc_micro_") and k.split("auc_micro_")[1] in KINDS]:
            del r[k]
    paired = [(r["pseudo_criterion"], r["criterion"]) for r in rows if r["pseudo_criterion"] is not None]
    rho = float(spearmanr(*zip(*paired)).statistic) if len(paired) > 2 else float("nan")
    best_test = max(rows, key=lambda r: r["criterion"])
    mine = next((r for r in rows if r["label"] == chosen["chosen"]["label"]), None)
    return {"split": split, "rows": rows, "spearman_pseudo_vs_split": rho, "chosen": mine,
            "best_on_split": best_test, "chosen_rank_on_split": 1 + sorted(
                (r["criterion"] for r in rows), reverse=True).index(mine["criterion"]) if mine else None}
