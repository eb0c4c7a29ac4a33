"""Binary confusion counts and the scores computed from them (F1 / Dice, MCC, IoU).

Counts are Python integers, so sums over whole volumes never overflow and every score is one float64
rounding away from its exact value. Degenerate cases follow scikit-learn 1.9 (``f1_score``,
``jaccard_score`` with the default ``zero_division="warn"``, ``matthews_corrcoef``) but warn nothing:

* F1 / Dice and IoU are ``0.0`` when ``tp + fp + fn == 0`` (no foreground in label nor prediction);
* MCC is ``0.0`` when any of ``tp + fp``, ``tp + fn``, ``tn + fp``, ``tn + fn`` is 0 (constant label or
  constant prediction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfusionCounts:
    """Voxel counts of a binary prediction against a binary label.

    Attributes:
        tp: predicted foreground, label foreground.
        fp: predicted foreground, label background.
        fn: predicted background, label foreground.
        tn: predicted background, label background.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __post_init__(self) -> None:
        for field in ("tp", "fp", "fn", "tn"):
            value = getattr(self, field)
            if int(value) != value or value < 0:
                raise ValueError(f"ConfusionCounts.{field} must be a non-negative integer, got {value!r}")
            object.__setattr__(self, field, int(value))

    def __add__(self, other: ConfusionCounts) -> ConfusionCounts:
        if not isinstance(other, ConfusionCounts):
            return NotImplemented
        return ConfusionCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def f1(self) -> float:
        """``2 tp / (2 tp + fp + fn)``; 0.0 when the denominator is 0 (scikit-learn's ``f1_score``)."""
        den = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / den if den else 0.0

    @property
    def dice(self) -> float:
        """The Dice coefficient, equal to :attr:`f1`."""
        return self.f1

    @property
    def iou(self) -> float:
        """Foreground IoU (Jaccard) ``tp / (tp + fp + fn)``; 0.0 when the denominator is 0
        (scikit-learn's ``jaccard_score``)."""
        den = self.tp + self.fp + self.fn
        return self.tp / den if den else 0.0

    @property
    def mcc(self) -> float:
        """Matthews correlation ``(tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn))``; 0.0 when the
        denominator is 0 (scikit-learn's ``matthews_corrcoef``)."""
        den = (self.tp + self.fp) * (self.tp + self.fn) * (self.tn + self.fp) * (self.tn + self.fn)
        if den == 0:
            return 0.0
        return (self.tp * self.tn - self.fp * self.fn) / math.sqrt(den)

    @property
    def precision(self) -> float:
        """``tp / (tp + fp)``; 0.0 when nothing is predicted."""
        den = self.tp + self.fp
        return self.tp / den if den else 0.0

    @property
    def recall(self) -> float:
        """``tp / (tp + fn)``; 0.0 when the label has no foreground."""
        den = self.tp + self.fn
        return self.tp / den if den else 0.0
