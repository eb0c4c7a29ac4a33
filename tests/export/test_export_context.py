"""Export of a 2.5D network (``context_sections``): 1 + 2k input channels in ONNX, TorchScript and the bioimage.io
package, whose input description names the channels and whose config carries the context back to ``mtbio
predict``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from mtbio.cli import main
from mtbio.export.source import example_input, load_source, normalize_sample
from mtbio.networks import get_network
from mtbio.networks.context import context_of
from mtbio.networks.weights import WeightsRecord, read_weights, write_weights

torch.set_num_threads(2)


def _record(tmp_path: Path, k: int = 1) -> Path:
    torch.manual_seed(1)
    net = get_network("small_unet", 2, in_channels=1 + 2 * k)
    record = WeightsRecord.from_network(
        net, network="small_unet", spatial_dims=2, context_sections=k, strategy="masktwins", voxel_size=[8.0, 8.0]
    )
    return write_weights(record, tmp_path / "final.pt")


def _run_json(argv: list[str], capsys) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_onnx_and_torchscript_take_the_context_channels(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    weights = _record(tmp_path)
    net = read_weights(weights).build_network(weights)
    out = tmp_path / "model.onnx"
    summary = _run_json(
        ["export", str(weights), "--format", "onnx", str(out), "--roi", "32", "32", "--tta", "none"], capsys
    )
    assert summary["context_sections"] == 1 and summary["check"]["max_abs_diff"] <= 1e-4
    x = normalize_sample(torch.randn(2, 3, 48, 40) * 30 + 100)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.inference_mode():
        np.testing.assert_allclose(got, net(x).numpy(), rtol=0, atol=1e-4)
    ts = tmp_path / "model.pt"
    summary = _run_json(
        ["export", str(weights), "--format", "torchscript", str(ts), "--roi", "32", "32", "--tta", "none"], capsys
    )
    assert summary["check"]["max_abs_diff"] == 0.0
    with torch.inference_mode():
        assert torch.equal(torch.jit.load(str(ts))(x), net(x))


def test_package_names_the_channels_and_predicts_with_the_context(tmp_path):
    pytest.importorskip("bioimageio.core")
    pytest.importorskip("onnxruntime")
    from mtbio.export.bioimageio import export_bioimageio, load_package

    weights = _record(tmp_path)
    folder = tmp_path / "package"
    export_bioimageio(load_source(weights), folder, roi=(64, 64), test=False)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    inp = rdf["inputs"][0]
    channel = next(a for a in inp["axes"] if a["type"] == "channel")
    assert channel["channel_names"] == ["z-1", "z", "z+1"] and "channel 1 ('z') is predicted" in inp["description"]
    assert rdf["config"]["mtbio"]["context_sections"] == 1
    assert np.load(folder / "test_input.npy").shape == (1, 3, 64, 64)
    assert "2.5D" in (folder / "README.md").read_text()
    assert context_of(load_package(folder).network) == 1
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(
        stack, example_input((72, 64), seed=7, batch=4)[:, 0].numpy().astype(np.uint8), photometric="minisblack"
    )
    common = ["--roi", "64", "64", "--dtype", "float32", "--device", "cpu"]
    assert main(["predict", str(stack), str(tmp_path / "pkg.zarr"), "--model", str(folder), *common]) == 0
    argv = ["predict", str(stack), str(tmp_path / "pt.zarr"), "--network", "small_unet", "--checkpoint", str(weights)]
    assert main([*argv, *common]) == 0
    from mtbio.data.store import open_prediction_store

    a = np.asarray(open_prediction_store(tmp_path / "pkg.zarr").array)
    b = np.asarray(open_prediction_store(tmp_path / "pt.zarr").array)
    assert a.shape == (2, 4, 72, 64)
    np.testing.assert_array_equal(a, b)
