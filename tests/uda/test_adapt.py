"""``mtbio adapt`` / :func:`mtbio.uda.adapt.run_adapt` end to end on tiny synthetic volumes: every output, the
label-free choice in each direction, resume after a stop or a signal, and the bad inputs refused before training.

One adaptation (the module fixture, through the command line) is shared: the tests that rerun it work in its folder
(a finished run is reused, so a rerun only scores, predicts and reports)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from mtbio.cli import main
from mtbio.data.store import open_prediction_store
from mtbio.inference.model_io import model_hash
from mtbio.networks import get_network
from mtbio.networks.weights import WeightsRecord, read_weights, write_weights
from mtbio.uda import adapt as adapt_module
from mtbio.uda.adapt import AdaptSpec, PredictionInterrupted, check_target, run_adapt
from mtbio.uda.adapt_choice import choose, load_network
from mtbio.uda.guard import SELECTED_FILE, read_scores
from mtbio.uda.recipe import Recipe

torch.set_num_threads(2)

#: what selected.json must hold (the issue's list and the run's records)
KEYS = {
    "checkpoint", "strategy", "iteration", "score", "collapsed", "source_only_score", "worse_than_source_only",
    "delivered", "verdict", "all_collapsed", "adapted", "source_only", "runs", "seconds", "iterations",
    "sec_per_iter", "prediction", "settings", "complete",
}  # fmt: skip
SHAPE = (4, 48, 48)


def _args(paths: dict[str, Path], out: Path) -> list[str]:
    """The tiny run: small_unet, 2 source-only + 4 MaskTwins iterations on 32 px crops, 4 prediction blocks."""
    return [
        "adapt", "--target", f"{paths['target']}:raw", "--source-image", f"{paths['source']}:raw",
        "--source-label", f"{paths['source']}:label", "--out", str(out), "--network", "small_unet",
        "--iterations", "4", "--pretrain-iterations", "2", "--crop-size", "32", "--batch-size", "2",
        "--block-size", "8", "--checkpoint-interval", "2", "--score-crops", "2", "--score-crop-size", "32",
        "--roi-size", "48", "48", "--chunks", "1", "48", "48", "--device", "cpu", "--figure-sections", "2",
        "--threads", "2",
    ]  # fmt: skip


def _spec(args: list[str], **changes) -> AdaptSpec:
    """The AdaptSpec ``mtbio adapt`` builds from ``args`` (with ``changes``)."""
    from mtbio.cli.adapt import build_parser, spec_from_args

    parsed = build_parser(argparse.ArgumentParser()).parse_args(args[1:])
    spec = spec_from_args(parsed)
    spec.progress = False
    return dataclasses.replace(spec, **changes) if changes else spec


def _selected(out: Path) -> dict:
    return json.loads((out / "selected.json").read_text())


def _chunks(store: Path) -> dict[str, int]:
    return {str(p.relative_to(store)): p.stat().st_mtime_ns for p in (store / "0").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    from mtbio.data.synthetic import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("synth"), shape=SHAPE, progress=False)


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory) -> tuple[Path, list[str], str]:
    """(OUT, the command, its stdout) of one finished ``mtbio adapt ... --json``."""
    out = tmp_path_factory.mktemp("adapt") / "out"
    args = [*_args(data, out), "--json"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(args) == 0
    return out, args, stdout.getvalue()


# ---------------------------------------------------------------- the finished run


def test_end_to_end_writes_every_output(finished, data):
    out, _, _ = finished
    selected = _selected(out)
    assert KEYS <= selected.keys() and selected["complete"] is True
    assert selected["delivered"] in ("adapted", "source_only")
    checkpoint = Path(selected["checkpoint"])
    if selected["delivered"] == "adapted":
        assert checkpoint == out / "masktwins" / SELECTED_FILE
        assert not selected["worse_than_source_only"] or selected["source_only"]["collapsed"]
    else:
        assert checkpoint == out / "pretrain" / "final.pt"
        assert selected["worse_than_source_only"] or selected["all_collapsed"]
    assert selected["source_only"]["score"] == selected["source_only_score"]
    assert selected["iterations"] == {"pretrain": 2, "strategy": 4}
    assert selected["iterations_trained"] == {"pretrain": 2, "strategy": 4}
    assert selected["sec_per_iter"]["strategy"] > 0 and selected["seconds"]["prediction"] > 0
    # the source-only start is scored as the training scores its checkpoints (same sample, same settings)
    last = [r for r in read_scores(out / "pretrain") if r["iteration"] == 2]
    assert last and last[0]["score"] == pytest.approx(selected["source_only_score"], abs=1e-6)
    # the prediction store: complete, the target's grid and voxel size, the delivered model's hash
    store = open_prediction_store(out / "prediction.zarr")
    assert store.spatial_shape == SHAPE and store.voxel_size == (10.0, 10.0, 10.0)
    assert store.array.shape[0] == 2 and (out / "prediction.zarr" / "0").is_dir()
    spec = _spec(finished[1])
    assert store.meta["model_hash"] == model_hash(load_network(checkpoint, spec))
    # the report and its figures
    report = (out / "report.md").read_text()
    assert selected["verdict"] in report and "figures/scores.png" in report and "mtbio measure" in report
    for name in ("scores.png", "sections.png", "volume_signal.png"):
        png = (out / "figures" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, name


def test_cli_json_prints_selected_json(finished):
    out, _, stdout = finished
    printed = json.loads(stdout.strip().splitlines()[-1])
    assert printed == _selected(out)


def test_rerun_keeps_the_finished_training_and_prediction(finished):
    out, args, _ = finished
    weights = out / "masktwins" / "final.pt"
    before = (weights.stat().st_mtime_ns, _chunks(out / "prediction.zarr"), _selected(out)["calls"])
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args) == 0
    assert weights.stat().st_mtime_ns == before[0]  # not retrained
    assert _chunks(out / "prediction.zarr") == before[1]  # the complete store was kept
    assert _selected(out)["calls"] == before[2] + 1


def test_the_prediction_identity_names_the_consensus_rule_along_three_planes(finished):
    from mtbio.inference.planes import CONSENSUS
    from mtbio.uda.adapt_output import prediction_plan

    out, args, _ = finished
    spec = _spec(args)
    weights = out / "masktwins" / "final.pt"
    assert spec.inference.planes.value == "auto"  # the tools' default: a store made with another rule is redone
    assert prediction_plan(spec, weights)["identity"]["consensus"] == CONSENSUS
    xy = dataclasses.replace(spec, inference=dataclasses.replace(spec.inference, planes="xy"))
    assert "consensus" not in prediction_plan(xy, weights)["identity"]  # section by section: nothing to combine


def test_a_stopped_prediction_resumes_to_the_same_store(finished):
    out, args, _ = finished
    store = out / "prediction.zarr"
    expected = open_prediction_store(store).array[:]
    shutil.rmtree(store)
    polls = iter(range(100))
    stopped = run_adapt(_spec(args, stop=lambda: next(polls) >= 2))  # two of the four blocks, then stop
    assert not stopped.complete and stopped.stopped_in == "prediction"
    assert not open_prediction_store(store, require_complete=False).complete
    assert _selected(out)["complete"] is False
    done = run_adapt(_spec(args))
    assert done.complete and done.prediction == store and _selected(out)["complete"] is True
    np.testing.assert_array_equal(open_prediction_store(store).array[:], expected)


def test_sigint_during_the_prediction_exits_130_and_the_rerun_finishes(finished):
    out, args, _ = finished
    store = out / "prediction.zarr"
    shutil.rmtree(store)
    polls = iter(range(100))

    def interrupt() -> bool:  # a real SIGINT to this process while the second block is due
        if next(polls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return False

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(PredictionInterrupted) as stop:
        run_adapt(_spec(args, stop=interrupt))
    assert stop.value.code == 130 and "resumable" in str(stop.value)
    assert not open_prediction_store(store, require_complete=False).complete
    assert signal.getsignal(signal.SIGINT) is handler  # the handlers are restored
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(args) == 0
    assert open_prediction_store(store).complete and _selected(out)["complete"] is True


def test_worse_than_source_only_delivers_the_source_only_model(finished, monkeypatch):
    out, args, _ = finished
    real = adapt_module.score_source_only

    def better_start(spec):  # a source-only start no adapted checkpoint can beat (scores are <= 1)
        return {**real(spec), "score": 2.0, "collapsed": False, "reasons": []}

    chosen = {"iteration": 4, "score": 0.5, "collapsed": False, "reasons": [], "foreground_fraction": 0.1}
    monkeypatch.setattr(adapt_module, "score_source_only", better_start)
    monkeypatch.setattr(adapt_module, "select_row", lambda rows: chosen)
    _copy_selected_weights(out)
    result = run_adapt(_spec(args))
    selected = _selected(out)
    assert result.delivered == selected["delivered"] == "source_only"
    assert selected["worse_than_source_only"] is True and selected["checkpoint"] == str(out / "pretrain" / "final.pt")
    assert "Adaptation scored below the source-only start" in (out / "report.md").read_text()
    hash_ = model_hash(load_network(out / "pretrain" / "final.pt", _spec(args)))
    assert open_prediction_store(out / "prediction.zarr").meta["model_hash"] == hash_


def test_a_better_adapted_checkpoint_is_delivered(finished, monkeypatch):
    out, args, _ = finished
    real = adapt_module.score_source_only
    chosen = {"iteration": 4, "score": 0.9, "collapsed": False, "reasons": [], "foreground_fraction": 0.1}
    monkeypatch.setattr(adapt_module, "score_source_only", lambda spec: {**real(spec), "score": 0.1})
    monkeypatch.setattr(adapt_module, "select_row", lambda rows: chosen)
    _copy_selected_weights(out)
    result = run_adapt(_spec(args))
    selected = _selected(out)
    assert result.delivered == "adapted" and selected["worse_than_source_only"] is False
    assert selected["checkpoint"] == str(out / "masktwins" / SELECTED_FILE) and selected["iteration"] == 4
    assert "Adaptation improved the label-free score from 0.100 to 0.900" in (out / "report.md").read_text()
    hash_ = model_hash(load_network(out / "masktwins" / SELECTED_FILE, _spec(args)))
    assert open_prediction_store(out / "prediction.zarr").meta["model_hash"] == hash_


def test_a_source_model_replaces_the_pretraining(finished, data, tmp_path):
    """``--source-model`` (here the finished run's pre-training): no pre-training runs, MaskTwins starts from it, and
    it scores as the guard scored the same model as the first run's pre-training (same target sample)."""
    out, _, _ = finished
    model = out / "pretrain" / "final.pt"
    args = [*_args(data, tmp_path / "out2"), "--source-model", str(model), "--json"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(args) == 0
    selected = json.loads(stdout.getvalue().strip().splitlines()[-1])
    assert not (tmp_path / "out2" / "pretrain").exists() and selected["runs"]["pretrain"] is None
    assert selected["source_only"]["checkpoint"] == str(model) and selected["iterations_trained"]["pretrain"] == 0
    guard_row = [r for r in read_scores(out / "pretrain") if r["iteration"] == 2][0]  # the guard's score of it
    assert selected["source_only_score"] == pytest.approx(guard_row["score"], abs=1e-6)
    assert read_weights(tmp_path / "out2" / "masktwins" / "final.pt").provenance["parent"] == str(model)
    assert open_prediction_store(tmp_path / "out2" / "prediction.zarr").complete


def _copy_selected_weights(out: Path) -> None:
    """A ``selected.pt`` for a test that makes an adapted checkpoint the choice (a real run writes it only when a
    checkpoint is healthy)."""
    if not (out / "masktwins" / SELECTED_FILE).is_file():
        shutil.copyfile(out / "masktwins" / "final.pt", out / "masktwins" / SELECTED_FILE)


# ---------------------------------------------------------------- flags


def test_flags_are_generated_and_the_defaults_are_the_recipes():
    """Every Recipe / UDAConfig / InferenceSettings setting of ``mtbio adapt`` is a generated flag whose parser default
    is "not given": with none given, the run gets the validated Recipe, UDAConfig's MaskTwins and mtbio predict's
    inference settings."""
    from mtbio.cli.adapt import FIXED_SETTINGS, build_parser
    from mtbio.cli.predict import settings_from_args as inference_from_args
    from mtbio.cli.train import settings_from_args as training_from_args
    from mtbio.inference.settings import TOOL_DEFAULTS, InferenceSettings
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.options import config_fields

    parser = build_parser(argparse.ArgumentParser())
    fields = {n.split(".")[0] for n, _, _ in config_fields(UDAConfig)} | set(Recipe.__dataclass_fields__)
    fields |= set(InferenceSettings.__dataclass_fields__)
    generated = [a for a in parser._actions if a.dest.startswith(("cfg.", "recipe.", "settings."))]
    assert all(a.default is argparse.SUPPRESS for a in generated)
    assert not {a.dest for a in parser._actions} & fields, "a hand-written flag restates a field"
    assert {a.dest for a in generated} >= {"recipe.score_crops", "cfg.strategy", "settings.device", "settings.roi_size"}
    assert not {f"settings.{name}" for name in FIXED_SETTINGS} & {a.dest for a in generated}
    args = parser.parse_args(["--target", "t", "--out", "o"])
    assert training_from_args(args) == (Recipe(), UDAConfig())
    assert inference_from_args(args) == TOOL_DEFAULTS


# ---------------------------------------------------------------- the choice, without training


class _Spec:
    """The fields :func:`choose` reads."""

    def __init__(self, tmp: Path) -> None:
        from mtbio.uda.config import UDAConfig

        self.config, self.strategy_dir = UDAConfig(), tmp / "masktwins"
        self.strategy_dir.mkdir(parents=True, exist_ok=True)
        (self.strategy_dir / SELECTED_FILE).write_bytes(b"")


def _row(iteration: int, score: float, collapsed: bool = False) -> dict:
    reasons = ["all background"] if collapsed else []
    return {"iteration": iteration, "score": score, "collapsed": collapsed, "reasons": reasons}


@pytest.mark.parametrize(
    "source_only,chosen,rows,delivered,sentence",
    [
        ((0.40, False), _row(6, 0.55), [_row(6, 0.55)], "adapted", "improved the label-free score from 0.400 to 0.550"),
        ((0.40, False), _row(6, 0.30), [_row(6, 0.30)], "source_only", "scored below the source-only start"),
        ((0.40, False), None, [_row(2, 0.1, True), _row(4, 0.0, True)], "source_only", "Every adapted checkpoint"),
        ((0.40, False), None, [], "source_only", "No adapted checkpoint has a label-free score"),
        ((0.45, True), _row(6, 0.30), [_row(6, 0.30)], "adapted", "The source-only start collapsed"),
    ],
)
def test_the_choice_and_its_sentence(tmp_path, source_only, chosen, rows, delivered, sentence):
    score, collapsed = source_only
    start = {"checkpoint": "pre.pt", "iteration": 8, "strategy": "source_only", "score": score,
             "collapsed": collapsed, "reasons": ["too much foreground"] if collapsed else []}  # fmt: skip
    out = choose(_Spec(tmp_path), start, chosen, rows)
    assert out["delivered"] == delivered and sentence in out["verdict"]
    assert out["source_only_score"] == score
    assert out["worse_than_source_only"] == (None if chosen is None else chosen["score"] < score)
    assert out["checkpoint"] == (str(tmp_path / "masktwins" / SELECTED_FILE) if delivered == "adapted" else "pre.pt")


def test_the_source_only_start_is_scored_with_the_adaptations_resolved_mask_block(tmp_path):
    from mtbio.uda.adapt_choice import strategy_block
    from mtbio.uda.config import DEFAULT_BLOCK_VOXELS, UDAConfig

    spec = _Spec(tmp_path)
    assert spec.config.block_size is None and strategy_block(spec) == DEFAULT_BLOCK_VOXELS  # nothing resolved yet
    record = WeightsRecord.from_network(get_network("small_unet", 3), network="small_unet", spatial_dims=3)
    record.config = UDAConfig(block_size=(4, 16, 16)).to_dict()  # what run_training resolved and recorded
    write_weights(record, tmp_path / "masktwins" / "final.pt")
    assert strategy_block(spec) == (4, 16, 16)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_volume_signal_reads_the_store_section_by_section(tmp_path, dtype):
    from mtbio.data.store import create_prediction_store, encode_probability, mark_complete
    from mtbio.uda.adapt_report import section_indices, volume_signal

    rng = np.random.default_rng(0)
    prob = rng.random((5, 20, 24)).astype(np.float32)
    prob[3] = 0.1  # an empty section: Dice 0 with its non-empty neighbours
    store = create_prediction_store(tmp_path / "p.zarr", prob.shape, dtype=dtype, chunks=(2, 20, 24))
    store.array[:] = encode_probability(np.stack([1 - prob, prob]), dtype)
    mark_complete(tmp_path / "p.zarr")
    signal = volume_signal(tmp_path / "p.zarr")
    mask = open_prediction_store(tmp_path / "p.zarr").probability() >= 0.5
    assert signal["foreground_fraction"] == pytest.approx([float(m.mean()) for m in mask])
    dice = [2 * (a & b).sum() / (a.sum() + b.sum()) for a, b in zip(mask[:-1], mask[1:])]
    assert signal["adjacent_dice"] == pytest.approx(dice) and signal["adjacent_dice"][2] == 0.0
    assert section_indices(5, 3) == [0, 2, 4] and section_indices(1, 3) == [0] and section_indices(40, 2) == [10, 30]


# ---------------------------------------------------------------- bad inputs, refused before training


def _zarr(path: Path, array: np.ndarray, voxel=(10.0, 10.0, 10.0)) -> str:
    z = zarr.open_group(str(path), mode="w")
    z.create_array("raw", data=array)
    z.attrs["voxel_size"] = list(voxel)
    return f"{path}:raw"


def _cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_a_constant_target_is_refused_before_training(data, tmp_path, capsys):
    target = _zarr(tmp_path / "flat.zarr", np.full((3, 48, 48), 7, np.uint8))
    args = _args(data, tmp_path / "out")
    args[args.index("--target") + 1] = target
    code, err = _cli(args, capsys)
    assert code == 1 and "flat.zarr" in err and "constant" in err and "no signal" in err
    assert not (tmp_path / "out").exists()


def test_a_target_smaller_than_the_crop_is_refused_naming_the_sizes(data, tmp_path, capsys):
    rng = np.random.default_rng(0)
    target = _zarr(tmp_path / "small.zarr", rng.integers(0, 255, (3, 24, 40), dtype=np.uint8))
    args = _args(data, tmp_path / "out")
    args[args.index("--target") + 1] = target
    code, err = _cli(args, capsys)
    assert code == 1 and "small.zarr" in err and "(24, 40) is smaller than the training crop (32, 32)" in err
    assert "--crop-size" in err and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"\(3, 24, 40\) is smaller than the training crop \(4, 32, 32\)"):
        check_target(np.ones((3, 24, 40)), Recipe(crop_size=(4, 32, 32)), "t")


def _record(path: Path, name: str, dims: int) -> Path:
    net = get_network(name, dims)
    write_weights(WeightsRecord.from_network(net, network=name, spatial_dims=dims, strategy="source_only"), path)
    return path


def test_a_source_model_of_another_network_or_dims_is_refused_naming_the_file(data, tmp_path, capsys):
    args = _args(data, tmp_path / "out")
    # a 3D model for this 2D run (--crop-size 32)
    code, err = _cli([*args, "--source-model", str(_record(tmp_path / "m3d.pt", "small_unet", 3))], capsys)
    assert code == 1 and "m3d.pt" in err and "'small_unet' network (3D)" in err and "(2D" in err
    # another network than --network asks for
    other = _record(tmp_path / "basic.pt", "basic_unet", 2)
    with pytest.raises(ValueError, match=r"basic\.pt: holds a 'basic_unet' network \(2D\); this run builds a "):
        run_adapt(_spec([*args, "--source-model", str(other)]))
    assert not (tmp_path / "out").exists()
    # without --network the run takes the source model's network
    words = [w for i, w in enumerate(args) if w != "--network" and args[i - 1] != "--network"]
    assert _spec([*words, "--source-model", str(other)]).recipe.network == "basic_unet"


def test_adapt_needs_a_source_and_a_source_only_start(data, tmp_path):
    target = np.random.default_rng(0).random((2, 32, 32))
    with pytest.raises(ValueError, match="replaces the source-only pre-training, not the source data"):
        AdaptSpec(out=tmp_path, target_image=target, source_model=tmp_path / "m.pt")
    with pytest.raises(ValueError, match="source-only start: set pretrain_iterations > 0"):
        AdaptSpec(out=tmp_path, target_image=target, source_image=target, source_label=target > 0.5,
                  recipe=Recipe(pretrain_iterations=0))  # fmt: skip
    with pytest.raises(ValueError, match="does not adapt to an unlabelled target"):
        from mtbio.uda.config import UDAConfig

        AdaptSpec(out=tmp_path, target_image=target, source_image=target, source_label=target > 0.5,
                  config=UDAConfig(strategy="oracle"))  # fmt: skip


def test_a_run_stopped_in_training_resumes_and_finishes(data, tmp_path):
    out = tmp_path / "out"
    args = _args(data, out)
    stopped = run_adapt(_spec(args, stop_after=1))  # after the first pre-training iteration
    assert not stopped.complete and stopped.stopped_in == "training"
    assert not (out / "selected.json").exists() and not (out / "prediction.zarr").exists()
    done = run_adapt(_spec(args))
    assert done.complete and _selected(out)["complete"] is True
    assert open_prediction_store(out / "prediction.zarr").complete
    assert _selected(out)["iterations_trained"] == {"pretrain": 2, "strategy": 4}
    assert read_weights(out / "masktwins" / "final.pt").iteration == 4


def test_a_signal_in_training_exits_143_and_its_seconds_count(data, tmp_path, monkeypatch):
    """A SIGTERM in the MaskTwins stage stops at an iteration boundary (TrainingInterrupted, exit 143); the stopped
    call's iterations and seconds are in timings.json, and the rerun's totals add up to the recipe's."""
    from ignite.engine import Events

    from mtbio.uda import run as run_module
    from mtbio.uda.interrupt import TrainingInterrupted

    original = run_module._progress

    def progress_then_signal(trainer, name, *rest):
        if name != "pretrain":  # a real SIGTERM to this process after the strategy's first iteration
            trainer.add_event_handler(
                Events.ITERATION_COMPLETED(once=1), lambda _: os.kill(os.getpid(), signal.SIGTERM)
            )
        return original(trainer, name, *rest)

    out = tmp_path / "out"
    args = _args(data, out)
    monkeypatch.setattr(run_module, "_progress", progress_then_signal)
    with pytest.raises(TrainingInterrupted) as stop:
        run_adapt(_spec(args))
    assert stop.value.code == 143 and stop.value.stage == "masktwins" and stop.value.seconds > 0
    calls = json.loads((out / "timings.json").read_text())["calls"]
    assert len(calls) == 1 and calls[0]["stopped"].startswith("SIGTERM in masktwins after iteration")
    assert calls[0]["pretrain_iterations"] == 2 and calls[0]["strategy_iterations"] == stop.value.iteration >= 1
    assert calls[0]["strategy"] > 0 and calls[0]["pretrain"] > 0
    monkeypatch.setattr(run_module, "_progress", original)
    done = run_adapt(_spec(args))
    assert done.complete and _selected(out)["calls"] == 2
    assert _selected(out)["iterations_trained"] == {"pretrain": 2, "strategy": 4}
