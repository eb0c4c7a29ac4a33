"""Inputs of every kind (numpy, zarr, OME-Zarr, h5, tif, dask, section folder) and every bad input."""

from __future__ import annotations

import os

import dask.array as da
import h5py
import numpy as np
import pytest
import tifffile
import torch
import zarr

from mtbio.data.store import open_prediction_store
from mtbio.inference.predict import predict_volume

from ._nets import conv_net

KW = dict(roi_size=(4, 8, 8), chunks=(3, 8, 8))


@pytest.fixture(scope="module")
def vol():
    return (np.random.default_rng(0).random((7, 12, 10)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def reference(vol, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    return np.asarray(predict_volume(conv_net(3), vol, out, **KW)[:])


def _write(kind, vol, tmp_path):
    if kind == "zarr":
        path = tmp_path / "v.zarr"
        zarr.create_array(str(path), data=vol, chunks=(2, 12, 10))
        return path, {}
    if kind == "ome-zarr":
        path = tmp_path / "v.ome.zarr"
        g = zarr.open_group(str(path), mode="w")
        g.create_array("0", data=vol, chunks=(2, 12, 10))
        axes = [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]
        ds = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [30.0, 4.0, 4.0]}]}]
        g.attrs["ome"] = {"version": "0.5", "multiscales": [{"version": "0.5", "axes": axes, "datasets": ds}]}
        return path, {}
    if kind == "h5":
        path = tmp_path / "v.h5"
        with h5py.File(path, "w") as f:
            f["raw"] = vol
            f["other"] = vol
        return path, {"key": "raw"}
    if kind == "tif":
        path = tmp_path / "v.tif"
        tifffile.imwrite(path, vol)
        return path, {}
    if kind == "dask":
        return da.from_array(vol, chunks=(3, 6, 5)), {}
    if kind == "h5py":
        f = h5py.File(tmp_path / "d.h5", "w")
        f["raw"] = vol
        return f["raw"], {}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["zarr", "ome-zarr", "h5", "tif", "dask", "h5py"])
def test_every_input_kind_gives_the_numpy_result(tmp_path, vol, reference, kind):
    source, extra = _write(kind, vol, tmp_path)
    out = predict_volume(conv_net(3), source, tmp_path / "p.zarr", **KW, **extra)
    assert np.array_equal(np.asarray(out[:]), reference)


def test_voxel_size_is_copied_from_the_input(tmp_path, vol):
    source, _ = _write("ome-zarr", vol, tmp_path)
    predict_volume(conv_net(3), source, tmp_path / "p.zarr", **KW)
    store = open_prediction_store(tmp_path / "p.zarr")
    assert store.voxel_size == (30.0, 4.0, 4.0)
    assert store.meta["source"]["path"] == str(source.resolve())


def test_missing_h5_key_names_the_file(tmp_path, vol):
    source, _ = _write("h5", vol, tmp_path)
    with pytest.raises((KeyError, ValueError), match="v.h5"):
        predict_volume(conv_net(3), source, tmp_path / "p.zarr", key="nope", **KW)
    assert not (tmp_path / "p.zarr").exists()


def test_missing_input_path(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError), match="absent.zarr"):
        predict_volume(conv_net(3), tmp_path / "absent.zarr", tmp_path / "p.zarr", **KW)


@pytest.mark.parametrize(
    ("source", "kwargs", "match"),
    [
        (np.zeros((4, 4, 4, 4), np.float32), dict(roi_size=(2, 2, 2, 2)), "2D .* or 3D"),
        (np.array([["a"]]), dict(roi_size=(1, 1)), "not numeric"),
        (np.zeros((5, 8, 8), np.complex64), dict(roi_size=(4, 8, 8)), "not numeric"),
        (np.zeros((8, 8), np.float32), dict(roi_size=(4, 4, 4)), "does not fit"),
        (np.zeros((5, 8, 8), np.float32), dict(roi_size=(4, 8, 8), dtype="int16"), "dtype must be"),
        (np.zeros((5, 8, 8), np.float32), dict(roi_size=(4, 8, 8), dtype="uint8"), "needs activation"),
        (np.zeros((5, 8, 8), np.float32), dict(roi_size=(4, 8, 8), activation="relu"), "activation"),
        (np.zeros((5, 8, 8), np.float32), dict(roi_size=(4, 8, 8), mode="median"), "mode"),
        (np.zeros((5, 8, 8), np.float32), dict(roi_size=(4, 8, 8), overlap=1.0), "overlap"),
        (np.zeros((5, 8, 8), np.float32), dict(roi_size=(4, 8, 8), batch_size=0), "batch_size"),
        (np.zeros((5, 8, 8), np.float32), dict(roi_size=(4, 8, 8), normalize=(0.0, 0.0)), "std > 0"),
        ([1, 2, 3], dict(roi_size=(3,)), "sliceable"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, source, kwargs, match):
    with pytest.raises(ValueError, match=match):
        predict_volume(conv_net(3), source, tmp_path / "p.zarr", **kwargs)
    assert not (tmp_path / "p.zarr").exists()


def test_network_of_the_wrong_rank_or_channels(tmp_path):
    vol = np.zeros((6, 16, 16), np.float32)
    with pytest.raises(ValueError, match="network"):
        predict_volume(conv_net(2), vol, tmp_path / "a.zarr", roi_size=(4, 8, 8))
    two_channel_in = torch.nn.Conv3d(2, 2, 3, padding=1)
    with pytest.raises(ValueError, match="one input channel"):
        predict_volume(two_channel_in, vol, tmp_path / "b.zarr", roi_size=(4, 8, 8))
    shrinking = torch.nn.Conv3d(1, 2, 3)  # no padding: output smaller than the window
    with pytest.raises(ValueError, match=r"expected \(1, C"):
        predict_volume(shrinking, vol, tmp_path / "c.zarr", roi_size=(4, 8, 8))


def test_unwritable_output_location_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="cannot write the prediction store"):
        predict_volume(conv_net(3), np.zeros((4, 8, 8), np.float32), blocker / "p.zarr", roi_size=(4, 8, 8))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="ro/p.zarr"):
            predict_volume(conv_net(3), np.zeros((4, 8, 8), np.float32), ro / "p.zarr", roi_size=(4, 8, 8))
    finally:
        ro.chmod(0o700)
