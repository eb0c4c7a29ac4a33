"""Losses of the UDA step."""

from __future__ import annotations

import enum

import torch
import torch.nn.functional as F

__all__ = ["ConsistencyForm", "consistency_loss", "soft_dice_loss", "supervised_loss", "weighted_ce"]


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Soft Dice loss of the foreground class (channel 1), over the whole batch.

    Args:
        logits: (B, 2, *spatial).
        labels: int64 (B, *spatial) or (B, 1, *spatial) in {0, 1}.
    """
    labels = labels.squeeze(1) if labels.ndim == logits.ndim else labels
    p = torch.softmax(logits.float(), dim=1)[:, 1]
    g = (labels == 1).float()
    inter = (p * g).sum()
    return 1.0 - (2.0 * inter + eps) / (p.sum() + g.sum() + eps)


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor, dice_weight: float = 0.0) -> torch.Tensor:
    """Cross-entropy (mean over voxels) + ``dice_weight`` x foreground soft Dice.

    Args:
        logits: (B, C, *spatial).
        labels: int64 (B, 1, *spatial) or (B, *spatial).
        dice_weight: weight of :func:`soft_dice_loss` (0 = CE only).
    """
    labels = labels.squeeze(1) if labels.ndim == logits.ndim else labels
    loss = F.cross_entropy(logits.float(), labels)
    if dice_weight > 0:
        loss = loss + dice_weight * soft_dice_loss(logits, labels)
    return loss


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Pseudo-label loss: ``mean(w * CE(logits, labels))`` over all voxels (weights are not renormalised,
    as in DACS/MIC, so low-quality images contribute less).

    Args:
        logits: (B, C, *spatial).
        labels: int64 (B, *spatial).
        weights: float (B, *spatial).
    """
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    return (ce * weights).mean()


class ConsistencyForm(enum.StrEnum):
    """What the consistency term between the two masked views compares.

    ``LOGITS``: MSE of the raw logits, as in the authors' code (unbounded).
    ``PROBABILITIES``: MSE of the softmax probabilities (bounded by 1 per voxel and class).
    """

    LOGITS = "logits"
    PROBABILITIES = "probabilities"


def consistency_loss(
    logits_a: torch.Tensor, logits_b: torch.Tensor, form: ConsistencyForm | str = ConsistencyForm.LOGITS
) -> torch.Tensor:
    """MSE between the predictions of the two masked views, both with gradients.

    Args:
        logits_a, logits_b: (B, C, *spatial).
        form: compare logits (the authors' code) or softmax probabilities (:class:`ConsistencyForm`).
    """
    form = ConsistencyForm(form)
    a, b = logits_a.float(), logits_b.float()
    if form is ConsistencyForm.PROBABILITIES:
        a, b = torch.softmax(a, dim=1), torch.softmax(b, dim=1)
    return F.mse_loss(a, b)
