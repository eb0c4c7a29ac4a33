"""Building a :class:`~mtbio.uda.trainer.UDATrainer` from volumes, and saving / loading its weights record."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtbio.data.context import context_channels
from mtbio.data.sampling import SOURCE_STREAM, TARGET_STREAM, CropSampler
from mtbio.networks import get_network
from mtbio.networks.context import with_context
from mtbio.networks.weights import read_weights, record_from_meta, write_weights
from mtbio.uda.config import UDAConfig
from mtbio.uda.strategy import strategy_spec
from mtbio.uda.trainer import UDATrainer

__all__ = ["build_trainer", "load_weights", "save_weights", "seeded_copy"]


def build_trainer(
    *,
    config: UDAConfig,
    iterations: int,
    source_image: Any = None,
    source_label: Any = None,
    target_image: Any = None,
    target_label: Any = None,
    crop_size: Sequence[int] = (192, 192),
    batch_size: int = 4,
    network: str | torch.nn.Module = "small_unet",
    network_kwargs: Mapping[str, Any] | None = None,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    epoch_length: int | None = None,
    in_memory: bool = True,
    source_accept: Callable[[np.ndarray], bool] | None = None,
    distributed: bool = False,
    init_state: Mapping[str, torch.Tensor] | None = None,
    context_sections: int = 0,
    source_zoom: float = 1.0,
    target_planes: str = "xy",
) -> UDATrainer:
    """A :class:`UDATrainer` with crop samplers over (Z, Y, X) volumes (or lists of volumes).

    The network is initialised from ``torch.manual_seed(seed)``, so a seed gives the same initial weights for
    every strategy; the source sampler uses stream 0 and the target sampler stream 1, so the source crop
    sequence of a seed is the same for every strategy. Only the data a strategy needs is required (the oracle
    needs target labels, source-only no target).

    ``network`` is a name for :func:`mtbio.networks.get_network` (with ``network_kwargs``) or a module (e.g. a
    bundle's ``network_def``), which is deep-copied and re-initialised from ``seed`` (:func:`seeded_copy`).
    ``distributed`` is passed to :class:`UDATrainer` (multi-process data parallel training). ``init_state`` (a
    ``state_dict``, e.g. of a source-pretrained network) is loaded into the network before the teacher is made
    from it, so student and teacher both start from it. ``context_sections`` (``k``, 2D crops only) gives the crops
    ``k`` adjacent sections on each side as further channels and a named network ``1 + 2k`` input channels; the
    network is marked with it (:func:`mtbio.networks.context.with_context`). ``source_zoom`` (> 1, 2D crops) zooms
    every source crop in-plane by a factor log-uniform in ``[1 / source_zoom, source_zoom]`` (``CropSampler`` ``zoom``).
    ``target_planes`` ``"xyz"`` draws the target crops from xy, xz and yz planes alike (``CropSampler`` ``planes``;
    resolved by the caller, never ``"auto"``).
    """
    spec = strategy_spec(config.strategy)
    spatial_dims = len(tuple(crop_size))
    source = target = None
    if spec.uses_source:
        if source_image is None or source_label is None:
            raise ValueError(f"strategy {config.strategy.value!r} needs source images and labels")
        source = CropSampler(
            source_image,
            source_label,
            crop_size=crop_size,
            batch_size=batch_size,
            seed=seed,
            stream=SOURCE_STREAM,
            in_memory=in_memory,
            accept=source_accept,
            context_sections=context_sections,
            zoom=source_zoom,
        )
    if spec.uses_target:
        if target_image is None:
            raise ValueError(f"strategy {config.strategy.value!r} needs target images")
        if spec.target_supervised and target_label is None:
            raise ValueError(f"strategy {config.strategy.value!r} needs target labels")
        target = CropSampler(
            target_image,
            target_label if spec.target_supervised else None,
            crop_size=crop_size,
            batch_size=batch_size,
            seed=seed,
            stream=TARGET_STREAM,
            in_memory=in_memory,
            context_sections=context_sections,
            planes=str(target_planes),
        )
    if isinstance(network, torch.nn.Module):
        net = seeded_copy(network, seed)
    else:
        torch.manual_seed(seed)
        kwargs = {"in_channels": context_channels(context_sections), **dict(network_kwargs or {})}
        net = get_network(network, spatial_dims, **kwargs)
    with_context(net, context_sections)
    if init_state is not None:
        net.load_state_dict(init_state)
    return UDATrainer(
        student=net,
        config=config,
        max_iterations=iterations,
        source=source,
        target=target,
        lr=lr,
        seed=seed,
        device=device,
        epoch_length=epoch_length,
        distributed=distributed,
    )


def seeded_copy(network: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A deep copy of ``network`` whose layers are re-initialised (``reset_parameters``) in module order after
    ``torch.manual_seed(seed)``: the same initial weights for a seed whatever the global random state was when
    ``network`` was built."""
    net = copy.deepcopy(network)
    torch.manual_seed(seed)
    for module in net.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    return net


def save_weights(trainer: UDATrainer, path: str | Path, meta: Mapping[str, Any]) -> None:
    """Save the teacher's and student's weights with ``meta`` as one :class:`~mtbio.networks.weights.WeightsRecord`
    (atomically; known ``meta`` keys become the record's fields, see
    :func:`~mtbio.networks.weights.record_from_meta`)."""
    record = record_from_meta(
        trainer.teacher.module.state_dict(), trainer.student.state_dict(), int(trainer.state.iteration), meta
    )
    write_weights(record, path)


def load_weights(path: str | Path, which: str = "teacher") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network of a weights file (any version :func:`~mtbio.networks.weights.read_weights` reads,
    loaded with ``weights_only=True``) with its ``teacher`` (default) or ``student`` weights.

    Returns:
        ``(network in eval mode, record as a plain dict without the weights)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a weights file, no ``which`` weights, or a file that names no mtbio network.
    """
    if which not in ("teacher", "student"):
        raise ValueError(f"which must be 'teacher' or 'student', got {which!r}")
    record = read_weights(path)
    if which == "student":
        if record.student is None:
            raise ValueError(f"{path}: no 'student' weights")
        record.teacher = record.student
    net = record.build_network(path)
    meta = {k: v for k, v in record.to_payload().items() if k not in ("teacher", "student")}
    return net, meta
