"""``mtbio predict`` with a tiny saved network (bundle folder and --network + --checkpoint)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
import zarr
from monai.inferers import sliding_window_inference

from mtbio.cli import main
from mtbio.data.store import open_prediction_store

from ._nets import tiny_unet

NET_YAML = """network_def:
  _target_: monai.networks.nets.UNet
  spatial_dims: 3
  in_channels: 1
  out_channels: 2
  channels: [4, 8]
  strides: [2]
  num_res_units: 1
roi_size: [8, 16, 16]
"""


@pytest.fixture
def bundle(tmp_path):
    root = tmp_path / "bundle"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.yaml").write_text(NET_YAML)
    torch.save(tiny_unet(3, seed=5).state_dict(), root / "models" / "model.pt")
    return root


@pytest.fixture
def stack(tmp_path):
    vol = (np.random.default_rng(0).random((10, 24, 20)) * 255).astype(np.uint8)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, vol)
    return path, vol


def test_bundle_prediction_matches_the_oracle_and_writes_a_mask(tmp_path, bundle, stack, capsys):
    path, vol = stack
    out = tmp_path / "out.pred.zarr"
    plain = ["--tta", "none"]  # the network itself (the tools' default averages 4 flips: tests/inference/test_tta.py)
    assert main(["predict", str(path), str(out), "--bundle", str(bundle), "--dtype", "float32", "--mask", *plain]) == 0
    net = tiny_unet(3, seed=5)
    x = vol.astype(np.float64)
    z = torch.from_numpy(((x - x.mean()) / x.std()).astype(np.float32))[None, None]
    with torch.no_grad():
        ref = torch.softmax(sliding_window_inference(z, (8, 16, 16), 4, net, mode="gaussian")[0], 0).numpy()
    store = open_prediction_store(out)
    np.testing.assert_allclose(np.asarray(store.array[:]), ref, atol=1e-4)
    mask = np.asarray(zarr.open_group(str(out))["labels/mask/0"][:])
    assert np.array_equal(mask, (np.asarray(store.array[1]) >= 0.5).astype(np.uint8))
    # rerunning without --resume / --overwrite is refused with one clean line
    assert main(["predict", str(path), str(out), "--bundle", str(bundle)]) == 1
    assert "exists" in capsys.readouterr().err
    assert (
        main(["predict", str(path), str(out), "--bundle", str(bundle), "--resume", "--dtype", "float32", *plain]) == 0
    )


def test_network_name_with_checkpoint_section_wise_uint8(tmp_path, stack):
    from mtbio.networks import get_network

    path, vol = stack
    torch.manual_seed(0)
    net = get_network("small_unet", 2, channels=(4, 8), strides=(2,)).eval()
    ckpt = tmp_path / "w.pt"
    torch.save({"state_dict": net.state_dict()}, ckpt)
    out = tmp_path / "o.zarr"
    code = main(
        ["predict", str(path), str(out), "--network", "small_unet", "--checkpoint", str(ckpt), "--roi", "16", "16"]
        + ["--normalize", "none", "--batch-size", "2"]
    )
    # get_network's defaults differ from the saved small net: the checkpoint does not fit -> clean error
    assert code == 1
    net = get_network("small_unet", 2).eval()
    torch.save(net.state_dict(), ckpt)
    code = main(
        ["predict", str(path), str(out), "--network", "small_unet", "--checkpoint", str(ckpt), "--roi", "16", "16"]
        + ["--chunks", "4", "24", "20", "--tta", "none"]
    )
    assert code == 0
    store = open_prediction_store(out)
    assert store.dtype == np.uint8 and store.meta["config"]["section_wise"]
    x = vol.astype(np.float64)
    # --normalize auto on a 2D network = per-section z-score (mtbio's training rule)
    section = torch.from_numpy(((x[3] - x[3].mean()) / x[3].std()).astype(np.float32))[None, None]
    with torch.no_grad():
        ref = torch.softmax(sliding_window_inference(section, (16, 16), 4, net, mode="gaussian"), 1)[0, 1].numpy()
    assert np.abs(np.asarray(store.array[1, 3]).astype(np.float32) - np.rint(ref * 255)).max() <= 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "exactly one of --bundle"),
        (["--bundle", "BUNDLE", "--network", "unet"], "exactly one of --bundle"),
        (["--bundle", "MISSING"], "bundle folder does not exist"),
        (["--bundle", "BUNDLE", "--checkpoint", "MISSING"], "checkpoint does not exist"),
        (["--bundle", "BUNDLE", "--roi", "8", "16"], "network rejected"),
        (["--bundle", "BUNDLE", "--activation", "none", "--mask"], "--mask needs"),
    ],
)
def test_cli_errors_are_one_clean_line(tmp_path, bundle, stack, capsys, extra, message):
    path, _ = stack
    extra = [str(bundle) if e == "BUNDLE" else str(tmp_path / "missing") if e == "MISSING" else e for e in extra]
    assert main(["predict", str(path), str(tmp_path / "o.zarr"), *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mtbio predict: error:") and message in err[0]


def test_missing_input_and_key(tmp_path, bundle, capsys):
    assert main(["predict", str(tmp_path / "nope.h5"), str(tmp_path / "o.zarr"), "--bundle", str(bundle)]) == 1
    assert "nope.h5" in capsys.readouterr().err
    import h5py

    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["raw"] = np.zeros((8, 16, 16), np.uint8)
    assert (
        main(["predict", str(tmp_path / "v.h5"), str(tmp_path / "o.zarr"), "--bundle", str(bundle), "--key", "x"]) == 1
    )
    assert "v.h5" in capsys.readouterr().err


def test_several_inputs_go_through_predict_many(tmp_path, bundle, stack):
    path, vol = stack
    second = tmp_path / "second.tif"
    tifffile.imwrite(second, vol[:, ::-1].copy())
    out_dir = tmp_path / "preds"
    assert main(["predict", str(path), str(second), str(out_dir), "--bundle", str(bundle)]) == 0
    a = open_prediction_store(out_dir / "stack.pred.zarr")
    b = open_prediction_store(out_dir / "second.pred.zarr")
    assert a.spatial_shape == b.spatial_shape == vol.shape
    assert not np.array_equal(np.asarray(a.array[:]), np.asarray(b.array[:]))
    assert (out_dir / "summary.json").exists()


def test_cli_dask_local_cluster_equals_single_process(tmp_path, bundle, stack):
    path, _ = stack
    one, two = tmp_path / "one.zarr", tmp_path / "two.zarr"
    common = ["--bundle", str(bundle), "--dtype", "float32", "--chunks", "4", "24", "20"]
    assert main(["predict", str(path), str(one), *common]) == 0
    assert main(["predict", str(path), str(two), *common, "--dask", "--dask-workers", "1"]) == 0
    a, b = open_prediction_store(one), open_prediction_store(two)
    np.testing.assert_allclose(np.asarray(a.array[:]), np.asarray(b.array[:]), atol=1e-5, rtol=0)


def test_predict_prefers_passive_openmp_only_before_torch_and_without_a_user_choice(monkeypatch):
    """``mtbio predict`` sets OMP_WAIT_POLICY=PASSIVE when OpenMP is not loaded yet and the user chose nothing."""
    import os
    import subprocess
    import sys

    from mtbio.cli import prefer_passive_omp

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert "torch" in sys.modules  # this test process: too late, left alone
    assert prefer_passive_omp("predict") is False and "OMP_WAIT_POLICY" not in os.environ
    code = (
        "import os, sys; from mtbio.cli import prefer_passive_omp as p; "
        "print(p('train'), p('predict'), os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["False", "True", "PASSIVE", "False"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's choice wins
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["False", "False", "ACTIVE", "False"]
