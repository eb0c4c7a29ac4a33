"""Pseudo-label weighting, hand-computed."""

from __future__ import annotations

import pytest
import torch

from mtbio.uda.config import PseudoLabelWeighting
from mtbio.uda.pseudo_labels import pseudo_labels


def _logits_for(p_fg: list[list[float]]) -> torch.Tensor:
    """(B, 2, 1, N) logits whose softmax foreground probability is ``p_fg``."""
    p = torch.tensor(p_fg, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1)[:, :, None, :].float()


P = [[0.99, 0.5, 0.01, 0.97], [0.6, 0.7, 0.98, 0.2]]  # confidences: .99 .5 .99 .97 | .6 .7 .98 .8


def test_labels_and_confident_mask():
    labels, _, confident = pseudo_labels(_logits_for(P), 0.968, PseudoLabelWeighting.PIXEL)
    assert labels[:, 0].tolist() == [[1, 0, 0, 1], [1, 1, 1, 0]]  # p=0.5 ties -> argmax picks class 0
    assert confident[:, 0].tolist() == [[True, False, True, True], [False, False, True, False]]


def test_pixel_weights():
    _, w, _ = pseudo_labels(_logits_for(P), 0.968, "pixel")
    assert w[:, 0].tolist() == [[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]]


def test_image_quality_weights():
    _, w, _ = pseudo_labels(_logits_for(P), 0.968, PseudoLabelWeighting.IMAGE)
    assert torch.allclose(w[0], torch.full_like(w[0], 3 / 4))
    assert torch.allclose(w[1], torch.full_like(w[1], 1 / 4))


def test_no_weighting_and_threshold_zero():
    _, w, confident = pseudo_labels(_logits_for(P), 0.0, PseudoLabelWeighting.NONE)
    assert torch.equal(w, torch.ones_like(w)) and bool(confident.all())


def test_bad_input():
    with pytest.raises(ValueError, match="teacher_logits"):
        pseudo_labels(torch.zeros(2, 2), 0.9, "pixel")
    with pytest.raises(ValueError):
        pseudo_labels(torch.zeros(1, 2, 2, 2), 0.9, "median")
