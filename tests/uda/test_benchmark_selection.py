"""benchmarks/model_selection.py: the pool builder on run_training (rows = the collapse guard's scores.jsonl rows,
resume per run and per checkpoint, chunking, pool versions) and the analysis of a pool (rho, selected vs last vs
best, collapse flags)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch

from tests._scripts import load_benchmark

sel = load_benchmark("model_selection")


def _row(run, kind, it, iou, score, collapsed=False, direction="vnc3_to_lucchi"):
    return {"run": run, "kind": kind, "direction": direction, "iteration": it, "IoU": iou, "score": score,
            "collapsed": collapsed}  # fmt: skip


def test_analysis_of_a_pool():
    pool = [
        _row("a", "healthy", 200, 0.50, 0.60),
        _row("a", "healthy", 400, 0.70, 0.80),
        _row("a", "healthy", 600, 0.60, 0.70),
        _row("b", "healthy", 200, 0.40, 0.50),
        _row("b", "healthy", 400, 0.55, 0.90, collapsed=True),  # a collapsed checkpoint is never selected
        _row("c", "forced_collapse", 200, 0.01, 0.20, collapsed=True),
        _row("d", "forced_collapse", 200, 0.02, 0.30, collapsed=False),
    ]
    r = sel.analyse(pool)["vnc3_to_lucchi"]
    assert r["held_out"] and r["checkpoints"] == 7
    per_run = {p["run"]: p for p in r["per_run"]}
    assert per_run["a"]["selected_iteration"] == 400 and per_run["a"]["selected_IoU"] == 0.70
    assert per_run["b"]["selected_iteration"] == 200
    assert r["selected_IoU"] == pytest.approx((0.70 + 0.40) / 2)
    assert r["last_IoU"] == pytest.approx((0.60 + 0.55) / 2) and r["best_IoU"] == pytest.approx((0.70 + 0.55) / 2)
    assert (r["forced_collapses"], r["forced_collapses_flagged"]) == (2, 1)
    assert (r["healthy_runs"], r["healthy_runs_flagged"]) == (2, 1)
    assert (r["healthy_checkpoints"], r["healthy_checkpoints_flagged"]) == (5, 1)
    assert r["spearman_healthy"] == pytest.approx(0.7)
    assert "vnc3_to_lucchi (held out)" in sel._markdown(sel.analyse(pool))
    assert r["builder"] == 1  # rows without the key: the builder before the guard
    assert r["spearman_all"] == pytest.approx(0.892857, abs=1e-5)
    assert r["acceptance"] == {  # selected 55.0 < last 57.5, 7.5 points below the best; 1 of 2 collapses flagged
        "rho_at_least_0.6": True,
        "selected_at_least_last": False,
        "selected_within_2_points_of_best": False,
        "every_forced_collapse_flagged": False,
        "healthy_runs_flagged_below_5_pct": False,
    }


def test_runs_are_flagged_by_their_last_checkpoint_and_select_only_healthy_ones():
    pool = [
        _row("dip", "healthy", 200, 0.05, 0.10, collapsed=True),  # an early dip that recovers: not a collapsed run
        _row("dip", "healthy", 400, 0.20, 0.60),
        _row("dip", "healthy", 600, 0.25, 0.60),  # ties with 400: the later checkpoint
        _row("dead", "healthy", 200, 0.03, 0.50, collapsed=True),  # no healthy checkpoint: nothing selected
        _row("dead", "healthy", 400, 0.02, 0.40, collapsed=True),
    ]
    r = sel.analyse(pool)["vnc3_to_lucchi"]
    per_run = {p["run"]: p for p in r["per_run"]}
    assert (per_run["dip"]["selected_iteration"], per_run["dip"]["collapsed"]) == (600, False)
    assert per_run["dead"]["selected_iteration"] is None and per_run["dead"]["selected_IoU"] == 0.02
    assert per_run["dead"]["collapsed"] and per_run["dead"]["collapsed_checkpoints"] == 2
    assert (r["healthy_runs"], r["healthy_runs_flagged"], r["healthy_checkpoints_flagged"]) == (2, 1, 3)


def test_a_pool_mixing_builders_is_not_analysed():
    old = _row("a", "healthy", 200, 0.5, 0.6)
    new = {**_row("a", "healthy", 400, 0.6, 0.7), "builder": sel.BUILDER}
    assert sel.analyse([new])["vnc3_to_lucchi"]["builder"] == sel.BUILDER
    with pytest.raises(ValueError, match=r"mixes rows of builders \[1, 2\]"):
        sel.analyse([old, new])


def test_runs_list_every_strategy_seed_and_collapse():
    args = sel.parse_args(["--data", "x", "--out", "y", "--seeds", "2", "--collapses", "1", "--strategies", "mic"])
    runs = sel._runs(args)
    assert len(runs) == 2 * (2 + 1) and {r["kind"] for r in runs} == {"healthy", "forced_collapse"}
    assert sel._name(runs[-1]) == "vnc3_to_lucchi_collapse_seed0"
    args = sel.parse_args(["--out", "y", "--directions", "synthetic", "--synthetic-shape", "4,48,48"])
    assert args.synthetic_shape == (4, 48, 48) and {r["direction"] for r in sel._runs(args)} == {"synthetic"}
    for argv in (["--out", "y"], ["--out", "y", "--directions", "mars"], ["--out", "y", "--every", "0"]):
        with pytest.raises(SystemExit):  # real directions need --data; unknown direction; no checkpoints
            sel.parse_args(argv)


def test_run_spec_goes_through_the_recipe_and_shares_the_seed_pretraining(tmp_path):
    """--every is the checkpoint interval, every checkpoint is kept, a seed's runs share one pre-training, a forced
    collapse is small_unet from random weights with the logit consistency."""
    args = sel.parse_args(["--data", "d", "--out", str(tmp_path), "--every", "50", "--collapse-lambda-cm", "7"])
    pair = types.SimpleNamespace(
        source_image=None, source_label=None, target_image=1, target_label=1, voxel_size=None, description="x"
    )
    data = sel._Direction(pair, None, None, False)
    healthy = {"direction": "vnc3_to_lucchi", "strategy": "mic", "seed": 1, "kind": "healthy"}
    pair.source_image = pair.source_label = 1
    spec = sel.run_spec(args, healthy, data)
    other = sel.run_spec(args, {**healthy, "strategy": "masktwins"}, data)
    assert spec.recipe.checkpoint_interval == 50 and spec.n_saved is None and spec.recipe.seed == 1
    assert (
        spec.pretrain_weights_path == other.pretrain_weights_path == tmp_path / "pretrain" / "vnc3_to_lucchi_seed1.pt"
    )
    collapse = sel.run_spec(args, {**healthy, "strategy": "masktwins", "kind": "forced_collapse"}, data)
    assert (collapse.recipe.network, collapse.recipe.pretrain_iterations) == ("small_unet", 0)
    assert (collapse.config.consistency.value, collapse.config.lambda_cm) == ("logits", 7.0)


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_next_stop_ends_each_call_at_the_next_checkpoint(tmp_path):
    from mtbio.uda.recipe import Recipe

    recipe = Recipe(iterations=600, pretrain_iterations=400, checkpoint_interval=200)
    spec = types.SimpleNamespace(
        recipe=recipe, out=tmp_path / "run", pretrain_dir=tmp_path / "pre", pretrain_weights_path=tmp_path / "pre.pt"
    )
    assert sel.next_stop(spec) == 200  # the pre-training's first checkpoint
    _touch(spec.pretrain_dir, "checkpoint_iteration=200.pt")
    assert sel.next_stop(spec) == 200  # its last chunk: the pre-training resumes past 200 and the strategy stops there
    _touch(tmp_path, "pre.pt")
    assert sel.next_stop(spec) == 200
    _touch(spec.out, "checkpoint_iteration=200.pt")
    assert sel.next_stop(spec) == 400
    _touch(spec.out, "checkpoint_iteration=413.pt")  # a signal's checkpoint between two intervals
    assert sel.next_stop(spec) is None  # the last chunk: to the end (600)
    spec.recipe = Recipe(iterations=600, pretrain_iterations=0, checkpoint_interval=200)
    assert sel.next_stop(spec) is None


def test_tta_and_score_settings_are_one_per_pool(monkeypatch):
    """--tta reaches evaluate_network; a pool built with other settings, or by another builder, is refused."""
    import mtbio.uda.evaluate

    args = sel.parse_args(["--data", "d", "--out", "o", "--tta", "flips"])
    assert args.tta == "flips" and sel.parse_args(["--data", "d", "--out", "o"]).tta == "none"
    seen = {}
    monkeypatch.setattr(mtbio.uda.evaluate, "evaluate_network", lambda *a, **kw: seen.update(kw) or {"IoU": 0.5})
    row = sel._measure(args, None, types.SimpleNamespace(test_image=None, test_label=None))
    assert seen["tta"] == "flips" and row["IoU"] == 0.5 and row["eval_sec"] >= 0
    settings = sel.pool_settings(args)
    assert settings["builder"] == sel.BUILDER and settings["tta"] == "flips"
    sel.check_pool([dict(settings)], settings, "pool.jsonl")
    sel.check_pool([], settings, "pool.jsonl")
    with pytest.raises(ValueError, match="evaluated with --tta none, this run with --tta flips"):
        sel.check_pool_tta([{"IoU": 0.4}], "flips", "pool.jsonl")  # rows before the flag: no TTA
    with pytest.raises(ValueError, match="rows come from pool builder 1, this one writes builder 2"):
        sel.check_pool([{"IoU": 0.4, "tta": "flips", "crops": 16}], settings, "pool.jsonl")  # the old builder's rows
    with pytest.raises(ValueError, match="built with --score-crops 8, this run with --score-crops 16"):
        sel.check_pool([{**settings, "crops": 8}], settings, "pool.jsonl")
    with pytest.raises(SystemExit):
        sel.parse_args(["--data", "d", "--out", "o", "--tta", "rot"])


def test_the_partial_pool_of_the_old_builder_is_analysed_alone():
    """benchmarks/results/model_selection_pool_partial.jsonl: builder 1 (no ``builder`` key), refused by this
    builder, analysed on its own."""
    path = Path(sel.__file__).parent / "results" / "model_selection_pool_partial.jsonl"
    pool = sel._read_pool(path)
    assert pool and all("builder" not in r for r in pool)
    assert sel.analyse(pool)["lucchi_to_vnc3"]["builder"] == 1
    with pytest.raises(ValueError, match="pool builder 1"):
        sel.check_pool(pool, sel.pool_settings(sel.parse_args(["--data", "d", "--out", "o"])), path)


# ------------------------------------------------------------------------- the builder end to end (synthetic)


def _argv(out: Path) -> list[str]:
    return [
        "--out", str(out), "--directions", "synthetic", "--synthetic-shape", "3,32,32", "--strategies", "masktwins",
        "--seeds", "1", "--collapses", "0", "--network", "small_unet", "--crop", "16", "--batch", "2",
        "--iters", "4", "--pretrain", "2", "--every", "2", "--score-crops", "1", "--score-crop", "16",
        "--eval-roi", "32", "--threads", "2",
    ]  # fmt: skip


def test_the_pool_rows_are_the_guard_rows_and_resume_per_checkpoint(tmp_path, monkeypatch):
    """A run through run_training in chunks of --every; a killed invocation (here: out of time after the first
    chunk, before its checkpoint was evaluated) goes on with the scored checkpoint; a finished pool trains nothing."""
    import mtbio.uda.run
    from mtbio.uda.guard import ROW_KEYS, read_scores

    threads = torch.get_num_threads()
    out = tmp_path / "pool"
    calls = []
    real = mtbio.uda.run.run_training
    monkeypatch.setattr(mtbio.uda.run, "run_training", lambda spec: calls.append(spec.stop_after) or real(spec))
    checks = iter([False, True])  # before the first chunk: in time; before evaluating its checkpoint: out of time
    monkeypatch.setattr(sel, "_past_deadline", lambda args: next(checks, False))
    try:
        assert sel.main(_argv(out)) == 0
        run_dir = out / "runs" / "synthetic_masktwins_seed0"
        assert calls == [2]  # the pre-training (2 iterations) and the strategy's first chunk in one call
        assert [r["iteration"] for r in read_scores(run_dir)] == [2] and sel._read_pool(out / "pool.jsonl") == []
        assert (run_dir / "checkpoint_iteration=2.pt").is_file()
        assert sel.main(_argv(out)) == 0  # the scored checkpoint is evaluated, then the run goes on
        assert calls == [2, None]
        pool = sel._read_pool(out / "pool.jsonl")
        guard = read_scores(run_dir)
        assert [r["iteration"] for r in pool] == [2, 4] == [r["iteration"] for r in guard]
        assert [{k: r[k] for k in ROW_KEYS} for r in pool] == guard  # the same numbers adapt selects with
        assert all(r["stage"] == "masktwins" and r["builder"] == sel.BUILDER and 0 <= r["IoU"] <= 1 for r in pool)
        assert sorted(f.name for f in run_dir.glob("checkpoint_*.pt")) == ["checkpoint_final_iteration=4.pt"]
        assert sorted(f.name for f in (out / "pretrain" / "synthetic_seed0").glob("checkpoint_*.pt")) == [
            "checkpoint_final_iteration=2.pt"
        ]
        results = json.loads((out / "results.json").read_text())["synthetic"]
        assert results["checkpoints"] == 2 and results["healthy_runs"] == 1 and not results["held_out"]
        assert sel.main(_argv(out)) == 0  # done: nothing trained, nothing measured again
        assert calls == [2, None] and len(sel._read_pool(out / "pool.jsonl")) == 2
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_a_real_direction_smoke(shared_data, vnc3_dir, lucchi_pp_dir, tmp_path):
    """Lucchi++ -> VNC III for a few iterations (skips without ../shared/data): rows are the guard's rows."""
    from mtbio.uda.guard import ROW_KEYS, read_scores

    threads = torch.get_num_threads()
    out = tmp_path / "pool"
    argv = [
        "--data", str(shared_data), "--out", str(out), "--directions", "lucchi_to_vnc3", "--strategies", "source_only",
        "--seeds", "1", "--collapses", "1", "--network", "small_unet", "--crop", "64", "--batch", "2",
        "--iters", "2", "--pretrain", "2", "--every", "2", "--score-crops", "1", "--score-crop", "64",
        "--eval-sections", "1", "--eval-roi", "256", "--threads", "2",
    ]  # fmt: skip
    try:
        assert sel.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    pool = sel._read_pool(out / "pool.jsonl")
    assert sorted(r["run"] for r in pool) == ["lucchi_to_vnc3_collapse_seed0", "lucchi_to_vnc3_source_only_seed0"]
    for row in pool:
        assert [{k: row[k] for k in ROW_KEYS}] == read_scores(out / "runs" / row["run"])
        assert row["crop_size"] == [64, 64] and row["eval_sections"] == 1
    results = json.loads((out / "results.json").read_text())["lucchi_to_vnc3"]
    assert (results["forced_collapses"], results["healthy_runs"]) == (1, 1)


