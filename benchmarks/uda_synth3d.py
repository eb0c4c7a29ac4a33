"""Synthetic 3D UDA benchmark: every strategy x seeds on the generated source/target domains, with MaskTwins
run twice: anisotropic complementary blocks (bz < by = bx) and isotropic blocks.

Data: ``mtbio.data.synthetic.generate_synthetic`` (source: anisotropic ssTEM-like, labelled; target: isotropic
FIB-SEM-like, unlabelled for training; a held-out target volume with labels for testing), created in
``--synth-dir`` when absent. Every run has the same iterations, initial weights and source patch sequence per
seed and is scored through its EMA teacher at the last iteration with :func:`mtbio.metrics.em_metrics` (per
section along z) on the held-out target.

Writes ``OUT/results.json`` (``{variant: [{"seed", "mAP", "F1", "MCC", "IoU", "sec_per_iter"}, ...]}``, resumable),
``OUT/results.md`` (mean ± sample std), ``OUT/config.json`` (with git hash) and ``OUT/checkpoints/``.

Example (a smoke run)::

    python benchmarks/uda_synth3d.py --out /tmp/synth3d --seeds 1 --iters 5 --shape 16,96,96
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: variant name -> (strategy, block choice)
VARIANTS = {
    "source_only": ("source_only", "aniso"),
    "mean_teacher": ("mean_teacher", "aniso"),
    "mic": ("mic", "aniso"),
    "random_pair": ("random_pair", "aniso"),
    "masktwins_aniso": ("masktwins", "aniso"),
    "masktwins_iso": ("masktwins", "iso"),
    "oracle": ("oracle", "aniso"),
}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--synth-dir", type=Path, default=None, help="synthetic data folder (default OUT/data)")
    p.add_argument("--shape", type=_ints, default=(32, 160, 160), help="Z,Y,X of each synthetic volume")
    p.add_argument("--synth-seed", type=int, default=0)
    p.add_argument("--hard", action="store_true", help="use the TARGET_HARD style for the target domain")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--crop", type=_ints, default=(16, 64, 64), help="D,H,W training patch")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--aniso-block", type=_ints, default=(4, 16, 16), help="bz,by,bx of the anisotropic blocks")
    p.add_argument("--iso-block", type=_ints, default=(8, 8, 8), help="bz,by,bx of the isotropic blocks")
    p.add_argument("--channels", type=_ints, default=(8, 16, 32), help="small_unet channels")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-roi", type=_ints, default=None, help="D,H,W sliding window (default: 2x crop in-plane)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v and v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if len(args.crop) != 3 or len(args.shape) != 3:
        p.error("--crop and --shape take three integers D,H,W")
    return args


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from _common import acceptance, summarize

    from mtbio.data.labels import open_label_volume
    from mtbio.data.synthetic import TARGET, TARGET_HARD, generate_synthetic
    from mtbio.data.volumes import open_volume
    from mtbio.provenance import git_hash, write_json_atomic
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.evaluate import evaluate_network
    from mtbio.uda.recipe import Recipe
    from mtbio.uda.run import RunSpec, run_training

    torch.set_num_threads(args.threads)
    synth = args.synth_dir or args.out / "data"
    paths = generate_synthetic(
        synth, seed=args.synth_seed, shape=args.shape, target=TARGET_HARD if args.hard else TARGET, progress=False
    )
    src = np.asarray(open_volume(paths["source"], "raw")[:])
    src_lab = np.asarray(open_label_volume(paths["source"], "label")[:])
    tgt = np.asarray(open_volume(paths["target"], "raw")[:])
    tgt_lab = np.asarray(open_label_volume(paths["target_labels"], "label")[:])
    test = np.asarray(open_volume(paths["target_test"], "raw")[:])
    test_lab = np.asarray(open_label_volume(paths["target_test_labels"], "label")[:])
    roi = args.eval_roi or (args.crop[0], min(2 * args.crop[1], test.shape[1]), min(2 * args.crop[2], test.shape[2]))
    variants = [v for v in args.variants.split(",") if v]
    args.out.mkdir(parents=True, exist_ok=True)
    res_path = args.out / "results.json"
    results: dict[str, list[dict[str, Any]]] = json.loads(res_path.read_text()) if res_path.is_file() else {}
    blocks = {"aniso": tuple(args.aniso_block), "iso": tuple(args.iso_block)}
    net_kw = {"channels": tuple(args.channels), "strides": (2,) * (len(args.channels) - 1)}
    config = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "variants": {
            v: UDAConfig(strategy=VARIANTS[v][0], block_size=blocks[VARIANTS[v][1]]).to_dict() for v in variants
        },
        "git": git_hash(),
    }
    for seed in range(args.seeds):
        for variant in variants:
            if any(r["seed"] == seed for r in results.get(variant, [])):
                continue
            strategy, block = VARIANTS[variant]
            cfg = UDAConfig(strategy=strategy, block_size=blocks[block])
            # this benchmark's own recipe (small synthetic 3D domains, from scratch): its flags' defaults
            recipe = Recipe(
                network="small_unet",
                network_kwargs=net_kw,
                iterations=args.iters,
                pretrain_iterations=0,
                crop_size=tuple(args.crop),
                batch_size=args.batch,
                lr=args.lr,
                seed=seed,
            )
            run = run_training(
                RunSpec(
                    out=args.out / "runs" / f"{variant}_seed{seed}",
                    config=cfg,
                    recipe=recipe,
                    source_image=src,
                    source_label=src_lab,
                    target_image=tgt,
                    target_label=tgt_lab,
                    source_description="synthetic source",
                    target_description="synthetic target",
                    weights=args.out / "checkpoints" / f"{variant}_seed{seed}.pt",
                    device=args.device,
                    logger="mtbio.bench",
                    record={"variant": variant},
                )
            )
            sec = run.sec_per_iter
            t0 = time.perf_counter()
            metrics = evaluate_network(run.teacher(), test, test_lab, roi_size=roi, device=args.device)
            row = {"seed": seed, **metrics, "sec_per_iter": sec, "eval_sec": time.perf_counter() - t0}
            results.setdefault(variant, []).append(row)
            print(f"[done] {variant} seed {seed}: " + json.dumps(row), flush=True)
            write_json_atomic(res_path, results)
    write_json_atomic(args.out / "config.json", config)
    md = summarize({v: results[v] for v in variants if v in results})
    named = {("masktwins" if v == "masktwins_aniso" else v): r for v, r in results.items()}
    md += "\nAcceptance (IoU, masktwins = anisotropic blocks): " + json.dumps(acceptance(named)) + "\n"
    (args.out / ".results.md.tmp").write_text(md)
    (args.out / ".results.md.tmp").replace(args.out / "results.md")
    print(md)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
