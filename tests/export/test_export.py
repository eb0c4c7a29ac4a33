"""``mtbio export``: ONNX / TorchScript parity, the bioimage.io package (bioimageio.core's own test) and loading
it back into ``mtbio predict``; CLI errors."""

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
from mtbio.networks.weights import WeightsRecord, read_weights, write_weights

ANISO = {"strides": [[1, 2, 2], 2, 2]}


def _record(tmp_path: Path, dims: int, kwargs: dict | None = None, name: str = "final.pt") -> Path:
    torch.manual_seed(dims)
    net = get_network("small_unet", dims, **(kwargs or {}))
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval mode differs from a fresh network
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    record = WeightsRecord.from_network(
        net,
        network="small_unet",
        spatial_dims=dims,
        network_kwargs=kwargs or {},
        strategy="masktwins",
        iteration=600,
        seed=0,
        voxel_size=[10.0, 8.0, 8.0][-dims:],
        provenance={"source": "vnc3 (ssTEM)", "target": "lucchi++ (FIB-SEM)", "parent": "runs/so/final.pt"},
    )
    return write_weights(record, tmp_path / name)


def _run_json(argv: list[str], capsys) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _reference(weights: Path) -> torch.nn.Module:
    return read_weights(weights).build_network()


# ------------------------------------------------------------------------------------------------------ ONNX


@pytest.mark.parametrize(
    ("dims", "kwargs", "roi", "other"),
    [
        (2, None, (64, 64), (3, 1, 96, 128)),
        (3, ANISO, (8, 32, 32), (2, 1, 12, 48, 40)),
    ],
)
def test_onnx_matches_pytorch_under_onnxruntime(tmp_path, capsys, dims, kwargs, roi, other):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    weights = _record(tmp_path, dims, kwargs)
    out = tmp_path / "model.onnx"
    argv = ["export", str(weights), "--format", "onnx", str(out), "--roi", *map(str, roi), "--tta", "none"]
    summary = _run_json(argv, capsys)  # the plain network (the tools' default exports it under flips)
    assert summary["check"]["max_abs_diff"] <= 1e-4 and summary["dynamic"] is True
    # independent check: another batch size and spatial size than the export's (dynamic axes)
    net = _reference(weights)
    x = normalize_sample(torch.randn(other) * 30 + 100)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.inference_mode():
        expected = net(x).numpy()
    assert got.shape == expected.shape == (other[0], 2, *other[2:])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------------------ TorchScript


def test_torchscript_round_trip_equal(tmp_path, capsys):
    weights = _record(tmp_path, 2)
    out = tmp_path / "model.pt"
    argv = ["export", str(weights), "--format", "torchscript", str(out), "--roi", "64", "64", "--tta", "none"]
    summary = _run_json(argv, capsys)
    assert summary["check"]["max_abs_diff"] == 0.0
    loaded = torch.jit.load(str(out))
    net = _reference(weights)
    x = normalize_sample(example_input((96, 64), seed=3, batch=2))
    with torch.inference_mode():
        assert torch.equal(loaded(x), net(x))


# ----------------------------------------------------------------------------------------- weights sources


def test_training_checkpoint_takes_the_network_from_its_run_config(tmp_path):
    weights = _record(tmp_path, 2)
    teacher = read_weights(weights).teacher
    run = tmp_path / "run"
    run.mkdir()
    torch.save(
        {
            "student": teacher,
            "teacher": {f"module.{k}": v for k, v in teacher.items()},
            "trainer": {"iteration": 40},
            "optimizer": {"state": {}, "param_groups": []},
        },
        run / "checkpoint_iteration=40.pt",
    )
    (run / "config.json").write_text(json.dumps({"network": "small_unet", "spatial_dims": 2, "strategy": "masktwins"}))
    source = load_source(run / "checkpoint_iteration=40.pt")
    assert (source.record.network, source.spatial_dims, source.record.strategy) == ("small_unet", 2, "masktwins")
    assert source.record.iteration == 40 and source.step == (8, 8)
    x = normalize_sample(example_input((64, 64)))
    with torch.inference_mode():
        assert torch.equal(source.network(x), _reference(weights)(x))


