"""Robustness to object scale when the target's voxel size is unknown: source-only vs MaskTwins, default recipe.

A new user's target often comes as a PNG / TIF stack without a voxel size, at a pixel size nobody tuned for. This
benchmark makes such targets from labelled data: for each scale ``s`` of ``--scales`` the target's objects look
``s`` times as large (in pixels) as in its native data, and the target carries **no voxel size** (so mtbio must
treat it as unknown: the source is not resampled, and ``UDAConfig.block_size=None`` sizes the mask blocks from the
objects' apparent size, :mod:`mtbio.uda.blocks`):

* ``--dataset em2d`` (default): source VNC III ``stack1`` (4.6 nm, labelled, its voxel size kept) from
  ``DATA/vnc3``; target Lucchi++ ``Test_*`` (the EPFL training volume, unlabelled here) from ``DATA/lucchi_pp``,
  resampled in-plane by ``s`` (lazily, :class:`mtbio.data.resample.ResampledVolume`) with its voxel size dropped;
  test Lucchi++ ``Train_*`` (the EPFL testing volume) resampled the same way, labels too, and evaluated at that
  scale (per-section mAP / F1 / MCC / IoU, mean over sections).
* ``--dataset synthetic``: the synthetic generator's source and target (:mod:`mtbio.data.synthetic`) with the
  target's voxel size divided by ``s`` (its geometry is physical, so its objects look ``s`` times as large), generated
  under ``DATA`` (default ``OUT/synthetic``), the target's voxel size dropped; tested on the held-out target volume.

For every scale and seed each strategy of ``--strategies`` (default ``source_only,masktwins``) trains through
:func:`mtbio.uda.run.run_training` with the default :class:`~mtbio.uda.recipe.Recipe` and
:class:`~mtbio.uda.config.UDAConfig` (flags generated from them, e.g. ``--block-size 32`` for the fixed-pixel block
of earlier versions): one source-only pre-training per seed, shared by all scales (the source is the same: an
unknown target voxel size means no resampling), then the strategy. The check per scale: MaskTwins is *not worse*
than source-only beyond seed noise, ``mean(masktwins IoU) >= mean(source_only IoU) - 2 max(std)`` (sample std over
seeds; with one seed, ``>=``).

Writes ``OUT/results.json`` (``{"scales": {"<s>": {strategy: [{"seed", "mAP", "F1", "MCC", "IoU", "mask_block",
"block_rule", "sec_per_iter"}, ...]}}}``, updated after every run, so an interrupted benchmark resumes),
``OUT/results.md`` (per scale: mean ± std, the resolved blocks, the check), ``OUT/config.json``, the weights records
``OUT/checkpoints/scale<s>_<strategy>_seed<k>.pt`` and the run folders ``OUT/runs/scale<s>/<strategy>_seed<k>``.

Examples::

    python benchmarks/scale_robustness.py --data ../shared/data --out runs/scale           # the full default run
    python benchmarks/scale_robustness.py --dataset synthetic --out runs/scale_synth       # synthetic domains
    python benchmarks/scale_robustness.py --data ../shared/data --block-size 32 --out runs/scale_px32  # old blocks
    python benchmarks/scale_robustness.py --tiny --out /tmp/scale_smoke                   # a smoke run, < 1 min
    python benchmarks/scale_robustness.py --data ../shared/data --out runs/scale --zoom-search  # scale from the model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SCALES = "0.4,0.5,1,2"
DEFAULT_STRATEGIES = "source_only,masktwins"
#: ``--tiny``: synthetic 4 x 64 x 64 volumes, two scales, one seed, 2 + 2 iterations of small_unet on 32 px crops
TINY = {"scales": "0.5,2", "seeds": 1, "eval_roi": 64, "synthetic_shape": "4,64,64"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.options import add_config_arguments
    from mtbio.uda.recipe import Recipe

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=("em2d", "synthetic"), default="em2d")
    p.add_argument(
        "--data",
        type=Path,
        help="em2d: folder holding vnc3/ and lucchi_pp/; synthetic: where to generate (OUT/synthetic)",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--scales",
        default=DEFAULT_SCALES,
        help="apparent object sizes in the target relative to its native data, comma separated (default %(default)s)",
    )
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES)
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (FIRST .. FIRST+N-1)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--eval-sections", type=int, default=None, help="score only the first N test sections (em2d)")
    p.add_argument("--eval-roi", type=int, default=384, help="sliding-window size at evaluation")
    p.add_argument("--synthetic-shape", default="32,256,256", help="Z,Y,X of every synthetic volume")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tiny", action="store_true", help="a smoke run on tiny synthetic data (well under a minute)")
    p.add_argument(
        "--estimator-only",
        action="store_true",
        help="no training: the object-size rule on the target's labels (a perfect source-only model) per scale",
    )
    p.add_argument(
        "--zoom-search",
        action="store_true",
        help="no training: mtbio.uda.scale.zoom_search with each seed's source-only start OUT/pretrain/seed<k>.pt per "
        "scale (OUT/zoom_search.{json,md})",
    )
    add_config_arguments(p, Recipe, prefix="recipe", title="training recipe (defaults: Recipe)", exclude=("seed",))
    add_config_arguments(p, UDAConfig, title="UDA step (defaults: UDAConfig)", exclude=("strategy",))
    args = p.parse_args(argv)
    if args.tiny:
        args.dataset = "synthetic"
        for key, value in TINY.items():
            setattr(args, key, value)
    if args.dataset == "em2d" and args.data is None:
        p.error("--data (the folder holding vnc3/ and lucchi_pp/) is required for --dataset em2d")
    try:
        args.scale_list = [float(s) for s in args.scales.split(",") if s.strip()]
        args.shape = tuple(int(v) for v in args.synthetic_shape.split(","))
    except ValueError as err:
        p.error(f"--scales / --synthetic-shape: {err}")
    if not args.scale_list or any(not s > 0 for s in args.scale_list) or len(args.shape) != 3:
        p.error("--scales must be positive numbers and --synthetic-shape three ints")
    return args


def recipe_and_config(args: argparse.Namespace) -> tuple[Any, Any]:
    """The :class:`~mtbio.uda.recipe.Recipe` and :class:`~mtbio.uda.config.UDAConfig` of the flags given (the
    classes' defaults otherwise; ``--tiny`` starts from a tiny recipe)."""
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.options import config_from_args
    from mtbio.uda.recipe import Recipe

    base = None
    if args.tiny:
        base = Recipe(network="small_unet", iterations=2, pretrain_iterations=2, crop_size=32, batch_size=2)
    recipe = config_from_args(args, Recipe, prefix="recipe", base=base)
    if recipe.spatial_dims != 2:
        raise ValueError(f"the benchmark trains 2D networks: --crop takes one int or H,W, got {recipe.crop_size}")
    return recipe, config_from_args(args, UDAConfig)


# ---------------------------------------------------------------- scaled, metadata-free targets


@dataclass
class ScaledPair:
    """One scale's volumes: the labelled source (its voxel size kept), the target (its labels only for the ``oracle``
    strategy and ``--estimator-only``) and the test volume, all three without voxel size."""

    source_image: Any
    source_label: Any
    source_voxel_size: tuple[float, ...] | None
    target_image: Any
    target_label: Any
    test_image: Any
    test_label: Any
    description: str


def without_voxel_size(volume: Any, scale: float = 1.0, *, label: bool = False) -> Any:
    """``volume`` (Z, Y, X) zoomed in-plane by ``scale`` (lazily; ``1`` = as it is) and exposing no voxel size, as
    a PNG / TIF stack without metadata reads."""
    from mtbio.data.resample import ResampledVolume

    view = ResampledVolume(volume, (1.0, float(scale), float(scale)), label=label)
    view.voxel_size = None
    return view


def em2d_scaled(data: Path, scale: float, eval_sections: int | None = None) -> ScaledPair:
    """VNC III -> Lucchi++ with the target and test volumes zoomed in-plane by ``scale``, voxel sizes dropped."""
    import numpy as np

    from mtbio.data.sources import load_split

    src = load_split("vnc3", data / "vnc3", "all")
    tgt = load_split("lucchi_pp", data / "lucchi_pp", "epfl_train")
    test = load_split("lucchi_pp", data / "lucchi_pp", "epfl_test")
    image, label = test.image, test.label
    if eval_sections:
        image, label = np.asarray(image[:eval_sections]), np.asarray(label[:eval_sections])
    return ScaledPair(
        source_image=src.image,
        source_label=src.label,
        source_voxel_size=src.voxel_size,
        target_image=without_voxel_size(tgt.image, scale),
        target_label=without_voxel_size(tgt.label, scale, label=True),
        test_image=without_voxel_size(image, scale),
        test_label=without_voxel_size(label, scale, label=True),
        description=f"VNC III (4.6 nm) -> Lucchi++ Test_* zoomed x{scale:g} in-plane, voxel size dropped",
    )


def synthetic_scaled(folder: Path, scale: float, shape: Sequence[int], seed: int = 0) -> ScaledPair:
    """The synthetic source -> target with the target's voxel size divided by ``scale`` (objects ``scale`` times as
    large in pixels), generated into ``folder/scale<s>``, the target's voxel size dropped."""
    from mtbio.bundle.data import open_spec
    from mtbio.data.synthetic import generate_synthetic
    from mtbio.data.synthetic.domains import TARGET

    style = TARGET.replace(voxel_size_nm=tuple(v / float(scale) for v in TARGET.voxel_size_nm))
    paths = generate_synthetic(folder / f"scale{scale:g}", seed=seed, shape=tuple(shape), target=style, progress=False)
    source = open_spec(f"{paths['source']}:raw")
    return ScaledPair(
        source_image=source,
        source_label=open_spec(f"{paths['source']}:label", label=True),
        source_voxel_size=getattr(source, "voxel_size", None),
        target_image=without_voxel_size(open_spec(f"{paths['target']}:raw")),
        target_label=without_voxel_size(open_spec(f"{paths['target_labels']}:label", label=True), label=True),
        test_image=without_voxel_size(open_spec(f"{paths['target_test']}:raw")),
        test_label=without_voxel_size(open_spec(f"{paths['target_test_labels']}:label", label=True), label=True),
        description=f"synthetic source -> target at {style.voxel_size_nm[-1]:g} nm (objects x{scale:g}), voxel size "
        "dropped",
    )


# ---------------------------------------------------------------- the check and the report


def not_worse(results: dict[str, list[dict[str, Any]]], metric: str = "IoU") -> dict[str, Any]:
    """``{"gain", "noise", "not_worse"}`` of masktwins vs source_only on ``metric`` (module docstring); empty
    without both."""
    from _common import mean_std

    if not results.get("masktwins") or not results.get("source_only"):
        return {}
    mt, mt_s = mean_std([r[metric] for r in results["masktwins"]])
    so, so_s = mean_std([r[metric] for r in results["source_only"]])
    noise = 2 * max(mt_s, so_s)
    return {"gain": mt - so, "noise": noise, "not_worse": bool(mt >= so - noise)}


def report(results: dict[str, Any]) -> str:
    from _common import summarize

    lines = ["# MaskTwins vs source-only, target objects scaled, target voxel size unknown", ""]
    for key, per_strategy in results["scales"].items():
        lines += [f"## objects x{key}", "", summarize(per_strategy).rstrip("\n"), ""]
        blocks = sorted({f"{r['mask_block']} ({r['block_rule']})" for r in per_strategy.get("masktwins", [])})
        if blocks:
            lines.append(f"MaskTwins mask blocks: {', '.join(blocks)}")
        check = not_worse(per_strategy)
        if check:
            verdict = "not worse" if check["not_worse"] else "WORSE"
            gain, noise = 100 * check["gain"], 100 * check["noise"]
            lines.append(f"MaskTwins - source-only IoU: {gain:+.1f} (seed noise, 2 max std: {noise:.1f}): {verdict}")
        lines.append("")
    return "\n".join(lines)


def _write(out: Path, results: dict[str, Any], config: dict[str, Any]) -> None:
    from mtbio.provenance import write_json_atomic

    write_json_atomic(out / "results.json", results)
    write_json_atomic(out / "config.json", config)
    tmp = out / ".results.md.tmp"
    tmp.write_text(report(results))
    tmp.replace(out / "results.md")


def run(args: argparse.Namespace) -> int:
    import torch

    from mtbio.provenance import git_hash
    from mtbio.uda.evaluate import evaluate_network
    from mtbio.uda.run import RunSpec, run_training
    from mtbio.uda.strategy import MaskKind, strategy_spec

    torch.set_num_threads(args.threads)
    recipe, base = recipe_and_config(args)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"scales": {}}
    config = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "recipe": recipe.to_dict(),
        "uda": {s: dataclasses.replace(base, strategy=s).to_dict() for s in strategies},
        "git": git_hash(),
        "torch": torch.__version__,
    }
    synthetic_dir = args.data if args.data is not None else args.out / "synthetic"
    for scale in args.scale_list:
        key = f"{scale:g}"
        pair = (
            em2d_scaled(args.data, scale, args.eval_sections)
            if args.dataset == "em2d"
            else synthetic_scaled(synthetic_dir, scale, args.shape)
        )
        config.setdefault("data", {})[key] = pair.description
        per_strategy = results["scales"].setdefault(key, {})
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for strategy in strategies:
                if any(r["seed"] == seed for r in per_strategy.get(strategy, [])):
                    print(f"[skip] x{key} {strategy} seed {seed}: already in results.json", flush=True)
                    continue
                spec = RunSpec(
                    out=args.out / "runs" / f"scale{key}" / f"{strategy}_seed{seed}",
                    config=dataclasses.replace(base, strategy=strategy),
                    recipe=recipe.replace(seed=seed),
                    source_image=pair.source_image,
                    source_label=pair.source_label,
                    target_image=pair.target_image,
                    target_label=pair.target_label,  # read only by the oracle strategy
                    source_voxel_size=pair.source_voxel_size,
                    target_voxel_size=None,  # unknown, as for a stack without metadata
                    source_description="labelled source, its voxel size kept",
                    target_description=pair.description,
                    weights=args.out / "checkpoints" / f"scale{key}_{strategy}_seed{seed}.pt",
                    pretrain_out=args.out / "pretrain" / f"seed{seed}",  # the source is the same at every scale
                    pretrain_weights=args.out / "pretrain" / f"seed{seed}.pt",
                    device=args.device,
                    logger="mtbio.bench",
                    progress=False,
                )
                run = run_training(spec)
                t0 = time.perf_counter()
                roi = (args.eval_roi, args.eval_roi)
                metrics = evaluate_network(
                    run.teacher(), pair.test_image, pair.test_label, roi_size=roi, device=args.device
                )
                masked = strategy_spec(strategy).mask is not MaskKind.NONE
                block = (run.mask_block or {}) if masked else {}  # a strategy without masks does not use one
                row = {
                    "seed": seed,
                    **metrics,
                    "mask_block": block.get("voxels"),
                    "block_rule": block.get("rule"),
                    "sec_per_iter": run.sec_per_iter,
                    "eval_sec": time.perf_counter() - t0,
                }
                per_strategy.setdefault(strategy, []).append(row)
                print(f"[done] x{key} {strategy} seed {seed}: " + json.dumps(row), flush=True)
                _write(args.out, results, config)
    _write(args.out, results, config)
    print((args.out / "results.md").read_text())
    return 0


