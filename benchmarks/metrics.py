"""Benchmark: mtbio's per-section protocol (mAP, F1, MCC, IoU) against scikit-learn, speed and exactness.

Usage::

    python benchmarks/metrics.py                                   # synthetic 768x1024 sections
    python benchmarks/metrics.py --data /path/to/lucchi_pp --sections 10 --out bench-out

With ``--data`` (a Lucchi++ root) the labels are the first N sections of ``Train_Out`` (the EPFL testing
volume) read by the label rule; the probability map is a blurred label plus noise, clipped to [0, 1], stored
as uint8 (``p * 255``), float16 and float32. For each dtype it times scikit-learn (``average_precision_score``
alone, and the four metrics) and mtbio's ``em_metrics_per_section`` per section, and reports the speed
ratios and the largest |mtbio - scikit-learn| over sections and metrics. Writes ``metrics.json`` and
``metrics.md`` into ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

KEYS = ("mAP", "F1", "MCC", "IoU")


def lucchi_labels(root: Path, count: int) -> np.ndarray:
    """(N, 768, 1024) bool labels of ``root/Train_Out`` by the label rule (greyscale, > 127)."""
    folder = root / "Train_Out"
    if not folder.is_dir():
        raise SystemExit(f"{folder}: no such folder (--data must be a Lucchi++ root holding Train_Out/)")
    from mtbio.data.labels import open_label_volume

    volume = open_label_volume(folder)
    return np.asarray(volume[: min(count, volume.shape[0])]).astype(bool)


def synthetic_labels(count: int, seed: int = 0) -> np.ndarray:
    """(N, 768, 1024) bool: random ellipses covering about 7 % of each section."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:768, :1024]
    out = np.zeros((count, 768, 1024), bool)
    for z in range(count):
        for _ in range(40):
            cy, cx = rng.uniform(0, 768), rng.uniform(0, 1024)
            ry, rx = rng.uniform(8, 30), rng.uniform(15, 60)
            out[z] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return out


def probability_map(label: np.ndarray, seed: int = 1) -> np.ndarray:
    """A smooth, realistic float32 map: the label blurred in-plane, plus Gaussian noise, clipped to [0, 1]."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    p = gaussian_filter(label.astype(np.float32), sigma=(0, 4, 4)) * 0.9
    p += rng.normal(0.05, 0.08, label.shape).astype(np.float32)
    return np.clip(p, 0, 1).astype(np.float32)


def sklearn_section(values: np.ndarray, label: np.ndarray) -> tuple[dict[str, float], float, float]:
    """(scores, seconds for AP alone, seconds for all four metrics) on float64 ``values``."""
    from sklearn.metrics import average_precision_score, f1_score, jaccard_score, matthews_corrcoef

    y = label.ravel()
    v = values.ravel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        ap = average_precision_score(y, v)
        t1 = time.perf_counter()
        b = v >= 0.5
        scores = {"mAP": ap, "F1": f1_score(y, b), "MCC": matthews_corrcoef(y, b), "IoU": jaccard_score(y, b)}
        t2 = time.perf_counter()
    return scores, t1 - t0, t2 - t0


def run(label: np.ndarray, repeats: int) -> dict[str, dict]:
    from mtbio.metrics import em_metrics_per_section

    p = probability_map(label)
    maps = {
        "uint8": np.clip(np.rint(p * 255), 0, 255).astype(np.uint8),
        "float16": p.astype(np.float16),
        "float32": p,
    }
    results = {}
    for kind, prob in maps.items():
        values = prob.astype(np.float64) / 255.0 if kind == "uint8" else prob.astype(np.float64)
        ref, t_ap, t_all = [], [], []
        for z in range(label.shape[0]):
            scores, a, b = sklearn_section(values[z], label[z])
            ref.append(scores)
            t_ap.append(a)
            t_all.append(b)
        passes = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            rows = em_metrics_per_section(prob, label)
            passes.append((time.perf_counter() - t0) / label.shape[0])
        ours = statistics.median(passes)
        diff = max(abs(r[k] - s[k]) for r, s in zip(rows, ref) for k in KEYS)
        results[kind] = {
            "sklearn_ap_s": statistics.mean(t_ap),
            "sklearn_all_s": statistics.mean(t_all),
            "mtbio_all_s": ours,
            "ratio_ap": statistics.mean(t_ap) / ours,
            "ratio_all": statistics.mean(t_all) / ours,
            "max_abs_diff": diff,
            "mean_mAP": float(np.mean([r["mAP"] for r in rows])),
        }
        print(
            f"{kind:>8}: sklearn AP {1e3 * results[kind]['sklearn_ap_s']:8.1f} ms, sklearn 4 metrics "
            f"{1e3 * results[kind]['sklearn_all_s']:8.1f} ms, mtbio 4 metrics {1e3 * ours:6.2f} ms per section -> "
            f"x{results[kind]['ratio_ap']:.0f} (vs AP alone), x{results[kind]['ratio_all']:.0f} (vs all four); "
            f"max |diff| {diff:.1e}",
            flush=True,
        )
    return results


def markdown(meta: dict, results: dict[str, dict]) -> str:
    lines = [
        f"# mtbio metrics benchmark ({meta['source']}, {meta['sections']} sections of {meta['section_shape']})",
        "",
        "| dtype | sklearn AP (ms/section) | sklearn AP+F1+MCC+IoU (ms) | mtbio all four (ms) | speed-up vs AP "
        "| speed-up vs all four | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, r in results.items():
        lines.append(
            f"| {kind} | {1e3 * r['sklearn_ap_s']:.1f} | {1e3 * r['sklearn_all_s']:.1f} | {1e3 * r['mtbio_all_s']:.2f} "
            f"| {r['ratio_ap']:.0f}x | {r['ratio_all']:.0f}x | {r['max_abs_diff']:.1e} |"
        )
    lines += ["", f"Machine: {meta['machine']}; numpy {meta['numpy']}, scikit-learn {meta['sklearn']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="Lucchi++ root (uses Train_Out); default synthetic")
    parser.add_argument("--sections", type=int, default=10, help="sections to score (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="mtbio passes; the median is reported (default 5)")
    parser.add_argument("--out", type=Path, default=None, help="folder for metrics.json and metrics.md")
    args = parser.parse_args(argv)
    if args.sections < 1 or args.repeats < 1:
        parser.error("--sections and --repeats must be >= 1")
    import sklearn

    label = lucchi_labels(args.data, args.sections) if args.data else synthetic_labels(args.sections)
    meta = {
        "source": f"Lucchi++ {args.data}/Train_Out" if args.data else "synthetic",
        "sections": int(label.shape[0]),
        "section_shape": list(label.shape[1:]),
        "foreground_fraction": float(label.mean()),
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
    }
    print(f"{meta['source']}: {meta['sections']} sections of {tuple(meta['section_shape'])}, "
          f"foreground {100 * meta['foreground_fraction']:.1f} %")  # fmt: skip
    results = run(label, args.repeats)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
        (args.out / "metrics.md").write_text(markdown(meta, results))
        print(f"wrote {args.out / 'metrics.json'} and {args.out / 'metrics.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
