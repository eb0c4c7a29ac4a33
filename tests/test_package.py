"""Package-level contracts: light import, CLI entry point, lint clean."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(out.split())


@pytest.mark.parametrize(
    "code",
    [
        "import mtbio",
        "import mtbio.data, mtbio.data.store, mtbio.metrics, mtbio.cli",
        "import mtbio.inference, mtbio.uda",
    ],
)
def test_import_loads_no_gui(code: str) -> None:
    mods = _modules_after(code)
    gui = sorted(
        m for m in mods if m.split(".")[0] in {"napari", "PyQt6", "PyQt5", "PySide6", "qtpy", "vispy", "magicgui"}
    )
    assert gui == [], f"{code!r} imported GUI modules: {gui[:5]}"


def test_bare_import_is_light() -> None:
    mods = _modules_after("import mtbio")
    heavy = sorted(m for m in mods if m.split(".")[0] in {"torch", "monai", "zarr", "dask", "sklearn", "h5py"})
    assert heavy == []


def test_cli_help_lists_commands() -> None:
    from mtbio.cli import COMMANDS, build_parser

    text = build_parser().format_help()
    for name in COMMANDS:
        assert name in text


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff", path=str(REPO_ROOT / ".venv" / "bin")) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install 'mtbio[dev]')")
    res = subprocess.run(
        [ruff, "check", "--no-cache", "mtbio", "tests", "benchmarks"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_lazy_exports_are_listed_once_and_seen_by_type_checkers() -> None:
    """Each lazily exporting package: ``__all__`` is its lazy map's names, every name resolves, and the same names
    are imported under ``if TYPE_CHECKING:`` (what editors and type checkers read)."""
    import ast
    import importlib

    for pkg in ("mtbio.bundle", "mtbio.uda", "mtbio.inference", "mtbio.export"):
        module = importlib.import_module(pkg)
        lazy = getattr(module, "_EXPORTS", None) or module._LAZY
        assert module.__all__ == sorted(lazy), pkg
        for name in lazy:
            assert getattr(module, name) is not None, (pkg, name)
        tree = ast.parse(open(module.__file__).read())
        guarded = {
            alias.asname or alias.name
            for node in tree.body
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
            for imp in node.body
            if isinstance(imp, ast.ImportFrom)
            for alias in imp.names
        }
        assert guarded == set(lazy), (pkg, guarded ^ set(lazy))
