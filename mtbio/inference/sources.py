"""Inference inputs: open a path (:func:`mtbio.data.volumes.open_volume`) or wrap an array, read padded regions
(z-scored with :func:`mtbio.data.normalize.zscore`), fingerprint."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtbio.data.normalize import zscore


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
        from mtbio.data.volumes import open_volume

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
    check: Callable[[np.ndarray, tuple[int, ...]], None] | None = None,
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
        check: called as ``check(voxels, origin)`` on the voxels read (float32, before normalisation; ``origin``
            their first voxel in volume coordinates), e.g. a :class:`mtbio.inference.finite.FiniteCheck`.

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
    if check is not None and data.size:
        check(data, tuple(s.start for s in src))
    if normalize is not None:
        mean, std = normalize
        if np.ndim(mean):  # per-section statistics along axis 0
            per = (-1, *([1] * (data.ndim - 1)))
            mean = np.asarray(mean, dtype=np.float32)[src[0]].reshape(per)
            std = np.asarray(std, dtype=np.float32)[src[0]].reshape(per)
        data = zscore(data, mean, std)
    out_shape = tuple(b - a for a, b in zip(lo, hi))
    if data.shape == out_shape:
        return np.ascontiguousarray(data)
    out = np.zeros(out_shape, dtype=np.float32)
    out[tuple(dst)] = data
    return out


def source_chunks(array: Any) -> tuple[int, ...] | None:
    """The storage chunk shape of ``array`` (zarr, h5py, a dask array with regular chunks), or ``None``."""
    chunks = getattr(array, "chunks", None)
    if not isinstance(chunks, tuple) or len(chunks) != len(array.shape):
        return None
    if all(isinstance(c, (int, np.integer)) and c > 0 for c in chunks):
        return tuple(int(c) for c in chunks)
    if all(isinstance(c, tuple) and c for c in chunks):  # dask: sizes per block; regular if all but the last agree
        sizes = [c[0] if len(set(c[:-1])) <= 1 and c[-1] <= c[0] else None for c in chunks]
        return None if None in sizes else tuple(int(c) for c in sizes)
    return None


class SlabReader:
    """Reads the input boxes of consecutive slabs of a column and keeps the rows the next slab reads again.

    The slabs of one column read boxes with the same trailing extent whose axis-0 ranges overlap (the halo of
    the windows). A plain read decodes the storage chunks holding the overlap twice; this reader copies the
    overlap from the previous read and, when the source has axis-0 chunks, reads up to the end of the chunk it
    has to decode anyway (at most as many extra rows as the read itself), so each chunk is decoded once per
    column. Memory: one read plus that extension. Results equal :func:`read_padded`.

    Args:
        array: ``(*spatial)`` source.
        pad_lo: padding before the volume per axis.
        padded: the padded shape (reads never extend past it).
        normalize: as :func:`read_padded`.
        check: as :func:`read_padded` (each voxel is checked once: rows kept from the previous read are not).
    """

    def __init__(
        self,
        array: Any,
        pad_lo: Sequence[int],
        padded: Sequence[int],
        normalize: tuple[Any, Any] | None = None,
        check: Callable[[np.ndarray, tuple[int, ...]], None] | None = None,
    ) -> None:
        self.array = array
        self.check = check
        self.pad_lo = tuple(int(p) for p in pad_lo)
        self.padded = tuple(int(p) for p in padded)
        self.normalize = normalize
        chunks = source_chunks(array)
        self.chunk0 = chunks[0] if chunks is not None else 1
        self._lo: tuple[int, ...] | None = None
        self._data: np.ndarray | None = None

    def read(self, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
        """The padded box ``[lo, hi)`` as float32 (see :func:`read_padded`)."""
        lo, hi = tuple(int(v) for v in lo), tuple(int(v) for v in hi)
        z0, z1 = lo[0], hi[0]
        cached = self._data
        start = z0
        if (
            cached is not None
            and self._lo is not None
            and self._lo[1:] == lo[1:]
            and cached.shape[1:] == tuple(b - a for a, b in zip(lo[1:], hi[1:]))
            and self._lo[0] <= z0 < self._lo[0] + cached.shape[0]
        ):
            start = min(z1, self._lo[0] + cached.shape[0])
        else:
            cached = None
        end = z1
        if start < z1 and self.chunk0 > 1:  # read on to the end of the storage chunk holding row z1 - 1
            orig_end = z1 - self.pad_lo[0]
            aligned = -(-orig_end // self.chunk0) * self.chunk0 + self.pad_lo[0]
            end = max(z1, min(aligned, self.padded[0], z1 + (z1 - z0)))
        parts = []
        if cached is not None:
            parts.append(cached[z0 - self._lo[0] : start - self._lo[0]])
        if end > start:
            parts.append(
                read_padded(self.array, (start, *lo[1:]), (end, *hi[1:]), self.pad_lo, self.normalize, self.check)
            )
        data = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        self._lo, self._data = (z0, *lo[1:]), data
        return np.ascontiguousarray(data[: z1 - z0])


def _sample_boxes(array: Any, shape: tuple[int, ...]) -> list[np.ndarray]:
    """The fingerprint's boxes: index 0, the middle and the last along axis 0, the first 64 voxels elsewhere."""
    rows = [min(int(frac * (shape[0] - 1)), shape[0] - 1) for frac in (0.0, 0.5, 1.0)]
    rest = tuple(slice(0, min(s, 64)) for s in shape[1:])
    if _is_zarr_array(array):
        # one orthogonal read decodes each chunk once (three plain reads decode a chunk holding two rows twice)
        unique = sorted(set(rows))
        data = np.asarray(array.get_orthogonal_selection((np.asarray(unique), *rest)))
        return [data[unique.index(r) : unique.index(r) + 1] for r in rows]
    return [np.asarray(array[(slice(r, r + 1), *rest)]) for r in rows]


def _is_zarr_array(array: Any) -> bool:
    try:
        import zarr
    except ImportError:  # pragma: no cover - zarr is a dependency
        return False
    return isinstance(array, zarr.Array)


def fingerprint(array: Any, path: str | None) -> dict[str, Any]:
    """What identifies an input for resume: its path (if any), shape, dtype and a digest of a few sample boxes."""
    shape = tuple(int(s) for s in array.shape)
    digest = hashlib.sha256()
    for box in _sample_boxes(array, shape):
        digest.update(np.ascontiguousarray(box).tobytes())
    return {
        "path": path,
        "shape": list(shape),
        "dtype": np.dtype(array.dtype).name,
        "sample_sha256": digest.hexdigest(),
    }
