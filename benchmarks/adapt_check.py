"""``mtbio adapt`` with its defaults on VNC III -> Lucchi++, seed by seed, against the benchmark's MaskTwins.

Each seed runs :func:`mtbio.uda.adapt.run_adapt` (the function behind ``mtbio adapt`` and the bundles' ``adapt`` run
id) with the default :class:`~mtbio.uda.recipe.Recipe` (``seed`` = the seed) and the default MaskTwins step: the
source-only pre-training on VNC III ``stack1``, MaskTwins on the EPFL training volume (Lucchi++ ``Test_*``, no
labels), the label-free choice against the source-only start, the streaming prediction of the whole target and the
report, in ``OUT/seed<k>/`` (resumable: run the same command again). The delivered weights
(``selected.json["checkpoint"]``) are then scored with labels on the Lucchi++ test sections (``Train_*``, the EPFL
testing volume), as ``benchmarks/uda_em2d.py`` and ``benchmarks/model_selection.py`` score theirs
(:func:`mtbio.uda.evaluate.evaluate_network`, ``--eval-roi`` windows, per-section metrics, mean over sections), with
the tools' test-time augmentation and planes by default (``--tta``, ``--planes``; a seed scored otherwise is scored
again).

The comparison is the benchmark's MaskTwins on the same seeds: the last checkpoint of the ``masktwins`` runs of a
``benchmarks/model_selection.py`` pool (``--pool OUT/pool.jsonl``, direction ``vnc3_to_lucchi``; its runs are the
default benchmark's: the same Recipe, the same code path). The issue's check: the mean IoU of the delivered models
is within 1 point of that mean, or better.

Example::

    python benchmarks/adapt_check.py --data ../shared/data --out runs/adapt_check --pool runs/pool2/pool.jsonl

(the pool's rows count only when scored with the same ``--tta`` and ``--planes``: pools of ``model_selection.py``
are scored ``none`` / ``xy``, this script defaults to the tools' ``flips`` / ``auto``; a pool without such rows is
reported, not compared.)

Writes ``OUT/results.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import METRICS, add_planes_argument, add_tta_argument, mean_std  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder holding vnc3/ and lucchi_pp/ (release layouts)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--pool", type=Path, default=None, help="a model_selection.py pool.jsonl holding the benchmark runs")
    p.add_argument("--eval-roi", type=int, default=384, help="sliding-window size of the labelled evaluation")
    p.add_argument("--eval-sections", type=int, default=None, help="score only the first N test sections")
    add_tta_argument(
        p,
        "of the labelled scoring (default: the tools', TOOL_DEFAULTS.tta: %(default)s, as benchmarks/uda_em2d.py "
        "scores; runs before 2026-12-06 scored with none)",
    )
    add_planes_argument(
        p,
        "a 2D network predicts the test sections along in the labelled scoring (default: the tools', "
        "TOOL_DEFAULTS.planes: %(default)s; runs before 2026-12-06 scored xy)",
    )
    p.add_argument("--iterations", type=int, default=None, help="override the Recipe's (smoke runs only)")
    p.add_argument("--pretrain-iterations", type=int, default=None, help="override the Recipe's (smoke runs only)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def same_scoring(row: dict[str, Any], tta: str, planes: str = "xy") -> bool:
    """Whether ``row`` was scored with the test-time augmentation ``tta`` and along ``planes`` (rows without the keys
    were scored without TTA, section by section)."""
    return row.get("tta", "none") == tta and row.get("planes", "xy") == planes


def benchmark_masktwins(
    pool: Path | None, direction: str = "vnc3_to_lucchi", tta: str = "none", planes: str = "xy"
) -> dict[int, dict[str, Any]]:
    """The last measured checkpoint of every healthy ``masktwins`` run of ``direction`` in a pool, by seed.

    Only rows evaluated with the test-time augmentation ``tta`` and along ``planes`` count (:func:`same_scoring`), so
    that the delivered models and the benchmark's are scored alike.
    """
    if pool is None or not pool.is_file():
        return {}
    last: dict[int, dict[str, Any]] = {}
    for line in pool.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("direction") != direction or row.get("strategy") != "masktwins" or row.get("kind") != "healthy":
            continue
        if not same_scoring(row, tta, planes):
            continue
        seed = int(row["seed"])
        if seed not in last or int(row["iteration"]) > int(last[seed]["iteration"]):
            last[seed] = row
    return last


def run_seed(args: argparse.Namespace, pair: Any, seed: int) -> dict[str, Any]:
    """``run_adapt`` with the defaults for one seed, then the delivered model's labelled metrics."""
    from mtbio.networks import get_network
    from mtbio.networks.weights import read_weights
    from mtbio.uda.adapt import AdaptSpec, run_adapt
    from mtbio.uda.evaluate import evaluate_network
    from mtbio.uda.recipe import Recipe

    overrides = {"seed": seed}
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    if args.pretrain_iterations is not None:
        overrides["pretrain_iterations"] = args.pretrain_iterations
    recipe = Recipe(**overrides)
    vs = dict(pair.voxel_size or {})
    spec = AdaptSpec(
        out=args.out / f"seed{seed}",
        target_image=pair.target_image,
        source_image=pair.source_image,
        source_label=pair.source_label,
        recipe=recipe,
        source_voxel_size=vs.get("source"),
        target_voxel_size=vs.get("target"),
        source_description=pair.description,
        target_description="Lucchi++ Test_* (the EPFL training volume), no labels",
        device=args.device,
        progress=False,
        record={"benchmark": "benchmarks/adapt_check.py", "seed": seed},
    )
    t0 = time.perf_counter()
    result = run_adapt(spec)
    wall = time.perf_counter() - t0
    if not result.complete:
        raise RuntimeError(f"seed {seed}: mtbio adapt stopped in {result.stopped_in}; run again to resume")
    selected = result.selected
    checkpoint = Path(selected["checkpoint"])
    record = read_weights(checkpoint)
    network = get_network(recipe.network, recipe.spatial_dims, **recipe.network_kwargs)
    net = record.load_into(network, checkpoint).to(args.device).eval()
    image, label = pair.test_image, pair.test_label
    if args.eval_sections:
        image, label = image[: args.eval_sections], label[: args.eval_sections]
    t0 = time.perf_counter()
    metrics = evaluate_network(
        net,
        np.asarray(image[:]),
        np.asarray(label[:]) > 0,
        roi_size=(args.eval_roi,) * 2,
        device=args.device,
        tta=args.tta,
        planes=args.planes,
        voxel_size=(pair.voxel_size or {}).get("target"),
    )
    return {
        "seed": seed,
        **metrics,
        "delivered": selected["delivered"],
        "iteration": selected.get("iteration"),
        "score": selected.get("score"),
        "source_only_score": selected.get("source_only_score"),
        "worse_than_source_only": selected.get("worse_than_source_only"),
        "collapsed": selected.get("collapsed"),
        "iterations": selected.get("iterations"),
        "sec_per_iter": selected.get("sec_per_iter"),
        "seconds": selected.get("seconds"),
        "wall_this_call": wall,
        "eval_sec": time.perf_counter() - t0,
        "checkpoint": str(checkpoint),
        "tta": args.tta,
        "planes": args.planes,
    }


