"""The source-only start of :func:`mtbio.uda.adapt.run_adapt` and the label-free choice against it.

* :func:`check_source_model`: a given source-only model holds the recipe's network (name, spatial dims, weights that
  load) or a ValueError names the file, what it holds and what the run builds;
* :func:`score_source_only`: its label-free score on the target (at its voxel size), drawn and scored as the collapse
  guard scores the training's checkpoints (:mod:`mtbio.uda.guard`), so both are scored on the same fixed sample;
* :func:`choose`: the adapted checkpoint or the source-only start, and the sentence that says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtbio.uda.guard import SELECTED_FILE

if TYPE_CHECKING:
    from mtbio.uda.adapt import AdaptSpec

__all__ = [
    "check_source_model",
    "choose",
    "load_network",
    "on_model_grid",
    "score_source_only",
    "source_fraction",
    "strategy_block",
    "target_voxel_size",
]


def check_source_model(spec: AdaptSpec) -> None:
    """The source model holds the recipe's network (name, spatial dims, weights that load), or a ValueError naming
    the file, what it holds and what the recipe builds."""
    from mtbio.networks.weights import read_weights

    path, recipe = spec.source_model, spec.recipe
    record = read_weights(path)
    found_dims = record.spatial_dims
    if found_dims is None and record.crop is not None:
        found_dims = len(record.crop)
    wanted = recipe.network if spec.network is None else type(spec.network).__name__
    found = record.network or record.network_class or "an unnamed network"
    named_other = spec.network is None and record.network is not None and record.network != recipe.network
    if named_other or (found_dims is not None and found_dims != recipe.spatial_dims):
        raise ValueError(
            f"{path}: holds a {found!r} network ({found_dims or '?'}D); this run builds a {wanted!r} network "
            f"({recipe.spatial_dims}D, from --network / --crop-size): pass the model's network and a crop of its "
            "dimensionality, or another source model"
        )
    import copy

    from mtbio.networks import get_network

    run_network = (
        copy.deepcopy(spec.network)
        if spec.network is not None
        else get_network(recipe.network, recipe.spatial_dims, **_network_kwargs(recipe))
    )
    record.load_into(run_network, path)  # other channels or kwargs: a WeightsError naming the file


def load_network(path: Path, spec: AdaptSpec) -> Any:
    """The network of a weights file with its teacher weights, in eval mode on ``spec.device``: the record's mtbio
    network, or the recipe's / the spec's network module when the record names none."""
    return _build_network(path, spec).to(spec.device)


def _build_network(path: Path, spec: AdaptSpec) -> Any:
    import copy

    from mtbio.networks import get_network
    from mtbio.networks.weights import read_weights

    record = read_weights(path)
    if spec.network is not None:
        return record.load_into(copy.deepcopy(spec.network), path).eval()
    if record.network is not None and record.spatial_dims is not None:
        return record.build_network(path)
    recipe = spec.recipe
    net = get_network(recipe.network, recipe.spatial_dims, **_network_kwargs(recipe))
    return record.load_into(net, path).eval()


def _network_kwargs(recipe: Any) -> dict[str, Any]:
    """The recipe's network keyword arguments with its input channels (``1 + 2 * context_sections``)."""
    return {"in_channels": 1 + 2 * recipe.context_sections, **recipe.network_kwargs}


def source_fraction(spec: AdaptSpec) -> float | None:
    """The source's labelled foreground fraction (what the collapse rule compares against), as run_training
    records it."""
    from mtbio.uda.run import _foreground_fraction

    return _foreground_fraction(spec.source_label)


def score_source_only(spec: AdaptSpec) -> dict[str, Any]:
    """The source-only start's label-free score record (``checkpoint``, ``iteration``, ``strategy`` and the
    :class:`~mtbio.uda.selection.TargetScore` fields), scored as the collapse guard scores the training's checkpoints
    (:class:`mtbio.uda.guard.TargetSample`: the same crops, seed and crop size) on the target at the model's voxel
    size (the training grid for the pre-training of this run: the guard's own sample), with the adaptation's mask
    block (:func:`strategy_block`), so both sides of the choice see the same complementary views."""
    from mtbio.networks.weights import read_weights
    from mtbio.uda.guard import SCORE_SEED, TargetSample
    from mtbio.uda.selection import score_network

    path, recipe = spec.source_only_weights, spec.recipe
    record = read_weights(path)
    network = load_network(path, spec)
    target = on_model_grid(spec.target_image, record.voxel_size, spec)
    sample = TargetSample.draw(target, recipe.crop, recipe.score_crop_size, recipe.score_crops, recipe.context_sections)
    result = score_network(
        network, None, crop_size=sample.crop_size, n_crops=sample.n_crops, seed=SCORE_SEED,
        block_size=strategy_block(spec), source_fraction=source_fraction(spec), device=spec.device,
        sample=(sample.crops, sample.neighbours),
    )  # fmt: skip
    return {"checkpoint": str(path), "iteration": record.iteration, "strategy": record.strategy, **result.to_dict()}


