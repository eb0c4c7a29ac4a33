"""2.5D networks (``context_sections``) in the streaming predictor: the record decides, neighbours are read across
block borders, the ends are replicated, and the result equals the in-memory prediction and a hand-built one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtbio.inference import predict_volume
from mtbio.inference.settings import InferenceSettings
from mtbio.networks import get_network
from mtbio.networks.context import context_of, with_context
from mtbio.networks.weights import WeightsRecord, write_weights
from tests._context import context_reference

torch.set_num_threads(2)

ROI = (16, 16)


def _net(k: int, mark: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    net = get_network("small_unet", 2, in_channels=1 + 2 * k, channels=(4, 8), strides=(2,)).eval()
    return with_context(net, k) if mark else net


def _volume(z: int = 5) -> np.ndarray:
    return np.random.default_rng(4).normal(100, 10, (z, 24, 20)).astype(np.float32)


def _hand(net: torch.nn.Module, vol: np.ndarray, k: int) -> np.ndarray:
    return context_reference(net, vol, k, ROI)


def _predict(net: torch.nn.Module, vol: np.ndarray, out: Path, **kw) -> np.ndarray:
    kw = {"chunks": (2, 12, 12), "block_shape": (2, 12, 12), **kw}
    array = predict_volume(
        net, vol, out, roi_size=ROI, activation="softmax", dtype="float32", normalize="zscore_section",
        device="cpu", **kw,
    )  # fmt: skip
    return np.asarray(array[1])


@pytest.mark.parametrize("k", [1, 2])
def test_predict_volume_equals_the_hand_built_and_in_memory_prediction(tmp_path: Path, k: int):
    from mtbio.uda.evaluate import predict_in_memory

    vol = _volume()
    net = _net(k)
    hand = _hand(net, vol, k)
    streamed = _predict(net, vol, tmp_path / "a.zarr")  # blocks of 2 sections: every block reads a z-halo
    assert np.allclose(streamed, hand, atol=1e-5)
    assert np.allclose(predict_in_memory(net, vol, roi_size=ROI), hand, atol=1e-5)
    # without carrying slabs, one block for the whole volume: the same
    assert np.allclose(_predict(net, vol, tmp_path / "b.zarr", carry=False), hand, atol=1e-5)
    whole = _predict(net, vol, tmp_path / "c.zarr", chunks=(5, 24, 20), block_shape=(5, 24, 20))
    assert np.allclose(whole, hand, atol=1e-5)


def test_the_weights_record_decides_the_context(tmp_path: Path):
    from mtbio.inference.model_io import load_named_network

    vol = _volume(3)
    net = _net(1)
    path = write_weights(
        WeightsRecord.from_network(net, network="small_unet", spatial_dims=2, context_sections=1,
                                   network_kwargs={"channels": [4, 8], "strides": [2]}),
        tmp_path / "w.pt",
    )  # fmt: skip
    loaded = load_named_network("small_unet", 2, path, channels=(4, 8), strides=(2,))
    assert context_of(loaded) == 1
    ref = _hand(net, vol, 1)
    assert np.allclose(_predict(loaded, vol, tmp_path / "a.zarr"), ref, atol=1e-5)
    # a network built without a record: the settings name its context; a value other than the record's is refused
    plain = _net(1, mark=False)
    got = _predict(plain, vol, tmp_path / "b.zarr", settings=InferenceSettings(context_sections=1))
    assert np.allclose(got, ref, atol=1e-5)
    with pytest.raises(ValueError, match="context_sections 2 does not fit the network"):
        _predict(loaded, vol, tmp_path / "c.zarr", settings=InferenceSettings(context_sections=2))
    with pytest.raises(ValueError, match="3 channels"):  # an unmarked 2.5D network without settings: 1 channel fed
        _predict(plain, vol, tmp_path / "d.zarr")


def test_a_2d_image_is_repeated_as_every_context_channel(tmp_path: Path):
    image = _volume(1)[0]
    net = _net(1)
    got = predict_volume(
        net, image, tmp_path / "a.zarr", roi_size=ROI, activation="softmax", dtype="float32",
        normalize="zscore_section", device="cpu",
    )  # fmt: skip
    ref = _hand(net, image[None], 1)[0]  # one section: its neighbours are itself
    assert np.allclose(np.asarray(got[1]), ref, atol=1e-5)


def test_context_with_a_3d_window_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="a 2D network"):
        predict_volume(_net(1), _volume(), tmp_path / "a.zarr", roi_size=(2, 16, 16), device="cpu")


def test_the_store_records_the_context_and_tta_flips_all_channels(tmp_path: Path):
    import json

    vol = _volume(3)
    net = _net(1)
    _predict(net, vol, tmp_path / "a.zarr", tta="flips")
    meta = [p for p in (tmp_path / "a.zarr").iterdir() if p.name in ("zarr.json", ".zattrs")]
    assert any('"context_sections": 1' in json.dumps(json.loads(p.read_text())) for p in meta)
    from mtbio.uda.evaluate import predict_in_memory

    streamed = _predict(net, vol, tmp_path / "b.zarr", tta="flips")
    assert np.allclose(streamed, predict_in_memory(net, vol, roi_size=ROI, tta="flips"), atol=1e-5)


def test_the_dask_path_reads_the_same_halo(tmp_path: Path):
    pytest.importorskip("dask")
    from mtbio.inference.distributed import predict_volume_dask

    vol = _volume()
    net = _net(1)
    got = predict_volume_dask(
        net, vol, tmp_path / "a.zarr", roi_size=ROI, activation="softmax", dtype="float32",
        normalize="zscore_section", chunks=(2, 12, 12), device="cpu",
    )  # fmt: skip
    assert np.allclose(np.asarray(got[1]), _hand(net, vol, 1), atol=1e-5)