def pool_warning(pool: Path | None, bench: dict[int, dict[str, Any]], tta: str, planes: str = "xy") -> str | None:
    """The message for a ``--pool`` that holds no MaskTwins row scored with ``tta`` along ``planes`` (``None`` when
    there is no pool or it has such rows): ``benchmarks/model_selection.py`` pools are scored with ``none``, ``xy``
    by default."""
    if pool is None or bench:
        return None
    if not pool.is_file():
        return f"--pool {pool}: no such file; the delivered models are not compared with the benchmark's"
    return (
        f"--pool {pool}: no healthy vnc3_to_lucchi masktwins row scored with --tta {tta} --planes {planes}; the "
        "delivered models are not compared with the benchmark's (score both alike: this script's --tta / --planes, or "
        f"a pool built with --tta {tta} --planes {planes})"
    )


def scored_rows(rows_file: Path, tta: str, planes: str = "xy") -> dict[int, dict[str, Any]]:
    """The seeds already scored in ``rows_file`` with the test-time augmentation ``tta`` along ``planes``, by seed
    (the last row wins).

    A seed scored otherwise (:func:`same_scoring`) is left out, so that it is scored again; its adapt run resumes as
    finished and only the labelled scoring runs.
    """
    if not rows_file.is_file():
        return {}
    rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
    return {int(r["seed"]): r for r in rows if same_scoring(r, tta, planes)}


