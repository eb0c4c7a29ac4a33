"""Geometry in physical units (nm): the sampling grid, smooth curves, tubes, ellipsoids, spheres, cells.

Every shape is evaluated at the voxel centres of a :class:`Grid`, inside the shape's own bounding box only,
so the cost follows the shape's size, not the volume's. Distances are in nanometres throughout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = [
    "Grid",
    "smooth_curve",
    "random_rotation",
    "smooth_noise",
    "TubeFields",
    "paint_tube",
    "paint_ellipsoid",
    "sphere_distance",
    "ellipsoid_level",
    "CellTessellation",
]


@dataclass(frozen=True)
class Grid:
    """A regular sampling grid: voxel ``i`` along an axis has its centre at ``(i + 0.5) * spacing``.

    Attributes:
        shape: (Z, Y, X) number of voxels.
        spacing: (z, y, x) voxel size in nm.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"Grid shape must be three positive sizes, got {self.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"Grid spacing must be three positive sizes, got {self.spacing}")

    @property
    def extent(self) -> np.ndarray:
        """Physical size (z, y, x) in nm, shape (3,)."""
        return np.asarray(self.shape, float) * np.asarray(self.spacing, float)

    @property
    def volume_um3(self) -> float:
        """Physical volume in cubic micrometres."""
        return float(np.prod(self.extent)) * 1e-9

    def box(self, low: np.ndarray, high: np.ndarray) -> tuple[slice, slice, slice] | None:
        """The voxel slices whose centres may lie in the physical box [low, high] (nm), or None if empty."""
        sp = np.asarray(self.spacing)
        start = np.maximum(np.floor(np.asarray(low) / sp - 0.5).astype(int), 0)
        stop = np.minimum(np.ceil(np.asarray(high) / sp + 0.5).astype(int), self.shape)
        if np.any(stop <= start):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))  # type: ignore[return-value]

    def coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable voxel-centre coordinates (nm) of a box: shapes (z, 1, 1), (1, y, 1), (1, 1, x)."""
        out = []
        for axis, (sl, sp) in enumerate(zip(box, self.spacing)):
            c = (np.arange(sl.start, sl.stop, dtype=np.float32) + 0.5) * np.float32(sp)
            shape = [1, 1, 1]
            shape[axis] = c.size
            out.append(c.reshape(shape))
        return out[0], out[1], out[2]


def smooth_curve(
    rng: np.random.Generator, centre: np.ndarray, length: float, step: float, persistence: float
) -> np.ndarray:
    """A random smooth 3D curve (persistent random walk) centred on ``centre``.

    Args:
        rng: random generator.
        centre: (3,) midpoint of the curve in nm.
        length: arc length in nm (> 0).
        step: distance between consecutive points in nm (> 0).
        persistence: persistence length in nm; larger = straighter.

    Returns:
        (N, 3) points in nm, N >= 2.
    """
    if length <= 0 or step <= 0 or persistence <= 0:
        raise ValueError(f"length, step and persistence must be > 0, got {length}, {step}, {persistence}")
    n = max(2, int(np.ceil(length / step)) + 1)
    step = length / (n - 1)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    kicks = rng.standard_normal((n - 1, 3)) * np.sqrt(step / persistence)
    dirs = np.empty((n - 1, 3))
    for i in range(n - 1):  # n is tens of points: a tiny loop over curve points, not voxels
        direction = direction + kicks[i]
        direction /= np.linalg.norm(direction)
        dirs[i] = direction
    points = np.vstack([np.zeros(3), np.cumsum(dirs * step, axis=0)])
    return points - points.mean(axis=0) + np.asarray(centre, float)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma_vox: Sequence[float]) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation, (Z, Y, X) float32.

    Wide kernels are computed on a coarser grid and upsampled linearly, so the cost stays low.

    Args:
        rng: random generator.
        shape: output shape (Z, Y, X).
        sigma_vox: Gaussian sigma per axis in voxels (>= 0).
    """
    sigma = np.asarray(sigma_vox, float)
    if sigma.shape != (len(shape),) or np.any(sigma < 0):
        raise ValueError(f"sigma_vox must give one non-negative sigma per axis of {tuple(shape)}, got {sigma_vox}")
    factor = np.maximum(1, np.floor(sigma / 2.0)).astype(int)
    coarse = [int(np.ceil(s / f)) + 1 for s, f in zip(shape, factor)]
    field = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), sigma / factor, mode="wrap")
    if np.any(factor > 1):
        field = ndimage.zoom(field, factor, order=1, grid_mode=False, mode="nearest")
    field = field[tuple(slice(0, s) for s in shape)]
    std = float(field.std())
    return (field - field.mean()) / (std if std > 0 else 1.0)


