"""The Measure widget: a prediction-store layer is labelled and measured, a labels layer measured as is; the table
matches the library, and selecting a row moves the viewer to the object."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.inference.test_measure_cli import VOXEL, balls

pytestmark = pytest.mark.gui


def _store(path: Path) -> Path:
    from mtbio.data.store import create_prediction_store, encode_probability, mark_complete

    prob = balls()
    s = create_prediction_store(path, prob.shape, dtype="uint8", chunks=(8, 16, 16), voxel_size=VOXEL)
    s.array[1] = encode_probability(prob, "uint8")
    mark_complete(path)
    return path


def test_measure_store_layer_and_jump(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    from mtbio.inference.instances import label_blockwise
    from mtbio.inference.measure import measure_labels
    from mtbio.napari.measure_widget import MeasureWidget

    store = _store(tmp_path / "pred.zarr")
    viewer = make_napari_viewer()
    viewer.open(str(store), plugin="mtbio")
    widget = MeasureWidget(viewer)
    widget.layer.value = viewer.layers["pred probability"]
    worker = widget.start()
    assert worker is not None, widget.status.value
    qtbot.waitUntil(lambda: not widget.busy, timeout=20_000)
    assert widget.result is not None, widget.status.value
    expected = label_blockwise(np.asarray(viewer.layers["pred probability"].data), threshold=0.5)
    ref = measure_labels(expected, VOXEL)
    rows = widget.table.value["data"]
    assert len(rows) == len(ref) == 2
    assert [row[0] for row in rows] == list(ref.columns["id"])
    assert [row[1] for row in rows] == list(ref.columns["voxel_count"])
    assert "pred instances" in viewer.layers
    np.testing.assert_array_equal(np.asarray(viewer.layers["pred instances"].data), expected)
    # selecting the second row: the z slider at its centroid's section, the camera on its centre
    widget.table.native.selectRow(1)
    z, y, x = (ref.columns[f"centroid_{a}_nm"][1] for a in "zyx")
    assert viewer.dims.point[0] == pytest.approx(z, abs=VOXEL[0] / 2)
    assert viewer.camera.center[-2:] == pytest.approx((y, x), abs=1e-6)
    assert viewer.dims.current_step[0] == round(z / VOXEL[0])


def test_measure_labels_layer(make_napari_viewer, qtbot) -> None:
    from mtbio.napari.measure_widget import MeasureWidget

    labels = np.zeros((6, 20, 30), dtype=np.uint16)
    labels[1:4, 2:6, 3:9] = 5
    labels[2:5, 10:18, 20:28] = 9
    viewer = make_napari_viewer()
    viewer.add_labels(labels, name="cells", scale=(30.0, 4.0, 4.0))
    widget = MeasureWidget(viewer)
    widget.layer.value = viewer.layers["cells"]
    worker = widget.start()
    assert worker is not None, widget.status.value
    qtbot.waitUntil(lambda: not widget.busy, timeout=20_000)
    value = widget.table.value
    ids = [row[0] for row in value["data"]]
    counts = [row[1] for row in value["data"]]
    assert ids == [5, 9] and counts == [3 * 4 * 6, 3 * 8 * 8]
    assert widget.result.voxel_size == (30.0, 4.0, 4.0)
    widget.jump_to(0)
    assert viewer.dims.current_step[0] == 2
