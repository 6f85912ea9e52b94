"""Pedestrian trajectories: ETH/UCY files, Social-GAN windows, augmentation, manifest tracks.

The benchmark protocol (Social GAN, Gupta et al. CVPR'18) cuts every scene file into windows of
``obs_len + pred_len`` consecutive annotated frames (8 + 12 at 0.4 s), sliding by one frame, and keeps
every agent present in all of a window's frames. With every such agent kept (``min_agents=1``) the
constant-velocity baseline reproduces the issue's anchors exactly (ETH 1.075/2.282 ... Zara2 0.324/0.724);
``min_agents=2`` is Social GAN's own loader (``num_peds > min_ped=1``), which drops lone walkers.

Example::

    train = load_eth_ucy(root, "zara1", "train")            # TrajectoryWindows
    ds = TrajectoryDataset(train, augment=AugmentConfig())
    item = ds[0]                                           # TrajectoryItem: obs (8, 2), fut (12, 2), augment
    batch = ds.collate([ds[0], ds[1]])                     # TrajectoryBatch, augmented
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from vidseq.errors import DatasetError

logger = logging.getLogger(__name__)

ETH_UCY_SCENES: tuple[str, ...] = ("eth", "hotel", "univ", "zara1", "zara2")
ETH_UCY_SPLITS: tuple[str, ...] = ("train", "val", "test")
ETH_UCY_STEP_S = 0.4  # annotation interval of the Social-GAN release (every 10th frame at 25 fps)


@dataclass(frozen=True)
class TrajectoryWindows:
    """Fixed-length agent windows as parallel arrays (one row per agent and window).

    Attributes:
        obs: (N, obs_len, 2) float32 observed positions.
        fut: (N, pred_len, 2) float32 future positions (ground truth).
        window: (N,) int64 window id; agents sharing an id were seen in the same frames (neighbours).
        agent_id: (N,) int64 track / pedestrian id within its source.
        start_frame: (N,) int64 frame id of the first observed step.
        source: (N,) int64 index into ``sources``.
        sources: names of the files / clips the rows came from.
        scale: (N,) float64 units per metre the positions were divided by (1 for metric data), or None.
    """

    obs: np.ndarray
    fut: np.ndarray
    window: np.ndarray
    agent_id: np.ndarray
    start_frame: np.ndarray
    source: np.ndarray
    sources: tuple[str, ...] = ()
    scale: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.obs.shape[0]
        if self.obs.ndim != 3 or self.obs.shape[-1] != 2:
            raise DatasetError(f"trajectory windows: obs must be (N, T_obs, 2), got {self.obs.shape}")
        if self.fut.ndim != 3 or self.fut.shape[0] != n or self.fut.shape[-1] != 2:
            raise DatasetError(f"trajectory windows: fut must be ({n}, T_pred, 2), got {self.fut.shape}")
        for name in ("window", "agent_id", "start_frame", "source", "scale"):
            arr = getattr(self, name)
            if arr is not None and arr.shape != (n,):
                raise DatasetError(f"trajectory windows: {name} must be ({n},), got {arr.shape}")

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @property
    def obs_len(self) -> int:
        return int(self.obs.shape[1])

    @property
    def pred_len(self) -> int:
        return int(self.fut.shape[1])

    @property
    def num_windows(self) -> int:
        return int(np.unique(self.window).size)

    def subset(self, index: np.ndarray) -> TrajectoryWindows:
        """Rows ``index`` (bool mask or integer index), keeping window ids and sources."""
        return TrajectoryWindows(
            self.obs[index], self.fut[index], self.window[index], self.agent_id[index],
            self.start_frame[index], self.source[index], self.sources,
            None if self.scale is None else self.scale[index],
        )

    def rescaled(self, scale: np.ndarray) -> TrajectoryWindows:
        """Positions divided by ``scale`` (N,) units per metre; ``scale`` is recorded."""
        s = np.asarray(scale, np.float64)[:, None, None]
        return TrajectoryWindows(
            (self.obs / s).astype(np.float32), (self.fut / s).astype(np.float32), self.window, self.agent_id,
            self.start_frame, self.source, self.sources, np.asarray(scale, np.float64),
        )

    @staticmethod
    def empty(obs_len: int = 8, pred_len: int = 12) -> TrajectoryWindows:
        z = np.zeros(0, np.int64)
        return TrajectoryWindows(
            np.zeros((0, obs_len, 2), np.float32), np.zeros((0, pred_len, 2), np.float32), z, z, z, z, ()
        )

    @staticmethod
    def concat(parts: Sequence[TrajectoryWindows]) -> TrajectoryWindows:
        """Concatenate windows; window ids and source indices are renumbered so they stay distinct."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return TrajectoryWindows.empty()
        lens = {(p.obs_len, p.pred_len) for p in parts}
        if len(lens) != 1:
            raise DatasetError(f"cannot concatenate windows of different lengths {sorted(lens)}")
        scales = None
        if any(p.scale is not None for p in parts):
            scales = np.concatenate([np.ones(len(p)) if p.scale is None else p.scale for p in parts])
        win_off, src_off, windows, srcs, names = 0, 0, [], [], []
        for p in parts:
            _, inv = np.unique(p.window, return_inverse=True)
            windows.append(inv.astype(np.int64) + win_off)
            win_off += int(inv.max()) + 1
            srcs.append(p.source + src_off)
            src_off += len(p.sources)
            names.extend(p.sources)
        return TrajectoryWindows(
            np.concatenate([p.obs for p in parts]), np.concatenate([p.fut for p in parts]),
            np.concatenate(windows), np.concatenate([p.agent_id for p in parts]),
            np.concatenate([p.start_frame for p in parts]), np.concatenate(srcs), tuple(names), scales,
        )


