"""Label-free model selection benchmark: a pool of checkpoints with true target IoU and the label-free score.

For each direction (``lucchi_to_vnc3``: the design direction; ``vnc3_to_lucchi``: held out, the paper's setting;
``synthetic``: mtbio's synthetic source / target domains, for design), strategy and seed, one run goes through
:func:`mtbio.uda.run.run_training` (the one path of every training): ``--pretrain`` source-only iterations, shared
by the seed's runs of the direction (``OUT/pretrain/<direction>_seed<k>``, as ``benchmarks/uda_em2d.py``), then
``--iters`` iterations of the strategy with a checkpoint every ``--every`` iterations (``Recipe.
checkpoint_interval``). The run's target is the direction's unlabelled adaptation volume, so the collapse guard
(:mod:`mtbio.uda.guard`) scores every checkpoint of every stage without labels (``scores.jsonl``: the rows, the crop
sample and the resolved mask block ``mtbio adapt`` selects with). Every scored checkpoint of the strategy's stage is
kept (``RunSpec.n_saved=None``) and its EMA teacher is then evaluated with labels on the direction's test sections
(:func:`mtbio.uda.evaluate.evaluate_network`: per-section mAP / F1 / MCC / IoU, mean over sections; ``--tta`` sets
the test-time augmentation of this evaluation). A pool row is the guard's row (``score``, ``collapsed``,
``reasons``, ``foreground_fraction``, ``source_fraction``, ``flip_dice``, ``view_dice``, ``adjacent_dice``,
``seconds``, ``stage``: the same numbers, not a second scoring) plus the run (``run``, ``direction``, ``strategy``,
``seed``, ``kind``, ``network``), the labelled metrics and the pool's settings (``tta``, ``crops``, ``crop_size``,
``score_crop``, ``eval_sections``, ``eval_roi``, ``builder``; ``score_sec`` = the guard's ``seconds``,
``eval_sec``).

Forced collapses (negatives): ``small_unet`` from random weights (no pre-training), MaskTwins with the logit
consistency and a large ``lambda_cm`` (``--collapse-lambda-cm``), ``--collapses`` seeds per direction.

**Resume.** Rows are appended to ``OUT/pool.jsonl`` as soon as they are measured. A run trains in chunks of
``--every`` iterations (``RunSpec.stop_after``; ``run_training`` resumes the run, its pre-training included, from
its newest checkpoint), and after each chunk the scored checkpoints without a pool row are evaluated; so a killed
invocation continues per run and per checkpoint, and ``--max-minutes`` ends an invocation cleanly between
checkpoints (run the same command again). A finished run is not trained again; its scored checkpoints still
missing from the pool are evaluated.

**Disk.** After a checkpoint's row is measured, its training checkpoint (student, teacher, optimizer) is deleted
unless it is the run's newest one (which ``run_training``'s resume needs); a pre-training keeps only its newest
checkpoint once finished. ``--keep-checkpoints`` keeps them all.

**Pool versions.** Every row records ``builder``: ``2`` is this builder (the guard's rows). Rows without it
(``benchmarks/results/model_selection_pool_partial.jsonl``) come from the builder before ``run_training`` scored
checkpoints (builder 1): it trained with ``build_trainer`` and scored with :func:`~mtbio.uda.selection.score_network`
itself, on the same crop sample (16 crops of 256 px, seed 0) but with 32 px mask blocks, where the guard uses the
run's resolved mask block (160 nm: 35 px at VNC III's 4.6 nm on ``lucchi_to_vnc3``, 32 px at Lucchi++'s 5 nm), so
its ``view_dice`` and ``score`` are not the guard's numbers. Builder 2 refuses to add rows to a pool that holds rows
of another builder or of other pool settings (``--tta``, ``--score-crops``, ``--score-crop``, ``--eval-sections``,
``--eval-roi``), and the analysis refuses a pool mixing builders: use another ``--out``. ``--analyse-only`` still
analyses a builder-1 pool on its own.

``OUT/results.json`` / ``OUT/results.md`` hold the analysis per direction: Spearman rho between score and IoU (all
checkpoints, healthy ones), the IoU of the checkpoint the score selects per run (:func:`mtbio.uda.guard.select_row`:
the best non-collapsed checkpoint, as training's ``selected.pt``) against the last and the best one, the run-level
collapse flags (:func:`mtbio.uda.guard.run_collapsed`: the run's last measured checkpoint collapsed) of forced
collapses and healthy runs, ``healthy_checkpoints_flagged`` (the per-checkpoint rule, which early dips trip), the
scoring seconds per checkpoint, and ``acceptance``: the issue's checks (rho >= 0.6, selected >= last, within 2 IoU
points of the best, every forced collapse flagged, under 5 % of healthy runs flagged), meant for the held-out
direction.

Example::

    python benchmarks/model_selection.py --data ../shared/data --out runs/selection            # the full pool
    python benchmarks/model_selection.py --data ../shared/data --out /tmp/sel --directions lucchi_to_vnc3 \\
        --strategies source_only,masktwins --seeds 1 --iters 20 --pretrain 10 --every 10 --collapses 1 \\
        --eval-sections 2 --score-crops 2                                                     # a smoke run
    python benchmarks/model_selection.py --out /tmp/syn --directions synthetic --synthetic-shape 8,128,128 \\
        --network small_unet --crop 64 --iters 40 --pretrain 20 --every 10 --score-crop 64    # synthetic domains
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DIRECTIONS = ("lucchi_to_vnc3", "vnc3_to_lucchi")
SYNTHETIC = "synthetic"
HELD_OUT = "vnc3_to_lucchi"
STRATEGIES = ("source_only", "mean_teacher", "mic", "random_pair", "masktwins", "oracle")
#: the version of the rows this builder writes (rows without ``builder`` are version 1; module docstring)
BUILDER = 2
#: the settings every row of one pool shares: row key -> (flag, value of rows without the key)
POOL_SETTINGS = {
    "builder": ("builder", 1),
    "tta": ("--tta", "none"),
    "crops": ("--score-crops", None),
    "score_crop": ("--score-crop", None),
    "eval_sections": ("--eval-sections", None),
    "eval_roi": ("--eval-roi", None),
}
#: the issue's checks of the held-out direction
MIN_RHO, MAX_GAP_TO_BEST, MAX_HEALTHY_FLAGGED = 0.6, 0.02, 0.05


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from mtbio.inference.settings import TTA, InferenceSettings
    from mtbio.uda.recipe import Recipe

    recipe = Recipe()  # the validated recipe's defaults: this benchmark selects among its checkpoints
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="folder holding vnc3/ and lucchi_pp/ (release layouts)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--directions", default=",".join(DIRECTIONS), help=f"of {', '.join((*DIRECTIONS, SYNTHETIC))}")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--iters", type=int, default=recipe.iterations, help="iterations per run after the source-only start"
    )
    p.add_argument(
        "--pretrain", type=int, default=recipe.pretrain_iterations, help="source-only iterations of each seed's start"
    )
    p.add_argument("--every", type=int, default=200, help="checkpoint (scored and evaluated) every N iterations")
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
    p.add_argument(
        "--synthetic-shape", default="32,256,256", help="Z,Y,X of the synthetic volumes (direction synthetic)"
    )
    p.add_argument("--keep-checkpoints", action="store_true", help="keep every training checkpoint (module doc)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-minutes", type=float, default=None, help="end this invocation after about M minutes")
    p.add_argument("--analyse-only", action="store_true", help="only recompute results from OUT/pool.jsonl")
    args = p.parse_args(argv)
    names = _names(args.directions)
    unknown = [d for d in names if d not in (*DIRECTIONS, SYNTHETIC)]
    if unknown:
        p.error(f"unknown direction {unknown[0]!r}; choose from {', '.join((*DIRECTIONS, SYNTHETIC))}")
    if not args.analyse_only and args.data is None and any(d in DIRECTIONS for d in names):
        p.error("--data is required for the directions " + ", ".join(d for d in names if d in DIRECTIONS))
    try:
        args.synthetic_shape = tuple(int(s) for s in args.synthetic_shape.split(","))
        if len(args.synthetic_shape) != 3:
            raise ValueError
    except ValueError:
        p.error(f"--synthetic-shape takes Z,Y,X, got {args.synthetic_shape!r}")
    if args.every < 1:
        p.error(f"--every must be >= 1, got {args.every}")
    return args


def _names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run of the pool, in order: (direction, strategy or 'collapse', seed)."""
    out = []
    for direction in _names(args.directions):
        if direction not in (*DIRECTIONS, SYNTHETIC):
            raise ValueError(f"unknown direction {direction!r}; choose from {(*DIRECTIONS, SYNTHETIC)}")
        for seed in range(args.seeds):
            for strategy in _names(args.strategies):
                out.append({"direction": direction, "strategy": strategy, "seed": seed, "kind": "healthy"})
        for seed in range(args.collapses):
            out.append({"direction": direction, "strategy": "masktwins", "seed": seed, "kind": "forced_collapse"})
    return out