def estimator_only(args: argparse.Namespace) -> int:
    """Per scale: the median object diameters of the source labels and of the scaled target's labels (what
    :func:`mtbio.uda.blocks.measure_object_sizes` measures, with the target labels standing in for a perfect
    source-only model) and the block :func:`mtbio.uda.blocks.resolve_mask_block` gives; ``OUT/estimator.json``."""
    from mtbio.provenance import write_json_atomic
    from mtbio.uda.blocks import ObjectSizes, label_diameter, resolve_mask_block

    recipe, base = recipe_and_config(args)
    rows = []
    synthetic_dir = args.data if args.data is not None else args.out / "synthetic"
    for scale in args.scale_list:
        pair = (
            em2d_scaled(args.data, scale)
            if args.dataset == "em2d"
            else synthetic_scaled(synthetic_dir, scale, args.shape)
        )
        d_src, n_src = label_diameter(pair.source_label, roi_size=recipe.crop)
        d_tgt, n_tgt = label_diameter(pair.target_label, roi_size=recipe.crop)
        sv = None if pair.source_voxel_size is None else pair.source_voxel_size[-2:]
        block = resolve_mask_block(
            base, recipe.crop, source_voxel_size=sv, sizes=ObjectSizes(d_src, d_tgt, n_src, n_tgt, "labels")
        )
        sizes = {"source_diameter": d_src, "target_diameter": d_tgt, "n_source": n_src, "n_target": n_tgt}
        rows.append({"scale": scale, **sizes, "block": list(block.voxels), "rule": block.rule, "note": block.note})
        print(f"x{scale:g}: {block.note}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "estimator.json", rows)
    return 0


def zoom_search_only(args: argparse.Namespace) -> int:
    """Per scale and seed: :func:`mtbio.uda.scale.zoom_search` with the seed's source-only start
    ``OUT/pretrain/seed<k>.pt`` (a run of this benchmark trains it) on the scaled, metadata-free target;
    ``OUT/zoom_search.json`` and ``OUT/zoom_search.md``. The true apparent scale is ``s`` times the native ratio of
    the object diameters (1.008 on VNC III -> Lucchi++, ``--estimator-only``)."""
    import torch

    from mtbio.networks.weights import read_weights
    from mtbio.provenance import write_json_atomic
    from mtbio.uda.scale import READINGS, zoom_search

    torch.set_num_threads(args.threads)
    recipe, _ = recipe_and_config(args)
    synthetic_dir = args.data if args.data is not None else args.out / "synthetic"
    rows: list[dict[str, Any]] = []
    lines = [
        "# Zoom search with the source-only start: the target's apparent object scale, its voxel size unknown",
        "",
        "| true scale | seed | reading `score`: scale (zoom) | reading `diameter`: scale (zoom) | seconds |",
        "|---|---|---|---|---|",
    ]
    for scale in args.scale_list:
        pair = (
            em2d_scaled(args.data, scale)
            if args.dataset == "em2d"
            else synthetic_scaled(synthetic_dir, scale, args.shape)
        )
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            path = args.out / "pretrain" / f"seed{seed}.pt"
            if not path.is_file():
                raise SystemExit(f"{path}: no source-only start of seed {seed}; train it: run without --zoom-search")
            network = read_weights(path).build_network(path).to(args.device).eval()
            t0 = time.perf_counter()
            found = zoom_search(
                network, pair.target_image, pair.source_label, roi_size=recipe.crop, device=args.device, seed=seed
            )
            seconds = time.perf_counter() - t0
            row = {"scale": scale, "seed": seed, "seconds": seconds, **found.to_dict()}
            rows.append(row)
            cells = []
            for reading in READINGS:
                z, a = found.chosen[reading], found.apparent_scale(reading)
                cells.append("-" if z is None else f"{a:.2f} ({z:g})")
            lines.append(f"| {scale:g} | {seed} | {cells[0]} | {cells[1]} | {seconds:.0f} |")
            print(lines[-1], flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(args.out / "zoom_search.json", rows)
    (args.out / "zoom_search.md").write_text("\n".join(lines) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.zoom_search:
        return zoom_search_only(args)
    return estimator_only(args) if args.estimator_only else run(args)


if __name__ == "__main__":
    sys.exit(main())
