"""Every YAML file in configs/ loads into its registered dataclass."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidseq.config import CONFIG_CLASSES, config_class, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs() -> None:
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_file_loads(path: Path) -> None:
    assert path.stem in CONFIG_CLASSES, f"register configs/{path.name} in vidseq.config.CONFIG_CLASSES"
    cfg = load_config(config_class(path.stem), path)
    assert cfg is not None
