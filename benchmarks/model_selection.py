"""Label-free model selection benchmark: a pool of checkpoints with true target IoU and the label-free score.

For each direction (``lucchi_to_vnc3``: the design direction; ``vnc3_to_lucchi``: held out, the paper's setting),
strategy and seed, a run starts from the seed's cached source-only network (``--pretrain`` iterations, as
``benchmarks/uda_em2d.py``) and trains ``--iters`` more; every ``--every`` iterations its EMA teacher is

* scored without labels on the direction's unlabelled target adaptation volume (:func:`mtbio.uda.selection.
  score_network`, the fixed crop sample of ``mtbio score``), and
* evaluated with labels on the direction's test sections (per-section mAP / F1 / MCC / IoU, mean over sections;
  ``--tta`` sets the test-time augmentation of this evaluation, recorded in each row; a pool holds one setting).

Forced collapses (negatives): ``small_unet`` from random weights, MaskTwins with the logit consistency and a large
``lambda_cm`` (``--collapse-lambda-cm``), no pre-training, ``--collapses`` seeds per direction.

Every checkpoint's row is appended to ``OUT/pool.jsonl`` as soon as it is measured and training checkpoints are kept
under ``OUT/runs/<run>/``, so an interrupted pool resumes per run and per checkpoint (``--max-minutes`` ends an
invocation cleanly; run the same command again). ``OUT/results.json`` / ``OUT/results.md`` hold the analysis:
Spearman rho between score and IoU (all checkpoints, healthy ones), the IoU of the checkpoint the score selects per
run (:func:`mtbio.uda.guard.select_row`: the best non-collapsed checkpoint, as training's ``selected.pt``) against
the last and the best one, and the run-level collapse flags (:func:`mtbio.uda.guard.run_collapsed`: the run's last
measured checkpoint collapsed) of forced collapses and healthy runs; ``healthy_checkpoints_flagged`` counts the
healthy runs' collapsed checkpoints (the per-checkpoint rule, which early dips trip).

Example::

    python benchmarks/model_selection.py --data ../shared/data --out runs/selection            # the full pool
    python benchmarks/model_selection.py --data ../shared/data --out /tmp/sel --directions lucchi_to_vnc3 \\
        --strategies source_only,masktwins --seeds 1 --iters 20 --pretrain 10 --every 10 --collapses 1 \\
        --eval-sections 2 --score-crops 2                                                     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DIRECTIONS = ("lucchi_to_vnc3", "vnc3_to_lucchi")
HELD_OUT = "vnc3_to_lucchi"
STRATEGIES = ("source_only", "mean_teacher", "mic", "random_pair", "masktwins", "oracle")
PRETRAIN_SEED_OFFSET = 10_000


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from mtbio.inference.settings import TTA, InferenceSettings
    from mtbio.uda.recipe import Recipe

    recipe = Recipe()  # the validated recipe's defaults: this benchmark selects among its checkpoints
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="folder holding vnc3/ and lucchi_pp/ (release layouts)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--directions", default=",".join(DIRECTIONS))
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--iters", type=int, default=recipe.iterations, help="iterations per run after the source-only start"
    )
    p.add_argument(
        "--pretrain", type=int, default=recipe.pretrain_iterations, help="source-only iterations of each seed's start"
    )
    p.add_argument("--every", type=int, default=200, help="measure a checkpoint every N iterations")
    p.add_argument("--collapses", type=int, default=3, help="forced-collapse runs per direction")
    p.add_argument("--collapse-lambda-cm", type=float, default=10.0)
    p.add_argument("--network", default=recipe.network)
    p.add_argument("--crop", type=int, default=recipe.crop[-1])
    p.add_argument("--batch", type=int, default=recipe.batch_size)
    p.add_argument("--eval-sections", type=int, default=None, help="score only the first N test sections")
    p.add_argument("--eval-roi", type=int, default=384)
    p.add_argument(
        "--tta",
        default=InferenceSettings().tta.value,
        choices=[t.value for t in TTA],
        help="test-time augmentation of the labelled evaluation (InferenceSettings.tta; each pool row records it; "
        "default: %(default)s)",
    )
    p.add_argument("--score-crops", type=int, default=recipe.score_crops, help="crops of the label-free score sample")
    p.add_argument("--score-crop", type=int, default=recipe.score_crop_size)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-minutes", type=float, default=None, help="end this invocation after about M minutes")
    p.add_argument("--analyse-only", action="store_true", help="only recompute results from OUT/pool.jsonl")
    return p.parse_args(argv)


def _runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run of the pool, in order: (direction, strategy or 'collapse', seed)."""
    out = []
    for direction in [d.strip() for d in args.directions.split(",") if d.strip()]:
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}; choose from {DIRECTIONS}")
        for seed in range(args.seeds):
            for strategy in [s.strip() for s in args.strategies.split(",") if s.strip()]:
                out.append({"direction": direction, "strategy": strategy, "seed": seed, "kind": "healthy"})
        for seed in range(args.collapses):
            out.append({"direction": direction, "strategy": "masktwins", "seed": seed, "kind": "forced_collapse"})
    return out


