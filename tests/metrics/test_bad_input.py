"""Every bad input gets a ValueError that says what is wrong (and names the file when it is known)."""

from __future__ import annotations

import numpy as np
import pytest

from mtbio.metrics import em_metrics, em_metrics_per_section, section_scores, volume_metrics

LABEL = np.zeros((3, 8, 8), bool)
LABEL[:, 2:5, 2:5] = True


def _prob(dtype: str = "float32") -> np.ndarray:
    return np.linspace(0, 1, LABEL.size).reshape(LABEL.shape).astype(dtype)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.nan, "NaN"),
        (np.inf, "inf"),
        (-np.inf, "inf"),
        (1.5, r"outside \[0, 1\]"),
        (-0.25, r"outside \[0, 1\]"),
    ],  # fmt: skip
)
@pytest.mark.parametrize("metric", [em_metrics, volume_metrics])
def test_non_probability_values(dtype: str, bad: float, message: str, metric) -> None:
    prob = _prob(dtype)
    prob[1, 3, 4] = bad
    with pytest.raises(ValueError, match=message) as err:
        metric(prob, LABEL, name="run7/pred.zarr")
    assert "run7/pred.zarr" in str(err.value)
    if metric is em_metrics:
        assert "section 1" in str(err.value)


def test_shape_mismatch_names_both() -> None:
    with pytest.raises(ValueError, match=r"\(3, 8, 8\).*\(3, 8, 9\).*p\.h5 vs l\.tif"):
        em_metrics(_prob(), np.zeros((3, 8, 9), bool), name="p.h5", label_name="l.tif")


@pytest.mark.parametrize("shape", [(64,), (2, 3, 8, 8)])
def test_wrong_rank(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="rank"):
        em_metrics(np.zeros(shape, np.float32), np.zeros(shape, bool))


@pytest.mark.parametrize("shape", [(0, 8, 8), (3, 0, 8), (8, 0)])
def test_empty(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="empty"):
        em_metrics(np.zeros(shape, np.float32), np.zeros(shape, bool), name="x.npy")


@pytest.mark.parametrize(
    ("prob", "message"),
    [
        (np.full((2, 4, 4), "a"), "non-numeric"),
        (np.empty((2, 4, 4), object), "non-numeric"),
        (np.zeros((2, 4, 4), np.complex64), "dtype complex64"),
        (np.zeros((2, 4, 4), np.uint16), "uint8 = p\\*255"),
        (np.zeros((2, 4, 4), bool), "dtype bool"),
    ],
)
def test_unsupported_probability_dtype(prob: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        em_metrics(prob, np.zeros(prob.shape, bool))


def test_label_must_be_binary() -> None:
    label = LABEL.astype(np.uint8) * 255  # a raw label file, not binarised
    with pytest.raises(ValueError, match="other than 0 and 1.*open_label_volume") as err:
        em_metrics(_prob(), label, label_name="Train_Out")
    assert "Train_Out" in str(err.value)
    with pytest.raises(ValueError, match="other than 0 and 1"):
        volume_metrics(_prob(), LABEL * 0.5)
    with pytest.raises(ValueError, match="non-numeric"):
        em_metrics(_prob(), np.full(LABEL.shape, "x"))
    with pytest.raises(ValueError, match="NaN"):
        em_metrics(_prob(), np.full(LABEL.shape, np.nan))
    # 0/1 integers and floats are accepted and equal the bool label
    assert em_metrics(_prob(), LABEL.astype(np.int64)) == em_metrics(_prob(), LABEL)
    assert em_metrics(_prob(), LABEL.astype(np.float32)) == em_metrics(_prob(), LABEL)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_bad_threshold(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        em_metrics_per_section(_prob(), LABEL, threshold=threshold)
    with pytest.raises(ValueError, match="threshold"):
        volume_metrics(_prob(), LABEL, threshold)


def test_bad_block_sections() -> None:
    with pytest.raises(ValueError, match="block_sections"):
        em_metrics(_prob(), LABEL, block_sections=0)


def test_section_scores_checks() -> None:
    with pytest.raises(ValueError, match="bool"):
        section_scores(_prob()[0], LABEL[0].astype(np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        section_scores(_prob()[0], LABEL[0, :4])
