"""The paper's protocol on a wall-clock budget: VNC III -> Lucchi++ (subset 1), source-only start, MaskTwins, both
the last and the label-free-selected checkpoint evaluated on every test section.

Protocol (DA-ISC, MICCAI 2022 / MaskTwins, ICML 2025, "subset 1", on the data given):

* source: VNC III ``stack1`` (labelled) from ``DATA/vnc3``; target training: Lucchi++ ``Test_In`` (the EPFL
  *training* volume, unlabelled here) from ``DATA/lucchi_pp``; test: Lucchi++ ``Train_In`` / ``Train_Out`` (the
  EPFL *testing* volume; 40 sections in ``../shared/data``, all 165 in the full release) from ``--eval-data``;
* per seed, one run through :func:`mtbio.uda.run.run_training`: ``pretrain`` source-only iterations, then
  ``iterations`` MaskTwins iterations from their EMA weights (EMA alpha by run length, AMP on CUDA: the trainer
  autocasts to float16 with a ``GradScaler`` there and ignores AMP on the CPU);
* evaluation per 2D section (:func:`mtbio.metrics.em_metrics_per_section`: mAP of the probability, F1, MCC, IoU of
  ``p >= 0.5``; the mean over sections) of the source-only start, the last MaskTwins teacher and the checkpoint the
  label-free score selects (``RunResult.selected_weights`` when ``run_training`` provides it, else the last weights,
  flagged "selection unavailable"); flip TTA with ``--tta`` (``InferenceSettings.tta = "flips"``).

Schedule: ``--iters N [--pretrain P]`` fixes it; ``--minutes M`` sizes it so the whole job (imports, data, warm-up,
training, evaluation) ends within ``M`` minutes: a warm-up (two short ``run_training`` runs, source-only and MaskTwins,
the first iterations excluded) measures seconds per iteration and one evaluation, then
:func:`_budget.plan_schedule` gives ``--pretrain-share`` (default 1/4) of each seed's training time to the
pre-training and the rest to MaskTwins, keeping the measured evaluation time and a 10 % margin.

Settings on CUDA are paper-like unless given: 512 px crops, batch 8, 512 px evaluation windows, AMP; on the CPU
the validated recipe's (192 px, batch 4). ``--tiny``: a CPU smoke run on the built-in synthetic domains rendered in
memory (small network, 32 px crops, a budget of 12 s by default) that a test runs.

Writes ``OUT/results.json`` (metrics per row and seed with the per-section rows, timings, the schedule, the anchors
and the protocol differences), ``OUT/results.md`` and ``OUT/config.json`` (arguments, recipe, UDA config, git hash,
device); run folders under ``--work`` (default ``OUT/runs``).

Examples::

    python benchmarks/paper_protocol.py --data ../shared/data --minutes 7 --device cuda --out OUT   # a lent GPU
    python benchmarks/paper_protocol.py --data ../shared/data --iters 3000 --pretrain 1000 --out OUT
    python benchmarks/paper_protocol.py --data ../shared/data --minutes 1 --crop 64 --batch 2 --eval-roi 256 \\
        --eval-sections 4 --device cpu --out /tmp/pp_smoke                                          # CPU smoke
    python benchmarks/paper_protocol.py --tiny --out /tmp/pp_tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _budget import BudgetError, Schedule, WarmupTimes, plan_schedule  # noqa: E402
from _paper_data import load_data  # noqa: E402
from _paper_report import ANCHORS, METRICS, differences, write_outputs  # noqa: E402, F401  (ANCHORS: the tests)

ROWS = ("source_only_start", "masktwins_last", "masktwins_selected")
#: settings by device (a flag given wins): crop, batch, evaluation window, warm-up iterations
PAPER_CUDA = {"crop_size": 512, "batch_size": 8, "eval_roi": 512, "warmup": 40}
CPU = {"eval_roi": 384, "warmup": 6}
TINY = {"network": "small_unet", "crop_size": 32, "batch_size": 2, "eval_roi": 64, "warmup": 2, "minutes": 0.2}
#: checkpoints (and label-free scorings) of one stage: every iterations // 10, and the end
SCORES_PER_RUN = 11


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.options import add_config_arguments
    from mtbio.uda.recipe import Recipe

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="folder holding vnc3/ and lucchi_pp/ (the release layouts)")
    p.add_argument("--eval-data", type=Path, help="Lucchi++ release folder to test on (default DATA/lucchi_pp)")
    p.add_argument("--out", type=Path, required=True, help="folder of results.json, results.md, config.json")
    p.add_argument("--work", type=Path, help="folder of the run folders (default OUT/runs)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke run on the synthetic pair (tests)")
    p.add_argument("--minutes", type=float, help="wall-clock budget of the whole job; sizes the schedule")
    p.add_argument("--pretrain-share", type=float, default=0.25, help="share of training time for the pre-training")
    p.add_argument("--warmup", type=int, help="warm-up iterations per step kind (default 40 CUDA, 6 CPU, 2 tiny)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (FIRST .. FIRST+N-1)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--device", help="torch device (default cuda when available, else cpu)")
    p.add_argument("--eval-roi", type=int, help="evaluation window (default 512 CUDA, 384 CPU)")
    p.add_argument("--eval-sections", type=int, help="score only the first N test sections (smoke runs)")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation at evaluation (4 views per window)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (CPU device only)")
    add_config_arguments(p, Recipe, prefix="recipe", title="training recipe (defaults: see --help)", exclude=("seed",))
    add_config_arguments(p, UDAConfig, title="UDA step (defaults: UDAConfig)", exclude=("strategy",))
    args = p.parse_args(argv)
    fixed = hasattr(args, "recipe.iterations")
    if args.minutes is not None and fixed:
        p.error("give --minutes (a sized schedule) or --iters / --pretrain (a fixed one), not both")
    if args.tiny and args.minutes is None and not fixed:
        args.minutes = TINY["minutes"]
    if args.minutes is None and not fixed:
        p.error("give --minutes M (the schedule sized to M minutes) or --iters N [--pretrain P]")
    if args.minutes is not None and args.minutes <= 0:
        p.error(f"--minutes must be > 0, got {args.minutes}")
    if not args.tiny and args.data is None:
        p.error("--data is required (or --tiny)")
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.eval_data is None and args.data is not None:
        args.eval_data = args.data / "lucchi_pp"
    if args.work is None:
        args.work = args.out / "runs"
    return args


def settings(args: argparse.Namespace, device: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The recipe, the UDA config and the other settings (evaluation window, warm-up) of this device."""
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.options import config_from_args
    from mtbio.uda.recipe import Recipe

    if args.tiny:
        preset = TINY
    elif device.type == "cuda":
        preset = PAPER_CUDA
    else:
        preset = CPU
    fields = {f.name for f in dataclasses.fields(Recipe)}
    base = Recipe().replace(**{k: v for k, v in preset.items() if k in fields})
    recipe = config_from_args(args, Recipe, prefix="recipe", base=base)
    if recipe.spatial_dims != 2:
        raise ValueError(f"the protocol trains 2D networks: --crop takes one int or H,W, got {recipe.crop_size}")
    other = {
        "eval_roi": args.eval_roi or preset.get("eval_roi", CPU["eval_roi"]),
        "warmup": args.warmup or preset.get("warmup", CPU["warmup"]),
    }
    if other["warmup"] < 2:
        raise ValueError(f"--warmup must be >= 2 (the first iteration is not timed), got {other['warmup']}")
    return recipe, config_from_args(args, UDAConfig, strategy="masktwins"), other


