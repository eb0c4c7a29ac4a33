"""Inference inputs: open a path or wrap an array, read padded regions, fingerprint, global statistics.

A path goes through :func:`mtbio.data.volumes.open_volume` when that module exists; until then a small
built-in opener reads zarr / OME-Zarr groups (level ``0``), HDF5 (``key``), TIFF and ``.npy``.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _fallback_open(path: Path, key: str | None) -> Any:
    suffix = "".join(path.suffixes).lower()
    if suffix.endswith((".h5", ".hdf5", ".hdf")):
        import h5py

        handle = h5py.File(path, "r")
        if key is None:
            names = [k for k in handle if isinstance(handle[k], h5py.Dataset)]
            if len(names) != 1:
                raise KeyError(f"{path}: pass key= to choose one of the datasets {sorted(handle)}")
            key = names[0]
        if key not in handle:
            raise KeyError(f"{path}: no dataset {key!r} (has {sorted(handle)})")
        return handle[key]
    if suffix.endswith((".tif", ".tiff")):
        import tifffile

        return tifffile.imread(path)
    if suffix.endswith(".npy"):
        return np.load(path, mmap_mode="r")
    if path.is_dir():
        import zarr

        node = zarr.open(str(path), mode="r")
        if isinstance(node, zarr.Group):
            name = key or ("0" if "0" in node else None)
            if name is None or name not in node:
                raise KeyError(f"{path}: zarr group without array {key or '0'!r} (has {sorted(node)})")
            node = node[name]
        return node
    raise ValueError(f"{path}: unsupported input format (use zarr, OME-Zarr, h5, tif or npy)")


def open_source(source: Any, key: str | None = None) -> tuple[Any, tuple[float, ...] | None, str | None]:
    """Open ``source`` for slicing.

    Args:
        source: a path (str / PathLike) or an array-like with ``shape``, ``dtype`` and numpy slicing.
        key: dataset inside an HDF5 / zarr container.

    Returns:
        ``(array, voxel_size or None, path string or None)``.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: an object that is neither a path nor sliceable, or a non-numeric dtype.
    """
    path = None
    voxel_size = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: input volume does not exist")
        try:
            from mtbio.data.volumes import open_volume
        except ImportError:
            array = _fallback_open(path, key)
        else:
            array = open_volume(path, key=key)
            voxel_size = getattr(array, "voxel_size", None)
            axes = tuple(getattr(array, "axes", ()))
            if any(a not in ("z", "y", "x") for a in axes):
                raise ValueError(
                    f"{path}: has axes {''.join(axes)} (shape {tuple(array.shape)}); predict takes one greyscale "
                    "channel: (Z, Y, X) or (Y, X)"
                )
    else:
        array = source
        voxel_size = getattr(source, "voxel_size", None)
    if not hasattr(array, "shape") or not hasattr(array, "__getitem__") or not hasattr(array, "dtype"):
        raise ValueError(
            f"source must be a path or a sliceable array with shape and dtype, got {type(source).__name__}"
        )
    dtype = np.dtype(array.dtype)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype == np.bool_):
        where = f"{path}: " if path else ""
        raise ValueError(f"{where}input dtype {dtype} is not numeric (need integer, float or bool voxels)")
    if voxel_size is not None:
        voxel_size = tuple(float(v) for v in voxel_size)
    return array, voxel_size, None if path is None else str(path.resolve())


def read_padded(
    array: Any,
    lo: Sequence[int],
    hi: Sequence[int],
    pad_lo: Sequence[int],
    normalize: tuple[Any, Any] | None = None,
) -> np.ndarray:
    """Read the padded-coordinate box ``[lo, hi)`` as float32, zeros outside the volume.

    The voxels inside the volume are normalised (``(x - mean) / std``) before the zero padding, as a caller
    that normalises the volume and then runs MONAI's padded sliding window would see them.

    Args:
        array: ``(*spatial)`` source.
        lo: first voxel per axis (padded coordinates).
        hi: one past the last voxel per axis (padded coordinates).
        pad_lo: padding before the volume per axis.
        normalize: ``(mean, std)`` as floats, or as arrays of shape (Z,) with one value per section along axis 0
            (indexed in volume coordinates), or ``None``.

    Returns:
        float32 array of shape ``hi - lo``.
    """
    shape = tuple(int(s) for s in array.shape)
    src, dst = [], []
    for a, b, p, s in zip(lo, hi, pad_lo, shape):
        oa, ob = max(a - p, 0), min(b - p, s)
        src.append(slice(oa, max(oa, ob)))
        dst.append(slice(oa + p - a, oa + p - a + max(ob - oa, 0)))
    data = np.asarray(array[tuple(src)], dtype=np.float32)
    if normalize is not None:
        mean, std = normalize
        if np.ndim(mean):  # per-section statistics along axis 0
            per = (-1, *([1] * (data.ndim - 1)))
            mean = np.asarray(mean, dtype=np.float32)[src[0]].reshape(per)
            std = np.asarray(std, dtype=np.float32)[src[0]].reshape(per)
        data = (data - np.float32(mean)) / np.float32(std)
    out_shape = tuple(b - a for a, b in zip(lo, hi))
    if data.shape == out_shape:
        return np.ascontiguousarray(data)
    out = np.zeros(out_shape, dtype=np.float32)
    out[tuple(dst)] = data
    return out


def volume_stats(array: Any, *, max_slab_voxels: int = 1 << 24) -> tuple[float, float]:
    """Mean and standard deviation of a whole volume, read slab by slab along axis 0 (float64 sums).

    Args:
        array: ``(*spatial)`` source (numpy, zarr, h5py, dask or a lazy volume).
        max_slab_voxels: voxels read at once.

    Returns:
        ``(mean, std)``; ``std`` is 1 for a constant volume.
    """
    shape = tuple(int(s) for s in array.shape)
    per_row = max(1, math.prod(shape[1:]))
    step = max(1, max_slab_voxels // per_row)
    total, total_sq, count = 0.0, 0.0, 0
    for z in range(0, shape[0], step):
        data = np.asarray(array[z : z + step], dtype=np.float64)
        total += float(data.sum())
        total_sq += float(np.square(data).sum())
        count += data.size
    mean = total / count
    var = max(total_sq / count - mean * mean, 0.0)
    std = math.sqrt(var)
    return mean, (std if std > 0 else 1.0)


def fingerprint(array: Any, path: str | None) -> dict[str, Any]:
    """What identifies an input for resume: its path (if any), shape, dtype and a digest of a few sample boxes."""
    shape = tuple(int(s) for s in array.shape)
    digest = hashlib.sha256()
    for frac in (0.0, 0.5, 1.0):
        idx = tuple(slice(min(int(frac * (s - 1)), s - 1), min(int(frac * (s - 1)), s - 1) + 1) for s in shape[:1])
        idx += tuple(slice(0, min(s, 64)) for s in shape[1:])
        digest.update(np.ascontiguousarray(np.asarray(array[idx])).tobytes())
    return {
        "path": path,
        "shape": list(shape),
        "dtype": np.dtype(array.dtype).name,
        "sample_sha256": digest.hexdigest(),
    }
