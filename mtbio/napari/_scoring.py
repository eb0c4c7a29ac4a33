"""The label-free score of the model behind a prediction layer, on a target image layer (the Compare widget's).

The Predict widget records which model made a prediction in the layer's metadata (:data:`MODEL_KEY`); the Compare
widget reads it (or a weights file the user picks) and scores the model with
:func:`mtbio.uda.selection.score_network` on the unlabelled target, as training scores its checkpoints
(:mod:`mtbio.uda.guard`: the crop sample size and count of :class:`~mtbio.uda.recipe.Recipe`, the model's training
crop and mask block size, the source's foreground fraction its weights record).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MODEL_KEY", "ModelRef", "describe", "score_model"]

#: layer metadata key of the model that made a prediction: ``{"network", "path", "spatial_dims"}``
MODEL_KEY = "mtbio_model"
#: the score crop of a 3D network whose weights record no training crop (``mtbio score``'s default)
DEFAULT_3D_CROP = (32, 128, 128)


@dataclass(frozen=True)
class ModelRef:
    """A model to score: a weights file, bundle or package folder, and how the Predict widget loaded it.

    Attributes:
        path: the weights file (an mtbio weights record, a checkpoint) or the bundle / package folder.
        network: the Predict widget's network choice (``"bundle"``, ``"bioimageio"`` or an mtbio network name);
            ``None``: the network the weights record names.
        spatial_dims: 2 or 3 when known.
    """

    path: Path
    network: str | None = None
    spatial_dims: int | None = None

    @classmethod
    def from_layer(cls, layer: Any) -> ModelRef | None:
        """The model a layer's metadata names (:data:`MODEL_KEY`), or ``None``."""
        meta = getattr(layer, "metadata", None) or {}
        info = meta.get(MODEL_KEY)
        if not isinstance(info, dict) or not info.get("path"):
            return None
        dims = info.get("spatial_dims")
        return cls(Path(info["path"]), info.get("network"), int(dims) if dims else None)


def _load(ref: ModelRef) -> tuple[Any, Any]:
    """``(network, weights record or None)`` of ``ref``.

    Raises:
        ValueError / FileNotFoundError: no such model, or a weights file that names no network.
    """
    from mtbio.inference.model_io import load_named_network
    from mtbio.napari.predict_widget import BUNDLE, PACKAGE, load_network
    from mtbio.networks.weights import WeightsError, read_weights

    if not ref.path.exists():
        raise FileNotFoundError(f"{ref.path}: model does not exist")
    if ref.network in (BUNDLE, PACKAGE) or ref.path.is_dir():
        network = load_network(ref.network or BUNDLE, ref.path, ref.spatial_dims or 2)
        inner = ref.path / "models" / "model.pt"
        try:
            record = read_weights(inner) if inner.is_file() else None
        except WeightsError:
            record = None
        return network, record
    record = read_weights(ref.path)
    if record.network is not None:
        return record.build_network(ref.path), record
    if ref.network is None:
        raise ValueError(
            f"{ref.path}: the file names no mtbio network; predict with it in the Predict widget (which records the "
            "network) or choose an mtbio weights file (final.pt, selected.pt)"
        )
    return load_named_network(ref.network, ref.spatial_dims or record.spatial_dims or 2, ref.path), record


def score_model(ref: ModelRef, target: Any) -> dict[str, Any]:
    """The label-free score of ``ref``'s model on ``target`` ((Z, Y, X) or (Y, X)), as a dict
    (:meth:`~mtbio.uda.selection.TargetScore.to_dict` plus ``model``); ``{"model", "error"}`` when it cannot be
    scored (a missing model, a constant target ...)."""
    from mtbio.uda.config import DEFAULT_BLOCK_VOXELS
    from mtbio.uda.guard import score_crop_size
    from mtbio.uda.recipe import Recipe
    from mtbio.uda.selection import score_network

    volume = target[None] if target.ndim == 2 else target
    try:
        network, record = _load(ref)
        dims = (record.spatial_dims if record is not None else None) or ref.spatial_dims or 2
        trained = list(record.crop) if record is not None and record.crop and len(record.crop) == dims else None
        recipe = Recipe()
        train_crop = trained or ([recipe.score_crop_size] * 2 if dims == 2 else list(DEFAULT_3D_CROP))
        crop = score_crop_size(train_crop, recipe.score_crop_size, volume.shape)
        # the run's resolved mask block; records without one (bare weights) get the validated 32 px
        block = ((record.config or {}) if record is not None else {}).get("block_size") or DEFAULT_BLOCK_VOXELS
        fraction = record.extra.get("source_foreground_fraction") if record is not None else None
        result = score_network(
            network, volume, crop_size=crop, n_crops=recipe.score_crops, block_size=block, source_fraction=fraction
        )
    except (ValueError, OSError, RuntimeError) as err:
        return {"model": str(ref.path), "error": str(err)}
    return {"model": str(ref.path), **result.to_dict()}


def describe(name: str, score: dict[str, Any] | None) -> str:
    """One line of the Compare widget's score display."""
    if score is None:
        return f"{name}: no model known (pick its weights)"
    if "error" in score:
        return f"{name}: not scored ({score['error']})"
    fg = f"foreground {100 * score['foreground_fraction']:.1f} %"
    if score.get("source_fraction") is not None:
        fg += f" vs source {100 * score['source_fraction']:.1f} %"
    state = "COLLAPSED " if score["collapsed"] else ""
    why = f"; {'; '.join(score['reasons'])}" if score["collapsed"] else ""
    return f"{name}: {state}score {score['score']:.3f} ({fg}{why})"
