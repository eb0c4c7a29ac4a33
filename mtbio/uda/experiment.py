"""One-call training runs and result tables shared by the benchmarks and the ``mtbio train`` CLI."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtbio.data.sampling import SOURCE_STREAM, TARGET_STREAM, CropSampler
from mtbio.networks import get_network
from mtbio.networks.weights import read_weights, record_from_meta, write_weights
from mtbio.uda.config import UDAConfig
from mtbio.uda.strategy import strategy_spec
from mtbio.uda.trainer import UDATrainer

__all__ = [
    "METRICS",
    "acceptance",
    "build_trainer",
    "mean_std",
    "seeded_copy",
    "timed_fit",
    "git_hash",
    "load_weights",
    "save_weights",
    "summarize",
    "write_json_atomic",
]

METRICS = ("mAP", "F1", "MCC", "IoU")


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
    from it, so student and teacher both start from it.
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
        )
    if isinstance(network, torch.nn.Module):
        net = seeded_copy(network, seed)
    else:
        torch.manual_seed(seed)
        net = get_network(network, spatial_dims, **dict(network_kwargs or {}))
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


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON through a temporary file in the same folder and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def git_hash(repo: str | Path | None = None) -> str | None:
    """The current git commit (with ``-dirty`` for local changes), or ``None`` outside a git checkout."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def summarize(results: Mapping[str, Sequence[Mapping[str, float]]], metrics: Sequence[str] = METRICS) -> str:
    """A markdown table of mean ± sample std (ddof=1) over seeds per strategy and metric (values in %).

    Args:
        results: ``{strategy: [{"seed": k, "mAP": ..., ...}, ...]}``.
    """
    lines = ["| strategy | seeds | " + " | ".join(f"{m} (%)" for m in metrics) + " |"]
    lines.append("|---|---|" + "---|" * len(metrics))
    for strategy, rows in results.items():
        cells = []
        for m in metrics:
            vals = np.array([float(r[m]) for r in rows]) * 100
            if len(vals) == 0:
                cells.append("-")
            elif len(vals) == 1:
                cells.append(f"{vals[0]:.1f}")
            else:
                cells.append(f"{vals.mean():.1f} ± {vals.std(ddof=1):.1f}")
        lines.append(f"| {strategy} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def timed_fit(trainer: UDATrainer) -> float:
    """Run the trainer and return seconds per iteration (wall clock)."""
    t0 = time.perf_counter()
    trainer.fit()
    return (time.perf_counter() - t0) / max(1, trainer.max_iterations)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for one value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def acceptance(results: Mapping[str, Sequence[Mapping[str, float]]], metric: str = "IoU") -> dict[str, Any]:
    """The benchmark's acceptance checks on ``metric`` (sample std over seeds).

    ``gain``: mean(masktwins) - mean(source_only) > 2 * max(std(masktwins), std(source_only));
    ``vs_<x>``: mean(masktwins) >= mean(x) - std(x) for x in mic, random_pair, mean_teacher (where present).
    """
    out: dict[str, Any] = {}
    if "masktwins" not in results:
        return out
    mt, mt_s = mean_std([r[metric] for r in results["masktwins"]])
    if "source_only" in results:
        so, so_s = mean_std([r[metric] for r in results["source_only"]])
        out["gain"] = bool(mt - so > 2 * max(mt_s, so_s))
        out["gain_value"] = mt - so
    for x in ("mic", "random_pair", "mean_teacher"):
        if x in results:
            xm, xs = mean_std([r[metric] for r in results[x]])
            out[f"vs_{x}"] = bool(mt >= xm - xs) if not math.isnan(xm) else None
    return out
