"""docs/bad_inputs.md: at least 40 rows, and every row names a test that exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "docs" / "bad_inputs.md"
ROW = re.compile(r"^\|(?P<input>[^|]+(?:\\\|[^|]*)*)\|(?P<does>.+)\|\s*`(?P<test>tests/[^`]+)`\s*\|\s*$")


def _rows() -> list[re.Match]:
    return [m for line in TABLE.read_text().splitlines() if (m := ROW.match(line))]


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_table_has_at_least_40_rows_each_naming_an_existing_test():
    rows = _rows()
    assert len(rows) >= 40, f"{TABLE} has {len(rows)} rows"
    for m in rows:
        path, _, name = m.group("test").partition("::")
        file = REPO / path
        assert file.is_file(), f"{m.group('input').strip()}: {path} does not exist"
        assert name.split("[")[0] in _test_names(file), f"{m.group('input').strip()}: no test {name} in {path}"
        assert name.startswith("test_"), name


def test_inputs_are_not_repeated():
    inputs = [m.group("input").strip() for m in _rows()]
    assert len(inputs) == len(set(inputs)), sorted(i for i in inputs if inputs.count(i) > 1)
