from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from vidseq.config import from_dict, load_config, save_config, to_dict
from vidseq.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    hidden: int = 8
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    lr: float = 0.1
    size: tuple[int, int] | None = None
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_defaults_file_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("lr: 0.5\ninner:\n  hidden: 16\n")
    cfg = load_config(Outer, p, ["inner.mode=b", "flag=true", "size=[3, 4]"])
    assert cfg == Outer(lr=0.5, flag=True, size=(3, 4), inner=Inner(hidden=16, mode="b"))
    assert load_config(Outer) == Outer()


@pytest.mark.parametrize(
    ("text", "overrides", "match"),
    [
        ("lrr: 1\n", [], "unknown config key 'lrr' \\(did you mean 'lr'\\?\\)"),
        ("inner:\n  hiden: 3\n", [], "unknown config key 'inner.hiden' \\(did you mean 'inner.hidden'\\?\\)"),
        ("lr: fast\n", [], "lr: expected a number"),
        ("", ["inner.mode=c"], "inner.mode: 'c' is not one of"),
        ("", ["flag=maybe"], "expected true/false"),
        ("lr: [1\n", [], "invalid YAML"),
        ("- 1\n", [], "top level must be a mapping"),
        ("", ["noequals"], "key=value"),
        ("", ["lr=.nan"], "NaN"),
    ],
)
def test_errors(tmp_path: Path, text: str, overrides: list[str], match: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(Outer, p, overrides)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, "/no/such.yaml")


def test_roundtrip(tmp_path: Path) -> None:
    cfg = Outer(size=(1, 2), inner=Inner(hidden=3))
    save_config(cfg, tmp_path / "r.yaml")
    assert load_config(Outer, tmp_path / "r.yaml") == cfg
    assert from_dict(Outer, to_dict(cfg)) == cfg


@dataclass(frozen=True)
class WithCustomDefault:
    inner: Inner = field(default_factory=lambda: Inner(hidden=99, mode="b"))


def test_partial_nested_section_keeps_field_default() -> None:
    cfg = load_config(WithCustomDefault, None, ["inner.hidden=5"])
    assert cfg.inner == Inner(hidden=5, mode="b")
