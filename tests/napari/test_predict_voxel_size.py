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


def test_predict_widget_tta_combo(make_napari_viewer, qtbot, tmp_path) -> None:
    """The TTA combo box offers InferenceSettings' modes (default TOOL_DEFAULTS'), reaches the job's settings and
    the store, and flips_rot90 with a window that is not square is refused in the status line."""
    from mtbio.data.store import open_prediction_store
    from mtbio.inference.settings import TOOL_DEFAULTS, TTA
    from mtbio.napari.predict_widget import PredictWidget
    from mtbio.networks.weights import WeightsRecord, write_weights
    from tests.napari.conftest import small_unet

    weights = write_weights(
        WeightsRecord.from_network(small_unet(2), network="small_unet", spatial_dims=2), tmp_path / "w.pt"
    )
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8), name="em")
    widget = PredictWidget(viewer)
    assert list(widget.tta.choices) == [t.value for t in TTA] and widget.tta.value == TOOL_DEFAULTS.tta.value
    widget.network.value = "small_unet"
    widget.model_path.value = weights
    widget.output.value = tmp_path / "t.zarr"
    widget.roi.value = "32, 16"
    widget.tta.value = "flips_rot90"
    assert widget.start() is None and "needs a square window" in widget.status.value
    widget.roi.value = "32, 32"
    widget.tta.value = "flips"
    assert widget.job().settings.tta is TTA.FLIPS
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert widget.status.value.startswith("done"), widget.status.value
    assert open_prediction_store(tmp_path / "t.zarr").meta["config"]["tta"] == "flips"
