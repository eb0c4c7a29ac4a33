"""The optional binary mask ``<store>/labels/mask`` (foreground probability >= threshold), written slab by slab.

Layout (OME-NGFF 0.5 image-label, like ``labels/instances``): group ``labels/mask`` with its multiscales and
``image-label`` metadata, full resolution at ``labels/mask/0``; ``labels`` lists it in ``attrs["ome"]["labels"]``.
"""

from __future__ import annotations

import os

import numpy as np


def write_mask(store_path: str | os.PathLike, *, threshold: float = 0.5, overwrite: bool = True) -> object:
    """Write ``labels/mask/0``, shape ``(*spatial)`` uint8 in {0, 1}, from a complete prediction store.

    Args:
        store_path: a complete prediction store whose values are probabilities (an activation was applied).
        threshold: foreground where the decoded probability of channel 1 is ``>= threshold``.
        overwrite: replace an existing mask.

    Returns:
        The zarr mask array.

    Raises:
        ValueError: a store of raw network output (``activation: None``) or a threshold outside (0, 1).
    """
    import zarr

    from mtbio.data.store import decode_probability, ome_multiscales, open_prediction_store, update_store_meta

    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    store = open_prediction_store(store_path, require_complete=True)
    if store.meta.get("activation") is None:
        raise ValueError(f"{store_path}: stores raw network output (activation None); a mask needs probabilities")
    if store.array.shape[0] < 2:
        raise ValueError(f"{store_path}: needs a foreground channel 1, the array has {store.array.shape[0]} channel(s)")
    group = zarr.open_group(str(store_path), mode="r+")
    spatial = store.spatial_shape
    chunks = tuple(store.array.chunks[1:])
    labels = group.require_group("labels")
    if "mask" in labels and not overwrite:
        raise FileExistsError(f"{store_path}: labels/mask exists; pass overwrite=True to replace it")
    node = labels.create_group("mask", overwrite=True)
    node.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [ome_multiscales(len(spatial), store.voxel_size, channel_axis=False, name="mask")],
        "image-label": {"version": "0.5"},
    }
    mask = node.create_array("0", shape=spatial, chunks=chunks, dtype="uint8", fill_value=0)
    step = chunks[0]
    for z in range(0, spatial[0], step):
        prob = decode_probability(np.asarray(store.array[1, z : z + step]))
        mask[z : z + step] = (prob >= np.float32(threshold)).astype(np.uint8)
    listed = list(dict(labels.attrs.get("ome", {})).get("labels", []))
    labels.attrs["ome"] = {"version": "0.5", "labels": listed if "mask" in listed else [*listed, "mask"]}
    update_store_meta(store_path, mask={"path": "labels/mask/0", "threshold": float(threshold)})
    return mask
