"""benchmarks/uda_em2d.py end to end on the real data for a few iterations (skips without ../shared/data)."""

from __future__ import annotations

import json

import pytest
import torch

from tests._scripts import load_benchmark


def _bench():
    return load_benchmark("uda_em2d")


@pytest.mark.slow
def test_pretrained_start_results_and_eval_only(shared_data, vnc3_dir, lucchi_pp_dir, tmp_path, capsys):
    bench = _bench()
    threads = torch.get_num_threads()
    out = tmp_path / "run"
    common = ["--eval-sections", "1", "--eval-roi", "256", "--threads", "1", "--crop", "64", "--batch", "2"]
    try:
        argv = ["--data", str(shared_data), "--seeds", "1", "--iters", "2", "--pretrain", "3"]
        assert bench.main([*argv, "--strategies", "source_only,masktwins", "--out", str(out), *common]) == 0
        results = json.loads((out / "results.json").read_text())
        assert sorted(results) == ["masktwins", "source_only"]
        assert all(set(r[0]) >= {"seed", "mAP", "F1", "MCC", "IoU"} for r in results.values())
        pre = torch.load(out / "pretrain" / "seed0.pt", weights_only=True)
        assert pre["extra"]["iterations"] == 3 and pre["iteration"] == 3
        assert json.loads((out / "config.json").read_text())["recipe"]["pretrain_iterations"] == 3
        # the pre-training is cached per seed, and not scored as a strategy by --eval-only
        again = tmp_path / "again"
        again.mkdir()
        (again / "pretrain").mkdir()
        (again / "pretrain" / "seed0.pt").write_bytes((out / "pretrain" / "seed0.pt").read_bytes())
        assert bench.main([*argv, "--strategies", "source_only", "--out", str(again), *common]) == 0
        assert "[pretrain] seed 0: reusing" in capsys.readouterr().out
        redone = json.loads((again / "results.json").read_text())["source_only"][0]
        assert redone["IoU"] == pytest.approx(results["source_only"][0]["IoU"], abs=1e-6)  # same start, same run
        scored = tmp_path / "scored"
        eval_argv = ["--eval-only", "--checkpoints", str(out / "checkpoints"), "--data", str(shared_data)]
        assert bench.main([*eval_argv, "--out", str(scored), *common]) == 0
        rescored = json.loads((scored / "results.json").read_text())
        assert sorted(rescored) == ["masktwins", "source_only"] and len(rescored["source_only"]) == 1
        for strategy in rescored:
            assert rescored[strategy][0]["IoU"] == pytest.approx(results[strategy][0]["IoU"], abs=1e-6)
    finally:
        torch.set_num_threads(threads)


def test_tta_is_an_evaluation_setting(monkeypatch):
    """--tta (default: the tools', TOOL_DEFAULTS) reaches the prediction; training flags are unaffected. The score
    reports the predicted and labelled foreground fractions beside the metrics."""
    import numpy as np

    import mtbio.uda.evaluate
    from mtbio.inference.settings import TOOL_DEFAULTS

    bench = _bench()
    base = ["--data", "d", "--out", "o"]
    assert bench.parse_args(base).tta == TOOL_DEFAULTS.tta.value == "flips"
    args = bench.parse_args([*base, "--tta", "flips_rot90", "--eval-roi", "64"])
    seen = {}
    prob = np.zeros((2, 8, 8), np.float32)
    prob[:, :2] = 0.9  # 25 % predicted foreground
    label = np.zeros((2, 8, 8), np.uint8)
    label[:, :1] = 255  # 12.5 % labelled (a non-{0, 1} foreground value)

    def fake_predict(net, image, **kw):
        seen.update(kw)
        return prob

    monkeypatch.setattr(mtbio.uda.evaluate, "predict_in_memory", fake_predict)
    scored = bench._score(None, label, label, args)
    assert seen["tta"] == "flips_rot90" and seen["roi_size"] == (64, 64)
    assert scored["foreground"] == pytest.approx(0.25) and scored["foreground_label"] == pytest.approx(0.125)
    assert scored["IoU"] == pytest.approx(0.5) and set(scored) >= {"mAP", "F1", "MCC", "IoU"}
    assert bench.recipe_and_config(args) == bench.recipe_and_config(bench.parse_args([*base, "--eval-roi", "64"]))


def test_acceptance_reports_the_quality_issue_separation_and_target():
    """``ahead_of_<x>``: the mean difference must exceed the larger seed std; ``target``: the mean reaches it. The
    first case is the 2026-12-05 800 + 3200 table (MaskTwins 68.3 +- 3.7 vs mean teacher 67.8 +- 0.5)."""
    _bench()  # puts benchmarks/ on the import path
    from _common import acceptance

    def rows(ious):
        return [{"IoU": v} for v in ious]

    close = {"masktwins": rows([0.665, 0.726, 0.658]), "mean_teacher": rows([0.684, 0.676, 0.673])}
    acc = acceptance(close, target=0.69)
    assert acc["ahead_of_mean_teacher"] is False and acc["vs_mean_teacher"] is True
    assert acc["ahead_of_mean_teacher_value"] == pytest.approx((0.665 + 0.726 + 0.658 - 0.684 - 0.676 - 0.673) / 3)
    assert acc["target"] is False and acc["target_value"] == 0.69
    apart = {"masktwins": rows([0.72, 0.73, 0.71]), "mic": rows([0.66, 0.67, 0.65]), "source_only": rows([0.5] * 3)}
    acc = acceptance(apart, target=0.69)
    assert acc["ahead_of_mic"] is True and acc["target"] is True and acc["gain"] is True
    assert "target" not in acceptance(apart) and "ahead_of_mean_teacher" not in acc