def strategy_block(spec: AdaptSpec) -> int | tuple[int, ...]:
    """The adaptation's mask block in voxels as :func:`~mtbio.uda.run.run_training` resolved it (``block_size=None``
    follows the data's scale, :mod:`mtbio.uda.blocks`): its weights record's ``config["block_size"]``, else the
    config's."""
    from mtbio.networks.weights import read_weights

    weights = spec.strategy_dir / "final.pt"
    block = (read_weights(weights).config or {}).get("block_size") if weights.is_file() else None
    if block is None:
        return spec.config.block
    return int(block) if isinstance(block, int) else tuple(int(b) for b in block)


def target_voxel_size(spec: AdaptSpec) -> tuple[float, ...] | None:
    """The target's voxel size ``(z, y, x)`` in nm: the given one, else the volume's (``None`` when unknown)."""
    vs = spec.target_voxel_size or getattr(spec.target_image, "voxel_size", None)
    return None if vs is None or len(vs) != 3 else tuple(float(v) for v in vs)


def on_model_grid(volume: Any, model_voxel_size: Any, spec: AdaptSpec) -> Any:
    """``volume`` (target sections) as a model trained at ``model_voxel_size`` sees them: lazily resampled
    (:class:`~mtbio.data.resample.ResampledVolume`) when the target's voxel size differs from it by more than the
    tolerance and ``spec.resample`` is on, else ``volume`` itself."""
    from mtbio.data.resample import ResampledVolume
    from mtbio.inference.resampled import plan_resampling

    voxel = target_voxel_size(spec)
    if not spec.resample or model_voxel_size is None or voxel is None:
        return volume
    plan = plan_resampling(
        voxel, model_voxel_size, input_ndim=3, network_dims=spec.recipe.spatial_dims,
        tolerance=spec.inference.tolerance,
    )  # fmt: skip
    return volume if plan is None else ResampledVolume(volume, plan.factors)


def choose(
    spec: AdaptSpec, source_only: dict[str, Any], chosen: dict[str, Any] | None, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """The ``selected.json`` fields of the label-free choice (see :func:`run_adapt`)."""
    strategy = spec.config.strategy.value
    so_score, so_collapsed = float(source_only["score"]), bool(source_only["collapsed"])
    worse = None if chosen is None else bool(float(chosen["score"]) < so_score)
    all_collapsed = chosen is None
    adapted_wins = chosen is not None and (not worse or so_collapsed)
    if adapted_wins:
        checkpoint = spec.strategy_dir / SELECTED_FILE
        delivered = {
            "delivered": "adapted", "checkpoint": str(checkpoint), "strategy": strategy,
            "iteration": int(chosen["iteration"]), "score": float(chosen["score"]),
            "collapsed": bool(chosen["collapsed"]), "reasons": list(chosen.get("reasons") or []),
        }  # fmt: skip
        if not checkpoint.is_file():
            raise FileNotFoundError(
                f"{checkpoint}: the chosen checkpoint's weights are missing: delete {spec.strategy_dir} and adapt again"
            )
        if worse:
            verdict = (
                f"The source-only start collapsed ({'; '.join(source_only['reasons'])}): the adapted model "
                f"(iteration {chosen['iteration']}, label-free score {chosen['score']:.3f}) was used."
            )
        elif float(chosen["score"]) == so_score:
            verdict = (
                f"Adaptation kept the source-only start's label-free score ({so_score:.3f}); the adapted model "
                f"(iteration {chosen['iteration']}) was used."
            )
        else:
            verdict = (
                f"Adaptation improved the label-free score from {so_score:.3f} to {float(chosen['score']):.3f}; "
                f"the adapted model (iteration {chosen['iteration']}) was used."
            )
    else:
        delivered = {
            "delivered": "source_only", "checkpoint": source_only["checkpoint"],
            "strategy": source_only.get("strategy") or "source_only", "iteration": int(source_only["iteration"]),
            "score": so_score, "collapsed": so_collapsed, "reasons": list(source_only["reasons"]),
        }  # fmt: skip
        if all_collapsed and not rows:
            verdict = (
                f"No adapted checkpoint has a label-free score ({spec.strategy_dir} holds no scores): the "
                f"source-only model (label-free score {so_score:.3f}) was delivered."
            )
        elif all_collapsed:
            why = "; ".join(rows[-1].get("reasons") or []) or "collapsed"
            verdict = (
                f"Every adapted checkpoint collapsed ({len(rows)} scored; the last: {why}): the source-only model "
                f"(label-free score {so_score:.3f}) was delivered."
            )
        else:
            verdict = (
                f"Adaptation scored below the source-only start ({float(chosen['score']):.3f} at iteration "
                f"{chosen['iteration']} vs {so_score:.3f}): the source-only model was delivered."
            )
        if so_collapsed:
            verdict += f" Its predictions count as collapsed too ({'; '.join(source_only['reasons'])}): check them."
    return {
        **delivered,
        "source_only_score": so_score,
        "worse_than_source_only": worse,
        "all_collapsed": all_collapsed,
        "verdict": verdict,
        "adapted": None if chosen is None else {**chosen, "checkpoint": str(spec.strategy_dir / SELECTED_FILE)},
        "source_only": source_only,
        "source_fraction": source_only.get("source_fraction"),
        "scored_checkpoints": len(rows),
        "adapted_strategy": strategy,
    }
