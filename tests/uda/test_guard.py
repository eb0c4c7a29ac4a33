"""The collapse guard: per-checkpoint label-free scores of a training run (scores.jsonl), the selected checkpoint
(selected.pt), the run-level collapse rule, and their resume."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from mtbio.networks import get_network
from mtbio.networks.weights import read_weights
from mtbio.uda.config import UDAConfig
from mtbio.uda.guard import (
    ROW_KEYS,
    SCORES_FILE,
    SELECTED_FILE,
    TargetSample,
    TargetTooSmall,
    read_scores,
    run_collapsed,
    score_crop_size,
    select_row,
)
from mtbio.uda.recipe import Recipe
from mtbio.uda.run import RunSpec, run_training

torch.set_num_threads(2)


class Threshold(nn.Module):
    """A model that already segments the synthetic target (foreground = dark): healthy at every checkpoint. Its
    parameters are plain ``Parameter``s (no ``reset_parameters``), so the run's seeded copy keeps them."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(8.0))
        self.bias = nn.Parameter(torch.tensor(-4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = -self.gain * x + self.bias
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


def _data() -> dict[str, object]:
    rng = np.random.default_rng(0)
    lab = rng.random((3, 40, 40)) > 0.8
    img = (lab * 60 + rng.normal(100, 10, lab.shape)).astype(np.float32)
    return dict(source_image=img, source_label=lab, target_image=(255 - img).astype(np.float32))


def _spec(out: Path, network: nn.Module | None = None, **kw) -> RunSpec:
    recipe = Recipe(network="small_unet", iterations=4, pretrain_iterations=0, crop_size=16, batch_size=2)
    changes = dict(checkpoint_interval=2, score_crops=2, score_crop_size=32, lr=1e-30) | kw.pop("recipe", {})
    recipe = dataclasses.replace(recipe, **changes)
    config = UDAConfig(block_size=4, **kw.pop("config", {}))
    return RunSpec(out=out, config=config, recipe=recipe, progress=False, network=network, **_data(), **kw)


def _background_start() -> dict[str, torch.Tensor]:
    """small_unet weights whose last layer's bias forces background everywhere."""
    torch.manual_seed(0)
    state = get_network("small_unet", 2).state_dict()
    state["model.2.conv.bias"] = torch.tensor([50.0, -50.0])
    return state


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / SCORES_FILE).read_text().splitlines() if line.strip()]


def _without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# ------------------------------------------------------------------------------------------ the rules


def _row(it: int, score: float, collapsed: bool = False) -> dict:
    return {"iteration": it, "score": score, "collapsed": collapsed}


def test_select_row_takes_the_best_healthy_checkpoint_and_the_later_on_ties():
    rows = [_row(2, 0.5), _row(4, 0.9, collapsed=True), _row(6, 0.7), _row(8, 0.7), _row(10, 0.2)]
    assert select_row(rows)["iteration"] == 8  # 4 scores higher but collapsed; 6 and 8 tie -> the later
    assert select_row([_row(2, 0.9, True), _row(4, 0.8, True)]) is None
    assert select_row([]) is None
    assert select_row([_row(2, float("nan")), _row(4, 0.1)])["iteration"] == 4


def test_run_collapsed_judges_the_last_checkpoint_only():
    assert not run_collapsed([])
    assert not run_collapsed([_row(200, 0.1, True), _row(400, 0.5)])  # an early dip that recovers
    assert run_collapsed([_row(400, 0.5), _row(200, 0.6), _row(600, 0.0, True)])  # unsorted rows
    assert run_collapsed([_row(200, 0.0, True)])


