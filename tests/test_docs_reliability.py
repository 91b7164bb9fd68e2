"""docs/reliability.md: every row names a test that exists (file and test function)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
NODE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_matrix_row_names_an_existing_test() -> None:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines if line.startswith("| ") and "`tests/" in line]
    assert len(rows) >= 30
    missing = []
    for row in rows:
        nodes = NODE.findall(row)
        assert nodes, f"row without a test node id: {row}"
        for file, name in nodes:
            if not (ROOT / file).is_file() or name not in _test_functions(ROOT / file):
                missing.append(f"{file}::{name}")
    assert missing == []
