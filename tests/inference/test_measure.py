"""Per-object measurements: blockwise within a small RAM budget against in memory, against skimage's regionprops
and marching cubes on the whole volume, and against closed forms on digitised spheres, ellipsoids and discs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage
from skimage.measure import find_contours, marching_cubes, mesh_surface_area, regionprops
from skimage.measure import label as sk_label

from mtbio.inference.measure import BYTES_PER_VOXEL, block_shape_for_budget, measure_labels

INTEGER_COLUMNS = ("id", "voxel_count", "touches_border")


def blobs(shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    """Random overlapping balls of radius 2..5 voxels, labelled by connected components (uint32)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    mask = np.zeros(shape, dtype=bool)
    for _ in range(n):
        centre = rng.uniform(0, shape)
        radius = rng.uniform(2, 5)
        mask |= sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2
    return sk_label(mask).astype(np.uint32)


def ellipsoid(shape: tuple[int, ...], semi_nm: tuple[float, ...], voxel_size: tuple[float, ...]) -> np.ndarray:
    """A digitised ellipsoid (ellipse in 2D) with semi-axes ``semi_nm`` along the array axes, centred, id 7."""
    centre = [(s - 1) / 2 for s in shape]
    grid = np.indices(shape).astype(np.float64)
    r = sum(((g - c) * v / a) ** 2 for g, c, v, a in zip(grid, centre, voxel_size, semi_nm))
    return np.where(r <= 1.0, 7, 0).astype(np.uint16)


def assert_tables_equal(a, b) -> None:  # noqa: ANN001
    assert list(a.columns) == list(b.columns)
    for name in a.columns:
        x, y = a.columns[name], b.columns[name]
        if name in INTEGER_COLUMNS or name.startswith("bbox_"):
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9, err_msg=name)


@pytest.mark.parametrize(("shape", "dtype"), [((40, 96, 96), np.uint64), ((400, 360), np.uint32)])
def test_volume_16x_the_budget_equals_in_memory(tmp_path: Path, shape: tuple[int, ...], dtype: type) -> None:
    labels = blobs(shape, 120 if len(shape) == 3 else 60, seed=len(shape)).astype(dtype)
    vs = (30.0, 6.0, 5.0)[-len(shape) :]
    arr = zarr.create_array(str(tmp_path / "l.zarr"), shape=shape, chunks=(8, 16, 16)[-len(shape) :], dtype=dtype)
    arr[...] = labels
    budget = labels.nbytes // 16
    blockwise = measure_labels(arr, vs, ram_budget=budget)
    assert blockwise.meta["blocks"] >= 16
    window = math.prod(b + 4 for b in blockwise.meta["block_shape"])  # block + marching plane + 2 x smoothing reach
    assert window * BYTES_PER_VOXEL <= budget
    in_memory = measure_labels(labels, vs, block_shape=shape)
    assert in_memory.meta["blocks"] == 1
    assert len(in_memory) == labels.max() >= 5
    assert_tables_equal(blockwise, in_memory)


