"""Predict at the model's voxel size: resample the input to the grid the network was trained at and the
prediction back onto the input grid, out of core (:func:`predict_at_model_voxel_size`).

The weights record (:class:`mtbio.networks.weights.WeightsRecord`) carries ``voxel_size``: nm per network
spatial axis (``(y, x)`` for 2D networks, ``(z, y, x)`` for 3D). When the input's voxel size differs from it by
more than 10 % on any axis the network sees:

1. a lazy :class:`~mtbio.data.resample.ResampledVolume` of the input (2D networks never resample z: each
   section is resampled in-plane) is predicted by :func:`mtbio.inference.predict_volume` into a temporary
   store ``.<output name>.model-grid`` next to the output (resumable like any store);
2. its probabilities are resampled back (linear interpolation, anti-aliased when shrinking), one output block
   at a time, into the final store on the input grid, whose voxel size is the input's and whose
   ``attrs["mtbio"]["resampled"]`` says ``{"from": input nm, "to": model nm, "model_grid_shape": [...]}``;
3. the temporary store is removed.

Otherwise the input is predicted as it is. An input without voxel size (a section folder, a TIF without
resolution tags) is used as it is with a warning when the model has one; weights without voxel size (files
written before the record carried it) never resample: that is the documented default.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtbio.data.resample import DEFAULT_TOLERANCE, ResampledVolume, differs, zoom_factors
from mtbio.inference.settings import InferenceSettings

__all__ = [
    "ResamplePlan",
    "ResampledPrediction",
    "plan_resampling",
    "predict_at_model_voxel_size",
    "weights_settings",
]

#: block extent (voxels) of the back-resampling along the in-plane axes
_BACK_BLOCK = 2048


def _fmt(vs: Sequence[float] | None) -> str:
    return "unknown" if vs is None else "(" + ", ".join(f"{float(v):g}" for v in vs) + ") nm"


@dataclass(frozen=True)
class ResamplePlan:
    """How an input is brought to the model's grid (every tuple is per spatial axis of the input).

    Attributes:
        input_voxel_size: nm of the input.
        model_voxel_size: nm of the model grid (z = the input's for a 2D network).
        factors: zoom input -> model grid (``input / model``).
    """

    input_voxel_size: tuple[float, ...]
    model_voxel_size: tuple[float, ...]
    factors: tuple[float, ...]

    def describe(self) -> str:
        return (
            f"resampling the input from {_fmt(self.input_voxel_size)} to the model's {_fmt(self.model_voxel_size)} "
            "and the prediction back onto the input grid"
        )


@dataclass
class ResampledPrediction:
    """What :func:`predict_at_model_voxel_size` did.

    Attributes:
        array: the final store's full-resolution array ``(C, *input spatial)`` (``None`` when stopped early).
        plan: the resampling done (``None``: predicted as it is).
        note: one line saying what was done (the CLI prints it).
        complete: False when ``stop`` ended the run early (the store, or the temporary one, is resumable).
    """

    array: Any
    plan: ResamplePlan | None
    note: str
    complete: bool = True


def weights_settings(path: str | os.PathLike | None) -> tuple[tuple[float, ...] | None, str | None]:
    """``(voxel_size, normalization)`` of a weights file (read with :func:`mtbio.networks.weights.read_weights`,
    ``weights_only=True``); ``(None, None)`` for ``None``, a missing file, or a file without them (old weights)."""
    if path is None or not Path(path).is_file():
        return None, None
    from mtbio.networks.weights import read_weights

    record = read_weights(path)
    vs = None if record.voxel_size is None else tuple(float(v) for v in record.voxel_size)
    return vs, record.normalization


def plan_resampling(
    input_voxel_size: Sequence[float] | None,
    model_voxel_size: Sequence[float] | None,
    *,
    input_ndim: int,
    network_dims: int,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ResamplePlan | None:
    """The resampling an input needs, or ``None`` when either voxel size is unknown or all axes the network
    sees agree within ``tolerance``.

    Args:
        input_voxel_size: nm per spatial axis of the input (``(z, y, x)`` or ``(y, x)``).
        model_voxel_size: the record's voxel size (``(y, x)`` for a 2D network, ``(z, y, x)`` for 3D); for a 2D
            network a 3-value size is accepted and its z ignored.
        input_ndim: 2 or 3 spatial axes of the input.
        network_dims: 2 (z is never resampled) or 3.

    Raises:
        ValueError: sizes whose lengths do not fit the input / network.
    """
    if input_voxel_size is None or model_voxel_size is None:
        return None
    inp = tuple(float(v) for v in input_voxel_size)
    model = tuple(float(v) for v in model_voxel_size)
    if len(inp) != input_ndim:
        raise ValueError(f"input voxel size {inp} needs {input_ndim} values (one per spatial axis)")
    if network_dims == 2:
        model = model[-2:]
    if len(model) != network_dims:
        raise ValueError(f"model voxel size {model} needs {network_dims} values for a {network_dims}D network")
    if input_ndim == 3 and network_dims == 2:
        model = (inp[0], *model)
    elif input_ndim == 2 and network_dims == 3:
        model = model[1:]
    if not differs(inp, model, tolerance):
        return None
    return ResamplePlan(inp, model, zoom_factors(inp, model))


def predict_at_model_voxel_size(
    network: Any,
    source: Any,
    output: str | os.PathLike,
    *,
    model_voxel_size: Sequence[float] | None,
    model_normalization: str | None = None,
    settings: InferenceSettings | None = None,
    key: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: Any = None,
    stop: Any = None,
    **fields: Any,
) -> ResampledPrediction:
    """:func:`mtbio.inference.predict_volume` at the model's voxel size (see the module docstring).

    Args:
        network: as for ``predict_volume``.
        source: a path (opened with :func:`mtbio.data.volumes.open_volume`) or an array-like, ``(Z, Y, X)`` or
            ``(Y, X)``; its ``voxel_size`` attribute is used when it has one.
        output: the prediction store (on the input grid).
        model_voxel_size: the weights record's ``voxel_size`` (``None``: no resampling).
        model_normalization: the weights record's ``normalization``: what ``normalize="auto"`` becomes (``None``:
            mtbio's rule for the network's dims).
        settings: the run's options (:class:`~mtbio.inference.settings.InferenceSettings`; ``roi_size`` is
            required, 2 values for a 2D network that never resamples z). Used here: ``voxel_size`` (overrides the
            file's, ``--voxel-size``), ``resample`` (``False``: predict the input as it is whatever the voxel sizes,
            ``--no-resample``) and ``tolerance``; the others go to ``predict_volume``.
        key, resume, overwrite, progress, stop: as for ``predict_volume`` (``progress`` reports the model-grid
            run).
        fields: replace fields of ``settings`` (``roi_size=...``, ``overlap=...``, ``resample=...``, ...).

    Returns:
        A :class:`ResampledPrediction`.

    Raises:
        FileExistsError: ``output`` exists and neither ``resume`` nor ``overwrite`` is set.
        ValueError / FileNotFoundError: as ``predict_volume``; a ``voxel_size`` that does not fit the input.
        TypeError: a keyword that is no :class:`~mtbio.inference.settings.InferenceSettings` field.
    """
    from mtbio.inference.predict import predict_volume

    run = InferenceSettings.merged(settings, **fields)
    if run.roi_size is None:
        raise ValueError("roi_size is required (the window shape: 2 values for a 2D network, 3 for a 3D one)")
    roi = run.roi_size
    run = dataclasses.replace(run, normalize=_resolved(run.normalize, len(roi), model_normalization))
    volume, name = _open(source, key, run.voxel_size)
    input_vs = getattr(volume, "voxel_size", None)
    input_vs = None if input_vs is None else tuple(float(v) for v in input_vs)
    spatial = tuple(int(s) for s in volume.shape)
    kwargs = dict(resume=resume, overwrite=overwrite, progress=progress, stop=stop)
    plan = None
    if model_voxel_size is None:
        note = f"{name}: the weights carry no voxel size (older file): predicted as it is, no resampling"
    elif input_vs is None:
        note = (
            f"{name}: no voxel size in the file and none given (--voxel-size): predicted as it is; the model was "
            f"trained at {_fmt(model_voxel_size)}"
        )
        warnings.warn(note, UserWarning, stacklevel=2)
    else:
        plan = plan_resampling(
            input_vs, model_voxel_size, input_ndim=len(spatial), network_dims=len(roi), tolerance=run.tolerance
        )
        if plan is None:
            note = f"{name}: voxel size {_fmt(input_vs)} matches the model's {_fmt(model_voxel_size)}: no resampling"
        elif not run.resample:
            note = (
                f"{name}: voxel size {_fmt(input_vs)} differs from the model's {_fmt(plan.model_voxel_size)} but "
                "--no-resample: predicted as it is"
            )
            plan = None
        else:
            note = f"{name}: {plan.describe()}"
    if plan is None:  # the plain call on the caller's own input (errors and the store's identity name the file)
        direct = isinstance(source, str | os.PathLike)
        array = predict_volume(
            network, source if direct else volume, output, settings=run, key=key if direct else None,
            voxel_size=input_vs, **kwargs,
        )  # fmt: skip
        complete = _is_complete(output)
        return ResampledPrediction(array, None, note, complete)
    return _predict_resampled(predict_volume, network, volume, Path(output), run, plan, note, kwargs)


def _resolved(value: Any, spatial_dims: int, record: str | None) -> Any:
    """``normalize`` with ``auto`` resolved against the weights record (a ``(mean, std)`` pair stays)."""
    from mtbio.data.normalize import resolve_normalization

    return value if isinstance(value, tuple) else resolve_normalization(value, spatial_dims, record)


def _open(source: Any, key: str | None, voxel_size: Sequence[float] | None) -> tuple[Any, str]:
    if isinstance(source, (str, os.PathLike)):
        from mtbio.data.volumes import open_volume

        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: input volume does not exist")
        volume = open_volume(path, key, voxel_size=voxel_size)
        if any(a not in ("z", "y", "x") for a in volume.axes):
            raise ValueError(f"{path}: has axes {''.join(volume.axes)}; predict takes (Z, Y, X) or (Y, X)")
        return volume, str(path)
    if voxel_size is not None:
        spatial = len(source.shape)
        if len(voxel_size) != spatial:
            raise ValueError(
                f"voxel_size {tuple(voxel_size)} needs {spatial} values for an input of shape {tuple(source.shape)}"
            )
        return _WithVoxelSize(source, tuple(float(v) for v in voxel_size)), "input array"
    return source, getattr(source, "path", None) and str(source.path) or "input array"


class _WithVoxelSize:
    """An array-like with a ``voxel_size`` attribute (the ``voxel_size=`` override of an in-memory input)."""

    def __init__(self, array: Any, voxel_size: tuple[float, ...]) -> None:
        self.array, self.voxel_size = array, voxel_size
        self.shape, self.dtype = tuple(array.shape), np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self.array[index])


def _is_complete(output: str | os.PathLike) -> bool:
    from mtbio.data.store import open_prediction_store

    try:
        return bool(open_prediction_store(output, require_complete=False).complete)
    except Exception:  # noqa: BLE001 - no store (stopped before creating it)
        return False


def _predict_resampled(
    predict_volume: Any,
    network: Any,
    volume: Any,
    output: Path,
    run: InferenceSettings,
    plan: ResamplePlan,
    note: str,
    kwargs: dict[str, Any],
) -> ResampledPrediction:
    from mtbio.data.store import mark_complete, open_prediction_store

    resume, overwrite = bool(kwargs["resume"]), bool(kwargs["overwrite"])
    if resume and overwrite:
        raise ValueError("pass either resume=True or overwrite=True, not both")
    if output.exists() and not (resume or overwrite):
        raise FileExistsError(f"{output} exists; pass overwrite=True (CLI: --overwrite) or resume=True (--resume)")
    if resume and output.exists() and _is_complete(output):
        return ResampledPrediction(open_prediction_store(output).array, plan, note + " (already complete)")
    temp = output.with_name(f".{output.name}.model-grid")
    view = ResampledVolume(volume, plan.factors)
    predict_volume(
        network,
        view,
        temp,
        settings=run,
        voxel_size=plan.model_voxel_size,
        **{**kwargs, "resume": resume and temp.exists(), "overwrite": not (resume and temp.exists())},
    )
    grid = open_prediction_store(temp, require_complete=False)
    if not grid.complete:  # stopped early: the model-grid store resumes
        return ResampledPrediction(None, plan, note, complete=False)
    array = _resample_back(grid, output, volume, plan, run.roi_size, run.chunks)
    mark_complete(output)
    shutil.rmtree(temp, ignore_errors=True)
    return ResampledPrediction(array, plan, note)


class _Decoded:
    """A prediction store array read as float probabilities (or raw values) per region."""

    def __init__(self, array: Any) -> None:
        self.array, self.shape = array, tuple(array.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        from mtbio.data.store import decode_probability

        return decode_probability(np.asarray(self.array[index]))


def _resample_back(
    grid: Any, output: Path, volume: Any, plan: ResamplePlan, roi: tuple[int, ...], chunks: Sequence[int] | None
) -> Any:
    """Write the model-grid store ``grid`` onto the input grid at ``output``, block by block."""
    import itertools

    from mtbio.data.store import create_prediction_store, encode_probability
    from mtbio.inference.setup import default_chunks

    shape = tuple(int(s) for s in volume.shape)
    section_wise = len(roi) == 2 and len(shape) == 3
    chunk = tuple(int(c) for c in chunks) if chunks is not None else default_chunks(shape, section_wise)
    chunk = tuple(min(c, s) for c, s in zip(chunk, shape))
    keep = ("model_hash", "config", "normalize")
    meta = {k: v for k, v in grid.meta.items() if k in keep}
    meta["source"] = {"path": None if getattr(volume, "path", None) is None else str(volume.path), "shape": list(shape)}
    meta["resampled"] = {
        "from": list(plan.input_voxel_size),
        "to": list(plan.model_voxel_size),
        "model_grid_shape": list(grid.array.shape[1:]),
    }
    store = create_prediction_store(
        output,
        shape,
        num_channels=int(grid.array.shape[0]),
        dtype=grid.meta["dtype"],
        chunks=chunk,
        voxel_size=plan.input_voxel_size,
        activation=grid.meta.get("activation"),
        extra_meta=meta,
        overwrite=True,
    )
    back = ResampledVolume(_Decoded(grid.array), tuple(1.0 / f for f in plan.factors), shape=shape)
    step = [chunk[0]] + [max(c, (_BACK_BLOCK // c) * c) for c in chunk[1:]]
    starts = [range(0, s, st) for s, st in zip(shape, step)]
    for origin in itertools.product(*starts):
        region = tuple(slice(o, min(o + st, s)) for o, st, s in zip(origin, step, shape))
        values = back[(slice(None), *region)]
        store.array[(slice(None), *region)] = encode_probability(values, grid.meta["dtype"], overwrite_input=True)
    return store.array
