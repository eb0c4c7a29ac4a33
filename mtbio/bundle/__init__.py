"""Library side of the MONAI bundles in ``bundles/``: their data (:mod:`mtbio.bundle.data`) and their
``training`` / ``inference`` / ``evaluate`` workflows (:mod:`mtbio.bundle.workflow`), reached from the bundle
configs through ``_target_: mtbio.bundle.<name>``. No bundle carries its own scripts.

The names below are re-exported lazily so ``import mtbio.bundle`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DomainPair": "data",
    "block_in_voxels": "data",
    "em2d_pair": "data",
    "mitoem_pair": "data",
    "open_spec": "data",
    "synthetic_pair": "data",
    "volume_pair": "data",
    "evaluate": "workflow",
    "predict": "workflow",
    "train": "workflow",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mtbio.bundle.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mtbio.bundle' has no attribute {name!r}")