def tta_value() -> Any:
    """Flip test-time augmentation (``InferenceSettings.tta = "flips"``: 4 in-plane views per window)."""
    from mtbio.inference.settings import TTA

    return TTA.FLIPS


def evaluate(net: Any, data: SimpleNamespace, ctx: SimpleNamespace) -> dict[str, Any]:
    """Per-section metrics of ``net`` on the test sections, their mean and the seconds it took."""
    from mtbio.metrics import em_metrics_per_section
    from mtbio.uda.evaluate import predict_in_memory

    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {"roi_size": (ctx.eval_roi, ctx.eval_roi), "device": ctx.device, "amp": ctx.amp}
    if ctx.tta is not None:
        kwargs["tta"] = ctx.tta
    prob = predict_in_memory(net.to(ctx.device), data.test_image, **kwargs)
    rows = em_metrics_per_section(prob, data.test_label)
    mean = {m: float(np.mean([r[m] for r in rows])) for m in METRICS}
    return {**mean, "sections": len(rows), "eval_s": time.perf_counter() - t0, "per_section": rows}


def _spec(ctx: SimpleNamespace, data: SimpleNamespace, out: Path, recipe: Any, strategy: str, **kw: Any) -> Any:
    from mtbio.uda.run import RunSpec

    return RunSpec(
        out=out,
        config=dataclasses.replace(ctx.config, strategy=strategy),
        recipe=recipe,
        source_image=data.source_image,
        source_label=data.source_label,
        target_image=data.target_image,
        source_voxel_size=data.source_voxel_size,
        target_voxel_size=data.target_voxel_size,
        source_description=data.names[0],
        target_description=data.names[1],
        device=ctx.device,
        logger="mtbio.bench",
        progress=False,
        record={"benchmark": "paper_protocol"},
        **kw,
    )


