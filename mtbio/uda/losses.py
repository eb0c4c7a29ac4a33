"""Losses of the UDA step."""

from __future__ import annotations

import enum

import torch
import torch.nn.functional as F

__all__ = [
    "ConsistencyForm",
    "class_balance_weights",
    "consistency_loss",
    "pseudo_label_loss",
    "soft_dice_loss",
    "supervised_loss",
    "weighted_ce",
    "weighted_soft_dice_loss",
]


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Soft Dice loss of the foreground class (channel 1), over the whole batch.

    Args:
        logits: (B, 2, *spatial).
        labels: int64 (B, *spatial) or (B, 1, *spatial) in {0, 1}.
    """
    labels = labels.squeeze(1) if labels.ndim == logits.ndim else labels
    return weighted_soft_dice_loss(logits, labels, torch.ones(labels.shape, device=logits.device), eps)


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


def weighted_soft_dice_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Soft Dice loss of the foreground class against hard pseudo-labels, each voxel counted with its weight,
    scaled by the mean weight (so a batch the teacher is not confident about contributes little, as in
    :func:`weighted_ce`).

    Args:
        logits: (B, 2, *spatial).
        labels: int64 (B, *spatial) in {0, 1}.
        weights: float (B, *spatial).
    """
    p = torch.softmax(logits.float(), dim=1)[:, 1]
    g = (labels == 1).float()
    w = weights.float()
    inter = (w * p * g).sum()
    dice = (2.0 * inter + eps) / ((w * p).sum() + (w * g).sum() + eps)
    return w.mean() * (1.0 - dice)


def class_balance_weights(
    labels: torch.Tensor,
    weights: torch.Tensor,
    num_classes: int = 2,
    *,
    prior: torch.Tensor | None = None,
    max_factor: float | None = None,
) -> torch.Tensor:
    """Re-weight pseudo-labelled voxels so that the classes carry given shares of the batch's total weight, which
    is kept: ``w'_i = w_i * W * s_c(i) / W_c(i)`` with ``W`` the total weight, ``W_c`` that of class ``c`` and
    ``s_c`` the share of class ``c``: equal shares without ``prior`` (class-balanced), else ``prior`` renormalised
    over the classes present (CBST-style class-prior matching, e.g. the source labels' class frequencies). No host
    sync.

    Args:
        labels: int64 (B, *spatial) pseudo-labels.
        weights: float (B, *spatial) voxel weights.
        num_classes: number of classes ``C``.
        prior: optional (C,) class frequencies (need not sum to 1).
        max_factor: clamp every class factor to ``[1 / max_factor, max_factor]`` (``None``: no clamp).

    Returns:
        float (B, *spatial) weights.
    """
    w = weights.float()
    per_class = torch.stack([(w * (labels == c)).sum() for c in range(num_classes)])
    present = per_class > 0
    share = torch.ones(num_classes, device=w.device) if prior is None else prior.to(w.device).float().clamp(min=0)
    share = torch.where(present, share, 0.0)
    share = share / share.sum().clamp(min=1e-12)
    factor = torch.where(present, per_class.sum() * share / per_class.clamp(min=1e-12), 0.0)
    if max_factor is not None:
        factor = torch.where(present, factor.clamp(1.0 / max_factor, max_factor), 0.0)
    return w * factor[labels]


def pseudo_label_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    *,
    dice_weight: float = 0.0,
) -> torch.Tensor:
    """The pseudo-label loss of one target view: :func:`weighted_ce` + ``dice_weight`` x
    :func:`weighted_soft_dice_loss`.

    Args:
        logits: (B, C, *spatial) student logits.
        labels: int64 (B, *spatial) pseudo-labels.
        weights: float (B, *spatial) voxel weights.
        dice_weight: weight of the Dice term (0 = CE only).
    """
    loss = weighted_ce(logits, labels, weights)
    if dice_weight > 0:
        loss = loss + dice_weight * weighted_soft_dice_loss(logits, labels, weights)
    return loss


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
