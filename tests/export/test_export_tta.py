"""``mtbio export --tta``: the exported ONNX / TorchScript module is the TTA-wrapped network (checked against it and
against an independent average of the flipped predictions); a bioimage.io package records the mode for
``mtbio predict --model``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from mtbio.cli import main
from mtbio.export.source import normalize_sample
from mtbio.inference.tta import TTAWrapper
from tests.export.test_export import _record, _reference

torch.set_num_threads(2)

#: a small_unet of one level with few channels (fast to trace, export and run 4 or 8 times)
TINY = {"channels": [4, 8], "strides": [2]}


def _flip_average(net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Mean softmax of the 4 in-plane flips, each flipped back (computed here, not by the wrapper)."""
    with torch.inference_mode():
        views = [torch.softmax(net(x.flip(a)).flip(a) if a else net(x), 1) for a in ((), (-2,), (-1,), (-2, -1))]
    return torch.stack(views).mean(0).numpy()


@pytest.mark.parametrize(("dims", "mode", "roi", "other"), [
    (2, "flips", (32, 32), (2, 1, 48, 40)),
    (2, "flips_rot90", (32, 32), (2, 1, 48, 48)),
    (3, "flips", (8, 32, 32), (1, 1, 8, 40, 32)),
])  # fmt: skip
def test_onnx_export_with_tta_matches_torch(tmp_path, capsys, dims, mode, roi, other):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    weights = _record(tmp_path, dims, TINY)
    out = tmp_path / "tta.onnx"
    argv = ["export", str(weights), "--format", "onnx", str(out), "--roi", *map(str, roi), "--tta", mode, "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tta"] == mode and summary["check"]["max_abs_diff"] <= 1e-4
    net = _reference(weights)
    x = normalize_sample(torch.randn(other) * 30 + 100)  # another batch and spatial size (dynamic axes)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.inference_mode():
        expected = TTAWrapper(net, mode)(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    probs = torch.softmax(torch.from_numpy(got), 1).numpy()
    if mode == "flips":
        np.testing.assert_allclose(probs, _flip_average(net, x), atol=1e-5)
    with torch.inference_mode():
        assert np.abs(probs - torch.softmax(net(x), 1).numpy()).max() > 1e-4  # not the plain network


def test_torchscript_export_with_tta_round_trips(tmp_path, capsys):
    """Without --tta the export is the network under the tools' default, flips (the validated recipe)."""
    from mtbio.inference.settings import TOOL_DEFAULTS

    assert TOOL_DEFAULTS.tta.value == "flips"
    weights = _record(tmp_path, 2, TINY)
    out = tmp_path / "tta.pt"
    argv = ["export", str(weights), "--format", "torchscript", str(out), "--roi", "32", "32"]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["check"]["max_abs_diff"] <= 1e-6
    x = normalize_sample(torch.randn(1, 1, 32, 32) * 30 + 100)  # the traced shape: no re-specialisation
    with torch.inference_mode():
        got = torch.softmax(torch.jit.load(str(out))(x), 1).numpy()
    np.testing.assert_allclose(got, _flip_average(_reference(weights), x), atol=1e-5)


def test_export_refuses_rot90_on_a_window_that_is_not_square(tmp_path, capsys):
    weights = _record(tmp_path, 2, TINY)
    argv = ["export", str(weights), "--format", "onnx", str(tmp_path / "m.onnx"), "--roi", "32", "64"]
    assert main([*argv, "--tta", "flips_rot90"]) == 1
    err = capsys.readouterr().err
    assert "needs a square window" in err and "(32, 64)" in err and not (tmp_path / "m.onnx").exists()
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--tta", "rotations"])
    assert exc.value.code == 2 and "invalid choice: 'rotations'" in capsys.readouterr().err


def _predict_with_package(tmp_path, folder, monkeypatch):
    """A function running ``mtbio predict s.tif o.zarr --model folder [flags]`` with ``predict_volume`` replaced;
    it returns the settings the command built."""
    import tifffile

    import mtbio.inference.predict as predict_module

    tifffile.imwrite(tmp_path / "s.tif", np.zeros((2, 32, 32), np.uint8))
    seen: list = []
    monkeypatch.setattr(predict_module, "predict_volume", lambda net, src, out, **kw: seen.append(kw["settings"]))
    base = ["predict", str(tmp_path / "s.tif"), str(tmp_path / "o.zarr"), "--model", str(folder)]

    def predict(*flags: str):
        assert main([*base, *flags]) == 0
        return seen[-1]

    return predict


def test_a_package_records_tta_for_mtbio_predict(tmp_path, capsys, monkeypatch):
    """config.mtbio.tta of a package (plain weights: bioimage.io tools predict without it) is the default of
    ``mtbio predict --model``; ``--tta`` wins; a package exported without ``--tta`` states none; a bad value is an
    error naming the rdf."""
    pytest.importorskip("bioimageio.spec")

    from mtbio.export.bioimageio import load_package

    weights = _record(tmp_path, 2, TINY)
    folder = tmp_path / "pkg"
    argv = ["export", str(weights), "--format", "bioimageio", str(folder), "--roi", "32", "32", "--no-test"]
    assert main([*argv, "--no-onnx", "--tta", "flips"]) == 0
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    assert (
        rdf["config"]["mtbio"]["tta"] == "flips"
        and "test-time augmentation `flips`" in (folder / "README.md").read_text()
    )
    x = torch.from_numpy(np.load(folder / "test_input.npy"))
    with torch.inference_mode():  # the package's test output is the plain network's
        plain = torch.softmax(_reference(weights)(normalize_sample(x)), 1).numpy()
    np.testing.assert_allclose(np.load(folder / "test_output.npy"), plain, atol=1e-6)
    assert load_package(folder).tta == "flips"

    predict = _predict_with_package(tmp_path, folder, monkeypatch)
    assert predict().tta.value == "flips" and predict("--tta", "none").tta.value == "none"

    plain_folder = tmp_path / "plain"
    assert main(["export", str(weights), "--format", "bioimageio", str(plain_folder), "--no-test", "--no-onnx"]) == 0
    assert yaml.safe_load((plain_folder / "rdf.yaml").read_text())["config"]["mtbio"]["tta"] is None
    assert load_package(plain_folder).tta is None
    capsys.readouterr()

    text = (folder / "rdf.yaml").read_text().replace("tta: flips", "tta: mirror")
    (folder / "rdf.yaml").write_text(text)
    with pytest.raises(ValueError, match=r"rdf.yaml: config.mtbio.tta: tta must be one of"):
        load_package(folder)


def test_a_package_records_planes_and_onnx_refuses_them(tmp_path, capsys, monkeypatch):
    """config.mtbio.planes of a package is the default of ``mtbio predict --model`` (``--planes`` wins); an ONNX /
    TorchScript file is the 2D network itself, so ``--planes xyz`` / ``auto`` is refused there, naming the way."""
    pytest.importorskip("bioimageio.spec")

    from mtbio.export.bioimageio import load_package

    weights = _record(tmp_path, 2, TINY)
    assert main(["export", str(weights), "--format", "onnx", str(tmp_path / "m.onnx"), "--planes", "xyz"]) == 1
    assert "--planes xyz: the onnx export holds the 2D network" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
    folder = tmp_path / "pkg"
    argv = ["export", str(weights), "--format", "bioimageio", str(folder), "--roi", "32", "32", "--no-test"]
    assert main([*argv, "--no-onnx", "--planes", "xyz"]) == 0
    assert yaml.safe_load((folder / "rdf.yaml").read_text())["config"]["mtbio"]["planes"] == "xyz"
    assert "planes `xyz`" in (folder / "README.md").read_text() and load_package(folder).planes == "xyz"
    predict = _predict_with_package(tmp_path, folder, monkeypatch)
    assert predict().planes.value == "xyz" and predict("--planes", "xy").planes.value == "xy"
    capsys.readouterr()
    text = (folder / "rdf.yaml").read_text().replace("planes: xyz", "planes: xz")
    (folder / "rdf.yaml").write_text(text)
    with pytest.raises(ValueError, match=r"rdf.yaml: config.mtbio.planes: planes must be one of"):
        load_package(folder)
