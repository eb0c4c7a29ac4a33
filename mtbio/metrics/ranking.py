"""Exact, fast average precision (scikit-learn's ``average_precision_score``) plus confusion counts.

scikit-learn's AP is a step sum over the *distinct* score values ``v`` (descending)::

    AP = sum_v (R(v) - R(v_prev)) * P(v),   P(v) = TP(>= v) / N(>= v),   R(v) = TP(>= v) / TP_total

so it depends only on how many positives and negatives hold each distinct value. This module gets those
per-value counts without a float sort where it can:

* ``uint8`` (the prediction store's ``p * 255``): one ``bincount`` over 2 x 256 bins (label, value);
* ``float16``: one ``bincount`` per class over the 65536 bit patterns; in [0, 1] the bit pattern orders
  like the value, and the same histogram validates the map (NaN, inf, < 0, > 1 land in known bins);
* ``float32`` / ``float64``: the bit patterns (non-negative floats order like unsigned integers) with the
  label in the lowest bit, sorted as integers (numpy's SIMD integer sort), then run-length grouped.

Only values that hold positives add a step, so the sum runs over those, in float64 from exact integer
counts; it agrees with scikit-learn to a few ulps (measured <= 4e-16). ``uint8`` scores are the values
``u8 / 255``; thresholds compare in float64 exactly like ``u8.astype(float64) / 255 >= threshold`` (and a
float16 / float32 map is compared like ``p.astype(float64) >= threshold``).

Degenerate cases, as scikit-learn 1.9 returns them (without its warnings): no foreground in the label gives
AP ``0.0``; a constant probability gives AP = foreground fraction; all-foreground label gives AP ``1.0``.
"""

from __future__ import annotations

import numpy as np

from mtbio.metrics.counts import ConfusionCounts

_F16_ONE = 0x3C00  # bit pattern of float16 1.0
_F16_NEG_ZERO = 0x8000
_F32_ONE = 0x3F800000
_F32_NEG_ZERO = 0x80000000
_F64_ONE = 0x3FF0000000000000
_F64_NEG_ZERO = 0x8000000000000000

_U8_VALUES = np.arange(256, dtype=np.float64) / 255.0
_F16_VALUES = np.arange(_F16_ONE + 1, dtype=np.uint16).view(np.float16).astype(np.float64)


def _context(name: str | None, section: int | None) -> tuple[str, str]:
    head = f"{name}: " if name else ""
    tail = "" if section is None else f" (section {section})"
    return head, tail


def _invalid_float(values: np.ndarray, name: str | None, section: int | None) -> ValueError:
    """The ValueError describing why a float map is not a probability map."""
    head, tail = _context(name, section)
    v = values.astype(np.float64, copy=False)
    if np.isnan(v).any():
        return ValueError(f"{head}probability map contains NaN{tail}")
    if np.isinf(v).any():
        return ValueError(f"{head}probability map contains inf{tail}")
    return ValueError(
        f"{head}probability map has values outside [0, 1] (min {v.min():.6g}, max {v.max():.6g}){tail}: "
        "pass probabilities (softmax / sigmoid output), not logits"
    )


def _ap_from_steps(pos: np.ndarray, tp_ge: np.ndarray, all_ge: np.ndarray, n_pos: int) -> float:
    """scikit-learn's step sum ``sum_v (pos_v / P) * TP(>= v) / N(>= v)`` over the values ``v`` holding positives.

    Args:
        pos: (S,) positives holding each such value.
        tp_ge: (S,) positives at or above it.
        all_ge: (S,) samples at or above it.
        n_pos: P, all positives (> 0).
    """
    recall_step = pos / n_pos
    precision = tp_ge / all_ge
    return min(max(float(np.sum(recall_step * precision)), 0.0), 1.0)


