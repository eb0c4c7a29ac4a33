"""One place per option (flags generated from Recipe / UDAConfig, no entry point restating a default) and one path
per run (:func:`mtbio.uda.run.run_training` on tiny synthetic data)."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from mtbio.networks.weights import read_weights
from mtbio.uda.config import DEMO_UDA, UDAConfig
from mtbio.uda.options import _optional, config_fields
from mtbio.uda.recipe import DEMO_RECIPE, PRETRAIN_SEED_OFFSET, Recipe
from mtbio.uda.run import RunSpec, run_training
from tests._scripts import load_benchmark

torch.set_num_threads(2)


# ---------------------------------------------------------------- flags


def _other_value(name: str, tp, default) -> tuple[list[str], object]:
    """(flag words, expected field value) giving ``name`` a value other than its default."""
    flag = "--" + name.replace(".", "-").replace("_", "-")
    inner, _ = _optional(tp)
    if name == "source_zoom":  # >= 1 only (a zoom range)
        return [flag, "2.0"], 2.0
    if inner is bool:
        return ([f"--no-{flag[2:]}"] if default else [flag]), not default
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        value = next(e for e in inner if e != default)
        return [flag, value.value], value
    if inner is float:
        value = 0.5 if default != 0.5 else 0.25
        return [flag, str(value)], value
    if inner is int:
        value = 3 if default != 3 else 5
        return [flag, str(value)], value
    return [flag, "4,8"], (4, 8)  # int | tuple[int, ...]


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _train_parser() -> argparse.ArgumentParser:
    from mtbio.cli.train import build_parser

    return build_parser(argparse.ArgumentParser())


@pytest.mark.parametrize("name,tp,default", config_fields(UDAConfig), ids=lambda v: v if isinstance(v, str) else "")
def test_every_uda_field_reaches_the_config_from_train_and_the_benchmark(name, tp, default):
    from mtbio.cli.train import settings_from_args

    words, expected = _other_value(name, tp, default)
    _, cfg = settings_from_args(_train_parser().parse_args(["--out", "x", *words]))
    assert _get(cfg, name) == expected
    if name == "strategy":  # the benchmark runs the strategies of --strategies
        return
    bench = load_benchmark("uda_em2d")
    _, cfg = bench.recipe_and_config(bench.parse_args(["--data", "d", "--out", "x", *words]))
    assert _get(cfg, name) == expected


@pytest.mark.parametrize("name,tp,default", config_fields(Recipe), ids=lambda v: v if isinstance(v, str) else "")
def test_every_recipe_field_reaches_the_recipe_from_train(name, tp, default):
    from mtbio.cli.train import settings_from_args

    words, expected = _other_value(name, tp, default)
    if name == "network":
        words, expected = ["--network", "basic_unet"], "basic_unet"
    recipe, _ = settings_from_args(_train_parser().parse_args(["--out", "x", *words]))
    assert getattr(recipe, name) == expected


def test_old_flag_spellings_still_work():
    from mtbio.cli.train import settings_from_args

    args = ["--out", "x", "--iters", "7", "--pretrain", "0", "--crop", "16,32,32", "--batch", "2", "--save-every", "3"]
    recipe, cfg = settings_from_args(_train_parser().parse_args([*args, "--log-every", "9", "--rampup", "4"]))
    assert (recipe.iterations, recipe.pretrain_iterations, recipe.crop, recipe.batch_size) == (7, 0, (16, 32, 32), 2)
    assert (recipe.checkpoint_interval, recipe.log_interval, cfg.rampup_iterations) == (3, 9, 4)


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from mtbio.cli import demo

    sub = argparse.ArgumentParser().add_subparsers()
    demo.register(sub)
    bench = load_benchmark("uda_em2d")
    captured: dict[str, argparse.ArgumentParser] = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, *a, **k):  # the benchmark builds its parser inside parse_args
        captured["bench"] = self
        return original(self, *a, **k)

    argparse.ArgumentParser.parse_args = capture
    try:
        bench.parse_args(["--data", "d", "--out", "x"])
    finally:
        argparse.ArgumentParser.parse_args = original
    return {"train": _train_parser(), "demo": sub.choices["demo"], "uda_em2d": captured["bench"]}


@pytest.mark.parametrize("entry", ["train", "demo", "uda_em2d"])
def test_no_entry_point_restates_a_default(entry):
    """Every Recipe / UDAConfig setting of an entry point is a generated flag whose parser default is "not given"
    (the dataclass supplies the value); no hand-written flag has a field's name."""
    parser = _parsers()[entry]
    fields = {n.split(".")[0] for n, _, _ in config_fields(UDAConfig)} | {f.name for f in dataclasses.fields(Recipe)}
    for action in parser._actions:
        if action.dest.startswith(("cfg.", "recipe.")):
            assert action.default is argparse.SUPPRESS, (entry, action.dest)
        else:
            assert action.dest not in fields, f"{entry}: --{action.dest} restates a Recipe / UDAConfig field"


