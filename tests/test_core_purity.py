"""Cores never import I/O, time or randomness (STYLE.md convention 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "node"
CORES = ["wire", "crypto", "channel", "mesh", "group", "sync", "files"]
FORBIDDEN = {"trio", "socket", "sqlite3", "zeroconf", "time", "random", "asyncio", "threading"}
CORE_FILES = sorted(p for core in CORES for p in (ROOT / core).rglob("*.py"))


def test_there_are_cores_to_check() -> None:
    assert len(CORE_FILES) >= 8


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_nothing_forbidden(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path} imports {sorted(imported & FORBIDDEN)}"
