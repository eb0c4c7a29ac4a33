"""Instance label images outside a prediction store: a standalone OME-Zarr label image, or a multi-page TIF.

Both are written block by block (one section at a time for the TIF), so a label volume larger than memory is
exported with about one block in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

TIF_SUFFIXES = (".tif", ".tiff")


def is_tif_path(path: str | Path) -> bool:
    """True when ``path`` ends in ``.tif`` / ``.tiff`` (any case)."""
    return Path(path).suffix.lower() in TIF_SUFFIXES


def create_label_image(
    path: str | Path,
    shape: Sequence[int],
    *,
    chunks: Sequence[int],
    voxel_size: Sequence[float] | None = None,
    name: str = "instances",
    dtype: np.dtype | type = np.uint32,
    meta: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Any:
    """An empty standalone OME-Zarr (NGFF 0.5, zarr v3) label image ``path`` with its full resolution at ``0``.

    Layout: ``path`` group, ``attrs["ome"] = {"version": "0.5", "multiscales": [...], "image-label": {...}}``,
    ``attrs["mtbio"] = meta``; ``path/0`` holds the ids, shape ``(*spatial)``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    import zarr

    from mtbio.data.store import ome_multiscales

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    shape = tuple(int(s) for s in shape)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    multiscales = ome_multiscales(len(shape), voxel_size, channel_axis=False, name=name)
    group.attrs.update(
        {
            "ome": {"version": "0.5", "multiscales": [multiscales], "image-label": {"version": "0.5"}},
            "mtbio": dict(meta or {}),
        }
    )
    chunks = tuple(min(int(c), s) for c, s in zip(chunks, shape))
    return group.create_array("0", shape=shape, chunks=chunks, dtype=np.dtype(dtype), fill_value=0)


def _sections(labels: Any) -> Iterator[np.ndarray]:
    for z in range(labels.shape[0]):
        yield np.asarray(labels[z])


def write_labels_tif(
    labels: Any, path: str | Path, *, voxel_size: Sequence[float] | None = None, overwrite: bool = False
) -> Path:
    """Write a label image as a multi-page TIF: one page per section along axis 0 (one page for 2D).

    Sections are read and written one at a time. The TIF is a BigTIFF past 2 GiB; its description holds
    ``{"axes": "ZYX" | "YX", "voxel_size_nm": [...]}`` (tifffile's shaped JSON), so
    ``tifffile.imread`` returns the full ``(Z, Y, X)`` array.

    Args:
        labels: integer ids, shape (Y, X) or (Z, Y, X); numpy, zarr or any sliceable array.
        path: the ``.tif`` / ``.tiff`` file.
        voxel_size: nm per spatial axis, recorded in the description.
        overwrite: replace an existing file.

    Raises:
        ValueError: not a TIF suffix or not a 2D / 3D integer array.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    import tifffile

    path = Path(path)
    if not is_tif_path(path):
        raise ValueError(f"{path}: a multi-page TIF needs a .tif or .tiff suffix")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    shape = tuple(int(s) for s in labels.shape)
    dtype = np.dtype(labels.dtype)
    if len(shape) not in (2, 3) or dtype.kind not in "ui":
        raise ValueError(f"{path}: labels must be 2D / 3D integer ids, got shape {shape} dtype {dtype}")
    metadata: dict[str, Any] = {"axes": "ZYX" if len(shape) == 3 else "YX"}
    if voxel_size is not None:
        metadata["voxel_size_nm"] = json.loads(json.dumps([float(v) for v in voxel_size]))
    bigtiff = int(np.prod(shape)) * dtype.itemsize > 2**31
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        if len(shape) == 2:
            tif.write(np.asarray(labels[...]), metadata=metadata)
        else:
            tif.write(_sections(labels), shape=shape, dtype=dtype, metadata=metadata)
    return path