def _help_defaults(parser: argparse.ArgumentParser) -> dict[str, str]:
    return {a.dest: " ".join((a.help or "").split()) for a in parser._actions}


@pytest.mark.parametrize("entry,recipe,uda", [("train", Recipe(), UDAConfig()), ("demo", DEMO_RECIPE, DEMO_UDA)])
def test_help_shows_the_recipe_values(entry, recipe, uda):
    helps = _help_defaults(_parsers()[entry])
    for name, _, _ in config_fields(Recipe):
        value = getattr(recipe, name)
        assert helps[f"recipe.{name}"].endswith(f"(default: {value})"), (name, helps[f"recipe.{name}"])
    for name, _, _ in config_fields(UDAConfig):
        if name != "strategy" or entry == "train":
            value = uda
            for part in name.split("."):
                value = getattr(value, part)
            shown = value.value if isinstance(value, enum.Enum) else value
            assert helps[f"cfg.{name}"].endswith(f"(default: {shown})"), name


def test_recipe_defaults_are_the_validated_benchmark_recipe():
    """The values of the final real-data table (benchmarks/results/uda_em2d_3200_2026-12-05.json, docs/uda.md "The
    final table"): the recipe the benchmark ran is Recipe's default, field by field."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "uda_em2d_3200_2026-12-05.json"
    ran = json.loads(path.read_text())["config"]["recipe"]
    r = Recipe()
    assert (r.network, r.iterations, r.pretrain_iterations) == (
        ran["network"],
        ran["iterations"],
        ran["pretrain_iterations"],
    )
    assert (list(r.crop), r.batch_size, r.lr) == (ran["crop_size"], ran["batch_size"], ran["lr"])
    assert (r.score_crops, r.score_crop_size, r.context_sections) == (
        ran["score_crops"],
        ran["score_crop_size"],
        ran["context_sections"],
    )
    assert r.source_zoom == ran.get("source_zoom", 1.0)  # no scale augmentation in the validated run
    assert r.target_planes == ran.get("target_planes", "xy")  # target crops of xy sections in the validated run
    typing.get_type_hints(Recipe)  # the annotations resolve


def test_udaconfig_defaults_are_the_validated_masktwins_run():
    """The UDA step of the run that met the quality target (benchmarks/results/uda_em2d_sp3200_2026-12-05.json,
    docs/uda.md "MaskTwins with the source_prior default"): every UDAConfig field's default is what it ran with."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "uda_em2d_sp3200_2026-12-05.json"
    from mtbio.uda.run import RESUME_ABSENT_MEANS

    ran = json.loads(path.read_text())["config"]["uda"]["masktwins"]
    # fields added since the run was recorded: the value it ran with (the rule a resume applies)
    absent = {k.removeprefix("config."): v for k, v in RESUME_ABSENT_MEANS.items() if k.startswith("config.")}
    assert UDAConfig().to_dict() == {**absent, **ran}
    assert ran["pl_class_balance"] == "source_prior" and "source_augment" not in ran


