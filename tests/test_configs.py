"""Every YAML file in configs/ loads into its registered dataclass."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidseq import registry
from vidseq.config import config_class, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs() -> None:
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_file_loads(path: Path) -> None:
    assert path.stem in registry.CONFIGS, f"register configs/{path.name} in vidseq.registry.CONFIGS"
    cfg = load_config(config_class(path.stem), path)
    assert cfg is not None
