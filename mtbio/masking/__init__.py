"""Random block masks for masked-image consistency (MIC) and complementary masking (MaskTwins).

A mask ``M`` is a float tensor of 0/1 values shaped like the image batch with one channel, (B, 1, H, W) or
(B, 1, D, H, W); ``1`` keeps a voxel visible, ``0`` hides it. The spatial extent is cut into blocks of
``block_size`` voxels per axis (the last block along an axis may be smaller when the shape is not divisible by
the block) and each block is hidden or kept as a whole. ``ratio`` is the fraction of blocks that are *hidden*
in ``M``: exactly ``round(ratio * n_blocks)`` blocks per image, chosen uniformly at random, so the measured
voxel ratio is ``ratio`` up to partial edge blocks.

The complementary pair ``(M, 1 - M)`` shows every voxel in exactly one of the two views.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["apply_mask", "block_grid", "complementary_masks", "random_mask", "random_pair"]


def _normalise_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (4, 5):
        raise ValueError(f"mask shape must be (B, 1, H, W) or (B, 1, D, H, W), got {shape}")
    if shape[1] != 1:
        raise ValueError(f"mask shape must have one channel (B, 1, ...), got {shape}")
    if any(s < 1 for s in shape):
        raise ValueError(f"mask shape must be positive, got {shape}")
    return shape


def _normalise_block(block_size: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    if isinstance(block_size, int):
        block = (block_size,) * ndim
    else:
        block = tuple(int(b) for b in block_size)
    if len(block) != ndim:
        raise ValueError(f"block_size {block_size} must be an int or have {ndim} entries for {ndim}D masks")
    if any(b < 1 for b in block):
        raise ValueError(f"block_size must be >= 1 per axis, got {block_size}")
    return block


def block_grid(shape: Sequence[int], block_size: int | Sequence[int]) -> tuple[int, ...]:
    """Number of blocks per spatial axis, ``ceil(size / block)``.

    Args:
        shape: mask shape (B, 1, H, W) or (B, 1, D, H, W).
        block_size: block edge in voxels, one int for all axes or one per spatial axis.
    """
    shape = _normalise_shape(shape)
    block = _normalise_block(block_size, len(shape) - 2)
    return tuple(math.ceil(s / b) for s, b in zip(shape[2:], block))


def _block_keep(batch: int, n_blocks: int, ratio: float, generator: torch.Generator | None) -> torch.Tensor:
    """(B, n_blocks) float 0/1 on the generator's device: exactly round(ratio * n_blocks) zeros per row."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    scores = torch.rand(batch, n_blocks, generator=generator, device=gen_device)
    n_hidden = int(round(ratio * n_blocks))
    ranks = scores.argsort(dim=1).argsort(dim=1)  # rank of each block's score in its row
    return (ranks >= n_hidden).float()


def _expand(keep: torch.Tensor, shape: tuple[int, ...], block: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(B, n_blocks) -> (B, 1, *spatial) by repeating each block value over its voxels and cropping."""
    grid = tuple(math.ceil(s / b) for s, b in zip(shape[2:], block))
    m = keep.to(device).reshape(shape[0], 1, *grid)
    for axis, b in enumerate(block):
        m = m.repeat_interleave(b, dim=axis + 2)
    crop = (slice(None), slice(None), *(slice(0, s) for s in shape[2:]))
    return m[crop].contiguous()


def _check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    return ratio


def random_mask(
    shape: Sequence[int],
    block_size: int | Sequence[int],
    ratio: float = 0.7,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """One random block mask (MIC).

    Args:
        shape: (B, 1, H, W) or (B, 1, D, H, W).
        block_size: block edge in voxels; an int or one per spatial axis, e.g. (bz, by, bx) for anisotropic 3D.
        ratio: fraction of blocks hidden (set to 0), in [0, 1].
        generator: a seeded ``torch.Generator`` for reproducible masks; random values are drawn on its device.
        device: device of the returned mask (default: the generator's device, else CPU).

    Returns:
        float tensor of 0/1 with ``shape``; 1 = visible.
    """
    shape = _normalise_shape(shape)
    block = _normalise_block(block_size, len(shape) - 2)
    ratio = _check_ratio(ratio)
    grid = tuple(math.ceil(s / b) for s, b in zip(shape[2:], block))
    keep = _block_keep(shape[0], math.prod(grid), ratio, generator)
    out_device = torch.device(device) if device is not None else keep.device
    return _expand(keep, shape, block, out_device)


def complementary_masks(
    shape: Sequence[int],
    block_size: int | Sequence[int],
    ratio: float = 0.5,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The MaskTwins complementary pair ``(M, 1 - M)``.

    Args:
        shape: (B, 1, H, W) or (B, 1, D, H, W).
        block_size: block edge in voxels; an int or one per spatial axis.
        ratio: fraction of blocks hidden in ``M`` (``1 - M`` hides the other ``1 - ratio``).
        generator: a seeded ``torch.Generator`` for reproducible masks.
        device: device of the returned masks (default: the generator's device, else CPU).

    Returns:
        ``(M, 1 - M)``, each a float 0/1 tensor with ``shape``; ``M + (1 - M) == 1`` and ``M * (1 - M) == 0``.
    """
    m = random_mask(shape, block_size, ratio, generator, device=device)
    return m, 1.0 - m


def random_pair(
    shape: Sequence[int],
    block_size: int | Sequence[int],
    ratio: float = 0.5,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent random block masks with the same ``ratio`` (the non-complementary control).

    Args and returns as :func:`complementary_masks`, but the two masks are drawn independently, so a voxel
    may be hidden in both views or visible in both.
    """
    m1 = random_mask(shape, block_size, ratio, generator, device=device)
    m2 = random_mask(shape, block_size, ratio, generator, device=device)
    return m1, m2


def apply_mask(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``x * m``: hidden voxels become 0 (the image mean after per-image z-score normalisation).

    Args:
        x: images (B, C, *spatial).
        m: mask (B, 1, *spatial), broadcast over channels.
    """
    if x.ndim != m.ndim or x.shape[0] != m.shape[0] or x.shape[2:] != m.shape[2:]:
        raise ValueError(f"mask shape {tuple(m.shape)} does not match image shape {tuple(x.shape)}")
    return x * m.to(dtype=x.dtype, device=x.device)