def _step_sum(values: np.ndarray, pos: np.ndarray, neg: np.ndarray, threshold: float) -> tuple[float, ConfusionCounts]:
    """AP and confusion counts from a histogram by value.

    Args:
        values: (U,) float64 score values, ascending (bins may be empty).
        pos: (U,) int64 positives holding each value.
        neg: (U,) int64 negatives holding each value.
        threshold: predicted foreground is ``value >= threshold``.

    scikit-learn's AP is ``sum_i (R_i - R_(i+1)) * P_i`` over distinct values descending; its terms vanish where
    no positive holds the value (and empty bins are no threshold at all), so only values with positives are
    evaluated, in float64 from exact integer counts.
    """
    n_pos = int(pos.sum())
    n_neg = int(neg.sum())
    first = int(np.searchsorted(values, threshold, side="left"))  # first value >= threshold
    tp = int(pos[first:].sum())
    fp = int(neg[first:].sum())
    counts = ConfusionCounts(tp=tp, fp=fp, fn=n_pos - tp, tn=n_neg - fp)
    if n_pos == 0:  # scikit-learn: recall 1 everywhere, AP = precision at the top threshold = 0
        return 0.0, counts
    tp_ge = np.cumsum(pos[::-1])[::-1]
    all_ge = np.cumsum((pos + neg)[::-1])[::-1]
    steps = np.flatnonzero(pos)
    return _ap_from_steps(pos[steps], tp_ge[steps], all_ge[steps], n_pos), counts


def _scores_uint8(prob: np.ndarray, label: np.ndarray, threshold: float) -> tuple[float, ConfusionCounts]:
    index = label.view(np.uint8).astype(np.uint16)
    index <<= 8
    index |= prob
    hist = np.bincount(index.ravel(), minlength=512)
    return _step_sum(_U8_VALUES, hist[256:], hist[:256], threshold)


def _scores_float16(
    prob: np.ndarray, label: np.ndarray, threshold: float, name: str | None, section: int | None
) -> tuple[float, ConfusionCounts]:
    bits = prob.view(np.uint16)
    all_hist = np.bincount(bits.ravel(), minlength=65536)
    pos_hist = np.bincount(bits[label], minlength=65536)
    neg_hist = all_hist - pos_hist
    outside = all_hist[_F16_ONE + 1 :].sum() - all_hist[_F16_NEG_ZERO]
    if outside:
        raise _invalid_float(prob, name, section)
    pos = pos_hist[: _F16_ONE + 1].copy()
    neg = neg_hist[: _F16_ONE + 1].copy()
    pos[0] += pos_hist[_F16_NEG_ZERO]  # -0.0 ties with 0.0
    neg[0] += neg_hist[_F16_NEG_ZERO]
    return _step_sum(_F16_VALUES, pos, neg, threshold)


def _first_at_or_above(threshold: float, dtype: np.dtype) -> np.generic:
    """The smallest ``dtype`` value ``c`` with ``float64(c) >= threshold`` (``threshold`` in [0, 1])."""
    c = dtype.type(threshold)
    if float(c) < threshold:
        c = np.nextafter(c, dtype.type(2))
    return c


