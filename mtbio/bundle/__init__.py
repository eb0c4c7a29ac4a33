"""Library side of the MONAI bundles in ``bundles/``: their data (:mod:`mtbio.bundle.data`) and their
``training`` / ``inference`` / ``evaluate`` workflows (:mod:`mtbio.bundle.workflow`), reached from the bundle
configs through ``_target_: mtbio.bundle.<name>``. No bundle carries its own scripts.

The names below are re-exported lazily so ``import mtbio.bundle`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # editors and type checkers see the lazily exported names
    from mtbio.bundle.data import (
        DomainPair,
        block_in_voxels,
        em2d_pair,
        em3d_pair,
        mitoem_pair,
        open_spec,
        patch_in_voxels,
        synthetic_pair,
        volume_pair,
    )
    from mtbio.bundle.workflow import evaluate, predict, train

_EXPORTS = {
    "DomainPair": "data",
    "block_in_voxels": "data",
    "em2d_pair": "data",
    "em3d_pair": "data",
    "mitoem_pair": "data",
    "open_spec": "data",
    "patch_in_voxels": "data",
    "synthetic_pair": "data",
    "volume_pair": "data",
    "evaluate": "workflow",
    "predict": "workflow",
    "train": "workflow",
}

__all__ = [
    "DomainPair",
    "block_in_voxels",
    "em2d_pair",
    "em3d_pair",
    "evaluate",
    "mitoem_pair",
    "open_spec",
    "patch_in_voxels",
    "predict",
    "synthetic_pair",
    "train",
    "volume_pair",
]  # = sorted(_EXPORTS) (tests/test_package.py checks)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mtbio.bundle.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mtbio.bundle' has no attribute {name!r}")
