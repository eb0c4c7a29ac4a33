"""Window importance maps (MONAI's) and the activation applied after blending."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from mtbio.inference.settings import Activation, Blend, as_activation, as_blend

__all__ = ["Activation", "Blend", "apply_activation", "as_activation", "as_blend", "importance_map"]


def importance_map(
    roi_size: Sequence[int], mode: Blend | str = Blend.GAUSSIAN, sigma_scale: float | Sequence[float] = 0.125
) -> torch.Tensor:
    """The per-window weight map exactly as ``sliding_window_inference`` computes it.

    Args:
        roi_size: the window shape ``(*spatial)``.
        mode: constant (all ones) or gaussian (sigma = ``sigma_scale * roi``, clamped below at its minimum
            or 1e-3).
        sigma_scale: gaussian sigma as a fraction of the window size, per axis or one value.

    Returns:
        float32 tensor of shape ``roi_size``.
    """
    sigma = float(sigma_scale) if isinstance(sigma_scale, (int, float)) else tuple(float(v) for v in sigma_scale)
    return _importance_map(tuple(int(r) for r in roi_size), as_blend(mode).value, sigma).clone()


@functools.lru_cache(maxsize=16)
def _importance_map(roi_size: tuple[int, ...], mode: str, sigma_scale: float | tuple[float, ...]) -> torch.Tensor:
    """MONAI's map, cached: runs over many stacks (and each Dask task) reuse it."""
    from monai.data.utils import compute_importance_map

    return compute_importance_map(roi_size, mode=mode, sigma_scale=sigma_scale, device="cpu").to(torch.float32)


def apply_activation(
    values: torch.Tensor, activation: Activation | None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply ``activation`` over the channel axis 0 of ``values`` shaped ``(C, *spatial)``.

    ``out`` (same shape, not ``values`` itself) receives the result when given; ``None`` activation returns
    ``values`` unchanged.
    """
    if activation is None:
        return values
    kw = {} if out is None else {"out": out}
    if activation is Activation.SOFTMAX:
        return torch.softmax(values, 0, **kw)
    return torch.sigmoid(values, **kw)