def _name(run: dict[str, Any]) -> str:
    tag = "collapse" if run["kind"] == "forced_collapse" else run["strategy"]
    return f"{run['direction']}_{tag}_seed{run['seed']}"


def _read_pool(path: Path) -> list[dict[str, Any]]:
    """The rows of ``path`` (a torn last line of a killed process is skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def pool_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The values of :data:`POOL_SETTINGS` this invocation writes into its rows."""
    return {
        "builder": BUILDER,
        "tta": args.tta,
        "crops": args.score_crops,
        "score_crop": args.score_crop,
        "eval_sections": args.eval_sections,
        "eval_roi": args.eval_roi,
    }


def check_pool(pool: list[dict[str, Any]], settings: dict[str, Any], path: Path | str) -> None:
    """Raise ValueError when ``pool`` holds rows built with other :data:`POOL_SETTINGS` than ``settings`` (a row
    without a key has the table's value for it; where that is ``None`` such rows are not compared): one pool's scores
    and IoUs must be comparable."""
    for key, (flag, missing) in POOL_SETTINGS.items():
        if key not in settings:
            continue
        seen = {json.dumps(r.get(key, missing)) for r in pool if key in r or missing is not None}
        other = sorted(seen - {json.dumps(settings[key])})
        if not other:
            continue
        shown = ", ".join(str(json.loads(o)) for o in other)
        if key == "builder":
            raise ValueError(
                f"{path}: its rows come from pool builder {shown}, this one writes builder {settings[key]} (the "
                "collapse guard's rows; benchmarks/model_selection.py, 'Pool versions'): use another --out"
            )
        what = "evaluated with" if key == "tta" else "built with"
        raise ValueError(
            f"{path}: its rows were {what} {flag} {shown}, this run with {flag} {settings[key]}; use another --out "
            f"(or the same {flag})"
        )


