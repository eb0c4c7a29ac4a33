"""The Export widget: the Predict widget's kind of model (a weights file of an mtbio network, or a bundle) exported
and checked against PyTorch; missing inputs are reported, not raised."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gui


def _weights(path: Path) -> Path:
    from mtbio.networks import get_network
    from mtbio.networks.weights import WeightsRecord, write_weights

    torch.manual_seed(0)
    net = get_network("small_unet", 2)
    return write_weights(WeightsRecord.from_network(net, network="small_unet", spatial_dims=2), path)


def test_export_weights_file_to_onnx(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from mtbio.napari.export_widget import ExportWidget

    widget = ExportWidget(make_napari_viewer())
    widget.network.value = "small_unet"
    widget.model_path.value = _weights(tmp_path / "final.pt")
    widget.format.value = "onnx"
    widget.roi.value = "64 64"
    widget.output.value = tmp_path / "model.onnx"
    assert widget.start() is not None, widget.status.value
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert widget.result is not None, widget.status.value
    assert (tmp_path / "model.onnx").is_file() and widget.result["check"]["max_abs_diff"] < 1e-4
    assert widget.status.value.startswith("wrote")


def test_missing_inputs_and_bad_files_are_reported(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    from mtbio.napari.export_widget import ExportWidget

    widget = ExportWidget(make_napari_viewer())
    assert widget.start() is None and "choose a bundle folder or a weights file" in widget.status.value
    widget.network.value = "small_unet"
    (tmp_path / "text.pt").write_text("not weights")
    widget.model_path.value = tmp_path / "text.pt"
    widget.format.value = "torchscript"
    widget.output.value = tmp_path / "m.pt"
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert widget.result is None and "text.pt" in widget.status.value
