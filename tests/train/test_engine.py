"""The training engine: outputs of a run, exact resume, early stopping, schedules, seeding, errors."""

from __future__ import annotations

import csv
import importlib
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vidseq.config import load_config, to_dict
from vidseq.errors import CheckpointError, ConfigError, TrainingError
from vidseq.train.checkpoint import load_checkpoint
from vidseq.train.engine import (
    FitResult,
    TrainConfig,
    TrainTask,
    fit,
    get_rng_state,
    lr_factor,
    make_loader,
    set_rng_state,
)

HERE = Path(__file__).resolve().parent


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(HERE))
    return importlib.import_module("vidseq_toy_task")


@pytest.fixture
def make_task(toy, tmp_path: Path):
    """``make_task(*overrides) -> (task, cfg)`` from the toy YAML plus ``key=value`` overrides."""
    yaml_path = toy.write_config(tmp_path / "toy.yaml")

    def make(*overrides: str) -> tuple[Any, Any]:
        cfg = load_config(toy.ToyConfig, yaml_path, list(overrides))
        return toy.ToyTask(cfg), cfg

    return make


def run(make_task, out: Path, *overrides: str, resume: bool = False) -> FitResult:
    task, cfg = make_task(*overrides)
    return fit(task, cfg.train, out, resume=resume, config_dict=to_dict(cfg), progress=False)


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a)["model_state"], load_checkpoint(b)["model_state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k != "time_s"} for row in csv.DictReader(fh)]


def test_toy_task_satisfies_protocol(make_task) -> None:
    task, _ = make_task()
    assert isinstance(task, TrainTask)


def test_fit_writes_run_directory(make_task, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = run(make_task, out, "train.tensorboard=true")
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4]
    assert res.last_path == out / "last.pt" and res.best_path == out / "best.pt"
    assert (out / "config.yaml").read_text().startswith("n_train: 40")
    assert list((out / "tb").glob("events.out.tfevents.*"))
    rows = read_csv(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert set(rows[0]) == {"epoch", "lr", "train_loss", "val_loss", "val_mae", "val_const"}
    assert float(rows[-1]["val_loss"]) == res.history[-1]["val_loss"]  # full precision in the CSV
    # best.pt is the epoch with the lowest val_loss; the model learns something
    best = min(res.history, key=lambda r: r["val_loss"])
    assert res.best_epoch == best["epoch"] and res.best_metric == best["val_loss"]
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["epoch"] == 4 and ck["task"] == "toy" and ck["world_size"] == 1
    assert ck["extra"] == {"note": "toy", "threshold": 0.5}
    assert torch.equal(ck["metadata"]["probe"], torch.arange(3))
    assert ck["train_config"]["epochs"] == 4 and ck["config"]["train"]["lr"] == 0.01
    assert load_checkpoint(out / "best.pt")["epoch"] == res.best_epoch
    # warmup (1 epoch = 5 steps) then cosine: lr rises, then falls
    lrs = [r["lr"] for r in res.history]
    assert lrs[0] == pytest.approx(0.01 / 5) and lrs[1] == pytest.approx(0.01) and lrs[3] < lrs[2] < lrs[1]


def test_resume_after_crash_matches_uninterrupted_run(make_task, tmp_path: Path) -> None:
    full = run(make_task, tmp_path / "full")
    # the same run dies in epoch 3 (40 items/epoch: items 81..120); last.pt then holds epoch 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(make_task, tmp_path / "crash", "crash_after_items=95")
    assert load_checkpoint(tmp_path / "crash" / "last.pt")["epoch"] == 2
    # scramble every RNG so only the restored states can give back the same stream
    random.seed(999), np.random.seed(999), torch.manual_seed(999)
    resumed = run(make_task, tmp_path / "crash", resume=True)
    assert resumed.history == full.history
    assert (resumed.best_epoch, resumed.best_metric) == (full.best_epoch, full.best_metric)
    assert_same_weights(tmp_path / "full" / "last.pt", tmp_path / "crash" / "last.pt")
    assert_same_weights(tmp_path / "full" / "best.pt", tmp_path / "crash" / "best.pt")
    a = load_checkpoint(tmp_path / "full" / "last.pt")["optimizer_state"]["state"]
    b = load_checkpoint(tmp_path / "crash" / "last.pt")["optimizer_state"]["state"]
    assert all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) for i in a)
    assert read_csv(tmp_path / "full" / "metrics.csv") == read_csv(tmp_path / "crash" / "metrics.csv")


@pytest.mark.slow
def test_resume_extends_a_run_exactly_with_worker_processes(make_task, tmp_path: Path) -> None:
    # constant LR: a 2-epoch run resumed to 4 epochs must equal a 4-epoch run, even when items
    # (and their augmentation noise) come from DataLoader worker processes
    common = ("train.num_workers=1", "train.scheduler=none", "train.warmup_epochs=0", "train.epochs=3")
    full = run(make_task, tmp_path / "full", *common)
    run(make_task, tmp_path / "ext", *common[:-1], "train.epochs=1")
    extended = run(make_task, tmp_path / "ext", *common, resume=True)
    assert extended.history == full.history
    assert_same_weights(tmp_path / "full" / "last.pt", tmp_path / "ext" / "last.pt")