def check_pool_tta(pool: list[dict[str, Any]], tta: str, path: Path | str) -> None:
    """:func:`check_pool` of the test-time augmentation alone (rows without the key were evaluated without it)."""
    check_pool(pool, {"tta": tta}, path)


# ------------------------------------------------------------------------------------------------ the data


@dataclasses.dataclass
class _Direction:
    """A direction's volumes in memory: training pair (source, target, target labels for the oracle) and test."""

    pair: Any
    test_image: np.ndarray
    test_label: np.ndarray
    resample: bool


def _direction(args: argparse.Namespace, direction: str, cache: dict[str, _Direction]) -> _Direction:
    """The direction's volumes, read once per invocation (numpy: each chunk's ``run_training`` reuses them)."""
    if direction in cache:
        return cache[direction]
    from mtbio.bundle.data import em2d_pair, synthetic_pair

    if direction == SYNTHETIC:
        pair = synthetic_pair(args.out / "synthetic_data", seed=0, shape=args.synthetic_shape)
    else:
        pair = em2d_pair(args.data, direction=direction)
    test_image, test_label = pair.test_image, pair.test_label
    if args.eval_sections:
        test_image, test_label = test_image[: args.eval_sections], test_label[: args.eval_sections]
    pair = dataclasses.replace(
        pair,
        source_image=np.asarray(pair.source_image[:]),
        source_label=np.asarray(pair.source_label[:]) > 0,
        target_image=np.asarray(pair.target_image[:]),
        target_label=None if pair.target_label is None else np.asarray(pair.target_label[:]) > 0,
    )
    # the synthetic domains (8 vs 10 nm in-plane) are trained as given, as the real ones (4.6 vs 5 nm, within the
    # 10 % training_grid keeps): every run of a seed then shares its pre-training on one grid
    cache[direction] = _Direction(pair, np.asarray(test_image[:]), np.asarray(test_label[:]) > 0, False)
    return cache[direction]


