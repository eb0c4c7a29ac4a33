"""mtbio's per-section protocol against scikit-learn on random maps of every dtype, ties and degenerate sections."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mtbio.metrics import (
    ConfusionCounts,
    average_precision,
    em_metrics,
    em_metrics_per_section,
    section_scores,
)

from ._oracle import sklearn_mean, sklearn_rows, sklearn_section

TOL = 1e-9
KEYS = ("mAP", "F1", "MCC", "IoU")


def _random_map(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    if kind == "uint8":
        return rng.integers(0, 256, shape).astype(np.uint8)
    if kind == "float32-ties":  # few distinct values: many ties, values exactly at 0.5
        return (rng.integers(0, 9, shape) / 8).astype(np.float32)
    if kind == "float16-ties":
        return (rng.integers(0, 5, shape) / 4).astype(np.float16)
    dtype = {"float16": np.float16, "float32": np.float32, "float64": np.float64}[kind]
    return rng.random(shape).astype(dtype)


def _assert_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g["section"] == i
        for k in KEYS:
            assert abs(g[k] - w[k]) <= TOL, (i, k, g[k], w[k])


@pytest.mark.parametrize("kind", ["uint8", "float16", "float32", "float64", "float32-ties", "float16-ties"])
def test_random_maps_match_sklearn(kind: str) -> None:
    rng = np.random.default_rng(abs(hash(kind)) % 2**32)
    shape = (5, 37, 53)
    label = rng.random(shape) < np.linspace(0.02, 0.6, shape[0])[:, None, None]
    prob = _random_map(rng, shape, kind)
    _assert_rows(em_metrics_per_section(prob, label), sklearn_rows(prob, label))
    got, want = em_metrics(prob, label), sklearn_mean(prob, label)
    assert set(got) == set(KEYS)
    for k in KEYS:
        assert abs(got[k] - want[k]) <= TOL


@pytest.mark.parametrize("kind", ["uint8", "float16", "float32", "float64"])
def test_correlated_maps_match_sklearn(kind: str) -> None:
    """A map that actually predicts the label (AP far from the foreground fraction)."""
    rng = np.random.default_rng(7)
    label = rng.random((3, 64, 64)) < 0.2
    p = np.clip(0.65 * label + rng.normal(0.2, 0.2, label.shape), 0, 1)
    prob = np.rint(p * 255).astype(np.uint8) if kind == "uint8" else p.astype(kind)
    _assert_rows(em_metrics_per_section(prob, label), sklearn_rows(prob, label))


def test_single_section_2d_is_one_row() -> None:
    rng = np.random.default_rng(3)
    label = rng.random((40, 30)) < 0.3
    prob = rng.random((40, 30)).astype(np.float32)
    rows = em_metrics_per_section(prob, label)
    _assert_rows(rows, [sklearn_section(prob, label)])
    assert em_metrics(prob, label) == {k: rows[0][k] for k in KEYS}


def test_uint8_threshold_is_128() -> None:
    """u8 127 -> 0.498 < 0.5 (background), 128 -> 0.502 (foreground)."""
    prob = np.array([[127, 128, 0, 255]], dtype=np.uint8)
    label = np.array([[True, True, False, False]])
    _, counts = section_scores(prob, label)
    assert counts == ConfusionCounts(tp=1, fp=1, fn=1, tn=1)


@pytest.mark.parametrize("kind", ["uint8", "float16", "float32", "float64"])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.1 + 0.2, 0.7, 1.0])
def test_other_thresholds_compare_in_float64(kind: str, threshold: float) -> None:
    """A threshold not representable in float16 / float32 still splits exactly like the float64 oracle."""
    rng = np.random.default_rng(11)
    label = rng.random((2, 50, 50)) < 0.4
    if kind == "uint8":
        prob = rng.integers(0, 256, label.shape).astype(np.uint8)
    else:
        base = rng.random(label.shape)
        base[0, :5, :5] = threshold  # values right at the threshold (rounded to the dtype)
        prob = base.astype(kind)
    _assert_rows(em_metrics_per_section(prob, label, threshold=threshold), sklearn_rows(prob, label, threshold))


def test_negative_zero_ties_with_zero() -> None:
    prob = np.array([[-0.0, 0.0, 0.0, 0.4, 0.9]], dtype=np.float32)
    label = np.array([[True, False, False, True, False]])
    for dtype in (np.float16, np.float32, np.float64):
        got = em_metrics(prob.astype(dtype), label)
        want = sklearn_section(prob.astype(dtype), label)
        for k in KEYS:
            assert abs(got[k] - want[k]) <= TOL


DEGENERATE = {
    "no label foreground, some prediction": (np.zeros(20, bool), np.r_[np.full(5, 0.9), np.full(15, 0.1)]),
    "no label foreground, empty prediction": (np.zeros(20, bool), np.full(20, 0.1)),
    "all foreground, all predicted": (np.ones(20, bool), np.full(20, 0.9)),
    "all foreground, some predicted": (np.ones(20, bool), np.r_[np.full(5, 0.9), np.full(15, 0.1)]),
    "all foreground, empty prediction": (np.ones(20, bool), np.full(20, 0.2)),
    "constant probability above 0.5": (np.arange(20) % 3 == 0, np.full(20, 0.7)),
    "constant probability below 0.5": (np.arange(20) % 3 == 0, np.full(20, 0.2)),
    "constant probability exactly 0.5": (np.arange(20) % 3 == 0, np.full(20, 0.5)),
    "perfect": (np.arange(20) % 2 == 0, (np.arange(20) % 2 == 0).astype(float)),
    "inverted": (np.arange(20) % 2 == 0, (np.arange(20) % 2 == 1).astype(float)),
}
# what scikit-learn 1.9.1 returns (checked by the test against scikit-learn itself, documented in docs/metrics.md)
DEGENERATE_VALUES = {
    "no label foreground, some prediction": (0.0, 0.0, 0.0, 0.0),
    "no label foreground, empty prediction": (0.0, 0.0, 0.0, 0.0),
    "all foreground, all predicted": (1.0, 1.0, 0.0, 1.0),
    "all foreground, some predicted": (1.0, 10 / 25, 0.0, 0.25),
    "all foreground, empty prediction": (1.0, 0.0, 0.0, 0.0),
    "constant probability above 0.5": (7 / 20, 14 / 27, 0.0, 7 / 20),
    "constant probability below 0.5": (7 / 20, 0.0, 0.0, 0.0),
    "constant probability exactly 0.5": (7 / 20, 14 / 27, 0.0, 7 / 20),
    "perfect": (1.0, 1.0, 1.0, 1.0),
    "inverted": (0.5, 0.0, -1.0, 0.0),
}


@pytest.mark.parametrize("case", list(DEGENERATE))
@pytest.mark.parametrize("kind", ["uint8", "float16", "float32"])
def test_degenerate_sections_match_sklearn_without_warnings(case: str, kind: str) -> None:
    label, p = DEGENERATE[case]
    label = label.reshape(4, 5)
    p = p.reshape(4, 5)
    prob = np.rint(p * 255).astype(np.uint8) if kind == "uint8" else p.astype(kind)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = em_metrics(prob, label)
    assert caught == []
    want = sklearn_section(prob, label)
    for k, documented in zip(KEYS, DEGENERATE_VALUES[case]):
        assert abs(got[k] - want[k]) <= TOL, (k, got[k], want[k])
        if kind != "uint8" or case not in ("constant probability exactly 0.5",):
            assert abs(got[k] - documented) <= TOL, (k, got[k], documented)


def test_average_precision_any_shape_and_int_label() -> None:
    rng = np.random.default_rng(5)
    prob = rng.random((4, 6, 7)).astype(np.float32)
    label = (rng.random((4, 6, 7)) < 0.3).astype(np.uint8)
    from sklearn.metrics import average_precision_score

    want = average_precision_score(label.ravel(), prob.astype(np.float64).ravel())
    assert abs(average_precision(prob, label) - want) <= TOL


def test_confusion_counts_scores_match_closed_forms() -> None:
    c = ConfusionCounts(tp=30, fp=10, fn=5, tn=55)
    assert c.total == 100
    assert c.f1 == pytest.approx(60 / 75) and c.dice == c.f1
    assert c.iou == pytest.approx(30 / 45)
    assert c.mcc == pytest.approx((30 * 55 - 10 * 5) / np.sqrt(40 * 35 * 65 * 60))
    assert c.precision == pytest.approx(0.75) and c.recall == pytest.approx(30 / 35)
    assert c + c == ConfusionCounts(60, 20, 10, 110)
    big = ConfusionCounts(tp=3 * 10**11, fp=10**10, fn=2 * 10**10, tn=10**12)  # volume-sized: no overflow
    num = 3 * 10**11 * 10**12 - 10**10 * 2 * 10**10
    den = (31 * 10**10) * (32 * 10**10) * (101 * 10**10) * (102 * 10**10)
    assert big.mcc == pytest.approx(num / np.sqrt(float(den)), rel=1e-12)
    with pytest.raises(ValueError, match="tp"):
        ConfusionCounts(tp=-1)
