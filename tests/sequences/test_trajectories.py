"""ETH/UCY loading, Social-GAN windows, augmentation, manifest tracks (vidseq/sequences/trajectories.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vidseq.errors import DatasetError
from vidseq.sequences.trajectories import (
    ETH_UCY_SCENES,
    AugmentConfig,
    TrajectoryDataset,
    TrajectoryWindows,
    augment_batch,
    collate_trajectories,
    eth_ucy_files,
    load_eth_ucy,
    load_manifest_tracks,
    make_windows,
    read_eth_ucy_file,
)


def _rows(ped: int, frames: range, x0: float = 0.0, vx: float = 0.5, y: float = 0.0) -> list[tuple]:
    return [(float(f), float(ped), x0 + vx * i, y) for i, f in enumerate(frames)]


def _write(path: Path, rows: list[tuple]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{f}\t{p}\t{x}\t{y}\n" for f, p, x, y in rows))
    return path


def test_windows_keep_agents_present_in_every_frame() -> None:
    # ped 1: frames 0..240 (25 steps of 10); ped 2: 0..190 (20 steps); ped 3 skips frame 50
    rows = _rows(1, range(0, 250, 10)) + _rows(2, range(0, 200, 10), y=1.0)
    rows += [r for r in _rows(3, range(0, 250, 10), y=2.0) if r[0] != 50]
    w = make_windows(np.array(rows), obs_len=8, pred_len=12)
    # 25 distinct frames -> 6 window starts; ped 1 in all 6, ped 2 only in the first, ped 3 from start 6 only
    assert len(w) == 6 + 1 + 0
    assert sorted(w.agent_id[w.window == 0].tolist()) == [1, 2]
    assert w.obs.shape == (7, 8, 2) and w.fut.shape == (7, 12, 2)
    first = w.subset((w.window == 0) & (w.agent_id == 1))
    np.testing.assert_allclose(first.obs[0, :, 0], 0.5 * np.arange(8))
    np.testing.assert_allclose(first.fut[0, :, 0], 0.5 * np.arange(8, 20))
    assert first.start_frame.tolist() == [0]
    assert make_windows(np.array(rows), 8, 12, min_agents=2).agent_id.tolist() == [1, 2]
    assert len(make_windows(np.array(rows), 8, 12, skip=2)) == 3 + 1


def test_duplicate_rows_keep_the_last_one() -> None:
    rows = _rows(1, range(0, 200, 10))
    rows.insert(3, (30.0, 1.0, 99.0, 99.0))  # a duplicate of frame 30 listed before the real row
    rows.append((50.0, 1.0, 7.0, 7.0))  # ... and one after it: this one wins
    w = make_windows(np.array(rows), 8, 12)
    assert len(w) == 1
    np.testing.assert_allclose(w.obs[0, 3], [1.5, 0.0])
    np.testing.assert_allclose(w.obs[0, 5], [7.0, 7.0])


def test_short_file_gives_no_windows() -> None:
    w = make_windows(np.array(_rows(1, range(0, 100, 10))), 8, 12, source="short")
    assert len(w) == 0 and w.sources == ("short",)


@pytest.mark.parametrize("text, match", [
    ("0\t1\t1.0\n", r"bad.txt:1: expected 4 columns"),
    ("0\t1\t1.0\t2.0\n10\t1\tnan\t2.0\n", r"bad.txt:2: NaN/inf"),
    ("0\t1\tx\t2.0\n", r"bad.txt:1: non-numeric"),
    ("\n", r"no trajectory rows"),
])
def test_bad_files_name_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(DatasetError, match=match):
        read_eth_ucy_file(p)


def test_missing_file_and_unknown_scene(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        read_eth_ucy_file(tmp_path / "nope.txt")
    with pytest.raises(DatasetError, match="unknown ETH/UCY scene 'zara3'"):
        eth_ucy_files(tmp_path, "zara3", "train")
    with pytest.raises(DatasetError, match="no .txt"):
        eth_ucy_files(tmp_path, "eth", "train")


def test_all_scenes_deduplicates_by_file_name(tmp_path: Path) -> None:
    walk = _rows(1, range(0, 200, 10))
    for scene in ("eth", "hotel"):
        _write(tmp_path / scene / "train" / "shared_train.txt", walk)
        _write(tmp_path / scene / "train" / f"{scene}_only_train.txt", walk)
    names = [f.name for f in eth_ucy_files(tmp_path, "all", "train")]
    assert names == ["eth_only_train.txt", "hotel_only_train.txt", "shared_train.txt"]
    w = load_eth_ucy(tmp_path, "all", "train")
    assert len(w) == 3 and len(w.sources) == 3 and w.num_windows == 3


def test_concat_renumbers_windows_and_sources() -> None:
    a = make_windows(np.array(_rows(1, range(0, 200, 10)) + _rows(2, range(0, 200, 10))), source="a")
    b = make_windows(np.array(_rows(5, range(0, 210, 10))), source="b")
    c = TrajectoryWindows.concat([a, b])
    assert len(c) == 2 + 2 and c.num_windows == 1 + 2 and c.sources == ("a", "b")
    assert c.source.tolist() == [0, 0, 1, 1]
    with pytest.raises(DatasetError, match="different lengths"):
        TrajectoryWindows.concat([a, make_windows(np.array(_rows(1, range(0, 200, 10))), 4, 4)])


def test_augment_is_a_similarity_about_the_last_point() -> None:
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(64, 8, 2).cumsum(1)
    fut = obs[:, -1:] + torch.randn(64, 12, 2).cumsum(1)
    o2, f2 = augment_batch(obs, fut, AugmentConfig(rotate=True, flip=True), g)
    torch.testing.assert_close(o2[:, -1], obs[:, -1])
    dist = lambda o, f: (torch.cat([o, f], 1) - o[:, -1:]).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(dist(o2, f2), dist(obs, fut), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(o2, obs)
    o3, f3 = augment_batch(obs, fut, AugmentConfig(rotate=False, flip=False, scale_range=(2.0, 2.0)), g)
    torch.testing.assert_close(dist(o3, f3), 2 * dist(obs, fut), atol=1e-4, rtol=1e-4)


def test_noise_touches_only_observations_and_reverse_swaps_time() -> None:
    g = torch.Generator().manual_seed(1)
    obs, fut = torch.zeros(32, 8, 2), torch.ones(32, 12, 2)
    cfg = AugmentConfig(rotate=False, flip=False, obs_noise=0.1, obs_noise_min=0.05, obs_noise_prob=1.0)
    o2, f2 = augment_batch(obs, fut, cfg, g)
    assert torch.equal(f2, fut) and (o2.std(dim=(1, 2)) > 0.01).all()
    line = torch.arange(20.0)[None, :, None].expand(1, 20, 2)
    o3, f3 = augment_batch(line[:, :8], line[:, 8:], AugmentConfig(rotate=False, flip=False, reverse=1.0), g)
    assert o3[0, :, 0].tolist() == list(range(19, 11, -1)) and f3[0, -1, 0] == 0


def test_dataset_items_and_collate() -> None:
    w = make_windows(np.array(_rows(1, range(0, 300, 10))))
    train = TrajectoryDataset(w, augment=AugmentConfig(), generator=torch.Generator().manual_seed(0))
    val = TrajectoryDataset(w)
    batch = collate_trajectories([val[i] for i in range(len(val))])
    assert torch.equal(batch.obs, torch.from_numpy(w.obs)) and len(batch) == len(w)
    aug = train.collate([train[i] for i in range(len(train))])
    assert aug.obs.shape == batch.obs.shape and not torch.allclose(aug.obs, batch.obs)
    with pytest.raises(DatasetError, match="empty"):
        collate_trajectories([])


def test_manifest_tracks_pixels_and_metres(tmp_path: Path) -> None:
    from vidseq.sequences.manifest import (
        Clip,
        Dataset,
        Tracks,
        save_dataset,
        write_tracks_csv,
    )

    frames = np.arange(0, 480)  # 30 fps video: one point per 0.4 s = every 12th frame -> 40 steps
    boxes = np.column_stack([100 + 2.0 * frames, 50 + 0 * frames, 20 + 0 * frames, 85 + 0 * frames])
    px = Tracks(frame=frames.astype(np.int64), track_id=np.ones(frames.size, np.int64), xywh=boxes.astype(float),
                cls=np.full(frames.size, "person"), conf=np.ones(frames.size, np.float32))
    write_tracks_csv(tmp_path / "tracks" / "px.csv", px)
    m_rows = np.arange(0, 400, 10)
    metric = Tracks(frame=m_rows.astype(np.int64), track_id=np.full(m_rows.size, 3, np.int64),
                    xywh=np.column_stack([0.4 * np.arange(m_rows.size), np.zeros((m_rows.size, 3))]),
                    cls=np.full(m_rows.size, "pedestrian"), conf=np.full(m_rows.size, np.nan, np.float32))
    write_tracks_csv(tmp_path / "tracks" / "m.csv", metric)
    ds = Dataset(tmp_path, "t", [
        Clip(id="px", split="train", fps=30.0, tracks=tmp_path / "tracks" / "px.csv"),
        Clip(id="m", split="train", fps=25.0, tracks=tmp_path / "tracks" / "m.csv", track_units="m"),
    ])
    save_dataset(ds)
    w = load_manifest_tracks(tmp_path, ["train"])
    px_w = w.subset(w.source == 0)
    assert len(px_w) == 40 - 20 + 1
    # foot point x = 100 + 2 * frame + 10 px; 85 px boxes = 1.7 m -> 50 px per metre
    np.testing.assert_allclose(px_w.scale, 50.0)
    np.testing.assert_allclose(px_w.obs[0, 1] - px_w.obs[0, 0], [24 / 50.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(px_w.obs[0, 0], [110 / 50.0, 135 / 50.0], atol=1e-5)
    m_w = w.subset(w.source == 1)
    assert len(m_w) == 40 - 20 + 1 and np.all(m_w.scale == 1.0)
    np.testing.assert_allclose(m_w.obs[0, :, 0], 0.4 * np.arange(8), atol=1e-6)
    with pytest.raises(DatasetError, match="no 20-step track windows"):
        load_manifest_tracks(tmp_path, ["test"])


@pytest.mark.data
def test_eth_ucy_counts_and_constant_velocity_anchors(shared_data: Path) -> None:
    """The Social-GAN windows reproduce the issue's constant-velocity anchors exactly (3 decimals)."""
    root = shared_data / "eth_ucy"
    if not root.is_dir():
        pytest.skip("eth_ucy absent")
    anchors = {"eth": (1.075, 2.282, 364), "hotel": (0.319, 0.614, 1197), "univ": (0.524, 1.165, 24334),
               "zara1": (0.427, 0.952, 2356), "zara2": (0.324, 0.724, 5910)}
    for scene in ETH_UCY_SCENES:
        w = load_eth_ucy(root, scene, "test")
        ade_ref, fde_ref, n = anchors[scene]
        assert len(w) == n, scene
        v = w.obs[:, -1] - w.obs[:, -2]
        pred = w.obs[:, -1, None] + v[:, None] * np.arange(1, 13)[None, :, None]
        d = np.linalg.norm(pred - w.fut, axis=-1)
        assert (round(float(d.mean()), 3), round(float(d[:, -1].mean()), 3)) == (ade_ref, fde_ref), scene
    assert len(load_eth_ucy(root, "zara1", "train")) == 28577
