"""Literature metrics for EM mitochondria segmentation: exact (scikit-learn to float64 rounding), fast, streaming.

The protocol of DA-ISC and MaskTwins: per 2D section along axis 0, average precision of the foreground
probability ("mAP") and F1, MCC and foreground IoU of ``prob >= 0.5``, then the mean over sections::

    from mtbio.metrics import em_metrics, em_metrics_per_section, volume_metrics

    em_metrics(prob, label)             # {"mAP": ..., "F1": ..., "MCC": ..., "IoU": ...}
    em_metrics_per_section(prob, label) # [{"section": 0, "mAP": ..., ...}, ...]
    volume_metrics(prob, label)         # {"Dice": ..., "IoU": ...} over the whole volume

See ``docs/metrics.md`` for the exactness argument, degenerate sections and speed.
"""

from __future__ import annotations

from mtbio.metrics.counts import ConfusionCounts
from mtbio.metrics.em import (
    SECTION_METRICS,
    Evaluation,
    SectionResult,
    confusion_counts,
    em_metrics,
    em_metrics_per_section,
    evaluate,
    iter_sections,
    volume_metrics,
)
from mtbio.metrics.ranking import average_precision, section_scores

__all__ = [
    "SECTION_METRICS",
    "ConfusionCounts",
    "Evaluation",
    "SectionResult",
    "average_precision",
    "confusion_counts",
    "em_metrics",
    "em_metrics_per_section",
    "evaluate",
    "iter_sections",
    "section_scores",
    "volume_metrics",
]
