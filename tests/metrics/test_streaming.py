"""Streaming: lazy inputs (zarr, h5py, the prediction store's view) give the in-memory numbers, reading a block
of sections at a time; whole-volume Dice / IoU against a direct numpy formula."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mtbio.metrics import Evaluation, confusion_counts, em_metrics, em_metrics_per_section, evaluate, volume_metrics

from ._oracle import as_float64


def _volume(kind: str, shape: tuple[int, int, int] = (9, 48, 40), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = rng.random(shape) < 0.25
    p = np.clip(0.5 * label + rng.normal(0.25, 0.2, shape), 0, 1)
    prob = np.rint(p * 255).astype(np.uint8) if kind == "uint8" else p.astype(kind)
    return prob, label


class RecordingArray:
    """Wraps an array and records every read, to prove the metrics never read more than one block."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.reads: list[int] = []

    def __getitem__(self, index: Any) -> np.ndarray:
        out = np.asarray(self._array[index])
        self.reads.append(out.shape[0] if out.ndim == 3 else 1)
        return out


@pytest.mark.parametrize("kind", ["uint8", "float16", "float32"])
def test_zarr_streaming_equals_in_memory(tmp_path, kind: str) -> None:
    import zarr

    prob, label = _volume(kind)
    zp = zarr.create_array(str(tmp_path / "p.zarr"), shape=prob.shape, chunks=(2, 16, 16), dtype=prob.dtype)
    zp[:] = prob
    zl = zarr.create_array(str(tmp_path / "l.zarr"), shape=label.shape, chunks=(4, 48, 40), dtype=np.uint8)
    zl[:] = label.astype(np.uint8)
    want = em_metrics_per_section(prob, label)
    for block in (None, 1, 4):
        assert em_metrics_per_section(zp, zl, block_sections=block) == want
    assert em_metrics(zp, zl) == em_metrics(prob, label)
    assert volume_metrics(zp, zl) == volume_metrics(prob, label)


def test_h5py_dataset(tmp_path) -> None:
    import h5py

    prob, label = _volume("float32", seed=1)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f.create_dataset("prob", data=prob, chunks=(1, 48, 40))
        f.create_dataset("label", data=label)
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert em_metrics(f["prob"], f["label"]) == em_metrics(prob, label)


def test_reads_one_block_at_a_time() -> None:
    prob, label = _volume("uint8", seed=2)
    rp, rl = RecordingArray(prob), RecordingArray(label)
    rows = em_metrics_per_section(rp, rl, block_sections=2)
    assert rows == em_metrics_per_section(prob, label)
    assert rp.reads == [2, 2, 2, 2, 1] and rl.reads == rp.reads
    # the default budget bounds a block by bytes: a tiny budget means one section per read
    from mtbio.metrics import iter_sections

    rp2 = RecordingArray(prob)
    assert [s.row() for s in iter_sections(rp2, label, max_block_bytes=1)] == rows
    assert max(rp2.reads) == 1
    rv = RecordingArray(prob)
    volume_metrics(rv, label, block_sections=3)
    assert rv.reads == [3, 3, 3]


def test_prediction_store_foreground_view(tmp_path) -> None:
    from mtbio.data.store import create_prediction_store, encode_probability, mark_complete, open_prediction_store

    prob, label = _volume("float32", seed=3)
    store = create_prediction_store(tmp_path / "pred", prob.shape, dtype="uint8", chunks=(4, 32, 32))
    store.array[1] = encode_probability(prob, "uint8")
    store.array[0] = 255 - store.array[1]
    mark_complete(tmp_path / "pred")
    view = open_prediction_store(tmp_path / "pred").foreground()
    assert em_metrics(view, label) == em_metrics(encode_probability(prob, "uint8"), label)


@pytest.mark.parametrize("kind", ["uint8", "float16", "float32", "float64"])
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.85])
def test_volume_metrics_match_numpy_formula(kind: str, threshold: float) -> None:
    prob, label = _volume(kind, seed=4)
    pred = as_float64(prob) >= threshold
    tp = np.count_nonzero(pred & label)
    fp = np.count_nonzero(pred & ~label)
    fn = np.count_nonzero(~pred & label)
    got = volume_metrics(prob, label, threshold, block_sections=2)
    assert got["Dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert got["IoU"] == pytest.approx(tp / (tp + fp + fn), abs=1e-12)
    counts = confusion_counts(prob, label, threshold=threshold)
    assert (counts.tp, counts.fp, counts.fn, counts.total) == (tp, fp, fn, label.size)
    # the one-pass evaluation sums the same counts from its per-section pass
    assert evaluate(prob, label, threshold=threshold).volume() == pytest.approx(got, abs=1e-15)


@pytest.mark.parametrize("kind", ["uint8", "float16", "float64"])
def test_foreground_fractions_match_numpy(kind: str) -> None:
    """Evaluation.foreground(): the predicted (at the threshold, uint8 decoded as u8 / 255) and labelled fractions
    over the whole volume, from the same pass; 0.0 for an evaluation with no sections."""
    prob, label = _volume(kind, seed=5)
    for threshold in (0.5, 0.3):
        got = evaluate(prob, label, threshold=threshold, block_sections=3).foreground()
        assert got["foreground"] == pytest.approx((as_float64(prob) >= threshold).mean(), abs=1e-15)
        assert got["foreground_label"] == pytest.approx(label.mean(), abs=1e-15)
    assert Evaluation().foreground() == {"foreground": 0.0, "foreground_label": 0.0}


def test_volume_metrics_empty_prediction_and_label() -> None:
    prob = np.zeros((2, 8, 8), np.float32)
    label = np.zeros((2, 8, 8), bool)
    assert volume_metrics(prob, label) == {"Dice": 0.0, "IoU": 0.0}
