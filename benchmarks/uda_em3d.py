"""Real anisotropic 3D UDA benchmark: VNC III <-> Lucchi++ pooled to 50 nm sections, 3D networks against the 2D
recipe applied section by section, seeds x variants.

Data (:func:`mtbio.bundle.data.em3d_pair`, a folder holding ``vnc3/`` and ``lucchi_pp/``):

* VNC III ``stack1``: real ssTEM, 20 sections of 50 x 4.6 x 4.6 nm, labelled;
* Lucchi++ ``Test_*`` (the EPFL *training* volume, 165 sections of 5 nm) averaged in groups of ``--group`` (10)
  sections: 16 sections of 50 x 5 x 5 nm, labels by majority over each group: a *thick-section simulation*
  (:mod:`mtbio.data.sources.lucchi_pp_pooled`), not real ssTEM.

``--direction vnc3_to_lucchi_pooled`` adapts on the pooled Lucchi++ volume and tests on the same 16 sections with
their labels (transductive: the 40 ``Train_*`` sections here pool to only 4); ``lucchi_pooled_to_vnc3`` adapts on
VNC III sections 0-9 and tests on sections 10-19 (``--subset 2`` swaps them).

Variants (``--variants``): the 3D ones ``source_only``, ``mean_teacher``, ``masktwins`` (complementary anisotropic
3D blocks of ``--block-nm``) train a 3D MONAI UNet (``small_unet``, first strides (1, 2, 2): z is thin) on patches of
``--patch-nm``; the 2D ones ``2d_source_only``, ``2d_mean_teacher``, ``2d_masktwins`` train the 2D recipe's network
(:class:`mtbio.uda.recipe.Recipe`: ``unet``) on crops of the same volumes' sections (each section an image) and are
applied section by section. Sizes are given in nm and converted to voxels of the training grid (the target's voxel
size; the source is within 10 % in-plane, so it is not resampled). Every run goes through
:func:`mtbio.uda.run.run_training`; each seed first trains one source-only network per dimensionality
(``--pretrain`` / ``--pretrain-2d`` iterations), and every variant of that seed and dimensionality starts from it and
trains ``--iters`` / ``--iters-2d`` more iterations (source-only included, with the same source crop sequence).
Every model is scored through its EMA teacher at the last iteration with :func:`mtbio.metrics.em_metrics` (the
literature's per-section mAP, F1, MCC and IoU, mean over the test sections), 3D models with a 3D sliding window
(``predict_in_memory``), 2D models section by section, on the same test sections.

Budget (the defaults: 400 pre-training + 400 iterations per variant, 3D and 2D), measured with
``python benchmarks/uda_em3d.py --data ../shared/data --out /tmp/em3d_probe --time-iters 10 --threads 1`` on this
project's shared 2-core machine (process CPU seconds per iteration, set-up included, so upper bounds): 3D source-only
0.45 (its run also pays the first network set-up), mean teacher 0.30, MaskTwins 0.59; 2D ``unet`` source-only 0.21,
mean teacher 0.46, MaskTwins 0.99; scoring 8-9 CPU s per 3D model and 12-13 per 2D model on the 16 pooled sections.
One seed of all six variants: about 25 CPU-minutes (one thread; ~41 minutes of wall clock there beside other jobs,
less with ``--threads 2`` on idle cores), so one seed fits a session. ``--time-iters`` re-measures on another machine.

Writes ``OUT/results.json`` (``{variant: [{"seed", "mAP", "F1", "MCC", "IoU", "sec_per_iter", "train_sec",
"wall_sec", "cpu_sec", "eval_sec", "eval_cpu_sec", "pretrain"}, ...]}``, updated after every model, so a stopped
benchmark resumes where it stopped), ``OUT/results.md`` (mean ± sample std per variant, timing, and the two questions
answered with seed noise), ``OUT/config.json`` (arguments, pair, voxel sizes, recipes, UDA configs, crops and blocks
in voxels, git), ``OUT/checkpoints/<variant>_seed<k>.pt``, ``OUT/pretrain{3d,2d}/seed<k>.pt`` and the run folders
``OUT/runs/``; ``--time-iters N`` writes only ``OUT/timing.json``.

Examples::

    python benchmarks/uda_em3d.py --data ../shared/data --out runs/em3d --seeds 1               # one seed, defaults
    python benchmarks/uda_em3d.py --data ../shared/data --out runs/em3d --first-seed 1 --seeds 1  # the next seed
    python benchmarks/uda_em3d.py --data ../shared/data --out runs/em3d_rev --direction lucchi_pooled_to_vnc3
    python benchmarks/uda_em3d.py --data ../shared/data --out /tmp/em3d_smoke --seeds 1 --iters 2 --pretrain 2 \\
        --iters-2d 2 --pretrain-2d 2 --patch-nm 200,320,320 --crop-2d-nm 320 --eval-sections 4   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: variant -> (spatial dims, strategy)
VARIANTS = {
    "source_only": (3, "source_only"),
    "mean_teacher": (3, "mean_teacher"),
    "masktwins": (3, "masktwins"),
    "2d_source_only": (2, "source_only"),
    "2d_mean_teacher": (2, "mean_teacher"),
    "2d_masktwins": (2, "masktwins"),
}
DIRECTIONS = ("vnc3_to_lucchi_pooled", "lucchi_pooled_to_vnc3")
#: strides of the 3D network: in-plane only first, so a patch of 8 sections keeps 2 at the bottom
STRIDES_3D = ((1, 2, 2), 2, 2)
#: voxels per axis a 2D crop must be a multiple of (product of the strides) per 2D network
MULTIPLE_2D = {"unet": 16, "small_unet": 8, "basic_unet": 16}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.options import add_config_arguments
    from mtbio.uda.recipe import Recipe

    recipe = Recipe()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder holding vnc3/ and lucchi_pp/ (release layouts)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--direction", default=DIRECTIONS[0], choices=DIRECTIONS)
    p.add_argument("--group", type=int, default=10, help="Lucchi++ 5 nm sections averaged into one (10: 50 nm)")
    p.add_argument("--subset", type=int, default=1, choices=(1, 2), help="lucchi_pooled_to_vnc3: 1 = test on 10-19")
    p.add_argument(
        "--test-split",
        default="epfl_train",
        choices=("epfl_train", "epfl_test"),
        help="vnc3_to_lucchi_pooled: pooled Lucchi++ split to test on (epfl_train = the adapted volume, transductive)",
    )
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (FIRST .. FIRST+N-1)")
    p.add_argument("--first-seed", type=int, default=0, help="first seed (one seed per session: --seeds 1)")
    p.add_argument("--eval-sections", type=int, default=None, help="score only the first N test sections (smoke)")
    p.add_argument(
        "--time-iters",
        type=int,
        default=None,
        metavar="N",
        help="only measure: train each variant N iterations from scratch in OUT/timing, score it once, write "
        "OUT/timing.json (wall and process-CPU seconds per iteration, an estimate of one seed with these flags)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    g3 = p.add_argument_group("3D networks (small_unet, strides (1,2,2), 2, 2)")
    g3.add_argument("--iters", type=int, default=400, help="iterations of each 3D variant after the pre-training")
    g3.add_argument("--pretrain", type=int, default=400, help="3D source-only pre-training iterations per seed")
    g3.add_argument("--patch-nm", type=_floats, default=(400.0, 640.0, 640.0), help="Z,Y,X patch in nm")
    g3.add_argument("--block-nm", type=_floats, default=(100.0, 160.0, 160.0), help="Z,Y,X MaskTwins block in nm")
    g3.add_argument("--batch", type=int, default=2, help="3D patches per iteration and domain")
    g3.add_argument("--channels", type=_ints, default=(16, 32, 64, 128), help="small_unet channels (4 levels)")
    g3.add_argument("--eval-roi", type=_ints, default=None, help="D,H,W 3D window (default: patch, in-plane x2)")
    g2 = p.add_argument_group("2D networks (the 2D recipe: Recipe's network, batch and lr)")
    g2.add_argument("--iters-2d", type=int, default=400, help="iterations of each 2D variant after the pre-training")
    g2.add_argument("--pretrain-2d", type=int, default=400, help="2D source-only pre-training iterations per seed")
    g2.add_argument("--crop-2d-nm", type=float, default=960.0, help="square 2D crop edge in nm (192 px at 5 nm)")
    g2.add_argument("--block-2d-nm", type=float, default=160.0, help="2D MaskTwins block edge in nm (32 px at 5 nm)")
    g2.add_argument("--batch-2d", type=int, default=recipe.batch_size, help="2D crops per iteration and domain")
    g2.add_argument("--network-2d", default=recipe.network, choices=tuple(MULTIPLE_2D), help="2D network")
    g2.add_argument("--eval-roi-2d", type=int, default=384, help="2D sliding-window size at evaluation")
    p.add_argument("--lr", type=float, default=recipe.lr, help="AdamW learning rate, 3D and 2D")
    # the blocks are this script's --block-nm / --block-2d-nm, converted on the training grid (UDAConfig's own
    # block_size / block_nm are not flags here)
    add_config_arguments(
        p, UDAConfig, title="UDA step (defaults: UDAConfig)", exclude=("strategy", "block_size", "block_nm")
    )
    args = p.parse_args(argv)
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variant_list if v not in VARIANTS]
    if unknown or not args.variant_list:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if len(args.patch_nm) != 3 or len(args.block_nm) != 3:
        p.error("--patch-nm and --block-nm take three numbers Z,Y,X (nm)")
    if args.eval_roi is not None and len(args.eval_roi) != 3:
        p.error("--eval-roi takes three integers D,H,W")
    return args


def sizes(args: argparse.Namespace, grid: Sequence[float]) -> dict[str, tuple[int, ...]]:
    """Patches, crops, blocks and windows in voxels of the training grid ``grid`` (z, y, x nm)."""
    from mtbio.bundle.data import block_in_voxels, patch_in_voxels

    multiple = tuple(_product(STRIDES_3D, axis) for axis in range(3))
    patch = patch_in_voxels(args.patch_nm, grid, multiple=multiple)
    m2 = MULTIPLE_2D[args.network_2d]
    crop2 = patch_in_voxels((args.crop_2d_nm, args.crop_2d_nm), grid[1:], multiple=m2)
    roi3 = tuple(args.eval_roi) if args.eval_roi else (patch[0], 2 * patch[1], 2 * patch[2])
    return {
        "patch_3d": patch,
        "block_3d": block_in_voxels(args.block_nm, grid),
        "crop_2d": crop2,
        "block_2d": block_in_voxels((args.block_2d_nm, args.block_2d_nm), grid[1:]),
        "eval_roi_3d": roi3,
        "eval_roi_2d": (args.eval_roi_2d, args.eval_roi_2d),
        "multiple_3d": multiple,
    }


def _product(strides: Sequence[Any], axis: int) -> int:
    out = 1
    for s in strides:
        out *= int(s[axis]) if isinstance(s, Sequence) else int(s)
    return out


def recipes(args: argparse.Namespace, size: Mapping[str, tuple[int, ...]], seed: int) -> dict[int, Any]:
    """The 3D and 2D :class:`~mtbio.uda.recipe.Recipe` of one seed."""
    from mtbio.uda.recipe import Recipe

    net3 = {"channels": tuple(args.channels), "strides": STRIDES_3D}
    every = getattr(args, "checkpoint_every", None)
    out = {
        3: Recipe(
            network="small_unet",
            network_kwargs=net3,
            iterations=args.iters,
            pretrain_iterations=args.pretrain,
            crop_size=tuple(size["patch_3d"]),
            batch_size=args.batch,
            lr=args.lr,
            seed=seed,
        ),
        2: Recipe(
            network=args.network_2d,
            iterations=args.iters_2d,
            pretrain_iterations=args.pretrain_2d,
            crop_size=tuple(size["crop_2d"]),
            batch_size=args.batch_2d,
            lr=args.lr,
            seed=seed,
        ),
    }
    return {dims: recipe.replace(checkpoint_interval=every) for dims, recipe in out.items()}


def _uda(args: argparse.Namespace, variant: str, size: Mapping[str, tuple[int, ...]]) -> Any:
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.options import config_from_args

    dims, strategy = VARIANTS[variant]
    block = size["block_3d"] if dims == 3 else size["block_2d"]
    return config_from_args(args, UDAConfig, strategy=strategy, block_size=tuple(block))


def _load(pair: Any, eval_sections: int | None) -> dict[str, Any]:
    """The pair's volumes read into memory once (the pooled Lucchi++ sections are computed once)."""
    import numpy as np

    def read(volume: Any) -> Any:
        return None if volume is None else np.asarray(volume[:])

    data = {name: read(getattr(pair, name)) for name in ("source_image", "source_label", "target_image")}
    same = pair.test_image is pair.target_image
    data["test_image"] = data["target_image"] if same else read(pair.test_image)
    data["test_label"] = read(pair.test_label)
    if eval_sections:
        data["test_image"], data["test_label"] = data["test_image"][:eval_sections], data["test_label"][:eval_sections]
    return data


