"""The import direction of DESIGN.md §1: no cycles, and the layers stay separable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"medclip", "encoders", "datamodules", "apps"}
ALLOWED = {
    "datamodules": {"datamodules"},
    "encoders": {"encoders"},
    "medclip": {"medclip", "encoders", "datamodules"},
    "apps": {"apps", "medclip"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of our packages that ``path`` imports (absolute imports only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(n.split(".")[0] for n in names if n.split(".")[0] in OURS)
    return found


def violations(package: str, root: Path = ROOT) -> list[str]:
    """``file: imports X`` for every import that breaks the allowed direction."""
    out = []
    for path in sorted((root / package).rglob("*.py")):
        for name in sorted(imported_packages(path) - ALLOWED[package]):
            out.append(f"{path.relative_to(root)}: imports {name}")
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_run_one_way(package: str) -> None:
    assert (ROOT / package / "__init__.py").exists()
    assert violations(package) == []


def test_checker_catches_a_wrong_way_import(tmp_path: Path) -> None:
    (tmp_path / "encoders").mkdir()
    (tmp_path / "encoders" / "bad.py").write_text("from medclip.model import MedclipModel\n")
    (tmp_path / "encoders" / "ok.py").write_text("import torch\nfrom encoders import registry\n")
    assert violations("encoders", tmp_path) == ["encoders/bad.py: imports medclip"]


def test_requested_layout_exists() -> None:
    for name in ("medclip", "encoders", "datamodules", "apps", "tests", "docker", "benchmarks"):
        assert (ROOT / name).is_dir(), name
    for name in ("pyproject.toml", "README.md", "BENCHMARKS.md", ".ci/run", "constraints.txt"):
        assert (ROOT / name).is_file(), name
