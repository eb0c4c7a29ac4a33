"""Thick sections from thin ones: a lazy view of a ``(Z, Y, X)`` volume whose sections are pooled in groups along z.

:func:`pool_z` turns a stack of thin sections (e.g. 5 nm FIB-SEM slices) into one of ``group`` times thicker
sections: pooled section ``k`` is made of input sections ``k * group .. (k + 1) * group - 1``. It *simulates*
serial-section TEM, where one section's image is a projection through its whole thickness; it is not real ssTEM
(no section-cutting artefacts, no knife marks, no tilt or warp between sections).

* Images: the mean over the group (``float32``): the projection a thick section's transmission image approximates.
* Labels (``bool`` volumes, already through the label rule of :mod:`mtbio.data.labels`): ``"majority"`` (default),
  foreground where at least half of the group's sections are foreground (``2 * count >= group``: a tie is
  foreground); or ``"max"``, foreground where any section is. Majority is the default because it puts the label
  edge where the averaged image puts the object edge: a voxel where a mitochondrion fills one of ten thin sections
  has a tenth of its contrast in the mean image and is hardly visible, yet ``"max"`` would call it foreground, so
  the max labels are dilated along every oblique membrane (by up to the object's in-plane travel over ``group``
  sections).
* The ``Z % group`` sections after the last complete group are dropped (e.g. 165 sections, group 10: 16 pooled
  sections from sections 0-159; 160-164 are not used).
* Voxel size: the input's with z multiplied by ``group`` (5 x 5 x 5 nm, group 10 -> 50 x 5 x 5 nm).

Reads are lazy: a pooled section reads only its group's input sections, on first use; computed sections are kept
(up to ``cache_bytes``, least recently used dropped first), so random training crops from a stack of per-section
files do not decode the same files again and again. A pooled stack is ``group`` times smaller than its input.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal

import numpy as np

from mtbio.data._backends import Backend
from mtbio.data.volumes import Volume

__all__ = ["POOLING", "PooledVolume", "pool_sections", "pool_z"]

#: how a group of sections becomes one: ``"mean"`` for images, ``"majority"`` / ``"max"`` for bool labels
POOLING = ("mean", "majority", "max")
Pooling = Literal["mean", "majority", "max"]
#: default bound of the pooled sections kept in memory per volume
DEFAULT_CACHE_BYTES = 512 * 1024**2


def pool_sections(sections: np.ndarray, group: int, how: Pooling) -> np.ndarray:
    """Pool consecutive groups of ``group`` sections along axis 0 (the rule of the module docstring).

    Args:
        sections: ``(N * group, ...)`` array: numbers for ``"mean"``, bool for ``"majority"`` and ``"max"``.
        group: sections per pooled section (>= 1).
        how: ``"mean"`` (-> float32), ``"majority"`` (-> bool, ``2 * count >= group``) or ``"max"`` (-> bool, any).

    Returns:
        ``(N, ...)``.

    Raises:
        ValueError: ``group`` < 1, an axis 0 not divisible by ``group``, an unknown ``how``, or ``"majority"`` /
            ``"max"`` on a non-bool array (apply the label rule first).
    """
    a = np.asarray(sections)
    if int(group) < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    if a.ndim < 1 or a.shape[0] % group:
        raise ValueError(f"axis 0 of shape {a.shape} is not a multiple of group {group}")
    if how not in POOLING:
        raise ValueError(f"unknown pooling {how!r}; choose one of {list(POOLING)}")
    grouped = a.reshape(a.shape[0] // group, group, *a.shape[1:])
    if how == "mean":
        if a.dtype.kind not in "biuf":
            raise ValueError(f"mean pooling needs a numeric array, got dtype {a.dtype}")
        return grouped.mean(axis=1, dtype=np.float64).astype(np.float32)
    if a.dtype != np.bool_:
        raise ValueError(f"{how!r} pooling is for bool label arrays (after the label rule), got dtype {a.dtype}")
    if how == "max":
        return grouped.any(axis=1)
    return 2 * np.count_nonzero(grouped, axis=1) >= group


class _PoolBackend(Backend):
    """Pooled sections of another backend's ``(Z, Y, X)`` array, computed per group and cached."""

    def __init__(self, inner: Backend, group: int, how: Pooling, cache_bytes: int) -> None:
        self.inner, self.group, self.how, self.cache_bytes = inner, int(group), how, int(cache_bytes)
        self.shape = (int(inner.shape[0]) // self.group, *(int(s) for s in inner.shape[1:]))
        self.dtype = np.dtype(np.float32) if how == "mean" else np.dtype(bool)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached_bytes = 0

    def _section(self, k: int, rest: tuple[int | slice, ...]) -> np.ndarray:
        """Pooled section ``k`` restricted to ``rest`` (the in-plane index)."""
        found = self._cache.get(k)
        if found is not None:
            self._cache.move_to_end(k)
            return found[rest]
        z = slice(k * self.group, (k + 1) * self.group, 1)
        full_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        if full_bytes > self.cache_bytes:  # no room: read only the region asked
            return pool_sections(self.inner.read((z, *rest)), self.group, self.how)[0]
        whole = tuple(slice(0, int(n), 1) for n in self.shape[1:])
        pooled = pool_sections(self.inner.read((z, *whole)), self.group, self.how)[0]
        self._cache[k] = pooled
        self._cached_bytes += pooled.nbytes
        while self._cached_bytes > self.cache_bytes:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= dropped.nbytes
        return pooled[rest]

    def read(self, index: tuple[int | slice, ...]) -> np.ndarray:
        first, rest = index[0], tuple(index[1:])
        if isinstance(first, int):
            return self._section(first, rest)
        return np.stack([self._section(k, rest) for k in range(first.start, first.stop, first.step)])

    def close(self) -> None:
        self.inner.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"], state["_cached_bytes"] = OrderedDict(), 0  # a copy starts with an empty cache
        return state


class PooledVolume(Volume):
    """A :class:`~mtbio.data.volumes.Volume` of pooled sections (:func:`pool_z`); reads like any volume.

    Attributes:
        source: the thin-section volume it pools.
        group: input sections per pooled section.
        how: ``"mean"``, ``"majority"`` or ``"max"``.
        dropped: trailing input sections left out (``Z % group``).
    """

    def __init__(self, source: Volume, group: int, how: Pooling, cache_bytes: int) -> None:
        backend = _PoolBackend(source._backend, group, how, cache_bytes)
        voxel = None
        if source.voxel_size is not None:
            voxel = (float(source.voxel_size[0]) * group, *(float(v) for v in source.voxel_size[1:]))
        super().__init__(backend, source.path, key=source.key, axes=source.axes, voxel_size=voxel)
        self.source, self.group, self.how = source, int(group), how
        self.dropped = int(source.shape[0]) % int(group)

    def __repr__(self) -> str:
        return (
            f"PooledVolume({str(self.path)!r}, group={self.group}, how={self.how!r}, shape={self.shape}, "
            f"dtype={self.dtype}, dropped={self.dropped}, voxel_size={self.voxel_size})"
        )


def pool_z(
    volume: Volume,
    group: int,
    *,
    how: Pooling | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> PooledVolume:
    """A lazy view of ``volume`` with every ``group`` consecutive z sections pooled into one (module docstring).

    Args:
        volume: a ``(Z, Y, X)`` :class:`~mtbio.data.volumes.Volume` (axes ``zyx``): an image, or a bool label
            volume from :func:`mtbio.data.labels.open_label_volume`.
        group: sections per pooled section (>= 1, at most ``Z``).
        how: ``"mean"`` (images, the default for non-bool volumes), ``"majority"`` (the default for bool label
            volumes) or ``"max"`` (bool only).
        cache_bytes: memory kept for computed pooled sections (0: nothing kept, every read pools again).

    Returns:
        A :class:`PooledVolume` of shape ``(Z // group, Y, X)``, ``float32`` for images and ``bool`` for labels,
        voxel size ``(vz * group, vy, vx)`` (``None`` when ``volume`` has none).

    Raises:
        ValueError: not a ``zyx`` volume, ``group`` outside ``1..Z``, or a pooling that does not fit the dtype; the
            message names the volume's path.
    """
    if not isinstance(volume, Volume):
        raise ValueError(f"pool_z takes a mtbio Volume (open_volume / open_label_volume), got {type(volume).__name__}")
    if volume.axes != ("z", "y", "x"):
        raise ValueError(f"{volume.path}: pool_z needs a (Z, Y, X) volume, got axes {''.join(volume.axes)}")
    z = int(volume.shape[0])
    if not 1 <= int(group) <= z:
        raise ValueError(f"{volume.path}: group must be between 1 and the {z} sections of the volume, got {group}")
    label = volume.dtype == np.bool_
    chosen = how if how is not None else ("majority" if label else "mean")
    if chosen not in POOLING:
        raise ValueError(f"unknown pooling {chosen!r}; choose one of {list(POOLING)}")
    if label != (chosen != "mean"):
        kind = "a bool label" if label else f"a {volume.dtype} image"
        raise ValueError(
            f"{volume.path}: pooling {chosen!r} does not fit {kind} volume (mean: images; majority / max: labels)"
        )
    if cache_bytes < 0:
        raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
    return PooledVolume(volume, int(group), chosen, int(cache_bytes))