def warm_up(ctx: SimpleNamespace, data: SimpleNamespace, recipe: Any) -> tuple[WarmupTimes, dict[str, Any]]:
    """Measure a source-only and a MaskTwins iteration (steady state), the run overhead, one evaluation and the
    label-free scoring, with short ``run_training`` runs in ``WORK/warmup`` (deleted afterwards)."""
    from mtbio.uda.run import run_training

    n = int(ctx.warmup)
    first = max(1, n // 4)  # iterations run before timing (CUDA context, allocator, kernel selection)
    probe = recipe.replace(iterations=n, pretrain_iterations=0, checkpoint_interval=n, log_interval=n)
    root = ctx.work / "warmup"
    shutil.rmtree(root, ignore_errors=True)
    measured: dict[str, Any] = {"iterations": n, "untimed_iterations": first}
    per_iter, overhead, last = {}, [], None
    checkpoint_s = _checkpoint_seconds(recipe, root / "checkpoint_probe.pt")
    for strategy in ("source_only", "masktwins"):
        spec = _spec(ctx, data, root / strategy, probe, strategy, stop_after=first)
        start = run_training(spec)
        spec.stop_after = None
        t0 = time.perf_counter()
        last = run_training(spec)
        wall = time.perf_counter() - t0
        # the resumed fit() also loads the checkpoint and writes the final one
        per_iter[strategy] = max(1e-4, (last.seconds - 2 * checkpoint_s) / (n - first))
        # a stage's cost beyond its iterations: outside fit() (network, samplers, the weights file), and the
        # slower first iterations of a new trainer (what the untimed part took beyond the steady state)
        overhead.append(max(0.0, wall - last.seconds) + max(0.0, start.seconds - first * per_iter[strategy]))
    net = last.teacher()
    probe_sections = min(2, data.test_image.shape[0])
    small = SimpleNamespace(**{**vars(data), "test_image": data.test_image[:probe_sections]})
    small.test_label = data.test_label[:probe_sections]
    eval_s = evaluate(net, small, ctx)["eval_s"] * data.test_image.shape[0] / probe_sections
    score_s = _score_seconds(net, data, recipe, ctx) * SCORES_PER_RUN if ctx.selection else 0.0
    shutil.rmtree(root, ignore_errors=True)
    times = WarmupTimes(
        pretrain_s_per_iter=per_iter["source_only"],
        adapt_s_per_iter=per_iter["masktwins"],
        eval_s_per_run=eval_s,
        evals_per_seed=3 if ctx.selection else 2,
        score_s_per_run=score_s,
        overhead_s_per_stage=max(overhead),
        checkpoint_s=checkpoint_s,
        checkpoints_per_stage=SCORES_PER_RUN,
    )
    return times, measured


def _checkpoint_seconds(recipe: Any, path: Path) -> float:
    """Seconds to write a file the size of a resumable checkpoint of the recipe's network (student, teacher and
    AdamW's two moments: four copies of the weights) where the runs write theirs."""
    import torch

    from mtbio.networks import get_network

    state = get_network(recipe.network, recipe.spatial_dims, **recipe.network_kwargs).state_dict()
    blob = {name: {k: v.clone() for k, v in state.items()} for name in ("student", "teacher", "exp_avg", "exp_avg_sq")}
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    torch.save(blob, path)
    seconds = time.perf_counter() - t0
    path.unlink(missing_ok=True)
    return seconds


def _score_seconds(net: Any, data: SimpleNamespace, recipe: Any, ctx: SimpleNamespace) -> float:
    """Seconds of one label-free scoring with the recipe's score settings (what run_training does per checkpoint)."""
    from mtbio.uda.guard import score_crop_size
    from mtbio.uda.selection import score_network

    n = getattr(recipe, "score_crops", None) or 16
    # the guard's crop: score_crop_size in-plane, clipped to the target as run_training clips it
    crop = score_crop_size(recipe.crop, int(recipe.score_crop_size), data.target_image.shape)
    t0 = time.perf_counter()
    score_network(net, data.target_image, crop_size=crop, n_crops=int(n), device=ctx.device)
    return time.perf_counter() - t0


def selection_available() -> bool:
    """Whether ``run_training`` selects a checkpoint by the label-free score (``RunResult.selected_weights``)."""
    from mtbio.uda.run import RunResult

    return "selected_weights" in {f.name for f in dataclasses.fields(RunResult)}


def _guard_summary(run_dir: Path) -> dict[str, Any]:
    """The label-free score of the selected row and the collapse verdict (``mtbio.uda.guard``), when present."""
    try:
        from mtbio.uda.guard import read_scores, run_collapsed, select_row
    except ImportError:
        return {}
    rows = read_scores(run_dir)
    return {"selected_row": _plain(select_row(rows)), "run_collapsed": _plain(run_collapsed(rows)), "scored": len(rows)}


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.to_dict() if hasattr(o, "to_dict") else str(o)))


