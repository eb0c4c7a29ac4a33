"""The bundle workflows, called by the bundles' configs through ``_target_``: :func:`train`, :func:`predict`,
:func:`evaluate` and :func:`adapt`.

A bundle run lays out ``output_dir`` as::

    output_dir/<strategy>/checkpoint_iteration=N.pt   resumable MONAI checkpoints (student, teacher, optimizer,
                                                      iteration); restarting ``training`` continues from the newest
    output_dir/<strategy>/tb/                          TensorBoard logs (MONAI TensorBoardStatsHandler)
    output_dir/<strategy>/config.json                  the run's resolved configuration (every value after overrides)
    output_dir/predictions/<strategy>.zarr             prediction stores (OME-Zarr, full resolution at ``<store>/0``)
    output_dir/results.json, results.md                the metric table of ``evaluate``
    output_dir/adapt/                                  the ``adapt`` run (:mod:`mtbio.uda.adapt`: pretrain/, masktwins/,
                                                      prediction.zarr, selected.json, report.md, figures/)
    models_dir/<strategy>.pt, models_dir/model.pt      final weights (EMA teacher + student; ``model.pt`` = the
                                                      ``export`` strategy, what ``load_bundle_network`` reads)
    models_dir/adapt.pt                                the weights ``adapt`` delivered (adapted or source-only)
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mtbio.bundle.data import DomainPair, open_spec
from mtbio.inference.settings import UNSET
from mtbio.uda.interrupt import TrainingInterrupted

__all__ = ["adapt", "evaluate", "network_for_context", "predict", "train"]

LOGGER = "mtbio.bundle"


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _uda_config(uda: Mapping[str, Any] | None, strategy: str) -> Any:
    from mtbio.uda.config import UDAConfig

    kwargs = {k: v for k, v in dict(uda or {}).items() if k != "strategy"}
    return UDAConfig(strategy=strategy, **kwargs)


def train(
    *,
    network: torch.nn.Module,
    data: DomainPair,
    strategies: Sequence[str],
    uda: Mapping[str, Any] | None,
    iterations: int,
    crop_size: Sequence[int],
    output_dir: str | os.PathLike,
    models_dir: str | os.PathLike,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    export: str | None = "masktwins",
    checkpoint_interval: int | None = None,
    n_saved: int = 2,
    log_interval: int | None = None,
    device: str | torch.device = "cpu",
    distributed: bool = False,
    stop_after: int | None = None,
    in_memory: bool = True,
    pretrain_iterations: int | None = None,
    resample: bool = True,
    score_crops: int | None = None,
    score_crop_size: int | None = None,
    context_sections: int | None = None,
) -> dict[str, Path]:
    """Train ``network`` once per strategy (same seed, initial weights and source crops), resumably.

    Each strategy is one :class:`~mtbio.uda.run.RunSpec` run by :func:`~mtbio.uda.run.run_training` (the one path of
    a training run). For each strategy, a complete earlier run (its weights in ``models_dir`` and a checkpoint at
    ``iterations``) is kept as is; an interrupted one resumes from its newest checkpoint (same iteration, student,
    teacher, optimizer; the crops, masks and augmentations of iteration ``i`` are functions of ``(seed, i)``), so
    the result equals an uninterrupted run. SIGINT / SIGTERM stop after the current iteration with a checkpoint of
    the completed iterations and no weights file, and raise :class:`~mtbio.uda.interrupt.TrainingInterrupted` (exit
    status 130 / 143 of ``python -m monai.bundle run``); running the same command again resumes.

    With ``pretrain_iterations > 0`` a source-only network is first trained for that many iterations (run
    ``output_dir/pretrain``, weights ``models_dir/pretrain.pt``, its own crop sequence, seed ``seed + 10000``), and
    every strategy starts from its EMA weights (student and teacher) instead of a random initialisation.

    Args:
        network: the bundle's ``network_def``, (B, 1 + 2k, *crop) -> (B, 2, *crop) logits (``k``:
            ``context_sections``); copied and re-initialised from ``seed`` for every strategy (see
            :func:`network_for_context`).
        data: the volumes (:class:`~mtbio.bundle.data.DomainPair`).
        strategies: e.g. ``["oracle", "source_only", "masktwins"]`` (:class:`mtbio.uda.strategy.Strategy`).
        uda: keyword arguments of :class:`mtbio.uda.config.UDAConfig` (tau, lambda_pl, lambda_cm, mask_ratio,
            block_size, ...), shared by every strategy.
        iterations: training iterations T per strategy.
        crop_size: (H, W) section crops or (D, H, W) patches.
        output_dir: run folder (see the module docstring).
        models_dir: folder of the final weights.
        batch_size: crops per iteration and domain (the global batch in multi-process runs); ``None`` = the
            :class:`~mtbio.uda.recipe.Recipe`'s (as for ``lr``, ``seed`` and ``log_interval``).
        lr: AdamW learning rate.
        seed: seed of the weights, crops, masks and augmentation.
        export: strategy whose weights are also written as ``models_dir/model.pt`` (``None``: the last one).
        checkpoint_interval: save a resumable checkpoint every N iterations (default ``iterations // 10``).
        n_saved: checkpoints kept per strategy.
        log_interval: log losses (console, TensorBoard) every N iterations.
        device: training device (``cuda:<LOCAL_RANK>`` under torchrun on GPUs).
        distributed: data-parallel over the initialised ``torch.distributed`` process group: crops are
            sharded by rank, gradients averaged (DDP), checkpoints / logs / weights written by rank 0.
        stop_after: end this invocation after iteration N (a time-boxed job); the next call resumes.
        in_memory: read the volumes into memory once (fast for small data; ``False`` slices lazily).
        pretrain_iterations: source-only iterations every strategy starts from (0 = from scratch; ``None`` = the
            Recipe's; every bundle sets it: 800 in the em2d bundle, 0 on the synthetic domains).
        resample: resample the source to the target's voxel size when they differ by more than 10 % on the
            network's axes (:meth:`~mtbio.bundle.data.DomainPair.on_training_grid`); the weights record that
            voxel size and the normalisation.
        score_crops, score_crop_size: the collapse guard's label-free score sample of every checkpoint
            (``Recipe.score_crops`` / ``Recipe.score_crop_size``, ``None``: the Recipe's; ``score_crops=0``: no
            scoring, no guard).
        context_sections: 2.5D input (``Recipe.context_sections``, ``None``: the Recipe's): ``k`` adjacent sections
            on each side as ``1 + 2k`` input channels (2D crops only). A one-channel
            :func:`mtbio.networks.get_network` ``network_def`` (the bundles') is built with ``1 + 2k`` input channels
            (:func:`network_for_context`). The weights record ``k``, so the bundle's predict / evaluate feed the
            neighbour sections without a setting.

    Returns:
        strategy -> final weights file (only the strategies that finished).

    Raises:
        ValueError: a setting the Recipe refuses (e.g. ``context_sections`` with a 3D crop), or a network whose input
            channels conflict with ``context_sections``.
    """
    from mtbio.uda.recipe import Recipe
    from mtbio.uda.run import RunSpec, run_training

    if not strategies:
        raise ValueError("strategies is empty")
    given = dict(
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        log_interval=log_interval,
        pretrain_iterations=pretrain_iterations,
        score_crops=score_crops,
        score_crop_size=score_crop_size,
        context_sections=context_sections,
    )
    recipe = Recipe(
        network=type(network).__name__,
        iterations=iterations,
        crop_size=tuple(int(c) for c in crop_size),
        checkpoint_interval=checkpoint_interval,
        **{k: v for k, v in given.items() if v is not None},  # None: the Recipe's value
    )
    network = network_for_context(network, recipe.context_sections)
    output_dir, models_dir = Path(output_dir), Path(models_dir)
    vs = dict(data.voxel_size or {})
    finished: dict[str, Path] = {}
    for strategy in strategies:
        spec = RunSpec(
            out=output_dir / str(strategy),
            config=_uda_config(uda, strategy),
            recipe=recipe,
            source_image=data.source_image,
            source_label=data.source_label,
            target_image=data.target_image,
            target_label=data.target_label,
            source_voxel_size=vs.get("source"),
            target_voxel_size=vs.get("target"),
            resample=resample,
            source_description=f"{data.description} (source)" if data.description else None,
            target_description=f"{data.description} (target)" if data.description else None,
            network=network,
            weights=models_dir / f"{strategy}.pt",
            pretrain_out=output_dir / "pretrain",
            pretrain_weights=models_dir / "pretrain.pt",
            device=device,
            distributed=distributed,
            in_memory=in_memory,
            stop_after=stop_after,
            resume="auto",
            n_saved=n_saved,
            logger=f"{LOGGER}.losses",
            record={"data": data.description, "voxel_sizes": data.voxel_size},
        )
        try:
            result = run_training(spec)
        except TrainingInterrupted:  # checkpoint of the completed iterations written; exits 130 / 143
            if _rank() == 0:
                print(f"{strategy}: to resume, run the same command again", file=sys.stderr, flush=True)
            raise
        if result.weights is None:  # stopped early (stop_after): the next call resumes
            if result.pretrain == "stopped":
                return finished
            continue
        finished[spec.config.strategy.value] = result.weights
    chosen = list(finished)[-1] if export is None and finished else export
    if _rank() == 0 and chosen in finished:
        shutil.copyfile(finished[chosen], models_dir / "model.pt")
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    return finished


def network_for_context(network: torch.nn.Module, context_sections: int) -> torch.nn.Module:
    """The bundle's ``network_def`` taking the ``1 + 2k`` input channels of ``context_sections = k``.

    A bundle's ``network_def`` stays a plain :func:`mtbio.networks.get_network` call (what ``mtbio predict --bundle``
    builds without ``--trust-bundle``), so its ``in_channels`` cannot follow ``context_sections`` by an expression:
    a one-channel ``get_network`` network is built again with ``1 + 2k`` input channels (same name and arguments);
    a network that already takes ``1 + 2k`` is used as it is.

    Raises:
        ValueError: any other input channels (``network_def#in_channels`` conflicting with ``context_sections``,
            or a network not built by ``get_network`` that takes one channel).
    """
    from mtbio.data.context import context_channels
    from mtbio.networks import with_input_channels

    k = int(context_sections)
    return with_input_channels(network, context_channels(k), f"context_sections {k}")


def _as_volume(image: Any, what: str) -> Any:
    if image is None:
        raise ValueError(f"no {what}: set the bundle's data (or pass a PATH[:KEY] override)")
    return open_spec(image) if isinstance(image, str | os.PathLike) else image


def predict(
    *,
    network: torch.nn.Module,
    models_dir: str | os.PathLike,
    strategies: Sequence[str],
    image: Any,
    predictions_dir: str | os.PathLike,
    settings: Any = None,
    roi_size: Sequence[int] = UNSET,
    overlap: float = UNSET,
    normalize: str | None = UNSET,
    batch_size: int = UNSET,
    dtype: str = UNSET,
    device: str | torch.device | None = UNSET,
    resample: bool = UNSET,
    tta: str = UNSET,
    planes: str = UNSET,
) -> dict[str, Path]:
    """Predict ``image`` with each strategy's weights (``models_dir/<strategy>.pt``, the EMA teacher) through the
    streaming :func:`mtbio.inference.predict_volume`, into ``predictions_dir/<strategy>.zarr``.

    Args:
        network: the bundle's ``network_def`` (weights are loaded into a copy; weights of a 2.5D network, which
            record ``context_sections = k``, into a ``1 + 2k``-channel build of it: :func:`network_for_context`).
        models_dir: folder of the weights written by :func:`train`.
        strategies: which weights; ``["model"]`` predicts with ``model.pt``.
        image: a ``(Z, Y, X)`` volume or a ``PATH[:KEY]`` string.
        predictions_dir: output folder of the prediction stores.
        settings: an :class:`~mtbio.inference.settings.InferenceSettings` (default
            :data:`~mtbio.inference.settings.TOOL_DEFAULTS`: softmax probabilities as uint8, ``normalize="auto"`` =
            the rule the weights record, else per section for 2D networks and per volume for 3D ones). With
            ``resample`` the image is predicted at the voxel size the weights were trained at and the prediction
            resampled back (:mod:`mtbio.inference.resampled`).
        roi_size, overlap, normalize, batch_size, dtype, device, resample, tta, planes: replace that field of
            ``settings`` (the bundle config's ``roi_size`` / ``overlap`` / ``normalize`` / ``device`` / ``tta`` /
            ``planes``); ``roi_size`` is required.

    Returns:
        strategy -> prediction store.
    """
    import copy

    from mtbio.inference.model_io import load_state
    from mtbio.inference.resampled import predict_at_model_voxel_size, weights_settings
    from mtbio.inference.settings import TOOL_DEFAULTS, InferenceSettings
    from mtbio.networks.weights import read_weights

    run = InferenceSettings.merged(
        TOOL_DEFAULTS if settings is None else settings,
        roi_size=roi_size,
        overlap=overlap,
        normalize=normalize,
        batch_size=batch_size,
        dtype=dtype,
        device=device,
        resample=resample,
        tta=tta,
        planes=planes,
    )
    volume = _as_volume(image, "image to predict")
    out: dict[str, Path] = {}
    for strategy in strategies:
        weights = Path(models_dir) / f"{strategy}.pt"
        record = read_weights(weights)
        built = network_for_context(network, record.context_sections) if record.version > 0 else network
        net = load_state(copy.deepcopy(built), weights)
        store = Path(predictions_dir) / f"{strategy}.zarr"
        model_voxel, model_norm = weights_settings(weights)
        result = predict_at_model_voxel_size(
            net,
            volume,
            store,
            model_voxel_size=model_voxel,
            model_normalization=model_norm,
            settings=run,
            overwrite=True,
        )
        logging.getLogger(LOGGER).info(f"{strategy}: {result.note}; wrote {store}")
        out[strategy] = store
    return out


def evaluate(
    *,
    predictions_dir: str | os.PathLike,
    strategies: Sequence[str],
    label: Any,
    output_dir: str | os.PathLike,
    seed: int = 0,
    title: str = "",
) -> dict[str, list[dict[str, float]]]:
    """Score each prediction store against ``label`` with :func:`mtbio.metrics.evaluate` (per-section mAP,
    F1, MCC, IoU, mean over sections; the fractions of voxels predicted and labelled foreground), print the table
    and write ``output_dir/results.{json,md}``.

    Returns:
        ``{strategy: [{"seed", "mAP", "F1", "MCC", "IoU", "foreground", "foreground_label"}]}``.
    """
    import numpy as np

    from mtbio.data.store import open_prediction_store
    from mtbio.metrics import evaluate as score
    from mtbio.metrics.table import results_table as summarize
    from mtbio.provenance import write_json_atomic

    truth = np.asarray(_as_volume(label, "label volume to evaluate against")[:]) > 0
    results: dict[str, list[dict[str, float]]] = {}
    for strategy in strategies:
        scored = score(open_prediction_store(Path(predictions_dir) / f"{strategy}.zarr").foreground(), truth)
        scores = {**scored.mean(), **scored.foreground()}
        results[strategy] = [{"seed": int(seed), **{k: float(v) for k, v in scores.items()}}]
    table = summarize(results) + _foreground_lines(results)
    output_dir = Path(output_dir)
    write_json_atomic(output_dir / "results.json", {"results": results, "title": title, "sections": len(truth)})
    (output_dir / "results.md").write_text(table)
    print(f"\n{title or 'target test volume'}: {len(truth)} sections (per-section metrics, mean over sections)")
    print(table)
    return results


def _foreground_lines(results: Mapping[str, Sequence[Mapping[str, float]]]) -> str:
    """One line per strategy: predicted against labelled foreground fraction (over- / under-segmentation)."""
    lines = [
        f"- {strategy}: {100 * rows[0]['foreground']:.1f} % of the voxels predicted foreground (p >= 0.5), "
        f"{100 * rows[0]['foreground_label']:.1f} % labelled"
        for strategy, rows in results.items()
    ]
    return "\n" + "\n".join(lines) + "\n" if lines else ""


def adapt(
    *,
    network: torch.nn.Module,
    data: DomainPair,
    uda: Mapping[str, Any] | None,
    iterations: int,
    crop_size: Sequence[int],
    output_dir: str | os.PathLike,
    models_dir: str | os.PathLike | None = None,
    image: Any = None,
    strategy: str = "masktwins",
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    checkpoint_interval: int | None = None,
    log_interval: int | None = None,
    pretrain_iterations: int | None = None,
    device: str | torch.device = "cpu",
    in_memory: bool = True,
    stop_after: int | None = None,
    resample: bool = True,
    score_crops: int | None = None,
    score_crop_size: int | None = None,
    roi_size: Sequence[int] = UNSET,
    overlap: float = UNSET,
    normalize: str | None = UNSET,
    tta: str = UNSET,
    planes: str = UNSET,
    figure_sections: int = 3,
    context_sections: int | None = None,
) -> dict[str, Any]:
    """Adapt to the bundle's target volume without its labels (:func:`mtbio.uda.adapt.run_adapt`): the source-only
    pre-training, ``strategy`` with every checkpoint scored label-free, the choice between the best adapted
    checkpoint and the source-only start, the prediction of the target and the report, in ``output_dir``
    (``prediction.zarr``, ``selected.json``, ``report.md``, ``figures/``, the runs). Running it again resumes.

    Args:
        network: the bundle's ``network_def`` (copied and re-initialised from ``seed``; :func:`network_for_context`).
        data: the volumes (:class:`~mtbio.bundle.data.DomainPair`): the labelled source and the target.
        uda: keyword arguments of :class:`mtbio.uda.config.UDAConfig` (as for :func:`train`).
        iterations, crop_size, batch_size, lr, seed, checkpoint_interval, log_interval, pretrain_iterations,
            score_crops, score_crop_size: the :class:`~mtbio.uda.recipe.Recipe` (``None``: the Recipe's value;
            ``pretrain_iterations`` must be > 0: the adapted model is compared with the source-only start).
        output_dir: the adapt run's folder (:mod:`mtbio.uda.adapt`'s layout).
        models_dir: where the delivered weights are copied as ``adapt.pt`` (``None``: not copied).
        image: the volume to adapt to and predict, a volume or ``PATH[:KEY]`` (``None``: ``data.target_image``).
        strategy: the UDA strategy (``masktwins``).
        device: training and prediction device.
        in_memory, stop_after, resample: as for :func:`train` (``resample`` also resamples the target to the
            delivered model's voxel size for the prediction).
        roi_size, overlap, normalize, tta, planes: the prediction's settings (the bundle's inference.yaml),
            replacing those of :data:`~mtbio.inference.settings.TOOL_DEFAULTS`.
        figure_sections: target sections shown in the report.
        context_sections: 2.5D input, as for :func:`train`.

    Raises:
        ValueError: as for :func:`train`; ``score_crops`` 0 (adapt chooses by the label-free score).

    Returns:
        the ``selected.json`` content (empty when ``stop_after`` ended the training early).
    """
    from mtbio.inference.settings import TOOL_DEFAULTS, InferenceSettings
    from mtbio.uda.adapt import AdaptSpec, PredictionInterrupted, run_adapt
    from mtbio.uda.recipe import Recipe

    given = dict(
        batch_size=batch_size, lr=lr, seed=seed, log_interval=log_interval, pretrain_iterations=pretrain_iterations,
        score_crops=score_crops, score_crop_size=score_crop_size, context_sections=context_sections,
    )  # fmt: skip
    recipe = Recipe(
        network=type(network).__name__,
        iterations=iterations,
        crop_size=tuple(int(c) for c in crop_size),
        checkpoint_interval=checkpoint_interval,
        **{k: v for k, v in given.items() if v is not None},  # None: the Recipe's value
    )
    network = network_for_context(network, recipe.context_sections)
    settings = InferenceSettings.merged(
        TOOL_DEFAULTS, roi_size=roi_size, overlap=overlap, normalize=normalize, tta=tta, planes=planes
    )
    vs = dict(data.voxel_size or {})
    own = image is None or image is data.target_image  # the pair's target: its voxel size and description
    target = data.target_image if own else _as_volume(image, "image to adapt to")
    spec = AdaptSpec(
        out=Path(output_dir),
        target_image=target,
        source_image=data.source_image,
        source_label=data.source_label,
        config=_uda_config(uda, strategy),
        recipe=recipe,
        inference=settings,
        target_voxel_size=vs.get("target") if own else None,
        source_voxel_size=vs.get("source"),
        resample=resample,
        target_description=f"{data.description or 'bundle'} (target)" if own else str(image),
        source_description=f"{data.description} (source)" if data.description else None,
        network=network,
        device=str(device),
        in_memory=in_memory,
        stop_after=stop_after,
        figure_sections=figure_sections,
        logger=f"{LOGGER}.adapt",
        record={"data": data.description, "voxel_sizes": data.voxel_size},
    )
    try:
        result = run_adapt(spec)
    except (TrainingInterrupted, PredictionInterrupted):  # everything done so far is kept; exits 130 / 143
        print("adapt: to resume, run the same command again", file=sys.stderr, flush=True)
        raise
    if not result.complete:
        return {}
    if models_dir is not None and result.checkpoint is not None:
        Path(models_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.checkpoint, Path(models_dir) / "adapt.pt")
    return dict(result.selected or {})
