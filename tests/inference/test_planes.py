"""Ortho-plane consensus (mtbio.inference.planes): the three planes' images, their average, the auto rule, and
predict_volume / predict_in_memory running a 2D network along xy, xz and yz."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtbio.inference import predict_volume
from mtbio.inference.planes import OrthoPlanes, plane_window, resolve_planes
from mtbio.inference.settings import InferenceSettings, Planes
from mtbio.uda.evaluate import predict_in_memory


class _RowCol(torch.nn.Module):
    """A 2D "network" whose foreground logit is a fixed function of each pixel's value and of its row and column in
    the image it is given, so that the plane an image came from shows in the output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        rows = torch.arange(h, dtype=x.dtype)[:, None] / 16.0
        cols = torch.arange(w, dtype=x.dtype)[None, :] / 32.0
        fg = x[:, :1] + rows - cols
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


def _prob(net, images):
    return torch.softmax(net(images), dim=1)


def test_orthoplanes_averages_the_three_planes_log_probabilities():
    torch.manual_seed(0)
    net = _RowCol()
    x = torch.randn(2, 1, 16, 32, 48)
    out = OrthoPlanes(net, "softmax", image_batch=5)(x)
    assert out.shape == (2, 2, 16, 32, 48)
    b, c, d, h, w = x.shape
    xy = torch.stack([_prob(net, x[:, :, z]) for z in range(d)], dim=2)  # images H x W
    xz = torch.stack([_prob(net, x[:, :, :, y]) for y in range(h)], dim=3)  # images D x W
    yz = torch.stack([_prob(net, x[:, :, :, :, i]) for i in range(w)], dim=4)  # images D x H
    # the mean of the planes' log-probabilities: softmax of it is their renormalised geometric mean
    geometric = (xy * xz * yz) ** (1 / 3)
    expected = geometric / geometric.sum(dim=1, keepdim=True)
    torch.testing.assert_close(torch.softmax(out, dim=1), expected, atol=1e-5, rtol=1e-5)
    # two classes: the foreground probability is sigmoid of the planes' mean log-odds
    logit = lambda p: torch.log(p[:, 1]) - torch.log(p[:, 0])  # noqa: E731
    torch.testing.assert_close(
        torch.softmax(out, dim=1)[:, 1], torch.sigmoid((logit(xy) + logit(xz) + logit(yz)) / 3), atol=1e-5, rtol=1e-5
    )
    arithmetic = (xy + xz + yz) / 3
    assert (torch.softmax(out, dim=1) - arithmetic).abs().max() > 1e-3  # not the probability mean