def test_bundle_model_pt_uses_the_bundle_network_def(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    weights = _record(tmp_path, 2)
    plain = tmp_path / "model.pt"
    torch.save(read_weights(weights).teacher, plain)  # a bundle's models/model.pt: a plain state_dict
    source = load_source(plain, bundle=repo / "bundles" / "masktwins_demo")
    assert source.record.network == "small_unet" and source.spatial_dims == 2
    assert source.architecture is not None and source.architecture.callable == "UNet"
    assert source.architecture.kwargs["channels"] == [16, 32, 64, 128]
    rebuilt = source.architecture.build()
    rebuilt.load_state_dict(source.record.teacher)
    x = normalize_sample(example_input((64, 64)))
    with torch.inference_mode():
        assert torch.equal(rebuilt(x), _reference(weights)(x))


# --------------------------------------------------------------------------------------------- bioimage.io


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A 2D package written without bioimageio's test (the slow test below runs it) and its weights."""
    pytest.importorskip("bioimageio.core")
    pytest.importorskip("onnxruntime")
    from mtbio.export.bioimageio import export_bioimageio

    root = tmp_path_factory.mktemp("pkg")
    weights = _record(root, 2)
    summary = export_bioimageio(load_source(weights), root / "package", roi=(64, 64), test=False)
    return root / "package", weights, summary


def test_package_describes_the_adaptation(package):
    folder, _, summary = package
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    assert rdf["format_version"].startswith("0.5.") and rdf["type"] == "model"
    assert set(rdf["weights"]) == {"pytorch_state_dict", "onnx"}
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["import_from"] == "monai.networks.nets"
    assert summary["onnx_check"]["max_abs_diff"] <= 1e-4
    mt = rdf["config"]["mtbio"]
    assert mt["voxel_size"] == [8.0, 8.0] and mt["normalization"] == "zscore_section"
    assert (mt["source"], mt["target"], mt["parent"]) == ("vnc3 (ssTEM)", "lucchi++ (FIB-SEM)", "runs/so/final.pt")
    assert mt["strategy"] == "masktwins"
    inp, out = rdf["inputs"][0], rdf["outputs"][0]
    space = [a for a in inp["axes"] if a["type"] == "space"]
    assert [(a["id"], a["unit"], a["scale"], a["size"]["step"]) for a in space] == [
        ("y", "nanometer", 8.0, 8),
        ("x", "nanometer", 8.0, 8),
    ]
    assert inp["preprocessing"][-1] == {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"], "eps": 1e-6}}
    assert out["postprocessing"] == [{"id": "softmax", "kwargs": {"axis": "channel"}}]
    readme = (folder / "README.md").read_text()
    assert "lucchi++ (FIB-SEM)" in readme and "runs/so/final.pt" in readme and "## Validation" in readme
    # the test output is the softmax of the network on the normalised test input (independent recomputation)
    x = torch.from_numpy(np.load(folder / "test_input.npy"))
    expected = torch.softmax(_reference(package[1])(normalize_sample(x)), dim=1).detach().numpy()
    np.testing.assert_allclose(np.load(folder / "test_output.npy"), expected, atol=1e-6)
    assert (folder / "cover.png").stat().st_size > 0


@pytest.mark.slow
def test_package_passes_bioimageio_core_test(package, tmp_path):
    from bioimageio.core import test_model

    folder = package[0]
    summary = test_model(folder / "rdf.yaml", devices=["cpu"])
    names = {d.name: d.status for d in summary.details}
    assert summary.status == "passed", names
    assert names["Reproduce test outputs from test inputs (pytorch_state_dict)"] == "passed"
    assert names["Reproduce test outputs from test inputs (onnx)"] == "passed"


@pytest.mark.slow
def test_cli_exports_a_3d_package_that_passes_and_zips(tmp_path, capsys):
    pytest.importorskip("bioimageio.core")
    weights = _record(tmp_path, 3, ANISO)
    out = tmp_path / "pkg3d"
    summary = _run_json(
        ["export", str(weights), "--format", "bioimageio", str(out), "--roi", "8", "32", "32", "--zip"], capsys
    )
    assert summary["bioimageio_test"] == "passed" and Path(summary["zip"]).is_file()
    rdf = yaml.safe_load((out / "rdf.yaml").read_text())
    pre = rdf["inputs"][0]["preprocessing"][-1]
    assert pre["kwargs"]["axes"] == ["z", "y", "x"]  # per volume: mtbio's rule for 3D networks
    assert [a["size"]["step"] for a in rdf["inputs"][0]["axes"] if a["type"] == "space"] == [4, 8, 8]


def test_predict_loads_the_package_back(package, tmp_path):
    folder, weights, _ = package
    stack = tmp_path / "stack.tif"
    volume = example_input((80, 72), seed=7, batch=3)[:, 0].numpy().astype(np.uint8)
    tifffile.imwrite(stack, volume, photometric="minisblack")
    common = ["--roi", "64", "64", "--dtype", "float32", "--device", "cpu"]
    assert main(["predict", str(stack), str(tmp_path / "pkg.zarr"), "--model", str(folder), *common]) == 0
    assert (
        main(
            [
                "predict",
                str(stack),
                str(tmp_path / "pt.zarr"),
                "--network",
                "small_unet",
                "--checkpoint",
                str(weights),
                *common,
            ]
        )
        == 0
    )
    from mtbio.data.store import open_prediction_store

    a = np.asarray(open_prediction_store(tmp_path / "pkg.zarr").array)
    b = np.asarray(open_prediction_store(tmp_path / "pt.zarr").array)
    assert a.shape == (2, 3, 80, 72)
    np.testing.assert_array_equal(a, b)


def test_loading_a_package_refuses_foreign_code_and_changed_weights(package, tmp_path):
    import shutil

    from mtbio.export.bioimageio import load_package

    copy = tmp_path / "copy"
    shutil.copytree(package[0], copy)
    rdf = yaml.safe_load((copy / "rdf.yaml").read_text())
    rdf["weights"]["pytorch_state_dict"]["architecture"]["import_from"] = "os"
    (copy / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    with pytest.raises(ValueError, match="mtbio builds only monai.networks.nets"):
        load_package(copy)
    shutil.copy(package[0] / "rdf.yaml", copy / "rdf.yaml")
    with open(copy / "weights.pt", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ValueError, match="sha256 differs"):
        load_package(copy)
    with pytest.raises(FileNotFoundError, match="no rdf.yaml"):
        load_package(tmp_path)


# -------------------------------------------------------------------------------------------------- CLI errors


def test_cli_missing_weights_file(tmp_path, capsys):
    assert main(["export", str(tmp_path / "none.pt"), "--format", "torchscript", str(tmp_path / "m.pt")]) == 1
    assert "none.pt: checkpoint does not exist" in capsys.readouterr().err


def test_cli_unknown_format_and_wrong_suffix(tmp_path, capsys):
    weights = _record(tmp_path, 2)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(weights), "--format", "tflite", str(tmp_path / "m.tflite")])
    assert exit_info.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
    assert main(["export", str(weights), "--format", "onnx", str(tmp_path / "m.pt")]) == 1
    assert "--format onnx writes a .onnx file" in capsys.readouterr().err
    assert main(["export", str(weights), "--format", "torchscript", str(tmp_path / "m.pt"), "--roi", "60", "64"]) == 1
    assert "multiples of [8, 8]" in capsys.readouterr().err


def test_cli_refuses_a_pickled_payload(tmp_path, capsys):
    path = tmp_path / "pickled.pt"
    torch.save(get_network("small_unet", 2), path)  # a whole module: loading it would run pickled code
    assert main(["export", str(path), "--format", "torchscript", str(tmp_path / "m.pt")]) == 1
    err = capsys.readouterr().err
    assert "never runs code from a file" in err and not (tmp_path / "m.pt").exists()


def test_cli_plain_state_dict_needs_a_network(tmp_path, capsys):
    path = tmp_path / "state.pt"
    torch.save(get_network("small_unet", 2).state_dict(), path)
    assert main(["export", str(path), "--format", "torchscript", str(tmp_path / "m.pt")]) == 1
    assert "pass --network NAME --spatial-dims D" in capsys.readouterr().err
    out = tmp_path / "m.pt"
    assert main(["export", str(path), "--format", "torchscript", str(out), "--network", "small_unet"]) == 0
    assert out.is_file()
    assert main(["export", str(path), "--format", "torchscript", str(out), "--network", "small_unet"]) == 1
    assert "exists (pass --overwrite)" in capsys.readouterr().err
