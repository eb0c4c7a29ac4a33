"""The pure UDA step: losses and logs for one batch, for every :class:`~mtbio.uda.strategy.Strategy`.

No backward pass, no optimizer and no EMA update happen here (the trainer does those), and no value is moved
to the host: every log is a detached 0-d tensor on the device.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn

from mtbio.masking import apply_mask, complementary_masks, random_mask, random_pair
from mtbio.uda.augment import strong_augment
from mtbio.uda.config import ClassBalance, UDAConfig
from mtbio.uda.losses import class_balance_weights, consistency_loss, pseudo_label_loss, supervised_loss
from mtbio.uda.pseudo_labels import pseudo_labels
from mtbio.uda.strategy import MaskKind, strategy_spec

__all__ = ["StepOutput", "target_views", "uda_step"]


@dataclass
class StepOutput:
    """Result of :func:`uda_step`.

    Attributes:
        loss: the total loss, a 0-d tensor with gradients reaching the student only.
        logs: detached 0-d tensors: ``loss`` and, depending on the strategy, ``loss_sup`` (source),
            ``loss_sup_target`` (oracle), ``loss_pl``, ``loss_st`` (unmasked view of a masked strategy), ``loss_cm``,
            ``teacher_confidence`` (fraction of target voxels with teacher confidence >= tau), ``pl_weight`` (mean
            pseudo-label weight), ``pl_foreground`` (fraction of voxels pseudo-labelled foreground) and
            ``view_agreement`` (fraction of voxels where the two masked views' argmax agree).
    """

    loss: torch.Tensor
    logs: dict[str, torch.Tensor]


@contextmanager
def _frozen_bn_stats(module: nn.Module, freeze: bool) -> Iterator[None]:
    """Inside the block, BatchNorm layers normalise with batch statistics but keep their running statistics."""
    if not freeze:
        yield
        return
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training:
            saved.append((m, m.momentum))
            m.momentum = 0.0  # running <- (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, momentum in saved:
            m.momentum = momentum


def _require(batch: Mapping[str, torch.Tensor], key: str, why: str) -> torch.Tensor:
    if key not in batch or batch[key] is None:
        raise ValueError(f"batch has no {key!r}, which {why} needs (keys: {sorted(batch)})")
    return batch[key]


def target_views(
    image: torch.Tensor, config: UDAConfig, generator: torch.Generator | None = None, *, unmasked: bool = False
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The student's target views of a strategy: strong intensity augmentation, then block masking.

    The augmentation is drawn once per image and shared by the views, so a complementary pair splits exactly
    one augmented image; hidden voxels are set to 0 (the z-scored image mean) after augmentation.

    Args:
        image: z-scored target images (B, 1, *spatial).
        config: the step configuration.
        generator: seeded generator for the augmentation and the masks.
        unmasked: for a masked strategy, also return the strong unmasked view, first (the draws are the same).

    Returns:
        ``(views, masks)``: tensors (B, 1, *spatial): ``[strong]`` without masking, else the masked views (after
        ``strong`` when ``unmasked``); ``masks`` holds one mask per masked view.
    """
    spec = strategy_spec(config.strategy)
    strong = strong_augment(image, config.augment, generator)
    shape = (image.shape[0], 1, *image.shape[2:])
    kw = dict(device=image.device)
    if spec.mask is MaskKind.NONE:
        return [strong], []
    if spec.mask is MaskKind.SINGLE:
        masks = [random_mask(shape, config.block, config.ratio, generator, **kw)]
    elif spec.mask is MaskKind.INDEPENDENT_PAIR:
        masks = list(random_pair(shape, config.block, config.ratio, generator, **kw))
    else:
        masks = list(complementary_masks(shape, config.block, config.ratio, generator, **kw))
    masked = [apply_mask(strong, m) for m in masks]
    return ([strong] + masked if unmasked else masked), masks


def uda_step(
    student: nn.Module,
    teacher: nn.Module | None,
    batch: Mapping[str, torch.Tensor],
    config: UDAConfig,
    generator: torch.Generator | None = None,
    *,
    target_weight: float = 1.0,
) -> StepOutput:
    """Losses of one UDA step.

    Loss = supervised source loss (CE [+ Dice]) + lambda_st * pseudo-label loss on the unmasked strong view (masked
    strategies, the MIC/DACS self-training term) + lambda_pl * mean over masked views of the pseudo-label loss
    + lambda_cm * MSE(view 1, view 2) of logits or probabilities (``config.consistency``; pairs only).
    Pseudo-labels are the teacher's argmax on the un-masked target (no intensity augmentation). The student sees
    all target views in one forward batch.

    Args:
        student: the network being trained, (B, 1, *spatial) -> (B, 2, *spatial) logits.
        teacher: the EMA teacher (used under ``no_grad``); may be ``None`` for strategies without pseudo-labels.
        batch: ``source_image`` float (B, 1, *spatial), ``source_label`` int64 (B, 1, *spatial),
            ``target_image`` float (B', 1, *spatial) and, for the oracle, ``target_label``; all on the
            student's device.
        config: the step configuration.
        generator: seeded generator for masks and augmentation (on any device; draws move to the data).
        target_weight: factor on the pseudo-label and consistency terms (the trainer's ramp-up,
            :meth:`UDAConfig.target_weight`).

    Returns:
        :class:`StepOutput`.
    """
    spec = strategy_spec(config.strategy)
    name = config.strategy.value
    logs: dict[str, torch.Tensor] = {}
    terms: list[torch.Tensor] = []
    if spec.uses_source:
        src = _require(batch, "source_image", name)
        src_label = _require(batch, "source_label", name)
        if config.source_augment:
            src = strong_augment(src, config.augment, generator)
        l_sup = supervised_loss(student(src), src_label, config.dice_weight)
        terms.append(l_sup)
        logs["loss_sup"] = l_sup.detach()
    if spec.target_supervised:
        tgt = _require(batch, "target_image", name)
        tgt_label = _require(batch, "target_label", name)
        l_tgt = supervised_loss(student(tgt), tgt_label, config.dice_weight)
        terms.append(l_tgt)
        logs["loss_sup_target"] = l_tgt.detach()
    if spec.pseudo_labels:
        if teacher is None:
            raise ValueError(f"strategy {name!r} needs a teacher for pseudo-labels, got None")
        tgt = _require(batch, "target_image", name)
        with torch.no_grad():
            t_logits = teacher(tgt)
        labels, weights, confident = pseudo_labels(t_logits, config.tau, config.pl_weighting)
        if config.pl_class_balance is ClassBalance.EQUAL:
            weights = class_balance_weights(labels, weights, t_logits.shape[1])
        elif config.pl_class_balance is ClassBalance.SOURCE_PRIOR:
            src_label = _require(batch, "source_label", f"pl_class_balance={config.pl_class_balance.value}")
            prior = torch.stack([(src_label == c).float().mean() for c in range(t_logits.shape[1])])
            weights = class_balance_weights(labels, weights, t_logits.shape[1], prior=prior, max_factor=10.0)
        with_st = spec.mask is not MaskKind.NONE and config.lambda_st > 0
        views, _ = target_views(tgt, config, generator, unmasked=with_st)
        with _frozen_bn_stats(student, not config.target_bn_stats):
            out = student(torch.cat(views, dim=0))
        chunks = out.chunk(len(views), dim=0)
        if with_st:  # the plain self-training loss on the unmasked strong view, then the masked views
            l_st = pseudo_label_loss(chunks[0], labels, weights, dice_weight=config.pl_dice_weight)
            terms.append(target_weight * config.lambda_st * l_st)
            logs["loss_st"] = l_st.detach()
            chunks = chunks[1:]
        l_pl = torch.stack(
            [pseudo_label_loss(c, labels, weights, dice_weight=config.pl_dice_weight) for c in chunks]
        ).mean()
        terms.append(target_weight * config.lambda_pl * l_pl)
        logs["loss_pl"] = l_pl.detach()
        logs["teacher_confidence"] = confident.float().mean().detach()
        logs["pl_weight"] = weights.mean().detach()
        logs["pl_foreground"] = (labels == 1).float().mean().detach()
        if spec.consistency:
            l_cm = consistency_loss(chunks[0], chunks[1], config.consistency)
            terms.append(target_weight * config.lambda_cm * l_cm)
            logs["loss_cm"] = l_cm.detach()
            logs["view_agreement"] = (chunks[0].argmax(1) == chunks[1].argmax(1)).float().mean().detach()
    loss = torch.stack(terms).sum()
    logs["loss"] = loss.detach()
    return StepOutput(loss=loss, logs=logs)
