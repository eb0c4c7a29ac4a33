"""SIGINT / SIGTERM during ``mtbio predict``: stop at a block boundary, unlock, say how to resume; resume is exact."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import zarr

from mtbio.data.store import open_prediction_store
from mtbio.inference.lock import lock_path
from mtbio.inference.resume import LEDGER_NAME

from ._procs import cli_child, slow_bundle, wait_for_blocks


@pytest.mark.slow  # a CLI child (imports torch / MONAI) plus two in-process runs: ~12 s on an idle 2-core machine
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_resume_is_bitwise_identical(tmp_path, capsys, sig):
    vol = np.random.default_rng(4).random((26, 30, 28)).astype(np.float32)
    src = tmp_path / "in.zarr"
    zarr.create_array(str(src), data=vol, chunks=(8, 30, 28))
    slow = slow_bundle(tmp_path / "slow", seed=3, delay=0.4)
    fast = slow_bundle(tmp_path / "fast", seed=3, delay=0.0)  # the same weights: the same model hash
    out = tmp_path / "p.zarr"
    opts = ["--dtype", "float32", "--chunks", "4", "16", "16", "--batch-size", "3", "--trust-bundle"]
    child = cli_child(["predict", str(src), str(out), "--bundle", str(slow), *opts])
    try:
        wait_for_blocks(child, out, 1)
        child.send_signal(sig)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 128 + sig, err[-2000:]
    name = signal.Signals(sig).name
    assert f"interrupted by {name}: {out} is incomplete" in err
    assert f"resume with:  mtbio predict {src} {out} --bundle {slow}" in err and err.rstrip().endswith("--resume")
    assert not lock_path(out).exists()  # released
    done = json.loads((out / LEDGER_NAME).read_text())["done"]
    assert 1 <= len(done) < 7 and not open_prediction_store(out, require_complete=False).complete

    # resume and reference in fresh processes like the interrupted one: bitwise equality holds per thread pool state,
    # which earlier in-process tests (dask's worker threads) may have changed in this process
    ref = tmp_path / "ref.zarr"
    for args in (["predict", str(src), str(out), "--bundle", str(fast), *opts, "--resume"],
                 ["predict", str(src), str(ref), "--bundle", str(fast), *opts]):  # fmt: skip
        child = cli_child(args)
        _, err = child.communicate(timeout=180)
        assert child.returncode == 0, err[-2000:]
    resumed = open_prediction_store(out)
    assert resumed.complete
    assert np.array_equal(np.asarray(resumed.array[:]), np.asarray(open_prediction_store(ref).array[:]))
