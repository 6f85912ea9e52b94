"""Checkpoints: weights_only round trip, conversion of NumPy/Path values, precise errors, load_model."""

from __future__ import annotations

import importlib
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vidseq import registry
from vidseq.errors import CheckpointError
from vidseq.train.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    load_model,
    save_checkpoint,
    to_weights_only,
)

HERE = Path(__file__).resolve().parent


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch):
    """The toy task module, with its model registered in MODELS for this test only."""
    monkeypatch.syspath_prepend(str(HERE))
    mod = importlib.import_module("vidseq_toy_task")
    monkeypatch.setitem(registry.MODELS, mod.MODEL_NAME, mod.BUILDER)
    return mod


@pytest.fixture
def saved(tmp_path: Path, toy) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    cfg = {"input_dim": 3, "hidden_dim": 8, "dropout": 0.0}
    model = toy.build_model(cfg)
    opt = torch.optim.AdamW(model.parameters())
    path = save_checkpoint(tmp_path / "m.pt", model=model, optimizer=opt, model_name=toy.MODEL_NAME,
                           model_config=cfg, config={"out": tmp_path}, epoch=3,
                           metadata={"mean": np.arange(4, dtype=np.float32), "fps": np.float64(25.0)},
                           extra={"thresholds": (0.1, 0.2)})
    return path, model


def test_round_trip_is_weights_only_loadable(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    raw = torch.load(path, weights_only=True)  # must not raise
    assert raw["format_version"] == FORMAT_VERSION
    assert raw["epoch"] == 3 and raw["optimizer_state"] is not None and raw["scheduler_state"] is None
    assert isinstance(raw["metadata"]["mean"], torch.Tensor)  # NumPy array -> tensor
    assert torch.equal(raw["metadata"]["mean"], torch.arange(4, dtype=torch.float32))
    assert raw["metadata"]["fps"] == 25.0 and type(raw["metadata"]["fps"]) is float
    assert raw["config"]["out"] == str(path.parent)  # Path -> str
    assert raw["extra"]["thresholds"] == (0.1, 0.2)
    for k, v in model.state_dict().items():
        assert torch.equal(raw["model_state"][k], v)
    assert load_checkpoint(path)["model_name"] == "toy_lstm"


def test_save_accepts_dict_then_path_and_updates(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    ckpt = load_checkpoint(saved[0])
    out = save_checkpoint({**ckpt, "extra": {"threshold": 0.7}}, tmp_path / "sub" / "again.pt")
    assert load_checkpoint(out)["extra"] == {"threshold": 0.7}
    assert not list((tmp_path / "sub").glob(".*part*"))  # no temp file left behind


@pytest.mark.parametrize("bad, where", [
    ({"fn": len}, "checkpoint.extra.fn"),
    ({"obj": object()}, "checkpoint.extra.obj"),
    ({"arr": np.array([{"a": 1}], dtype=object)}, "checkpoint.extra.arr"),
    ({"nested": [1, {"s": {1, 2}}]}, "checkpoint.extra.nested[1].s"),
])
def test_save_rejects_values_weights_only_cannot_load(tmp_path: Path, bad: dict, where: str) -> None:
    with pytest.raises(CheckpointError, match="^" + re.escape(where) + ": "):
        save_checkpoint(tmp_path / "x.pt", model_name="m", model_config={}, model_state={}, extra=bad)
    assert not (tmp_path / "x.pt").exists()


def test_save_requires_model_fields(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="missing required keys: model_state"):
        save_checkpoint(tmp_path / "x.pt", model_name="m", model_config={})


def test_to_weights_only_keeps_tensors_and_converts_dataclass() -> None:
    from vidseq.train.engine import TrainConfig

    out = to_weights_only({"t": torch.ones(2), "cfg": TrainConfig(epochs=3)})
    assert torch.equal(out["t"], torch.ones(2)) and out["cfg"]["epochs"] == 3


class _Evil:
    pass


def _write_bad(kind: str, tmp_path: Path, good: Path) -> Path:
    p = tmp_path / f"{kind}.pt"
    if kind == "missing":
        return p
    if kind == "directory":
        p.mkdir()
    elif kind == "truncated":
        data = good.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        p.write_text("not a checkpoint\n")
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "tensor":
        torch.save(torch.ones(3), p)
    elif kind == "not_vidseq":
        torch.save({"state_dict": {}}, p)
    elif kind == "future":
        ck = torch.load(good, weights_only=True)
        torch.save({**ck, "format_version": FORMAT_VERSION + 1}, p)
    elif kind == "pickle_object":
        torch.save({"format_version": 1, "obj": _Evil()}, p)
    elif kind == "plain_pickle":
        p.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    return p


@pytest.mark.parametrize("kind, message", [
    ("missing", "checkpoint not found"),
    ("directory", "is a directory"),
    ("truncated", "corrupt, truncated"),
    ("text", "corrupt, truncated"),
    ("empty", "corrupt, truncated"),
    ("tensor", "expected a checkpoint dict, found a Tensor"),
    ("not_vidseq", "not a vidseq checkpoint .missing keys: format_version, model_name"),
    ("future", "newer than this vidseq supports"),
    ("pickle_object", "refused by torch.load.weights_only=True."),
    ("plain_pickle", "corrupt, truncated or another file type"),
])
def test_bad_checkpoints_give_one_line_errors(tmp_path: Path, saved: tuple[Path, torch.nn.Module], kind: str,
                                              message: str) -> None:
    path = _write_bad(kind, tmp_path, saved[0])
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text


def test_load_model_rebuilds_from_checkpoint_alone(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    rebuilt, ckpt = load_model(path)
    assert not rebuilt.training and ckpt["epoch"] == 3
    x = {"x": torch.randn(2, 5, 3), "y": torch.zeros(2)}
    model.eval()
    assert torch.equal(rebuilt(x)[0], model(x)[0])


def test_load_model_errors(tmp_path: Path, saved: tuple[Path, torch.nn.Module]) -> None:
    ckpt = load_checkpoint(saved[0])
    wrong = save_checkpoint(tmp_path / "wrong.pt", {**ckpt, "model_config": {**ckpt["model_config"], "hidden_dim": 4}})
    with pytest.raises(CheckpointError, match="weights do not fit model 'toy_lstm'"):
        load_model(wrong)
    unknown = save_checkpoint(tmp_path / "unknown.pt", {**ckpt, "model_name": "nope"})
    with pytest.raises(CheckpointError, match="unknown model 'nope'"):
        load_model(unknown)
