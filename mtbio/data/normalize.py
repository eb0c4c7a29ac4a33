"""Intensity normalisation: the one z-score and the one rule for which statistics it uses.

mtbio's rule (training, validation and inference alike): a 2D network sees each section z-scored with that
section's mean and std (:attr:`Normalization.ZSCORE_SECTION`); a 3D network sees the whole volume z-scored with
the volume's (:attr:`Normalization.ZSCORE`). :func:`default_normalization` states it; :func:`zscore` applies it;
:func:`image_stats` (per section or per volume, training's statistics) and :func:`volume_stats` (one pass over a
volume of any size) compute the statistics.

The name ``"zscore_volume"`` (written into weights records by earlier versions) is read as ``"zscore"``.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import numpy as np

__all__ = [
    "Normalization",
    "default_normalization",
    "image_stats",
    "parse_normalization",
    "resolve_normalization",
    "volume_stats",
    "zscore",
    "zscore_image",
]


class Normalization(enum.StrEnum):
    """Intensity normalisation of an input (the ``normalize`` of :class:`mtbio.inference.settings.InferenceSettings`).

    ``AUTO`` is not stored anywhere: it is resolved to :func:`default_normalization` of the network's dims (or to
    what the weights record says) before a run.
    """

    ZSCORE = "zscore"  # per volume: (x - mean) / std over the whole input, computed out of core
    #: per section along axis 0: the rule for 2D networks
    ZSCORE_SECTION = "zscore_section"
    #: the weights' own rule when they record one, else :func:`default_normalization`
    AUTO = "auto"


#: earlier spellings still read (weights records written before the names were unified)
_ALIASES = {"zscore_volume": Normalization.ZSCORE}


def default_normalization(spatial_dims: int) -> Normalization:
    """mtbio's rule: per section for 2D networks, per volume for 3D networks.

    Raises:
        ValueError: ``spatial_dims`` other than 2 or 3.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return Normalization.ZSCORE_SECTION if spatial_dims == 2 else Normalization.ZSCORE


def parse_normalization(value: Normalization | str | None) -> Normalization | None:
    """``value`` as a :class:`Normalization`; ``None`` / ``"none"`` is ``None`` (the input as it is), and the old
    name ``"zscore_volume"`` is ``ZSCORE``.

    Raises:
        ValueError: any other name, listing the allowed ones.
    """
    if value is None:
        return None
    name = str(getattr(value, "value", value)).lower()
    if name in ("none", "null"):
        return None
    if name in _ALIASES:
        return _ALIASES[name]
    try:
        return Normalization(name)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in Normalization)
        raise ValueError(f"normalize must be None, (mean, std) or one of {allowed}, got {value!r}") from None


def resolve_normalization(
    value: Normalization | str | None, spatial_dims: int, record: str | None = None
) -> Normalization | None:
    """The normalisation a run uses. Anything but ``AUTO`` is :func:`parse_normalization`'s; ``AUTO`` becomes what
    ``record`` states (the weights record's or the bundle's ``normalization``; ``"none"``: the input as it is) and,
    when it states nothing (``None`` or ``"auto"``), :func:`default_normalization` of the network's ``spatial_dims``."""
    parsed = parse_normalization(value)
    if parsed is not Normalization.AUTO:
        return parsed
    if record is not None:
        recorded = parse_normalization(record)
        if recorded is not Normalization.AUTO:
            return recorded
    return default_normalization(spatial_dims)


def zscore(x: Any, mean: Any, std: Any, *, precision: Any = np.float32) -> np.ndarray:
    """``(x - mean) / std`` as float32.

    Args:
        x: voxels, any shape (read as float32).
        mean: a scalar, or an array broadcasting against ``x`` (e.g. ``(Z, 1, 1)`` per section).
        std: as ``mean`` (> 0).
        precision: dtype of the statistics and of the arithmetic: float32 (inference) or float64 (the training
            sampler's, kept so that its crops stay bit for bit what they were).

    Returns:
        float32 array of ``x``'s shape.
    """
    x = np.asarray(x, dtype=np.float32)
    out = (x - np.asarray(mean, dtype=precision)) / np.asarray(std, dtype=precision)
    return out.astype(np.float32, copy=False)


def image_stats(volume: Any, spatial_dims: int, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Per-image intensity mean and std of a (Z, Y, X) volume: training's statistics, read section by section.

    Args:
        volume: array-like (Z, Y, X) with numpy slicing (a numpy array or a lazy ``Volume``).
        spatial_dims: 2 (one mean/std per section) or 3 (one for the whole volume).
        eps: floor of the std.

    Returns:
        ``(mean, std)``, each float64 of shape (Z,) for 2D or (1,) for 3D.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    z = int(volume.shape[0])
    sums = np.zeros(z)
    sq = np.zeros(z)
    counts = np.zeros(z)
    for k in range(z):
        sec = np.asarray(volume[k], dtype=np.float64)
        sums[k] = sec.sum()
        sq[k] = np.square(sec).sum()
        counts[k] = sec.size
    if spatial_dims == 3:
        sums, sq, counts = sums.sum(keepdims=True), sq.sum(keepdims=True), counts.sum(keepdims=True)
    mean = sums / counts
    std = np.sqrt(np.maximum(sq / counts - mean**2, 0.0))
    return mean, np.maximum(std, eps)


def volume_stats(
    array: Any, *, max_slab_voxels: int = 1 << 24, check_finite: bool = False, source: str | None = None
) -> tuple[float, float]:
    """Mean and standard deviation of a whole volume, read slab by slab along axis 0 (float64 sums).

    Args:
        array: ``(*spatial)`` source (numpy, zarr, h5py, dask or a lazy volume).
        max_slab_voxels: voxels read at once.
        check_finite: raise :class:`mtbio.inference.finite.NonFiniteInputError` naming the first section holding
            NaN / Inf voxels (a slab whose sum is not finite is searched; the clean case costs nothing).
        source: the input's path for that error (``None``: an in-memory array).

    Returns:
        ``(mean, std)``; ``std`` is 1 for a constant volume.
    """
    shape = tuple(int(s) for s in array.shape)
    per_row = max(1, math.prod(shape[1:]))
    step = max(1, max_slab_voxels // per_row)
    total, total_sq, count = 0.0, 0.0, 0
    for z in range(0, shape[0], step):
        data = np.asarray(array[z : z + step], dtype=np.float64)
        slab_sum = float(data.sum())
        if check_finite and not math.isfinite(slab_sum):
            from mtbio.inference.finite import nonfinite_error

            err = nonfinite_error(data, (z, *([0] * (data.ndim - 1))), source)
            if err is not None:
                raise err
        total += slab_sum
        total_sq += float(np.square(data).sum())
        count += data.size
    mean = total / count
    var = max(total_sq / count - mean * mean, 0.0)
    std = math.sqrt(var)
    return mean, (std if std > 0 else 1.0)


def zscore_image(x: Any) -> np.ndarray:
    """``x`` z-scored with its own mean and std (:func:`volume_stats`) as float32; a constant image becomes 0."""
    x = np.asarray(x)
    return zscore(x, *volume_stats(x))
