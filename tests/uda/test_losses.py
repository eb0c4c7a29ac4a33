"""Pseudo-label losses against closed forms computed by hand."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mtbio.uda.losses import class_balance_weights, pseudo_label_loss, weighted_ce, weighted_soft_dice_loss


def _logits_for(p_fg: torch.Tensor) -> torch.Tensor:
    """(B, *spatial) foreground probabilities -> (B, 2, *spatial) logits with exactly that softmax."""
    return torch.stack([torch.zeros_like(p_fg), torch.log(p_fg / (1 - p_fg))], dim=1)


def test_weighted_soft_dice_closed_form():
    p = torch.tensor([[[0.9, 0.2], [0.6, 0.1]]])  # (1, 2, 2)
    labels = torch.tensor([[[1, 0], [1, 0]]])
    w = torch.tensor([[[1.0, 1.0], [0.5, 0.0]]])
    got = weighted_soft_dice_loss(_logits_for(p), labels, w, eps=0.0)
    inter = 1.0 * 0.9 + 0.5 * 0.6
    denom = (0.9 + 0.2 + 0.5 * 0.6) + (1.0 + 0.5)
    expected = w.mean() * (1 - 2 * inter / denom)
    assert torch.allclose(got, expected, atol=1e-6)
    # perfect prediction -> 0, zero weights -> 0
    perfect = _logits_for(torch.where(labels == 1, 1 - 1e-7, 1e-7).double())
    assert weighted_soft_dice_loss(perfect, labels, torch.ones_like(w)).item() < 1e-5
    assert weighted_soft_dice_loss(_logits_for(p), labels, torch.zeros_like(w)).item() == 0.0


def test_class_balance_weights_equalise_class_totals_and_keep_the_total():
    labels = torch.tensor([[1, 0, 0, 0, 0, 0, 0, 0]])
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.0, 1.0]])
    out = class_balance_weights(labels, w)
    total = w.sum()
    assert torch.allclose(out.sum(), total)
    fg, bg = out[labels == 1].sum(), out[labels == 0].sum()
    assert torch.allclose(fg, bg)
    # hand: fg total 1, bg total 5 -> fg x 3, bg x 0.6
    assert torch.allclose(out, w * torch.where(labels == 1, 3.0, 0.6))


def test_class_balance_weights_with_one_class_present_change_nothing():
    labels = torch.zeros(2, 3, 3, dtype=torch.long)
    w = torch.rand(2, 3, 3)
    assert torch.allclose(class_balance_weights(labels, w), w)
    assert torch.equal(class_balance_weights(labels, torch.zeros_like(w)), torch.zeros_like(w))


def test_pseudo_label_loss_is_ce_plus_weighted_dice():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 5, 5, generator=g)
    labels = torch.randint(0, 2, (2, 5, 5), generator=g)
    w = torch.rand(2, 5, 5, generator=g)
    ce = (F.cross_entropy(logits, labels, reduction="none") * w).mean()
    assert torch.allclose(weighted_ce(logits, labels, w), ce)
    assert torch.allclose(pseudo_label_loss(logits, labels, w), ce)
    both = pseudo_label_loss(logits, labels, w, dice_weight=0.5)
    assert math.isclose(both.item(), (ce + 0.5 * weighted_soft_dice_loss(logits, labels, w)).item(), rel_tol=1e-6)


def test_class_balance_weights_match_a_prior_and_clamp():
    labels = torch.tensor([[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    w = torch.ones(1, 10)
    prior = torch.tensor([0.8, 0.2])
    out = class_balance_weights(labels, w, prior=prior)
    assert torch.allclose(out.sum(), w.sum())
    assert torch.allclose(out[labels == 1].sum() / out.sum(), torch.tensor(0.2))
    # hand: fg total 1 -> share 2 (x2), bg total 9 -> share 8 (x 8/9)
    assert torch.allclose(out, torch.where(labels == 1, 2.0, 8.0 / 9.0))
    clamped = class_balance_weights(labels, w, prior=torch.tensor([0.1, 0.9]), max_factor=5.0)
    assert torch.allclose(clamped[labels == 1], torch.tensor(5.0))  # 9x clamped to 5
    # a class the prior names but the pseudo-labels lack: the others keep the whole weight
    only_bg = torch.zeros(1, 10, dtype=torch.long)
    assert torch.allclose(class_balance_weights(only_bg, w, prior=prior), w)


def test_soft_dice_loss_closed_form_and_label_channel():
    from mtbio.uda.losses import soft_dice_loss, supervised_loss

    p = torch.tensor([[[0.9, 0.2], [0.6, 0.1]]])
    labels = torch.tensor([[[1, 0], [1, 0]]])
    expected = 1 - 2 * (0.9 + 0.6) / ((0.9 + 0.2 + 0.6 + 0.1) + 2.0)
    got = soft_dice_loss(_logits_for(p), labels, eps=0.0)
    assert math.isclose(got.item(), expected, rel_tol=1e-6)
    assert torch.allclose(soft_dice_loss(_logits_for(p), labels[:, None], eps=0.0), got)  # (B, 1, *spatial) labels
    ce = F.cross_entropy(_logits_for(p), labels)
    assert torch.allclose(supervised_loss(_logits_for(p), labels[:, None], 2.0), ce + 2.0 * got, atol=1e-6)
