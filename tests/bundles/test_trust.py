"""Bundles that run code load only with the user's opt-in (``trust=True``, ``--trust-bundle``); mtbio's own bundles
and plain network bundles load without it; ``mtbio predict --bundle`` honours the bundle's inferer settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.bundles._run import copy_bundle

MARKER = "MARKER"
TOUCH = f"__import__('pathlib').Path('{MARKER}').touch()"


def _bundle(root: Path, config: dict, weights: dict) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.yaml").write_text(yaml.safe_dump(config))
    torch.save(weights, root / "models" / "model.pt")
    return root


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path / "cwd"


def test_a_network_def_that_runs_code_needs_the_opt_in(tmp_path, cwd):
    from mtbio.bundle.trust import UntrustedBundleError
    from mtbio.inference.model_io import load_bundle_network

    conv = torch.nn.Conv2d(1, 2, 1)
    root = _bundle(tmp_path / "evil", {"network_def": f"$({TOUCH}, torch.nn.Conv2d(1, 2, 1))[1]"}, conv.state_dict())
    with pytest.raises(UntrustedBundleError, match=r"runs code \(network_def: expression .*--trust-bundle"):
        load_bundle_network(root)
    assert not (cwd / MARKER).exists()
    net = load_bundle_network(root, trust=True)  # the opt-in does run it
    assert (cwd / MARKER).exists() and isinstance(net, torch.nn.Conv2d)


def test_the_cli_refuses_an_untrusted_bundle_with_a_clear_error(tmp_path, cwd, capsys):
    import numpy as np
    import tifffile

    from mtbio.cli import main

    conv = torch.nn.Conv2d(1, 2, 1)
    root = _bundle(tmp_path / "evil", {"network_def": f"$({TOUCH}, torch.nn.Conv2d(1, 2, 1))[1]"}, conv.state_dict())
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((2, 16, 16), np.uint8))
    args = ["predict", str(tmp_path / "s.tif"), str(tmp_path / "o.zarr"), "--bundle", str(root), "--roi", "16", "16"]
    assert main(args) == 1
    assert "--trust-bundle" in capsys.readouterr().err
    assert not (cwd / MARKER).exists() and not (tmp_path / "o.zarr").exists()
    assert main([*args, "--trust-bundle"]) == 0
    assert (cwd / MARKER).exists() and (tmp_path / "o.zarr").exists()


def test_code_outside_the_network_is_never_run(tmp_path, cwd):
    """A plain network_def loads without the opt-in, and nothing else of the config (imports, workflows) runs."""
    from mtbio.inference.model_io import load_bundle_network
    from mtbio.networks import get_network

    net_def = {"_target_": "mtbio.networks.get_network", "name": "small_unet", "spatial_dims": 2, "channels": "@ch"}
    config = {"imports": [f"${TOUCH}"], "ch": [4, 8, 16, 32], "network_def": net_def, "run": f"${TOUCH}"}
    expected = get_network("small_unet", 2, channels=[4, 8, 16, 32])
    root = _bundle(tmp_path / "plain", config, expected.state_dict())
    net = load_bundle_network(root)
    assert all(torch.equal(v, expected.state_dict()[k]) for k, v in net.state_dict().items())
    assert not (cwd / MARKER).exists()


@pytest.mark.parametrize(
    ("network_def", "problem"),
    [
        ({"_target_": "monai.apps.download_url", "url": "x"}, "is not a network class"),
        ({"_target_": "builtins.eval", "source": "1"}, "is not a network class"),
        ({"_target_": "monai.networks.nets.UNet", "_mode_": "debug"}, "_mode_"),
        ("%other.yaml#network_def", "macro"),
        ({"_target_": "UNet", "spatial_dims": "$2"}, "expression"),
    ],
)
def test_what_counts_as_code(tmp_path, cwd, network_def, problem):
    from mtbio.bundle.trust import UntrustedBundleError
    from mtbio.inference.model_io import load_bundle_network

    root = _bundle(tmp_path / "b", {"network_def": network_def}, {})
    with pytest.raises(UntrustedBundleError, match=problem):
        load_bundle_network(root)


def test_the_cli_honours_the_bundle_inferer_settings(tmp_path, cwd, monkeypatch):
    """roi_size / overlap / normalize of the bundle's inference.yaml (merged over train.yaml) reach predict_volume
    unless the command line sets them."""
    import numpy as np
    import tifffile

    import mtbio.inference.predict as predict_module
    from mtbio.cli import main
    from mtbio.networks import get_network

    root = copy_bundle("masktwins_demo", tmp_path)
    text = (root / "configs" / "inference.yaml").read_text().replace("overlap: 0.25", "overlap: 0.5")
    (root / "configs" / "inference.yaml").write_text(text.replace("normalize: zscore_section", "normalize: zscore"))
    (root / "models").mkdir()
    torch.save(get_network("small_unet", 2).state_dict(), root / "models" / "model.pt")
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((2, 16, 16), np.uint8))
    seen: list[dict] = []
    # the run's options reach predict_volume as one InferenceSettings
    monkeypatch.setattr(predict_module, "predict_volume", lambda net, src, out, **kw: seen.append(vars(kw["settings"])))
    base = ["predict", str(tmp_path / "s.tif"), str(tmp_path / "o.zarr"), "--bundle", str(root)]
    assert main(base) == 0
    assert (seen[-1]["roi_size"], seen[-1]["overlap"], seen[-1]["normalize"]) == ((128, 128), 0.5, "zscore")
    assert main([*base, "--overlap", "0.1", "--roi", "64", "64", "--normalize", "none"]) == 0
    assert (seen[-1]["roi_size"], seen[-1]["overlap"], seen[-1]["normalize"]) == ((64, 64), 0.1, None)
