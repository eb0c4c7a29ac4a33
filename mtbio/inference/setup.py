"""Validate a prediction request and build its :class:`~mtbio.inference.engine.Engine`, blocks and store.

Shared by :func:`mtbio.inference.predict.predict_volume` and :func:`mtbio.inference.distributed.predict_volume_dask`.
"""

from __future__ import annotations

import math
import os
import shutil
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mtbio.data.normalize import Normalization, default_normalization, image_stats, volume_stats
from mtbio.inference.blending import importance_map
from mtbio.inference.engine import Engine, RepeatChannels, SectionWise
from mtbio.inference.finite import FiniteCheck, can_hold_nonfinite, check_section_stats
from mtbio.inference.model_io import model_hash
from mtbio.inference.planes import CONSENSUS, OrthoPlanes, check_planes_tta, plane_window, resolve_planes
from mtbio.inference.resume import Ledger, create_store, open_existing, reserve
from mtbio.inference.settings import TTA, InferenceSettings, Planes
from mtbio.inference.sources import fingerprint, open_source
from mtbio.inference.tta import with_tta
from mtbio.inference.windows import Block, WindowGrid, iter_blocks, resolve_block_shape

#: trailing-axis extent of a default block (voxels per axis), so memory stays bounded on wide sections
DEFAULT_MAX_COLUMN = 2048


ProgressFn = Callable[[int, int], Any]
StopFn = Callable[[], bool]


@dataclass
class Prepared:
    """A validated run: the engine, the source, the blocks and the opened store.

    With ``prepare(..., defer_create=True)`` a new store is only reserved: ``array`` is ``None`` until
    ``create()`` (input fingerprint, store creation and atomic rename) has run, which the caller may do on
    another thread while the first block computes.
    """

    engine: Engine
    source: Any
    source_path: str | None
    key: str | None
    blocks: list[Block]
    array: Any
    ledger: Ledger
    output: str
    create: Callable[[], Any] | None = None
    #: removes the reserved partial folder of a store ``create`` never made (a run that failed before it)
    abandon: Callable[[], None] | None = None


def default_chunks(shape: Sequence[int], section_wise: bool) -> tuple[int, ...]:
    """Output chunk shape: ``(32, 256, 256)`` for 3D windows, ``(8, 512, 512)`` section-wise, ``(512, 512)`` in 2D
    (capped at the volume)."""
    if len(shape) == 2:
        base: tuple[int, ...] = (512, 512)
    elif section_wise:
        base = (8, 512, 512)
    else:
        base = (32, 256, 256)
    return tuple(min(b, int(s)) for b, s in zip(base, shape))


def _device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


#: output channels of networks already probed, per (roi, device): repeated runs (many stacks) skip the probe
_PROBED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _probe(network: torch.nn.Module, roi: tuple[int, ...], device: torch.device, in_channels: int = 1) -> int:
    """Run one zero window; return the output channel count or raise ValueError explaining the mismatch."""
    known = _PROBED.get(network, {})
    if (roi, str(device), in_channels) in known:
        return known[(roi, str(device), in_channels)]
    x = torch.zeros((1, in_channels, *roi), device=device)
    try:
        with torch.inference_mode():
            out = network(x)
    except Exception as err:  # noqa: BLE001 - re-raised as a user error
        raise ValueError(
            f"the network rejected a window of shape {tuple(x.shape)} (batch, {_channels(in_channels)}, roi {roi}): "
            f"{' '.join(str(err).split())}; check roi_size has as many axes as the network's spatial dims and that "
            f"it takes {'one input channel' if in_channels == 1 else f'{in_channels} input channels'}"
        ) from err
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the network returned a {type(out).__name__}; predict_volume needs one tensor")
    if out.ndim != len(roi) + 2 or tuple(out.shape[2:]) != roi or out.shape[0] != 1:
        raise ValueError(
            f"the network mapped a window {tuple(x.shape)} to {tuple(out.shape)}; expected (1, C, *{roi}): "
            "roi_size must match the network's spatial dims and every axis must be a size it preserves"
        )
    _PROBED.setdefault(network, {})[(roi, str(device), in_channels)] = int(out.shape[1])
    return int(out.shape[1])


def _channels(n: int) -> str:
    return "1 channel" if n == 1 else f"{n} channels: the section and its context sections"


