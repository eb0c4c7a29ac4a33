"""The dask.distributed path equals the single-process path and resumes."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from mtbio.data.store import open_prediction_store
from mtbio.inference.distributed import predict_volume_dask
from mtbio.inference.predict import predict_volume

from ._nets import tiny_unet

KW = dict(roi_size=(8, 16, 16), chunks=(4, 16, 16), activation="softmax", dtype="float32")


def _vol():
    return np.random.default_rng(3).random((18, 36, 30)).astype(np.float32)


def test_dask_equals_single_process_and_resumes(tmp_path):
    net, vol = tiny_unet(3), _vol()
    src = tmp_path / "in.zarr"
    zarr.create_array(str(src), data=vol, chunks=(5, 36, 30))
    single = np.asarray(predict_volume(net, vol, tmp_path / "one.zarr", **KW)[:])
    seen = []
    out = predict_volume_dask(net, src, tmp_path / "dask.zarr", progress=lambda d, t: seen.append((d, t)), **KW)
    np.testing.assert_allclose(np.asarray(out[:]), single, atol=1e-5, rtol=0)
    assert open_prediction_store(tmp_path / "dask.zarr").complete and seen[-1][0] == seen[-1][1]

    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] >= 2

    part = tmp_path / "part.zarr"
    predict_volume_dask(net, vol, part, stop=stop, n_workers=1, **KW)
    assert not open_prediction_store(part, require_complete=False).complete
    resumed = predict_volume_dask(net, vol, part, resume=True, **KW)
    np.testing.assert_allclose(np.asarray(resumed[:]), single, atol=1e-5, rtol=0)
    assert open_prediction_store(part).complete


@pytest.mark.slow
def test_dask_process_workers(tmp_path):
    net, vol = tiny_unet(3), _vol()
    single = np.asarray(predict_volume(net, vol, tmp_path / "one.zarr", **KW)[:])
    out = predict_volume_dask(net, vol, tmp_path / "dask.zarr", processes=True, **KW)
    np.testing.assert_allclose(np.asarray(out[:]), single, atol=1e-5, rtol=0)
