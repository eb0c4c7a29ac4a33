"""A markdown table of metric results over seeds (what ``mtbio demo``, the bundle's ``evaluate`` and the
benchmarks print)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["METRICS", "results_table"]

METRICS = ("mAP", "F1", "MCC", "IoU")


def results_table(results: Mapping[str, Sequence[Mapping[str, float]]], metrics: Sequence[str] = METRICS) -> str:
    """A markdown table of mean ± sample std (ddof=1) over seeds per row and metric (values in %).

    Args:
        results: ``{strategy: [{"seed": k, "mAP": ..., ...}, ...]}``.
    """
    lines = ["| strategy | seeds | " + " | ".join(f"{m} (%)" for m in metrics) + " |"]
    lines.append("|---|---|" + "---|" * len(metrics))
    for strategy, rows in results.items():
        cells = []
        for m in metrics:
            vals = np.array([float(r[m]) for r in rows]) * 100
            if len(vals) == 0:
                cells.append("-")
            elif len(vals) == 1:
                cells.append(f"{vals[0]:.1f}")
            else:
                cells.append(f"{vals.mean():.1f} ± {vals.std(ddof=1):.1f}")
        lines.append(f"| {strategy} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