def test_resume_of_finished_run_trains_nothing(make_task, tmp_path: Path) -> None:
    first = run(make_task, tmp_path / "r", "train.epochs=2")
    again = run(make_task, tmp_path / "r", "train.epochs=2", resume=True)
    assert again.history == first.history and again.best_epoch == first.best_epoch


def test_resume_without_checkpoint_starts_fresh(make_task, tmp_path: Path, caplog) -> None:
    res = run(make_task, tmp_path / "new", "train.epochs=1", resume=True)
    assert len(res.history) == 1 and "starting a new run" in caplog.text


def test_existing_run_needs_resume(make_task, tmp_path: Path) -> None:
    run(make_task, tmp_path / "r", "train.epochs=1")
    with pytest.raises(CheckpointError, match="already holds a training run.*--resume"):
        run(make_task, tmp_path / "r", "train.epochs=1")


def test_resume_from_corrupt_last_checkpoint_fails_clearly(make_task, tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "last.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="last.pt: not a readable torch checkpoint"):
        run(make_task, tmp_path / "r", resume=True)


def test_early_stopping_on_a_flat_metric(make_task, tmp_path: Path) -> None:
    # val_const never changes: epoch 1 is best, then `patience` epochs without improvement
    res = run(make_task, tmp_path / "es", "train.epochs=10", "train.patience=2", "train.monitor=val_const",
              "train.mode=max")
    assert res.stopped_early and [r["epoch"] for r in res.history] == [1, 2, 3]
    assert res.best_epoch == 1 and res.best_metric == 1.0
    ck = load_checkpoint(tmp_path / "es" / "last.pt")
    assert ck["stopped_early"] and ck["bad_epochs"] == 2
    assert load_checkpoint(tmp_path / "es" / "best.pt")["epoch"] == 1
    # resuming a stopped run does not train on
    again = run(make_task, tmp_path / "es", "train.epochs=10", "train.patience=2", "train.monitor=val_const",
                "train.mode=max", resume=True)
    assert len(again.history) == 3


def test_monitor_typo_is_a_config_error(make_task, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'val_mea' is not a reported metric .did you mean 'val_mae'"):
        run(make_task, tmp_path / "m", "train.monitor=val_mea")


def test_without_validation_set_monitors_train_loss(make_task, tmp_path: Path) -> None:
    res = run(make_task, tmp_path / "nv", "no_val=true", "train.epochs=2")
    assert res.monitor == "train_loss" and "val_loss" not in res.history[0]
    assert res.best_metric == min(r["train_loss"] for r in res.history)


def test_non_finite_loss_stops_with_training_error(make_task, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"non-finite training loss \(nan\) at epoch 1, step 1"):
        run(make_task, tmp_path / "nan", "nan_targets=true")


@pytest.mark.parametrize("override, message", [
    ("train.epochs=0", "train.epochs must be >= 1"),
    ("train.lr=0", "train.lr must be > 0"),
    ("train.scheduler=linear", "is not one of"),
    ("train.patiense=3", "did you mean 'train.patience'"),
])
def test_bad_train_config(toy, tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(toy.ToyConfig, toy.write_config(tmp_path / "t.yaml"), [override])


def test_lr_schedules() -> None:
    spe = 10
    cos = TrainConfig(epochs=10, warmup_epochs=2, scheduler="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, cos, spe) == pytest.approx(0.05) and lr_factor(19, cos, spe) == pytest.approx(1.0)
    assert lr_factor(20, cos, spe) == pytest.approx(1.0) and lr_factor(60, cos, spe) == pytest.approx(0.55)
    assert lr_factor(100, cos, spe) == pytest.approx(0.1)
    step = TrainConfig(epochs=30, scheduler="step", step_size=10, gamma=0.5)
    assert [lr_factor(s * spe, step, spe) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    assert lr_factor(57, TrainConfig(scheduler="none"), spe) == 1.0


def test_rng_state_round_trip() -> None:
    state = get_rng_state()
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws


def test_train_order_depends_only_on_seed_and_epoch(make_task) -> None:
    task, cfg = make_task()

    def order(epoch: int, seed: int = 0) -> list[float]:
        c = TrainConfig(batch_size=40, seed=seed)
        torch.manual_seed(epoch)  # the global RNG must not matter
        batch = next(iter(make_loader(task.train_dataset, lambda items: [float(y) for _, y in items], c,
                                      epoch=epoch, train=True)))
        return batch

    assert order(1) == order(1) and order(1) != order(2) and order(1, seed=5) != order(1)
    assert sorted(order(1)) == sorted(order(2))
    assert not math.isnan(order(1)[0])
