"""Out-of-core sliding-window inference into OME-Zarr prediction stores.

Public entry points (imported lazily so ``import mtbio.inference`` stays light):

* :func:`predict_volume` (:mod:`mtbio.inference.predict`): one process, resumable, block by block.
* :func:`predict_volume_dask` (:mod:`mtbio.inference.distributed`): the same through dask.distributed.
* :class:`InferenceSettings` (:mod:`mtbio.inference.settings`): every option of a run and its default, in one place.
* :class:`TTAWrapper` (:mod:`mtbio.inference.tta`): test-time augmentation (``InferenceSettings.tta``) as a network.
* :func:`write_mask` (:mod:`mtbio.inference.mask`): ``labels/mask`` of a finished store.
* :func:`load_bundle_network`, :func:`load_named_network`, :func:`model_hash` (:mod:`mtbio.inference.model_io`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # editors and type checkers see the lazily exported names
    from mtbio.data.normalize import Normalization
    from mtbio.inference.distributed import predict_volume_dask
    from mtbio.inference.mask import write_mask
    from mtbio.inference.model_io import load_bundle_network, load_named_network, model_hash
    from mtbio.inference.predict import predict_volume
    from mtbio.inference.settings import TTA, Activation, Blend, InferenceSettings
    from mtbio.inference.tta import TTAWrapper
    from mtbio.inference.windows import WindowGrid

_LAZY = {
    "predict_volume": "mtbio.inference.predict",
    "predict_volume_dask": "mtbio.inference.distributed",
    "write_mask": "mtbio.inference.mask",
    "load_bundle_network": "mtbio.inference.model_io",
    "load_named_network": "mtbio.inference.model_io",
    "model_hash": "mtbio.inference.model_io",
    "Blend": "mtbio.inference.settings",
    "Activation": "mtbio.inference.settings",
    "InferenceSettings": "mtbio.inference.settings",
    "TTA": "mtbio.inference.settings",
    "TTAWrapper": "mtbio.inference.tta",
    "Normalization": "mtbio.data.normalize",
    "WindowGrid": "mtbio.inference.windows",
}

__all__ = [
    "Activation",
    "Blend",
    "InferenceSettings",
    "Normalization",
    "TTA",
    "TTAWrapper",
    "WindowGrid",
    "load_bundle_network",
    "load_named_network",
    "model_hash",
    "predict_volume",
    "predict_volume_dask",
    "write_mask",
]  # = sorted(_LAZY) (tests/test_package.py checks)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mtbio.inference' has no attribute {name!r}")
