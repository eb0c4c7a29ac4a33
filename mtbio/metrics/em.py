"""The literature protocol for EM mitochondria (DA-ISC, MaskTwins), streamed section by section.

For each 2D section along axis 0: average precision of the foreground probability (scikit-learn's
``average_precision_score``, reported as "mAP"), and F1, MCC and foreground IoU of ``prob >= 0.5``; then the
mean over sections. Whole-volume (3D) Dice and IoU come from confusion counts summed over all sections.

Inputs are read one block of sections at a time (chunk-aligned for zarr / h5py), so maps larger than memory
work. Every number equals scikit-learn's on the same float64 values to a few ulps (``uint8`` maps are the
prediction store's ``p * 255`` and score as ``u8 / 255``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mtbio.metrics._inputs import (
    DEFAULT_BLOCK_BYTES,
    as_indexable,
    binary_label,
    block_size,
    check_pair,
    iter_blocks,
)
from mtbio.metrics.counts import ConfusionCounts
from mtbio.metrics.ranking import _first_at_or_above, _invalid_float, section_scores

#: the per-section metric names, in report order
SECTION_METRICS = ("mAP", "F1", "MCC", "IoU")


@dataclass(frozen=True)
class SectionResult:
    """Scores of one 2D section.

    Attributes:
        section: index along axis 0 (0 for a 2D map).
        ap: average precision of the probability ("mAP" in the literature tables).
        counts: confusion counts of ``prob >= threshold``.
    """

    section: int
    ap: float
    counts: ConfusionCounts

    def row(self) -> dict[str, float | int]:
        """``{"section": i, "mAP": ..., "F1": ..., "MCC": ..., "IoU": ...}``."""
        return {"section": self.section, "mAP": self.ap, "F1": self.counts.f1, "MCC": self.counts.mcc,
                "IoU": self.counts.iou}  # fmt: skip


@dataclass
class Evaluation:
    """Everything one streaming pass computes.

    Attributes:
        sections: one :class:`SectionResult` per section, in order.
        threshold: the binarisation threshold used.
    """

    sections: list[SectionResult] = field(default_factory=list)
    threshold: float = 0.5

    @property
    def counts(self) -> ConfusionCounts:
        """Whole-volume confusion counts (sum over sections)."""
        total = ConfusionCounts()
        for s in self.sections:
            total = total + s.counts
        return total

    def mean(self) -> dict[str, float]:
        """The protocol's summary: per-section scores averaged over sections, keys ``mAP, F1, MCC, IoU``."""
        rows = self.rows()
        return {k: math.fsum(r[k] for r in rows) / len(rows) for k in SECTION_METRICS}

    def rows(self) -> list[dict[str, float | int]]:
        """Per-section rows ``{"section", "mAP", "F1", "MCC", "IoU"}``."""
        return [s.row() for s in self.sections]

    def volume(self) -> dict[str, float]:
        """Whole-volume ``{"Dice", "IoU"}`` of ``prob >= threshold``."""
        c = self.counts
        return {"Dice": c.dice, "IoU": c.iou}

    def foreground(self) -> dict[str, float]:
        """Whole-volume ``{"foreground", "foreground_label"}``: the fraction of voxels predicted foreground
        (``prob >= threshold``) and labelled foreground. A predicted fraction well above the labelled one is
        over-segmentation at the threshold, well below it under-segmentation (what a high mAP beside a lower IoU
        often points at). Both 0.0 for an empty evaluation."""
        c = self.counts
        n = c.total
        return {"foreground": (c.tp + c.fp) / n if n else 0.0, "foreground_label": (c.tp + c.fn) / n if n else 0.0}


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return t


