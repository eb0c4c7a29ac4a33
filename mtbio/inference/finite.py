"""Refuse NaN / Inf input voxels where the prediction reads them anyway.

One NaN or Inf voxel turns the z-score statistics of its section (per-section normalisation) or of the whole volume
into NaN, and so every window that sees it; the stored prediction would be silently corrupted. The checks here run
on data already in memory: the slabs of the normalisation statistics pass when there is one, otherwise the
streaming reader's boxes (one vectorised ``np.isfinite(...).all()`` per box, only for float inputs: integer and
bool volumes cannot hold NaN / Inf). Only after a box fails is it searched for the first bad section.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mtbio.data.errors import VolumeError


class NonFiniteInputError(VolumeError):
    """An input volume holds NaN / Inf voxels (``path`` is ``None`` for an in-memory array).

    Attributes:
        section: the first bad index along axis 0 (a section of a 3D volume, a row of a 2D image).
        count: NaN / Inf voxels in that section (within the box that was read).
    """

    def __init__(self, path: str | None, problem: str, section: int = -1, count: int = 0) -> None:
        super().__init__(path, problem)
        self.section = int(section)
        self.count = int(count)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable: raised on Dask workers, re-raised on the client
        return (type(self), (self.path, self.problem, self.section, self.count))


def can_hold_nonfinite(dtype: Any) -> bool:
    """True for float / complex dtypes (the only ones that can hold NaN / Inf)."""
    return bool(np.issubdtype(np.dtype(dtype), np.inexact))


def nonfinite_error(
    data: np.ndarray, origin: Sequence[int], source: str | None, shape: Sequence[int] | None = None
) -> NonFiniteInputError | None:
    """The error describing the first bad section of ``data``, or ``None`` when every voxel is finite.

    Args:
        data: a box of the volume, ``(z, y, x)`` or ``(y, x)``, already in memory.
        origin: the box's first voxel in volume coordinates.
        source: the input's path (``None``: an in-memory array).
        shape: the volume's shape; when the box covers less than a whole section the message names the region.
    """
    bad = ~np.isfinite(data)
    if data.ndim == 0 or not bad.any():
        return None
    per_section = bad.reshape(bad.shape[0], -1).sum(axis=1)
    first = int(np.argmax(per_section > 0))
    section_bad = bad[first]
    values = np.asarray(data[first])[section_bad]
    n_nan, n_pos = int(np.isnan(values).sum()), int(np.isposinf(values).sum())
    n_neg = int(values.size) - n_nan - n_pos
    kinds = ", ".join(f"{name}: {n}" for name, n in (("NaN", n_nan), ("+Inf", n_pos), ("-Inf", n_neg)) if n)
    names = ("y", "x")[-section_bad.ndim :] if section_bad.ndim else ()
    at = np.unravel_index(int(np.argmax(section_bad)), section_bad.shape) if section_bad.ndim else ()
    where = ", ".join(f"{n}={int(o) + int(i)}" for n, o, i in zip(names, origin[1:], at))
    index = int(origin[0]) + first
    label = "section" if data.ndim == 3 else "row"
    region = ""
    if shape is not None and any(
        int(o) > 0 or int(o) + n < int(s) for o, n, s in zip(origin[1:], data.shape[1:], shape[1:])
    ):
        region = " in " + ", ".join(f"{n} {int(o)}:{int(o) + e}" for n, o, e in zip(names, origin[1:], data.shape[1:]))
    problem = (
        f"{label} {index} holds {int(per_section[first])} NaN / Inf values{region} ({kinds}; first at {where}); "
        "prediction needs finite intensities: replace or mask them (e.g. with the section's mean) and rerun"
    )
    if source is None:
        problem = f"input array: {problem}"
    return NonFiniteInputError(source, problem, index, int(per_section[first]))


@dataclass(frozen=True)
class FiniteCheck:
    """Called by the input reader on every box it reads (before normalisation); raises on NaN / Inf.

    Attributes:
        source: the input's path (``None``: an in-memory array), named by the error.
        shape: the volume's shape.
    """

    source: str | None
    shape: tuple[int, ...]

    def __call__(self, data: np.ndarray, origin: Sequence[int]) -> None:
        if np.isfinite(data).all():  # the clean case: one vectorised pass over data already in memory
            return
        err = nonfinite_error(data, origin, self.source, self.shape)
        if err is not None:
            raise err


def check_section_stats(array: Any, mean: np.ndarray, std: np.ndarray, source: str | None) -> None:
    """Raise :class:`NonFiniteInputError` for the first section whose statistics are not finite.

    A NaN / Inf voxel makes its section's mean (or std) non-finite; only such sections are read again (error path
    only).

    Args:
        array: the ``(Z, Y, X)`` volume the per-section statistics were computed from.
        mean: per-section means, shape ``(Z,)``.
        std: per-section standard deviations, shape ``(Z,)``.
        source: the input's path or ``None``.
    """
    bad = ~(np.isfinite(np.asarray(mean, dtype=np.float64)) & np.isfinite(np.asarray(std, dtype=np.float64)))
    for z in np.flatnonzero(bad):
        section = np.asarray(array[int(z) : int(z) + 1], dtype=np.float32)
        err = nonfinite_error(section, (int(z), *([0] * (section.ndim - 1))), source)
        if err is not None:
            raise err