def _scores_sorted(
    prob: np.ndarray, label: np.ndarray, threshold: float, name: str | None, section: int | None
) -> tuple[float, ConfusionCounts]:
    if prob.dtype == np.float32:
        utype, one, neg_zero = np.uint32, _F32_ONE, _F32_NEG_ZERO
    else:
        utype, one, neg_zero = np.uint64, _F64_ONE, _F64_NEG_ZERO
    bits = np.ascontiguousarray(prob).view(utype).ravel()
    if bits.max() > one:
        # only -0.0 may carry the sign bit; anything else above 1.0's pattern is < 0, > 1, inf or NaN
        if np.count_nonzero((bits > one) & (bits != neg_zero)):
            raise _invalid_float(prob, name, section)
        bits = bits & utype(neg_zero - 1)  # -0.0 -> 0.0
    # the bit patterns of floats in [0, 1] order like the values; the label goes into the lowest bit, so in
    # sorted order each distinct value is a run of negatives followed by a run of positives
    key = bits << utype(1)
    key |= label.ravel()
    key.sort()
    n = key.size
    starts = np.flatnonzero((key[1:] ^ key[:-1]) > 1)  # the value changes (not just the label bit)
    starts += 1
    starts = np.concatenate(([0], starts))
    pos_index = np.flatnonzero(key & utype(1))  # sorted positions of the positives, ascending
    n_pos = int(pos_index.size)
    # predicted foreground: keys at or above the first value >= threshold
    t_bits = np.asarray(_first_at_or_above(threshold, prob.dtype)).view(utype)
    cut = int(np.searchsorted(key, t_bits << utype(1), side="left"))
    tp = n_pos - int(np.searchsorted(pos_index, cut, side="left"))
    fp = (n - cut) - tp
    counts = ConfusionCounts(tp=tp, fp=fp, fn=n_pos - tp, tn=(n - n_pos) - fp)
    if n_pos == 0:
        return 0.0, counts
    # the value group of each positive, then one step per group holding positives
    group = np.searchsorted(starts, pos_index, side="right") - 1
    first = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
    pos = np.diff(np.concatenate((first, [n_pos])))
    tp_ge = n_pos - first  # positives at or above the group = those from its first positive on
    all_ge = n - starts[group[first]]
    return _ap_from_steps(pos, tp_ge, all_ge, n_pos), counts


def section_scores(
    prob: np.ndarray,
    label: np.ndarray,
    threshold: float = 0.5,
    *,
    name: str | None = None,
    section: int | None = None,
) -> tuple[float, ConfusionCounts]:
    """Average precision of ``prob`` and the confusion counts of ``prob >= threshold`` against ``label``.

    Args:
        prob: probabilities of any shape (a section is (Y, X)); uint8 (``p * 255``), float16, float32 or
            float64 in [0, 1].
        label: bool array of the same shape (True = foreground).
        threshold: foreground is ``p >= threshold`` (for uint8, ``u8 / 255 >= threshold`` in float64).
        name: the map's name or path, for error messages.
        section: the section index, for error messages.

    Returns:
        ``(ap, counts)``: AP equal (to float64 rounding) to ``average_precision_score(label.ravel(),
        p.ravel())`` with ``p`` the float64 values, and the :class:`ConfusionCounts`.

    Raises:
        ValueError: NaN, inf or values outside [0, 1] in a float map; unsupported dtype; shape mismatch.
    """
    t = float(threshold)
    if not (0.0 <= t <= 1.0):  # also refuses NaN
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    prob = np.asarray(prob)
    label = np.asarray(label)
    if label.dtype != np.bool_:
        raise ValueError(f"label must be a bool array, got dtype {label.dtype}")
    if prob.shape != label.shape:
        raise ValueError(f"probability shape {prob.shape} does not match label shape {label.shape}")
    if prob.size == 0:
        raise ValueError(f"{name + ': ' if name else ''}probability map is empty (shape {prob.shape})")
    if prob.dtype == np.uint8:
        return _scores_uint8(prob, label, threshold)
    if prob.dtype == np.float16:
        return _scores_float16(prob, label, threshold, name, section)
    if prob.dtype in (np.float32, np.float64):
        return _scores_sorted(prob, label, threshold, name, section)
    raise ValueError(
        f"{name + ': ' if name else ''}probability map has dtype {prob.dtype}; expected uint8 (p*255), "
        "float16, float32 or float64"
    )


def average_precision(prob: np.ndarray, label: np.ndarray, *, name: str | None = None) -> float:
    """Exact scikit-learn ``average_precision_score(label.ravel(), prob.ravel())`` of one in-memory array.

    Args:
        prob: probabilities of any shape, uint8 (``p * 255``; scored as ``u8 / 255``), float16, float32 or
            float64 in [0, 1].
        label: bool (or 0/1) array of the same shape.
        name: the map's name or path, for error messages.

    Returns:
        The AP; 0.0 when ``label`` has no foreground (scikit-learn's value, without its warning).
    """
    label = np.asarray(label)
    if label.dtype != np.bool_:
        from mtbio.metrics._inputs import binary_label

        label = binary_label(label, name=name)
    return section_scores(prob, label, name=name)[0]