def test_the_demo_uda_step_differs_from_the_defaults_only_in_the_class_shares():
    """mtbio demo and the masktwins_demo bundle train with DEMO_UDA: pl_class_balance none (source_prior cost MaskTwins
    9.4 IoU on the synthetic domains), every other field UDAConfig's default (the demo's run records it:
    tests/test_demo.py)."""
    from mtbio.uda.config import DEMO_UDA, ClassBalance

    assert DEMO_UDA.pl_class_balance is ClassBalance.NONE
    assert dataclasses.replace(DEMO_UDA, pl_class_balance=UDAConfig().pl_class_balance) == UDAConfig()


# ---------------------------------------------------------------- the orchestrator


class _Vol(np.ndarray):
    """A numpy volume with a ``voxel_size`` attribute (as the project's volumes have)."""


def _data() -> dict[str, object]:
    rng = np.random.default_rng(0)
    lab = rng.random((3, 40, 40)) > 0.8
    img = (lab * 60 + rng.normal(100, 10, lab.shape)).astype(np.float32)
    return dict(source_image=img, source_label=lab, target_image=(255 - img).astype(np.float32))


def _spec(out: Path, **kw) -> RunSpec:
    recipe = Recipe(network="small_unet", iterations=4, pretrain_iterations=0, crop_size=16, batch_size=2)
    recipe = dataclasses.replace(recipe, checkpoint_interval=2, **kw.pop("recipe", {}))
    config = UDAConfig(block_size=4, **kw.pop("config", {}))
    return RunSpec(out=out, config=config, recipe=recipe, progress=False, **_data(), **kw)


def _state(path: Path) -> dict[str, torch.Tensor]:
    r = read_weights(path)
    return {**{f"t.{k}": v for k, v in r.teacher.items()}, **{f"s.{k}": v for k, v in r.student.items()}}


