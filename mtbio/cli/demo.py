"""``mtbio demo``: the built-in end-to-end run on synthetic EM domains.

1. generates the synthetic source (labelled) / target (unlabelled) / held-out target test volumes
   (``mtbio synth``; reused when already there);
2. trains a small 2D network per strategy (default: oracle, source-only, MaskTwins), same seed, same
   iterations, same source crop sequence;
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
    p.add_argument("--iters", type=int, default=1000, help="training iterations per strategy")
    p.add_argument(
        "--rampup",
        type=int,
        default=None,
        help="ramp-up iterations R of the target terms (default: half of --iters; 0 = off, which collapses)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=int, nargs=3, default=(32, 256, 256), metavar=("Z", "Y", "X"))
    p.add_argument("--crop", type=int, default=128, help="square 2D crop size")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--no-resample",
        action="store_true",
        help="train on the source as generated (8 nm in-plane) instead of resampled to the target's 10 nm",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from mtbio.data.labels import open_label_volume
    from mtbio.data.store import open_prediction_store
    from mtbio.data.synthetic import generate_synthetic
    from mtbio.data.volumes import open_volume
    from mtbio.inference.resampled import predict_at_model_voxel_size
    from mtbio.metrics import em_metrics
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.experiment import build_trainer, save_weights, summarize, write_json_atomic
    from mtbio.uda.strategy import Strategy

    strategies = [Strategy(s.strip()) for s in args.strategies.split(",") if s.strip()]
    if not strategies:
        raise ValueError("--strategies is empty")
    if args.iters < 1:
        raise ValueError(f"--iters must be >= 1, got {args.iters}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t_start = time.perf_counter()
    paths = generate_synthetic(out / "data", seed=args.seed, shape=tuple(args.shape))
    src = open_volume(paths["source"], "raw")
    src_label = open_label_volume(paths["source"], "label")
    tgt = open_volume(paths["target"], "raw")
    tgt_label = open_label_volume(paths["target_labels"], "label")
    test = open_volume(paths["target_test"], "raw")
    test_label = open_label_volume(paths["target_test_labels"], "label")
    print(f"data: {out / 'data'} (source {src.shape}, target {tgt.shape}, held-out target {test.shape})")
    from mtbio.data.resample import training_grid

    grid = training_grid(src, src_label, tgt, tgt_label, spatial_dims=2, resample=not args.no_resample)
    print(f"voxel size: {grid.note}")

    results: dict[str, list[dict[str, float]]] = {}
    timing: dict[str, float] = {}
    for strategy in strategies:
        config = UDAConfig(strategy=strategy, rampup_iterations=args.rampup)
        trainer = build_trainer(
            config=config,
            iterations=args.iters,
            source_image=grid.source_image,
            source_label=grid.source_label,
            target_image=grid.target_image,
            target_label=grid.target_label,
            crop_size=(args.crop, args.crop),
            batch_size=args.batch,
            seed=args.seed,
        )
        bar = tqdm(total=args.iters, desc=f"train {strategy.value}", unit="it", leave=False)
        trainer.add_event_handler("ITERATION_COMPLETED", lambda _, b=bar: b.update(1))
        t0 = time.perf_counter()
        trainer.fit()
        bar.close()
        timing[strategy.value] = time.perf_counter() - t0
        meta = {"network": "small_unet", "spatial_dims": 2, "network_kwargs": {}, "config": config.to_dict()}
        meta["voxel_size"] = None if grid.voxel_size is None else list(grid.voxel_size)
        meta["normalization"] = "zscore_section"
        save_weights(trainer, out / "models" / f"{strategy.value}.pt", meta)
        teacher = trainer.teacher.module.eval()
        store_path = out / "predictions" / f"{strategy.value}.zarr"
        predict_at_model_voxel_size(  # the held-out target is at the training grid: no resampling
            teacher,
            test,
            store_path,
            model_voxel_size=grid.voxel_size,
            roi_size=(args.crop, args.crop),
            overlap=0.25,
            activation="softmax",
            dtype="uint8",
            normalize="zscore_section",
            overwrite=True,
        )
        store = open_prediction_store(store_path)
        scores = em_metrics(store.foreground(), test_label)
        results[strategy.value] = [{"seed": args.seed, **scores}]
        print(
            f"{strategy.value:>12}: IoU {scores['IoU']:.3f}  mAP {scores['mAP']:.3f}  "
            f"({timing[strategy.value]:.0f} s training)"
        )

    table = summarize(results)
    write_json_atomic(
        out / "results.json",
        {
            "results": results,
            "train_seconds": timing,
            "iters": args.iters,
            "seed": args.seed,
            "shape": args.shape,
            "voxel_size": grid.note,
        },
    )
    (out / "results.md").write_text(table)
    print()
    print(f"held-out synthetic target, {test.shape[0]} sections (per-section metrics, mean over sections):")
    print(table)
    print(f"total {time.perf_counter() - t_start:.0f} s; results in {out / 'results.json'}")
    return 0
