"""predict_volume equals MONAI's sliding_window_inference; identity and carry properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from monai.inferers import sliding_window_inference

from mtbio.data.store import open_prediction_store
from mtbio.inference.predict import predict_volume

from ._nets import Identity2, conv_net, tiny_unet


def _swi(net, vol, roi, mode, overlap=0.25, activation=None):
    with torch.no_grad():
        out = sliding_window_inference(torch.from_numpy(vol)[None, None], roi, 4, net, overlap=overlap, mode=mode)[0]
    if activation == "softmax":
        out = torch.softmax(out, 0)
    return out.numpy()


def _vol(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize(
    ("shape", "roi", "chunks"),
    [
        ((37, 50, 45), (16, 24, 16), (8, 16, 16)),  # nothing divides anything
        ((9, 40, 30), (16, 16, 16), (4, 16, 16)),  # roi larger than the volume along z: padded
        ((14, 20, 22), (8, 8, 8), (3, 7, 9)),  # chunks shallower than the roi
    ],
)
def test_3d_equals_sliding_window_inference(tmp_path, mode, shape, roi, chunks):
    net = tiny_unet(3)
    vol = _vol(shape)
    out = predict_volume(net, vol, tmp_path / "p.zarr", roi_size=roi, mode=mode, chunks=chunks, batch_size=3)
    ref = _swi(net, vol, roi, mode)
    assert out.shape == ref.shape
    np.testing.assert_allclose(np.asarray(out[:]), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize(("shape", "roi"), [((70, 45), (16, 24)), ((12, 50), (32, 16))])
def test_2d_equals_sliding_window_inference(tmp_path, mode, shape, roi):
    net = tiny_unet(2)
    vol = _vol(shape)
    out = predict_volume(net, vol, tmp_path / "p.zarr", roi_size=roi, mode=mode, chunks=(16, 16), overlap=0.5)
    np.testing.assert_allclose(np.asarray(out[:]), _swi(net, vol, roi, mode, overlap=0.5), atol=1e-5, rtol=0)


def test_2d_network_on_3d_volume_runs_section_by_section(tmp_path):
    net = tiny_unet(2)
    vol = _vol((5, 40, 36))
    out = predict_volume(
        net, vol, tmp_path / "p.zarr", roi_size=(16, 16), chunks=(2, 16, 16), activation="softmax", dtype="float32"
    )
    ref = np.stack([_swi(net, v, (16, 16), "gaussian", activation="softmax") for v in vol], axis=1)
    np.testing.assert_allclose(np.asarray(out[:]), ref, atol=1e-5, rtol=0)
    assert open_prediction_store(tmp_path / "p.zarr").meta["config"]["section_wise"] is True


def test_identity_network_reproduces_the_input(tmp_path):
    vol = _vol((21, 30, 26))
    # constant weights, no overlap but the shifted last window: every voxel is x or (x + x) / 2, exact in float
    exact = predict_volume(
        Identity2(), vol, tmp_path / "a.zarr", roi_size=(8, 10, 12), overlap=0.0, mode="constant", chunks=(4, 8, 8)
    )
    assert np.array_equal(np.asarray(exact[0]), vol)
    assert np.array_equal(np.asarray(exact[1]), -vol)
    blended = predict_volume(Identity2(), vol, tmp_path / "b.zarr", roi_size=(8, 12, 12), chunks=(5, 16, 16))
    np.testing.assert_allclose(np.asarray(blended[0]), vol, rtol=1e-6, atol=1e-7)


def test_carry_gives_the_same_output_as_recomputing(tmp_path):
    net = conv_net(3)
    vol = _vol((30, 20, 20))
    kw = dict(roi_size=(12, 12, 12), chunks=(4, 10, 10))
    a = predict_volume(net, vol, tmp_path / "a.zarr", carry=True, **kw)
    b = predict_volume(net, vol, tmp_path / "b.zarr", carry=False, **kw)
    np.testing.assert_allclose(np.asarray(a[:]), np.asarray(b[:]), atol=1e-6, rtol=0)


def test_column_blocks_and_softmax_match_oracle(tmp_path):
    net = tiny_unet(3)
    vol = _vol((18, 40, 44))
    out = predict_volume(
        net,
        vol,
        tmp_path / "p.zarr",
        roi_size=(8, 16, 16),
        chunks=(6, 10, 10),
        block_shape=(6, 20, 20),
        activation="softmax",
        dtype="float32",
    )
    ref = _swi(net, vol, (8, 16, 16), "gaussian", activation="softmax")
    np.testing.assert_allclose(np.asarray(out[:]), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_uint8_and_float16_encodings(tmp_path, dtype):
    net = tiny_unet(3)
    vol = _vol((10, 20, 20))
    out = predict_volume(
        net, vol, tmp_path / "p.zarr", roi_size=(8, 16, 16), activation="softmax", dtype=dtype, chunks=(4, 20, 20)
    )
    ref = _swi(net, vol, (8, 16, 16), "gaussian", activation="softmax")
    assert out.dtype == np.dtype(dtype)
    stored = open_prediction_store(tmp_path / "p.zarr")
    assert stored.meta["dtype"] == dtype and stored.meta["activation"] == "softmax"
    if dtype == "uint8":
        assert np.array_equal(np.asarray(out[:]), np.clip(np.rint(ref * 255), 0, 255).astype(np.uint8))
    else:
        np.testing.assert_allclose(np.asarray(out[:], dtype=np.float32), ref, atol=1e-3)


def test_store_metadata_progress_and_zscore(tmp_path):
    net = conv_net(3)
    raw = (np.random.default_rng(1).random((12, 20, 18)) * 200 + 20).astype(np.uint8)
    seen = []
    out = predict_volume(
        net,
        raw,
        tmp_path / "p.zarr",
        roi_size=(6, 8, 8),
        chunks=(4, 20, 18),
        normalize="zscore",
        voxel_size=(50.0, 4.6, 4.6),
        progress=lambda d, t: seen.append((d, t)),
    )
    f = raw.astype(np.float64)
    ref = _swi(net, ((raw - f.mean()) / f.std()).astype(np.float32), (6, 8, 8), "gaussian")
    np.testing.assert_allclose(np.asarray(out[:]), ref, atol=1e-4, rtol=0)
    store = open_prediction_store(tmp_path / "p.zarr")
    assert store.complete and store.voxel_size == (50.0, 4.6, 4.6)
    assert zarr.open_group(str(tmp_path / "p.zarr")).attrs["ome"]["multiscales"][0]["axes"][0]["name"] == "c"
    assert seen[-1] == (3, 3) and [d for d, _ in seen] == sorted(d for d, _ in seen)


class _Counting(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


def test_progress_moves_while_a_column_computes_windows_as_deep_as_the_volume(tmp_path):
    # one column of 3 slabs and windows as deep as the volume (as in ortho-plane consensus): the first task
    # computes every window, so counting written blocks alone would sit at 0 until the end
    net = _Counting(conv_net(3))
    raw = (np.random.default_rng(2).random((12, 32, 32)) * 200).astype(np.uint8)
    seen = []
    predict_volume(
        net, raw, tmp_path / "p.zarr", roi_size=(12, 8, 8), chunks=(4, 32, 32), batch_size=2,
        progress=lambda d, t: seen.append((d, t, net.calls)),
    )  # fmt: skip
    forwards = net.calls
    assert forwards > 4
    assert seen[0][:2] == (0, 3) and seen[-1][:2] == (3, 3)
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)  # never goes back
    # the count moved past 0 before the last forward pass (not only when the blocks were written)
    assert any(0 < d < 3 and calls < forwards for d, _, calls in seen)
    assert any(d == 1 and calls < forwards for d, _, calls in seen)


def test_zscore_section_normalises_each_section_like_training(tmp_path):
    net = tiny_unet(2)
    rng = np.random.default_rng(3)
    # sections of very different brightness and contrast: per-section and whole-volume rules differ
    raw = np.stack([rng.random((30, 26)) * (20 + 30 * k) + 10 * k for k in range(5)]).astype(np.float32)
    out = predict_volume(
        net, raw, tmp_path / "p.zarr", roi_size=(16, 16), chunks=(2, 16, 16), normalize="zscore_section"
    )
    f = raw.astype(np.float64)
    normed = ((f - f.mean(axis=(1, 2), keepdims=True)) / f.std(axis=(1, 2), keepdims=True)).astype(np.float32)
    ref = np.stack([_swi(net, v, (16, 16), "gaussian") for v in normed], axis=1)
    np.testing.assert_allclose(np.asarray(out[:]), ref, atol=1e-4, rtol=0)
    assert open_prediction_store(tmp_path / "p.zarr").meta["config"]["normalize"] == "zscore_section"


def test_sigmoid_activation_and_mask(tmp_path):
    from mtbio.inference.mask import write_mask

    net = conv_net(3)
    vol = _vol((6, 16, 16))
    out = predict_volume(
        net, vol, tmp_path / "p.zarr", roi_size=(4, 8, 8), activation="sigmoid", dtype="float32", normalize=(0.5, 0.25)
    )
    ref = 1 / (1 + np.exp(-_swi(net, (vol - 0.5) / 0.25, (4, 8, 8), "gaussian")))
    np.testing.assert_allclose(np.asarray(out[:]), ref, atol=1e-5, rtol=0)
    mask = write_mask(tmp_path / "p.zarr", threshold=0.5)
    assert np.array_equal(np.asarray(mask[:]), (np.asarray(out[1]) >= 0.5).astype(np.uint8))
    predict_volume(net, vol, tmp_path / "raw.zarr", roi_size=(4, 8, 8))
    with pytest.raises(ValueError, match="raw network output"):
        write_mask(tmp_path / "raw.zarr")


def test_resuming_a_complete_store_computes_nothing(tmp_path):
    net = conv_net(3)
    vol = _vol((6, 16, 16))
    first = np.asarray(predict_volume(net, vol, tmp_path / "p.zarr", roi_size=(4, 8, 8), chunks=(2, 16, 16))[:])
    calls = []
    net.register_forward_hook(lambda *a: calls.append(1))
    again = predict_volume(net, vol, tmp_path / "p.zarr", roi_size=(4, 8, 8), chunks=(2, 16, 16), resume=True)
    assert not calls  # the shape probe is cached per network, no block is recomputed
    assert np.array_equal(np.asarray(again[:]), first)