def test_stop_after_then_resume_equals_the_uninterrupted_run_bitwise(tmp_path: Path):
    full = run_training(_spec(tmp_path / "full"))
    assert full.complete and full.weights == tmp_path / "full" / "final.pt"
    part = run_training(_spec(tmp_path / "part", stop_after=2))
    assert not part.complete and part.weights is None and part.iteration == 2
    assert not (tmp_path / "part" / "final.pt").exists()
    resumed = run_training(_spec(tmp_path / "part"))
    assert resumed.complete and resumed.resumed_from.name == "checkpoint_iteration=2.pt"
    a, b = _state(full.weights), _state(resumed.weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a finished run is kept as it is
    before = resumed.weights.stat().st_mtime_ns
    again = run_training(_spec(tmp_path / "part"))
    assert again.complete and again.seconds == 0 and resumed.weights.stat().st_mtime_ns == before


def test_resume_policies_and_changed_settings(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run_training(_spec(tmp_path / "run", resume="require"))
    run_training(_spec(tmp_path / "run", stop_after=2))
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        run_training(_spec(tmp_path / "run", resume="never"))
    with pytest.raises(ValueError, match=r"recipe\.lr 0\.001 -> 0\.002"):
        run_training(_spec(tmp_path / "run", recipe={"lr": 2e-3}))
    with pytest.raises(ValueError, match=r"config\.tau 0\.968 -> 0\.5"):
        run_training(_spec(tmp_path / "run", config={"tau": 0.5}))
    done = run_training(_spec(tmp_path / "run", resume="require", recipe={"log_interval": 1}))  # logging may change
    assert done.complete


def test_a_run_recorded_before_source_augment_existed_resumes_only_without_it(tmp_path: Path):
    from mtbio.uda.run import _check_resume

    old = UDAConfig(block_size=4).to_dict()
    del old["source_augment"]  # a config.json written before the field existed (trained without it)
    (tmp_path / "config.json").write_text(json.dumps({"config": old}))
    _check_resume(tmp_path / "config.json", {"config": UDAConfig(block_size=4).to_dict()})
    with pytest.raises(ValueError, match=r"config\.source_augment False -> True"):
        _check_resume(tmp_path / "config.json", {"config": UDAConfig(block_size=4, source_augment=True).to_dict()})


def test_pretraining_is_cached_and_every_strategy_starts_from_it(tmp_path: Path):
    shared = dict(pretrain_out=tmp_path / "pre", recipe={"pretrain_iterations": 3, "iterations": 2, "lr": 1e-30})
    first = run_training(_spec(tmp_path / "a", **shared))
    assert first.pretrain == "trained" and first.complete
    pre_path = tmp_path / "pre" / "final.pt"
    pre = read_weights(pre_path)
    assert (pre.iteration, pre.strategy, pre.seed) == (3, "source_only", PRETRAIN_SEED_OFFSET)
    mtime = pre_path.stat().st_mtime_ns
    second = run_training(_spec(tmp_path / "b", config={"strategy": "mean_teacher"}, **shared))
    assert second.pretrain == "reused" and pre_path.stat().st_mtime_ns == mtime
    record = read_weights(second.weights)
    assert record.provenance["parent"] == str(pre_path) and record.extra["pretrained"] is True
    for k, v in pre.teacher.items():  # lr 1e-30: the student stays the pre-trained weights
        if v.is_floating_point() and "running" not in k:
            assert torch.allclose(record.student[k], v, rtol=0, atol=1e-25), k
    # another number of pre-training iterations is not the cached one
    third = run_training(
        _spec(tmp_path / "c", pretrain_out=tmp_path / "pre2", recipe={"pretrain_iterations": 2, "iterations": 1})
    )
    assert third.pretrain == "trained" and read_weights(tmp_path / "pre2" / "final.pt").iteration == 2


def test_weights_record_fields(tmp_path: Path):
    data = _data()
    result = run_training(
        _spec(
            tmp_path / "run",
            source_voxel_size=(30.0, 5.0, 5.0),
            target_voxel_size=(30.0, 5.0, 5.2),
            source_description="src data",
            target_description="tgt data",
            recipe={"seed": 7},
        )
    )
    r = read_weights(result.weights)
    assert r.voxel_size == [5.0, 5.2]  # the target's grid (within 10 %: no resampling), network axes (y, x)
    assert r.normalization == "zscore_section" and r.spatial_dims == 2
    assert (r.strategy, r.seed, r.crop, r.iteration) == ("masktwins", 7, [16, 16], 4)
    assert r.config == UDAConfig(block_size=4).to_dict()
    assert (r.network, r.network_kwargs) == ("small_unet", {})
    assert r.provenance["source"] == "src data" and r.provenance["target"] == "tgt data"
    assert r.provenance["parent"] is None and "git" in r.provenance
    assert r.extra["source_foreground_fraction"] == pytest.approx(float(np.mean(data["source_label"])))
    assert r.extra["recipe"]["iterations"] == 4
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert resolved["recipe"]["seed"] == 7 and resolved["config"]["block_size"] == 4
    assert os.path.isdir(tmp_path / "run" / "tb")


def test_run_spec_refuses_missing_data(tmp_path: Path):
    with pytest.raises(ValueError, match="needs a target image"):
        RunSpec(out=tmp_path, source_image=np.zeros((1, 8, 8)), source_label=np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="pretrain_iterations > 0 needs a source"):
        RunSpec(out=tmp_path, config=UDAConfig(strategy="oracle"), target_image=1, target_label=1)


def test_a_run_stopped_in_its_pretraining_resumes_only_when_asked(tmp_path: Path):
    pre = {"recipe": {"pretrain_iterations": 2, "iterations": 1}}
    stopped = run_training(_spec(tmp_path / "run", stop_after=1, **pre))
    assert stopped.pretrain == "stopped" and not stopped.complete
    assert (tmp_path / "run" / "pretrain" / "checkpoint_iteration=1.pt").is_file()
    with pytest.raises(FileExistsError, match="pretrain already holds checkpoints"):
        run_training(_spec(tmp_path / "run", resume="never", **pre))
    done = run_training(_spec(tmp_path / "run", resume="require", **pre))
    assert done.complete and done.pretrain == "trained"
    assert read_weights(done.weights).provenance["parent"] == str(tmp_path / "run" / "pretrain" / "final.pt")