def test_read_scores_keeps_the_last_row_per_iteration(tmp_path: Path):
    assert read_scores(tmp_path) == []
    lines = [_row(4, 0.1), _row(2, 0.3), _row(4, 0.2)]
    (tmp_path / SCORES_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"iteration": 6, "sc')
    assert read_scores(tmp_path) == [_row(2, 0.3), _row(4, 0.2)]  # the torn last line is skipped


def test_score_crop_size_clips_to_the_target_and_keeps_the_network_step():
    assert score_crop_size((192, 192), 256, (10, 1024, 1024)) == (256, 256)
    assert score_crop_size((192, 192), 256, (10, 200, 1024)) == (192, 256)  # 200 -> a multiple of 32
    assert score_crop_size((16, 16), 256, (3, 40, 40)) == (32, 32)  # training crop 16: step 16
    assert score_crop_size((16, 128, 128), 256, (64, 512, 512)) == (16, 128, 128)  # 3D: the training crop
    assert score_crop_size((16, 128, 128), 256, (64, 100, 512)) == (16, 96, 128)
    with pytest.raises(TargetTooSmall, match="needs multiples of 16"):  # 8 sections for a network of 16-deep crops
        score_crop_size((16, 128, 128), 256, (8, 512, 512))
    with pytest.raises(ValueError, match="constant"):
        TargetSample.draw(np.full((2, 64, 64), 3.0, np.float32), (32, 32), 32, 2)


# ------------------------------------------------------------------------------------------ the runs


def test_a_run_scores_its_checkpoints_and_keeps_the_best_one(tmp_path: Path):
    result = run_training(_spec(tmp_path / "run", network=Threshold()))
    rows = read_scores(tmp_path / "run")
    assert [r["iteration"] for r in rows] == [2, 4] and result.scores == rows
    for r in rows:
        assert set(r) == set(ROW_KEYS) and r["stage"] == "masktwins" and not r["collapsed"]
        assert r["source_fraction"] == pytest.approx(float(np.mean(_data()["source_label"])))
        assert 0.0 < r["score"] <= 1.0 and r["adjacent_dice"] is not None and r["seconds"] > 0
    assert result.selected_weights == tmp_path / "run" / SELECTED_FILE
    selected, final = read_weights(result.selected_weights), read_weights(result.weights)
    assert selected.extra["selection"] == select_row(rows)
    assert selected.iteration == select_row(rows)["iteration"]
    for key in ("network_class", "voxel_size", "normalization", "strategy", "seed", "crop", "config"):
        assert getattr(selected, key) == getattr(final, key), key
    assert selected.extra["source_foreground_fraction"] == final.extra["source_foreground_fraction"]
    net = selected.load_into(Threshold())
    assert all(torch.equal(net.state_dict()[k], v) for k, v in final.teacher.items())  # lr 1e-30: same weights


def test_a_network_predicting_background_is_flagged_and_never_selected(tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="mtbio.train")
    result = run_training(_spec(tmp_path / "run", init_weights=_background_start()))
    rows = result.scores
    assert [r["iteration"] for r in rows] == [2, 4]
    assert all(r["collapsed"] and r["reasons"] == ["all background"] and r["score"] == 0.0 for r in rows)
    assert select_row(rows) is None and run_collapsed(rows)
    assert result.selected_weights is None and not (tmp_path / "run" / SELECTED_FILE).exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("collapsed at iteration 2: foreground 0.0 % vs source" in w for w in warnings), warnings
    assert any("the run collapsed" in w and f"no {SELECTED_FILE}" in w for w in warnings), warnings


def test_resume_continues_the_history_without_duplicates(tmp_path: Path):
    full = run_training(_spec(tmp_path / "full", network=Threshold(), recipe={"lr": 1e-3}))
    run = tmp_path / "part"
    part = run_training(_spec(run, network=Threshold(), recipe={"lr": 1e-3}, stop_after=2))
    assert not part.complete and [r["iteration"] for r in part.scores] == [2]
    # a killed process's row after the checkpoint is dropped, and selected.pt follows the kept rows
    stale = {**part.scores[0], "iteration": 4, "score": 1.0}
    with (run / SCORES_FILE).open("a") as fh:
        fh.write(json.dumps(stale) + "\n")
    resumed = run_training(_spec(run, network=Threshold(), recipe={"lr": 1e-3}))
    assert resumed.complete and [r["iteration"] for r in _lines(run)] == [2, 4]
    assert _without_time(read_scores(run)) == _without_time(full.scores)  # bitwise resume: the same scores
    assert read_weights(run / SELECTED_FILE).extra["selection"] == select_row(read_scores(run))
    # a row missing at the resumed checkpoint (killed between the checkpoint and its score) is scored on resume
    run2 = tmp_path / "part2"
    run_training(_spec(run2, network=Threshold(), recipe={"lr": 1e-3}, stop_after=2))
    (run2 / SCORES_FILE).unlink()
    run_training(_spec(run2, network=Threshold(), recipe={"lr": 1e-3}))
    assert _without_time(read_scores(run2)) == _without_time(full.scores)
    # a finished run that is reused keeps its files
    before = (run / SCORES_FILE).stat().st_mtime_ns, (run / SELECTED_FILE).stat().st_mtime_ns
    again = run_training(_spec(run, network=Threshold(), recipe={"lr": 1e-3}))
    assert again.seconds == 0 and again.scores == read_scores(run)
    assert ((run / SCORES_FILE).stat().st_mtime_ns, (run / SELECTED_FILE).stat().st_mtime_ns) == before


def test_the_pretraining_and_source_only_are_scored_and_a_reused_unscored_stage_gets_its_final_row(tmp_path: Path):
    recipe = {"pretrain_iterations": 2, "iterations": 2, "score_crops": 0}
    spec = _spec(tmp_path / "run", network=Threshold(), config={"strategy": "source_only"}, recipe=recipe)
    first = run_training(spec)
    assert first.scores is None and not (tmp_path / "run" / "pretrain" / SCORES_FILE).exists()
    recipe["score_crops"] = 2  # a score setting may change on resume; the finished stages get their final rows
    again = run_training(dataclasses.replace(spec, recipe=dataclasses.replace(spec.recipe, score_crops=2)))
    assert again.pretrain == "reused" and again.seconds == 0
    pre = read_scores(tmp_path / "run" / "pretrain")
    assert [(r["iteration"], r["stage"]) for r in pre] == [(2, "pretrain")]
    assert [(r["iteration"], r["stage"]) for r in again.scores] == [(2, "source_only")]
    assert read_weights(tmp_path / "run" / "pretrain" / SELECTED_FILE).extra["selection"] == pre[0]
    # a new run scores both stages as it trains them
    fresh = run_training(
        dataclasses.replace(spec, out=tmp_path / "fresh", recipe=dataclasses.replace(spec.recipe, score_crops=2))
    )
    assert [r["iteration"] for r in read_scores(tmp_path / "fresh" / "pretrain")] == [2]
    assert fresh.pretrain == "trained" and [r["stage"] for r in fresh.scores] == ["source_only"]


def test_a_constant_target_is_refused_before_training(tmp_path: Path):
    spec = _spec(tmp_path / "run", network=Threshold())
    spec.target_image = np.full((3, 40, 40), 7.0, np.float32)
    with pytest.raises(ValueError, match=r"label-free scoring of the target: .*constant.*score_crops=0"):
        run_training(spec)
    assert not (tmp_path / "run").exists()
    assert run_training(dataclasses.replace(spec, recipe=spec.recipe.replace(score_crops=0))).scores is None


def test_a_target_too_thin_for_the_network_trains_unscored_with_a_warning(tmp_path: Path, caplog):
    """Source-only on an anisotropic 3D source: the target, brought to the source's 40 nm sections, has 2 sections,
    fewer than one down-sampling step of a network trained on 8-deep crops."""
    caplog.set_level(logging.WARNING, logger="mtbio.train")
    rng = np.random.default_rng(1)
    lab = rng.random((8, 40, 40)) > 0.8
    img = (lab * 60 + rng.normal(100, 10, lab.shape)).astype(np.float32)
    recipe = Recipe(network="small_unet", iterations=2, pretrain_iterations=0, crop_size=(8, 16, 16), batch_size=1)
    spec = RunSpec(
        out=tmp_path / "run", config=UDAConfig(strategy="source_only", block_size=4), recipe=recipe,
        source_image=img, source_label=lab, target_image=255 - img, source_voxel_size=(40.0, 8.0, 8.0),
        target_voxel_size=(10.0, 8.0, 8.0), network=Threshold(), progress=False,
    )  # fmt: skip
    result = run_training(spec)
    assert result.complete and result.scores is None and not (tmp_path / "run" / SCORES_FILE).exists()
    assert any("no label-free scoring" in r.getMessage() and "needs multiples of 8" in r.getMessage()
               for r in caplog.records)  # fmt: skip