@dataclass
class TubeFields:
    """Running fields of the mitochondria painted so far, on the render grid (Z, Y, X) float32.

    Attributes:
        depth: signed depth below the nearest mitochondrion surface in nm (> 0 inside); -inf far outside.
        phase: cristae stripe phase (radians) at the deepest mitochondrion.
    """

    depth: np.ndarray
    phase: np.ndarray

    @classmethod
    def empty(cls, shape: tuple[int, int, int]) -> TubeFields:
        return cls(np.full(shape, -1e9, np.float32), np.zeros(shape, np.float32))

    def merge(self, box: tuple[slice, slice, slice], depth: np.ndarray, phase: np.ndarray) -> int:
        """Union a shape's depth/phase into the fields; returns how many voxels became inside."""
        current = self.depth[box]
        better = depth > current
        newly = int(np.count_nonzero(better & (depth > 0) & (current <= 0)))
        current[better] = depth[better]
        self.phase[box][better] = phase[better]
        return newly


def paint_tube(
    grid: Grid, fields: TubeFields, points: np.ndarray, radii: np.ndarray, period: float, phase0: float
) -> int:
    """Paint a tube of varying radius along a polyline (a capsule chain) into ``fields``.

    Args:
        grid: render grid.
        fields: running mitochondria fields, updated in place.
        points: (N, 3) centre-line in nm.
        radii: (N,) radius at each point in nm.
        period: cristae period in nm (stripes run across the tube, phase follows arc length).
        phase0: phase offset in radians.

    Returns:
        voxels newly inside any mitochondrion.
    """
    points = np.asarray(points, np.float32)
    radii = np.asarray(radii, np.float32)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) < 2 or radii.shape != (len(points),):
        raise ValueError(f"need (N>=2, 3) points and (N,) radii, got {points.shape} and {radii.shape}")
    seg = np.diff(points, axis=0)
    seg_len = np.linalg.norm(seg, axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg_len)])
    newly = 0
    margin = 2.0 * max(grid.spacing)
    for i in range(len(seg)):  # tens of segments; each is vectorised over its own bounding box
        a, b = points[i], points[i + 1]
        rmax = float(max(radii[i], radii[i + 1])) + margin
        box = grid.box(np.minimum(a, b) - rmax, np.maximum(a, b) + rmax)
        if box is None:
            continue
        z, y, x = grid.coords(box)
        dz, dy, dx = z - a[0], y - a[1], x - a[2]
        length2 = max(float(seg_len[i]) ** 2, 1e-6)
        t = np.clip((dz * seg[i, 0] + dy * seg[i, 1] + dx * seg[i, 2]) / length2, 0.0, 1.0)
        dist = np.sqrt((dz - t * seg[i, 0]) ** 2 + (dy - t * seg[i, 1]) ** 2 + (dx - t * seg[i, 2]) ** 2)
        radius = radii[i] + t * (radii[i + 1] - radii[i])
        phase = (arc[i] + t * seg_len[i]) * np.float32(2 * np.pi / period) + np.float32(phase0)
        newly += fields.merge(box, (radius - dist).astype(np.float32), phase.astype(np.float32))
    return newly


def ellipsoid_level(
    grid: Grid, centre: np.ndarray, rotation: np.ndarray, axes: np.ndarray
) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray] | None:
    """Approximate signed depth (nm, > 0 inside) of an ellipsoid and the long-axis coordinate.

    Args:
        grid: render grid.
        centre: (3,) centre in nm.
        rotation: (3, 3) rotation; column j is the direction of semi-axis j.
        axes: (3,) semi-axes in nm; axis 0 is taken as the long axis.

    Returns:
        (box, depth, u0) with depth and u0 (nm along axis 0) shaped like the box, or None when outside.
    """
    axes = np.asarray(axes, np.float32)
    if axes.shape != (3,) or np.any(axes <= 0):
        raise ValueError(f"axes must be three positive semi-axes, got {axes}")
    reach = float(axes.max()) + 2.0 * max(grid.spacing)
    box = grid.box(np.asarray(centre) - reach, np.asarray(centre) + reach)
    if box is None:
        return None
    z, y, x = grid.coords(box)
    rel = (z - centre[0], y - centre[1], x - centre[2])
    rot = np.asarray(rotation, np.float32)
    u = [rel[0] * rot[0, j] + rel[1] * rot[1, j] + rel[2] * rot[2, j] for j in range(3)]
    rho2 = sum((u[j] / axes[j]) ** 2 for j in range(3))
    rho = np.sqrt(rho2)
    grad = np.sqrt(sum((u[j] / axes[j] ** 2) ** 2 for j in range(3))) / np.maximum(rho, 1e-6)
    depth = (1.0 - rho) / np.maximum(grad, 1e-6)  # first-order distance to the surface
    depth = np.minimum(depth, axes.min())
    return box, depth.astype(np.float32), u[0].astype(np.float32)


def paint_ellipsoid(
    grid: Grid, fields: TubeFields, centre: np.ndarray, rotation: np.ndarray, axes: np.ndarray, period: float
) -> int:
    """Paint an ellipsoidal mitochondrion (cristae across its long axis 0); returns voxels newly inside."""
    found = ellipsoid_level(grid, centre, rotation, axes)
    if found is None:
        return 0
    box, depth, u0 = found
    return fields.merge(box, depth, (u0 * np.float32(2 * np.pi / period)).astype(np.float32))


