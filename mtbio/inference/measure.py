"""A per-object table of an instance label image, computed block by block within a RAM budget.

:func:`measure_labels` reads the label image one block at a time (the block grid follows the array's chunks,
shrunk until a block's working set fits ``ram_budget``; see :func:`block_shape_for_budget`) and keeps only
per-object partial sums between blocks, so a volume many times larger than the budget is measured with the same
result as in memory: the integer columns exactly, the float columns to rounding.

Per block it accumulates, for every object present:

* the voxel count, the sums of the voxel coordinates and of their pairwise products (the second moments), and the
  bounding box: all in exact integer arithmetic (coordinates are taken relative to the block and shifted to the
  volume exactly), so the moments of the whole object do not depend on the block grid;
* the surface: marching cubes (``skimage.measure.marching_cubes`` at level 0.5, ``spacing`` = voxel size,
  ``mesh_surface_area``) of the object's binary mask smoothed by a Gaussian of ``surface_sigma`` voxels (cut at
  2 sigma, so it reaches 1 voxel), on the object's crop of the block read with a margin. Every marching-cubes cell
  (the cube between voxels ``i`` and ``i + 1`` along each axis, zero padding outside the volume) lies in exactly
  one block, a cell's triangles depend only on its eight corners, and the smoothed corners only on the mask within
  the margin, so the per-block areas sum to the area of the whole object's mesh. 2D label images use marching
  squares (``skimage.measure.find_contours``) the same way and report the perimeter. Without smoothing
  (``surface_sigma=0``) the staircase of a binary mask overestimates smooth surfaces by 8-12 %.

Columns (``A`` = the spatial axes, ``z, y, x`` in 3D and ``y, x`` in 2D; physical values in nm from the voxel
size, or in voxel units when it is unknown):

================================ ===========================================================================
``id``                           the object's label value
``voxel_count``                  number of voxels (pixels in 2D)
``volume_nm3`` / ``area_nm2``    ``voxel_count`` x voxel volume (3D) / pixel area (2D)
``surface_nm2`` / ``perimeter_nm`` marching-cubes surface area (3D) / marching-squares perimeter (2D)
``equivalent_diameter_nm``       diameter of the sphere (3D) / disc (2D) of the same volume / area
``bbox_A0``, ``bbox_A1``         bounding box in voxels, ``[A0, A1)`` (start inclusive, stop exclusive)
``centroid_A_nm``                centre of mass in nm (voxel ``i`` is at ``i x voxel size``, as OME-Zarr scale)
``major_axis_nm``, (3D: ``intermediate_axis_nm``), ``minor_axis_nm``
                                 full axis lengths of the ellipsoid (ellipse) with the object's physical second
                                 moments, as ``skimage.measure.regionprops``' ``axis_major_length``:
                                 ``sqrt(20 l)`` in 3D, ``4 sqrt(l)`` in 2D, ``l`` the covariance eigenvalues
``elongation``                   ``major_axis_nm / minor_axis_nm`` (1 for a single voxel, ``inf`` for a line)
``touches_border``               the bounding box reaches a face of the volume (the object may be cut off)
================================ ===========================================================================

Memory: a block is read with a margin (one plane for the marching cells, plus the smoothing's reach on each
side); its window of ``V`` voxels needs about :data:`BYTES_PER_VOXEL` x ``V`` bytes. The accumulated partial rows
(about 150 bytes per (object, block) pair) and the table grow with the number of objects, outside the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtbio.inference.instances import block_boxes

#: working-set bytes per voxel of a block's window (labels, masks, coordinates, sums, smoothed crops): the
#: tracemalloc peak of one block was 47-62 B/voxel for one object filling it and 114-148 B/voxel for a labelled
#: random half-filled block; a block where every voxel is its own object peaks at ~510 B/voxel (over the budget)
BYTES_PER_VOXEL = 160
#: Gaussian smoothing (in voxels, per axis) of each object's mask before marching cubes
DEFAULT_SURFACE_SIGMA = 0.7
#: the smoothing kernel is cut at this many sigma (scipy ``truncate``): reach ``int(2 * 0.7 + 0.5) = 1`` voxel
SURFACE_TRUNCATE = 2.0
#: default RAM budget of :func:`measure_labels` in bytes
DEFAULT_RAM_BUDGET = 512 * 2**20

ProgressFn = Callable[[int, int], None]


def block_shape_for_budget(
    shape: Sequence[int],
    ram_budget: int,
    *,
    chunks: Sequence[int] | None = None,
    margin: int = 0,
    bytes_per_voxel: int = BYTES_PER_VOXEL,
) -> tuple[int, ...]:
    """The block shape of a measurement pass: the array's chunks (or the whole shape), its largest axis halved
    until the block widened by ``margin`` voxels per axis fits: ``prod(block + margin) * bytes_per_voxel <=
    ram_budget``.

    Raises:
        ValueError: the budget does not hold even a one-voxel block with its margin.
    """
    shape = tuple(int(s) for s in shape)
    smallest = (1 + margin) ** len(shape) * bytes_per_voxel
    if int(ram_budget) < smallest:
        raise ValueError(
            f"ram_budget {ram_budget} bytes is below one voxel's working set with its {margin}-voxel margin "
            f"({smallest} bytes)"
        )
    block = [min(int(c), s) for c, s in zip(chunks, shape)] if chunks is not None else list(shape)
    block = [max(b, 1) for b in block]
    while math.prod(b + margin for b in block) * bytes_per_voxel > int(ram_budget):
        axis = int(np.argmax(block))
        block[axis] = (block[axis] + 1) // 2
    return tuple(block)


@dataclass
class ObjectTable:
    """The per-object table: one entry per column, all of length ``len(table)``, rows sorted by ``id``.

    Attributes:
        columns: column name -> 1D numpy array (int64, float64 or bool).
        ndim: 2 or 3 (which column set, see the module docstring).
        voxel_size: nm per spatial axis used for the physical columns (1.0 each when unknown).
    """

    columns: dict[str, np.ndarray]
    ndim: int
    voxel_size: tuple[float, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["id"])

    @property
    def size_column(self) -> str:
        """``volume_nm3`` (3D) or ``area_nm2`` (2D)."""
        return "volume_nm3" if self.ndim == 3 else "area_nm2"

    def rows(self) -> list[dict[str, Any]]:
        """The table as a list of dicts of Python scalars."""
        names = list(self.columns)
        return [{k: self.columns[k][i].item() for k in names} for i in range(len(self))]

    def summary(self) -> dict[str, Any]:
        """Number of objects, total and median size (volume in 3D, area in 2D)."""
        sizes = self.columns[self.size_column]
        return {
            "objects": len(self),
            f"total_{self.size_column}": float(sizes.sum()) if len(self) else 0.0,
            f"median_{self.size_column}": float(np.median(sizes)) if len(self) else 0.0,
            "voxel_size": list(self.voxel_size),
        }

    def write(self, path: str | Path) -> Path:
        """Write the table as CSV (``.csv``) or Parquet (``.parquet``, needs ``pyarrow``: ``mtbio[measure]``).

        Raises:
            ValueError: another suffix.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            import csv

            with open(path, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(list(self.columns))
                for row in self.rows():
                    writer.writerow([repr(v) if isinstance(v, float) else v for v in row.values()])
        elif suffix == ".parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ModuleNotFoundError as err:
                raise ModuleNotFoundError(
                    f"writing {path} needs pyarrow: pip install 'mtbio[measure]' (or write a .csv)"
                ) from err
            pq.write_table(pa.table(dict(self.columns)), path)
        else:
            raise ValueError(f"{path}: the table is written as .csv or .parquet, got suffix {path.suffix!r}")
        return path


def _axes(ndim: int) -> str:
    return "zyx"[-ndim:]


def _check_labels(labels: Any) -> Any:
    if not hasattr(labels, "shape") or not hasattr(labels, "__getitem__"):
        labels = np.asarray(labels)
    if len(labels.shape) not in (2, 3):
        raise ValueError(f"labels must be 2D (Y, X) or 3D (Z, Y, X), got shape {tuple(labels.shape)}")
    kind = np.dtype(labels.dtype).kind
    if kind not in "uib":
        raise ValueError(f"labels must hold integer ids (or bool), got dtype {labels.dtype}")
    return labels


def _halo(sigma: float) -> int:
    """Voxels the Gaussian of ``sigma`` (truncated at :data:`SURFACE_TRUNCATE` sigma) reaches, as scipy's radius."""
    return int(SURFACE_TRUNCATE * sigma + 0.5) if sigma > 0 else 0


def _surface(values: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Marching-cubes area (3D) or marching-squares length (2D) of the 0.5 level of a crop, in nm."""
    from skimage import measure

    if min(values.shape) < 2 or not values.min() < 0.5 < values.max():
        return 0.0
    if values.ndim == 3:
        verts, faces, _, _ = measure.marching_cubes(values, 0.5, spacing=spacing)
        return float(measure.mesh_surface_area(verts, faces))
    total = 0.0
    for contour in measure.find_contours(values, 0.5):
        steps = np.diff(contour * np.asarray(spacing), axis=0)
        total += float(np.sqrt((steps**2).sum(axis=1)).sum())
    return total


@dataclass
class _Partials:
    """Per-(object, block) partial rows, reduced by id at the end."""

    ids: list[np.ndarray] = field(default_factory=list)
    count: list[np.ndarray] = field(default_factory=list)
    s1: list[np.ndarray] = field(default_factory=list)  # (m, nd)
    s2: list[np.ndarray] = field(default_factory=list)  # (m, nd, nd)
    lo: list[np.ndarray] = field(default_factory=list)
    hi: list[np.ndarray] = field(default_factory=list)
    surface_ids: list[np.ndarray] = field(default_factory=list)
    surface: list[np.ndarray] = field(default_factory=list)


def _block_moments(core: np.ndarray, origin: np.ndarray, parts: _Partials, acc: type) -> None:
    """Counts, exact first / second coordinate moments and bounding boxes of the objects in one block."""
    from scipy import ndimage

    fg = core != 0
    if not fg.any():
        return
    values = core[fg]
    if values.dtype.kind == "i" and values.min() < 0:
        raise ValueError(f"labels must be >= 0, found {int(values.min())}")
    ids, inverse = np.unique(values, return_inverse=True)
    inverse = inverse.ravel()
    m, nd = len(ids), core.ndim
    n = np.bincount(inverse, minlength=m).astype(np.int64)
    coords = np.nonzero(fg)  # block-local: small integers, so float64 bincount sums are exact
    s1 = np.stack([np.rint(np.bincount(inverse, weights=c, minlength=m)) for c in coords], axis=1).astype(np.int64)
    s2 = np.empty((m, nd, nd), dtype=np.int64)
    for a in range(nd):
        for b in range(a, nd):
            w = coords[a].astype(np.float64) * coords[b]
            s2[:, a, b] = s2[:, b, a] = np.rint(np.bincount(inverse, weights=w, minlength=m))
    # shift to volume coordinates exactly: sum(o + u) = n o + sum u; sum (o_a + u)(o_b + v) = ...
    o = origin.astype(acc)
    n_a, s1_a, s2_a = n.astype(acc), s1.astype(acc), s2.astype(acc)
    s2_a = s2_a + o[:, None] * s1_a[:, None, :] + o[None, :] * s1_a[:, :, None] + n_a[:, None, None] * np.outer(o, o)
    s1_a = s1_a + n_a[:, None] * o[None, :]
    compact = np.zeros(core.shape, dtype=np.int32)
    compact[fg] = inverse + 1
    boxes = ndimage.find_objects(compact)
    lo = np.array([[s.start for s in box] for box in boxes], dtype=np.int64) + origin
    hi = np.array([[s.stop for s in box] for box in boxes], dtype=np.int64) + origin
    parts.ids.append(ids.astype(np.int64))
    parts.count.append(n)
    parts.s1.append(s1_a)
    parts.s2.append(s2_a)
    parts.lo.append(lo)
    parts.hi.append(hi)


def _block_surfaces(
    window: np.ndarray, cells: tuple[slice, ...], spacing: tuple[float, ...], sigma: float, parts: _Partials
) -> None:
    """Per-object surface of the marching cells of one block.

    ``window`` holds the raw labels the block's cells depend on (zero outside the volume); ``cells`` are the
    voxels (in window coordinates) whose marching cells belong to the block: the block plus one plane below it
    (and the zero plane after the volume for the last block). Each object's binary mask is smoothed (Gaussian
    of ``sigma`` voxels) on a crop of its bounding box plus the filter's reach, so the smoothed values on
    ``cells`` equal those of the whole volume.
    """
    from scipy import ndimage

    fg = window != 0
    if not fg.any():
        return
    ids, inverse = np.unique(window[fg], return_inverse=True)
    compact = np.zeros(window.shape, dtype=np.int32)
    compact[fg] = inverse.ravel() + 1
    reach = _halo(sigma) + 1
    areas = np.zeros(len(ids), dtype=np.float64)
    for k, box in enumerate(ndimage.find_objects(compact)):
        crop = tuple(slice(max(s.start - reach, 0), min(s.stop + reach, n)) for s, n in zip(box, window.shape))
        values = (compact[crop] == k + 1).astype(np.float64)
        if sigma > 0:
            values = ndimage.gaussian_filter(values, sigma, mode="constant", truncate=SURFACE_TRUNCATE)
        inner = tuple(
            slice(max(c.start, w.start) - c.start, max(min(c.stop, w.stop) - c.start, 0)) for c, w in zip(crop, cells)
        )
        areas[k] = _surface(values[inner], spacing)
    parts.surface_ids.append(ids.astype(np.int64))
    parts.surface.append(areas)


def _read_window(
    labels: Any, box: tuple[slice, ...], shape: tuple[int, ...], halo: int
) -> tuple[np.ndarray, tuple[slice, ...], tuple[slice, ...]]:
    """The raw labels a block needs, zero-padded outside the volume: its marching-cell voxels (the block plus one
    plane below it; the last block also the zero plane after the volume) widened by ``halo`` on every side.

    Returns:
        (window, core = the block's own voxels, cells = the marching-cell voxels), slices in window coordinates.
    """
    lo = [s.start - 1 - halo for s in box]
    hi = [(s.stop + 1 if s.stop == n else s.stop) + halo for s, n in zip(box, shape)]
    read = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(lo, hi, shape))
    data = np.asarray(labels[read])
    pad = [(r.start - a, b - r.stop) for r, a, b in zip(read, lo, hi)]
    if any(p != (0, 0) for p in pad):
        data = np.pad(data, pad)
    core = tuple(slice(1 + halo, 1 + halo + s.stop - s.start) for s in box)
    cells = tuple(slice(halo, n - halo) for n in data.shape)
    return data, core, cells


def _reduce(ids: np.ndarray, order: np.ndarray, values: np.ndarray, ufunc: np.ufunc) -> np.ndarray:
    starts = np.flatnonzero(np.r_[True, ids[order][1:] != ids[order][:-1]])
    return ufunc.reduceat(values[order], starts, axis=0)


def _finish(parts: _Partials, shape: tuple[int, ...], spacing: tuple[float, ...]) -> dict[str, np.ndarray]:
    nd = len(shape)
    axes = _axes(nd)
    size_col, surf_col = ("volume_nm3", "surface_nm2") if nd == 3 else ("area_nm2", "perimeter_nm")
    if parts.ids:
        ids = np.concatenate(parts.ids)
        order = np.argsort(ids, kind="stable")
        uid = np.unique(ids)
        n = _reduce(ids, order, np.concatenate(parts.count), np.add)
        s1 = _reduce(ids, order, np.concatenate(parts.s1), np.add)
        s2 = _reduce(ids, order, np.concatenate(parts.s2), np.add)
        lo = _reduce(ids, order, np.concatenate(parts.lo), np.minimum)
        hi = _reduce(ids, order, np.concatenate(parts.hi), np.maximum)
        sids = np.concatenate(parts.surface_ids)
        sorder = np.argsort(sids, kind="stable")
        surface = _reduce(sids, sorder, np.concatenate(parts.surface), np.add)
        if not np.array_equal(np.unique(sids), uid):  # pragma: no cover - every voxel lies in one block's core
            raise RuntimeError("surface and moment passes saw different objects")
    else:
        uid = np.zeros(0, dtype=np.int64)
        n = np.zeros(0, dtype=np.int64)
        s1, s2 = np.zeros((0, nd), dtype=np.int64), np.zeros((0, nd, nd), dtype=np.int64)
        lo = hi = np.zeros((0, nd), dtype=np.int64)
        surface = np.zeros(0)
    # central second moments in exact integers (Python ints), then one rounding: cov = (n S2 - S1 S1^T) / n^2
    n_obj = n.astype(object)
    s1o, s2o = s1.astype(object), s2.astype(object)
    central = n_obj[:, None, None] * s2o - s1o[:, :, None] * s1o[:, None, :]
    vs = np.asarray(spacing, dtype=np.float64)
    cov = (central / (n_obj * n_obj)[:, None, None]).astype(np.float64) * np.outer(vs, vs)
    eig = np.clip(np.linalg.eigvalsh(cov) if len(cov) else np.zeros((0, nd)), 0.0, None)[:, ::-1]  # descending
    lengths = np.sqrt(20.0 * eig) if nd == 3 else 4.0 * np.sqrt(eig)
    count = n.astype(np.int64)
    size = count * float(np.prod(vs))
    diameter = np.cbrt(6.0 * size / np.pi) if nd == 3 else np.sqrt(4.0 * size / np.pi)
    mean = (s1o / n_obj[:, None]).astype(np.float64) if len(count) else np.zeros((0, nd))
    major, minor = lengths[:, 0], lengths[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        elongation = np.where(major == 0, 1.0, major / minor)
    cols: dict[str, np.ndarray] = {"id": uid.astype(np.int64), "voxel_count": count, size_col: size}
    cols[surf_col] = np.asarray(surface, dtype=np.float64)
    cols["equivalent_diameter_nm"] = diameter
    for k, a in enumerate(axes):
        cols[f"bbox_{a}0"] = lo[:, k].astype(np.int64)
    for k, a in enumerate(axes):
        cols[f"bbox_{a}1"] = hi[:, k].astype(np.int64)
    for k, a in enumerate(axes):
        cols[f"centroid_{a}_nm"] = mean[:, k] * vs[k]
    cols["major_axis_nm"] = major
    if nd == 3:
        cols["intermediate_axis_nm"] = lengths[:, 1]
    cols["minor_axis_nm"] = minor
    cols["elongation"] = elongation
    cols["touches_border"] = np.any((lo == 0) | (hi == np.asarray(shape)), axis=1)
    return cols


def measure_labels(
    labels: Any,
    voxel_size: Sequence[float] | None = None,
    *,
    ram_budget: int = DEFAULT_RAM_BUDGET,
    block_shape: Sequence[int] | None = None,
    surface_sigma: float = DEFAULT_SURFACE_SIGMA,
    progress: ProgressFn | None = None,
) -> ObjectTable:
    """Measure every object of an instance label image, block by block.

    Args:
        labels: integer ids, shape (Y, X) or (Z, Y, X), 0 = background; any sliceable array (numpy, zarr, dask).
        voxel_size: nm per spatial axis (anisotropic allowed); ``None`` = 1 (the physical columns in voxels).
        ram_budget: bytes a block's working set may use (see :data:`BYTES_PER_VOXEL`); sets the block grid.
        block_shape: explicit block grid instead of the one derived from ``ram_budget``.
        surface_sigma: Gaussian smoothing of each object's mask before marching cubes, in voxels per axis.
            0.7 (the default) brings the surface of digitised spheres and ellipsoids of radius >= 7 voxels within
            3 % of the analytic value (the binary mask, ``0``, overestimates it by 8-12 %), but shrinks small
            objects: -5 % at radius 5, -30 % at radius 2, and 0 for a single voxel.
        progress: called with (blocks done, total blocks).

    Returns:
        the :class:`ObjectTable`, rows sorted by id.

    Raises:
        ValueError: labels not 2D / 3D or not integer, negative ids, a voxel size of the wrong length or not
            positive, a budget below one voxel.
    """
    labels = _check_labels(labels)
    shape = tuple(int(s) for s in labels.shape)
    nd = len(shape)
    spacing = (1.0,) * nd if voxel_size is None else tuple(float(v) for v in voxel_size)
    if len(spacing) != nd or not all(v > 0 and math.isfinite(v) for v in spacing):
        raise ValueError(f"voxel_size must have {nd} positive entries for labels of shape {shape}, got {voxel_size}")
    if not (surface_sigma >= 0 and math.isfinite(surface_sigma)):
        raise ValueError(f"surface_sigma must be >= 0 voxels, got {surface_sigma}")
    halo = _halo(float(surface_sigma))
    if block_shape is None:
        chunks = getattr(labels, "chunks", None)
        if not (isinstance(chunks, tuple) and len(chunks) == nd and all(isinstance(c, int) for c in chunks)):
            chunks = None
        block_shape = block_shape_for_budget(shape, ram_budget, chunks=chunks, margin=2 * halo + 2)
    block_shape = tuple(int(b) for b in block_shape)
    if len(block_shape) != nd or min(block_shape) < 1:
        raise ValueError(f"block_shape must have {nd} positive entries, got {block_shape}")
    # exact int64 moments while sum(coordinate^2) per object cannot overflow; Python ints beyond that
    acc: type = np.int64 if math.prod(shape) * max(shape) ** 2 < 2**62 else object
    parts = _Partials()
    boxes = block_boxes(shape, block_shape)
    for done, box in enumerate(boxes, start=1):
        window, core, cells = _read_window(labels, box, shape, halo)
        _block_moments(window[core], np.array([s.start for s in box], dtype=np.int64), parts, acc)
        _block_surfaces(window, cells, spacing, float(surface_sigma), parts)
        if progress is not None:
            progress(done, len(boxes))
    columns = _finish(parts, shape, spacing)
    meta = {
        "shape": list(shape),
        "block_shape": list(block_shape),
        "blocks": len(boxes),
        "surface_sigma": float(surface_sigma),
    }
    return ObjectTable(columns=columns, ndim=nd, voxel_size=spacing, meta=meta)
