"""The Predict widget predicts at the model's voxel size (layer scale in nm vs the weights record)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_predict_widget_resamples_to_the_weights_voxel_size(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    from mtbio.data.store import open_prediction_store
    from mtbio.napari.predict_widget import PredictWidget
    from mtbio.networks.weights import WeightsRecord, write_weights
    from tests.napari.conftest import small_unet

    weights = write_weights(
        WeightsRecord.from_network(small_unet(2), network="small_unet", spatial_dims=2, voxel_size=[5.0, 5.0]),
        tmp_path / "w.pt",
    )
    viewer = make_napari_viewer()
    image = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    viewer.add_image(image, name="em", scale=(10.0, 10.0))  # 10 nm pixels, the model's are 5 nm
    widget = PredictWidget(viewer)
    widget.network.value = "small_unet"
    widget.model_path.value = weights
    widget.roi.value = "32, 32"
    for resample, out in ((True, "r.zarr"), (False, "p.zarr")):
        widget.resample.value = resample
        widget.output.value = tmp_path / out
        worker = widget.start()
        assert worker is not None, widget.status.value
        qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
        assert widget.status.value.startswith("done"), widget.status.value
        store = open_prediction_store(tmp_path / out)
        assert store.spatial_shape == (48, 48) and store.voxel_size == (10.0, 10.0)
        assert viewer.layers["em probability"].data.shape == (48, 48)
        if resample:
            assert store.meta["resampled"] == {"from": [10.0, 10.0], "to": [5.0, 5.0], "model_grid_shape": [96, 96]}
        else:
            assert "resampled" not in store.meta


def test_predict_widget_defaults_are_the_inference_settings(make_napari_viewer, tmp_path) -> None:
    """The widget restates no default: its job's settings are TOOL_DEFAULTS with the widget's values."""
    import dataclasses

    from mtbio.inference.settings import DEFAULT_ROI, TOOL_DEFAULTS
    from mtbio.napari.predict_widget import PredictWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 16, 16), dtype=np.float32), name="em")
    widget = PredictWidget(viewer)
    widget.network.value = "small_unet"
    widget.output.value = tmp_path / "p.zarr"
    assert widget.overlap.value == TOOL_DEFAULTS.overlap and widget.batch_size.value == TOOL_DEFAULTS.batch_size
    assert widget.resample.value == TOOL_DEFAULTS.resample
    job = widget.job()
    assert job.roi == DEFAULT_ROI[3]
    expected = dataclasses.replace(TOOL_DEFAULTS, roi_size=DEFAULT_ROI[3], device=str(widget.device.value))
    assert job.settings == expected
    widget.batch_size.value = 9
    widget.resample.value = False
    assert widget.job().settings == dataclasses.replace(expected, batch_size=9, resample=False)