def sphere_distance(
    grid: Grid, centre: np.ndarray, reach: float
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Distance (nm) to ``centre`` over the box of half-size ``reach``; None when the box is empty."""
    box = grid.box(np.asarray(centre) - reach, np.asarray(centre) + reach)
    if box is None:
        return None
    z, y, x = grid.coords(box)
    return box, np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)


class CellTessellation:
    """Cells as a 3D Voronoi tessellation of random seeds; membranes lie on the cell boundaries.

    Args:
        rng: random generator.
        grid: render grid.
        cell_size_nm: mean seed spacing in nm (in-plane).
        elongation: cells are this many times longer along z than across (neurites run across the
            sections), so most membranes cross a section steeply; 1 = isotropic cells.
    """

    def __init__(self, rng: np.random.Generator, grid: Grid, cell_size_nm: float, elongation: float = 1.0) -> None:
        if cell_size_nm <= 0 or elongation < 1:
            raise ValueError(f"need cell_size_nm > 0 and elongation >= 1, got {cell_size_nm}, {elongation}")
        self.grid = grid
        #: physical -> tessellation space (z compressed); distances there approximate physical ones
        self.scale = np.array([1.0 / elongation, 1.0, 1.0])
        pad = cell_size_nm
        low, high = -pad * np.ones(3), grid.extent * self.scale + pad
        n = max(4, int(round(np.prod(high - low) / cell_size_nm**3)))
        self.seeds = rng.uniform(low, high, size=(n, 3))
        self.tree = cKDTree(self.seeds)

    def boundary_distance(self, rng: np.random.Generator, wobble_nm: float = 25.0) -> np.ndarray:
        """Distance (nm) from each voxel centre to the nearest cell boundary, (Z, Y, X) float32.

        The distance to the bisector plane of the two nearest seeds is piecewise linear, so it is computed
        on a grid ~4x coarser and interpolated; a smooth random warp of the sample points makes membranes wavy.
        """
        grid = self.grid
        sp = np.asarray(grid.spacing)
        coarse_sp = np.maximum(sp, 4.0 * sp.min())
        factor = np.maximum(1, np.round(coarse_sp / sp)).astype(int)
        cshape = [int(np.ceil(s / f)) + 2 for s, f in zip(grid.shape, factor)]
        axes = [(np.arange(n) - 0.5) * f * s + 0.5 * s for n, f, s in zip(cshape, factor, sp)]
        pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        if wobble_nm > 0:  # domain warping: displace the sample points smoothly, so boundaries bend
            sigma = [150.0 / (f * s) for f, s in zip(factor, sp)]
            warp = np.stack([smooth_noise(rng, cshape, sigma).ravel() for _ in range(3)], axis=1)
            pts = pts + wobble_nm * warp
        dist, idx = self.tree.query(pts * self.scale, k=2)
        c1, c2 = self.seeds[idx[:, 0]], self.seeds[idx[:, 1]]
        gap = np.linalg.norm(c2 - c1, axis=1)
        # signed by the pair's order, so the field is linear (not V-shaped) across a boundary and interpolates
        # exactly; its magnitude is the distance to the bisector plane of the two nearest seeds
        sign = np.where(idx[:, 0] < idx[:, 1], 1.0, -1.0)
        coarse = (sign * (dist[:, 1] ** 2 - dist[:, 0] ** 2) / (2.0 * np.maximum(gap, 1e-6))).reshape(cshape)
        # voxel i's centre sits at coarse index (i + 0.5) / f + 0.5 - 0.5 / f
        idx_axes = [(np.arange(n) + 0.5) / f + 0.5 - 0.5 / f for n, f in zip(grid.shape, factor)]
        # separable linear interpolation: along x, then y, then z (cheap, exact for tri-linear)
        tmp = coarse.astype(np.float32)
        for axis in (2, 1, 0):
            pos = idx_axes[axis]
            lo = np.clip(np.floor(pos).astype(int), 0, tmp.shape[axis] - 2)
            w = (pos - lo).astype(np.float32)
            shape = [1, 1, 1]
            shape[axis] = -1
            w = w.reshape(shape)
            tmp = np.take(tmp, lo, axis=axis) * (1 - w) + np.take(tmp, lo + 1, axis=axis) * w
        return np.abs(tmp).astype(np.float32)

    def boundary_point(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random point on a cell boundary inside the volume and the boundary's unit normal, both (3,)."""
        p = rng.uniform(np.zeros(3), self.grid.extent) * self.scale
        _, idx = self.tree.query(p, k=2)
        c1, c2 = self.seeds[idx[0]], self.seeds[idx[1]]
        normal = (c2 - c1) / max(float(np.linalg.norm(c2 - c1)), 1e-6)
        on_plane = (p - float(np.dot(p - 0.5 * (c1 + c2), normal)) * normal) / self.scale
        normal = normal * self.scale  # a plane's normal maps with the inverse-transpose of the scaling
        return on_plane, normal / max(float(np.linalg.norm(normal)), 1e-6)