def test_orthoplanes_pads_images_to_the_multiple_and_crops_back():
    seen = []

    class Strict(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            assert x.shape[-2] % 16 == 0 and x.shape[-1] % 16 == 0
            return torch.cat([-x, x], dim=1)

    out = OrthoPlanes(Strict(), "softmax", image_batch=64)(torch.randn(1, 1, 10, 20, 33))
    assert out.shape == (1, 2, 10, 20, 33) and torch.isfinite(out).all()
    assert set(seen) == {(32, 48), (16, 48), (16, 32)}


def test_orthoplanes_refuses_2d_input():
    with pytest.raises(ValueError, match="3D windows"):
        OrthoPlanes(_RowCol())(torch.zeros(1, 1, 16, 16))


@pytest.mark.parametrize(
    ("planes", "shape", "dims", "voxel", "expected"),
    [
        ("auto", (40, 64, 64), 2, (5.0, 5.0, 5.0), Planes.XYZ),
        ("auto", (40, 64, 64), 2, (45.0, 4.6, 4.6), Planes.XY),  # serial sections: anisotropic
        ("auto", (40, 64, 64), 2, None, Planes.XY),  # unknown voxel size: never guessed
        ("auto", (8, 64, 64), 2, (5.0, 5.0, 5.0), Planes.XY),  # too thin
        ("auto", (40, 64, 64), 3, (5.0, 5.0, 5.0), Planes.XY),  # a 3D network
        ("auto", (64, 64), 2, (5.0, 5.0), Planes.XY),  # one image
        ("xyz", (8, 64, 64), 2, None, Planes.XYZ),  # asked for: done
        ("xy", (40, 64, 64), 2, (5.0, 5.0, 5.0), Planes.XY),
    ],
)
def test_resolve_planes(planes, shape, dims, voxel, expected):
    assert resolve_planes(planes, shape=shape, roi_dims=dims, voxel_size=voxel) is expected


def test_resolve_planes_refuses_xyz_where_it_cannot_work():
    with pytest.raises(ValueError, match=r"vol\.zarr has voxel size \(45\.0, 4\.6, 4\.6\)"):
        resolve_planes("xyz", shape=(40, 64, 64), roi_dims=2, voxel_size=(45, 4.6, 4.6), where="vol.zarr")
    with pytest.raises(ValueError, match="3D"):
        resolve_planes("xyz", shape=(40, 64, 64), roi_dims=3, voxel_size=None)
    with pytest.raises(ValueError, match="3D"):
        resolve_planes("xyz", shape=(64, 64), roi_dims=2, voxel_size=None)
    with pytest.raises(ValueError, match="planes must be one of"):
        InferenceSettings(planes="xz")
    with pytest.raises(ValueError, match="3D"):
        InferenceSettings(planes="xyz", roi_size=(16, 32, 32))


def test_plane_window():
    assert plane_window((384, 384), 40) == (48, 384, 384)
    assert plane_window((384, 384), 1000) == (384, 384, 384)
    assert plane_window((128, 256), 165) == (176, 128, 256)


def _volume(shape=(20, 40, 48), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * 10 + 100).astype(np.float32)


def test_predict_volume_xyz_matches_the_in_memory_prediction(tmp_path):
    torch.set_num_threads(2)
    vol = _volume()
    net = _RowCol()
    settings = InferenceSettings(
        roi_size=(32, 32), activation="softmax", dtype="float32", normalize="zscore_section", planes="xyz",
        block_shape=(8, 40, 48), chunks=(8, 16, 16), device="cpu",
    )  # fmt: skip
    arr = predict_volume(net, vol, tmp_path / "p.zarr", settings=settings)
    ref = predict_in_memory(net, vol, roi_size=(32, 32), planes="xyz", batch_size=4)
    np.testing.assert_allclose(np.asarray(arr[1]), ref, atol=1e-4)
    plain = predict_in_memory(net, vol, roi_size=(32, 32), planes="xy")
    assert np.abs(ref - plain).max() > 0.05  # the planes changed the answer
    from mtbio.data.store import open_prediction_store

    config = open_prediction_store(tmp_path / "p.zarr").meta["config"]
    assert config["planes"] == "xyz" and config["window"] == [32, 32, 32] and config["consensus"] == "mean_log_odds"


def test_xyz_blocks_span_the_depth_so_the_dask_path_runs_each_window_once(tmp_path):
    from mtbio.data.store import open_prediction_store
    from mtbio.inference.distributed import predict_volume_dask

    torch.set_num_threads(2)
    vol = _volume((40, 32, 32))
    settings = InferenceSettings(
        roi_size=(32, 32), activation="softmax", dtype="float32", normalize="zscore_section", planes="xyz",
        chunks=(8, 32, 32), device="cpu",
    )  # fmt: skip
    arr = predict_volume(_RowCol(), vol, tmp_path / "one.zarr", settings=settings)
    config = open_prediction_store(tmp_path / "one.zarr").meta["config"]
    assert config["block_shape"][0] == 40 and config["chunks"][0] == 8  # one slab of 5 chunks per column
    dask = predict_volume_dask(_RowCol(), vol, tmp_path / "dask.zarr", n_workers=1, settings=settings)
    np.testing.assert_allclose(np.asarray(dask[:]), np.asarray(arr[:]), atol=1e-5)


def test_predict_volume_auto_reads_the_voxel_size(tmp_path):
    torch.set_num_threads(2)
    vol = _volume((32, 32, 32))
    base = dict(roi_size=(32, 32), activation="softmax", dtype="float32", normalize="auto", planes="auto", device="cpu")
    iso = predict_volume(
        _RowCol(), vol, tmp_path / "iso.zarr", settings=InferenceSettings(**base, voxel_size=(5, 5, 5))
    )
    aniso = predict_volume(
        _RowCol(), vol, tmp_path / "an.zarr", settings=InferenceSettings(**base, voxel_size=(40, 5, 5))
    )
    xyz = predict_in_memory(_RowCol(), vol, roi_size=(32, 32), planes="xyz")
    xy = predict_in_memory(_RowCol(), vol, roi_size=(32, 32), planes="xy")
    np.testing.assert_allclose(np.asarray(iso[1]), xyz, atol=1e-4)
    np.testing.assert_allclose(np.asarray(aniso[1]), xy, atol=1e-4)


def test_xyz_refuses_rot90_tta_before_any_window_runs(tmp_path):
    settings = InferenceSettings(
        roi_size=(32, 32), activation="softmax", planes="auto", tta="flips_rot90", voxel_size=(5, 5, 5)
    )
    with pytest.raises(ValueError, match="not square; use tta 'flips' or planes 'xy'"):
        predict_volume(_RowCol(), _volume((32, 32, 32)), tmp_path / "p.zarr", settings=settings)
    assert not (tmp_path / "p.zarr").exists()
    with pytest.raises(ValueError, match="not square"):
        predict_in_memory(_RowCol(), _volume(), roi_size=(32, 32), planes="xyz", tta="flips_rot90")
    # section by section it runs: an unknown voxel size makes auto choose xy
    prob = predict_in_memory(_RowCol(), _volume(), roi_size=(32, 32), planes="auto", tta="flips_rot90")
    assert prob.shape == _volume().shape


def test_predict_volume_xyz_refuses_an_anisotropic_input(tmp_path):
    settings = InferenceSettings(roi_size=(32, 32), activation="softmax", planes="xyz", voxel_size=(50, 5, 5))
    with pytest.raises(ValueError, match="isotropic"):
        predict_volume(_RowCol(), _volume((32, 32, 32)), tmp_path / "p.zarr", settings=settings)
    assert not (tmp_path / "p.zarr").exists()


def test_a_store_begun_with_another_consensus_rule_is_not_resumed(tmp_path):
    import zarr

    torch.set_num_threads(2)
    vol = _volume((20, 32, 32))
    settings = InferenceSettings(
        roi_size=(32, 32), activation="softmax", dtype="float32", normalize="zscore_section", planes="xyz",
        device="cpu",
    )  # fmt: skip
    predict_volume(_RowCol(), vol, tmp_path / "p.zarr", settings=settings)
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="r+")
    attrs = dict(group.attrs["mtbio"])
    del attrs["config"]["consensus"]  # as written before the rule was recorded (the probability mean)
    group.attrs["mtbio"] = {**attrs, "complete": False}
    with pytest.raises(ValueError, match="consensus"):
        predict_volume(_RowCol(), vol, tmp_path / "p.zarr", settings=settings, resume=True)
