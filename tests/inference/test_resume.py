"""Resume after a clean stop or a SIGKILL is bitwise identical; refusals and incomplete marking."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from mtbio.data.store import IncompletePredictionError, open_prediction_store
from mtbio.inference.lock import StaleLockWarning, lock_path
from mtbio.inference.predict import predict_volume
from mtbio.inference.resume import LEDGER_NAME

from ._nets import Slow, conv_net, tiny_unet

REPO = Path(__file__).resolve().parents[2]
KW = dict(roi_size=(8, 16, 16), chunks=(4, 16, 16), activation="softmax", dtype="float32", batch_size=3)


def _vol(shape=(26, 30, 28), seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _stopper(k):
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > k

    return stop


@pytest.mark.parametrize("k", [1, 3, 6])
def test_stop_then_resume_is_bitwise_identical(tmp_path, k):
    net, vol = tiny_unet(3), _vol()
    full = np.asarray(predict_volume(net, vol, tmp_path / "full.zarr", **KW)[:])
    part = tmp_path / "part.zarr"
    predict_volume(net, vol, part, stop=_stopper(k), **KW)
    store = open_prediction_store(part, require_complete=False)
    assert not store.complete
    with pytest.raises(IncompletePredictionError):
        open_prediction_store(part)
    assert len(json.loads((part / LEDGER_NAME).read_text())["done"]) == k
    resumed = predict_volume(net, vol, part, resume=True, **KW)
    assert np.array_equal(np.asarray(resumed[:]), full)
    assert open_prediction_store(part).complete


def test_existing_output_needs_overwrite_or_resume(tmp_path):
    net, vol = conv_net(3), _vol((8, 16, 16))
    out = tmp_path / "p.zarr"
    predict_volume(net, vol, out, roi_size=(4, 8, 8))
    with pytest.raises(FileExistsError, match="p.zarr"):
        predict_volume(net, vol, out, roi_size=(4, 8, 8))
    predict_volume(net, vol * 2, out, roi_size=(4, 8, 8), overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an mtbio prediction store"):
        predict_volume(net, vol, tmp_path / "other", roi_size=(4, 8, 8), overwrite=True)
    assert (tmp_path / "other" / "keep.txt").exists()


def test_resume_refuses_another_model_config_or_input(tmp_path):
    vol = _vol((8, 16, 16))
    out = tmp_path / "p.zarr"
    predict_volume(conv_net(3), vol, out, roi_size=(4, 8, 8), stop=_stopper(1), chunks=(2, 16, 16))
    with pytest.raises(ValueError, match="model_hash"):
        predict_volume(conv_net(3, seed=1), vol, out, roi_size=(4, 8, 8), resume=True, chunks=(2, 16, 16))
    with pytest.raises(ValueError, match="config"):
        predict_volume(conv_net(3), vol, out, roi_size=(4, 8, 6), resume=True, chunks=(2, 16, 16))
    with pytest.raises(ValueError, match="source"):
        predict_volume(conv_net(3), vol + 1, out, roi_size=(4, 8, 8), resume=True, chunks=(2, 16, 16))


def test_resume_of_a_store_whose_creation_was_killed(tmp_path):
    net, vol = conv_net(3), _vol((8, 16, 16))
    out = tmp_path / "p.zarr"
    partial = tmp_path / ".p.zarr.partial"  # what a kill during creation leaves behind
    partial.mkdir()
    (partial / "zarr.json").write_text("{truncated")
    arr = predict_volume(net, vol, out, roi_size=(4, 8, 8), resume=True)
    assert open_prediction_store(out).complete and not partial.exists()
    ref = predict_volume(net, vol, tmp_path / "ref.zarr", roi_size=(4, 8, 8))
    assert np.array_equal(np.asarray(arr[:]), np.asarray(ref[:]))


CHILD_THREADS = 2
CHILD = """
import sys, numpy as np, torch, zarr
sys.path.insert(0, {repo!r})
torch.set_num_threads({threads})
from tests.inference._nets import Slow, tiny_unet
from mtbio.inference.lock import StaleLockWarning, lock_path
from mtbio.inference.predict import predict_volume
predict_volume(Slow(tiny_unet(3), 0.15), zarr.open_array({src!r}, mode="r"), {out!r}, **{kw!r})
"""


def test_sigkill_mid_run_then_resume_is_bitwise_identical(tmp_path):
    vol = _vol()
    src = tmp_path / "in.zarr"
    zarr.create_array(str(src), data=vol, chunks=(8, 30, 28))
    out = tmp_path / "killed.zarr"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO), src=str(src), out=str(out), kw=KW, threads=CHILD_THREADS))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, str(script)], env=env)
    ledger = out / LEDGER_NAME
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if ledger.exists() and len(json.loads(ledger.read_text() or '{"done": []}')["done"]) >= 2:
                break
            assert child.poll() is None, "the child finished before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("the child never finished a block")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    done = json.loads(ledger.read_text())["done"]
    assert 2 <= len(done) < 7 and not open_prediction_store(out, require_complete=False).complete
    # the killed child's lock stays behind, naming it; the resumed run reports it and takes it over
    assert json.loads(lock_path(out).read_text())["pid"] == child.pid
    net = Slow(tiny_unet(3), 0.0)  # the same class and weights as the child
    source = zarr.open_array(str(src), mode="r")
    # the child computed its blocks with CHILD_THREADS torch threads; CPU kernels may round differently with another
    # thread count (and earlier tests in this process may have changed it), so the resumed blocks and the reference
    # run use the same count (bitwise equality holds per setting)
    threads = torch.get_num_threads()
    torch.set_num_threads(CHILD_THREADS)
    try:
        with pytest.warns(StaleLockWarning, match=rf"stale lock \(pid {child.pid} on host"):
            resumed = np.asarray(predict_volume(net, source, out, resume=True, **KW)[:])
        full = np.asarray(predict_volume(net, source, tmp_path / "full.zarr", **KW)[:])
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(resumed, full)
    assert not lock_path(out).exists()


def test_a_store_with_both_channels_in_one_chunk_resumes_and_reads_the_same(tmp_path):
    """Stores written before the one-chunk-per-channel layout (channel chunk C) stay resumable and readable."""
    vol = _vol()
    full = np.asarray(predict_volume(conv_net(3), vol, tmp_path / "full.zarr", **KW)[:])
    out = tmp_path / "old.zarr"
    predict_volume(conv_net(3), vol, out, stop=_stopper(2), **KW)
    group = zarr.open_group(str(out), mode="r+")
    partial = np.asarray(group["0"][:])
    old = group.create_array("0", shape=partial.shape, chunks=(2, 4, 16, 16), dtype=partial.dtype, overwrite=True)
    old[:] = partial  # the old layout, holding what the stopped run wrote
    assert group["0"].chunks == (2, 4, 16, 16)
    arr = predict_volume(conv_net(3), vol, out, resume=True, **KW)
    assert arr.chunks == (2, 4, 16, 16)
    assert np.array_equal(np.asarray(arr[:]), full)
    assert open_prediction_store(out).meta["complete"] is True
