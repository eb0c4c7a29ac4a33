"""The outputs of :func:`mtbio.uda.adapt.run_adapt`: the prediction store, ``selected.json`` and ``timings.json``.

The prediction goes through the path of ``mtbio predict``
(:func:`mtbio.inference.resampled.predict_at_model_voxel_size`) into ``OUT/prediction.zarr``; ``selected.json``
records the model hash and settings it was started with, so a rerun resumes the store when they are the same and
replaces it when the delivered model or the settings changed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtbio.provenance import write_json_atomic
from mtbio.uda.recipe import Recipe

if TYPE_CHECKING:
    from mtbio.uda.adapt import AdaptSpec

__all__ = [
    "PREDICTION",
    "SELECTED_JSON",
    "TIMINGS",
    "append_timing",
    "call_timing",
    "done_iterations",
    "predict",
    "prediction_plan",
    "previous_selected",
    "settings_record",
    "summed",
    "write_selected",
]

SELECTED_JSON = "selected.json"
PREDICTION = "prediction.zarr"
TIMINGS = "timings.json"


def previous_selected(out: Path) -> dict[str, Any]:
    path = out / SELECTED_JSON
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def prediction_plan(spec: AdaptSpec, weights: Path) -> dict[str, Any]:
    """The network, settings and identity (model hash and settings) of the prediction with ``weights``."""
    from mtbio.inference.model_io import model_hash
    from mtbio.inference.planes import CONSENSUS
    from mtbio.inference.resampled import weights_settings
    from mtbio.inference.settings import Planes
    from mtbio.uda.adapt_choice import load_network

    network = load_network(weights, spec)
    model_voxel, model_norm = weights_settings(weights)
    settings = spec.inference
    if settings.device is None:
        settings = dataclasses.replace(settings, device=str(spec.device))
    if spec.target_voxel_size is not None and settings.voxel_size is None:
        settings = dataclasses.replace(settings, voxel_size=tuple(float(v) for v in spec.target_voxel_size))
    if not spec.resample:
        settings = dataclasses.replace(settings, resample=False)
    settings = dataclasses.replace(settings, roi_size=settings.window(spec.recipe.spatial_dims))
    identity = {"model_hash": model_hash(network), "weights": str(weights), "settings": _jsonable(settings.kwargs())}
    if Planes(settings.planes) is not Planes.XY:  # a store predicted along three planes with another rule is redone
        identity["consensus"] = CONSENSUS
    return {"network": network, "settings": settings, "voxel": model_voxel, "norm": model_norm, "identity": identity}


def predict(
    spec: AdaptSpec, plan: dict[str, Any], previous: dict[str, Any], log: logging.Logger, stop: Callable[[], bool]
) -> Path | None:
    """Predict the target into ``out/prediction.zarr`` (resumed when the store was started by the same model and
    settings, ``previous["prediction_identity"]``, replaced otherwise); the store, or ``None`` when stopped early."""
    import shutil

    from tqdm.auto import tqdm

    from mtbio.inference.resampled import predict_at_model_voxel_size

    store = spec.out / PREDICTION
    if previous.get("prediction_identity") != plan["identity"]:
        for path in (store, store.with_name(f".{store.name}.model-grid")):
            if path.exists():
                log.info(f"{path}: made by another model or with other settings: predicting again")
                shutil.rmtree(path)
    bars: list[Any] = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(desc="predict", total=total, unit="chunk", leave=False, disable=None if spec.progress
                             else True))  # fmt: skip
        bars[0].n = done
        bars[0].refresh()

    try:
        result = predict_at_model_voxel_size(
            plan["network"], spec.target_image, store, model_voxel_size=plan["voxel"],
            model_normalization=plan["norm"], settings=plan["settings"], resume=True, progress=progress,
            stop=stop,
        )  # fmt: skip
    finally:
        for bar in bars:
            bar.close()
    log.info(result.note)
    return store if result.complete else None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: getattr(v, "value", str(v))))


def settings_record(spec: AdaptSpec) -> dict[str, Any]:
    return _jsonable(
        {
            "recipe": spec.recipe.to_dict(),
            "config": spec.config.to_dict(),
            "inference": spec.inference.kwargs(),
            "device": str(spec.device),
            "source_model": None if spec.source_model is None else str(spec.source_model),
            "target_voxel_size": spec.target_voxel_size,
            "source_voxel_size": spec.source_voxel_size,
            "resample": spec.resample,
        }
    )


def write_selected(out: Path, selected: dict[str, Any], *, call_done: bool) -> dict[str, Any]:
    """Write ``out/selected.json`` (``complete`` = ``call_done``); returns what was written (plain JSON values)."""
    selected["complete"] = bool(call_done)
    plain = _jsonable(selected)
    write_json_atomic(out / SELECTED_JSON, plain)
    return plain


def done_iterations(run_dir: Path) -> int:
    """Iterations of the newest checkpoint in ``run_dir`` (0 without one)."""
    from mtbio.uda.trainer import latest_checkpoint

    checkpoint = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    return 0 if checkpoint is None else int(checkpoint.stem.rsplit("=", 1)[1])


def call_timing(spec: AdaptSpec, result: Any, before: dict[str, int], seconds: float) -> dict[str, Any]:
    """Seconds and iterations trained by this call, per training stage (the pre-training's seconds are the
    training's wall clock less the strategy stage's: they include the set-up)."""
    pre_trained = 0
    if result.pretrain == "stopped":
        pre_trained = max(0, result.iteration - before["pretrain"])
    elif result.pretrain == "trained":
        pre_trained = max(0, spec.recipe.pretrain_iterations - before["pretrain"])
    strategy_trained = 0 if result.pretrain == "stopped" else max(0, result.iteration - before["strategy"])
    return _timing(seconds, pre_trained, float(result.seconds or 0.0), strategy_trained)


def _timing(seconds: float, pre_trained: int, strategy_seconds: float, strategy_trained: int) -> dict[str, Any]:
    """One call's ``timings.json`` row: the pre-training's seconds are the call's training wall clock ``seconds``
    less the strategy stage's."""
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pretrain": max(0.0, seconds - strategy_seconds),
        "pretrain_iterations": pre_trained,
        "strategy": strategy_seconds,
        "strategy_iterations": strategy_trained,
    }