def report(rows: list[dict[str, Any]], bench: dict[int, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The summary (mean ± std of the delivered models and of the benchmark's MaskTwins on the same seeds)."""
    seeds = [r["seed"] for r in rows]
    out: dict[str, Any] = {"rows": rows, "seeds": seeds}
    for m in METRICS:
        out[f"adapt_{m}"] = mean_std([100 * r[m] for r in rows])
    paired = [s for s in seeds if s in bench]
    out["benchmark_seeds"] = paired
    if paired:
        for m in METRICS:
            out[f"benchmark_{m}"] = mean_std([100 * bench[s][m] for s in paired])
        a = np.mean([100 * r["IoU"] for r in rows if r["seed"] in paired])
        b = out["benchmark_IoU"][0]
        out["difference_IoU"] = float(a - b)
        out["within_1_or_better"] = bool(a >= b - 1.0) and len(paired) == len(seeds)
    return out


def markdown(summary: dict[str, Any], bench: dict[int, dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# `mtbio adapt` with defaults, VNC III -> Lucchi++ (delivered model on the Train_* test sections)",
        "",
        f"Command: `python benchmarks/adapt_check.py --data {args.data} --out {args.out}"
        + (f" --pool {args.pool}" if args.pool else "")
        + f" --tta {args.tta} --planes {args.planes}`",
        "",
        f"Labelled scoring with test-time augmentation `{args.tta}`, planes `{args.planes}` (the delivered model and "
        "the benchmark's rows alike).",
        "",
        "| seed | delivered | iteration | label-free score (source-only) | IoU | mAP | F1 | MCC "
        "| benchmark MaskTwins IoU (last) | s/iter pre-train / MaskTwins | adapt wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        b = bench.get(r["seed"])
        spi = r.get("sec_per_iter") or {}
        spi_text = " / ".join("-" if v is None else f"{v:.3f}" for v in (spi.get("pretrain"), spi.get("strategy")))
        total = float((r.get("seconds") or {}).get("total", float("nan")))
        bench_text = "-" if b is None else f"{100 * b['IoU']:.1f} ({b['iteration']})"
        lines.append(
            f"| {r['seed']} | {r['delivered']} | {r['iteration']} | {r['score']:.3f} ({r['source_only_score']:.3f}) "
            f"| {100 * r['IoU']:.1f} | {100 * r['mAP']:.1f} | {100 * r['F1']:.1f} | {100 * r['MCC']:.1f} "
            f"| {bench_text} | {spi_text} | {total:.0f} |"
        )
    m, s = summary["adapt_IoU"]
    lines += ["", f"`mtbio adapt` delivered: IoU {m:.1f} ± {s:.1f} over {len(summary['rows'])} seeds."]
    if summary.get("pool_warning"):
        lines.append(f"Not compared: {summary['pool_warning']}.")
    if summary.get("benchmark_seeds"):
        bm, bs = summary["benchmark_IoU"]
        bench_text = "-" if b is None else f"{100 * b['IoU']:.1f} ({b['iteration']})"
        lines.append(
            f"Benchmark MaskTwins (last checkpoint, seeds {summary['benchmark_seeds']}): IoU {bm:.1f} ± {bs:.1f}; "
            f"difference {summary['difference_IoU']:+.1f}; within 1 point or better: {summary['within_1_or_better']}."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from mtbio.bundle.data import em2d_pair

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    pair = em2d_pair(args.data, direction="vnc3_to_lucchi")
    bench = benchmark_masktwins(args.pool, tta=args.tta, planes=args.planes)
    warning = pool_warning(args.pool, bench, args.tta, args.planes)
    if warning:  # said before the hours of training, and again in the report
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    rows_file = args.out / "rows.jsonl"
    done = scored_rows(rows_file, args.tta, args.planes)
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if seed not in done:
            row = run_seed(args, pair, seed)
            with rows_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done[seed] = row
            print(f"seed {seed}: delivered {row['delivered']} IoU {100 * row['IoU']:.1f}", flush=True)
        rows.append(done[seed])
    summary = report(rows, bench, args)
    if warning:
        summary["pool_warning"] = warning
    (args.out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    (args.out / "results.md").write_text(markdown(summary, bench, args))
    print(markdown(summary, bench, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
