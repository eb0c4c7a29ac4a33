"""Pseudo-labels and their weights from the teacher's output (all on the device, no host sync)."""

from __future__ import annotations

import torch

from mtbio.uda.config import PseudoLabelWeighting

__all__ = ["pseudo_labels"]


def pseudo_labels(
    teacher_logits: torch.Tensor, tau: float, weighting: PseudoLabelWeighting
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels, per-voxel weights and the confidence mask from teacher logits.

    Args:
        teacher_logits: (B, C, *spatial) logits of the teacher on the un-masked target.
        tau: confidence threshold in [0, 1].
        weighting: :class:`PseudoLabelWeighting`.

    Returns:
        ``(labels, weights, confident)``: labels int64 (B, *spatial) = argmax; weights float (B, *spatial);
        confident bool (B, *spatial) = ``max softmax >= tau``.
    """
    if teacher_logits.ndim < 3:
        raise ValueError(f"teacher_logits must be (B, C, *spatial), got shape {tuple(teacher_logits.shape)}")
    weighting = PseudoLabelWeighting(weighting)
    prob = torch.softmax(teacher_logits.float(), dim=1)
    conf, labels = prob.max(dim=1)
    confident = conf >= tau
    if weighting is PseudoLabelWeighting.PIXEL:
        weights = confident.float()
    elif weighting is PseudoLabelWeighting.IMAGE:
        frac = confident.flatten(1).float().mean(dim=1)
        weights = frac.view(-1, *([1] * (confident.ndim - 1))).expand_as(conf).contiguous()
    else:
        weights = torch.ones_like(conf)
    return labels, weights, confident
