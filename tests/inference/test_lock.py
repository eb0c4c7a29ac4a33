"""One writer per prediction store: second writers fail fast, stale locks are taken over, runs never mix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zarr

from mtbio.cli import main
from mtbio.data.store import open_prediction_store
from mtbio.inference.lock import StaleLockWarning, StoreLockedError, acquire_store_lock, lock_path
from mtbio.inference.model_io import model_hash
from mtbio.inference.predict import predict_volume

from ._nets import Slow, conv_net, tiny_unet
from ._procs import cli_child, slow_bundle

KW = dict(roi_size=(4, 8, 8), chunks=(2, 16, 16))


def _vol(shape=(12, 16, 16)):
    return np.random.default_rng(1).random(shape).astype(np.float32)


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


def _holder(out):
    try:
        return json.loads(lock_path(out).read_text() or "{}")
    except (FileNotFoundError, ValueError):
        return {}


def test_a_second_call_on_a_store_being_written_fails_fast_and_names_the_holder(tmp_path):
    vol, out = _vol(), tmp_path / "p.zarr"
    first = threading.Thread(target=predict_volume, args=(Slow(conv_net(3), 0.02), vol, out), kwargs=KW)
    first.start()
    _wait_for(lambda: _holder(out).get("pid") == os.getpid())
    start = time.monotonic()
    holder = rf"p\.zarr: another prediction is writing this store: pid {os.getpid()}"
    with pytest.raises(StoreLockedError, match=holder):
        predict_volume(conv_net(3, seed=1), vol, out, overwrite=True, **KW)
    assert time.monotonic() - start < 2  # before any statistics pass, probe or compute
    first.join()
    ref = predict_volume(conv_net(3), vol, tmp_path / "ref.zarr", **KW)
    assert np.array_equal(np.asarray(open_prediction_store(out).array[:]), np.asarray(ref[:]))
    assert not lock_path(out).exists()


def test_stale_lock_of_a_dead_pid_is_reported_and_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "p.zarr"
    lock_path(out).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "earlier"}))
    with pytest.warns(StaleLockWarning, match=rf"took over a stale lock \(pid {dead.pid} on host .*has exited"):
        arr = predict_volume(conv_net(3), _vol(), out, **KW)
    assert open_prediction_store(out).complete and arr.shape == (2, 12, 16, 16)
    assert not lock_path(out).exists()


def test_a_leftover_lock_of_another_host_is_refused_and_kept(tmp_path):
    out = tmp_path / "p.zarr"
    lock_path(out).write_text(json.dumps({"pid": 1, "host": "elsewhere-node", "started": "earlier"}))
    with pytest.raises(StoreLockedError, match=r"names a run on another host \(pid 1 on host elsewhere-node.*delete"):
        predict_volume(conv_net(3), _vol(), out, **KW)
    assert lock_path(out).exists() and not out.exists()


def test_the_lock_is_released_on_errors_and_on_ctrl_c(tmp_path):
    out = tmp_path / "p.zarr"

    class Breaks(Slow):
        def forward(self, x):
            if x.shape[0] > 1:  # the probe (one window) passes, the first real batch fails
                raise RuntimeError("device lost")
            return super().forward(x)

    with pytest.raises(RuntimeError, match="device lost"):
        predict_volume(Breaks(conv_net(3)), _vol(), out, batch_size=4, **KW)
    assert not lock_path(out).exists()

    def ctrl_c():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_volume(conv_net(3), _vol(), out, overwrite=True, stop=ctrl_c, **KW)
    assert not lock_path(out).exists()
    with acquire_store_lock(out) as lock:  # free again
        assert lock.held and lock.taken_over is None
    assert not lock_path(out).exists()


@pytest.mark.slow  # two CLI processes and three runs: ~11 s on an idle 2-core machine
def test_a_second_process_is_refused_and_an_overwrite_race_never_mixes_models(tmp_path, capsys):
    vol = np.random.default_rng(2).random((26, 30, 28)).astype(np.float32)
    src = tmp_path / "in.zarr"
    zarr.create_array(str(src), data=vol, chunks=(8, 30, 28))
    bundle_a = slow_bundle(tmp_path / "a", seed=0, delay=0.4)
    bundle_b = slow_bundle(tmp_path / "b", seed=1, delay=0.0)
    out = tmp_path / "p.zarr"
    common = [
        "--dtype",
        "float32",
        "--overwrite",
        "--chunks",
        "4",
        "16",
        "16",
        "--trust-bundle",
        "--tta",
        "none",
    ]  # a test net
    assert main(["predict", str(src), str(out), "--bundle", str(bundle_b), *common]) == 0  # a store of model B
    child = cli_child(["predict", str(src), str(out), "--bundle", str(bundle_a), *common])  # A replaces it ...
    try:
        _wait_for(lambda: _holder(out).get("pid") == child.pid or child.poll() is not None, timeout=90)
        assert child.poll() is None, child.communicate()[1][-2000:]
        capsys.readouterr()
        # ... while B, started again, tries to replace it too: refused at once, naming the store and the holder
        assert main(["predict", str(src), str(out), "--bundle", str(bundle_b), *common]) == 1
        err = capsys.readouterr().err
        assert f"{out}: another prediction is writing this store: pid {child.pid} on host {socket.gethostname()}" in err
        _, child_err = child.communicate(timeout=90)
        assert child.returncode == 0, child_err[-2000:]
    finally:
        if child.poll() is None:
            child.kill()
    store = open_prediction_store(out)
    net_a = Slow(tiny_unet(3, seed=0))
    assert store.meta["model_hash"] == model_hash(net_a)
    ref = predict_volume(net_a, str(src), tmp_path / "ref_a.zarr", normalize="zscore", roi_size=(8, 16, 16),
                         chunks=(4, 16, 16), activation="softmax", dtype="float32")  # fmt: skip
    np.testing.assert_allclose(np.asarray(store.array[:]), np.asarray(ref[:]), atol=1e-5, rtol=0)
    assert not lock_path(out).exists()
