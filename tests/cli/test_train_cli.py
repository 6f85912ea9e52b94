"""``vidseq train`` / ``vidseq eval`` end to end on the toy task, task dispatch errors, SIGKILL + --resume."""

from __future__ import annotations

import csv
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vidseq import registry
from vidseq.cli import main
from vidseq.errors import TaskError
from vidseq.registry import TASKS, available_tasks, get_task_module

REPO = Path(__file__).resolve().parents[2]
TOY_DIR = REPO / "tests" / "train"


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch):
    """The toy task reachable as ``vidseq train toy`` (env plugin) with its model registered."""
    monkeypatch.syspath_prepend(str(TOY_DIR))
    monkeypatch.setenv("VIDSEQ_EXTRA_TASKS", "toy=vidseq_toy_task")
    mod = importlib.import_module("vidseq_toy_task")
    monkeypatch.setitem(registry.MODELS, mod.MODEL_NAME, mod.BUILDER)
    return mod


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k != "time_s"} for r in csv.DictReader(fh)]


def test_train_then_eval(toy, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = toy.write_config(tmp_path / "toy.yaml")
    out = tmp_path / "runs" / "a"
    argv = ["train", "toy", "--data", str(tmp_path), "--config", str(cfg), "--out", str(out),
            "--set", "train.epochs=2", "train.seed=3", "--json", str(tmp_path / "train.json")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    final = json.loads((tmp_path / "train.json").read_text())
    assert final["epoch"] == 2 and f"val_loss: {final['val_loss']:.6g}" in printed
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["config"]["train"]["seed"] == 3 and ck["config"]["train"]["epochs"] == 2

    assert main(["eval", "toy", "--model", str(out / "best.pt"), "--data", str(tmp_path),
                 "--json", str(tmp_path / "eval.json")]) == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())
    best = next(r for r in ck["history"] if r["epoch"] == ck["best_epoch"])
    assert metrics["val_loss"] == pytest.approx(best["val_loss"], rel=1e-6)
    assert "val_mae: " in capsys.readouterr().out

    # a second run into the same directory must say --resume; --resume extends it
    assert main(argv) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert main([*argv, "--resume", "--set", "train.epochs=3"]) == 0
    assert [r["epoch"] for r in read_rows(out / "metrics.csv")] == ["1", "2", "3"]


@pytest.mark.parametrize("argv, message", [
    (["train", "anomly", "--data", "d", "--out", "o"], "unknown task 'anomly' (did you mean 'anomaly'?)"),
    (["eval", "trajectori", "--model", "m.pt", "--data", "d"], "did you mean 'trajectory'?"),
    (["train", "ghost", "--data", "d", "--out", "o"], "task 'ghost' is not available: module vidseq_ghost_xyz"),
    (["eval", "toy", "--model", "missing.pt", "--data", "d"], "checkpoint not found: missing.pt"),
    (["train", "toy", "--data", "d", "--out", "o", "--set", "train.lr_max=1"], "unknown config key 'train.lr_max'"),
])
def test_user_errors_are_one_line(toy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VIDSEQ_EXTRA_TASKS", "toy=vidseq_toy_task,ghost=vidseq_ghost_xyz")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_eval_of_corrupt_checkpoint(toy, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert main(["eval", "toy", "--model", str(bad), "--data", str(tmp_path)]) == 2
    assert "not a readable torch checkpoint" in capsys.readouterr().err


def test_task_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(TASKS) == {"anomaly", "trajectory", "caption"}
    monkeypatch.setenv("VIDSEQ_EXTRA_TASKS", "x = json ,")
    assert available_tasks()["x"] == "json" and get_task_module("x") is json
    for bad, message in [("oops", "must look like name=package.module"), ("anomaly=json", "built-in task")]:
        monkeypatch.setenv("VIDSEQ_EXTRA_TASKS", bad)
        with pytest.raises(TaskError, match=message):
            available_tasks()


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=os.pathsep.join([str(TOY_DIR), str(REPO), env.get("PYTHONPATH", "")]),
               VIDSEQ_EXTRA_TASKS="toy=vidseq_toy_task", OMP_NUM_THREADS="1")
    return env


def train_cmd(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    # 6 epochs of 5 slowed steps: long enough to be killed in the middle
    return [sys.executable, "-m", "vidseq", "-q", "train", "toy", "--data", str(tmp_path),
            "--config", str(tmp_path / "toy.yaml"), "--out", str(out),
            "--set", "train.epochs=6", "step_sleep_s=0.1", "--json", str(out.parent / f"{out.name}.json"), *extra]


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_equals_uninterrupted(toy, tmp_path: Path) -> None:
    toy.write_config(tmp_path / "toy.yaml")
    env = subprocess_env()
    ref = subprocess.Popen(train_cmd(tmp_path, tmp_path / "ref"), cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(train_cmd(tmp_path, tmp_path / "killed"), cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and victim.poll() is None:
        if metrics.exists() and len(read_rows(metrics)) >= 2:  # epoch 2 is on disk: kill inside epoch 3
            break
        time.sleep(0.02)
    assert victim.poll() is None, "the run ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    killed_at = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["epoch"]
    assert 2 <= killed_at < 6 and not (tmp_path / "killed.json").exists()

    resumed = subprocess.run(train_cmd(tmp_path, tmp_path / "killed", "--resume"), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ref.wait(timeout=300) == 0, ref.stderr.read()[-3000:] if ref.stderr else ""
    if ref.stderr:
        ref.stderr.close()

    final_ref = json.loads((tmp_path / "ref.json").read_text())
    final_resumed = json.loads((tmp_path / "killed.json").read_text())
    assert final_resumed == final_ref and final_ref["epoch"] == 6
    assert read_rows(tmp_path / "killed" / "metrics.csv") == read_rows(tmp_path / "ref" / "metrics.csv")
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)["model_state"]
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
