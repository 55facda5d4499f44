"""The import layers of odkit hold: `lint-imports` (import-linter) keeps every contract of pyproject.toml.

The contracts (``[tool.importlinter]``; docs/ARCHITECTURE.md, "Layers") say that each package imports
only from the layers below its own and that no package has an import cycle. Imports inside functions
count. The second test checks that the contracts do catch a wrong-way import, on a copy of the package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports_exe() -> str:
    here = Path(sys.executable).parent / "lint-imports"
    exe = str(here) if here.is_file() else shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]' or pip install import-linter)")
    return exe


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the odkit package and pyproject.toml under ``root`` (no cache written)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([_lint_imports_exe(), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def test_import_contracts_are_kept() -> None:
    r = _lint_imports(ROOT)
    assert r.returncode == 0, f"lint-imports failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}"
    assert "3 kept, 0 broken" in r.stdout, r.stdout


def test_an_upward_import_inside_a_function_breaks_the_contracts(tmp_path: Path) -> None:
    _lint_imports_exe()
    shutil.copytree(ROOT / "odkit", tmp_path / "odkit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "odkit" / "ops" / "boxes.py"
    target.write_text(target.read_text() + "\n\ndef _wrong_way() -> None:\n    from odkit.engine import trainer  # noqa: F401\n")
    r = _lint_imports(tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "odkit packages import only downwards BROKEN" in r.stdout, r.stdout
    assert "odkit.ops.boxes -> odkit.engine.trainer" in r.stdout, r.stdout
    assert "no import cycles between the modules of any package BROKEN" in r.stdout, r.stdout
