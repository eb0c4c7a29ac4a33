"""``mtbio measure``: the table against the library on the same labels, the watershed split, TIF / OME-Zarr labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from mtbio.cli import main
from mtbio.data.store import create_prediction_store, encode_probability, mark_complete
from mtbio.inference.instances import WatershedSplit, label_blockwise
from mtbio.inference.measure import measure_labels

VOXEL = (20.0, 5.0, 5.0)


def balls() -> np.ndarray:
    """Probabilities: two overlapping balls (a dumbbell, touching mitochondria) and one separate ball."""
    grid = np.indices((16, 48, 88)).astype(np.float64) * np.asarray(VOXEL)[:, None, None, None]
    prob = np.zeros(grid.shape[1:], dtype=np.float32)
    for centre, r in [((160, 100, 90), 70), ((160, 100, 210), 70), ((160, 120, 360), 45)]:
        d = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
        prob = np.maximum(prob, np.clip(1.0 - (d - r) / 20, 0, 1))
    return prob


@pytest.fixture
def store(tmp_path: Path) -> Path:
    prob = balls()
    path = tmp_path / "pred.zarr"
    s = create_prediction_store(path, prob.shape, dtype="uint8", chunks=(8, 16, 16), voxel_size=VOXEL)
    s.array[1] = encode_probability(prob, "uint8")
    s.array[0] = encode_probability(1 - prob, "uint8")
    mark_complete(path)
    return path


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_csv_and_tif_labels_match_the_library(tmp_path: Path, store: Path, capsys) -> None:  # noqa: ANN001
    out, tif = tmp_path / "objects.csv", tmp_path / "labels.tif"
    assert main(["measure", str(store), str(out), "--labels-out", str(tif)]) == 0
    printed = capsys.readouterr().out
    assert "2 object(s)" in printed and "median volume" in printed
    stored = tifffile.imread(tif)
    mask = encode_probability(balls(), "uint8")
    expected = label_blockwise(mask, threshold=0.5)
    np.testing.assert_array_equal(stored, expected)
    with tifffile.TiffFile(tif) as f:
        assert len(f.pages) == stored.shape[0]
    rows = _csv(out)
    ref = measure_labels(expected, VOXEL).columns
    assert [int(r["id"]) for r in rows] == list(ref["id"])
    assert [int(r["voxel_count"]) for r in rows] == list(ref["voxel_count"])
    np.testing.assert_allclose([float(r["surface_nm2"]) for r in rows], ref["surface_nm2"], rtol=1e-6)


def test_watershed_splits_the_dumbbell_into_zarr_labels(tmp_path: Path, store: Path, capsys) -> None:  # noqa: ANN001
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    out, labels_out = tmp_path / "objects.parquet", tmp_path / "instances.ome.zarr"
    argv = ["measure", str(store), str(out), "--split", "watershed", "--h", "20", "--labels-out", str(labels_out)]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["objects"] == 3 and summary["split"] == "watershed"
    group = zarr.open_group(str(labels_out), mode="r")
    assert group.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == list(VOXEL)
    assert group.attrs["mtbio"]["complete"] and group.attrs["mtbio"]["num_instances"] == 3
    labels = np.asarray(group["0"][:])
    split = WatershedSplit(h=20, sampling=VOXEL)
    np.testing.assert_array_equal(labels, label_blockwise(encode_probability(balls(), "uint8"), split=split))
    table = pq.read_table(out)
    assert table.num_rows == 3
    volumes = np.asarray(table.column("volume_nm3"))
    assert summary["total_volume_nm3"] == pytest.approx(volumes.sum())
    # the two halves of the dumbbell are about equal, the separate ball is smaller
    halves = sorted(volumes)[1:]
    assert halves[0] == pytest.approx(halves[1], rel=0.1) and sorted(volumes)[0] < 0.5 * halves[0]
    # existing outputs are refused without --overwrite, replaced with it
    assert main(argv) == 1
    assert "exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_bad_arguments(tmp_path: Path, store: Path, capsys) -> None:  # noqa: ANN001
    assert main(["measure", str(store), str(tmp_path / "objects.xlsx")]) == 1
    assert ".csv or .parquet" in capsys.readouterr().err
    assert main(["measure", str(tmp_path / "missing.zarr"), str(tmp_path / "o.csv")]) == 1
    assert "no such prediction store" in capsys.readouterr().err
    mark_complete(store, False)
    assert main(["measure", str(store), str(tmp_path / "o.csv")]) == 1
    assert "incomplete" in capsys.readouterr().err