@pytest.mark.parametrize("ndim", [2, 3])
def test_matches_regionprops_and_whole_marching(ndim: int) -> None:
    shape = (20, 36, 30) if ndim == 3 else (90, 70)
    vs = (40.0, 5.0, 7.0)[-ndim:]
    labels = blobs(shape, 30 if ndim == 3 else 20, seed=10 + ndim)
    table = measure_labels(labels, vs, block_shape=(7,) * ndim)
    binary = measure_labels(labels, vs, block_shape=(7,) * ndim, surface_sigma=0)
    props = regionprops(labels, spacing=vs)
    assert [p.label for p in props] == list(table.columns["id"])
    axes = "zyx"[-ndim:]
    size, surf = ("volume_nm3", "surface_nm2") if ndim == 3 else ("area_nm2", "perimeter_nm")
    for i, p in enumerate(props):
        assert table.columns["voxel_count"][i] == p.num_pixels
        assert table.columns[size][i] == pytest.approx(p.area, rel=1e-12)
        assert table.columns["equivalent_diameter_nm"][i] == pytest.approx(p.equivalent_diameter_area, rel=1e-9)
        box = [table.columns[f"bbox_{a}0"][i] for a in axes] + [table.columns[f"bbox_{a}1"][i] for a in axes]
        assert tuple(box) == p.bbox
        centroid = [table.columns[f"centroid_{a}_nm"][i] for a in axes]
        np.testing.assert_allclose(centroid, p.centroid, rtol=1e-9)
        assert table.columns["major_axis_nm"][i] == pytest.approx(p.axis_major_length, rel=1e-6, abs=1e-6)
        assert table.columns["minor_axis_nm"][i] == pytest.approx(p.axis_minor_length, rel=1e-6, abs=1e-6)
        mask = ndimage.gaussian_filter(np.pad(labels == p.label, 3).astype(np.float64), 0.7, truncate=2.0)
        if ndim == 3:
            verts, faces, _, _ = marching_cubes(mask, 0.5, spacing=vs)
            expected = mesh_surface_area(verts, faces)
        else:
            expected = sum(
                np.sqrt((np.diff(c * np.asarray(vs), axis=0) ** 2).sum(axis=1)).sum() for c in find_contours(mask, 0.5)
            )
        assert table.columns[surf][i] == pytest.approx(expected, rel=1e-6)  # marching cubes works in float32
        if ndim == 3:  # without smoothing: marching cubes of the binary mask
            verts, faces, _, _ = marching_cubes(np.pad(labels == p.label, 1).astype(np.float32), 0.5, spacing=vs)
            assert binary.columns[surf][i] == pytest.approx(mesh_surface_area(verts, faces), rel=1e-9)
        touches = any(lo == 0 for lo in p.bbox[:ndim]) or any(hi == s for hi, s in zip(p.bbox[ndim:], shape))
        assert bool(table.columns["touches_border"][i]) == touches


def test_sphere_and_ellipsoid_against_closed_forms() -> None:
    vs = (8.0, 4.0, 4.0)  # anisotropic: z voxels twice as thick
    r = 60.0
    sphere = measure_labels(ellipsoid((19, 37, 37), (r, r, r), vs), vs).rows()[0]
    assert sphere["id"] == 7
    assert sphere["volume_nm3"] == pytest.approx(4 / 3 * math.pi * r**3, rel=0.03)
    assert sphere["surface_nm2"] == pytest.approx(4 * math.pi * r**2, rel=0.05)
    assert sphere["equivalent_diameter_nm"] == pytest.approx(2 * r, rel=0.02)
    for axis in ("major_axis_nm", "intermediate_axis_nm", "minor_axis_nm"):
        assert sphere[axis] == pytest.approx(2 * r, rel=0.04)
    assert not sphere["touches_border"]

    a, b, c = 80.0, 50.0, 30.0  # semi-axes; the longest along y, the shortest along z
    row = measure_labels(ellipsoid((11, 45, 29), (c, a, b), vs), vs, block_shape=(4, 9, 8)).rows()[0]
    p = 1.6075  # Knud Thomsen's surface approximation, error <= 1.061 %
    surface = 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)
    assert row["volume_nm3"] == pytest.approx(4 / 3 * math.pi * a * b * c, rel=0.04)
    assert row["surface_nm2"] == pytest.approx(surface, rel=0.05)
    assert row["major_axis_nm"] > row["intermediate_axis_nm"] > row["minor_axis_nm"]
    assert row["major_axis_nm"] == pytest.approx(2 * a, rel=0.04)
    assert row["intermediate_axis_nm"] == pytest.approx(2 * b, rel=0.05)
    assert row["minor_axis_nm"] == pytest.approx(2 * c, rel=0.08)
    assert row["elongation"] == pytest.approx(a / c, rel=0.1)
    assert row["centroid_z_nm"] == pytest.approx(5 * vs[0])
    assert row["centroid_y_nm"] == pytest.approx(22 * vs[1])


def test_disc_2d_area_and_perimeter() -> None:
    vs, r = (3.0, 6.0), 90.0
    row = measure_labels(ellipsoid((65, 35), (r, r), vs), vs, block_shape=(10, 10)).rows()[0]
    assert set(row) >= {"area_nm2", "perimeter_nm", "centroid_y_nm", "centroid_x_nm"}
    assert "volume_nm3" not in row and "intermediate_axis_nm" not in row
    assert row["area_nm2"] == pytest.approx(math.pi * r**2, rel=0.02)
    assert row["perimeter_nm"] == pytest.approx(2 * math.pi * r, rel=0.03)
    assert row["major_axis_nm"] == pytest.approx(2 * r, rel=0.03)
    assert row["elongation"] == pytest.approx(1.0, abs=0.03)


