"""benchmarks/paper_protocol.py: the budget arithmetic, and the tiny CPU run end to end (outputs, sizing)."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from tests._scripts import load_benchmark

pp = load_benchmark("paper_protocol")
budget = importlib.import_module("_budget")  # as paper_protocol imports it (benchmarks/ is on the path now)


def _times(**kw):
    base = dict(pretrain_s_per_iter=0.1, adapt_s_per_iter=0.4, eval_s_per_run=5.0, evals_per_seed=2)
    return budget.WarmupTimes(**{**base, **kw})


def test_plan_splits_the_remaining_time_and_ends_within_the_budget():
    times = _times(score_s_per_run=3.0, overhead_s_per_stage=1.0, checkpoint_s=0.5, checkpoints_per_stage=11)
    plan = budget.plan_schedule(420.0, 60.0, times, seeds=2, pretrain_share=0.25, safety=0.9)
    fixed = 5.0 * 2 + 3.0 + 2 * (1.0 + 11 * 0.5)  # evaluations, scoring, two stages' overhead and checkpoints
    train = 0.9 * (420.0 - 60.0 - 2 * fixed) / 2
    assert plan.sized and plan.budget_s == 420.0
    assert plan.pretrain_iterations == int(0.25 * train / 0.1)
    assert plan.iterations == int(0.75 * train / 0.4)
    assert plan.train_s_per_seed == pytest.approx(plan.pretrain_iterations * 0.1 + plan.iterations * 0.4)
    assert plan.expected_end_s == pytest.approx(60.0 + 2 * (plan.train_s_per_seed + fixed))
    assert plan.expected_end_s <= 420.0
    no_pretrain = budget.plan_schedule(420.0, 60.0, times, pretrain_share=0.0)
    assert no_pretrain.pretrain_iterations == 0 and no_pretrain.iterations > plan.iterations


def test_a_budget_without_room_for_one_iteration_is_refused(tmp_path, capsys):
    with pytest.raises(budget.BudgetError, match="leaves no MaskTwins iteration"):
        budget.plan_schedule(30.0, 20.0, _times())  # 10 s left, 10 s of evaluation
    with pytest.raises(budget.BudgetError, match="spent before the warm-up"):
        pp.run(pp.parse_args(["--tiny", "--minutes", "1e-6", "--out", str(tmp_path)]), 0.0)
    assert pp.main(["--tiny", "--minutes", "1e-6", "--out", str(tmp_path)]) == 2  # one line, exit status 2
    assert "give more --minutes" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "warmup").exists()  # nothing trained
    with pytest.raises(ValueError, match="pretrain_share"):
        budget.plan_schedule(100.0, 0.0, _times(), pretrain_share=1.0)
    with pytest.raises(ValueError, match="seeds"):
        budget.plan_schedule(100.0, 0.0, _times(), seeds=0)


def test_schedule_flags_are_one_or_the_other(tmp_path):
    with pytest.raises(SystemExit):
        pp.parse_args(["--tiny", "--minutes", "1", "--iters", "5", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        pp.parse_args(["--data", str(tmp_path), "--out", str(tmp_path)])  # neither --minutes nor --iters
    with pytest.raises(SystemExit):
        pp.parse_args(["--minutes", "1", "--out", str(tmp_path)])  # no --data without --tiny
    args = pp.parse_args(["--data", str(tmp_path), "--iters", "7", "--pretrain", "3", "--out", str(tmp_path / "o")])
    recipe, config, other = pp.settings(args, torch.device("cpu"))
    assert (recipe.iterations, recipe.pretrain_iterations, config.strategy.value) == (7, 3, "masktwins")
    assert args.work == tmp_path / "o" / "runs" and other["eval_roi"] == pp.CPU["eval_roi"]
    cuda = pp.settings(pp.parse_args(["--data", "d", "--minutes", "1", "--out", "o"]), torch.device("cuda"))[0]
    assert (cuda.crop, cuda.batch_size) == ((512, 512), 8)  # paper-like on CUDA unless given
    given = pp.settings(
        pp.parse_args(["--data", "d", "--minutes", "1", "--crop", "256", "--out", "o"]), torch.device("cuda")
    )
    assert given[0].crop == (256, 256)


def _main(argv):
    threads = torch.get_num_threads()
    try:
        return pp.main(argv)
    finally:
        torch.set_num_threads(threads)


def test_tiny_fixed_run_writes_every_output(tmp_path):
    assert _main(["--tiny", "--iters", "3", "--pretrain", "2", "--tta", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    config = json.loads((tmp_path / "config.json").read_text())
    assert result["tta"] == "flips"
    assert result["complete"] and result["device"]["type"] == "cpu" and result["device"]["amp"] is False
    assert result["schedule"] == {**result["schedule"], "pretrain_iterations": 2, "iterations": 3, "sized": False}
    assert result["warmup"] is None and result["timing"]["within_budget"] is None
    weights = torch.load(tmp_path / "runs" / "checkpoints" / "masktwins_seed0.pt", weights_only=True)
    assert weights["iteration"] == 3 and weights["strategy"] == "masktwins"
    assert (config["recipe"]["iterations"], config["recipe"]["pretrain_iterations"]) == (3, 2)
    assert config["recipe"]["network"] == "small_unet" and config["uda"]["strategy"] == "masktwins"
    assert set(result["rows"]) == set(pp.ROWS)
    sections = result["sections"]["test"]
    for rows in result["rows"].values():
        row = rows[0]
        assert row["seed"] == 0 and set(pp.METRICS) <= set(row) and row["sections"] == sections
        assert len(row["per_section"]) == sections
        assert row["IoU"] == pytest.approx(sum(s["IoU"] for s in row["per_section"]) / sections)
    selected = result["rows"]["masktwins_selected"][0]["selection"]
    expected = ("label-free", "none selectable") if pp.selection_available() else ("unavailable",)
    assert selected.startswith(expected)
    assert set(result["anchors"]) == set(pp.ANCHORS) and result["differences"]
    md = (tmp_path / "results.md").read_text()
    assert "| masktwins_last |" in md and "68.65" in md and "75.0" in md


@pytest.mark.slow
def test_tiny_sized_run_trains_the_schedule_planned_within_its_budget(tmp_path):
    import mtbio.uda.run  # noqa: F401  (the imports a test process shares are not the job's to pay for)
    from mtbio.networks import get_network

    get_network("small_unet", 2)  # MONAI's network modules
    minutes = pp.TINY["minutes"]
    rc = _main(["--tiny", "--out", str(tmp_path)])  # the default tiny budget
    if rc == 2:  # a loaded machine: the warm-up left no time for one iteration, and the job refused to start
        minutes, tmp_path = 0.6, tmp_path / "longer"  # the same checks on a budget such a machine can meet
        rc = _main(["--tiny", "--minutes", str(minutes), "--out", str(tmp_path)])
    assert rc == 0
    result = json.loads((tmp_path / "results.json").read_text())
    config = json.loads((tmp_path / "config.json").read_text())
    schedule, warm = result["schedule"], result["warmup"]
    assert result["complete"] and schedule["sized"] and schedule["budget_s"] == pytest.approx(minutes * 60)
    assert schedule["iterations"] >= 1 and schedule["expected_end_s"] <= schedule["budget_s"]
    spent = (
        schedule["pretrain_iterations"] * warm["pretrain_s_per_iter"]
        + schedule["iterations"] * warm["adapt_s_per_iter"]
    )
    assert schedule["train_s_per_seed"] == pytest.approx(spent)
    assert isinstance(result["timing"]["within_budget"], bool) and result["timing"]["total_s"] > 0
    # the sized schedule is what run_training trained
    weights = torch.load(tmp_path / "runs" / "checkpoints" / "masktwins_seed0.pt", weights_only=True)
    assert weights["iteration"] == schedule["iterations"]
    assert config["recipe"]["iterations"] == schedule["iterations"]
    assert config["recipe"]["pretrain_iterations"] == schedule["pretrain_iterations"]
    assert not (tmp_path / "runs" / "warmup").exists()  # the warm-up's runs are removed


def test_the_selected_checkpoint_is_evaluated_as_its_own_row(tmp_path, monkeypatch):
    """With a selection (``RunResult.selected_weights``, here the pre-training's record: another iteration), the
    selected row is that record's evaluation: it equals the source-only start's."""
    import mtbio.uda.run as run_module

    real = run_module.run_training

    def selecting(spec):
        result = real(spec)
        result.selected_weights = spec.pretrain_weights_path
        return result

    monkeypatch.setattr(run_module, "run_training", selecting)
    assert _main(["--tiny", "--iters", "3", "--pretrain", "2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert not result["schedule"]["sized"] and result["warmup"] is None
    start, last, selected = (result["rows"][r][0] for r in pp.ROWS)
    assert selected["selection"] == "label-free" and selected["iteration"] == 2
    assert result["runs"][0]["selected_iteration"] == 2
    for m in pp.METRICS:
        assert selected[m] == pytest.approx(start[m], abs=1e-9)
    assert "selection" not in last


def test_a_refused_budget_keeps_the_warmup_measurements(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise budget.BudgetError("a budget of 1 s leaves no MaskTwins iteration")

    monkeypatch.setattr(pp, "plan_schedule", refuse)
    assert _main(["--tiny", "--minutes", "5", "--out", str(tmp_path)]) == 2
    refused = json.loads((tmp_path / "results.json").read_text())
    assert not refused["complete"] and "leaves no MaskTwins iteration" in refused["error"]
    assert refused["warmup"]["adapt_s_per_iter"] > 0 and refused["warmup"]["eval_s_per_run"] > 0
    assert "leaves no MaskTwins iteration" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "masktwins_seed0").exists()  # nothing trained after the refusal
