"""EM appearance: paint a random scene as electron density, then image it the way a :class:`DomainStyle` does.

Pipeline (all vectorised numpy / scipy.ndimage):

1. scene, on a render grid with ``style.section_samples`` sub-slices per section: cytoplasm texture and
   ribosome-like specks, cell membranes (Voronoi boundaries), synapse-like densities on membranes with
   vesicle clusters beside them, larger vesicles and dense bodies (round distractors, *not* mitochondria),
   and mitochondria (tubes along smooth curves, some branching, and ellipsoids) with a double envelope and
   cristae stripes; mitochondria are painted until their volume fraction reaches ``style.mito_fraction``;
2. section integration (mean over the sub-slices: the projection through a thick ssTEM section);
3. Gaussian point-spread function, tone curve (density -> brightness, gamma, partial inversion);
4. noise: per-section jitter, FIB-SEM curtaining, Poisson shot noise, Gaussian read noise; uint8.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from mtbio.data.synthetic.domains import DomainStyle
from mtbio.data.synthetic.shapes import (
    CellTessellation,
    Grid,
    TubeFields,
    ellipsoid_level,
    paint_ellipsoid,
    paint_tube,
    random_rotation,
    smooth_curve,
    smooth_noise,
    sphere_distance,
)

__all__ = ["synthesize", "validate_shape"]

_MAX_MITO_TRIES = 400


def validate_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """Check a (Z, Y, X) volume shape; returns it as a tuple of ints."""
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as err:
        raise ValueError(f"shape must be three positive ints (Z, Y, X), got {shape!r}") from err
    if len(out) != 3 or min(out) < 1 or any(int(s) != s for s in shape):
        raise ValueError(f"shape must be three positive ints (Z, Y, X), got {tuple(shape)}")
    if min(out[1:]) < 16:
        raise ValueError(f"shape {out}: Y and X must be >= 16 voxels")
    return out  # type: ignore[return-value]


def _line_profile(distance: np.ndarray, width_nm: float, pixel_nm: float) -> np.ndarray:
    """Gaussian line profile of a thin sheet, widened to the pixel size with its integral kept (no aliasing)."""
    eff = float(np.hypot(width_nm, 0.5 * pixel_nm))
    return (width_nm / eff) * np.exp(-0.5 * (distance / eff) ** 2)


def _paint_mitochondria(rng: np.random.Generator, grid: Grid, style: DomainStyle) -> TubeFields:
    fields = TubeFields.empty(grid.shape)
    total = float(np.prod(grid.shape))
    low_f, high_f = style.mito_fraction
    goal = rng.uniform(low_f, high_f)
    inside = 0
    extent = grid.extent
    r_lo, r_hi = style.mito_radius_nm
    for _ in range(_MAX_MITO_TRIES):
        if inside / total >= goal:
            break
        budget_nm3 = (goal - inside / total) * float(np.prod(extent))
        radius = rng.uniform(r_lo, r_hi)
        radius = min(radius, max(r_lo, (budget_nm3 * 0.75 / np.pi) ** (1 / 3)))  # small budget: small organelle
        period = rng.uniform(*style.cristae_period_nm)
        centre = rng.uniform(0, 1, 3) * extent
        if rng.random() < style.ellipsoid_probability:
            axes = np.array([radius * rng.uniform(1.3, 3.0), radius, radius * rng.uniform(0.7, 1.0)])
            scale = min(1.0, (budget_nm3 / (4.0 / 3.0 * np.pi * np.prod(axes))) ** (1 / 3) + 0.3)
            inside += paint_ellipsoid(grid, fields, centre, random_rotation(rng), axes * scale, period)
            continue
        length = rng.uniform(*style.mito_length_nm)
        branched = rng.random() < style.branch_probability
        length = float(np.clip(budget_nm3 / (np.pi * radius**2) / (1.6 if branched else 1.0), 0.5 * radius, length))
        curves = [smooth_curve(rng, centre, length, step=min(60.0, 0.5 * radius), persistence=800.0)]
        if branched and len(curves[0]) > 4:
            at = curves[0][rng.integers(1, len(curves[0]) - 1)]
            branch = smooth_curve(rng, at, 0.6 * length, step=min(60.0, 0.5 * radius), persistence=600.0)
            curves.append(branch - branch[0] + at)  # the branch starts on the main tube
        for curve in curves:
            wobble = 1.0 + 0.12 * np.sin(np.linspace(0, rng.uniform(2, 6), len(curve)) + rng.uniform(0, 6.3))
            inside += paint_tube(grid, fields, curve, radius * wobble, period, rng.uniform(0, 2 * np.pi))
    return fields


def _distractors(
    rng: np.random.Generator, grid: Grid, style: DomainStyle, cells: CellTessellation, mito_depth: np.ndarray
) -> np.ndarray:
    """Density of the non-mitochondrial dark structures, (Z, Y, X) float32 (composited by max)."""
    dens = np.zeros(grid.shape, np.float32)
    pix = min(grid.spacing)
    vol = grid.volume_um3

    def clear_of_mito(centre: np.ndarray, radius: float) -> bool:
        idx = tuple(np.clip((centre / np.asarray(grid.spacing)).astype(int), 0, np.asarray(grid.shape) - 1))
        return bool(mito_depth[idx] < -radius - 20.0)

    def put(box: tuple[slice, slice, slice], value: np.ndarray) -> None:
        np.maximum(dens[box], value.astype(np.float32), out=dens[box])

    # synapse-like densities: flat dark discs on membranes, a cluster of small vesicles on one side
    for _ in range(rng.poisson(style.synapse_per_um3 * vol)):
        point, normal = cells.boundary_point(rng)
        basis = np.linalg.qr(np.column_stack([normal, rng.standard_normal((3, 2))]))[0]
        disc_r = rng.uniform(120, 220)
        found = ellipsoid_level(grid, point, basis, np.array([18.0, disc_r, disc_r]))
        if found is not None:
            box, depth, _ = found
            put(box, style.synapse_density * np.clip(depth / 8.0 + 0.5, 0, 1))
        side = normal * rng.choice([-1.0, 1.0])
        centre = point + side * rng.uniform(120, 220)
        for _ in range(rng.integers(10, 30)):
            r = rng.uniform(18, 28)
            c = centre + rng.normal(0, 90, 3)
            _vesicle(grid, c, r, style.vesicle_rim_density, pix, put, clear_of_mito)
    # scattered small vesicles
    for _ in range(rng.poisson(0.3 * style.vesicle_per_um3 * vol)):
        c = rng.uniform(0, 1, 3) * grid.extent
        _vesicle(grid, c, rng.uniform(18, 30), style.vesicle_rim_density, pix, put, clear_of_mito)
    # larger vesicles: dark rim, light lumen
    for _ in range(rng.poisson(style.large_vesicle_per_um3 * vol)):
        c = rng.uniform(0, 1, 3) * grid.extent
        _vesicle(grid, c, rng.uniform(40, 110), style.vesicle_rim_density, pix, put, clear_of_mito)
    # dense bodies: solid round dark blobs without cristae (as dark as mitochondria in some stains)
    for _ in range(rng.poisson(style.dense_body_per_um3 * vol)):
        c = rng.uniform(0, 1, 3) * grid.extent
        r = rng.uniform(60, 170)
        if not clear_of_mito(c, r):
            continue
        found = sphere_distance(grid, c, r + 3 * pix)
        if found is not None:
            box, dist = found
            core = np.clip((r - dist) / pix + 0.5, 0, 1)
            rim = _line_profile(dist - r + 6.0, 5.0, pix)
            put(box, style.dense_body_density * (0.85 * core + 0.3 * rim))
    return dens


def _vesicle(grid, centre, radius, rim_density, pix, put, clear_of_mito) -> None:  # noqa: ANN001
    if not clear_of_mito(centre, radius):
        return
    found = sphere_distance(grid, centre, radius + 3 * pix)
    if found is None:
        return
    box, dist = found
    rim = _line_profile(dist - radius, 4.0, pix)
    lumen = np.clip((radius - dist) / pix + 0.5, 0, 1)
    put(box, rim_density * rim + 0.1 * lumen)


def synthesize(style: DomainStyle, shape: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one EM-like volume with its mitochondria labels.

    Args:
        style: the domain's imaging style (voxel size, stain, tone, noise, tissue statistics).
        shape: (Z, Y, X) output shape in voxels of ``style.voxel_size_nm``.
        seed: random seed; the same (style, shape, seed) gives bitwise identical output.

    Returns:
        ``(raw, label)``: raw uint8 (Z, Y, X), label uint8 (Z, Y, X) in {0, 255} (255 = mitochondrion).
    """
    if not isinstance(style, DomainStyle):
        raise ValueError(f"style must be a DomainStyle, got {type(style).__name__}")
    zyx = validate_shape(shape)
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    # independent streams: the mitochondria geometry depends only on (seed, grid, tissue statistics), never
    # on stain, distractor or noise settings
    streams = np.random.SeedSequence([int(seed), 0x6D7462]).spawn(5)
    rng_tex, rng_cells, rng_mito, rng_dis, rng_noise = (np.random.default_rng(s) for s in streams)
    k = style.section_samples
    vz, vy, vx = style.voxel_size_nm
    grid = Grid((zyx[0] * k, zyx[1], zyx[2]), (vz / k, vy, vx))
    pix = min(vy, vx)

    # cytoplasm: smooth texture + fine specks
    sig = [style.texture_scale_nm / s for s in grid.spacing]
    density = style.cytoplasm_density + style.texture_amplitude * smooth_noise(rng_tex, grid.shape, sig)
    wobble = smooth_noise(rng_tex, grid.shape, [12.0 / s for s in grid.spacing])
    if style.speck_density > 0:
        specks = smooth_noise(rng_tex, grid.shape, [max(0.6, 9.0 / s) for s in grid.spacing])
        density += style.speck_density * np.clip(specks - 1.6, 0, None)
    # cell membranes
    cells = CellTessellation(rng_cells, grid, style.cell_size_nm, style.cell_elongation)
    membranes = cells.boundary_distance(rng_cells)
    density += style.membrane_density * _line_profile(membranes, style.membrane_width_nm, pix)
    # mitochondria, then the distractors that avoid them
    mito = _paint_mitochondria(rng_mito, grid, style)
    np.maximum(density, _distractors(rng_dis, grid, style, cells, mito.depth), out=density)
    depth = mito.depth
    inside = np.clip(depth / pix + 0.5, 0, 1)
    lamella = np.clip(np.cos(mito.phase + 0.8 * wobble), 0, None) ** 3 * np.clip((depth - 22.0) / 25.0, 0, 1)
    matrix = style.mito_matrix_density * (1.0 + 0.15 * wobble) - style.cristae_contrast * lamella
    envelope = _line_profile(depth - 5.0, 4.0, pix) + _line_profile(depth - 19.0, 4.0, pix)
    density = (1 - inside) * density + inside * matrix + style.mito_membrane_density * 0.7 * envelope
    np.clip(density, 0, 1, out=density)

    # imaging: thick-section integration, PSF, tone curve, noise
    z, y, x = zyx
    density = density.reshape(z, k, y, x).mean(axis=1)
    label = (inside.reshape(z, k, y, x).mean(axis=1) > 0.5).astype(np.uint8) * np.uint8(255)
    psf = [p / v for p, v in zip(style.psf_sigma_nm, style.voxel_size_nm)]
    if max(psf) > 0:
        density = ndimage.gaussian_filter(density, psf, mode="reflect")
    img = np.clip(style.brightness * (1.0 - style.contrast * density), 0, 1) ** style.gamma
    img = (1 - style.invert_mix) * img + style.invert_mix * (1 - img)
    if style.section_jitter > 0:
        gain = 1 + style.section_jitter * rng_noise.standard_normal((z, 1, 1))
        img = img * gain + 0.5 * style.section_jitter * rng_noise.standard_normal((z, 1, 1))
    if style.curtain_amplitude > 0:
        stripes = smooth_noise(rng_noise, (z, 1, x), [4.0, 0.0, 0.7])
        img = img + style.curtain_amplitude * stripes
    img = np.clip(img, 0, 1)
    if style.photons > 0:
        img = rng_noise.poisson(img * style.photons) / style.photons
    if style.gaussian_noise > 0:
        img = img + style.gaussian_noise * rng_noise.standard_normal(img.shape)
    raw = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return raw, label