def test_within_run_and_across_run_rank_agreement_and_per_strategy_table():
    def row(run, strategy, it, iou, score):
        return {**_row(run, "healthy", it, iou, score), "strategy": strategy}

    pool = [
        row("a", "masktwins", 200, 0.50, 0.60), row("a", "masktwins", 400, 0.60, 0.70),
        row("a", "masktwins", 600, 0.70, 0.80),  # the score orders a's checkpoints as IoU does: rho 1
        row("b", "source_only", 200, 0.40, 0.90), row("b", "source_only", 400, 0.45, 0.80),
        row("b", "source_only", 600, 0.50, 0.70),  # reversed: rho -1
        row("c", "masktwins", 200, 0.30, 0.40), row("c", "masktwins", 400, 0.35, 0.50),
        row("c", "masktwins", 600, 0.40, 0.30),
    ]  # fmt: skip
    r = sel.analyse(pool)["vnc3_to_lucchi"]
    assert r["spearman_within_runs"] == pytest.approx((1.0 - 1.0 + (-0.5)) / 3)
    # last checkpoints: a (0.70, 0.80), b (0.50, 0.70), c (0.40, 0.30): same order in score and IoU
    assert r["spearman_last_across_runs"] == pytest.approx(1.0)
    mt = r["per_strategy"]["masktwins"]
    assert mt["runs"] == 2 and mt["last_IoU"] == pytest.approx(0.55) and mt["last_score"] == pytest.approx(0.55)
    assert mt["selected_IoU"] == pytest.approx((0.70 + 0.35) / 2) and mt["best_IoU"] == pytest.approx(0.55)
    assert r["per_strategy"]["source_only"]["selected_IoU"] == pytest.approx(0.40)
    md = sel._markdown(sel.analyse(pool))
    assert "| masktwins | 2 | 0.550 | 55.0 | 52.5 | 55.0 |" in md and "rho within runs" in md