def run_spec(args: argparse.Namespace, run: dict[str, Any], data: _Direction) -> Any:
    """The :class:`~mtbio.uda.run.RunSpec` of one run of the pool (``stop_after`` set per chunk)."""
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.recipe import Recipe
    from mtbio.uda.run import RunSpec

    collapse = run["kind"] == "forced_collapse"
    direction, seed = run["direction"], int(run["seed"])
    recipe = Recipe(
        network="small_unet" if collapse else args.network,
        iterations=args.iters,
        pretrain_iterations=0 if collapse else args.pretrain,
        crop_size=args.crop,
        batch_size=args.batch,
        seed=seed,
        checkpoint_interval=args.every,
        score_crops=args.score_crops,
        score_crop_size=args.score_crop,
    )
    if collapse:
        config = UDAConfig(strategy="masktwins", consistency="logits", lambda_cm=args.collapse_lambda_cm)
    else:
        config = UDAConfig(strategy=run["strategy"])
    pair = data.pair
    vs = dict(pair.voxel_size or {})
    pretrain = None if collapse else args.out / "pretrain" / f"{direction}_seed{seed}"  # shared by the seed's runs
    return RunSpec(
        out=args.out / "runs" / _name(run),
        config=config,
        recipe=recipe,
        source_image=pair.source_image,
        source_label=pair.source_label,
        target_image=pair.target_image,
        target_label=pair.target_label,
        source_voxel_size=vs.get("source"),
        target_voxel_size=vs.get("target"),
        resample=data.resample,
        source_description=pair.description,
        target_description=f"{direction}: the unlabelled adaptation volume",
        pretrain_out=pretrain,
        pretrain_weights=None if pretrain is None else pretrain.with_suffix(".pt"),
        device=args.device,
        n_saved=None,  # every scored checkpoint stays until its row is measured (_prune)
        logger="mtbio.bench",
        progress=False,
        record={"model_selection": {"run": _name(run), "kind": run["kind"], "builder": BUILDER}},
    )


# -------------------------------------------------------------------------------------- training in chunks


def _done(run_dir: Path) -> int:
    """The iteration of ``run_dir``'s newest checkpoint (0 without one)."""
    from mtbio.uda.trainer import latest_checkpoint

    latest = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    return 0 if latest is None else _iteration(latest)


def _iteration(path: Path) -> int:
    return int(path.stem.rsplit("=", 1)[1])


def _finished(spec: Any) -> bool:
    return spec.weights_path.is_file() and _done(spec.out) >= spec.recipe.iterations


