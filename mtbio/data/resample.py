"""Lazy resampling of a volume to another voxel size: :class:`ResampledVolume`.

A :class:`ResampledVolume` is a read-only view of an array-like (a :class:`mtbio.data.volumes.Volume`, numpy,
zarr, h5py, a prediction store's array) on another grid. Nothing is read when it is made; an index reads only
the input region its output voxels depend on (e.g. the sections asked for when z is not resampled), so a
stack larger than memory is resampled block by block by whoever slices it (the sampler, the streaming inferer).

Grid convention (that of ``skimage.transform.resize``): an axis of ``n_in`` voxels resampled by the zoom
``f = voxel_in / voxel_out`` has ``n_out = max(1, round(n_in * f))`` voxels, and output voxel ``o`` samples the
input at ``(o + 0.5) * n_in / n_out - 0.5`` (the outer edges of both grids coincide). Values are interpolated
linearly along each resampled axis (separable; the edge voxel is repeated outside). Downsampling first smooths
the axis with a Gaussian of sigma ``(s - 1) / 2`` (``s = n_in / n_out``, skimage's anti-aliasing rule), computed
on the region read plus a margin of ``ceil(4 sigma) + 1`` voxels, so a block equals the same block of the whole
resampled volume to float rounding. Labels (``label=True``) are interpolated the same way and thresholded at 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ResampledVolume", "TrainingGrid", "differs", "training_grid", "zoom_factors"]

#: relative voxel-size difference below which two grids count as the same (10 %)
DEFAULT_TOLERANCE = 0.1


def differs(a: Sequence[float], b: Sequence[float], tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """True when any axis of voxel sizes ``a`` and ``b`` (same length, nm) differs by more than ``tolerance``
    relative to ``b``: ``|a / b - 1| > tolerance``."""
    if len(a) != len(b):
        raise ValueError(f"voxel sizes {tuple(a)} and {tuple(b)} have different lengths")
    return any(abs(float(x) / float(y) - 1.0) > tolerance for x, y in zip(a, b))


def zoom_factors(voxel_from: Sequence[float], voxel_to: Sequence[float]) -> tuple[float, ...]:
    """Per-axis zoom (output voxels per input voxel) from ``voxel_from`` to ``voxel_to`` nm: ``from / to``."""
    if len(voxel_from) != len(voxel_to):
        raise ValueError(f"voxel sizes {tuple(voxel_from)} and {tuple(voxel_to)} have different lengths")
    if any(not float(v) > 0 for v in (*voxel_from, *voxel_to)):
        raise ValueError(f"voxel sizes must be positive, got {tuple(voxel_from)} -> {tuple(voxel_to)}")
    return tuple(float(a) / float(b) for a, b in zip(voxel_from, voxel_to))


class ResampledVolume:
    """A lazy view of ``source`` with its trailing spatial axes zoomed by ``factors`` (leading axes, e.g. the
    channels of a prediction store, pass through).

    Args:
        source: array-like with ``shape`` and numpy slicing (``(Z, Y, X)``, ``(Y, X)``, ``(C, Z, Y, X)`` ...).
        factors: zoom per trailing axis (``voxel_in / voxel_out``); 1 leaves an axis as it is (no interpolation).
        shape: output extents of those axes (default ``round(n_in * f)``, at least 1): pass the input grid's
            shape when resampling a prediction back onto it.
        label: interpolate as float and return ``bool`` (``> 0.5``) instead of ``float32``.
        antialias: Gaussian smoothing before downsampling (default on).

    Attributes:
        shape, dtype (``float32`` or ``bool``), ndim, voxel_size (the source's divided by ``factors`` when the
        source has one, else ``None``), factors, source.
    """

    def __init__(
        self,
        source: Any,
        factors: Sequence[float],
        *,
        shape: Sequence[int] | None = None,
        label: bool = False,
        antialias: bool = True,
    ) -> None:
        in_shape = tuple(int(s) for s in source.shape)
        n = len(factors)
        if not 1 <= n <= len(in_shape):
            raise ValueError(f"{n} zoom factors for a source of shape {in_shape}")
        if any(not (math.isfinite(float(f)) and float(f) > 0) for f in factors):
            raise ValueError(f"zoom factors must be positive and finite, got {tuple(factors)}")
        self.source = source
        self.factors = tuple(float(f) for f in factors)
        self._lead = len(in_shape) - n
        self._in = in_shape[self._lead :]
        out = (
            tuple(max(1, round(s * f)) for s, f in zip(self._in, self.factors))
            if shape is None
            else tuple(int(s) for s in shape)
        )
        if len(out) != n or any(s < 1 for s in out):
            raise ValueError(f"output shape {tuple(out)} must have {n} positive entries")
        self.shape: tuple[int, ...] = in_shape[: self._lead] + out
        self.ndim = len(self.shape)
        self.label = bool(label)
        self.dtype = np.dtype(bool) if label else np.dtype(np.float32)
        self.antialias = bool(antialias)
        vs = getattr(source, "voxel_size", None)
        self.voxel_size: tuple[float, ...] | None = None
        if vs is not None and len(vs) == n:
            self.voxel_size = tuple(float(v) * i / o for v, i, o in zip(vs, self._in, out))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        name = type(self.source).__name__
        return f"ResampledVolume({name} {self._in} -> {self.shape[self._lead :]}, factors={self.factors})"

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)

    def __getitem__(self, index: Any) -> np.ndarray:
        items = _expand(index, self.ndim)
        lead_read = tuple(items[: self._lead])
        reads: list[slice] = []
        plans: list[tuple[np.ndarray, np.ndarray, np.ndarray, float] | None] = []
        squeeze: list[int] = []
        for axis, item in enumerate(items[self._lead :]):
            n_out, n_in = self.shape[self._lead + axis], self._in[axis]
            if isinstance(item, (int, np.integer)):
                i = int(item)
                if not -n_out <= i < n_out:
                    raise IndexError(f"index {i} is out of bounds for axis {self._lead + axis} with size {n_out}")
                out_idx = np.array([i % n_out])
                squeeze.append(self._lead + axis)
            else:
                out_idx = np.arange(n_out)[item]
            if n_out == n_in and out_idx.size:  # not resampled: read exactly what is asked
                lo, hi = int(out_idx.min()), int(out_idx.max()) + 1
                reads.append(slice(lo, hi))
                plans.append((out_idx - lo, out_idx - lo, np.zeros(out_idx.size, np.float32), 0.0))
                continue
            if not out_idx.size:
                reads.append(slice(0, 0))
                plans.append(None)
                continue
            scale = n_in / n_out
            coords = np.clip((out_idx + 0.5) * scale - 0.5, 0, n_in - 1)
            sigma = max(0.0, (scale - 1) / 2) if self.antialias else 0.0
            margin = int(math.ceil(4 * sigma)) + 1 if sigma > 0 else 0
            lo = max(0, int(math.floor(coords.min())) - margin)
            hi = min(n_in, int(math.floor(coords.max())) + 2 + margin)
            i0 = np.floor(coords).astype(np.int64)
            i1 = np.minimum(i0 + 1, n_in - 1)
            w = (coords - i0).astype(np.float32)
            reads.append(slice(lo, hi))
            plans.append((i0 - lo, i1 - lo, w, sigma))
        if any(p is None for p in plans):
            shape = [len(np.arange(s)[it]) for s, it in zip(self.shape, items) if not isinstance(it, (int, np.integer))]
            return np.empty(shape, dtype=self.dtype)
        data = np.asarray(self.source[(*lead_read, *reads)], dtype=np.float32)
        n_lead_kept = data.ndim - len(reads)
        for axis, (i0, i1, w, sigma) in enumerate(plans):  # type: ignore[misc]
            ax = n_lead_kept + axis
            if sigma > 0:
                from scipy.ndimage import gaussian_filter1d

                data = gaussian_filter1d(data, sigma, axis=ax, mode="nearest", truncate=4.0)
            if np.array_equal(i0, i1):
                data = np.take(data, i0, axis=ax)
            else:
                shape = [1] * data.ndim
                shape[ax] = -1
                wb = w.reshape(shape)
                data = np.take(data, i0, axis=ax) * (1 - wb) + np.take(data, i1, axis=ax) * wb
        squeeze_axes = tuple(a - (self._lead - n_lead_kept) for a in squeeze)
        if squeeze_axes:
            data = data.squeeze(axis=squeeze_axes)
        return data > 0.5 if self.label else data.astype(np.float32, copy=False)


def _expand(index: Any, ndim: int) -> list[Any]:
    """``index`` as one int or slice per axis (``...`` expanded; ``None`` and fancy indices are refused)."""
    items = list(index) if isinstance(index, tuple) else [index]
    if any(i is None for i in items):
        raise IndexError("a ResampledVolume takes ints, slices and '...' (no new axes)")
    for i in items:
        if not (i is Ellipsis or isinstance(i, (slice, int, np.integer))) or isinstance(i, (bool, np.bool_)):
            raise IndexError(f"a ResampledVolume takes ints, slices and '...', got {type(i).__name__}")
    if items.count(Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if Ellipsis in items:
        k = items.index(Ellipsis)
        items = items[:k] + [slice(None)] * (ndim - len(items) + 1) + items[k + 1 :]
    if len(items) > ndim:
        raise IndexError(f"too many indices for a {ndim}-D volume: {len(items)}")
    return items + [slice(None)] * (ndim - len(items))


@dataclass
class TrainingGrid:
    """The training volumes on one grid (:func:`training_grid`).

    Attributes:
        source_image, source_label, target_image, target_label: the volumes to train on (lazy
            :class:`ResampledVolume` views where resampled, else the inputs; ``None`` stays ``None``).
        voxel_size: nm per network spatial axis of the training grid (``(y, x)`` for 2D, ``(z, y, x)`` for 3D), the
            weights record's ``voxel_size``; ``None`` when unknown.
        note: one line saying what was done.
        source_voxel_size, target_voxel_size: each domain's own voxel size on the network's axes, nm (``None`` when
            unknown or the volume is not used): the training grid is the target's exactly when
            ``target_voxel_size`` is known (mask blocks in nm need it, :mod:`mtbio.uda.blocks`).
    """

    source_image: Any
    source_label: Any
    target_image: Any
    target_label: Any
    voxel_size: tuple[float, ...] | None
    note: str
    source_voxel_size: tuple[float, ...] | None = None
    target_voxel_size: tuple[float, ...] | None = None


def training_grid(
    source_image: Any,
    source_label: Any,
    target_image: Any,
    target_label: Any = None,
    *,
    spatial_dims: int,
    source_voxel_size: Sequence[float] | None = None,
    target_voxel_size: Sequence[float] | None = None,
    resample: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
) -> TrainingGrid:
    """Bring the source to the target's voxel size on the axes the network sees (in-plane ``(y, x)`` for a 2D
    network, all three for 3D) when both are known and differ by more than ``tolerance``.

    The target's grid is the common one: the network is trained to segment the target, whose (unlabelled) images
    are then used as they are and whose test volumes need no resampling at prediction; only the labelled source
    (image and label) is resampled. Volumes are ``(Z, Y, X)``; pass ``None`` for a volume the strategy does not use
    (source-only: no target). Voxel sizes default to the volumes' ``voxel_size`` attributes.

    Returns:
        A :class:`TrainingGrid`; its ``voxel_size`` is the target's (network axes) when known, else the source's.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    sv = _voxel_of(source_image, source_voxel_size, "source")
    tv = _voxel_of(target_image, target_voxel_size, "target")
    axes = slice(-spatial_dims, None)
    grid = TrainingGrid(source_image, source_label, target_image, target_label, None, "")
    grid.source_voxel_size = None if sv is None else sv[axes]
    grid.target_voxel_size = None if tv is None else tv[axes]
    if tv is not None:
        grid.voxel_size = tv[axes]
    elif sv is not None:
        grid.voxel_size = sv[axes]
    if source_image is None or target_image is None or sv is None or tv is None:
        missing = [
            n
            for n, v, img in (("source", sv, source_image), ("target", tv, target_image))
            if img is not None and v is None
        ]
        grid.note = (
            f"voxel size of the {' and '.join(missing)} unknown: trained as given"
            if missing
            else f"training grid {_fmt(grid.voxel_size)}"
        )
        return grid
    if not differs(sv[axes], tv[axes], tolerance):
        grid.note = f"source {_fmt(sv[axes])} and target {_fmt(tv[axes])} agree within {tolerance:.0%}: no resampling"
        return grid
    if not resample:
        grid.note = f"source {_fmt(sv[axes])} differs from target {_fmt(tv[axes])} but --no-resample: trained as given"
        return grid
    factors = tuple(1.0 if i < 3 - spatial_dims else f for i, f in enumerate(zoom_factors(sv, tv)))
    grid.source_image = ResampledVolume(source_image, factors)
    if source_label is not None:
        grid.source_label = ResampledVolume(source_label, factors, label=True)
    grid.note = (
        f"source resampled from {_fmt(sv[axes])} to the target's {_fmt(tv[axes])} "
        f"(shape {tuple(source_image.shape)} -> {grid.source_image.shape})"
    )
    return grid


def _voxel_of(volume: Any, given: Sequence[float] | None, what: str) -> tuple[float, ...] | None:
    if volume is None:
        return None
    vs = given if given is not None else getattr(volume, "voxel_size", None)
    if vs is None:
        return None
    vs = tuple(float(v) for v in vs)
    if len(vs) != len(volume.shape):
        raise ValueError(f"{what} voxel size {vs} needs one value per axis of its shape {tuple(volume.shape)}")
    return vs


def _fmt(vs: Sequence[float] | None) -> str:
    return "unknown" if vs is None else "(" + ", ".join(f"{float(v):g}" for v in vs) + ") nm"
