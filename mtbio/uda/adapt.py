"""``run_adapt``: adapt to one new, unlabelled volume and deliver its prediction, without a single target label.

Every entry point (``mtbio adapt``, the bundles' ``adapt`` run id) builds an :class:`AdaptSpec` and calls
:func:`run_adapt`, which runs five stages:

1. **source-only start**: the recipe's source-only pre-training (``recipe.pretrain_iterations``, run by
   :func:`mtbio.uda.run.run_training` in ``OUT/pretrain``) or, with ``source_model``, that weights file (checked to
   hold the recipe's network and spatial dims; the adaptation then starts from it, ``pretrain_iterations = 0``);
2. **adaptation**: the UDA strategy (MaskTwins by default) through :func:`~mtbio.uda.run.run_training` in
   ``OUT/<strategy>``, with the target given, so every checkpoint is scored label-free
   (:mod:`mtbio.uda.guard`: ``scores.jsonl``, ``selected.pt``);
3. **label-free choice**: the best non-collapsed checkpoint of the adaptation (:func:`mtbio.uda.guard.select_row`)
   against the source-only start, scored as the guard scores checkpoints, on the same fixed target sample
   (:func:`mtbio.uda.adapt_choice.score_source_only`).
   The adapted model is delivered unless its score is below the source-only start's (``worse_than_source_only``)
   or every adapted checkpoint collapsed; then the source-only model is delivered and the report says so. A
   collapsed source-only start never wins over a healthy adapted checkpoint;
4. **prediction** of the whole target into ``OUT/prediction.zarr`` through the path of ``mtbio predict``
   (:func:`mtbio.inference.resampled.predict_at_model_voxel_size`: streaming, resumable, at the model's voxel size);
5. **report**: ``OUT/selected.json``, ``OUT/report.md`` and ``OUT/figures/*.png`` (:mod:`mtbio.uda.adapt_report`).

Running the same call again after an interruption continues where it stopped: the training stages resume from
their checkpoints (or are kept when finished), the prediction store resumes (it is replaced when the delivered
model or the inference settings changed), and the choice and the report are made again.

Layout of ``out``::

    out/pretrain/          the source-only pre-training run (run_training's layout; scores.jsonl)
    out/<strategy>/        the adaptation run (checkpoints, final.pt, scores.jsonl, selected.pt, tb/)
    out/prediction.zarr    the delivered model's prediction store (OME-Zarr, channel 1 = foreground probability)
    out/selected.json      what was delivered and why (keys in :func:`run_adapt`)
    out/report.md          the report in plain words, with out/figures/*.png
    out/timings.json       seconds and iterations of every call (summed in selected.json)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtbio.inference.settings import TOOL_DEFAULTS, InferenceSettings
from mtbio.uda import adapt_output as output
from mtbio.uda.adapt_choice import check_source_model, choose, score_source_only
from mtbio.uda.adapt_output import PREDICTION, SELECTED_JSON
from mtbio.uda.config import UDAConfig
from mtbio.uda.guard import read_scores, select_row
from mtbio.uda.recipe import Recipe
from mtbio.uda.strategy import strategy_spec

__all__ = [
    "PREDICTION",
    "REPORT",
    "SELECTED_JSON",
    "AdaptResult",
    "AdaptSpec",
    "PredictionInterrupted",
    "check_target",
    "run_adapt",
]

REPORT = "report.md"
#: the stages, as the progress messages number them
STAGES = ("source-only start", "adaptation", "label-free choice", "prediction", "report")


class PredictionInterrupted(SystemExit):
    """SIGINT / SIGTERM stopped the prediction at a block boundary: the store is incomplete and resumable (calling
    again continues it). A :class:`SystemExit` with code ``128 + signum`` (130 / 143), like
    :class:`~mtbio.uda.interrupt.TrainingInterrupted`."""

    def __init__(self, signum: int, store: Path) -> None:
        super().__init__(128 + int(signum))
        self.signum, self.store = int(signum), Path(store)

    def __str__(self) -> str:
        import signal

        return f"prediction stopped by {signal.Signals(self.signum).name}: {self.store} is incomplete and resumable"


@dataclass
class AdaptSpec:
    """Everything one adaptation needs.

    Attributes:
        out: the output folder (layout in the module docstring).
        target_image: the unlabelled target ``(Z, Y, X)`` volume to adapt to and predict (lazy ``Volume`` or array).
        source_image: the labelled source ``(Z, Y, X)`` volume (the strategy's supervised term trains on it).
        source_label: its labels.
        source_model: a source-only weights file to start from instead of the recipe's pre-training (``None``: the
            pre-training runs, ``recipe.pretrain_iterations > 0``).
        config: the UDA step (default MaskTwins); its strategy must adapt on the target without its labels.
        recipe: the training settings (the validated Recipe by default; ``score_crops > 0``).
        inference: the prediction settings (``mtbio predict``'s defaults; ``device`` ``None`` = ``device``).
        target_voxel_size: the target's voxel size ``(z, y, x)`` in nm, overriding the file's.
        source_voxel_size: the source's voxel size, overriding the file's.
        resample: resample the source to the target's voxel size for training, and the target to the delivered
            model's voxel size for prediction, when they differ by more than 10 % (``False``: use them as given).
        target_description: what the target is (its path; named in errors, weights and the report).
        source_description: what the source is.
        network: a network module built elsewhere (a bundle's ``network_def``) instead of ``recipe.network``.
        pretrain_out: the pre-training's run folder (default ``out/pretrain``).
        pretrain_weights: its weights file (default ``pretrain_out/final.pt``).
        device: training (and, unless ``inference.device`` is set, prediction) device.
        in_memory: read the volumes into memory for training (``False`` slices them lazily).
        stop_after: end the training of this call after iteration N of a stage (a time-boxed job); calling again
            resumes.
        stop: polled by the prediction before each block; ``True`` ends it early, resumable (``mtbio adapt``'s
            Ctrl-C).
        figure_sections: target sections shown source-only vs adapted in the report.
        progress: progress bars (on terminals).
        logger: name of the logger of the stage messages.
        record: further plain values for ``selected.json`` (e.g. the command line).
    """

    out: Path
    target_image: Any
    source_image: Any = None
    source_label: Any = None
    source_model: Path | None = None
    config: UDAConfig = field(default_factory=UDAConfig)
    recipe: Recipe = field(default_factory=Recipe)
    inference: InferenceSettings = TOOL_DEFAULTS
    target_voxel_size: tuple[float, ...] | None = None
    source_voxel_size: tuple[float, ...] | None = None
    resample: bool = True
    target_description: str | None = None
    source_description: str | None = None
    network: Any = None
    pretrain_out: Path | None = None
    pretrain_weights: Path | None = None
    device: str = "cpu"
    in_memory: bool = False
    stop_after: int | None = None
    stop: Callable[[], bool] | None = None
    figure_sections: int = 3
    progress: bool = True
    logger: str = "mtbio.adapt"
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.source_model is not None:
            self.source_model = Path(self.source_model)
            self.recipe = dataclasses.replace(self.recipe, pretrain_iterations=0)
        if self.target_image is None:
            raise ValueError("adapt needs a target volume")
        uses = strategy_spec(self.config.strategy)
        name = self.config.strategy.value
        if not uses.uses_target or uses.target_supervised:
            raise ValueError(
                f"strategy {name} does not adapt to an unlabelled target: choose a UDA strategy (masktwins, "
                "mean_teacher, mic, random_pair)"
            )
        if uses.uses_source and (self.source_image is None or self.source_label is None):
            extra = (
                " (--source-model replaces the source-only pre-training, not the source data: the strategy's "
                "supervised term trains on labelled source crops beside the target)"
                if self.source_model is not None
                else ""
            )
            raise ValueError(f"strategy {name} needs a labelled source: a source image and its labels{extra}")
        if self.source_model is None and self.recipe.pretrain_iterations < 1:
            raise ValueError(
                "adapt compares the adapted model with a source-only start: set pretrain_iterations > 0 or give a "
                "source-only model (--source-model)"
            )
        if self.inference.activation is None:
            raise ValueError("adapt stores probabilities: the inference activation must be softmax or sigmoid")
        if self.recipe.score_crops < 1:
            raise ValueError("adapt chooses a checkpoint by its label-free score: score_crops must be > 0")
        if self.figure_sections < 1:
            raise ValueError(f"figure_sections must be >= 1, got {self.figure_sections}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"stop_after must be >= 1 or None, got {self.stop_after}")

    @property
    def strategy_dir(self) -> Path:
        return self.out / self.config.strategy.value

    @property
    def pretrain_dir(self) -> Path:
        from mtbio.uda.run import pretrain_paths

        return pretrain_paths(self.out, self.pretrain_out, self.pretrain_weights)[0]

    @property
    def pretrain_weights_path(self) -> Path:
        from mtbio.uda.run import pretrain_paths

        return pretrain_paths(self.out, self.pretrain_out, self.pretrain_weights)[1]

    @property
    def source_only_weights(self) -> Path:
        """The source-only start's weights file (the given model, or the pre-training's)."""
        return self.source_model if self.source_model is not None else self.pretrain_weights_path

    @property
    def name(self) -> str:
        return self.target_description or "the target volume"


@dataclass
class AdaptResult:
    """What :func:`run_adapt` did.

    Attributes:
        complete: every stage finished (``False``: the training stopped early, ``stop_after``, or the prediction
            was stopped; calling again resumes).
        selected: the content of ``selected.json`` (``None`` when the training did not finish).
        checkpoint: the delivered weights file.
        delivered: ``"adapted"`` or ``"source_only"``.
        prediction: the prediction store (``None`` until it is complete).
        report: ``report.md`` (``None`` until the prediction is complete).
        stopped_in: the stage that stopped early (``"training"`` / ``"prediction"``), else ``None``.
    """

    complete: bool
    selected: dict[str, Any] | None = None
    checkpoint: Path | None = None
    delivered: str | None = None
    prediction: Path | None = None
    report: Path | None = None
    stopped_in: str | None = None


def check_target(volume: Any, recipe: Recipe, name: str) -> None:
    """Refuse a target that cannot be adapted to, before any training: not ``(Z, Y, X)``, smaller than the training
    crop (the crops are not clipped: a smaller crop changes the recipe, so it is the user's choice), or constant (no
    signal: read section by section until one differs). The label-free score's crops are clipped to the target
    (:func:`mtbio.uda.guard.score_crop_size`).

    Raises:
        ValueError: naming ``name`` and the sizes / the problem.
    """
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 3:
        raise ValueError(f"{name}: expected a (Z, Y, X) volume, got shape {shape}")
    crop = recipe.crop
    spatial = shape[1:] if len(crop) == 2 else shape
    if any(c > s for c, s in zip(crop, spatial)):
        axes = "(Y, X)" if len(crop) == 2 else "(Z, Y, X)"
        raise ValueError(
            f"{name}: the target {axes} {spatial} is smaller than the training crop {crop}: pass a crop of at most "
            f"{spatial} (--crop-size; a multiple of the network's down-sampling)"
        )
    first = None
    for z in range(shape[0]):
        section = np.asarray(volume[z])
        low, high = float(np.nanmin(section)), float(np.nanmax(section))
        if high > low or (first is not None and low != first):
            return
        first = low
    raise ValueError(f"{name}: the target volume is constant (every voxel is {first:g}): no signal to adapt to")


def run_adapt(spec: AdaptSpec) -> AdaptResult:
    """Adapt, choose label-free, predict and report (see the module docstring).

    ``selected.json`` holds: ``checkpoint`` (the delivered weights file), ``delivered`` (``"adapted"`` /
    ``"source_only"``), ``strategy`` / ``iteration`` / ``score`` / ``collapsed`` / ``reasons`` of the delivered
    model, ``source_only_score``, ``worse_than_source_only`` (the chosen adapted checkpoint scored below the
    source-only start; ``None`` when none was chosen), ``all_collapsed``, ``verdict`` (the report's sentence),
    ``adapted`` (the chosen row, or ``None``), ``source_only`` (its score record), ``source_fraction``, ``runs``,
    ``iterations``, ``seconds`` (per stage, summed over calls), ``sec_per_iter``, ``prediction``, ``target``,
    ``settings`` and ``record``.

    Raises:
        ValueError: a bad target (:func:`check_target`), a source model that does not fit the recipe, a resume with
            other training settings.
        TrainingInterrupted: SIGINT / SIGTERM during training (a checkpoint is written; calling again resumes).
        PredictionInterrupted: SIGINT / SIGTERM during the prediction (the store resumes when called again).
    """
    from mtbio.uda.interrupt import TrainingInterrupted
    from mtbio.uda.run import RunSpec, run_training

    log = _logger(spec.logger)
    recipe, cfg = spec.recipe, spec.config
    check_target(spec.target_image, recipe, spec.name)
    if spec.source_model is not None:
        check_source_model(spec)
    strategy = cfg.strategy.value
    before = {
        "pretrain": output.done_iterations(spec.pretrain_dir),
        "strategy": output.done_iterations(spec.strategy_dir),
    }
    if spec.source_model is None:
        _stage(log, 1, f"source-only pre-training, {recipe.pretrain_iterations} iterations in {spec.pretrain_dir}")
    else:
        _stage(log, 1, f"source-only start: {spec.source_model}")
    _stage(log, 2, f"{strategy}, {recipe.iterations} iterations in {spec.strategy_dir} (checkpoints scored label-free)")
    run_spec = RunSpec(
        out=spec.strategy_dir,
        config=cfg,
        recipe=recipe,
        source_image=spec.source_image,
        source_label=spec.source_label,
        target_image=spec.target_image,
        source_voxel_size=spec.source_voxel_size,
        target_voxel_size=spec.target_voxel_size,
        resample=spec.resample,
        source_description=spec.source_description,
        target_description=spec.target_description,
        network=spec.network,
        init_weights=spec.source_model,
        pretrain_out=spec.pretrain_dir,
        pretrain_weights=spec.pretrain_weights_path,
        device=spec.device,
        in_memory=spec.in_memory,
        stop_after=spec.stop_after,
        resume="auto",
        logger=f"{spec.logger}.train",
        progress=spec.progress,
        record={"adapt": str(spec.out), **spec.record},
    )
    t0 = time.perf_counter()
    try:
        result = run_training(run_spec)
    except TrainingInterrupted as stop:  # a stopped call's seconds count too (timings.json); exits 130 / 143
        output.append_timing(spec.out, output.stopped_timing(spec, stop, before, time.perf_counter() - t0))
        raise
    train_seconds = time.perf_counter() - t0
    call = output.call_timing(spec, result, before, train_seconds)
    if not result.complete:
        output.append_timing(spec.out, call)
        log.info(f"training stopped early ({result.pretrain or strategy} stage); run the same command again to resume")
        return AdaptResult(complete=False, stopped_in="training")

    _stage(log, 3, f"best label-free score of {spec.strategy_dir.name} vs the source-only start")
    t0 = time.perf_counter()
    source_only = score_source_only(spec)
    call["source_only_score"] = time.perf_counter() - t0
    rows = read_scores(spec.strategy_dir)
    pre_rows = read_scores(spec.pretrain_dir) if spec.source_model is None else []
    chosen = select_row(rows)
    selected = choose(spec, source_only, chosen, rows)
    selected.update(
        runs={"pretrain": None if spec.source_model else str(spec.pretrain_dir), strategy: str(spec.strategy_dir)},
        target=spec.target_description,
        source=spec.source_description,
        settings=output.settings_record(spec),
        record=spec.record,
    )
    log.info(selected["verdict"])

    _stage(log, 4, f"prediction of {spec.name} -> {spec.out / PREDICTION}")
    t0 = time.perf_counter()
    plan = output.prediction_plan(spec, Path(selected["checkpoint"]))
    previous = output.previous_selected(spec.out)
    selected["prediction_identity"] = plan["identity"]
    output.write_selected(spec.out, selected, call_done=False)  # a killed prediction resumes with the same identity
    from mtbio.uda.interrupt import SignalFlag

    with SignalFlag() as flag:  # SIGINT / SIGTERM: finish the blocks in flight, leave the store resumable
        store = output.predict(
            spec, plan, previous, log, lambda: flag.signum is not None or bool(spec.stop and spec.stop())
        )
    call["prediction"] = time.perf_counter() - t0
    if store is None and flag.signum is not None:
        output.append_timing(spec.out, call)
        raise PredictionInterrupted(flag.signum, spec.out / PREDICTION)
    if store is None:
        output.append_timing(spec.out, call)
        selected = output.write_selected(spec.out, selected, call_done=False)
        log.info("prediction stopped early; run the same command again to resume")
        return AdaptResult(
            complete=False, selected=selected, checkpoint=Path(selected["checkpoint"]),
            delivered=selected["delivered"], stopped_in="prediction",
        )  # fmt: skip
    selected["prediction"] = str(store)

    _stage(log, 5, f"report -> {spec.out / REPORT}")
    from mtbio.uda.adapt_report import write_report

    t0 = time.perf_counter()
    timings = output.append_timing(spec.out, call)
    selected.update(output.summed(timings, recipe))
    report = write_report(spec, selected, pre_rows=pre_rows, rows=rows, store=store)
    call["report"] = time.perf_counter() - t0
    timings = output.append_timing(spec.out, call, replace_last=True)
    selected.update(output.summed(timings, recipe))
    selected = output.write_selected(spec.out, selected, call_done=True)
    log.info(f"wrote {spec.out / SELECTED_JSON}, {report} and {store}")
    return AdaptResult(
        complete=True, selected=selected, checkpoint=Path(selected["checkpoint"]), delivered=selected["delivered"],
        prediction=store, report=report,
    )  # fmt: skip


def _logger(name: str) -> logging.Logger:
    log = logging.getLogger(name)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    return log


def _stage(log: logging.Logger, number: int, message: str) -> None:
    log.info(f"[{number}/{len(STAGES)}] {STAGES[number - 1]}: {message}")