def next_stop(spec: Any) -> int | None:
    """``stop_after`` of the next chunk of ``spec``'s run: the next multiple of the checkpoint interval after the
    newest checkpoint of the stage in progress, ``None`` for the last chunk.

    ``stop_after`` ends a ``run_training`` call after that iteration of whichever stage reaches it. While the
    pre-training is in progress its next checkpoint is the stop; its last chunk passes the strategy's first
    checkpoint instead, which the pre-training never meets (it resumes past it, or it is not below the
    pre-training's length), so the call ends after the pre-training and one chunk of the strategy.
    """
    recipe = spec.recipe
    every, total = int(recipe.checkpoint_interval), int(recipe.iterations)
    if recipe.pretrain_iterations > 0 and not spec.pretrain_weights_path.is_file():
        nxt = (_done(spec.pretrain_dir) // every + 1) * every
        if nxt < recipe.pretrain_iterations:
            return nxt
        return every if every < total else None
    nxt = (_done(spec.out) // every + 1) * every
    return nxt if nxt < total else None


def _checkpoint_file(run_dir: Path, iteration: int) -> Path | None:
    for name in (f"checkpoint_iteration={iteration}.pt", f"checkpoint_final_iteration={iteration}.pt"):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


def _teacher(spec: Any, path: Path) -> Any:
    """The EMA teacher of the training checkpoint ``path`` in eval mode."""
    from mtbio.networks import get_network
    from mtbio.networks.weights import read_weights

    recipe = spec.recipe
    network = get_network(recipe.network, recipe.spatial_dims, **recipe.network_kwargs)
    return read_weights(path).load_into(network, path).to(spec.device).eval()


def _measure(args: argparse.Namespace, net: Any, data: _Direction) -> dict[str, Any]:
    """The labelled metrics of ``net`` on the direction's test sections, and the seconds they took."""
    from mtbio.uda.evaluate import evaluate_network

    t0 = time.perf_counter()
    roi = (args.eval_roi, args.eval_roi)
    metrics = evaluate_network(net, data.test_image, data.test_label, roi_size=roi, tta=args.tta, device=args.device)
    return {**metrics, "eval_sec": time.perf_counter() - t0}


def pool_row(
    args: argparse.Namespace, run: dict[str, Any], spec: Any, guard: dict[str, Any], metrics: dict[str, Any], data: Any
) -> dict[str, Any]:
    """One pool row: the run, the guard's row as written (``scores.jsonl``), the labelled metrics, the settings."""
    from mtbio.uda.guard import score_crop_size

    crop = score_crop_size(spec.recipe.crop, args.score_crop, data.pair.target_image.shape)
    return {
        "run": _name(run),
        **run,
        "iteration": int(guard["iteration"]),
        "network": spec.recipe.network,
        **{k: v for k, v in metrics.items() if k != "eval_sec"},
        **guard,
        "score_sec": guard.get("seconds"),
        "eval_sec": metrics.get("eval_sec"),
        "crop_size": list(crop),
        **pool_settings(args),
    }


def _measure_scored(
    args: argparse.Namespace, run: dict[str, Any], spec: Any, pool: list[dict[str, Any]], data: _Direction
) -> bool:
    """Evaluate the run's scored checkpoints that have no pool row; False when time ran out first."""
    from mtbio.uda.guard import read_scores

    name = _name(run)
    done = {int(r["iteration"]) for r in pool if r.get("run") == name}
    for guard in read_scores(spec.out):
        it = int(guard["iteration"])
        if it in done:
            continue
        if _past_deadline(args):
            return False
        path = _checkpoint_file(spec.out, it)
        if path is None:
            print(f"[{name} it {it}] scored, but its checkpoint is gone: not evaluated", flush=True)
            continue
        row = pool_row(args, run, spec, guard, _measure(args, _teacher(spec, path), data), data)
        _append(args.out / "pool.jsonl", row)
        pool.append(row)
        done.add(it)
        print(
            f"[{name} it {it}] IoU {row['IoU']:.4f} score {row['score']:.4f} collapsed {row['collapsed']} "
            f"({row['score_sec']:.1f} s score, {row['eval_sec']:.1f} s evaluation)",
            flush=True,
        )
    if not args.keep_checkpoints:
        _prune(spec.out, done)
    return True


def _prune(run_dir: Path, measured: set[int]) -> None:
    """Delete the training checkpoints of ``measured`` iterations but the newest one (resume needs it)."""
    from mtbio.uda.trainer import latest_checkpoint

    if not run_dir.is_dir():
        return
    latest = latest_checkpoint(run_dir)
    for f in run_dir.glob("checkpoint_*iteration=*.pt"):
        if f != latest and _iteration(f) in measured:
            f.unlink(missing_ok=True)


def _prune_pretrain(spec: Any) -> None:
    """A finished pre-training keeps its newest checkpoint only (nothing of it is evaluated)."""
    if spec.recipe.pretrain_iterations > 0 and spec.pretrain_weights_path.is_file():
        d = spec.pretrain_dir
        _prune(d, {_iteration(f) for f in d.glob("checkpoint_*iteration=*.pt")} if d.is_dir() else set())


def _past_deadline(args: argparse.Namespace) -> bool:
    deadline = getattr(args, "_deadline", None)
    return deadline is not None and time.monotonic() > deadline


def _train_run(args: argparse.Namespace, run: dict[str, Any], pool: list[dict[str, Any]], cache: dict) -> bool:
    """Train one run chunk by chunk through ``run_training`` and evaluate its scored checkpoints after each chunk;
    False if time ran out before the run was complete and measured."""
    from mtbio.uda.run import run_training

    data = _direction(args, run["direction"], cache)
    spec = run_spec(args, run, data)
    while True:
        if not _measure_scored(args, run, spec, pool, data):
            return False
        if not args.keep_checkpoints:
            _prune_pretrain(spec)
        if _finished(spec):
            return True
        if _past_deadline(args):
            return False
        before = (_done(spec.pretrain_dir), spec.pretrain_weights_path.is_file(), _done(spec.out))
        run_training(dataclasses.replace(spec, stop_after=next_stop(spec)))
        after = (_done(spec.pretrain_dir), spec.pretrain_weights_path.is_file(), _done(spec.out))
        if after == before and not _finished(spec):
            raise RuntimeError(f"{spec.out}: run_training made no progress (checkpoints at {before})")


# ------------------------------------------------------------------------------------------------ analysis


def _spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def _mean(values: Sequence[float]) -> float | None:
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


def pool_builder(pool: list[dict[str, Any]]) -> int | None:
    """The pool's builder version (rows without ``builder`` are version 1; ``None`` for an empty pool).

    Raises:
        ValueError: the pool mixes builders (their scores are not the same numbers; module docstring).
    """
    versions = sorted({int(r.get("builder", 1)) for r in pool})
    if len(versions) > 1:
        raise ValueError(
            f"the pool mixes rows of builders {versions} (different label-free scoring): analyse each on its own"
        )
    return versions[0] if versions else None


def acceptance(r: dict[str, Any]) -> dict[str, bool | None]:
    """The issue's checks on one direction's numbers (``None`` where there is nothing to check)."""
    rho = r["spearman_all"]
    sel, last, best = r["selected_IoU"], r["last_IoU"], r["best_IoU"]
    return {
        f"rho_at_least_{MIN_RHO}": None if rho is None else bool(rho >= MIN_RHO),
        "selected_at_least_last": None if sel is None else bool(sel >= last),
        f"selected_within_{round(100 * MAX_GAP_TO_BEST)}_points_of_best": (
            None if sel is None else bool(best - sel <= MAX_GAP_TO_BEST)
        ),
        "every_forced_collapse_flagged": (
            None if not r["forced_collapses"] else bool(r["forced_collapses_flagged"] == r["forced_collapses"])
        ),
        f"healthy_runs_flagged_below_{round(100 * MAX_HEALTHY_FLAGGED)}_pct": (
            None if not r["healthy_runs"] else bool(r["healthy_runs_flagged"] < MAX_HEALTHY_FLAGGED * r["healthy_runs"])
        ),
    }


def analyse(pool: list[dict[str, Any]], held_out: str = HELD_OUT) -> dict[str, Any]:
    """The selection benchmark's numbers from the pool rows (see the module docstring).

    Raises:
        ValueError: the pool mixes builder versions (:func:`pool_builder`).
    """
    from mtbio.uda.guard import run_collapsed, select_row

    builder = pool_builder(pool)
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
        seconds = [r.get("score_sec") for r in rows if r.get("score_sec") is not None]
        ordered = [sorted(rs, key=lambda r: r["iteration"]) for _, rs in sorted(runs.items())]
        within = [_spearman([r["score"] for r in rs], [r["IoU"] for r in rs]) for rs in ordered]
        lasts = [rs[-1] for rs in ordered]
        out[direction] = {
            "held_out": direction == held_out,
            "builder": builder,
            "checkpoints": len(rows),
            "spearman_all": _spearman([r["score"] for r in rows], [r["IoU"] for r in rows]),
            "spearman_healthy": _spearman([r["score"] for r in healthy], [r["IoU"] for r in healthy]),
            "spearman_within_runs": _mean(within),
            "spearman_last_across_runs": _spearman([r["score"] for r in lasts], [r["IoU"] for r in lasts]),
            "per_strategy": per_strategy(per_run, runs),
            "selected_IoU": _mean([p["selected_IoU"] for p in per_run]),
            "last_IoU": _mean([p["last_IoU"] for p in per_run]),
            "best_IoU": _mean([p["best_IoU"] for p in per_run]),
            "forced_collapses": len(flagged),
            "forced_collapses_flagged": int(sum(flagged)),
            "forced_collapse_IoU": [sorted(rs, key=lambda r: r["iteration"])[-1]["IoU"] for rs in collapses.values()],
            "healthy_runs": len(healthy_runs_flagged),
            "healthy_runs_flagged": int(sum(healthy_runs_flagged)),
            "healthy_checkpoints": len(healthy),
            "healthy_checkpoints_flagged": int(sum(bool(r["collapsed"]) for r in healthy)),
            "score_sec_mean": _mean(seconds),
            "score_sec_max": max(seconds) if seconds else None,
            "per_run": per_run,
        }
        out[direction]["acceptance"] = acceptance(out[direction])
    return out


def per_strategy(per_run: list[dict[str, Any]], runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per strategy, over its healthy runs: mean last / selected / best IoU and mean last score (does the score rank
    the strategies as their IoU does?)."""
    table: dict[str, dict[str, list[float]]] = {}
    for p in per_run:
        rs = sorted(runs[p["run"]], key=lambda r: r["iteration"])
        t = table.setdefault(rs[-1].get("strategy", "?"), {"last_IoU": [], "selected_IoU": [], "best_IoU": [],
                                                           "last_score": []})  # fmt: skip
        for key in ("last_IoU", "selected_IoU", "best_IoU"):
            t[key].append(p[key])
        t["last_score"].append(rs[-1]["score"])
    return {k: {"runs": len(v["last_IoU"]), **{m: _mean(x) for m, x in v.items()}} for k, v in sorted(table.items())}


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        "| direction | checkpoints | rho (all) | rho (healthy) | IoU selected | IoU last | IoU best "
        "| collapses flagged | healthy runs flagged | healthy checkpoints flagged | score s (mean / max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v: Any, pct: bool = False) -> str:
        return "-" if v is None else (f"{100 * v:.1f}" if pct else f"{v:.3f}")

    def s(v: Any) -> str:
        return "-" if v is None else f"{v:.1f}"

    for d, r in results.items():
        name = d + (" (held out)" if r["held_out"] else "")
        lines.append(
            f"| {name} | {r['checkpoints']} | {f(r['spearman_all'])} | {f(r['spearman_healthy'])} | "
            f"{f(r['selected_IoU'], True)} | {f(r['last_IoU'], True)} | {f(r['best_IoU'], True)} | "
            f"{r['forced_collapses_flagged']}/{r['forced_collapses']} | "
            f"{r['healthy_runs_flagged']}/{r['healthy_runs']} | "
            f"{r['healthy_checkpoints_flagged']}/{r['healthy_checkpoints']} | "
            f"{s(r.get('score_sec_mean'))} / {s(r.get('score_sec_max'))} |"
        )
    lines += ["", "| direction | rho within runs (mean) | rho of the runs' last checkpoints |", "|---|---|---|"]
    for d, r in results.items():
        lines.append(f"| {d} | {f(r.get('spearman_within_runs'))} | {f(r.get('spearman_last_across_runs'))} |")
    for d, r in results.items():
        lines += [
            "",
            f"{d}: per strategy (healthy runs; IoU %)",
            "",
            "| strategy | runs | last score | IoU last | IoU selected | IoU best |",
            "|---|---|---|---|---|---|",
        ]
        for k, v in (r.get("per_strategy") or {}).items():
            lines.append(
                f"| {k} | {v['runs']} | {f(v['last_score'])} | {f(v['last_IoU'], True)} | "
                f"{f(v['selected_IoU'], True)} | {f(v['best_IoU'], True)} |"
            )
    for d, r in results.items():
        checks = ", ".join(f"{k} {'-' if v is None else ('yes' if v else 'NO')}" for k, v in r["acceptance"].items())
        lines.append(f"\n{d}{' (held out)' if r['held_out'] else ''}, builder {r.get('builder')}: {checks}")
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
        check_pool(pool, pool_settings(args), args.out / "pool.jsonl")
    try:
        if not args.analyse_only:
            torch.set_num_threads(args.threads)
            if args.max_minutes is not None:
                args._deadline = time.monotonic() + 60 * args.max_minutes
            cache: dict[str, Any] = {}
            for run in _runs(args):
                if not _train_run(args, run, pool, cache):
                    print(f"stopped in {_name(run)} after --max-minutes; run the same command again to go on")
                    break
    finally:  # also after SIGINT / SIGTERM (TrainingInterrupted): the rows measured so far are analysed
        write_results(args.out, pool)
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