def run_variant(
    args: argparse.Namespace, variant: str, seed: int, pair: Any, data: Mapping[str, Any], size: Mapping[str, Any]
) -> dict[str, Any]:
    """Train (or resume, or reuse) one variant of one seed through ``run_training`` and score it."""
    from mtbio.uda.evaluate import evaluate_network
    from mtbio.uda.run import RunSpec, run_training

    dims, _ = VARIANTS[variant]
    recipe = recipes(args, size, seed)[dims]
    pre = args.out / f"pretrain{dims}d"
    vs = dict(pair.voxel_size or {})
    spec = RunSpec(
        out=args.out / "runs" / f"{variant}_seed{seed}",
        config=_uda(args, variant, size),
        recipe=recipe,
        source_image=data["source_image"],
        source_label=data["source_label"],
        target_image=data["target_image"],
        source_voxel_size=vs.get("source"),
        target_voxel_size=vs.get("target"),
        source_description=f"{pair.description} (source)",
        target_description=f"{pair.description} (target)",
        weights=args.out / "checkpoints" / f"{variant}_seed{seed}.pt",
        pretrain_out=pre / f"seed{seed}",
        pretrain_weights=pre / f"seed{seed}.pt",  # one pre-training per seed and dimensionality
        device=args.device,
        logger="mtbio.bench",
        record={"variant": variant},
    )
    t0, c0 = time.perf_counter(), time.process_time()
    run = run_training(spec)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    roi = size["eval_roi_3d"] if dims == 3 else size["eval_roi_2d"]
    image, label = data["test_image"], data["test_label"]  # a window larger than the volume pads it (MONAI)
    t1, c1 = time.perf_counter(), time.process_time()
    metrics = evaluate_network(run.teacher(), image, label, roi_size=roi, device=args.device)
    return {
        "seed": seed,
        **metrics,
        "sec_per_iter": run.sec_per_iter,
        "train_sec": run.seconds,
        "wall_sec": wall,
        "cpu_sec": cpu,
        "eval_sec": time.perf_counter() - t1,
        "eval_cpu_sec": time.process_time() - c1,
        "pretrain": run.pretrain,
    }


