"""Label-free model selection: a score of a network's expected target quality from the unlabelled target alone.

No target labels exist where mtbio is used, so a checkpoint is judged by how *self-consistent* and how *plausible*
its target predictions are, on a fixed, seeded sample of target crops (the same crops for every checkpoint, so
scores of checkpoints, strategies and hyper-parameters are comparable):

* ``flip_dice``: foreground Dice between the prediction of a crop and the un-flipped prediction of its flips
  (each spatial in-plane axis); a model that learnt the objects, not the texture, is flip-equivariant.
* ``view_dice``: foreground Dice between the full-view prediction and the prediction composed from the two
  complementary masked views ``M`` / ``1 - M`` (each voxel taken from the view that sees it): robustness to missing
  context (the MaskTwins views; every strategy is scored with the same masks).
* ``adjacent_dice`` (2D networks on volumes): foreground Dice between the predictions of the same crop window on
  adjacent sections: EM objects continue across sections, so their masks must.
* ``foreground_fraction``: the fraction of target voxels predicted foreground (``p >= 0.5``), against the
  source's labelled fraction when known.

Dice is pooled over all crops (sums of intersections and sizes), so crops without mitochondria do not count, and
two empty predictions give Dice 0: a model that predicts nothing scores 0.

``score`` = mean of the Dice signals x a plausibility factor ``exp(-max(0, |ln(f / f_src)| - ln 2))`` (1 while the
predicted foreground fraction ``f`` is within 2x of the source's ``f_src``; 1 when ``f_src`` is unknown).

**Collapse** (``collapsed=True``; such a model is never selected): all one class on the sample (``f == 0`` or
``f == 1``), or ``f`` below ``f_src / 5`` or above ``5 f_src`` (when ``f_src`` is known).

**A collapsed checkpoint is not a collapsed run.** The rule above judges one checkpoint; a *run* (the training of
one strategy, scored at every checkpoint by :mod:`mtbio.uda.guard`) is flagged collapsed only when its *last*
scored checkpoint is collapsed (:func:`mtbio.uda.guard.run_collapsed`), and the checkpoint a run offers is the best
non-collapsed one (:func:`mtbio.uda.guard.select_row`). Measured on the design direction Lucchi++ -> VNC III
(``benchmarks/results/model_selection_pool_partial.jsonl``: seed 0, 17 checkpoints of 5 healthy runs, every 200
iterations after the 800-iteration source-only start), self-training dips first: the per-checkpoint rule flags
iteration 200 of 3 of the 5 runs (MIC, random pair, MaskTwins: foreground 0.009-0.011 vs the source's 0.067, IoU
0.047-0.055) and MIC's iteration 400 too; MIC and random pair recover (not collapsed from 600 and 400 on; IoU 0.110
and 0.244 at 800), MaskTwins has only its iteration 200 in that pool. Flagging a run on *any* collapsed checkpoint
flags 2 of the 4 complete healthy runs; the last-checkpoint rule flags none of them (the incomplete MaskTwins run,
whose only checkpoint is the dip, is flagged until its later checkpoints are measured).

Which signals rank checkpoints like the true target IoU is measured by ``benchmarks/model_selection.py`` (pending:
the checkpoint pool is built across sessions); until then the combination above is the documented default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from mtbio.data.context import check_context, context_indices
from mtbio.masking import complementary_masks

__all__ = ["COLLAPSE_FACTOR", "TargetScore", "is_collapsed", "sample_crops", "score_network"]

#: predicted foreground fraction below ``f_src / COLLAPSE_FACTOR`` or above ``COLLAPSE_FACTOR * f_src`` = collapsed
COLLAPSE_FACTOR = 5.0
SCORE_STREAM = 7  # seed stream of the crop sample (distinct from training's source / target / step streams)


@dataclass
class TargetScore:
    """The label-free score of one network on one target sample.

    Attributes:
        score: higher = better expected target quality, in [0, 1].
        collapsed: degenerate predictions (see the module docstring); never select such a model.
        reasons: why it counts as collapsed (empty when not).
        foreground_fraction: predicted foreground fraction on the sample.
        source_fraction: the source's labelled foreground fraction used for the checks (``None`` = unknown).
        flip_dice, view_dice, adjacent_dice: the agreement signals (``adjacent_dice`` ``None`` for 3D networks or
            single-section targets).
        crops: number of crops scored; ``crop_size`` their size.
    """

    score: float
    collapsed: bool
    reasons: list[str] = field(default_factory=list)
    foreground_fraction: float = 0.0
    source_fraction: float | None = None
    flip_dice: float = 0.0
    view_dice: float = 0.0
    adjacent_dice: float | None = None
    crops: int = 0
    crop_size: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_collapsed(foreground_fraction: float, source_fraction: float | None) -> list[str]:
    """The reasons a predicted ``foreground_fraction`` counts as collapsed (empty list: healthy)."""
    f = float(foreground_fraction)
    if f <= 0.0:
        return ["all background"]
    if f >= 1.0:
        return ["all foreground"]
    if source_fraction is None or source_fraction <= 0:
        return []
    if f < source_fraction / COLLAPSE_FACTOR:
        return [f"foreground fraction {f:.4f} < 1/{COLLAPSE_FACTOR:g} of the source's {source_fraction:.4f}"]
    if f > COLLAPSE_FACTOR * source_fraction:
        return [f"foreground fraction {f:.4f} > {COLLAPSE_FACTOR:g}x the source's {source_fraction:.4f}"]
    return []


def sample_crops(
    volume: Any,
    crop_size: Sequence[int],
    n_crops: int,
    seed: int = 0,
    *,
    adjacent: bool = False,
    context_sections: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A fixed, seeded sample of z-scored crops of a (Z, Y, X) target volume.

    2D ``crop_size`` (H, W): crops of single sections, each z-scored with its whole section's mean and std (mtbio's
    training rule); with ``adjacent`` the same window on the next section too (or the previous one at the end).
    3D ``crop_size`` (D, H, W): patches z-scored with the statistics of the patches drawn (an estimate of the volume's).
    ``context_sections`` (``k``, 2D only: the input of a 2.5D network, :mod:`mtbio.data.context`): every crop, and
    every adjacent crop, holds its section and ``k`` sections on each side as channels, each z-scored with its own
    section's statistics (the same draws as ``k = 0``).

    Returns:
        ``(crops, neighbours)``: float32 (N, 1 + 2k, *crop) and the adjacent crops (N, 1 + 2k, H, W) or ``None``.

    Raises:
        ValueError: a crop larger than the volume, a constant (signal-free) volume, ``context_sections`` with a 3D
            crop, or bad arguments.
    """
    crop = tuple(int(c) for c in crop_size)
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 3:
        raise ValueError(f"target must be a (Z, Y, X) volume, got shape {shape}")
    if len(crop) not in (2, 3) or n_crops < 1:
        raise ValueError(f"crop_size must be 2D or 3D and n_crops >= 1, got {crop_size}, {n_crops}")
    spatial = shape[1:] if len(crop) == 2 else shape
    if any(c > s for c, s in zip(crop, spatial)):
        raise ValueError(f"target of shape {shape} is smaller than the score crop {crop}; pass a smaller crop size")
    k = check_context(context_sections)
    if k and len(crop) != 2:
        raise ValueError(f"context_sections {k} (adjacent sections as channels) needs a 2D crop, got {crop}")
    rng = np.random.default_rng([int(seed), SCORE_STREAM])
    channels = 1 + 2 * k
    out = np.empty((n_crops, channels, *crop), dtype=np.float32)
    nbr = (
        np.empty((n_crops, channels, *crop), dtype=np.float32) if adjacent and len(crop) == 2 and shape[0] > 1 else None
    )
    stats: dict[int, tuple[float, float]] = {}

    def section_stats(z: int) -> tuple[float, float]:
        if z not in stats:
            sec = np.asarray(volume[z], dtype=np.float64)
            stats[z] = (float(sec.mean()), float(sec.std()))
        return stats[z]

    for i in range(n_crops):
        if len(crop) == 2:
            z = int(rng.integers(shape[0]))
            y, x = (int(rng.integers(s - c + 1)) for s, c in zip(shape[1:], crop))
            window = (slice(y, y + crop[0]), slice(x, x + crop[1]))
            for c, zc in enumerate(context_indices(z, k, shape[0])):
                mean, std = section_stats(int(zc))
                out[i, c] = (np.asarray(volume[(int(zc), *window)], dtype=np.float32) - mean) / max(std, 1e-6)
            if nbr is not None:
                z2 = z + 1 if z + 1 < shape[0] else z - 1
                for c, zc in enumerate(context_indices(z2, k, shape[0])):
                    mean2, std2 = section_stats(int(zc))
                    nbr[i, c] = (np.asarray(volume[(int(zc), *window)], dtype=np.float32) - mean2) / max(std2, 1e-6)
        else:
            origin = [int(rng.integers(s - c + 1)) for s, c in zip(shape, crop)]
            out[i, 0] = np.asarray(volume[tuple(slice(o, o + c) for o, c in zip(origin, crop))], dtype=np.float32)
    if len(crop) == 3:
        mean, std = float(out.mean()), float(out.std())
        if std < 1e-6:
            raise ValueError("the target volume is constant (no signal): nothing to score")
        out = (out - mean) / std
    elif max(s for _, s in stats.values()) < 1e-6:
        raise ValueError("the target volume is constant (no signal): nothing to score")
    return out, nbr


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pooled foreground Dice of two boolean tensors (0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 0.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@torch.no_grad()
def score_network(
    network: nn.Module,
    target: Any,
    *,
    crop_size: Sequence[int] = (256, 256),
    n_crops: int = 16,
    seed: int = 0,
    block_size: int | Sequence[int] = 32,
    source_fraction: float | None = None,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    sample: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> TargetScore:
    """Score ``network`` on the unlabelled ``target`` (see the module docstring).

    Args:
        network: ``(B, 1 + 2k, *spatial) -> (B, 2, *spatial)`` logits, ``k`` the context sections it is marked with
            (:func:`mtbio.networks.context.context_of`, 0 for a one-channel network); run in eval mode (restored
            afterwards).
        target: (Z, Y, X) volume (numpy array or lazy ``Volume``).
        crop_size: (H, W) for 2D networks, (D, H, W) for 3D; the size of the scored crops.
        n_crops: crops in the fixed sample (the cost is about ``6 * n_crops`` crop forward passes for 2D).
        seed: seed of the crop sample and masks (keep it fixed to compare checkpoints).
        block_size: mask block size of the complementary views, in voxels.
        source_fraction: the source's labelled foreground fraction (for the collapse and plausibility checks).
        batch_size: crops per forward pass.
        device: where the network runs.
        sample: the crop sample already drawn, ``sample_crops(target, crop_size, n_crops, seed, adjacent=True,
            context_sections=k)`` (scoring many checkpoints reads the target once); ``target`` is not read then and
            may be ``None``.

    Returns:
        the :class:`TargetScore`.

    Raises:
        ValueError: ``sample`` does not hold ``n_crops`` crops of ``crop_size`` with the network's input channels.
    """
    from mtbio.networks.context import context_of

    dims = len(tuple(crop_size))
    k = context_of(network)
    if sample is None:
        crops, neighbours = sample_crops(target, crop_size, n_crops, seed, adjacent=True, context_sections=k)
    else:
        crops, neighbours = sample
        if tuple(crops.shape) != (int(n_crops), 1 + 2 * k, *(int(c) for c in crop_size)):
            raise ValueError(
                f"the crop sample has shape {tuple(crops.shape)}, not {n_crops} crops of {tuple(crop_size)} with "
                f"{1 + 2 * k} channel(s) (the network's context_sections {k})"
            )
    device = torch.device(device)
    was_training = network.training
    network.eval()
    gen = torch.Generator().manual_seed(int(seed))
    masks, _ = complementary_masks((crops.shape[0], 1, *crops.shape[2:]), block_size, 0.5, gen)  # all channels alike

    def fg(x: torch.Tensor) -> torch.Tensor:
        parts = [torch.softmax(network(x[i : i + batch_size].to(device)).float(), dim=1)[:, 1:2].cpu()
                 for i in range(0, x.shape[0], batch_size)]  # fmt: skip
        return torch.cat(parts)

    try:
        x = torch.from_numpy(crops)
        p = fg(x)
        full = p >= 0.5
        flip_axes = [(-1,), (-2,)]
        flips = [_dice(full, torch.flip(fg(torch.flip(x, a)), a) >= 0.5) for a in flip_axes]
        composed = masks * fg(x * masks) + (1 - masks) * fg(x * (1 - masks))
        view = _dice(full, composed >= 0.5)
        adjacent = None if neighbours is None else _dice(full, fg(torch.from_numpy(neighbours)) >= 0.5)
    finally:
        network.train(was_training)
    fraction = float(full.float().mean())
    reasons = is_collapsed(fraction, source_fraction)
    signals = [float(np.mean(flips)), view] + ([adjacent] if adjacent is not None else [])
    plausibility = 1.0
    if source_fraction and fraction > 0:
        plausibility = math.exp(-max(0.0, abs(math.log(fraction / source_fraction)) - math.log(2.0)))
    return TargetScore(
        score=float(np.mean(signals)) * plausibility,
        collapsed=bool(reasons),
        reasons=reasons,
        foreground_fraction=fraction,
        source_fraction=source_fraction,
        flip_dice=float(np.mean(flips)),
        view_dice=view,
        adjacent_dice=adjacent,
        crops=int(n_crops),
        crop_size=[int(c) for c in crop_size][-dims:],
    )
