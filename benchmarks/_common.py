"""Reporting shared by the benchmark scripts: result tables, mean ± std, the acceptance checks, timing."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mtbio.metrics.table import METRICS, results_table

__all__ = [
    "METRICS",
    "acceptance",
    "add_planes_argument",
    "add_tta_argument",
    "labelled_sections",
    "mean_std",
    "summarize",
    "timed_fit",
]

#: the markdown table of mean ± sample std over seeds (``mtbio.metrics.table.results_table``)
summarize = results_table


def add_tta_argument(parser: Any, help: str) -> None:
    """Add ``--tta``, the test-time augmentation of a benchmark's labelled scoring.

    Choices: :class:`mtbio.inference.settings.TTA`; default: the tools' (``TOOL_DEFAULTS.tta``); ``help`` follows
    "test-time augmentation " in the help text.
    """
    from mtbio.inference.settings import TOOL_DEFAULTS, TTA

    parser.add_argument(
        "--tta",
        default=TOOL_DEFAULTS.tta.value,
        choices=[t.value for t in TTA],
        help=f"test-time augmentation {help}",
    )


def add_planes_argument(parser: Any, help: str) -> None:
    """Add ``--planes``, the planes a 2D network predicts a benchmark's labelled volume along (ortho-plane consensus,
    :mod:`mtbio.inference.planes`).

    Choices: :class:`mtbio.inference.settings.Planes`; default: the tools' (``TOOL_DEFAULTS.planes``); ``help``
    follows "planes " in the help text.
    """
    from mtbio.inference.settings import TOOL_DEFAULTS, Planes

    parser.add_argument(
        "--planes",
        default=TOOL_DEFAULTS.planes.value,
        choices=[m.value for m in Planes],
        help=f"planes {help}",
    )


def labelled_sections(eval_data: Any, split_name: str, sections: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """The Lucchi++ split ``split_name`` of the folder ``eval_data`` (:func:`mtbio.data.sources.load_split`), and its
    first ``sections`` sections: ``(split, image (Z, Y, X) float32, label (Z, Y, X) bool)``."""
    from mtbio.data.sources import load_split

    split = load_split("lucchi_pp", eval_data, split_name)
    image = np.asarray(split.image[:sections], dtype=np.float32)
    label = np.asarray(split.label[:sections]) > 0
    return split, image, label


def timed_fit(trainer: Any) -> float:
    """Run the trainer and return seconds per iteration (wall clock)."""
    t0 = time.perf_counter()
    trainer.fit()
    return (time.perf_counter() - t0) / max(1, trainer.max_iterations)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for one value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def acceptance(
    results: Mapping[str, Sequence[Mapping[str, float]]], metric: str = "IoU", target: float | None = None
) -> dict[str, Any]:
    """The benchmark's acceptance checks on ``metric`` (sample std over seeds).

    ``gain``: mean(masktwins) - mean(source_only) > 2 * max(std(masktwins), std(source_only));
    ``vs_<x>``: mean(masktwins) >= mean(x) - std(x) for x in mic, random_pair, mean_teacher (where present);
    ``ahead_of_<x>`` (the quality issue's separation): mean(masktwins) - mean(x) > max(std(masktwins), std(x)), with
    ``ahead_of_<x>_value`` the difference (one seed: std 0, so any positive difference counts); ``target``: with a
    ``target`` given, mean(masktwins) >= target (``target_value`` the target; the quality issue's CPU target is
    IoU 0.69, which ``benchmarks/uda_em2d.py`` passes).
    """
    out: dict[str, Any] = {}
    if "masktwins" not in results:
        return out
    mt, mt_s = mean_std([r[metric] for r in results["masktwins"]])
    if "source_only" in results:
        so, so_s = mean_std([r[metric] for r in results["source_only"]])
        out["gain"] = bool(mt - so > 2 * max(mt_s, so_s))
        out["gain_value"] = mt - so
    for x in ("mic", "random_pair", "mean_teacher"):
        if x in results:
            xm, xs = mean_std([r[metric] for r in results[x]])
            out[f"vs_{x}"] = bool(mt >= xm - xs) if not math.isnan(xm) else None
            out[f"ahead_of_{x}"] = bool(mt - xm > max(mt_s, xs)) if not math.isnan(xm) else None
            out[f"ahead_of_{x}_value"] = mt - xm
    if target is not None:
        out["target"] = bool(mt >= target)
        out["target_value"] = target
    return out