def time_variants(args: argparse.Namespace, pair: Any, data: Mapping[str, Any], size: Mapping[str, Any]) -> dict:
    """``--time-iters N``: every variant trained ``N`` iterations from scratch (no pre-training, one checkpoint)
    through ``run_training`` in ``OUT/timing`` and scored once; seconds per iteration (wall clock and process CPU,
    set-up included, so an upper bound) and the estimate of one seed with the flags given (pre-trainings at the
    source-only rate of their dimensionality). Process CPU time is the robust figure on a shared machine with
    ``--threads 1``; with more threads than free cores, waiting threads inflate it."""
    import shutil

    n = int(args.time_iters)
    shutil.rmtree(args.out / "timing", ignore_errors=True)  # a measurement, never resumed
    probe = argparse.Namespace(**{**vars(args), "iters": n, "pretrain": 0, "iters_2d": n, "pretrain_2d": 0})
    probe.out, probe.checkpoint_every = args.out / "timing", n
    rates: dict[str, dict[str, float]] = {}
    for variant in args.variant_list:
        row = run_variant(probe, variant, 0, pair, data, size)
        rates[variant] = {
            "wall_per_iter": row["wall_sec"] / n,
            "cpu_per_iter": row["cpu_sec"] / n,
            "eval_sec": row["eval_sec"],
            "eval_cpu_sec": row["eval_cpu_sec"],
        }
        print(f"[time] {variant}: " + json.dumps(rates[variant]), flush=True)
    estimate = {"wall": 0.0, "cpu": 0.0}
    for variant, rate in rates.items():
        dims = VARIANTS[variant][0]
        iters = args.iters if dims == 3 else args.iters_2d
        estimate["wall"] += iters * rate["wall_per_iter"] + rate["eval_sec"]
        estimate["cpu"] += iters * rate["cpu_per_iter"] + rate["eval_cpu_sec"]
    for dims, pretrain in ((3, args.pretrain), (2, args.pretrain_2d)):
        so = rates.get("source_only" if dims == 3 else "2d_source_only")
        if so is not None and any(VARIANTS[v][0] == dims for v in rates):
            estimate["wall"] += pretrain * so["wall_per_iter"]
            estimate["cpu"] += pretrain * so["cpu_per_iter"]
    report = {
        "iterations_timed": n,
        "threads": args.threads,
        "per_variant": rates,
        "one_seed_estimate_sec": estimate,
        "for": {k: getattr(args, k) for k in ("iters", "pretrain", "iters_2d", "pretrain_2d", "variants")},
    }
    from mtbio.provenance import write_json_atomic

    write_json_atomic(args.out / "timing.json", report)
    print(
        f"[time] one seed of {args.variants}: ~{estimate['wall'] / 60:.1f} min wall, {estimate['cpu'] / 60:.1f} CPU-min"
    )
    return report