def read_eth_ucy_file(path: str | Path) -> np.ndarray:
    """Read a Social-GAN ETH/UCY file: whitespace-separated ``frame ped_id x y`` rows.

    Returns:
        (R, 4) float64 array of frame, ped_id, x, y.

    Raises:
        DatasetError: missing file, a row without 4 numbers, or NaN/inf values (names file and line).
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"trajectory file not found: {p}")
    rows: list[list[float]] = []
    with p.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise DatasetError(f"{p}:{line_no}: expected 4 columns 'frame ped_id x y', got {len(parts)}")
            try:
                vals = [float(v) for v in parts]
            except ValueError:
                raise DatasetError(f"{p}:{line_no}: non-numeric value in {line.strip()!r}") from None
            if not all(math.isfinite(v) for v in vals):
                raise DatasetError(f"{p}:{line_no}: NaN/inf value in {line.strip()!r}")
            rows.append(vals)
    if not rows:
        raise DatasetError(f"{p}: no trajectory rows")
    return np.asarray(rows, np.float64)


def make_windows(
    rows: np.ndarray,
    obs_len: int = 8,
    pred_len: int = 12,
    skip: int = 1,
    min_agents: int = 1,
    source: str = "",
) -> TrajectoryWindows:
    """Cut ``(frame, id, x, y)`` rows into Social-GAN windows.

    Windows start at every ``skip``-th distinct frame and span ``obs_len + pred_len`` distinct frames;
    an agent is kept when it has a row in each of them, a window when it keeps ``>= min_agents`` agents.

    Args:
        rows: (R, 4) frame, id, x, y (frames need not be evenly spaced; distinct frames are the steps).
        obs_len: observed steps.
        pred_len: predicted steps.
        skip: window start stride, in distinct frames.
        min_agents: drop windows with fewer fully-present agents (1 keeps all; 2 is Social GAN's loader).
        source: name stored in the result.
    """
    if rows.ndim != 2 or rows.shape[1] != 4:
        raise DatasetError(f"{source or 'rows'}: expected (R, 4) frame/id/x/y rows, got {rows.shape}")
    seq_len = obs_len + pred_len
    frames = np.unique(rows[:, 0])
    empty = TrajectoryWindows.empty(obs_len, pred_len)
    if frames.size < seq_len:
        return TrajectoryWindows(empty.obs, empty.fut, empty.window, empty.agent_id, empty.start_frame,
                                 empty.source, (source,))
    frame_idx = np.searchsorted(frames, rows[:, 0])
    ids, id_idx = np.unique(rows[:, 1], return_inverse=True)
    # one row per (agent, frame) ordered by agent then frame; of duplicate rows the last one wins
    key = id_idx.astype(np.int64) * frames.size + frame_idx
    _, first_in_reversed = np.unique(key[::-1], return_index=True)
    sel = key.size - 1 - first_in_reversed  # (R',) row index, ordered by key
    agent, fidx, xy = id_idx[sel], frame_idx[sel], rows[sel, 2:4]
    # runs of consecutive distinct frames per agent; a window may start where seq_len rows of the run follow
    new_run = np.ones(sel.size, bool)
    new_run[1:] = (agent[1:] != agent[:-1]) | (fidx[1:] != fidx[:-1] + 1)
    run_id = np.cumsum(new_run) - 1
    run_first = np.flatnonzero(new_run)
    run_len = np.diff(np.append(run_first, sel.size))
    offset = np.arange(sel.size) - run_first[run_id]
    cand = np.flatnonzero((offset + seq_len <= run_len[run_id]) & (fidx % skip == 0))
    per_start = np.bincount(fidx[cand], minlength=frames.size)
    cand = cand[per_start[fidx[cand]] >= min_agents]
    if cand.size == 0:
        return TrajectoryWindows(empty.obs, empty.fut, empty.window, empty.agent_id, empty.start_frame,
                                 empty.source, (source,))
    cand = cand[np.lexsort((agent[cand], fidx[cand]))]  # by window start, then agent
    # Social-GAN rounds positions to 4 decimals before use
    traj = np.round(xy[cand[:, None] + np.arange(seq_len)[None, :]], 4).astype(np.float32)  # (N, seq_len, 2)
    return TrajectoryWindows(
        obs=traj[:, :obs_len].copy(),
        fut=traj[:, obs_len:].copy(),
        window=(fidx[cand] // skip).astype(np.int64),
        agent_id=ids[agent[cand]].astype(np.int64),
        start_frame=frames[fidx[cand]].astype(np.int64),
        source=np.zeros(cand.size, np.int64),
        sources=(source,),
    )


def eth_ucy_files(root: str | Path, scene: str, split: str) -> list[Path]:
    """The ``root/scene/split/*.txt`` files of a Social-GAN leave-one-scene-out split, sorted.

    ``scene="all"`` gives every distinct file name of ``split`` over all scene folders (each scene's
    train/val parts appear, identical, in the four folders where that scene is not held out), e.g. the
    train parts of all five scenes for a model meant for use rather than for the benchmark.
    """
    if split not in ETH_UCY_SPLITS:
        raise DatasetError(f"unknown split '{split}'; known: {', '.join(ETH_UCY_SPLITS)}")
    if scene == "all":
        by_name: dict[str, Path] = {}
        for sc in ETH_UCY_SCENES:
            if (Path(root) / sc / split).is_dir():
                for f in sorted((Path(root) / sc / split).glob("*.txt")):
                    by_name.setdefault(f.name, f)
        if not by_name:
            raise DatasetError(f"no .txt trajectory files in {root}/<scene>/{split}")
        return [by_name[k] for k in sorted(by_name)]
    if scene not in ETH_UCY_SCENES:
        raise DatasetError(f"unknown ETH/UCY scene '{scene}'; known: {', '.join(ETH_UCY_SCENES)}, all")
    folder = Path(root) / scene / split
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DatasetError(f"no .txt trajectory files in {folder}")
    return files


def load_eth_ucy(
    root: str | Path, scene: str, split: str, obs_len: int = 8, pred_len: int = 12, skip: int = 1,
    min_agents: int = 1,
) -> TrajectoryWindows:
    """Windows of one scene folder's split (``root`` is the ``eth_ucy`` folder with one folder per scene).

    ``scene="all"`` reads the distinct files of ``split`` over all scenes (see :func:`eth_ucy_files`).
    """
    parts = [
        make_windows(read_eth_ucy_file(f), obs_len, pred_len, skip, min_agents,
                     source=f"{f.parent.parent.name}/{split}/{f.name}")
        for f in eth_ucy_files(root, scene, split)
    ]
    out = TrajectoryWindows.concat(parts)
    logger.info("%s/%s: %d agent windows in %d windows from %d files", scene, split, len(out),
                out.num_windows, len(parts))
    return out


def _resample_step(frames: np.ndarray, fps: float | None, step_s: float) -> int:
    """Frames per forecaster step for a clip, or 1 when its tracks are already that sparse."""
    if not fps or fps <= 0:
        return 1
    step = max(1, int(round(fps * step_s)))
    uniq = np.unique(frames)
    if uniq.size > 1 and int(np.median(np.diff(uniq))) >= step:
        return 1  # already annotated at the forecaster's interval (e.g. ETH/UCY imports)
    return step


def load_manifest_tracks(
    dataset_dir: str | Path, splits: Iterable[str] = ("train",), obs_len: int = 8, pred_len: int = 12,
    step_s: float = ETH_UCY_STEP_S, min_agents: int = 1, person_height_m: float = 1.7,
) -> TrajectoryWindows:
    """Windows from the MOT-style ``tracks`` of a vidseq dataset folder's clips.

    Metre tracks (``track_units: m``) use the box's ``x, y`` as the position. Pixel tracks use the
    bottom centre of the box (the foot point) divided by the window's pixels-per-metre scale, taken as
    the median box height over the observed steps / ``person_height_m``; ``scale`` holds it.
    Tracks are resampled to one point per ``step_s`` using each clip's ``fps``.

    Args:
        dataset_dir: folder with ``dataset.yaml``.
        splits: clip splits to use.
        step_s: forecaster step in seconds.
        min_agents: drop windows with fewer agents (1 keeps lone tracks).
        person_height_m: height of a box in metres, for pixel tracks.

    Raises:
        DatasetError: no clip of those splits has tracks.
    """
    from vidseq.sequences.manifest import load_dataset

    ds = load_dataset(Path(dataset_dir))
    parts = []
    for clip in ds.clips_for(tuple(splits)):
        if clip.tracks is None:
            continue
        tr = clip.load_tracks()
        if not len(tr):
            continue
        step = _resample_step(tr.frame, clip.fps, step_s)
        keep = (tr.frame - tr.frame.min()) % step == 0
        tr = tr.select(keep)
        metric = clip.track_units == "m"
        point = tr.xywh[:, :2] if metric else tr.xywh[:, :2] + tr.xywh[:, 2:] * np.array([0.5, 1.0])
        rows = np.column_stack([tr.frame, tr.track_id, point]).astype(np.float64)
        win = make_windows(rows, obs_len, pred_len, 1, min_agents, source=str(clip.id))
        if metric or not len(win):
            parts.append(win)
            continue
        # per-window pixels-per-metre from the box heights over the observed steps
        ids, inv = np.unique(tr.track_id, return_inverse=True)
        frames, f_inv = np.unique(tr.frame, return_inverse=True)
        heights = np.full((frames.size, ids.size), np.nan)  # (F, A)
        heights[f_inv, inv] = tr.xywh[:, 3]
        start = np.searchsorted(frames, win.start_frame)
        cols = np.searchsorted(ids, win.agent_id)
        obs_steps = start[:, None] + np.arange(obs_len)[None, :]  # (N, obs_len)
        h = np.nanmedian(heights[obs_steps, cols[:, None]], axis=1)
        scale = np.where(np.isfinite(h) & (h > 0), h, 1.0) / person_height_m
        parts.append(win.rescaled(scale))
    out = TrajectoryWindows.concat(parts)
    if not len(out):
        raise DatasetError(f"{dataset_dir}: no {obs_len + pred_len}-step track windows in split(s) "
                           f"{', '.join(splits)}")
    return out


@dataclass(frozen=True)
class AugmentConfig:
    """Random similarity transforms applied per sample during training.

    Attributes:
        rotate: rotate by a uniform random angle in [0, 2 pi).
        flip: mirror (y -> -y) with probability 0.5.
        scale_range: uniform random scale (speed change) range; (1, 1) disables it.
        reverse: probability of playing a window backwards (future becomes past); 0 disables it.
        obs_noise: largest standard deviation (in position units) of Gaussian noise added to the observed
            points only; each noisy sample draws its own level uniformly from [obs_noise_min, obs_noise].
            It teaches the model to smooth jittery hand-annotated or detected tracks (ETH/Hotel, video)
            while the smooth interpolated UCY tracks dominate training.
        obs_noise_min: smallest noise level of a noisy sample (a gap between clean and noisy samples
            lets the model tell smooth tracks, which it should extrapolate, from jittery ones).
        obs_noise_prob: share of samples that get observation noise.
    """

    rotate: bool = True
    flip: bool = True
    scale_range: tuple[float, float] = (1.0, 1.0)
    reverse: float = 0.0
    obs_noise: float = 0.0
    obs_noise_min: float = 0.0
    obs_noise_prob: float = 0.5


def augment_batch(
    obs: torch.Tensor, fut: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one random similarity transform per sample, about each sample's last observed point.

    Args:
        obs: (B, T_obs, 2) observed positions.
        fut: (B, T_pred, 2) future positions.
    """
    b = obs.shape[0]
    t_obs = obs.shape[1]
    if cfg.reverse > 0:
        full = torch.cat([obs, fut], dim=1)  # (B, T, 2)
        rev = torch.rand(b, generator=generator) < cfg.reverse
        full = torch.where(rev[:, None, None], full.flip(1), full)
        obs, fut = full[:, :t_obs], full[:, t_obs:]
    origin = obs[:, -1:, :]  # (B, 1, 2)
    mat = torch.eye(2).expand(b, 2, 2).clone()  # (B, 2, 2)
    if cfg.rotate:
        ang = torch.rand(b, generator=generator) * (2 * math.pi)
        c, s = torch.cos(ang), torch.sin(ang)
        mat = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    if cfg.flip:
        sign = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
        mat = mat * torch.stack([torch.ones(b), sign], -1)[:, None, :]  # flip y before rotating
    lo, hi = cfg.scale_range
    if hi != lo or lo != 1.0:
        mat = mat * (lo + (hi - lo) * torch.rand(b, generator=generator))[:, None, None]
    obs = (obs - origin) @ mat.transpose(1, 2) + origin
    fut = (fut - origin) @ mat.transpose(1, 2) + origin
    if cfg.obs_noise > 0 and cfg.obs_noise_prob > 0:
        noisy = torch.rand(b, generator=generator) < cfg.obs_noise_prob
        lo = min(cfg.obs_noise_min, cfg.obs_noise)
        sigma = (lo + torch.rand(b, generator=generator) * (cfg.obs_noise - lo)) * noisy  # (B,)
        obs = obs + torch.randn(obs.shape, generator=generator) * sigma[:, None, None]
    return obs, fut


@dataclass
class TrajectoryBatch:
    """A collated batch: ``obs`` (B, T_obs, 2), ``fut`` (B, T_pred, 2) float32 tensors (None to forecast)."""

    obs: torch.Tensor
    fut: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> TrajectoryBatch:
        return TrajectoryBatch(self.obs.to(device), None if self.fut is None else self.fut.to(device))

    def __len__(self) -> int:
        return int(self.obs.shape[0])


class TrajectoryItem(NamedTuple):
    """One dataset item: ``obs`` (T_obs, 2), ``fut`` (T_pred, 2) float32 and the augmentation to apply."""

    obs: np.ndarray
    fut: np.ndarray
    augment: AugmentConfig | None = None


def collate_trajectories(items: Sequence[TrajectoryItem | tuple[np.ndarray, np.ndarray]],
                         generator: torch.Generator | None = None) -> TrajectoryBatch:
    """Stack items into a :class:`TrajectoryBatch`, applying the items' augmentation (one draw per sample).

    Training and validation loaders share this function: only items of an augmenting dataset carry an
    :class:`AugmentConfig`.
    """
    if not items:
        raise DatasetError("cannot collate an empty list of trajectory items")
    obs = torch.from_numpy(np.stack([it[0] for it in items]))
    fut = torch.from_numpy(np.stack([it[1] for it in items]))
    aug = items[0][2] if len(items[0]) > 2 else None  # type: ignore[misc]
    if aug is not None:
        obs, fut = augment_batch(obs, fut, aug, generator)
    return TrajectoryBatch(obs, fut)


class TrajectoryDataset(torch.utils.data.Dataset):
    """Torch dataset over :class:`TrajectoryWindows`; augmentation happens in :meth:`collate`.

    Augmenting per batch (one vectorised transform) is much cheaper than per item. Random draws come from
    ``generator`` or, when None, torch's default generator, which the training engine seeds and saves in
    its checkpoints (so a resumed run sees the same transforms).

    Args:
        windows: the agent windows.
        augment: transforms for training batches; None for validation/test.
        generator: optional private random generator.
        repeat: present every window this many times per epoch (small training sets, e.g. the univ
            split's 9k windows, then get as many optimizer steps as the others; with augmentation
            each repetition is a different sample).
    """

    def __init__(self, windows: TrajectoryWindows, augment: AugmentConfig | None = None,
                 generator: torch.Generator | None = None, repeat: int = 1) -> None:
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        self.windows = windows
        self.augment = augment
        self.generator = generator
        self.repeat = repeat

    def __len__(self) -> int:
        return len(self.windows) * self.repeat

    def __getitem__(self, i: int) -> TrajectoryItem:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)}")
        i = i % len(self.windows)
        return TrajectoryItem(self.windows.obs[i], self.windows.fut[i], self.augment)

    def collate(self, items: Sequence[TrajectoryItem]) -> TrajectoryBatch:
        """:func:`collate_trajectories` with this dataset's generator."""
        return collate_trajectories(items, self.generator)