def _name(run: dict[str, Any]) -> str:
    tag = "collapse" if run["kind"] == "forced_collapse" else run["strategy"]
    return f"{run['direction']}_{tag}_seed{run['seed']}"


def _read_pool(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def _pair(args: argparse.Namespace, direction: str, cache: dict[str, Any]) -> Any:
    from mtbio.bundle.data import em2d_pair

    if direction not in cache:
        pair = em2d_pair(args.data, direction=direction)
        test_image, test_label = pair.test_image, pair.test_label
        if args.eval_sections:
            test_image, test_label = test_image[: args.eval_sections], test_label[: args.eval_sections]
        label = np.asarray(pair.source_label[:]) > 0
        pair.target_image = np.asarray(pair.target_image[:])  # the score's crop sample reads it often
        cache[direction] = (pair, np.asarray(test_image[:]), np.asarray(test_label[:]) > 0, float(label.mean()))
    return cache[direction]


def _pretrained(args: argparse.Namespace, pair: Any, direction: str, seed: int) -> dict[str, Any]:
    from mtbio.networks.weights import read_weights
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.experiment import build_trainer, save_weights

    path = args.out / "pretrain" / f"{direction}_seed{seed}.pt"
    if path.is_file():
        record = read_weights(path)
        if record.extra.get("iterations") == args.pretrain:
            return record.teacher
    trainer = build_trainer(
        config=UDAConfig(strategy="source_only"), iterations=args.pretrain, source_image=pair.source_image,
        source_label=pair.source_label, crop_size=(args.crop, args.crop), batch_size=args.batch,
        network=args.network, seed=PRETRAIN_SEED_OFFSET + seed,
    )  # fmt: skip
    trainer.fit()
    meta = {"strategy": "source_only", "seed": seed, "network": args.network, "spatial_dims": 2}
    save_weights(trainer, path, {**meta, "iterations": args.pretrain})
    return {k: v.detach().clone() for k, v in trainer.teacher.module.state_dict().items()}


def _measure(args: argparse.Namespace, net: Any, pair: Any, test: np.ndarray, label: np.ndarray, fsrc: float) -> dict:
    from mtbio.uda.evaluate import evaluate_network
    from mtbio.uda.selection import score_network

    t0 = time.perf_counter()
    score = score_network(
        net, pair.target_image, crop_size=(args.score_crop, args.score_crop), n_crops=args.score_crops,
        source_fraction=fsrc,
    )  # fmt: skip
    t1 = time.perf_counter()
    metrics = evaluate_network(net, test, label, roi_size=(args.eval_roi, args.eval_roi), tta=args.tta)
    return {**metrics, **score.to_dict(), "score_sec": t1 - t0, "eval_sec": time.perf_counter() - t1, "tta": args.tta}


def check_pool_tta(pool: list[dict[str, Any]], tta: str, path: Path) -> None:
    """Raise ValueError when ``pool`` holds rows evaluated with another test-time augmentation than ``tta`` (rows
    without the key were evaluated without it): a pool's IoUs must be comparable."""
    other = sorted({str(r.get("tta", "none")) for r in pool} - {tta})
    if other:
        raise ValueError(
            f"{path}: its rows were evaluated with --tta {', '.join(other)}, this run with --tta {tta}; "
            "use another --out (or the same --tta)"
        )


def _train_run(args: argparse.Namespace, run: dict[str, Any], pool: list[dict[str, Any]], cache: dict) -> bool:
    """Train one run (resuming its checkpoints) and measure its missing checkpoints; False if time ran out."""
    from ignite.engine import Events

    from mtbio.uda.config import UDAConfig
    from mtbio.uda.experiment import build_trainer
    from mtbio.uda.trainer import attach_checkpointing, latest_checkpoint, load_checkpoint

    name = _name(run)
    pair, test, label, fsrc = _pair(args, run["direction"], cache)
    done = {r["iteration"] for r in pool if r["run"] == name}
    wanted = set(range(args.every, args.iters + 1, args.every)) | {args.iters}
    if wanted <= done:
        return True
    collapse = run["kind"] == "forced_collapse"
    if collapse:
        cfg = UDAConfig(strategy="masktwins", consistency="logits", lambda_cm=args.collapse_lambda_cm)
        network, init = "small_unet", None
    else:
        cfg = UDAConfig(strategy=run["strategy"])
        network, init = args.network, _pretrained(args, pair, run["direction"], run["seed"])
    trainer = build_trainer(
        config=cfg, iterations=args.iters, source_image=pair.source_image, source_label=pair.source_label,
        target_image=pair.target_image, target_label=pair.target_label, crop_size=(args.crop, args.crop),
        batch_size=args.batch, network=network, seed=run["seed"], init_state=init,
    )  # fmt: skip
    run_dir = args.out / "runs" / name
    deadline = getattr(args, "_deadline", None)

    @trainer.on(Events.ITERATION_COMPLETED)  # before the checkpoint saver: a saved iteration is a measured one
    def _checkpoint(engine: Any) -> None:
        it = engine.state.iteration
        if it in wanted and it not in done:
            row = {"run": name, **run, "iteration": it, "network": network}
            row.update(_measure(args, trainer.teacher.module, pair, test, label, fsrc))
            _append(args.out / "pool.jsonl", row)
            pool.append(row)
            done.add(it)
            print(f"[{name} it {it}] IoU {row['IoU']:.4f} score {row['score']:.4f} collapsed {row['collapsed']} "
                  f"({row['score_sec']:.1f} s score)", flush=True)  # fmt: skip
        if deadline is not None and time.monotonic() > deadline and it % args.every == 0:
            engine.terminate()

    attach_checkpointing(trainer, run_dir, args.every, n_saved=1)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        load_checkpoint(trainer, ckpt)
    trainer.fit()
    return wanted <= done


def _spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def analyse(pool: list[dict[str, Any]], held_out: str = HELD_OUT) -> dict[str, Any]:
    """The selection benchmark's numbers from the pool rows (see the module docstring)."""
    from mtbio.uda.guard import run_collapsed, select_row

    out: dict[str, Any] = {}
    for direction in sorted({r["direction"] for r in pool}):
        rows = [r for r in pool if r["direction"] == direction]
        healthy = [r for r in rows if r["kind"] == "healthy"]
        runs: dict[str, list[dict[str, Any]]] = {}
        for r in healthy:
            runs.setdefault(r["run"], []).append(r)
        per_run = []
        for name, rs in sorted(runs.items()):
            rs = sorted(rs, key=lambda r: r["iteration"])
            chosen = select_row(rs)  # None: every checkpoint collapsed, the run offers none (its last IoU counts)
            per_run.append({
                "run": name, "selected_iteration": None if chosen is None else chosen["iteration"],
                "selected_IoU": rs[-1]["IoU"] if chosen is None else chosen["IoU"], "last_IoU": rs[-1]["IoU"],
                "best_IoU": max(r["IoU"] for r in rs), "last_iteration": rs[-1]["iteration"],
                "collapsed": run_collapsed(rs), "collapsed_checkpoints": sum(bool(r["collapsed"]) for r in rs),
            })  # fmt: skip
        collapses: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            if r["kind"] == "forced_collapse":
                collapses.setdefault(r["run"], []).append(r)
        flagged = [run_collapsed(rs) for rs in collapses.values()]
        healthy_runs_flagged = [p["collapsed"] for p in per_run]
        out[direction] = {
            "held_out": direction == held_out,
            "checkpoints": len(rows),
            "spearman_all": _spearman([r["score"] for r in rows], [r["IoU"] for r in rows]),
            "spearman_healthy": _spearman([r["score"] for r in healthy], [r["IoU"] for r in healthy]),
            "selected_IoU": float(np.mean([p["selected_IoU"] for p in per_run])) if per_run else None,
            "last_IoU": float(np.mean([p["last_IoU"] for p in per_run])) if per_run else None,
            "best_IoU": float(np.mean([p["best_IoU"] for p in per_run])) if per_run else None,
            "forced_collapses": len(flagged),
            "forced_collapses_flagged": int(sum(flagged)),
            "forced_collapse_IoU": [sorted(rs, key=lambda r: r["iteration"])[-1]["IoU"] for rs in collapses.values()],
            "healthy_runs": len(healthy_runs_flagged),
            "healthy_runs_flagged": int(sum(healthy_runs_flagged)),
            "healthy_checkpoints": len(healthy),
            "healthy_checkpoints_flagged": int(sum(bool(r["collapsed"]) for r in healthy)),
            "per_run": per_run,
        }
    return out


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        "| direction | checkpoints | rho (all) | rho (healthy) | IoU selected | IoU last | IoU best "
        "| collapses flagged | healthy runs flagged | healthy checkpoints flagged |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v: Any, pct: bool = False) -> str:
        return "-" if v is None else (f"{100 * v:.1f}" if pct else f"{v:.3f}")

    for d, r in results.items():
        name = d + (" (held out)" if r["held_out"] else "")
        lines.append(
            f"| {name} | {r['checkpoints']} | {f(r['spearman_all'])} | {f(r['spearman_healthy'])} | "
            f"{f(r['selected_IoU'], True)} | {f(r['last_IoU'], True)} | {f(r['best_IoU'], True)} | "
            f"{r['forced_collapses_flagged']}/{r['forced_collapses']} | "
            f"{r['healthy_runs_flagged']}/{r['healthy_runs']} | "
            f"{r['healthy_checkpoints_flagged']}/{r['healthy_checkpoints']} |"
        )
    return "\n".join(lines) + "\n"


def write_results(out: Path, pool: list[dict[str, Any]]) -> dict[str, Any]:
    from mtbio.provenance import write_json_atomic

    results = analyse(pool)
    write_json_atomic(out / "results.json", results)
    (out / "results.md").write_text(_markdown(results))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    pool = _read_pool(args.out / "pool.jsonl")
    if not args.analyse_only:
        check_pool_tta(pool, args.tta, args.out / "pool.jsonl")
        torch.set_num_threads(args.threads)
        if args.max_minutes is not None:
            args._deadline = time.monotonic() + 60 * args.max_minutes
        cache: dict[str, Any] = {}
        for run in _runs(args):
            if not _train_run(args, run, pool, cache):
                print(f"stopped in {_name(run)} after --max-minutes; run the same command again to go on")
                break
    write_results(args.out, pool)
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
