"""Prediction at the model's voxel size: resampled in and back, only when needed, old weights unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from mtbio.cli import main
from mtbio.data.resample import ResampledVolume
from mtbio.data.store import open_prediction_store
from mtbio.inference import predict_volume
from mtbio.inference.resampled import plan_resampling, predict_at_model_voxel_size

ROI = (64, 64)
COMMON = dict(roi_size=ROI, activation="softmax", dtype="float32", normalize="zscore_section")


class BlobDetector(torch.nn.Module):
    """A fixed difference of Gaussians (sigmas 2 and 5 px): a scale-dependent detector of ~4 px blobs."""

    def __init__(self) -> None:
        super().__init__()
        r = np.arange(-12, 13)
        yy, xx = np.meshgrid(r, r, indexing="ij")
        g = [np.exp(-(yy**2 + xx**2) / (2 * s * s)) / (2 * np.pi * s * s) for s in (2.0, 5.0)]
        self.conv = torch.nn.Conv2d(1, 1, 25, padding=12, bias=False)
        with torch.no_grad():
            self.conv.weight[:] = torch.from_numpy((g[0] - g[1]) * -40).float()[None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.cat([-y, y], dim=1)


def _native(seed: int = 0, shape=(1, 128, 128)) -> np.ndarray:
    """Dark blobs of radius ~4 px on a bright background (5 nm voxels)."""
    rng = np.random.default_rng(seed)
    img = np.full(shape, 200.0, np.float32)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    for z in range(shape[0]):
        for cy, cx in rng.integers(8, shape[1] - 8, size=(25, 2)):
            img[z][(yy - cy) ** 2 + (xx - cx) ** 2 < 16] = 60.0
    return img


def _zarr(path, data, voxel_size):
    arr = zarr.open_array(str(path), mode="w", shape=data.shape, dtype=data.dtype, chunks=data.shape)
    arr[:] = data
    if voxel_size is not None:
        arr.attrs["voxel_size"] = list(voxel_size)
    return path


@pytest.fixture
def pair(tmp_path):
    """A native stack (5 nm) and its 2x in-plane downsampling (10 nm, recorded in the zarr attrs)."""
    native = _native()
    down = ResampledVolume(native, (1.0, 0.5, 0.5))[...]
    return native, _zarr(tmp_path / "down.zarr", down, (5.0, 10.0, 10.0))


def test_downsampled_input_predicted_with_resampling_equals_the_native_prediction(tmp_path, pair):
    native, down = pair
    net = BlobDetector().eval()
    ref = predict_volume(net, native, tmp_path / "native.zarr", **COMMON)[1]
    ref_down = ResampledVolume(np.asarray(ref), (1.0, 0.5, 0.5))[...]  # the native prediction on the 10 nm grid
    res = predict_at_model_voxel_size(net, down, tmp_path / "r.zarr", model_voxel_size=(5.0, 5.0), **COMMON)
    assert res.plan is not None and res.plan.factors == (1.0, 2.0, 2.0) and "resampling" in res.note
    store = open_prediction_store(tmp_path / "r.zarr")
    assert store.array.shape == (2, 1, 64, 64)
    assert store.voxel_size == (5.0, 10.0, 10.0)  # the input's grid and voxel size
    resampled = {"from": [5.0, 10.0, 10.0], "to": [5.0, 5.0, 5.0], "model_grid_shape": [1, 128, 128]}
    assert store.meta["resampled"] == resampled
    assert not (tmp_path / ".r.zarr.model-grid").exists()  # the temporary store is gone
    err_with = np.abs(store.probability() - ref_down).mean()
    plain = predict_at_model_voxel_size(
        net, down, tmp_path / "p.zarr", model_voxel_size=(5.0, 5.0), resample=False, **COMMON
    )
    assert plain.plan is None and "--no-resample" in plain.note
    err_without = np.abs(open_prediction_store(tmp_path / "p.zarr").probability() - ref_down).mean()
    assert err_with < 0.04 and err_with < err_without / 4, (err_with, err_without)


def test_no_resampling_within_ten_percent(tmp_path):
    data = _native(1, (2, 64, 64))
    src = _zarr(tmp_path / "in.zarr", data, (5.0, 5.4, 5.4))
    net = BlobDetector().eval()
    res = predict_at_model_voxel_size(net, src, tmp_path / "o.zarr", model_voxel_size=(5.0, 5.0), **COMMON)
    assert res.plan is None and "no resampling" in res.note
    store = open_prediction_store(tmp_path / "o.zarr")
    assert "resampled" not in store.meta and store.voxel_size == (5.0, 5.4, 5.4)
    direct = predict_volume(net, src, tmp_path / "d.zarr", **COMMON)
    np.testing.assert_array_equal(store.array[:], direct[:])


def test_2d_network_never_resamples_z():
    plan = plan_resampling((50.0, 10.0, 10.0), (5.0, 5.0), input_ndim=3, network_dims=2)
    assert plan.factors == (1.0, 2.0, 2.0) and plan.model_voxel_size == (50.0, 5.0, 5.0)
    plan = plan_resampling((50.0, 10.0, 10.0), (5.0, 5.0, 5.0), input_ndim=3, network_dims=2)  # z ignored
    assert plan.factors[0] == 1.0
    assert plan_resampling((50.0, 5.0, 5.0), (5.0, 5.0), input_ndim=3, network_dims=2) is None
    assert plan_resampling((50.0, 5.0, 5.0), (5.0, 5.0, 5.0), input_ndim=3, network_dims=3).factors == (10.0, 1, 1)


def test_missing_voxel_size_warns_and_predicts_as_is(tmp_path):
    data = _native(2, (1, 64, 64))
    with pytest.warns(UserWarning, match="no voxel size"):
        res = predict_at_model_voxel_size(
            BlobDetector(), data, tmp_path / "o.zarr", model_voxel_size=(5.0, 5.0), **COMMON
        )
    assert res.plan is None
    store = open_prediction_store(tmp_path / "o.zarr")
    assert store.array.shape == (2, 1, 64, 64) and store.voxel_size is None


def _weights(tmp_path, voxel_size):
    """A small_unet weights file: the record with ``voxel_size`` or (None) a plain state_dict (old weights)."""
    from mtbio.networks import get_network
    from mtbio.networks.weights import WeightsRecord, write_weights

    torch.manual_seed(0)
    net = get_network("small_unet", 2)
    path = tmp_path / "w.pt"
    if voxel_size is None:
        torch.save(net.state_dict(), path)
    else:
        rec = WeightsRecord.from_network(
            net, network="small_unet", spatial_dims=2, voxel_size=list(voxel_size), normalization="zscore_section"
        )
        write_weights(rec, path)
    return path


def _cli(tmp_path, src, weights, *extra):
    out = tmp_path / "cli.zarr"
    args = [
        "predict",
        str(src),
        str(out),
        "--network",
        "small_unet",
        "--checkpoint",
        str(weights),
        "--roi",
        "64",
        "64",
        "--overwrite",
        *extra,
    ]
    assert main(args) == 0
    return open_prediction_store(out)


def test_cli_voxel_size_option_overrides_and_no_resample_opts_out(tmp_path, capsys):
    import tifffile

    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, _native(3, (2, 48, 48)).astype(np.uint8))  # no resolution tags: voxel size unknown
    weights = _weights(tmp_path, (5.0, 5.0))
    with pytest.warns(UserWarning, match="no voxel size"):
        store = _cli(tmp_path, tif, weights)
    assert "resampled" not in store.meta and store.array.shape[-2:] == (48, 48)
    store = _cli(tmp_path, tif, weights, "--voxel-size", "40", "10", "10")
    assert store.meta["resampled"]["to"] == [40.0, 5.0, 5.0]
    assert store.meta["resampled"]["model_grid_shape"] == [2, 96, 96]
    assert store.voxel_size == (40.0, 10.0, 10.0) and store.array.shape[-2:] == (48, 48)
    assert "resampling the input from (40, 10, 10) nm to the model's (40, 5, 5) nm" in capsys.readouterr().out
    store = _cli(tmp_path, tif, weights, "--voxel-size", "40", "10", "10", "--no-resample")
    assert "resampled" not in store.meta and store.voxel_size == (40.0, 10.0, 10.0)
    assert "--no-resample: predicted as it is" in capsys.readouterr().out
    base = ["predict", str(tif), str(tmp_path / "x.zarr"), "--network", "small_unet", "--checkpoint", str(weights)]
    assert main([*base, "--voxel-size", "10", "10"]) == 1  # 2 values for a 3D stack: one clean error line
    assert "2 entries but the volume has 3 spatial axes" in capsys.readouterr().err
    assert main([*base, "--dask"]) == 1  # --dask does not resample: it asks for --no-resample
    assert "--no-resample" in capsys.readouterr().err


def test_old_weights_without_voxel_size_load_and_do_not_resample(tmp_path, pair, capsys):
    _, down = pair
    store = _cli(tmp_path, down, _weights(tmp_path, None))
    assert "resampled" not in store.meta and store.voxel_size == (5.0, 10.0, 10.0)
    assert "carry no voxel size" in capsys.readouterr().out
