"""The layer rule of the package is a test: import-linter contracts in pyproject.toml, plus private names.

Layers (top to bottom): cli -> cluster | web -> jobs | monitor -> pipeline -> viz -> tasks -> train -> models
-> sequences | tracking -> features -> video -> config -> io -> registry -> errors. A module may import only layers below its own;
imports inside functions count (import-linter/grimp reads every import statement). Tasks are independent of
each other, and models never import video, io, the extractor, train or tasks.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = str(LINT) if LINT.exists() else shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency (pip install vidseq[test])"
    return subprocess.run([exe, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(cwd), "PATH": str(Path(sys.executable).parent)})


def test_layer_contracts_hold() -> None:
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "BROKEN" not in res.stdout and res.stdout.count("KEPT") == 3


@pytest.mark.parametrize("module, line", [
    ("video/frames.py", "from vidseq.pipeline import ProcessConfig\n"),  # module level, two layers up
    ("models/encoder.py", "def _late():\n    from vidseq.train.engine import fit\n"),  # inside a function
    ("tasks/anomaly/metrics.py", "from vidseq.tasks.caption import task\n"),  # one task into another
])
def test_an_upward_import_breaks_the_contract(tmp_path: Path, module: str, line: str) -> None:
    shutil.copytree(ROOT / "vidseq", tmp_path / "vidseq", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "vidseq" / module, "a") as fh:
        fh.write("\n\n" + line)
    res = _lint(tmp_path)
    assert res.returncode != 0 and "BROKEN" in res.stdout, res.stdout + res.stderr


def _private_uses(path: Path) -> list[str]:
    """``from vidseq.x import _name`` and ``module._name`` on an imported vidseq module, outside that module."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vidseq"):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{a.name}")
                else:
                    modules.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("vidseq"):
                    modules.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_no_module_or_test_reaches_for_private_names() -> None:
    files = [p for d in ("vidseq", "tests", "scripts") for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 50
    bad = [hit for p in files for hit in _private_uses(p)]
    assert not bad, "\n".join(bad)


def test_private_name_check_sees_a_violation(tmp_path: Path) -> None:
    f = ROOT / "tests" / "_probe_private.py"
    try:
        f.write_text("from vidseq.video import sinks\nfrom vidseq.pipeline import _x\nsinks._hidden\n")
        hits = _private_uses(f)
    finally:
        f.unlink()
    assert len(hits) == 2