def train_and_evaluate(ctx: SimpleNamespace, data: SimpleNamespace, recipe: Any, seed: int) -> tuple[dict, dict]:
    """One seed: the run, then the three evaluations. Returns ``({row: metrics}, run facts)``."""
    from mtbio.networks.weights import read_weights
    from mtbio.uda.run import run_training

    work = ctx.work
    spec = _spec(
        ctx, data, work / f"masktwins_seed{seed}", recipe.replace(seed=seed), "masktwins",
        weights=work / "checkpoints" / f"masktwins_seed{seed}.pt",
        pretrain_out=work / "pretrain" / f"seed{seed}", pretrain_weights=work / "pretrain" / f"seed{seed}.pt",
    )  # fmt: skip
    t0 = time.perf_counter()
    result = run_training(spec)
    train_s = time.perf_counter() - t0
    rows: dict[str, dict[str, Any]] = {}
    if recipe.pretrain_iterations > 0:
        rows["source_only_start"] = evaluate(read_weights(spec.pretrain_weights_path).build_network(), data, ctx)
    rows["masktwins_last"] = evaluate(result.teacher(), data, ctx)
    selected = getattr(result, "selected_weights", None)
    facts: dict[str, Any] = {"seed": seed, "train_s": train_s, "adapt_sec_per_iter": result.sec_per_iter}
    facts["pretrain"] = result.pretrain
    if selected is None:  # no selection in this mtbio, or no checkpoint it could select (all collapsed / unscored)
        why = "none selectable: the last weights" if ctx.selection else "unavailable (final weights)"
        rows["masktwins_selected"] = {**rows["masktwins_last"], "selection": why}
    else:
        record = read_weights(selected)
        facts["selected_iteration"] = record.iteration
        if record.iteration == result.iteration:
            rows["masktwins_selected"] = {**rows["masktwins_last"], "selection": "label-free: the last checkpoint"}
        else:
            rows["masktwins_selected"] = {
                **evaluate(record.build_network(selected), data, ctx),
                "selection": "label-free",
            }
        rows["masktwins_selected"]["iteration"] = record.iteration
    facts.update(_guard_summary(spec.out))
    return rows, facts


def _cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux) and its core count."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model} ({os.cpu_count()} cores)"