def stopped_timing(spec: AdaptSpec, stop: Any, before: dict[str, int], seconds: float) -> dict[str, Any]:
    """:func:`call_timing` of a call that a signal stopped in training (``stop``: the
    :class:`~mtbio.uda.interrupt.TrainingInterrupted` raised, whose ``stage`` and ``seconds`` the stopped stage set),
    so ``timings.json`` counts the seconds and iterations of every call, the stopped ones too."""
    if stop.stage == "pretrain":
        pre_trained, strategy_trained, strategy_seconds = max(0, stop.iteration - before["pretrain"]), 0, 0.0
    else:
        pre_done = spec.recipe.pretrain_iterations if spec.source_model is None else before["pretrain"]
        pre_trained = max(0, pre_done - before["pretrain"])
        strategy_trained = max(0, stop.iteration - before["strategy"])
        strategy_seconds = min(float(stop.seconds or 0.0), seconds)
    row = _timing(seconds, pre_trained, strategy_seconds, strategy_trained)
    row["stopped"] = f"{stop.signal_name} in {stop.stage or 'training'} after iteration {stop.iteration}"
    return row


def append_timing(out: Path, call: dict[str, Any], *, replace_last: bool = False) -> list[dict[str, Any]]:
    path = out / TIMINGS
    calls: list[dict[str, Any]] = []
    if path.is_file():
        try:
            calls = list(json.loads(path.read_text()).get("calls", []))
        except (ValueError, AttributeError):
            calls = []
    if replace_last and calls:
        calls[-1] = dict(call)
    else:
        calls.append(dict(call))
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"calls": calls})
    return calls


def summed(calls: list[dict[str, Any]], recipe: Recipe) -> dict[str, Any]:
    """``seconds`` per stage, ``iterations`` and ``sec_per_iter`` summed over the calls of ``timings.json``."""
    keys = ("pretrain", "strategy", "source_only_score", "prediction", "report")
    seconds = {k: round(sum(float(c.get(k, 0.0)) for c in calls), 3) for k in keys}
    seconds["total"] = round(sum(seconds.values()), 3)
    trained = {k: sum(int(c.get(f"{k}_iterations", 0)) for c in calls) for k in ("pretrain", "strategy")}
    per_iter = {k: (seconds[k] / trained[k] if trained[k] else None) for k in ("pretrain", "strategy")}
    return {
        "iterations": {"pretrain": recipe.pretrain_iterations, "strategy": recipe.iterations},
        "iterations_trained": trained,
        "seconds": seconds,
        "sec_per_iter": per_iter,
        "calls": len(calls),
    }