def test_single_voxel_line_and_border() -> None:
    labels = np.zeros((5, 6, 7), dtype=np.uint8)
    labels[2, 3, 3] = 1  # a point: no extent, elongation 1
    labels[0, 0, 1:6] = 2  # a line on the border: minor axis 0, elongation inf
    rows = measure_labels(labels, block_shape=(2, 2, 2)).rows()
    assert rows[0]["elongation"] == 1.0 and rows[0]["major_axis_nm"] == 0.0 and not rows[0]["touches_border"]
    assert rows[0]["surface_nm2"] == 0  # smoothed away (surface_sigma 0.7)
    assert measure_labels(labels, surface_sigma=0).rows()[0]["surface_nm2"] == pytest.approx(math.sqrt(3))
    assert math.isinf(rows[1]["elongation"]) and rows[1]["touches_border"]
    assert (rows[1]["bbox_z0"], rows[1]["bbox_x0"], rows[1]["bbox_x1"]) == (0, 1, 6)


def test_empty_volume_gives_an_empty_table(tmp_path: Path) -> None:
    table = measure_labels(np.zeros((4, 5, 6), dtype=np.uint32), (1.0, 1.0, 1.0))
    assert len(table) == 0 and table.summary()["objects"] == 0
    table.write(tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text().startswith("id,voxel_count,volume_nm3,surface_nm2")


def test_csv_and_parquet_round_trip(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    labels = blobs((16, 24, 24), 12, seed=5)
    table = measure_labels(labels, (30.0, 5.0, 5.0))
    with open(table.write(tmp_path / "t.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(table)
    for name, values in table.columns.items():
        read = [r[name] for r in rows]
        if values.dtype == bool:
            assert read == [str(bool(v)) for v in values]
        else:
            np.testing.assert_array_equal(np.asarray(read, dtype=values.dtype), values)  # floats written exactly
    back = pq.read_table(table.write(tmp_path / "t.parquet"))
    assert back.column_names == list(table.columns)
    for name, values in table.columns.items():
        np.testing.assert_array_equal(back.column(name).to_numpy(), values)
    s = table.summary()
    assert s["objects"] == len(table)
    assert s["total_volume_nm3"] == pytest.approx(float(table.columns["volume_nm3"].sum()))
    assert s["median_volume_nm3"] == pytest.approx(float(np.median(table.columns["volume_nm3"])))


def test_block_shape_for_budget() -> None:
    assert block_shape_for_budget((100, 200, 300), 10**12, chunks=(32, 64, 64)) == (32, 64, 64)
    block = block_shape_for_budget((100, 200, 300), 64 * 64 * BYTES_PER_VOXEL, chunks=(32, 64, 64), margin=4)
    assert math.prod(b + 4 for b in block) * BYTES_PER_VOXEL <= 64 * 64 * BYTES_PER_VOXEL
    assert block_shape_for_budget((5, 7), 10**9) == (5, 7)


def test_bad_inputs(tmp_path: Path) -> None:
    labels = np.zeros((4, 4, 4), dtype=np.int32)
    with pytest.raises(ValueError, match="integer ids"):
        measure_labels(labels.astype(np.float32))
    with pytest.raises(ValueError, match="2D"):
        measure_labels(np.zeros((2, 3, 4, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="3 positive entries"):
        measure_labels(labels, (1.0, 2.0))
    with pytest.raises(ValueError, match="below one voxel"):
        measure_labels(labels, ram_budget=10)
    with pytest.raises(ValueError, match="surface_sigma"):
        measure_labels(labels, surface_sigma=-1.0)
    labels[1, 1, 1] = -3
    with pytest.raises(ValueError, match=">= 0"):
        measure_labels(labels)
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        measure_labels(np.ones((3, 3), dtype=np.uint8)).write(tmp_path / "t.xlsx")