def run(args: argparse.Namespace, t_start: float) -> int:
    import torch

    from mtbio.provenance import git_hash

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.tiny and device.type != "cpu":
        raise ValueError("--tiny runs on the CPU (--device cpu)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device here (--device cpu, or --tiny for a smoke run)")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    recipe, config, other = settings(args, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    want = args.tta
    ctx = SimpleNamespace(
        device=device, amp=device.type == "cuda", work=args.work, config=config, tiny=args.tiny, seeds=args.seeds,
        eval_roi=other["eval_roi"], warmup=other["warmup"], tta=tta_value() if want else None,
        selection=selection_available(), device_name=name,
    )  # fmt: skip
    data = load_data(args)
    budget_s = None if args.minutes is None else args.minutes * 60.0
    warm, measured = None, None
    if budget_s is not None:
        if time.perf_counter() - t_start >= budget_s:
            raise BudgetError(
                f"a budget of {budget_s:.0f} s is spent before the warm-up ({time.perf_counter() - t_start:.0f} s on "
                "imports and data); give more --minutes"
            )
        warm, measured = warm_up(ctx, data, recipe)
        try:
            schedule = plan_schedule(
                budget_s, time.perf_counter() - t_start, warm, seeds=args.seeds, pretrain_share=args.pretrain_share
            )
        except BudgetError as err:  # keep what the warm-up measured: it says what a budget would need
            from mtbio.provenance import write_json_atomic

            refused = {"benchmark": "paper_protocol", "complete": False, "error": str(err), "device": name}
            refused.update(warmup={**warm.to_dict(), **measured}, budget_s=budget_s, command=args.argv)
            write_json_atomic(args.out / "results.json", refused)
            raise
        print(f"[plan] {json.dumps(schedule.to_dict())} from {json.dumps(warm.to_dict())}", flush=True)
    else:
        schedule = Schedule(recipe.pretrain_iterations, recipe.iterations)
    recipe = recipe.replace(pretrain_iterations=schedule.pretrain_iterations, iterations=schedule.iterations)
    rows: dict[str, list[dict[str, Any]]] = {r: [] for r in ROWS}
    runs: list[dict[str, Any]] = []
    config_out = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "argv"},
        "recipe": recipe.to_dict(),
        "uda": config.to_dict(),
        "eval_roi": ctx.eval_roi,
        "data": dict(zip(("source", "target_train", "target_test"), data.names)),
        "data_pack": data.pack,
        "git": git_hash(),
        "device": {"name": name, "type": device.type, "torch": torch.__version__, "amp": ctx.amp},
        "python": platform.python_version(),
    }

    def report(complete: bool) -> None:  # written after the plan and after every seed: a killed job leaves them
        total = time.perf_counter() - t_start
        result = {
            "benchmark": "paper_protocol",
            "protocol": "tiny synthetic smoke run" if args.tiny else "VNC III -> Lucchi++ subset 1",
            "complete": complete,
            "command": " ".join(["paper_protocol.py", *args.argv]),
            "device": config_out["device"],
            "selection": "label-free (RunResult.selected_weights)" if ctx.selection else "selection unavailable",
            "tta": None if ctx.tta is None else str(ctx.tta),
            "sections": data.sections,
            "schedule": schedule.to_dict(),
            "warmup": None if warm is None else {**warm.to_dict(), **measured},
            "timing": {
                "total_s": total,
                "budget_s": budget_s,
                "within_budget": None if budget_s is None else total <= budget_s,
            },
            "rows": {k: v for k, v in rows.items() if v},
            "runs": runs,
            "anchors": ANCHORS,
            "differences": differences(ctx, data, recipe, schedule),
        }
        write_outputs(args.out, result, config_out)

    report(False)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        seed_rows, facts = train_and_evaluate(ctx, data, recipe, seed)
        for key, value in seed_rows.items():
            rows[key].append({"seed": seed, **value})
        runs.append(facts)
        print(f"[done] seed {seed}: " + json.dumps({k: {m: v[m] for m in METRICS} for k, v in seed_rows.items()}))
        report(seed == args.first_seed + args.seeds - 1)
    print((args.out / "results.md").read_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(args, t_start)
    except BudgetError as err:
        print(f"paper_protocol: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
