"""scikit-learn oracle for the per-section protocol (warnings silenced: degenerate sections warn there)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, jaccard_score, matthews_corrcoef


def as_float64(prob: np.ndarray) -> np.ndarray:
    """The values scikit-learn scores: uint8 is the store's p*255, so u8 / 255 in float64."""
    prob = np.asarray(prob)
    if prob.dtype == np.uint8:
        return prob.astype(np.float64) / 255.0
    return prob.astype(np.float64)


def sklearn_section(prob: np.ndarray, label: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    p = as_float64(prob).ravel()
    y = np.asarray(label).astype(bool).ravel()
    b = p >= threshold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "mAP": average_precision_score(y, p),
            "F1": f1_score(y, b),
            "MCC": matthews_corrcoef(y, b),
            "IoU": jaccard_score(y, b),
        }


def sklearn_rows(prob: np.ndarray, label: np.ndarray, threshold: float = 0.5) -> list[dict[str, float]]:
    prob = np.asarray(prob)
    label = np.asarray(label)
    if prob.ndim == 2:
        prob, label = prob[None], label[None]
    return [sklearn_section(p, lab, threshold) for p, lab in zip(prob, label)]


def sklearn_mean(prob: np.ndarray, label: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    rows = sklearn_rows(prob, label, threshold)
    return {k: float(np.mean([r[k] for r in rows])) for k in ("mAP", "F1", "MCC", "IoU")}