def _mean_std(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[float, float]:
    from _common import mean_std

    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    return mean_std(vals) if vals else (float("nan"), float("nan"))


def comparisons(results: Mapping[str, Sequence[Mapping[str, Any]]], metric: str = "IoU") -> list[str]:
    """The benchmark's two questions, answered on ``metric`` with seed noise (sample std over seeds).

    A difference counts when it exceeds twice the larger of the two standard deviations (``_common.acceptance``'s
    rule); with one seed there is no noise estimate and the answer says so.
    """

    def verdict(a: str, b: str) -> str:
        (ma, sa), (mb, sb) = _mean_std(results[a], metric), _mean_std(results[b], metric)
        n = min(len(results[a]), len(results[b]))
        diff, noise = (ma - mb) * 100, 2 * max(sa, sb) * 100
        if n < 2:
            call = "one seed: no noise estimate"
        elif diff > noise:
            call = "yes"
        elif diff < -noise:
            call = "no, it is worse"
        else:
            call = "no: within seed noise"
        return f"{a} - {b}: {diff:+.1f} {metric} points (2 x max std {noise:.1f}, seeds {n}) -> {call}"

    lines = []
    for baseline in ("source_only", "mean_teacher"):
        if "masktwins" in results and baseline in results:
            lines.append(f"- does 3D MaskTwins beat 3D {baseline}? " + verdict("masktwins", baseline))
    three = [v for v in results if VARIANTS.get(v, (0,))[0] == 3 and results[v]]
    two = [v for v in results if VARIANTS.get(v, (0,))[0] == 2 and results[v]]
    if three and two:
        best3 = max(three, key=lambda v: _mean_std(results[v], metric)[0])
        best2 = max(two, key=lambda v: _mean_std(results[v], metric)[0])
        lines.append("- does the best 3D model beat the best 2D model (same sections)? " + verdict(best3, best2))
    return lines


def write_outputs(out: Path, results: Mapping[str, list[dict[str, Any]]], config: Mapping[str, Any]) -> str:
    """``results.json``, ``config.json`` and ``results.md``; returns the markdown."""
    from _common import summarize

    from mtbio.provenance import write_json_atomic

    write_json_atomic(out / "results.json", results)
    write_json_atomic(out / "config.json", config)
    ordered = {v: results[v] for v in VARIANTS if v in results}
    md = f"{config.get('pair', '')}\n\n" + summarize(ordered)
    md += "\n| variant | s / iteration | training s | wall-clock s (with a pre-training trained) | CPU s | eval s |\n"
    md += "|---|---|---|---|---|---|\n"
    for v, rows in ordered.items():
        cells = []
        for key in ("sec_per_iter", "train_sec", "wall_sec", "cpu_sec", "eval_sec"):
            m, _ = _mean_std(rows, key)
            cells.append("-" if m != m else (f"{m:.3f}" if key == "sec_per_iter" else f"{m:.0f}"))
        md += f"| {v} | " + " | ".join(cells) + " |\n"
    checks = comparisons(ordered)
    if checks:
        md += "\nQuestions (IoU; a difference counts when it exceeds 2 x the larger sample std over seeds):\n\n"
        md += "\n".join(checks) + "\n"
    tmp = out / ".results.md.tmp"
    tmp.write_text(md)
    tmp.replace(out / "results.md")
    return md


def run(args: argparse.Namespace) -> int:
    import torch

    from mtbio.bundle.data import em3d_pair
    from mtbio.provenance import git_hash

    torch.set_num_threads(args.threads)
    pair = em3d_pair(
        args.data, direction=args.direction, group=args.group, subset=args.subset, lucchi_test_split=args.test_split
    )
    grid = pair.grid_voxel_size()
    if grid is None:
        raise ValueError(f"{args.data}: the pair records no voxel size")
    size = sizes(args, grid)
    data = _load(pair, args.eval_sections)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.time_iters:
        time_variants(args, pair, data, size)
        return 0
    res_path = args.out / "results.json"
    results: dict[str, list[dict[str, Any]]] = json.loads(res_path.read_text()) if res_path.is_file() else {}
    example = recipes(args, size, args.first_seed)
    config = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "pair": pair.description,
        "voxel_size": {k: list(v) if v else None for k, v in (pair.voxel_size or {}).items()},
        "training_grid_nm": list(grid),
        "shapes": {k: list(v.shape) for k, v in data.items() if v is not None},
        "sizes_in_voxels": {k: list(v) for k, v in size.items()},
        "recipe_3d": example[3].to_dict(),
        "recipe_2d": example[2].to_dict(),
        "uda": {v: _uda(args, v, size).to_dict() for v in args.variant_list},
        "metrics": "mtbio.metrics.em_metrics: per-section mAP / F1 / MCC / IoU, mean over the test sections",
        "git": git_hash(),
        "torch": torch.__version__,
    }
    print(f"[pair] {pair.description}", flush=True)
    print(f"[sizes] {json.dumps(config['sizes_in_voxels'])} on a {grid} nm grid", flush=True)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for variant in args.variant_list:
            if any(r["seed"] == seed for r in results.get(variant, [])):
                print(f"[skip] {variant} seed {seed}: already in results.json", flush=True)
                continue
            row = run_variant(args, variant, seed, pair, data, size)
            results.setdefault(variant, []).append(row)
            print(f"[done] {variant} seed {seed}: " + json.dumps(row), flush=True)
            write_outputs(args.out, results, config)
    print(write_outputs(args.out, results, config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
