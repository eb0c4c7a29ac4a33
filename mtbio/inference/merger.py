"""The write-once merger: weighted sums of overlapping windows for one slab of one column.

Only the slab being finished (plus the windows that reach past it along axis 0) is held in memory. When
the slab is final its region is normalised and handed to the writer, which writes every output chunk of it
exactly once; the part of the accumulator that overlaps the next slab is carried forward instead of being
recomputed. Per voxel, contributions are always added in the global window order, so a slab computed from
scratch (after a resume) gets bitwise the same sums as one that inherited carried accumulators.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def float_buffer(shape: Sequence[int], device: torch.device | str = "cpu", *, zero: bool = True) -> torch.Tensor:
    """A float32 tensor for accumulators and results, zeroed unless ``zero=False``.

    On the CPU the memory comes from numpy, which asks the kernel for transparent huge pages on large arrays
    (torch's allocator does not): faulting in tens of MB in 4 KiB pages cost about 4x the zeroing itself on
    the benchmark machine (see ``docs/inference.md``, ablation). Elsewhere a plain ``torch.zeros`` /
    ``torch.empty``.
    """
    shape = tuple(int(s) for s in shape)
    device = torch.device(device)
    if device.type == "cpu":
        tensor = torch.from_numpy(np.empty(shape, dtype=np.float32))
        return tensor.zero_() if zero else tensor
    return (torch.zeros if zero else torch.empty)(shape, dtype=torch.float32, device=device)


class SlabAccumulator:
    """Weighted sums ``(C, *extent)`` and weights ``(1, *extent)`` over a box of padded coordinates.

    Args:
        channels: C, the network's output channels.
        lo: first voxel of the box per axis (padded coordinates).
        hi: one past the last voxel per axis.
        device: where the sums live (the compute device).
    """

    def __init__(
        self,
        channels: int,
        lo: Sequence[int],
        hi: Sequence[int],
        device: torch.device | str = "cpu",
        *,
        zero: bool = True,
    ) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.lo = tuple(int(v) for v in lo)
        self.hi = tuple(int(v) for v in hi)
        if len(self.lo) != len(self.hi) or any(b <= a for a, b in zip(self.lo, self.hi)):
            raise ValueError(f"empty or mismatched accumulator box lo={self.lo} hi={self.hi}")
        shape = tuple(b - a for a, b in zip(self.lo, self.hi))
        self.sums = float_buffer((channels, *shape), device, zero=zero)
        self.weights = float_buffer((1, *shape), device, zero=zero)

    @property
    def channels(self) -> int:
        return int(self.sums.shape[0])

    def _clip(self, start: Sequence[int], size: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
        dst, src = [], []
        for s, n, a, b in zip(start, size, self.lo, self.hi):
            lo, hi = max(s, a), min(s + n, b)
            if hi <= lo:
                return None
            dst.append(slice(lo - a, hi - a))
            src.append(slice(lo - s, hi - s))
        return tuple(dst), tuple(src)

    def add(self, start: Sequence[int], weighted: torch.Tensor, weight: torch.Tensor) -> None:
        """Add one window's ``weighted = output * weight`` ``(C, *roi)`` and its ``weight`` ``(*roi)`` at ``start``.

        The part of the window outside the box is dropped.
        """
        clip = self._clip(start, weighted.shape[1:])
        if clip is None:
            return
        dst, src = clip
        self.sums[(slice(None), *dst)] += weighted[(slice(None), *src)]
        self.weights[(slice(None), *dst)] += weight[src]

    def shifted(self, lo0: int, hi0: int) -> SlabAccumulator:
        """A new accumulator over ``[lo0, hi0)`` along axis 0 (same trailing box) that keeps the sums of the
        overlap with this one (the rest starts at zero)."""
        new = SlabAccumulator(self.channels, (lo0, *self.lo[1:]), (hi0, *self.hi[1:]), self.sums.device, zero=False)
        a, b = max(lo0, self.lo[0]), min(hi0, self.hi[0])
        if b <= a:
            a = b = lo0
        new.sums[:, b - lo0 :].zero_()  # only what the carried part does not fill
        new.weights[:, b - lo0 :].zero_()
        new.sums[:, : a - lo0].zero_()
        new.weights[:, : a - lo0].zero_()
        if b > a:
            new.sums[:, a - lo0 : b - lo0] = self.sums[:, a - self.lo[0] : b - self.lo[0]]
            new.weights[:, a - lo0 : b - lo0] = self.weights[:, a - self.lo[0] : b - self.lo[0]]
        return new

    def normalized(self, lo: Sequence[int], hi: Sequence[int]) -> torch.Tensor:
        """``sums / weights`` over the box ``[lo, hi)`` (padded coordinates), shape ``(C, *(hi - lo))``.

        Raises:
            ValueError: the box is not inside the accumulator or a voxel got no window.
        """
        idx = []
        for a, b, la, lb in zip(lo, hi, self.lo, self.hi):
            if a < la or b > lb:
                raise ValueError(f"box [{lo}, {hi}) is outside the accumulator [{self.lo}, {self.hi})")
            idx.append(slice(a - la, b - la))
        weights = self.weights[(slice(None), *idx)]
        if bool((weights <= 0).any()):
            raise ValueError("internal error: a voxel of the slab was covered by no window")
        sums = self.sums[(slice(None), *idx)]
        return torch.div(sums, weights, out=float_buffer(sums.shape, sums.device, zero=False))
