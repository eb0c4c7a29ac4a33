"""benchmarks/model_selection.py: the analysis of a checkpoint pool (rho, selected vs last vs best, collapse flags)."""

from __future__ import annotations

import pytest

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


def test_runs_list_every_strategy_seed_and_collapse():
    args = sel.parse_args(["--data", "x", "--out", "y", "--seeds", "2", "--collapses", "1", "--strategies", "mic"])
    runs = sel._runs(args)
    assert len(runs) == 2 * (2 + 1) and {r["kind"] for r in runs} == {"healthy", "forced_collapse"}
    assert sel._name(runs[-1]) == "vnc3_to_lucchi_collapse_seed0"


def test_tta_of_the_labelled_evaluation_is_one_per_pool(monkeypatch):
    """--tta reaches evaluate_network and each row; a pool evaluated with another setting is refused."""
    import mtbio.uda.evaluate
    import mtbio.uda.selection

    args = sel.parse_args(["--data", "d", "--out", "o", "--tta", "flips"])
    assert args.tta == "flips" and sel.parse_args(["--data", "d", "--out", "o"]).tta == "none"
    seen = {}
    monkeypatch.setattr(mtbio.uda.evaluate, "evaluate_network", lambda *a, **kw: seen.update(kw) or {"IoU": 0.5})
    monkeypatch.setattr(mtbio.uda.selection, "score_network", lambda *a, **kw: type("S", (), {"to_dict": dict})())
    row = sel._measure(args, None, type("P", (), {"target_image": None})(), None, None, 0.1)
    assert seen["tta"] == "flips" and row["tta"] == "flips"
    sel.check_pool_tta([{"tta": "flips"}], "flips", "pool.jsonl")
    sel.check_pool_tta([], "flips", "pool.jsonl")
    with pytest.raises(ValueError, match="evaluated with --tta none, this run with --tta flips"):
        sel.check_pool_tta([{"IoU": 0.4}], "flips", "pool.jsonl")  # rows before the flag: no TTA
    with pytest.raises(SystemExit):
        sel.parse_args(["--data", "d", "--out", "o", "--tta", "rot"])
