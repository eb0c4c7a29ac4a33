"""``mtbio demo``: the built-in end-to-end run on synthetic EM domains.

1. generates the synthetic source (labelled) / target (unlabelled) / held-out target test volumes
   (``mtbio synth``; reused when already there);
2. trains a small 2D network per strategy (default: oracle, source-only, MaskTwins), same seed, same
   iterations, same source crop sequence, each through :func:`mtbio.uda.run.run_training` (run folders
   ``OUT/runs/<strategy>``, weights ``OUT/models/<strategy>.pt``; a finished run in OUT is reused, a run with
   other settings is refused: use another ``--out``);
3. predicts the held-out target volume with each EMA teacher through the streaming inferer (prediction
   stores under ``OUT/predictions``);
4. evaluates with the literature metrics (per-section mAP / F1 / MCC / IoU, mean over sections) and prints the
   table; ``OUT/results.json`` and ``OUT/results.md`` keep it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

DEFAULT_STRATEGIES = ("oracle", "source_only", "masktwins")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train source-only / MaskTwins / oracle on synthetic EM domains, infer, evaluate, print the table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES), help="comma-separated strategies")
    p.add_argument("--shape", type=int, nargs=3, default=(32, 256, 256), metavar=("Z", "Y", "X"))
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--no-resample",
        action="store_true",
        help="train on the source as generated (8 nm in-plane) instead of resampled to the target's 10 nm",
    )
    from mtbio.uda.config import DEMO_UDA, UDAConfig
    from mtbio.uda.options import add_config_arguments
    from mtbio.uda.recipe import DEMO_RECIPE, Recipe

    real = Recipe()

    add_config_arguments(
        p,
        Recipe,
        prefix="recipe",
        defaults=DEMO_RECIPE,
        title="training recipe: the demo's own (mtbio.uda.recipe.DEMO_RECIPE). It differs from the validated "
        f"real-data Recipe ({real.network}, {real.pretrain_iterations} + {real.iterations} iterations, {real.crop[0]} "
        "px) because the synthetic domains are small and easy and "
        "the demo should finish in minutes on a CPU: small_unet from scratch, 1000 iterations, 128 px crops",
    )
    add_config_arguments(
        p,
        UDAConfig,
        defaults=DEMO_UDA,
        title="UDA step: UDAConfig's defaults but pl_class_balance none (mtbio.uda.config.DEMO_UDA): the real-EM "
        "default source_prior cost MaskTwins 9.4 IoU on these synthetic domains",
        exclude=("strategy",),
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from mtbio.data.labels import open_label_volume
    from mtbio.data.store import open_prediction_store
    from mtbio.data.synthetic import generate_synthetic
    from mtbio.data.volumes import open_volume
    from mtbio.inference.resampled import predict_at_model_voxel_size
    from mtbio.metrics import em_metrics
    from mtbio.metrics.table import results_table
    from mtbio.provenance import write_json_atomic
    from mtbio.uda.config import DEMO_UDA, UDAConfig
    from mtbio.uda.options import config_from_args
    from mtbio.uda.recipe import DEMO_RECIPE, Recipe
    from mtbio.uda.run import RunSpec, run_training
    from mtbio.uda.strategy import Strategy

    strategies = [Strategy(s.strip()) for s in args.strategies.split(",") if s.strip()]
    if not strategies:
        raise ValueError("--strategies is empty")
    recipe = config_from_args(args, Recipe, prefix="recipe", base=DEMO_RECIPE)
    base_config = config_from_args(args, UDAConfig, base=DEMO_UDA)
    if recipe.spatial_dims != 2:
        raise ValueError(f"the demo trains a 2D network: --crop takes one int or H,W, got {recipe.crop_size}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t_start = time.perf_counter()
    paths = generate_synthetic(out / "data", seed=recipe.seed, shape=tuple(args.shape))
    src = open_volume(paths["source"], "raw")
    src_label = open_label_volume(paths["source"], "label")
    tgt = open_volume(paths["target"], "raw")
    tgt_label = open_label_volume(paths["target_labels"], "label")
    test = open_volume(paths["target_test"], "raw")
    test_label = open_label_volume(paths["target_test_labels"], "label")
    print(f"data: {out / 'data'} (source {src.shape}, target {tgt.shape}, held-out target {test.shape})")

    results: dict[str, list[dict[str, float]]] = {}
    timing: dict[str, float] = {}
    note = ""
    for strategy in strategies:
        config = dataclasses.replace(base_config, strategy=strategy)
        run = run_training(
            RunSpec(
                out=out / "runs" / strategy.value,
                config=config,
                recipe=recipe,
                source_image=src,
                source_label=src_label,
                target_image=tgt,
                target_label=tgt_label,
                resample=not args.no_resample,
                source_description=f"synthetic source ({paths['source']})",
                target_description=f"synthetic target ({paths['target']})",
                weights=out / "models" / f"{strategy.value}.pt",
                pretrain_out=out / "runs" / "pretrain",
                resume="auto",
                logger="mtbio.demo",
            )
        )
        note = run.grid_note
        timing[strategy.value] = run.seconds
        store_path = out / "predictions" / f"{strategy.value}.zarr"
        predict_at_model_voxel_size(  # the held-out target is at the training grid: no resampling
            run.teacher(),
            test,
            store_path,
            model_voxel_size=run.voxel_size,
            roi_size=recipe.crop,
            overlap=0.25,
            activation="softmax",
            dtype="uint8",
            normalize="zscore_section",
            overwrite=True,
        )
        store = open_prediction_store(store_path)
        scores = em_metrics(store.foreground(), test_label)
        results[strategy.value] = [{"seed": recipe.seed, **scores}]
        print(
            f"{strategy.value:>12}: IoU {scores['IoU']:.3f}  mAP {scores['mAP']:.3f}  "
            f"({timing[strategy.value]:.0f} s training)"
        )
    print(f"voxel size: {note}")
    table = results_table(results)
    write_json_atomic(
        out / "results.json",
        {
            "results": results,
            "train_seconds": timing,
            "iters": recipe.iterations,
            "recipe": recipe.to_dict(),
            "seed": recipe.seed,
            "shape": args.shape,
            "voxel_size": note,
        },
    )
    (out / "results.md").write_text(table)
    print()
    print(f"held-out synthetic target, {test.shape[0]} sections (per-section metrics, mean over sections):")
    print(table)
    print(f"total {time.perf_counter() - t_start:.0f} s; results in {out / 'results.json'}")
    return 0
