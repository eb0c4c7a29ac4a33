"""The streaming path's speed-ups keep its results: slab reads, the fingerprint, deferred store creation."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import dask.array as da
import h5py
import numpy as np
import pytest
import torch
import zarr

from mtbio.data.store import open_prediction_store
from mtbio.inference.blending import importance_map
from mtbio.inference.merger import SlabAccumulator
from mtbio.inference.predict import predict_volume
from mtbio.inference.resume import LEDGER_NAME
from mtbio.inference.sources import SlabReader, fingerprint, read_padded, source_chunks

from ._nets import conv_net, tiny_unet


def _vol(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _sources(tmp_path, vol, chunks):
    z = zarr.create_array(str(tmp_path / "v.zarr"), data=vol, chunks=chunks)
    with h5py.File(tmp_path / "v.h5", "w") as fh:
        fh.create_dataset("raw", data=vol, chunks=chunks)
    return {
        "numpy": vol,
        "zarr": z,
        "h5": h5py.File(tmp_path / "v.h5", "r")["raw"],
        "dask": da.from_array(vol, chunks=chunks),
    }


@pytest.mark.parametrize("kind", ["numpy", "zarr", "h5", "dask"])
@pytest.mark.parametrize("per_section", [False, True])
def test_slab_reader_equals_read_padded(tmp_path, kind, per_section):
    vol = _vol((23, 17, 19))
    source = _sources(tmp_path, vol, (5, 8, 8))[kind]
    pad_lo, padded = (2, 0, 3), (27, 17, 25)  # padding before and after along z and x
    if per_section:
        norm = (vol.mean(axis=(1, 2)), vol.std(axis=(1, 2)) + 0.5)
    else:
        norm = (0.3, 2.0)
    reader = SlabReader(source, pad_lo, padded, norm)
    boxes = [
        ((0, 0, 0), (9, 17, 25)),  # a column, slab by slab, overlapping along z
        ((4, 0, 0), (15, 17, 25)),
        ((13, 0, 0), (27, 17, 25)),
        ((13, 0, 0), (27, 17, 25)),  # all of it already read
        ((0, 3, 5), (11, 12, 20)),  # another column: starts again
        ((6, 3, 5), (20, 12, 20)),
        ((25, 3, 5), (27, 12, 20)),  # no overlap with the previous read
    ]
    for lo, hi in boxes:
        got = reader.read(lo, hi)
        want = read_padded(source, lo, hi, pad_lo, norm)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        assert np.array_equal(got, want), (lo, hi)


def test_source_chunks():
    assert source_chunks(np.zeros((4, 5))) is None
    assert source_chunks(da.zeros((10, 7), chunks=(4, 7))) == (4, 7)
    assert source_chunks(da.from_array(np.zeros(10), chunks=((3, 7),))) is None  # irregular
    assert source_chunks(zarr.zeros((9, 9), chunks=(2, 3))) == (2, 3)


def _old_fingerprint_digest(array):
    """The fingerprint digest as first written: three separate reads."""
    shape = array.shape
    digest = hashlib.sha256()
    for frac in (0.0, 0.5, 1.0):
        z = min(int(frac * (shape[0] - 1)), shape[0] - 1)
        idx = (slice(z, z + 1), *(slice(0, min(s, 64)) for s in shape[1:]))
        digest.update(np.ascontiguousarray(np.asarray(array[idx])).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [((40, 70, 66), (16, 32, 32)), ((1, 9, 9), (1, 4, 4)), ((2, 80, 5), (1, 8, 5)), ((70, 45), (8, 8))],
)
def test_fingerprint_digest_is_unchanged_and_equal_across_array_kinds(tmp_path, shape, chunks):
    vol = _vol(shape)
    z = zarr.create_array(str(tmp_path / "f.zarr"), data=vol, chunks=chunks)
    assert fingerprint(z, None) == fingerprint(vol, None)
    assert fingerprint(z, None)["sample_sha256"] == _old_fingerprint_digest(vol)


def test_importance_map_cache_hands_out_copies():
    a = importance_map((4, 6, 6))
    a.zero_()
    assert float(importance_map((4, 6, 6)).min()) > 0


def test_shifted_accumulator_starts_at_zero_outside_the_carried_rows():
    acc = SlabAccumulator(2, (0, 0), (6, 4))
    acc.add((0, 0), torch.full((2, 6, 4), 3.0), torch.full((6, 4), 1.5))
    for lo0, hi0, carried in ((4, 9, 2), (6, 10, 0), (2, 5, 3)):
        new = acc.shifted(lo0, hi0)
        assert torch.equal(new.sums[:, :carried], torch.full((2, carried, 4), 3.0))
        assert torch.equal(new.weights[:, :carried], torch.full((1, carried, 4), 1.5))
        assert not new.sums[:, carried:].any() and not new.weights[:, carried:].any()


def test_a_run_stopped_before_its_first_block_leaves_an_empty_resumable_store(tmp_path):
    net, vol = tiny_unet(3), _vol((12, 20, 20))
    kw = dict(roi_size=(8, 16, 16), chunks=(4, 20, 20))
    out = tmp_path / "p.zarr"
    arr = predict_volume(net, vol, out, stop=lambda: True, **kw)
    assert arr is not None and arr.shape == (2, 12, 20, 20)
    store = open_prediction_store(out, require_complete=False)
    assert not store.complete and json.loads((out / LEDGER_NAME).read_text())["done"] == []
    assert not (tmp_path / ".p.zarr.partial").exists()
    resumed = predict_volume(net, vol, out, resume=True, **kw)
    ref = predict_volume(net, vol, tmp_path / "ref.zarr", **kw)
    assert np.array_equal(np.asarray(resumed[:]), np.asarray(ref[:]))


class _SlowToOpen:
    """A numpy volume whose ``chunks`` (asked for when the reader thread starts) take a while: the run is stopped
    before the reader looks at its first task."""

    def __init__(self, data):
        self.data, self.shape, self.dtype = data, data.shape, data.dtype

    @property
    def chunks(self):
        if threading.current_thread().name == "mtbio-reader":
            time.sleep(0.5)
        return None

    def __getitem__(self, index):
        return self.data[index]


def test_a_stop_before_the_reader_starts_does_not_leave_the_writer_waiting(tmp_path):
    vol = _vol((12, 20, 20))
    out = tmp_path / "p.zarr"
    run = threading.Thread(
        target=predict_volume,
        args=(tiny_unet(3), _SlowToOpen(vol), out),
        kwargs=dict(roi_size=(8, 16, 16), chunks=(4, 20, 20), stop=lambda: True),
        daemon=True,
    )
    run.start()
    run.join(timeout=15)
    assert not run.is_alive(), "predict_volume hung: the writer waited for a first read that never came"
    store = open_prediction_store(out, require_complete=False)  # the store was still created, empty and resumable
    assert not store.complete and json.loads((out / LEDGER_NAME).read_text())["done"] == []


class Zeros(torch.nn.Module):
    def forward(self, x):
        return torch.zeros((x.shape[0], 2, *x.shape[2:]))


def test_chunks_equal_to_the_fill_value_are_written_too(tmp_path):
    out = tmp_path / "z.zarr"
    arr = predict_volume(Zeros(), _vol((8, 16, 16)), out, roi_size=(4, 8, 8), chunks=(4, 8, 8))
    assert not np.asarray(arr[:]).any()
    files = [p for p in (out / "0" / "c").rglob("*") if p.is_file()]
    assert len(files) == 2 * 2 * 2 * 2  # 2 channels (chunked one by one) x 2x2x2 spatial chunks


def test_zarr_source_with_shallow_chunks_matches_numpy(tmp_path):
    vol = _vol((30, 24, 22))
    src = zarr.create_array(str(tmp_path / "s.zarr"), data=vol, chunks=(3, 10, 10))
    kw = dict(roi_size=(8, 12, 12), chunks=(5, 12, 11), block_shape=(5, 24, 11), normalize="zscore_section")
    a = predict_volume(conv_net(3), src, tmp_path / "a.zarr", **kw)
    b = predict_volume(conv_net(3), vol, tmp_path / "b.zarr", **kw)
    assert np.array_equal(np.asarray(a[:]), np.asarray(b[:]))


class _RecordingVolume:
    """A ``(Z, Y, X)`` array with axis-0 chunks that records the axis-0 range of each read of the streaming reader."""

    def __init__(self, data, chunk0):
        self.data, self.shape, self.dtype = data, data.shape, data.dtype
        self.chunks = (chunk0, *data.shape[1:])
        self.reads = []

    def __getitem__(self, index):
        if threading.current_thread().name == "mtbio-reader":
            self.reads.append((index[0].start, index[0].stop))
        return self.data[index]


def test_reads_are_bounded_by_a_slab_each_row_is_read_once_and_the_first_read_is_one_window_row(tmp_path):
    vol = _vol((40, 24, 20))
    src = _RecordingVolume(vol, chunk0=4)
    kw = dict(roi_size=(8, 12, 12), chunks=(8, 24, 20))  # 5 slabs of 8 sections; window rows every 6 sections
    out = predict_volume(conv_net(3), src, tmp_path / "a.zarr", **kw)
    oracle = predict_volume(conv_net(3), vol, tmp_path / "b.zarr", **kw)
    assert np.array_equal(np.asarray(out[:]), np.asarray(oracle[:]))
    assert src.reads[0] == (0, 8)  # the first window row alone: the first forward pass waits for 8 sections only
    starts = [a for a, _ in src.reads]
    assert starts == sorted(starts) and all(b > a for a, b in src.reads)
    assert sum(b - a for a, b in src.reads) == 40  # every section is read once (consecutive slabs share their halo)
    assert max(b - a for a, b in src.reads) <= 8 + 8 + 4  # block depth + window depth + one input chunk
