"""The installed npe2 plugin as napari sees it: reader, sample data and dock widgets by their manifest names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_viewer_opens_prediction_store_with_the_plugin(make_napari_viewer, tmp_path: Path) -> None:
    import dask.array as da

    from mtbio.data.store import create_prediction_store, encode_probability, mark_complete

    prob = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    store = create_prediction_store(tmp_path / "run.zarr", prob.shape, voxel_size=(12.0, 6.0, 6.0))
    store.array[1] = encode_probability(prob, "uint8")
    mark_complete(tmp_path / "run.zarr")
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "run.zarr"), plugin="mtbio")
    assert [layer.name for layer in layers] == ["run probability", "run mask"]
    assert type(layers[0]).__name__ == "Image" and type(layers[1]).__name__ == "Labels"
    assert isinstance(layers[0].data, da.Array)
    np.testing.assert_allclose(layers[0].scale, (12.0, 6.0, 6.0))
    np.testing.assert_array_equal(np.asarray(layers[0].data), encode_probability(prob, "uint8"))


def test_sample_data_and_widgets_by_manifest_name(make_napari_viewer) -> None:
    from mtbio.napari.compare_widget import CompareWidget
    from mtbio.napari.export_widget import ExportWidget
    from mtbio.napari.mask_widget import MaskPreviewWidget
    from mtbio.napari.measure_widget import MeasureWidget
    from mtbio.napari.predict_widget import PredictWidget

    viewer = make_napari_viewer()
    viewer.open_sample("mtbio", "synthetic_target")
    assert [layer.name for layer in viewer.layers] == ["target raw", "target label"]
    assert viewer.layers["target label"].data.max() == 1
    for name, cls in (
        ("Predict", PredictWidget),
        ("Compare predictions", CompareWidget),
        ("Measure", MeasureWidget),
        ("Export model", ExportWidget),
        ("Mask preview (M / 1-M)", MaskPreviewWidget),
    ):
        _, widget = viewer.window.add_plugin_dock_widget("mtbio", name)
        assert isinstance(widget, cls)
        assert getattr(widget.viewer, "__wrapped__", widget.viewer) is viewer  # napari injects a proxy
    # the docked mask widget works through napari's viewer proxy
    assert widget.image.value.name == "target raw"
    widget.block_size.value = 32
    assert widget.update_preview() is not None
    assert "mask pair (M / 1-M)" in viewer.layers and "error" not in widget.status.value
