"""The Predict widget loads a bioimage.io package written by ``mtbio export`` (network ``bioimageio``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_predict_widget_runs_an_exported_package(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    pytest.importorskip("bioimageio.spec")
    pytest.importorskip("onnxruntime")
    from mtbio.export.bioimageio import export_bioimageio
    from mtbio.export.source import load_source
    from mtbio.napari.predict_widget import PACKAGE, PredictWidget
    from mtbio.networks.weights import WeightsRecord, write_weights
    from tests.napari.conftest import small_unet

    weights = write_weights(
        WeightsRecord.from_network(small_unet(2, seed=3), network="small_unet", spatial_dims=2), tmp_path / "w.pt"
    )
    export_bioimageio(load_source(weights), tmp_path / "pkg", roi=(32, 32), onnx=False, test=False)
    viewer = make_napari_viewer()
    image = np.random.default_rng(1).integers(0, 255, (2, 48, 40), dtype=np.uint8)
    viewer.add_image(image, name="em")
    widget = PredictWidget(viewer)
    widget.roi.value = "32, 32"
    results = {}
    for choice, model in ((PACKAGE, tmp_path / "pkg"), ("small_unet", weights)):
        widget.network.value = choice
        widget.model_path.value = model
        widget.output.value = tmp_path / f"{choice}.zarr"
        worker = widget.start()
        assert worker is not None, widget.status.value
        qtbot.waitUntil(lambda: not widget.busy, timeout=20_000)
        assert widget.status.value.startswith("done"), widget.status.value
        results[choice] = np.asarray(viewer.layers["em probability"].data)
    assert results[PACKAGE].shape == (2, 48, 40)
    np.testing.assert_array_equal(results[PACKAGE], results["small_unet"])
