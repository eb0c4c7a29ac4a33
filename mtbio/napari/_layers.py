"""Lazy napari layer data: dask views of zarr / h5 / volume arrays and the layers of an mtbio prediction store.

Everything returned here is lazy: dask arrays over the on-disk chunks, so a store larger than memory opens at
once and napari reads only the planes it shows. No napari import: the functions return napari "layer data
tuples" ``(data, kwargs, layer_type)``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtbio.napari._options import (
    DEFAULT_THRESHOLD,
    INCOMPLETE_SUFFIX,
    LABELS_STYLE,
    PROBABILITY_STYLE,
    probability_contrast,
    stored_threshold,
)

LayerData = tuple[Any, dict[str, Any], str]


class IncompletePredictionWarning(UserWarning):
    """A prediction store was opened whose writer never marked it complete."""


def lazy(array: Any) -> Any:
    """A dask array over ``array`` (zarr / h5py / any sliceable with ``shape`` and ``dtype``), chunked like it.

    Arrays without a chunk layout are chunked one section (``(1, *rest)``) at a time along axis 0.
    """
    import dask.array as da

    if isinstance(array, da.Array):
        return array
    if isinstance(array, np.ndarray):
        return da.from_array(array, chunks=array.shape or ())
    chunks = getattr(array, "chunks", None)
    if not (isinstance(chunks, tuple) and len(chunks) == len(array.shape) and all(isinstance(c, int) for c in chunks)):
        shape = tuple(int(s) for s in array.shape)
        chunks = (1, *shape[1:]) if len(shape) >= 3 else shape
    return da.from_array(array, chunks=chunks, asarray=True, fancy=False, name=False)


def _scale(voxel_size: Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    """napari ``scale`` for the trailing ``len(voxel_size)`` axes of an ``ndim``-dimensional layer."""
    if voxel_size is None:
        return None
    vs = [float(v) for v in voxel_size]
    if len(vs) > ndim:
        vs = vs[-ndim:]
    return tuple([1.0] * (ndim - len(vs)) + vs)


def label_arrays(group: Any) -> dict[str, Any]:
    """The label images of a zarr group's ``labels`` subgroup (OME-NGFF style), full resolution each.

    A label is either an array ``labels/<name>`` or a group ``labels/<name>`` holding level ``0``; nested
    groups (e.g. ``labels/instances/0``) are found as well.
    """
    import zarr

    if "labels" not in group:
        return {}
    out: dict[str, Any] = {}
    labels = group["labels"]
    if isinstance(labels, zarr.Array):
        return {"labels": labels}
    names = list(labels.attrs.get("labels", [])) or sorted(labels.group_keys()) + sorted(labels.array_keys())
    for name in names:
        if name not in labels:
            continue
        node = labels[name]
        if isinstance(node, zarr.Array):
            out[name] = node
        elif "0" in node and isinstance(node["0"], zarr.Array):
            out[name] = node["0"]
    return out


def _squeeze_channel(array: Any, spatial_ndim: int) -> Any:
    """Drop a leading singleton channel axis from a label image stored as ``(1, *spatial)``."""
    if array.ndim == spatial_ndim + 1 and array.shape[0] == 1:
        return array[0]
    return array


def prediction_layers(
    path: str | os.PathLike, *, name: str | None = None, threshold: float = DEFAULT_THRESHOLD
) -> list[LayerData]:
    """Layer data tuples for an mtbio prediction store.

    Returns the foreground probability (channel 1 of ``<path>/0``, shape ``(*spatial)``, stored dtype) as an
    image layer, and the store's label images (``labels/...``) as labels layers; a store without labels gets
    a lazily thresholded ``probability >= threshold`` mask instead. All data are dask arrays.

    An incomplete store (writer stopped early) opens too, but every layer name ends in ``" [INCOMPLETE]"``
    and an :class:`IncompletePredictionWarning` is issued.

    Args:
        path: the store's group path.
        name: base layer name (default: the folder name without suffix).
        threshold: probability threshold of the derived mask, in [0, 1].

    Raises:
        FileNotFoundError: ``path`` does not exist.
        mtbio.data.store.NotAPredictionStoreError: ``path`` is not a prediction store.
    """
    import zarr

    from mtbio.data.store import FOREGROUND_CHANNEL, open_prediction_store

    store = open_prediction_store(path, require_complete=False)
    base = name or Path(path).name.split(".")[0]
    suffix = ""
    if not store.complete:
        suffix = INCOMPLETE_SUFFIX
        warnings.warn(
            f"{path}: prediction store is incomplete (its writer stopped before the last chunk); "
            "unwritten regions read as 0",
            IncompletePredictionWarning,
            stacklevel=2,
        )
    spatial_ndim = len(store.spatial_shape)
    scale = _scale(store.voxel_size, spatial_ndim)
    meta = {"mtbio": dict(store.meta), "mtbio_store": str(path)}
    channel = FOREGROUND_CHANNEL if store.array.shape[0] > FOREGROUND_CHANNEL else 0
    prob = lazy(store.array)[channel]
    layers: list[LayerData] = [
        (
            prob,
            {
                "name": f"{base} probability{suffix}",
                "contrast_limits": probability_contrast(store.dtype),
                "scale": scale,
                "metadata": meta,
                **PROBABILITY_STYLE.kwargs(),
            },
            "image",
        )
    ]
    group = zarr.open_group(str(path), mode="r")
    labels = label_arrays(group)
    for label_name, array in labels.items():
        data = lazy(_squeeze_channel(array, spatial_ndim))
        layers.append(
            (
                data,
                {"name": f"{base} {label_name}{suffix}", "scale": _scale(store.voxel_size, data.ndim), "metadata": meta}
                | LABELS_STYLE.kwargs(),
                "labels",
            )
        )
    if not labels:
        mask = (prob >= stored_threshold(store.dtype, threshold=threshold)).astype(np.uint8)
        layers.append(
            (
                mask,
                {"name": f"{base} mask{suffix}", "scale": scale, "metadata": meta} | LABELS_STYLE.kwargs(),
                "labels",
            )
        )
    return layers