def iter_sections(
    prob: Any,
    label: Any,
    *,
    threshold: float = 0.5,
    name: str | None = None,
    label_name: str | None = None,
    block_sections: int | None = None,
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Iterator[SectionResult]:
    """Score a map section by section, reading one block of sections at a time.

    Args:
        prob: (Z, Y, X) or (Y, X) probabilities, lazily indexable; uint8 (``p * 255``), float16, float32 or
            float64 in [0, 1].
        label: same shape; bool, or integers / floats holding only 0 and 1.
        threshold: predicted foreground is ``p >= threshold`` (0.5 in the protocol).
        name: the probability map's path or name, for error messages.
        label_name: the label's path or name, for error messages.
        block_sections: sections per read; default: as many as fit ``max_block_bytes``, whole chunks.
        max_block_bytes: memory budget of one block when ``block_sections`` is not given.

    Yields:
        One :class:`SectionResult` per section, in order.

    Raises:
        ValueError: see :func:`em_metrics`.
    """
    threshold = _check_threshold(threshold)
    prob = as_indexable(prob)
    label = as_indexable(label)
    spec = check_pair(prob, label, name=name, label_name=label_name)
    if block_sections is None:
        block = block_size(spec, prob, max_block_bytes)
    else:
        if int(block_sections) != block_sections or block_sections < 1:
            raise ValueError(f"block_sections must be a positive integer, got {block_sections!r}")
        block = int(block_sections)
    for z0, p_block, l_block in iter_blocks(prob, label, spec, block):
        l_block = binary_label(l_block, name=label_name, section=z0 if len(spec.shape) == 3 else None)
        for i in range(p_block.shape[0]):
            z = z0 + i
            ap, counts = section_scores(
                p_block[i], l_block[i], threshold, name=name, section=z if len(spec.shape) == 3 else None
            )
            yield SectionResult(z, ap, counts)


def evaluate(
    prob: Any,
    label: Any,
    *,
    threshold: float = 0.5,
    name: str | None = None,
    label_name: str | None = None,
    block_sections: int | None = None,
) -> Evaluation:
    """One streaming pass: per-section scores (for :meth:`Evaluation.mean`, :meth:`Evaluation.rows`) and
    whole-volume counts (for :meth:`Evaluation.volume`). Arguments as in :func:`iter_sections`."""
    sections = list(
        iter_sections(prob, label, threshold=threshold, name=name, label_name=label_name, block_sections=block_sections)
    )
    return Evaluation(sections=sections, threshold=float(threshold))


def em_metrics(
    prob: Any,
    label: Any,
    *,
    threshold: float = 0.5,
    name: str | None = None,
    label_name: str | None = None,
    block_sections: int | None = None,
) -> dict[str, float]:
    """The literature protocol: per-section mAP, F1, MCC, IoU averaged over sections along axis 0.

    Args:
        prob: (Z, Y, X) or (Y, X) foreground probabilities (a 2D map is a single section); uint8
            (``p * 255``, scored as ``u8 / 255``), float16, float32 or float64 in [0, 1]; numpy, zarr, h5py or
            any array that slices along axis 0 (read one block of sections at a time).
        label: same shape; bool, or integer / float holding only 0 and 1 (binarise label files first with
            ``mtbio.data.labels.open_label_volume``).
        threshold: F1 / MCC / IoU score ``p >= threshold`` (0.5 in the protocol).
        name: the probability map's path or name, for error messages.
        label_name: the label's path or name, for error messages.
        block_sections: sections per read (default: a ~64 MiB budget, chunk-aligned).

    Returns:
        ``{"mAP", "F1", "MCC", "IoU"}``, each the mean over sections of scikit-learn's
        ``average_precision_score``, ``f1_score``, ``matthews_corrcoef``, ``jaccard_score`` on that section.
        Degenerate sections score as scikit-learn 1.9 does (no warnings): no label foreground gives mAP 0;
        a constant probability gives mAP = the foreground fraction; F1 / IoU are 0 when neither label nor
        prediction has foreground; MCC is 0 when label or prediction is constant.

    Raises:
        ValueError: NaN / inf / values outside [0, 1] in the map, non-binary label, shape mismatch, rank not
            2 or 3, empty map, non-numeric or unsupported dtype, threshold outside [0, 1].
    """
    return evaluate(
        prob, label, threshold=threshold, name=name, label_name=label_name, block_sections=block_sections
    ).mean()


def em_metrics_per_section(
    prob: Any,
    label: Any,
    *,
    threshold: float = 0.5,
    name: str | None = None,
    label_name: str | None = None,
    block_sections: int | None = None,
) -> list[dict[str, float | int]]:
    """One row ``{"section": i, "mAP", "F1", "MCC", "IoU"}`` per section along axis 0 (one row for a 2D map).

    Arguments, degenerate cases and errors as in :func:`em_metrics`.
    """
    return [
        s.row()
        for s in iter_sections(
            prob, label, threshold=threshold, name=name, label_name=label_name, block_sections=block_sections
        )
    ]


def confusion_counts(
    prob: Any,
    label: Any,
    *,
    threshold: float = 0.5,
    name: str | None = None,
    label_name: str | None = None,
    block_sections: int | None = None,
) -> ConfusionCounts:
    """Whole-volume confusion counts of ``prob >= threshold``, accumulated one block of sections at a time.

    Arguments and errors as in :func:`em_metrics`; ``prob`` is (Z, Y, X) or (Y, X).
    """
    threshold = _check_threshold(threshold)
    prob = as_indexable(prob)
    label = as_indexable(label)
    spec = check_pair(prob, label, name=name, label_name=label_name)
    block = block_size(spec, prob) if block_sections is None else int(block_sections)
    if block < 1:
        raise ValueError(f"block_sections must be a positive integer, got {block_sections!r}")
    total = ConfusionCounts()
    for z0, p_block, l_block in iter_blocks(prob, label, spec, block):
        where = z0 if len(spec.shape) == 3 else None
        l_block = binary_label(l_block, name=label_name, section=where)
        pred = _binarize(p_block, threshold, name=name, section=where)
        n_label = int(np.count_nonzero(l_block))
        n_pred = int(np.count_nonzero(pred))
        tp = int(np.count_nonzero(pred & l_block))
        fp = n_pred - tp
        fn = n_label - tp
        total = total + ConfusionCounts(tp=tp, fp=fp, fn=fn, tn=int(l_block.size) - tp - fp - fn)
    return total


def _binarize(prob: Any, threshold: float, *, name: str | None, section: int | None) -> Any:
    """``prob >= threshold`` in float64 semantics (uint8 as ``u8 / 255``), after checking the range."""
    if prob.dtype == np.uint8:
        # smallest k with k / 255 >= threshold, computed the way the float64 oracle computes it
        k = int(np.searchsorted(np.arange(256, dtype=np.float64) / 255.0, threshold, side="left"))
        return prob >= k if k < 256 else np.zeros(prob.shape, dtype=bool)
    lo, hi = prob.min(), prob.max()
    if not (lo >= 0 and hi <= 1):  # also catches NaN
        raise _invalid_float(prob, name, section)
    return prob >= _first_at_or_above(threshold, prob.dtype)


def volume_metrics(
    prob: Any,
    label: Any,
    threshold: float = 0.5,
    *,
    name: str | None = None,
    label_name: str | None = None,
    block_sections: int | None = None,
) -> dict[str, float]:
    """Whole-volume (3D) Dice and IoU of ``prob >= threshold``, with counts accumulated blockwise.

    Args:
        prob: (Z, Y, X) or (Y, X) probabilities, as in :func:`em_metrics`.
        label: same shape, binary.
        threshold: foreground is ``p >= threshold`` (uint8: ``u8 / 255 >= threshold``).
        name: the probability map's path or name, for error messages.
        label_name: the label's path or name, for error messages.
        block_sections: sections per read (default: a ~64 MiB budget, chunk-aligned).

    Returns:
        ``{"Dice": 2 tp / (2 tp + fp + fn), "IoU": tp / (tp + fp + fn)}``; both 0.0 when neither label nor
        prediction has any foreground (scikit-learn's ``zero_division`` default).
    """
    c = confusion_counts(
        prob, label, threshold=threshold, name=name, label_name=label_name, block_sections=block_sections
    )
    return {"Dice": c.dice, "IoU": c.iou}
