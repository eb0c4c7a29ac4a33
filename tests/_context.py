"""The by-hand 2.5D reference prediction the context tests compare every prediction path with."""

from __future__ import annotations

import numpy as np
import torch

from mtbio.data.context import context_indices
from mtbio.data.normalize import zscore


def context_reference(net: torch.nn.Module, vol: np.ndarray, k: int, roi: tuple[int, int]) -> np.ndarray:
    """Section by section: the section's neighbours (clipped indices) as channels, each z-scored by its own section,
    through MONAI's ``sliding_window_inference`` (batch 4, overlap 0.25, gaussian); returns the ``(Z, Y, X)``
    foreground probability."""
    from monai.inferers import sliding_window_inference

    stats = [(float(s.mean()), float(s.std())) for s in vol.astype(np.float64)]
    out = []
    for z in range(vol.shape[0]):
        x = np.stack([zscore(vol[c], *stats[c]) for c in context_indices(z, k, vol.shape[0])])[None]
        with torch.no_grad():
            logits = sliding_window_inference(torch.from_numpy(x), roi, 4, net, overlap=0.25, mode="gaussian")
        out.append(torch.softmax(logits, 1)[0, 1].numpy())
    return np.stack(out)
