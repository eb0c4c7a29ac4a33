"""NaN / Inf input voxels are refused (first bad section named), never stored as a corrupted prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr

from mtbio.cli import main
from mtbio.data.errors import VolumeError
from mtbio.data.store import open_prediction_store
from mtbio.inference.finite import FiniteCheck, NonFiniteInputError
from mtbio.inference.lock import lock_path
from mtbio.inference.predict import predict_volume
from mtbio.inference.resume import LEDGER_NAME
from mtbio.inference.settings import InferenceSettings
from mtbio.inference.setup import prepare

from ._nets import conv_net, tiny_unet

KW3 = dict(roi_size=(8, 16, 16), chunks=(4, 16, 16), activation="softmax", dtype="float32", batch_size=3)


def _vol(shape=(26, 30, 28), seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _nothing_left(out):
    """No store, no partial folder, no lock file."""
    return not out.exists() and not out.with_name(f".{out.name}.partial").exists() and not lock_path(out).exists()


def test_nan_in_a_3d_input_stops_at_its_section_and_keeps_only_clean_blocks(tmp_path):
    vol = _vol()
    vol[17, 3, 4] = vol[17, 5, 6] = vol[17, 20, 8] = np.nan
    vol[22, 1, 1] = np.nan  # a later bad section is not the one reported
    out = tmp_path / "p.zarr"
    with pytest.raises(VolumeError, match=r"^input array: section 17 holds 3 NaN / Inf values \(NaN: 3; first at y=3"):
        predict_volume(tiny_unet(3), vol, out, **KW3)  # no normalisation: the streaming reader checks its boxes
    store = open_prediction_store(out, require_complete=False)
    assert not store.complete and not lock_path(out).exists()
    done = json.loads((out / LEDGER_NAME).read_text())["done"]
    assert done == [0, 1, 2]  # windows start at z 0, 6, 12, 18: block 3's (z 12-16) reach section 17
    # the blocks kept are exactly those of the clean volume (no window of theirs saw section 17)
    clean = vol.copy()
    clean[~np.isfinite(clean)] = 0
    ref = np.asarray(predict_volume(tiny_unet(3), clean, tmp_path / "ref.zarr", **KW3)[:])
    for b in done:
        z = slice(4 * b, 4 * b + 4)
        assert np.array_equal(np.asarray(store.array[:, z]), ref[:, z])


def test_inf_in_a_3d_zarr_is_found_by_the_zscore_pass_before_any_store_exists(tmp_path):
    vol = _vol()
    vol[9, 0, 5] = np.inf
    src = tmp_path / "in.zarr"
    zarr.create_array(str(src), data=vol, chunks=(8, 30, 28))
    out = tmp_path / "p.zarr"
    with pytest.raises(NonFiniteInputError, match=r"in\.zarr: section 9 holds 1 NaN / Inf values \(\+Inf: 1") as err:
        predict_volume(tiny_unet(3), str(src), out, normalize="zscore", **KW3)
    assert err.value.section == 9 and err.value.count == 1 and err.value.path.endswith("in.zarr")
    assert _nothing_left(out)


def test_nan_in_a_2d_image_names_the_row(tmp_path):
    img = _vol((40, 36))
    img[17, 5] = img[17, 9] = np.nan
    img[30, 1] = np.inf
    out = tmp_path / "p.zarr"
    with pytest.raises(VolumeError, match=r"input array: row 17 holds 2 NaN / Inf values \(NaN: 2; first at x=5\)"):
        predict_volume(conv_net(2), img, out, roi_size=(16, 16), normalize="zscore")
    assert _nothing_left(out)
    with pytest.raises(VolumeError, match=r"row 17 holds 2 NaN"):  # the reader finds it too (no statistics pass)
        predict_volume(conv_net(2), img, out, roi_size=(16, 16))
    assert not lock_path(out).exists()
    assert not out.exists() or not open_prediction_store(out, require_complete=False).complete


def test_inf_in_one_section_of_a_section_wise_run(tmp_path):
    vol = _vol((12, 30, 28))
    vol[5, 7, 2] = -np.inf
    vol[5, 8, 2] = np.inf
    out = tmp_path / "p.zarr"
    with pytest.raises(VolumeError, match=r"section 5 holds 2 NaN / Inf values \(\+Inf: 1, -Inf: 1; first at y=7, x=2"):
        predict_volume(conv_net(2), vol, out, roi_size=(16, 16), normalize="zscore_section")
    assert _nothing_left(out)


def test_dask_path_refuses_nan_and_leaves_the_store_incomplete(tmp_path):
    from mtbio.inference.distributed import predict_volume_dask

    vol = _vol()
    vol[13, 2, 2] = np.nan
    out = tmp_path / "p.zarr"
    with pytest.raises(VolumeError, match="section 13 holds 1 NaN / Inf values"):
        predict_volume_dask(conv_net(3), vol, out, n_workers=1, **KW3)
    assert not open_prediction_store(out, require_complete=False).complete
    assert not lock_path(out).exists()


def test_cli_refuses_a_nan_stack_with_one_line(tmp_path, capsys):
    vol = _vol((10, 24, 20))
    vol[3, 4, 4] = np.nan
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, vol)
    ckpt = tmp_path / "w.pt"
    import torch

    from mtbio.networks import get_network

    torch.save(get_network("small_unet", 2).state_dict(), ckpt)
    out = tmp_path / "o.zarr"
    args = ["predict", str(path), str(out), "--network", "small_unet", "--checkpoint", str(ckpt), "--roi", "16", "16"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "stack.tif: section 3 holds 1 NaN / Inf values" in err and "Traceback" not in err
    assert _nothing_left(out)


def test_the_reader_checks_only_float_inputs_without_a_statistics_pass(tmp_path):
    """The hot path: integer inputs (which cannot hold NaN) and z-scored inputs (checked by the statistics pass)
    are not checked again per box."""
    cases = [
        (_vol((8, 16, 16)), None, FiniteCheck),
        (_vol((8, 16, 16)), "zscore", type(None)),
        ((_vol((8, 16, 16)) * 255).astype(np.uint8), None, type(None)),
    ]
    for i, (vol, norm, kind) in enumerate(cases):
        settings = InferenceSettings(roi_size=(4, 8, 8), batch_size=2, device="cpu", normalize=norm)
        prepared = prepare(
            conv_net(3),
            vol,
            tmp_path / f"p{i}.zarr",
            settings,
            resume=False,
            overwrite=False,
            key=None,
            defer_create=True,
        )
        assert isinstance(prepared.engine.finite_check, kind)
        prepared.abandon()
