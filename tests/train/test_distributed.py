"""DDP: single-process no-op helpers, and a real 2-process CPU (gloo) run through torchrun."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidseq.errors import TrainingError
from vidseq.train.distributed import (
    DistContext,
    all_reduce_sum,
    broadcast_object,
    gather_objects,
    is_main_process,
    setup_distributed,
    unwrap_model,
    wrap_model,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.fixture
def no_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


def test_single_process_is_a_no_op(no_torchrun_env: None) -> None:
    ctx = setup_distributed("cpu")
    assert ctx == DistContext() and not ctx.enabled and ctx.is_main and is_main_process()
    assert all_reduce_sum([1.5, 2.0], ctx) == [1.5, 2.0]
    assert broadcast_object({"a": 1}, ctx) == {"a": 1} and gather_objects(7, ctx) == [7]
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, ctx, torch.device("cpu")) is model and unwrap_model(model) is model


def test_bad_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(TrainingError, match="RANK/WORLD_SIZE/LOCAL_RANK"):
        setup_distributed("cpu")


def toy_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(PYTHONPATH=os.pathsep.join([str(HERE), str(REPO), env.get("PYTHONPATH", "")]),
               VIDSEQ_EXTRA_TASKS="toy=vidseq_toy_task", OMP_NUM_THREADS="1")
    return env


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    toy = importlib.import_module("vidseq_toy_task")
    cfg_path = toy.write_config(tmp_path / "toy.yaml")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "vidseq", "train", "toy", "--data", str(tmp_path), "--config", str(cfg_path), "--out", str(out),
           "--set", "train.epochs=2", "--json", str(tmp_path / "final.json")]
    proc = subprocess.run(cmd, cwd=REPO, env=toy_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # only rank 0 prints, logs epochs and writes files
    assert proc.stdout.count("train_loss:") == 1, proc.stdout
    assert proc.stderr.count("epoch 2/2") == 1 and "on cpu x2" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.yaml", "last.pt", "metrics.csv"]
    assert (tmp_path / "final.json").is_file()
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["world_size"] == 2 and ck["epoch"] == 2 and len(ck["rng"]) == 2
    assert not torch.equal(ck["rng"][0]["torch"], ck["rng"][1]["torch"])  # each rank has its own stream
    assert len(ck["history"]) == 2 and all(r["train_loss"] > 0 for r in ck["history"])
    assert (out / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs, written once
    # the recorded validation metrics are those of the saved weights on the full validation set
    best = torch.load(out / "best.pt", weights_only=True)
    cfg = toy.load_config(toy.ToyConfig, cfg_path, ["train.epochs=2"])
    task = toy.ToyTask(cfg)
    model = toy.build_model(best["model_config"])
    model.load_state_dict(best["model_state"])
    loader = toy.make_loader(task.val_dataset, task.collate, cfg.train, epoch=0, train=False)
    metrics = toy.engine_evaluate(model, loader, "cpu", task=task)
    row = next(r for r in best["history"] if r["epoch"] == best["best_epoch"])
    assert metrics["val_loss"] == pytest.approx(row["val_loss"], rel=1e-6)
    assert metrics["val_mae"] == pytest.approx(row["val_mae"], rel=1e-6)