def resolve_context(network: torch.nn.Module, settings: InferenceSettings, roi: Sequence[int], where: str) -> int:
    """The context sections a run feeds ``network``: the ones it is marked with (its weights record,
    :func:`mtbio.networks.context.context_of`), else ``settings.context_sections``, else 0.

    Raises:
        ValueError: ``settings.context_sections`` differs from the network's record, or context with a 3D window.
    """
    from mtbio.networks.context import context_of

    marked = context_of(network, None)
    given = settings.context_sections
    if marked is not None and given is not None and int(given) != int(marked):
        raise ValueError(
            f"context_sections {given} does not fit the network, whose weights record {marked} context section(s) on "
            "each side; leave context_sections unset (the record decides)"
        )
    k = int(marked if marked is not None else (given or 0))
    if k and len(roi) != 2:
        raise ValueError(
            f"the network takes {k} context section(s) on each side (a 2D network), but roi_size {tuple(roi)} is 3D "
            f"({where})"
        )
    return k


def prepare(
    network: torch.nn.Module,
    source: Any,
    output: str | os.PathLike,
    settings: InferenceSettings,
    *,
    resume: bool,
    overwrite: bool,
    key: str | None,
    defer_create: bool = False,
) -> Prepared:
    """Validate a ``predict_volume`` request (see there) and open or create the store.

    Uses the window, blending, normalisation, output, ``tta``, ``planes`` and ``voxel_size`` fields of ``settings``
    (``resample`` and ``tolerance`` are :func:`mtbio.inference.resampled.predict_at_model_voxel_size`'s).
    ``normalize="auto"`` is mtbio's rule for the network's dims (:func:`mtbio.data.normalize.default_normalization`).

    ``defer_create``: a new store is reserved (existence and writability checked, the partial folder made) but
    created by ``Prepared.create`` (see :class:`Prepared`); a resumed store is always opened here.
    """
    if not isinstance(network, torch.nn.Module):
        raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    if not isinstance(settings, InferenceSettings):
        raise TypeError(f"settings must be an InferenceSettings, got {type(settings).__name__}")
    if settings.roi_size is None:
        raise ValueError("roi_size is required (the window shape: 2 values for a 2D network, 3 for a 3D one)")
    roi_size, overlap, sigma_scale = settings.roi_size, settings.overlap, settings.sigma_scale
    blend, act, batch_size, normalize = settings.mode, settings.activation, settings.batch_size, settings.normalize
    dtype = settings.dtype.value if settings.dtype is not None else ("uint8" if act is not None else "float32")
    chunks, block_shape, voxel_size = settings.chunks, settings.block_shape, settings.voxel_size

    array, source_voxel_size, source_path = open_source(source, key)
    voxel_size = source_voxel_size if voxel_size is None else tuple(float(v) for v in voxel_size)
    shape = tuple(int(s) for s in array.shape)
    where = source_path or "input array"
    if len(shape) not in (2, 3):
        raise ValueError(f"{where}: expected a 2D (Y, X) or 3D (Z, Y, X) volume, got shape {shape}")
    if any(s < 1 for s in shape):
        raise ValueError(f"{where}: empty volume of shape {shape}")
    roi = tuple(roi_size)
    # ortho-plane consensus: the 2D network on the xy, xz and yz images of 3D windows (mtbio.inference.planes)
    planes = resolve_planes(settings.planes, shape=shape, roi_dims=len(roi), voxel_size=voxel_size, where=where)
    check_planes_tta(planes, settings.tta, where)
    ortho = planes is Planes.XYZ
    section_wise = len(roi) == 2 and len(shape) == 3 and not ortho
    if len(roi) != len(shape) and not section_wise and not ortho:
        raise ValueError(f"roi_size {roi} does not fit the {len(shape)}D volume {where} of shape {shape}")
    net_roi = roi
    grid_roi = plane_window(roi, shape[0]) if ortho else (1, *roi) if section_wise else roi
    ov = overlap if isinstance(overlap, (int, float)) else tuple(overlap)
    if (section_wise or ortho) and not isinstance(ov, (int, float)):
        if len(ov) != 2:
            raise ValueError(f"overlap {ov} must have 1 or 2 entries for a 2D roi_size")
        ov = (0.0 if section_wise else ov[0], *ov)
    grid = WindowGrid.build(shape, grid_roi, ov)

    norm: tuple[float, float] | tuple[np.ndarray, np.ndarray] | None
    norm_name: Any = None
    # NaN / Inf voxels are refused where the input is read anyway: the statistics pass, else the streaming reader
    maybe_nonfinite = can_hold_nonfinite(array.dtype)
    finite_check = FiniteCheck(source_path, shape) if maybe_nonfinite else None
    if normalize is None:
        norm = None
    elif isinstance(normalize, tuple):
        norm = normalize
        norm_name = list(norm)
    else:
        norm_mode = default_normalization(len(roi)) if normalize is Normalization.AUTO else normalize
        norm_name = norm_mode.value
        if norm_mode is Normalization.ZSCORE_SECTION and len(shape) == 3:
            norm = image_stats(array, spatial_dims=2)
            if maybe_nonfinite:  # a NaN / Inf voxel makes its section's statistics non-finite
                check_section_stats(array, norm[0], norm[1], source_path)
        else:  # whole volume (a 2D input is one section: both rules agree)
            norm = volume_stats(array, check_finite=maybe_nonfinite, source=source_path)
        finite_check = None  # the statistics pass has seen every voxel

    chunk_shape = tuple(int(c) for c in chunks) if chunks is not None else default_chunks(shape, section_wise)
    if len(chunk_shape) != len(shape) or any(c < 1 for c in chunk_shape):
        raise ValueError(f"chunks {chunk_shape} must have {len(shape)} positive entries")
    chunk_shape = tuple(min(c, s) for c, s in zip(chunk_shape, shape))
    if block_shape is None:
        block_shape = (
            # three planes: every window spans the volume's depth, so one slab per column computes each window once
            # (the Dask path does not carry sums between slabs; a slab per chunk would run every window per slab)
            shape[0] if ortho else chunk_shape[0],
            *(min(s, max(DEFAULT_MAX_COLUMN, c)) for s, c in zip(shape[1:], chunk_shape[1:])),
        )
    blocks_shape = resolve_block_shape(shape, chunk_shape, block_shape)
    blocks = list(iter_blocks(shape, chunk_shape, blocks_shape))

    k = resolve_context(network, settings, roi, where)
    if k and ortho:
        raise ValueError(
            f"planes 'xyz' runs the network on xz / yz images, which have no adjacent sections; the network takes {k} "
            f"context section(s) on each side ({where}): use planes 'xy'"
        )
    dev = _device(settings.device)
    network = network.to(dev).eval()
    channels = _probe(network, net_roi, dev, 1 + 2 * k)
    # test-time augmentation wraps the network a window runs through; the store's identity keeps the plain network's
    # hash and records the mode in its config (absent: none, as stores written before the field)
    tta_net = with_tta(network, settings.tta, act)
    if ortho:  # one 3D window per pass; batch_size counts its 2D images
        run_net: torch.nn.Module = OrthoPlanes(tta_net, act, image_batch=batch_size)
        batch_size = 1
    else:
        run_net = SectionWise(tta_net) if section_wise else tta_net
    if k and not section_wise:  # a single 2D image: the image repeated as every context channel
        run_net = RepeatChannels(run_net, 1 + 2 * k)

    weight = importance_map(grid_roi, blend, sigma_scale).to(dev)
    engine = Engine(
        run_net, grid, weight, channels, batch_size, dev, act, dtype, norm, settings.amp, finite_check,
        context=k if section_wise else 0,
    )  # fmt: skip
    config = {
        "roi_size": list(roi),
        "overlap": list(grid.overlap[1:] if section_wise else grid.overlap),
        "mode": blend.value,
        "sigma_scale": float(sigma_scale),
        "activation": None if act is None else act.value,
        "dtype": dtype,
        "chunks": list(chunk_shape),
        "block_shape": list(blocks_shape),
        "normalize": norm_name,
        "section_wise": section_wise,
    }
    if settings.tta is not TTA.NONE:
        config["tta"] = settings.tta.value
    if ortho:  # absent: xy, as stores written before the field
        config["planes"] = Planes.XYZ.value
        config["window"] = list(grid_roi)
        config["consensus"] = CONSENSUS
    if k:  # absent: one channel, as stores written before the field
        config["context_sections"] = k
    create_kwargs = {
        "spatial_shape": shape,
        "num_channels": channels,
        "dtype": dtype,
        "chunks": chunk_shape,
        "voxel_size": voxel_size,
        "activation": None if act is None else act.value,
    }

    def identity() -> dict[str, Any]:
        return {"model_hash": model_hash(network), "config": config, "source": fingerprint(array, source_path)}

    partial = reserve(output, resume=resume, overwrite=overwrite)
    if partial is None:
        out_array, ledger = open_existing(output, identity=identity(), num_blocks=len(blocks))
        return Prepared(engine, array, source_path, key, blocks, out_array, ledger, os.fspath(output))

    def create() -> Any:
        return create_store(output, partial, identity=identity(), num_blocks=len(blocks), create_kwargs=create_kwargs)

    def abandon() -> None:
        shutil.rmtree(partial, ignore_errors=True)

    ledger = Ledger(output, len(blocks))
    if defer_create:
        return Prepared(engine, array, source_path, key, blocks, None, ledger, os.fspath(output), create, abandon)
    out_array = create()
    return Prepared(engine, array, source_path, key, blocks, out_array, ledger, os.fspath(output))


def total_chunks(blocks: Sequence[Block]) -> int:
    return int(math.fsum(b.num_chunks for b in blocks))
