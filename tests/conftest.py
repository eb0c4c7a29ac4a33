"""Shared test fixtures: CPU habits, the optional real-data folder, GUI gating."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: real EM data (VNC III, Lucchi++ subsets) laid out like the public releases; never committed
SHARED_DATA = Path(os.environ.get("MTBIO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


def _gui_skip_reason() -> str | None:
    if os.environ.get("MTBIO_SKIP_GUI"):
        return os.environ["MTBIO_SKIP_GUI"]
    if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        return "no X server (DISPLAY unset): run the tests through xvfb-run to include the napari GUI tests"
    try:
        import napari  # noqa: F401
    except ImportError:
        return "napari is not installed (pip install 'mtbio[napari]')"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _gui_skip_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gui" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$MTBIO_SHARED_DATA``); the test skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real EM data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def vnc3_dir(shared_data: Path) -> Path:
    path = shared_data / "vnc3"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture
def lucchi_pp_dir(shared_data: Path) -> Path:
    path = shared_data / "lucchi_pp"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path
