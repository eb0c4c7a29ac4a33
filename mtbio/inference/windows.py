"""The sliding-window grid and the chunk-aligned block grid of out-of-core inference.

The window grid is MONAI's (:func:`monai.inferers.sliding_window_inference`): the same scan interval
``int(roi * (1 - overlap))`` (the whole ROI when it equals the image), the same positions (the last window is
shifted back to end at the border) and, when the ROI is larger than the volume along an axis, the same
symmetric zero padding (``half = (roi - size) // 2`` before, the rest after). All coordinates of this module
are *padded* coordinates unless a name says ``orig``; ``pad_lo`` converts.

Blocks are what one unit of work writes: a chunk-aligned box of output chunks. They are ordered column by
column (the trailing axes) and, inside a column, slab by slab along axis 0, so one pass down a column can
carry the overlap accumulators from one slab to the next.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


def scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: Sequence[float]) -> tuple[int, ...]:
    """MONAI's scan interval per axis: ``int(roi * (1 - overlap))`` (at least 1), or ``roi`` when ``roi == image``."""
    out = []
    for size, roi, ov in zip(image_size, roi_size, overlap):
        if roi == size:
            out.append(int(roi))
        else:
            out.append(max(int(roi * (1 - ov)), 1))
    return tuple(out)


def window_starts(size: int, roi: int, interval: int) -> list[int]:
    """Window start positions along one (padded) axis of length ``size`` (``roi <= size``), as MONAI's
    ``dense_patch_slices`` places them."""
    if roi > size:
        raise ValueError(f"roi {roi} is larger than the padded size {size}")
    num = math.ceil(size / interval)
    count = next((d + 1 for d in range(num) if d * interval + roi >= size), 1)
    return [i * interval - max(i * interval + roi - size, 0) for i in range(count)]


def _rep(value: float | Sequence[float], n: int, name: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),) * n
    value = tuple(float(v) for v in value)
    if len(value) != n:
        raise ValueError(f"{name} {value} has {len(value)} entries, expected 1 or {n}")
    return value


@dataclass(frozen=True)
class WindowGrid:
    """MONAI's sliding-window grid over a volume of shape ``shape`` (original, unpadded).

    Attributes:
        shape: the volume's spatial shape ``(*spatial)``.
        roi: the window shape.
        overlap: overlap fraction per axis, each in [0, 1).
        padded: ``max(shape, roi)`` per axis.
        pad_lo: zeros padded before the volume per axis (``(roi - shape) // 2`` where the ROI is larger).
        starts: window start positions per axis (padded coordinates).
    """

    shape: tuple[int, ...]
    roi: tuple[int, ...]
    overlap: tuple[float, ...]
    padded: tuple[int, ...]
    pad_lo: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]

    @classmethod
    def build(cls, shape: Sequence[int], roi: Sequence[int], overlap: float | Sequence[float] = 0.25) -> WindowGrid:
        """The grid for a volume ``shape`` and windows ``roi`` (same length) with ``overlap``.

        Raises:
            ValueError: mismatched lengths, a non-positive size or an overlap outside [0, 1).
        """
        shape = tuple(int(s) for s in shape)
        roi = tuple(int(r) for r in roi)
        if len(roi) != len(shape):
            raise ValueError(f"roi_size {roi} has {len(roi)} entries for a {len(shape)}D volume of shape {shape}")
        if any(s < 1 for s in shape) or any(r < 1 for r in roi):
            raise ValueError(f"volume shape {shape} and roi_size {roi} must be positive")
        ov = _rep(overlap, len(shape), "overlap")
        if any(o < 0 or o >= 1 for o in ov):
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        padded = tuple(max(s, r) for s, r in zip(shape, roi))
        pad_lo = tuple((p - s) // 2 for p, s in zip(padded, shape))
        interval = scan_interval(padded, roi, ov)
        starts = tuple(tuple(window_starts(p, r, i)) for p, r, i in zip(padded, roi, interval))
        return cls(shape, roi, ov, padded, pad_lo, starts)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def num_windows(self) -> int:
        return math.prod(len(s) for s in self.starts)

    def all_windows(self) -> list[tuple[int, ...]]:
        """Every window start (padded coordinates) in MONAI's row-major order."""
        return list(itertools.product(*self.starts))

    def rows_intersecting(self, lo: int, hi: int) -> tuple[int, int]:
        """Index range ``[i0, i1)`` of the axis-0 window starts whose windows intersect ``[lo, hi)`` (padded)."""
        s0, r0 = self.starts[0], self.roi[0]
        i0 = next((i for i, s in enumerate(s0) if s + r0 > lo), len(s0))
        i1 = next((i for i, s in enumerate(s0) if s >= hi), len(s0))
        return i0, max(i0, i1)

    def starts_intersecting(self, axis: int, lo: int, hi: int) -> list[int]:
        """Window starts along ``axis`` whose windows intersect ``[lo, hi)`` (padded)."""
        r = self.roi[axis]
        return [s for s in self.starts[axis] if s < hi and s + r > lo]


@dataclass(frozen=True)
class Block:
    """One unit of work: a chunk-aligned box of the output.

    Attributes:
        index: flat block id (the resume ledger records these).
        column: id of the column (the block's position along the trailing axes).
        slab: position along axis 0 inside its column.
        lo: first voxel per axis (original coordinates).
        hi: one past the last voxel per axis (original coordinates).
        num_chunks: spatial output chunks the block covers (each stored as one zarr chunk per channel).
    """

    index: int
    column: int
    slab: int
    lo: tuple[int, ...]
    hi: tuple[int, ...]
    num_chunks: int

    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.lo, self.hi))


def resolve_block_shape(
    shape: Sequence[int], chunks: Sequence[int], block_shape: Sequence[int] | None
) -> tuple[int, ...]:
    """A block shape rounded up to whole chunks; default one chunk deep along axis 0, the full extent elsewhere.

    Raises:
        ValueError: wrong length or non-positive entries.
    """
    shape = tuple(int(s) for s in shape)
    chunks = tuple(int(c) for c in chunks)
    if block_shape is None:
        return (chunks[0], *shape[1:])
    block_shape = tuple(int(b) for b in block_shape)
    if len(block_shape) != len(shape) or any(b < 1 for b in block_shape):
        raise ValueError(f"block_shape {block_shape} must have {len(shape)} positive entries")
    return tuple(min(math.ceil(b / c) * c, math.ceil(s / c) * c) for b, c, s in zip(block_shape, chunks, shape))


def iter_blocks(shape: Sequence[int], chunks: Sequence[int], block_shape: Sequence[int]) -> Iterator[Block]:
    """Blocks column by column (trailing axes outer), slab by slab along axis 0 inside a column."""
    shape = tuple(int(s) for s in shape)
    counts = [math.ceil(s / b) for s, b in zip(shape, block_shape)]
    index = 0
    for column, tail in enumerate(itertools.product(*(range(n) for n in counts[1:]))):
        for slab in range(counts[0]):
            pos = (slab, *tail)
            lo = tuple(p * b for p, b in zip(pos, block_shape))
            hi = tuple(min(lo_ + b, s) for lo_, b, s in zip(lo, block_shape, shape))
            n_chunks = math.prod(math.ceil((h - lo_) / c) for lo_, h, c in zip(lo, hi, chunks))
            yield Block(index, column, slab, lo, hi, n_chunks)
            index += 1
