"""The one path of a training run: a :class:`RunSpec` in, :func:`run_training` does everything, a weights record out.

Every entry point (``mtbio train``, ``mtbio demo``, the bundle workflow's ``train``, the benchmarks) builds a
:class:`RunSpec` and calls :func:`run_training`, which owns:

* the training grid (the source resampled to the target's voxel size, :func:`mtbio.data.resample.training_grid`);
* the source-only pre-training when ``recipe.pretrain_iterations > 0``: a run of its own in ``pretrain_out``
  (default ``OUT/pretrain``), reused when its weights file holds that many iterations, resumed when interrupted;
  the strategy then starts from its EMA weights (student and teacher);
* checkpoint discovery and resume (``resume``: ``"auto"`` continues from the newest checkpoint and keeps a finished
  run, ``"require"`` needs a checkpoint, ``"never"`` refuses a folder that holds checkpoints), refusing a resume
  with other training settings than the run's ``config.json``;
* resumable checkpoints (:func:`~mtbio.uda.trainer.attach_checkpointing`), the console log (MONAI
  ``StatsHandler``), TensorBoard (``OUT/tb``) and a progress bar (``tqdm``, on terminals);
* SIGINT / SIGTERM: the trainer stops after the current iteration with a checkpoint
  (:class:`~mtbio.uda.interrupt.TrainingInterrupted` propagates, exit status 130 / 143);
* the mask block (``UDAConfig.block_size=None`` follows the data's scale, :mod:`mtbio.uda.blocks`): in nm at the
  target's voxel size, or, when that is unknown, scaled by the object sizes measured in the source labels and in the
  source-only model's target predictions (after the pre-training; a run folder keeps its measured block on resume);
  logged, and recorded as ``mask_block`` beside the resolved ``config.block_size``;
* ``OUT/config.json`` (the resolved settings) and the weights record (:mod:`mtbio.networks.weights`), written once
  at the end, with the voxel size, normalisation, strategy, seed, crop, UDA config, network, provenance and
  ``extra["source_foreground_fraction"]`` (what ``mtbio score``'s collapse rule compares against);
* the collapse guard (:mod:`mtbio.uda.guard`) when the spec has a ``target_image`` and ``recipe.score_crops > 0``:
  every stage (the pre-training too, and strategies that do not train on the target) scores its EMA teacher
  without labels on one fixed crop sample of the target at every checkpoint interval and at the end
  (``scores.jsonl``), keeps the best non-collapsed checkpoint as ``selected.pt`` and warns when a checkpoint, or the
  run (its last checkpoint), collapsed. A target the source-only stage does not train on is scored on the
  training grid (resampled to the source's voxel size when they differ). A reused finished stage keeps its files;
  one trained without scoring gets the row of its final weights.

Layout of ``out``::

    out/config.json                          resolved settings of the run
    out/checkpoint_[final_]iteration=N.pt    resumable checkpoints (student, teacher, optimizer, iteration)
    out/tb/                                  TensorBoard logs
    out/validation.json                      target validation history (when ``eval_image`` is given)
    out/scores.jsonl                         label-free score of each checkpoint (when ``target_image`` is given)
    out/selected.pt                          weights record of the best non-collapsed checkpoint (its row in
                                             ``extra["selection"]``); absent while every checkpoint collapsed
    out/final.pt                             the weights record (``weights`` overrides the path)
    out/pretrain/...                         the pre-training run, same layout (``pretrain_out`` overrides it)
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mtbio.data.normalize import default_normalization
from mtbio.provenance import git_hash, write_json_atomic
from mtbio.uda.config import UDAConfig
from mtbio.uda.recipe import PRETRAIN_SEED_OFFSET, Recipe
from mtbio.uda.strategy import MaskKind, Strategy, strategy_spec

__all__ = ["RunResult", "RunSpec", "pretrain_paths", "run_training"]

Resume = Literal["auto", "require", "never"]
#: settings a resumed run may change (they do not change the trained weights; rows scored before a change of the
#: score settings stay as they were scored)
RESUME_MAY_CHANGE = frozenset(
    {"recipe.checkpoint_interval", "recipe.log_interval", "recipe.score_crops", "recipe.score_crop_size"}
)
#: settings added after runs were recorded without them -> the value those runs were trained with (a resume that asks
#: for another value is refused like any other change; settings not listed and not recorded are not compared)
RESUME_ABSENT_MEANS: dict[str, Any] = {"config.source_augment": False, "recipe.target_planes": "xy"}


@dataclass
class RunSpec:
    """Everything one training run needs.

    Attributes:
        out: the run folder (layout in the module docstring).
        config: the UDA step (:class:`~mtbio.uda.config.UDAConfig`; its ``strategy`` is the run's).
        recipe: the training settings (:class:`~mtbio.uda.recipe.Recipe`; the validated values by default).
        source_image: labelled source ``(Z, Y, X)`` volume (``None`` when the strategy uses no source).
        source_label: its labels.
        target_image: unlabelled target ``(Z, Y, X)`` volume (``None`` for source-only).
        target_label: target labels, read only by the ``oracle`` strategy.
        source_voxel_size: source voxel size ``(z, y, x)`` in nm overriding the volume's ``voxel_size``.
        target_voxel_size: target voxel size ``(z, y, x)`` in nm overriding the volume's ``voxel_size``.
        resample: resample the source to the target's voxel size when they differ by more than 10 %.
        source_description: what the source data is (recorded in the weights' provenance).
        target_description: what the target data is.
        network: a network module built elsewhere (a bundle's ``network_def``; copied and re-initialised from the
            seed) instead of ``recipe.network``.
        init_weights: start weights (a weights file or a ``state_dict``); the pre-training, when there is one,
            starts from them, else the run does. ``None`` = a random initialisation from the seed.
        weights: the weights file written at the end (default ``out/final.pt``).
        pretrain_out: the pre-training's run folder (default ``out/pretrain``; may be shared by runs of one seed).
        pretrain_weights: the pre-training's weights file (default ``pretrain_out/final.pt``).
        device: training device.
        distributed: data parallel over the initialised ``torch.distributed`` process group (files on rank 0).
        in_memory: read the volumes into memory once (``False`` slices them lazily).
        stop_after: end this call after iteration N of a stage (a time-boxed job); calling again resumes.
        resume: ``"auto"``, ``"require"`` or ``"never"`` (module docstring).
        eval_image: labelled target image to validate the teacher on (``None`` = no validation).
        eval_label: its labels.
        val_interval: validate every N iterations (0 = only at the end).
        n_saved: periodic checkpoints kept (the newest ones; ``None`` keeps every one, e.g. to evaluate each
            scored checkpoint afterwards, as ``benchmarks/model_selection.py`` does).
        logger: name of the logger of the losses and messages.
        progress: show a progress bar (on terminals only).
        record: further plain values for ``config.json`` (e.g. the command line).
    """

    out: Path
    config: UDAConfig = field(default_factory=UDAConfig)
    recipe: Recipe = field(default_factory=Recipe)
    source_image: Any = None
    source_label: Any = None
    target_image: Any = None
    target_label: Any = None
    source_voxel_size: tuple[float, ...] | None = None
    target_voxel_size: tuple[float, ...] | None = None
    resample: bool = True
    source_description: str | None = None
    target_description: str | None = None
    network: torch.nn.Module | None = None
    init_weights: str | Path | Mapping[str, torch.Tensor] | None = None
    weights: Path | None = None
    pretrain_out: Path | None = None
    pretrain_weights: Path | None = None
    device: str | torch.device = "cpu"
    distributed: bool = False
    in_memory: bool = True
    stop_after: int | None = None
    resume: Resume = "auto"
    eval_image: Any = None
    eval_label: Any = None
    val_interval: int = 0
    n_saved: int | None = 2
    logger: str = "mtbio.train"
    progress: bool = True
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.resume not in ("auto", "require", "never"):
            raise ValueError(f"resume must be 'auto', 'require' or 'never', got {self.resume!r}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"stop_after must be >= 1 or None, got {self.stop_after}")
        if (self.eval_image is None) != (self.eval_label is None):
            raise ValueError("eval_image and eval_label go together")
        spec = strategy_spec(self.config.strategy)
        name = self.config.strategy.value
        if spec.uses_source and (self.source_image is None or self.source_label is None):
            raise ValueError(f"strategy {name} needs a source image and labels")
        if spec.uses_target and self.target_image is None:
            raise ValueError(f"strategy {name} needs a target image")
        if spec.target_supervised and self.target_label is None:
            raise ValueError(f"strategy {name} needs target labels")
        if self.recipe.pretrain_iterations > 0 and (self.source_image is None or self.source_label is None):
            raise ValueError("pretrain_iterations > 0 needs a source image and labels")

    @property
    def weights_path(self) -> Path:
        return Path(self.weights) if self.weights is not None else self.out / "final.pt"

    @property
    def pretrain_dir(self) -> Path:
        return pretrain_paths(self.out, self.pretrain_out, self.pretrain_weights)[0]

    @property
    def pretrain_weights_path(self) -> Path:
        return pretrain_paths(self.out, self.pretrain_out, self.pretrain_weights)[1]


def pretrain_paths(
    out: str | Path, pretrain_out: str | Path | None = None, pretrain_weights: str | Path | None = None
) -> tuple[Path, Path]:
    """The pre-training's run folder (``pretrain_out``, default ``out/pretrain``) and weights file
    (``pretrain_weights``, default ``<folder>/final.pt``)."""
    folder = Path(pretrain_out) if pretrain_out is not None else Path(out) / "pretrain"
    return folder, Path(pretrain_weights) if pretrain_weights is not None else folder / "final.pt"


@dataclass
class RunResult:
    """What :func:`run_training` did.

    Attributes:
        weights: the weights file, or ``None`` when this call stopped early (``stop_after``).
        iteration: completed iterations of the last stage run (the strategy's, or the pre-training's when that
            stopped early).
        complete: the run has all its iterations (and its weights file).
        seconds: training wall-clock seconds of the strategy's stage in this call, its checkpoints' scoring and
            validation included (0 when it was already done).
        sec_per_iter: ``seconds`` per iteration trained in this call (``None`` when none was).
        resumed_from: the checkpoint the strategy's stage resumed from.
        pretrain: ``"trained"``, ``"reused"`` (the cached pre-training), ``"stopped"`` (the pre-training stopped
            early, ``stop_after``: the strategy did not start) or ``None`` (no pre-training).
        validation: the target validation history (``None`` without ``eval_image``).
        voxel_size: the training grid's voxel size (network axes, nm) or ``None``.
        grid_note: what was done to bring the volumes to one grid.
        mask_block: the strategy's resolved mask block and its derivation (:meth:`mtbio.uda.blocks.MaskBlock.to_dict`).
        scores: the strategy stage's ``scores.jsonl`` rows (:func:`mtbio.uda.guard.read_scores`); ``None`` without
            scoring (no ``target_image``, ``score_crops=0``) or when the pre-training stopped early.
        selected_weights: the strategy stage's ``selected.pt`` (``None`` when absent).
    """

    weights: Path | None
    iteration: int
    complete: bool
    seconds: float = 0.0
    sec_per_iter: float | None = None
    resumed_from: Path | None = None
    pretrain: str | None = None
    validation: list[dict[str, float]] | None = None
    voxel_size: list[float] | None = None
    grid_note: str = ""
    mask_block: dict[str, Any] | None = None
    scores: list[dict[str, Any]] | None = None
    selected_weights: Path | None = None
    trained_network: torch.nn.Module | None = field(default=None, repr=False)

    def teacher(self, network: torch.nn.Module | None = None) -> torch.nn.Module:
        """The EMA teacher in eval mode: the trained module when this call trained it, else rebuilt from the
        weights file (loaded into a copy of ``network`` when the record names no mtbio network)."""
        if self.trained_network is not None:
            return self.trained_network.eval()
        if self.weights is None:
            raise ValueError("the run stopped before its end: no weights")
        from mtbio.networks.weights import read_weights

        record = read_weights(self.weights)
        if record.network is None and network is not None:
            import copy

            return record.load_into(copy.deepcopy(network), self.weights).eval()
        return record.build_network(self.weights)


#: logged (WARNING) when a strategy adapts to a target whose voxel size is unknown
UNKNOWN_TARGET_SCALE = (
    "the target's voxel size is unknown: its objects are taken to look about as large as the source's. Measured "
    "(docs/uda.md 'Robustness to object scale'): with objects 2.5x smaller MaskTwins still adapts, with objects 2x "
    "larger both source-only and MaskTwins fail (IoU < 1 %) unless the source crops are zoom-augmented "
    "(--source-zoom 2.5: MaskTwins 47 IoU there, one seed; it costs 7 IoU where the scales match). Give the "
    "target's voxel size when you know it "
    "(mtbio adapt --voxel-size Z Y X, mtbio train --target-voxel-size Z Y X, or the file's metadata)."
)


def run_training(spec: RunSpec) -> RunResult:
    """Run (or resume, or reuse) the training ``spec`` describes; see the module docstring.

    Returns:
        A :class:`RunResult`.

    Raises:
        TrainingInterrupted: SIGINT / SIGTERM stopped the run (a checkpoint of the completed iterations is written).
        FileExistsError: ``resume="never"`` and the run folder holds checkpoints.
        FileNotFoundError: ``resume="require"`` and there is no checkpoint.
        ValueError: a resume with other settings than the recorded ones; start weights that do not fit.
    """
    from mtbio.data.resample import training_grid

    log = logging.getLogger(spec.logger)
    recipe, cfg = spec.recipe, spec.config
    uses = strategy_spec(cfg.strategy)
    pretraining = recipe.pretrain_iterations > 0
    need_source = uses.uses_source or pretraining
    vs = (
        None if spec.source_voxel_size is None else tuple(spec.source_voxel_size),
        None if spec.target_voxel_size is None else tuple(spec.target_voxel_size),
    )
    grid = training_grid(
        spec.source_image if need_source else None,
        spec.source_label if need_source else None,
        spec.target_image if uses.uses_target else None,
        spec.target_label if uses.target_supervised else None,
        spatial_dims=recipe.spatial_dims,
        source_voxel_size=vs[0],
        target_voxel_size=vs[1],
        resample=spec.resample,
    )
    _info(log, f"voxel size: {grid.note}")
    if uses.uses_target and spec.target_image is not None and grid.target_voxel_size is None and _rank() == 0:
        log.warning(UNKNOWN_TARGET_SCALE)
    target_planes = _target_planes(spec, grid) if uses.uses_target else "xy"
    if target_planes != "xy":
        _info(log, "target crops: xy, xz and yz planes (target_planes)")
    fraction = _foreground_fraction(spec.source_label) if need_source else None
    sample = _score_sample(spec, grid, vs) if _rank() == 0 else None
    init_state, parent = _start_state(spec)
    main_policy = _policies(spec) if pretraining else spec.resume
    pretrain = None
    if pretraining:
        pre_cfg = replace(cfg, strategy=Strategy.SOURCE_ONLY)
        pre_block = _mask_block(spec, grid, pre_cfg, None)  # unused by source-only; recorded for `mtbio score`
        pre_cfg = _with_block(pre_cfg, pre_block)
        path = spec.pretrain_weights_path
        cached = _cached_pretrain(path, recipe, recipe.seed + PRETRAIN_SEED_OFFSET, pre_cfg)
        stage = _Stage(
            spec, "pretrain", pre_cfg, recipe.pretrain_iterations, recipe.seed + PRETRAIN_SEED_OFFSET,
            spec.pretrain_dir, path, "auto", mask_block=pre_block,
        )  # fmt: skip
        if cached is not None:
            _info(log, f"pretrain: reusing {path}")
            stage.score_reused(grid, parent, fraction, sample)
            pretrain = "reused"
        else:
            done = stage.run(grid, init_state, parent, fraction, sample)
            if not done.complete:
                return replace(done, pretrain="stopped", scores=None, selected_weights=None)
            pretrain = "trained"
        from mtbio.networks.weights import read_weights

        init_state, parent = read_weights(path).teacher, str(path)
    block = _mask_block(spec, grid, cfg, spec.pretrain_weights_path if pretraining else None)
    if uses.mask is not MaskKind.NONE:
        _info(log, f"{cfg.strategy.value}: {block.note}")
    cfg = _with_block(cfg, block)
    stage = _Stage(
        spec, cfg.strategy.value, cfg, recipe.iterations, recipe.seed, spec.out, spec.weights_path, main_policy,
        mask_block=block, target_planes=target_planes,
    )  # fmt: skip
    result = stage.run(grid, init_state, parent, fraction, sample, pretrained=pretraining)
    result.pretrain = pretrain
    result.mask_block = block.to_dict()
    return result


# --- mask blocks (UDAConfig.block_size=None follows the data's scale; the rules are mtbio.uda.blocks') ---


def _mask_block(spec: RunSpec, grid: Any, cfg: UDAConfig, source_only: Path | None) -> Any:
    """The :class:`~mtbio.uda.blocks.MaskBlock` of a stage of config ``cfg``. Object sizes are measured only where
    the rule needs them (``block_size=None``, target voxel size unknown) and the strategy masks, with the source-only
    model ``source_only`` (a weights file); a run folder's recorded measurement is reused (resume, finished run);
    under ``torch.distributed`` rank 0 measures and the others receive its result."""
    from mtbio.uda.blocks import measure_object_sizes, needs_object_sizes, resolve_mask_block

    crop = spec.recipe.crop
    target_vs = grid.target_voxel_size
    if target_vs is None and spec.target_image is not None:
        # a stage that trains without the target (source-only, the pre-training) records a masked strategy's block
        vs = spec.target_voxel_size or getattr(spec.target_image, "voxel_size", None)
        target_vs = None if vs is None else tuple(float(v) for v in vs)[-len(crop) :]
    kw: dict[str, Any] = dict(target_voxel_size=target_vs, source_voxel_size=grid.source_voxel_size)
    if strategy_spec(cfg.strategy).mask is MaskKind.NONE or not needs_object_sizes(cfg, target_vs):
        return resolve_mask_block(cfg, crop, **kw, unmeasured="the strategy uses no masks")
    recorded = _recorded_block(spec.out / "config.json", cfg)
    if recorded is not None:
        return recorded
    if source_only is None:
        why = "no source-only model to measure the target's objects with (pretrain_iterations 0)"
        return resolve_mask_block(cfg, crop, **kw, unmeasured=why)
    sizes = None
    if _rank() == 0:
        network = RunResult(source_only, 0, True).teacher(spec.network).to(spec.device)
        sizes = measure_object_sizes(network, grid.source_label, grid.target_image, roi_size=crop, device=spec.device)
    if spec.distributed:
        import torch.distributed as dist

        box = [sizes]
        dist.broadcast_object_list(box, src=0)
        sizes = box[0]
    return resolve_mask_block(cfg, crop, **kw, sizes=sizes)


def _recorded_block(config: Path, cfg: UDAConfig) -> Any:
    """The measured (``"objects"``) mask block a run folder's ``config.json`` records for the same ``block_nm``, or
    ``None``."""
    from mtbio.uda.blocks import MaskBlock

    try:
        saved = json.loads(config.read_text()) if config.is_file() else {}
        block = (
            MaskBlock.from_dict(saved["mask_block"]) if isinstance(saved, dict) and saved.get("mask_block") else None
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None
    same = block is not None and block.rule == "objects" and _nm_key(block.block_nm) == _nm_key(cfg.block_nm)
    return block if same else None


def _nm_key(value: Any) -> Any:
    """A ``block_nm`` (a number or one per axis, possibly a JSON list) in a comparable form."""
    return float(value) if isinstance(value, int | float) else tuple(float(v) for v in value)


def _with_block(cfg: UDAConfig, block: Any) -> UDAConfig:
    """``cfg`` with a ``block_size=None`` replaced by the resolved block (a given one is kept as written)."""
    return cfg if cfg.block_size is not None else replace(cfg, block_size=block.value)


class _Stage:
    """One resumable run of ``iterations`` in ``run_dir`` -> ``weights``."""

    def __init__(
        self,
        spec: RunSpec,
        name: str,
        config: UDAConfig,
        iterations: int,
        seed: int,
        run_dir: Path,
        weights: Path,
        resume: Resume,
        *,
        mask_block: Any = None,
        target_planes: str = "xy",
    ) -> None:
        self.spec, self.name, self.config, self.iterations, self.seed = spec, name, config, int(iterations), int(seed)
        self.run_dir, self.weights, self.resume = Path(run_dir), Path(weights), resume
        self.mask_block, self.target_planes = mask_block, str(target_planes)
        self.log = logging.getLogger(spec.logger)

    def settings(self, grid: Any, parent: str | None, pretrained: bool) -> dict[str, Any]:
        """The values that decide the trained weights (compared on resume)."""
        recipe = self.spec.recipe.to_dict()
        recipe.update(iterations=self.iterations, seed=self.seed)
        if self.name == "pretrain":
            recipe["pretrain_iterations"] = 0
            recipe["target_planes"] = "xy"  # source crops only: the target's planes do not change its weights
        return json.loads(
            json.dumps(
                {
                    "recipe": recipe,
                    "config": self.config.to_dict(),
                    "voxel_size": None if grid.voxel_size is None else [float(v) for v in grid.voxel_size],
                    "parent": parent,
                    "pretrained": pretrained,
                }
            )
        )

    def run(
        self,
        grid: Any,
        init_state: Any,
        parent: str | None,
        fraction: float | None,
        sample: Any = None,
        *,
        pretrained: bool = False,
    ) -> RunResult:
        from ignite.engine import Events

        from mtbio.uda.experiment import build_trainer, save_weights
        from mtbio.uda.trainer import TrainingInterrupted, attach_checkpointing, latest_checkpoint, load_checkpoint

        spec, recipe, log, rank = self.spec, self.spec.recipe, self.log, _rank()
        checkpoint = latest_checkpoint(self.run_dir) if self.run_dir.is_dir() else None
        if self.resume == "never" and checkpoint is not None:
            raise FileExistsError(
                f"{self.run_dir} already holds checkpoints: resume the run (mtbio train --resume) or choose another "
                "output folder"
            )
        if self.resume == "require" and checkpoint is None:
            raise FileNotFoundError(f"{self.run_dir}: no checkpoint_iteration=N.pt to resume from")
        settings = self.settings(grid, parent, pretrained)
        if checkpoint is not None:
            _check_resume(self.run_dir / "config.json", settings)
        done_at = int(checkpoint.stem.rsplit("=", 1)[1]) if checkpoint is not None else 0
        base = RunResult(None, done_at, False, voxel_size=settings["voxel_size"], grid_note=grid.note)
        if self.weights.is_file() and done_at >= self.iterations:
            _info(log, f"{self.name}: already trained ({self.weights}); delete {self.run_dir} to retrain")
            self.score_reused(grid, parent, fraction, sample, pretrained=pretrained)
            return replace(base, weights=self.weights, complete=True, resumed_from=checkpoint, **self.scored(sample))
        trainer = build_trainer(
            config=self.config,
            iterations=self.iterations,
            source_image=grid.source_image,
            source_label=grid.source_label,
            target_image=grid.target_image,
            target_label=grid.target_label,
            crop_size=recipe.crop,
            batch_size=recipe.batch_size,
            network=spec.network if spec.network is not None else recipe.network,
            network_kwargs=recipe.network_kwargs,
            lr=recipe.lr,
            seed=self.seed,
            device=spec.device,
            in_memory=spec.in_memory,
            distributed=spec.distributed,
            init_state=init_state,
            context_sections=recipe.context_sections,
            source_zoom=recipe.source_zoom,
            target_planes=self.target_planes,
        )
        meta = self.meta(grid, parent, fraction, pretrained)
        if rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            resolved = {
                **meta,
                **settings,
                "iterations": self.iterations,
                "batch_size": recipe.batch_size,
                "lr": recipe.lr,
                "init_weights": parent,
                "data": {"source": spec.source_description, "target": spec.target_description},
                "world_size": trainer.world_size,
                "device": str(spec.device),
                "argv": sys.argv,
                "resumed_from": None if checkpoint is None else str(checkpoint),
                "versions": _versions(),
                **spec.record,
            }
            write_json_atomic(self.run_dir / "config.json", resolved)
            _attach_logging(trainer, self.run_dir, recipe.log_interval, spec.logger)
        else:  # one console log per run
            trainer.logger.setLevel(logging.WARNING)
        # on every rank: ignite's saver writes on rank 0 only, and its set-up is collective under torch.distributed
        attach_checkpointing(trainer, self.run_dir, recipe.interval_for(self.iterations), n_saved=spec.n_saved)
        if checkpoint is not None:
            load_checkpoint(trainer, checkpoint)
            _info(log, f"{self.name}: resuming from {checkpoint}")
        if sample is not None and rank == 0:  # after the checkpoint loader: it sees the restored iteration
            self.guard(sample, meta, fraction).attach(trainer)
        if spec.stop_after is not None and spec.stop_after < self.iterations:
            trainer.add_event_handler(Events.ITERATION_COMPLETED(once=int(spec.stop_after)), lambda e: e.terminate())
        validation = None
        if spec.eval_image is not None and self.name != "pretrain":
            from mtbio.uda.evaluate import TargetValidation

            crop = recipe.crop
            roi = crop if len(crop) == 3 else tuple(max(c, 256) for c in crop)
            validation = TargetValidation(spec.eval_image, spec.eval_label, roi_size=roi, interval=spec.val_interval)
            validation.attach(trainer)
        bar = _progress(trainer, self.name, self.iterations, done_at, spec.progress and rank == 0)
        t0 = time.perf_counter()
        try:
            state = trainer.fit()
        except TrainingInterrupted as stop:  # checkpoint of the completed iterations written; exits 130 / 143
            stop.stage, stop.seconds = self.name, time.perf_counter() - t0  # what mtbio adapt's timings record
            if rank == 0:
                log.warning(f"{self.name}: {stop}")
            raise
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        trained = int(state.iteration) - done_at
        base = replace(base, iteration=int(state.iteration), resumed_from=checkpoint, seconds=seconds)
        base.sec_per_iter = seconds / trained if trained > 0 else None
        base = replace(base, **self.scored(sample))
        if validation is not None:
            base.validation = validation.history
            if rank == 0:
                write_json_atomic(self.run_dir / "validation.json", validation.history)
        if state.iteration < self.iterations:
            _info(log, f"{self.name}: stopped at iteration {state.iteration} of {self.iterations}; run again to resume")
            return base
        if rank == 0:
            save_weights(trainer, self.weights, meta)
            _info(log, f"{self.name}: {self.iterations} iterations in {seconds:.0f} s -> {self.weights}")
        if spec.distributed:
            import torch.distributed as dist

            dist.barrier()  # every rank reads the weights rank 0 just wrote
        return replace(base, weights=self.weights, complete=True, trained_network=trainer.teacher.module)

    def guard(self, sample: Any, meta: dict[str, Any], fraction: float | None) -> Any:
        """The stage's :class:`~mtbio.uda.guard.CollapseGuard` on ``sample`` (a ``TargetSample``)."""
        from mtbio.uda.guard import CollapseGuard

        return CollapseGuard(
            sample,
            run_dir=self.run_dir,
            stage=self.name,
            iterations=self.iterations,
            interval=self.spec.recipe.interval_for(self.iterations),
            meta=meta,
            source_fraction=fraction,
            block_size=self.config.block_size,
            logger=self.spec.logger,
        )

    def score_reused(
        self, grid: Any, parent: str | None, fraction: float | None, sample: Any, *, pretrained: bool = False
    ) -> None:
        """Score the finished stage's weights file as its final checkpoint when ``scores.jsonl`` has no row for it
        (a stage trained before scoring or with ``score_crops=0``); a scored stage is left as it is."""
        if sample is None or _rank() != 0:
            return
        guard = self.guard(sample, self.meta(grid, parent, fraction, pretrained), fraction)
        if any(r["iteration"] == self.iterations for r in guard.rows):
            return
        network = RunResult(self.weights, self.iterations, True).teacher(self.spec.network).to(self.spec.device)
        guard.score(network, self.iterations, device=self.spec.device)
        guard.summarise()

    def scored(self, sample: Any) -> dict[str, Any]:
        """``scores`` and ``selected_weights`` of a :class:`RunResult` of this stage."""
        from mtbio.uda.guard import SELECTED_FILE, read_scores

        if sample is None and not (self.run_dir / "scores.jsonl").is_file():
            return {"scores": None, "selected_weights": None}
        selected = self.run_dir / SELECTED_FILE
        return {"scores": read_scores(self.run_dir), "selected_weights": selected if selected.is_file() else None}

    def meta(self, grid: Any, parent: str | None, fraction: float | None, pretrained: bool) -> dict[str, Any]:
        """The weights record's fields (as :func:`~mtbio.networks.weights.record_from_meta` reads them)."""
        spec, recipe = self.spec, self.spec.recipe
        named = spec.network is None
        meta: dict[str, Any] = {
            "strategy": self.config.strategy.value,
            "seed": self.seed,
            "network": recipe.network if named else type(spec.network).__name__,
            "spatial_dims": recipe.spatial_dims,
            "crop": list(recipe.crop),
            "config": self.config.to_dict(),
            "voxel_size": None if grid.voxel_size is None else [float(v) for v in grid.voxel_size],
            "normalization": default_normalization(recipe.spatial_dims).value,  # mtbio's one rule
            "provenance": {
                "source": spec.source_description,
                "target": spec.target_description,
                "parent": parent,
                "git": git_hash(),
            },
            "iterations": self.iterations,
            "pretrained": pretrained,
            "recipe": recipe.to_dict(),
            "source_foreground_fraction": fraction,
            "context_sections": recipe.context_sections,
            "target_planes": self.target_planes,
        }
        if named:
            meta["network_kwargs"] = dict(recipe.network_kwargs)
        if self.mask_block is not None:
            meta["mask_block"] = self.mask_block.to_dict()
        return meta


def _target_planes(spec: RunSpec, grid: Any) -> str:
    """``recipe.target_planes`` resolved on the target (never resampled for training): ``"xy"`` or ``"xyz"``
    (``auto`` as inference's :func:`~mtbio.inference.planes.resolve_planes`, from the (z, y, x) voxel size of
    ``spec.target_voxel_size`` or of each volume; ``xyz`` on a target of known anisotropic voxel size raises)."""
    from mtbio.inference.planes import resolve_planes

    if grid.target_image is None:
        return "xy"
    volumes = grid.target_image if isinstance(grid.target_image, list | tuple) else [grid.target_image]
    found = {
        resolve_planes(
            spec.recipe.target_planes,
            shape=tuple(v.shape),
            roi_dims=spec.recipe.spatial_dims,
            voxel_size=spec.target_voxel_size or getattr(v, "voxel_size", None),
            where="the target (target_planes)",
        ).value
        for v in volumes
    }
    return "xyz" if found == {"xyz"} else "xy"


def _score_sample(spec: RunSpec, grid: Any, voxel_sizes: tuple[Any, Any]) -> Any:
    """The target's fixed :class:`~mtbio.uda.guard.TargetSample` on the training grid, or ``None`` (no target, or
    ``recipe.score_crops == 0``)."""
    from mtbio.data.resample import training_grid
    from mtbio.uda.guard import TargetSample, TargetTooSmall

    recipe = spec.recipe
    if spec.target_image is None or recipe.score_crops == 0:
        return None
    target = grid.target_image
    if target is None:  # a strategy that does not train on the target: bring the target to the source's grid
        swapped = training_grid(  # the first volume is resampled to the second's voxel size
            spec.target_image, None, spec.source_image, spatial_dims=recipe.spatial_dims,
            source_voxel_size=voxel_sizes[1], target_voxel_size=voxel_sizes[0], resample=spec.resample,
        )  # fmt: skip
        target = swapped.source_image
    try:
        return TargetSample.draw(
            target, recipe.crop, recipe.score_crop_size, recipe.score_crops, recipe.context_sections
        )
    except TargetTooSmall as err:  # e.g. an anisotropic 3D source grid leaves a few target sections
        logging.getLogger(spec.logger).warning(f"no label-free scoring of the checkpoints: {err}")
        return None


def _policies(spec: RunSpec) -> Resume:
    """The strategy stage's resume policy of a run with a pre-training (which itself always resumes or is reused):
    ``"require"`` is met by a pre-training in progress or done (the run was stopped before the strategy started);
    ``"never"`` also refuses a pre-training in progress inside ``out``."""
    from mtbio.uda.trainer import latest_checkpoint

    pre_dir = spec.pretrain_dir
    pre_started = (pre_dir.is_dir() and latest_checkpoint(pre_dir) is not None) or spec.pretrain_weights_path.is_file()
    main_started = spec.out.is_dir() and latest_checkpoint(spec.out) is not None
    if spec.resume == "require" and not main_started and pre_started:
        return "auto"
    if spec.resume == "never" and pre_dir.is_dir() and pre_dir.parent == spec.out and latest_checkpoint(pre_dir):
        raise FileExistsError(
            f"{pre_dir} already holds checkpoints: resume the run (mtbio train --resume) or choose another output "
            "folder"
        )
    return spec.resume


def _info(log: logging.Logger, message: str) -> None:
    if _rank() == 0:
        log.info(message)


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _versions() -> dict[str, str]:
    import monai

    from mtbio import __version__

    return {"mtbio": __version__, "monai": monai.__version__, "torch": torch.__version__, "numpy": np.__version__}


def _start_state(spec: RunSpec) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """(state_dict, its description for the provenance) of ``spec.init_weights``."""
    start = spec.init_weights
    if start is None:
        return None, None
    if isinstance(start, Mapping):
        return dict(start), "state_dict"
    from mtbio.networks.weights import read_weights

    record = read_weights(start)
    network = spec.recipe.network if spec.network is None else None
    if network is not None and record.network not in (None, network):
        raise ValueError(f"start weights {start} hold a {record.network!r} network, this run builds {network!r}")
    return record.teacher, str(start)


def _cached_pretrain(path: Path, recipe: Recipe, seed: int, config: UDAConfig) -> Path | None:
    """``path`` when it holds a finished pre-training of this recipe (iterations, seed, crop, context, source zoom)
    and of ``config``'s source augmentation, else ``None``."""
    if not path.is_file():
        return None
    from mtbio.networks.weights import WeightsError, read_weights

    try:
        record = read_weights(path)
    except WeightsError:
        return None
    same = record.iteration == recipe.pretrain_iterations and record.strategy == Strategy.SOURCE_ONLY.value
    same = same and record.seed == seed and record.crop == list(recipe.crop)
    same = same and record.context_sections == recipe.context_sections
    same = same and float((record.extra.get("recipe") or {}).get("source_zoom", 1.0)) == float(recipe.source_zoom)
    same = same and bool((record.config or {}).get("source_augment", False)) == config.source_augment
    return path if same else None


def _foreground_fraction(label: Any) -> float | None:
    """The labelled (foreground) fraction of the source labels (a volume or a list of volumes)."""
    if label is None:
        return None
    labels = list(label) if isinstance(label, list | tuple) else [label]
    fg = total = 0.0
    for lab in labels:
        size = float(np.prod(lab.shape))
        if hasattr(lab, "_backend") and getattr(lab, "dtype", None) == np.bool_:
            from mtbio.data.labels import foreground_fraction

            fg += foreground_fraction(lab) * size
        else:
            fg += float(np.count_nonzero(np.asarray(lab[:]) > 0))
        total += size
    return fg / total if total else None


def _check_resume(config: Path, now: Mapping[str, Any]) -> None:
    """Refuse to resume with other training settings than the run's ``config.json`` records (the result would be
    neither run); settings the file does not record are not compared, except those of :data:`RESUME_ABSENT_MEANS`."""
    if not config.is_file():
        return
    try:
        saved = json.loads(config.read_text())
        if not isinstance(saved, dict):
            raise TypeError("not a JSON object")
    except (ValueError, TypeError) as err:
        raise ValueError(f"resume: {config} is not a run configuration ({err})") from None
    a, b = _flat(saved), _flat(now)
    a = {**{k: v for k, v in RESUME_ABSENT_MEANS.items() if k in b}, **a}
    changed = [f"{k} {a[k]} -> {b[k]}" for k in sorted(b) if k in a and k not in RESUME_MAY_CHANGE and a[k] != b[k]]
    if changed:
        raise ValueError(
            f"resume with other settings than the run in {config.parent} ({'; '.join(changed)}): resume with the "
            "same settings, or start a new run folder (its final weights can be the new run's start weights)"
        )


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and k in ("recipe", "config", "augment"):
            out.update(_flat(v, f"{prefix}{k}."))
        elif prefix or k in ("voxel_size", "parent", "pretrained"):
            out[f"{prefix}{k}"] = v
    return out


def _attach_logging(trainer: Any, run_dir: Path, every: int, name: str) -> None:
    """Console losses every ``every`` iterations (MONAI ``StatsHandler`` on logger ``name``) and TensorBoard."""
    from monai.handlers import StatsHandler

    every = max(1, int(every))

    def every_n(_: Any, iteration: int) -> bool:  # StatsHandler takes an event filter, not an interval
        return iteration % every == 0

    StatsHandler(
        name=name, iteration_log=every_n, epoch_log=False, tag_name="train", output_transform=lambda o: o
    ).attach(trainer)
    logger = logging.getLogger(name)
    if not logger.hasHandlers():
        logger.addHandler(logging.StreamHandler())
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        from monai.handlers import TensorBoardStatsHandler

        TensorBoardStatsHandler(
            log_dir=str(run_dir / "tb"), iteration_log=every, epoch_log=False, output_transform=lambda o: o
        ).attach(trainer)
    except (ImportError, ModuleNotFoundError, RuntimeError):  # tensorboard is optional
        pass


def _progress(trainer: Any, name: str, total: int, initial: int, show: bool) -> Any:
    """A ``tqdm`` bar over the iterations (shown on terminals only)."""
    from ignite.engine import Events
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total, initial=initial, desc=f"train {name}", unit="it", leave=False, disable=None if show else True
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: bar.update(1))
    return bar
