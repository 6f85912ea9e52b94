"""Trajectory forecaster: model, baselines, metrics, streaming, task (vidseq/models/trajectory.py, vidseq/tasks/trajectory/)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseq.errors import ConfigError, InputShapeError
from vidseq.models.trajectory import heading_frames
from vidseq.registry import build_model as registry_build
from vidseq.sequences.trajectories import AugmentConfig, TrajectoryBatch, augment_batch
from vidseq.tasks.trajectory import (
    TrajectoryConfig,
    TrajectoryForecaster,
    TrajectoryModel,
    constant_velocity,
    displacement_errors,
    pixels_per_metre,
)

SMALL = dict(hidden_dim=32, num_modes=4)


def lines(n: int, gen: torch.Generator, t: int = 20) -> torch.Tensor:
    """(n, t, 2) straight walks with random start, heading and speed 0.1..0.6 m/step."""
    start = torch.randn(n, 1, 2, generator=gen) * 5
    ang = torch.rand(n, 1, generator=gen) * 2 * math.pi
    speed = 0.1 + 0.5 * torch.rand(n, 1, generator=gen)
    v = torch.stack([torch.cos(ang), torch.sin(ang)], -1) * speed[..., None]  # (n, 1, 2)
    return start + torch.arange(t, dtype=torch.float32)[None, :, None] * v


def arcs(n: int, gen: torch.Generator, t: int = 20) -> torch.Tensor:
    """(n, t, 2) constant-speed, constant-turn-rate walks (|turn| 0.08..0.2 rad/step, either side)."""
    speed = 0.2 + 0.3 * torch.rand(n, 1, generator=gen)
    omega = (0.08 + 0.12 * torch.rand(n, 1, generator=gen)) * torch.where(torch.rand(n, 1, generator=gen) < 0.5, -1, 1)
    head0 = torch.rand(n, 1, generator=gen) * 2 * math.pi
    head = head0 + omega * torch.arange(t, dtype=torch.float32)[None]  # (n, t)
    steps = torch.stack([torch.cos(head), torch.sin(head)], -1) * speed[..., None]
    return torch.randn(n, 1, 2, generator=gen) + steps.cumsum(1)


def train_briefly(model: TrajectoryModel, make, steps: int, seed: int = 0, lr: float = 1e-2) -> TrajectoryModel:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(steps):
        traj = make(128, gen)
        _, loss = model(TrajectoryBatch(traj[:, :8], traj[:, 8:]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@pytest.fixture
def random_model() -> TrajectoryModel:
    """An untrained model whose output layer is perturbed, so forecasts are not constant velocity."""
    torch.manual_seed(0)
    model = TrajectoryModel(TrajectoryConfig(**SMALL))
    with torch.no_grad():
        for p in model.out.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def turning_model() -> TrajectoryModel:
    model = TrajectoryModel(TrajectoryConfig(**SMALL))
    mix = lambda n, g: torch.cat([arcs(n - n // 4, g), lines(n // 4, g)])  # noqa: E731
    return train_briefly(model, mix, steps=60)


# ------------------------------------------------------------------------------------------ baselines, metrics


def test_constant_velocity_is_exact_on_straight_lines() -> None:
    traj = lines(16, torch.Generator().manual_seed(0))
    pred = constant_velocity(traj[:, :8], 12)
    torch.testing.assert_close(pred, traj[:, 8:], atol=1e-4, rtol=0)
    ade, fde = displacement_errors(pred, traj[:, 8:])
    assert ade.max() < 1e-4 and fde.max() < 1e-4


def test_displacement_errors_take_min_over_k_per_metric() -> None:
    fut = torch.zeros(1, 3, 2)
    a = torch.tensor([[[1.0, 0], [1.0, 0], [1.0, 0]]])  # ade 1, fde 1
    b = torch.tensor([[[0.0, 0], [0.0, 0], [3.0, 0]]])  # ade 1, fde 3
    c = torch.tensor([[[0.0, 0], [2.4, 0], [0.3, 0]]])  # ade 0.9, fde 0.3
    ade, fde = displacement_errors(torch.stack([a, b, c], 1), fut)
    assert ade.item() == pytest.approx(0.9) and fde.item() == pytest.approx(0.3)
    ade1, fde1 = displacement_errors(a, fut)
    assert (ade1.item(), fde1.item()) == (1.0, 1.0)
    with pytest.raises(InputShapeError, match="does not match"):
        displacement_errors(torch.zeros(2, 12, 2), torch.zeros(2, 11, 2))


# ------------------------------------------------------------------------------------------ model


def test_untrained_model_is_constant_velocity_and_shapes() -> None:
    model = TrajectoryModel(TrajectoryConfig(**SMALL)).eval()
    traj = lines(8, torch.Generator().manual_seed(1))
    out, loss = model(TrajectoryBatch(traj[:, :8], traj[:, 8:]))
    assert out.pred.shape == (8, 12, 2) and out.modes.shape == (8, 4, 12, 2) and out.mode_logits.shape == (8, 4)
    torch.testing.assert_close(out.pred, traj[:, 8:], atol=1e-4, rtol=0)
    assert loss.dim() == 0 and torch.isfinite(loss)
    out2, loss2 = model(TrajectoryBatch(traj[:, :8]))
    assert loss2 is None and torch.equal(out2.pred, out.pred)
    assert model.predict(traj[:, :8], k=3).shape == (8, 3, 12, 2)
    det = TrajectoryModel(TrajectoryConfig(hidden_dim=16, num_modes=0)).eval()
    out3, _ = det(TrajectoryBatch(traj[:, :8], traj[:, 8:]))
    assert out3.modes is None and det.predict(traj[:, :8]).shape == (8, 1, 12, 2)


@pytest.mark.parametrize("obs, match", [
    (torch.zeros(4, 8, 3), "must be"),
    (torch.zeros(4, 1, 2), "must be"),
    (torch.zeros(8, 2), "must be"),
    (torch.full((2, 8, 2), float("nan")), "NaN"),
])
def test_bad_histories_raise(obs: torch.Tensor, match: str) -> None:
    model = TrajectoryModel(TrajectoryConfig(**SMALL))
    with pytest.raises(InputShapeError, match=match):
        model(TrajectoryBatch(obs))
    with pytest.raises(InputShapeError):
        TrajectoryForecaster(model).predict(obs.numpy())


def test_bad_future_and_k_raise() -> None:
    model = TrajectoryModel(TrajectoryConfig(**SMALL))
    with pytest.raises(InputShapeError, match="fut must be"):
        model(TrajectoryBatch(torch.zeros(2, 8, 2), torch.zeros(2, 10, 2)))
    with pytest.raises(InputShapeError, match="k must be 1..4"):
        model.predict(torch.zeros(2, 8, 2), k=5)
    with pytest.raises(ValueError):
        TrajectoryConfig(obs_len=1)


def test_forecasts_rotate_and_translate_with_the_input(random_model: TrajectoryModel) -> None:
    model = random_model
    traj = arcs(6, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    obs2, fut2 = augment_batch(traj[:, :8], traj[:, 8:], AugmentConfig(rotate=True, flip=False), g)
    shift = torch.tensor([3.0, -2.0])
    p1 = model.predict(traj[:, :8], k=4)
    p2 = model.predict(obs2 + shift, k=4) - shift
    # undo each sample's rotation about its last observed point
    o = traj[:, 7]
    r1 = (p1 - o[:, None, None]).norm(dim=-1)
    r2 = (p2 - obs2[:, 7][:, None, None]).norm(dim=-1)
    torch.testing.assert_close(r1, r2, atol=1e-4, rtol=1e-4)


def test_heading_frame_falls_back_for_still_agents() -> None:
    obs = torch.zeros(2, 8, 2)
    obs[1, :7, 0] = torch.linspace(-1, -0.1, 7)  # moved, then stopped on the last step
    origin, rot = heading_frames(obs)
    torch.testing.assert_close(rot[0], torch.eye(2))
    torch.testing.assert_close(rot[1, 0], torch.tensor([1.0, 0.0]))
    assert torch.equal(origin, obs[:, -1])


@pytest.mark.slow
def test_brief_training_keeps_lines_and_beats_constant_velocity_on_turns(turning_model: TrajectoryModel) -> None:
    gen = torch.Generator().manual_seed(123)
    straight = lines(256, gen)
    pred = turning_model.predict(straight[:, :8])[:, 0]
    ade, fde = displacement_errors(pred, straight[:, 8:])
    travel = (straight[:, -1] - straight[:, 7]).norm(dim=-1)
    assert ade.mean() < 0.03 * travel.mean(), (ade.mean(), travel.mean())  # almost exact
    turns = arcs(256, gen)
    model_ade, model_fde = displacement_errors(turning_model.predict(turns[:, :8])[:, 0], turns[:, 8:])
    cv_ade, cv_fde = displacement_errors(constant_velocity(turns[:, :8], 12), turns[:, 8:])
    assert model_ade.mean() < 0.4 * cv_ade.mean() and model_fde.mean() < 0.4 * cv_fde.mean()
    best_ade, _ = displacement_errors(turning_model.predict(turns[:, :8], k=4), turns[:, 8:])
    assert best_ade.mean() < 0.5 * cv_ade.mean()  # the hypotheses learned the turns too


def test_registry_rebuilds_the_model() -> None:
    model = registry_build("trajectory_lstm", {"hidden_dim": 16, "num_modes": 2})
    assert isinstance(model, TrajectoryModel) and model.cfg.hidden_dim == 16


# ------------------------------------------------------------------------------------------ forecaster, streaming


def test_pixel_scale_gives_the_same_forecast_in_pixels(random_model: TrajectoryModel) -> None:
    fc = TrajectoryForecaster(random_model)
    hist = arcs(5, torch.Generator().manual_seed(7))[:, :8].numpy()
    metres = fc.predict(hist, k=2)
    ppm = pixels_per_metre(np.full(5, 170.0))  # 100 px per metre
    np.testing.assert_allclose(ppm, 100.0)
    pixels = fc.predict(hist * 100.0 + 500.0, k=2, scale=ppm)
    np.testing.assert_allclose(pixels, metres * 100.0 + 500.0, rtol=1e-4, atol=2e-3)
    assert fc.predict(np.zeros((0, 8, 2))).shape == (0, 1, 12, 2)
    with pytest.raises(InputShapeError, match="scale"):
        fc.predict(hist, scale=np.ones(4))
    with pytest.raises(InputShapeError, match="box heights"):
        pixels_per_metre(0.0)


def test_streaming_equals_offline(random_model: TrajectoryModel) -> None:
    fc = TrajectoryForecaster(random_model)
    walks = arcs(3, torch.Generator().manual_seed(9), t=14).numpy().astype(np.float64)
    stream = fc.stream(k=2)
    for step in range(14):
        for tid in range(3):
            if tid == 2 and step < 10:
                continue  # track 2 appears late: short history
            stream.update(tid, walks[tid, step], step=step)
        got = stream.forecast()
        for tid, fcast in got.items():
            first = 0 if tid < 2 else 10
            hist = walks[tid, max(first, step - 7):step + 1]
            want = fc.predict(hist[None], k=2)[0]
            np.testing.assert_allclose(fcast, want, rtol=1e-5, atol=1e-5)
        assert sorted(got) == ([0, 1] if step < 11 else [0, 1, 2]) if step >= 1 else got == {}
    assert stream.history(0).shape == (8, 2)
    stream.drop(0)
    assert 0 not in stream.forecast()


def test_stream_bridges_short_gaps_and_restarts_after_long_ones(random_model: TrajectoryModel) -> None:
    stream = TrajectoryForecaster(random_model).stream(max_gap=2)
    stream.update(1, (0.0, 0.0), step=0)
    stream.update(1, (0.3, 0.0), step=1)
    stream.update(1, (1.2, 0.0), step=4)  # 2 missed steps: interpolated
    np.testing.assert_allclose(stream.history(1)[:, 0], [0.0, 0.3, 0.6, 0.9, 1.2])
    stream.update(1, (9.0, 0.0), step=10)  # 5 missed: restart
    np.testing.assert_allclose(stream.history(1), [[9.0, 0.0]])
    stream.update(1, (9.5, 0.0), step=10)  # same step again: replaces the point
    np.testing.assert_allclose(stream.history(1), [[9.5, 0.0]])
    with pytest.raises(InputShapeError, match="track 1"):
        stream.update(1, (float("nan"), 0.0))


# ------------------------------------------------------------------------------------------ config, task


def test_trajectory_yaml_loads() -> None:
    from vidseq.config import default_config_path
    from vidseq.tasks.trajectory.task import TrajectoryTaskConfig, load_task_config

    path = default_config_path("trajectory")
    assert path is not None
    cfg = load_task_config(path)
    assert isinstance(cfg, TrajectoryTaskConfig) and cfg.model.pred_len == 12 and cfg.train.monitor == "val_ade"
    with pytest.raises(ConfigError, match="did you mean 'model.hidden_dim'"):
        load_task_config(path, ["model.hiden_dim=3"])
    with pytest.raises(ConfigError, match="data.scene"):
        load_task_config(path, ["data.scene=zara3"])


def _fake_eth(root: Path) -> Path:
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", 24), ("val", 8), ("test", 8)):
        walks = torch.cat([lines(n // 2, gen, t=30), arcs(n // 2, gen, t=30)]).numpy()
        rows = [f"{10 * t}\t{i}\t{walks[i, t, 0]:.4f}\t{walks[i, t, 1]:.4f}\n" for t in range(30) for i in range(n)]
        (root / "zara1" / split).mkdir(parents=True, exist_ok=True)
        (root / "zara1" / split / f"fake_{split}.txt").write_text("".join(rows))
    return root


@pytest.mark.slow
def test_train_and_evaluate_task_end_to_end(tmp_path: Path) -> None:
    from vidseq.tasks.trajectory.task import data_kind, evaluate, train

    data = _fake_eth(tmp_path / "eth_ucy")
    assert data_kind(data) == "eth_ucy" and data_kind(data / "zara1") == "eth_ucy_scene"
    out = tmp_path / "run"
    metrics = train(data, out, overrides=["data.scene=zara1", "train.epochs=2", "model.hidden_dim=16",
                                          "model.num_modes=3", "train.batch_size=64"], progress=False)
    assert (out / "best.pt").is_file() and (out / "eval.json").is_file()
    assert metrics["test_n"] == 8 * 11 and metrics["test_k"] == 3
    again = evaluate(out / "best.pt", data, overrides=["data.scene=zara1"])
    assert again["ade"] == pytest.approx(metrics["test_ade"]) and again["cv_ade"] == pytest.approx(metrics["test_cv_ade"])
    scene = evaluate(out / "best.pt", data / "zara1", overrides=["data.eval_split=val"])
    assert scene["n"] == 4 * 11 * 2 and scene["ade_k"] <= scene["ade"] + 1e-6
    with pytest.raises(ConfigError, match="only data"):
        evaluate(out / "best.pt", data, overrides=["model.hidden_dim=8"])
    fc = TrajectoryForecaster.from_checkpoint(out / "best.pt")
    assert fc.predict(np.zeros((1, 8, 2)) + np.arange(8)[None, :, None] * 0.3, k=3).shape == (1, 3, 12, 2)
