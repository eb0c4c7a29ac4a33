"""The compute core shared by the single-process and the Dask paths: plan blocks, run windows, normalise.

A :class:`BlockTask` says which rows of windows (window starts along axis 0) to run for a block and whether
the accumulator of the previous slab of the same column is carried in. :func:`run_task` runs them and
returns the block's finished values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mtbio.inference.blending import Activation, apply_activation
from mtbio.inference.merger import SlabAccumulator, float_buffer
from mtbio.inference.sources import SlabReader, read_padded
from mtbio.inference.windows import Block, WindowGrid


class SectionWise(torch.nn.Module):
    """Runs a 2D network on ``(B, C, 1, H, W)`` windows of a 3D volume, section by section (``C = 1 + 2k`` for a
    network with ``k`` context sections: the engine stacks the neighbours as channels)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x[:, :, 0])[:, :, None]


class RepeatChannels(torch.nn.Module):
    """Runs a network with ``k`` context sections on a single 2D image: the image repeated as its ``1 + 2k`` channels
    (replicate padding of a one-section volume, :mod:`mtbio.data.context`)."""

    def __init__(self, network: torch.nn.Module, channels: int) -> None:
        super().__init__()
        self.network = network
        self.channels = int(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.expand(-1, self.channels, *x.shape[2:]))


@dataclass
class Engine:
    """Everything a worker needs to compute blocks.

    Attributes:
        network: takes ``(B, 1, *roi)`` and returns ``(B, C, *roi)`` (already wrapped for test-time augmentation
            and section-wise runs).
        grid: the global window grid (``grid.roi`` is 3D ``(1, H, W)`` for a 2D network on a 3D volume).
        weight: importance map ``(*roi)`` on ``device``.
        channels: C.
        batch_size: windows per forward pass.
        device: compute device.
        activation: applied after blending (``None``: raw blended output).
        out_dtype: stored dtype name.
        normalize: ``(mean, std)`` applied to the input (floats, or per-section arrays of shape (Z,)), or ``None``.
        amp: autocast float16 on CUDA.
        finite_check: called on every input box read (``check(voxels, origin)``, raising on NaN / Inf), or
            ``None`` (integer inputs, or inputs the normalisation statistics pass has already checked).
        context: context sections ``k`` of a 2D network run section by section: every read takes ``k`` more
            sections on each side along axis 0 (replicated at the volume's ends) and every window gets the
            ``1 + 2k`` sections around its own as channels (:mod:`mtbio.data.context`); 0 = one channel.
    """

    network: torch.nn.Module
    grid: WindowGrid
    weight: torch.Tensor
    channels: int
    batch_size: int
    device: torch.device
    activation: Activation | None
    out_dtype: str
    normalize: tuple[Any, Any] | None = None
    amp: bool = False
    finite_check: Callable[[np.ndarray, tuple[int, ...]], None] | None = None
    context: int = 0

    def column_box(self, block: Block) -> tuple[list[list[int]], tuple[int, ...], tuple[int, ...]]:
        """Trailing-axis window starts that touch the block's column and the box they cover (padded coords)."""
        starts, lo, hi = [], [], []
        for ax in range(1, self.grid.ndim):
            p = self.grid.pad_lo[ax]
            axis_starts = self.grid.starts_intersecting(ax, block.lo[ax] + p, block.hi[ax] + p)
            starts.append(axis_starts)
            lo.append(axis_starts[0])
            hi.append(axis_starts[-1] + self.grid.roi[ax])
        return starts, tuple(lo), tuple(hi)

    def block_rows(self, block: Block) -> tuple[int, int]:
        """Index range of the axis-0 window rows touching the block."""
        p = self.grid.pad_lo[0]
        return self.grid.rows_intersecting(block.lo[0] + p, block.hi[0] + p)

    def read_rows(
        self, source: Any, block: Block, rows: tuple[int, int], reader: SlabReader | None = None
    ) -> tuple[int, np.ndarray] | None:
        """Input for rows ``[r0, r1)`` of the block's column: ``(axis-0 origin, float32 array)``, or ``None``.

        ``reader`` (a :class:`SlabReader` of ``source``, used by one thread) reuses what the previous slab read.
        """
        r0, r1 = rows
        if r1 <= r0:
            return None
        s0 = self.grid.starts[0]
        _, lo, hi = self.column_box(block)
        z0, z1 = s0[r0], s0[r1 - 1] + self.grid.roi[0]
        if self.context:  # the z-halo of a 2.5D network, replicated at the volume's ends
            return z0 - self.context, self._read_context(source, z0, z1, lo, hi, reader)
        if reader is not None:
            return z0, reader.read((z0, *lo), (z1, *hi))
        data = read_padded(source, (z0, *lo), (z1, *hi), self.grid.pad_lo, self.normalize, self.finite_check)
        return z0, data

    def _read_context(
        self, source: Any, z0: int, z1: int, lo: tuple[int, ...], hi: tuple[int, ...], reader: SlabReader | None
    ) -> np.ndarray:
        """Sections ``z0 - k .. z1 + k - 1`` of the box (section-wise grids have no padding along axis 0), the
        missing ones at the ends replicated (:func:`mtbio.data.context.context_indices`)."""
        from mtbio.data.context import context_indices

        depth = self.grid.shape[0]
        idx = context_indices(np.arange(z0, z1), self.context, depth)
        a, b = int(idx.min()), int(idx.max()) + 1
        if reader is not None:
            data = reader.read((a, *lo), (b, *hi))
        else:
            data = read_padded(source, (a, *lo), (b, *hi), self.grid.pad_lo, self.normalize, self.finite_check)
        rows = np.clip(np.arange(z0 - self.context, z1 + self.context), 0, depth - 1) - a
        return data if rows[0] == 0 and len(rows) == data.shape[0] else np.ascontiguousarray(data[rows])

    def slab_reader(self, source: Any) -> SlabReader:
        """A :class:`SlabReader` of ``source`` for this engine's padding and normalisation."""
        return SlabReader(source, self.grid.pad_lo, self.grid.padded, self.normalize, self.finite_check)

    def _forward(self, batch: np.ndarray) -> torch.Tensor:
        """``network(batch) * weight`` as float32, shape ``(B, C, *roi)``."""
        x = torch.from_numpy(batch).to(self.device)
        autocast = (
            torch.autocast(device_type="cuda", dtype=torch.float16)
            if self.amp and self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        with torch.inference_mode():
            with autocast:
                out = self.network(x)
            out = out.float()
            out *= self.weight
        return out

    def task_windows(self, task: BlockTask) -> int:
        """How many windows ``task`` runs (its window rows times the windows of a row in the block's column)."""
        starts, _, _ = self.column_box(task.block)
        return max(task.rows[1] - task.rows[0], 0) * int(np.prod([len(s) for s in starts]))

    def run_rows(
        self,
        acc: SlabAccumulator,
        block: Block,
        rows: tuple[int, int],
        data: tuple[int, np.ndarray],
        tick: Callable[[int], None] | None = None,
    ) -> None:
        """Run every window of rows ``[r0, r1)`` in the block's column and add them to ``acc``.

        Windows are batched row by row in the global window order, so a row's outputs do not depend on
        which block ran it. ``tick(n)`` is called after every forward pass with its ``n`` windows.
        """
        z_origin, volume = data
        starts, lo, _ = self.column_box(block)
        roi = self.grid.roi
        k = self.context
        for r in range(*rows):
            z = self.grid.starts[0][r]
            windows = [(z, *rest) for rest in _product(starts)]
            for b in range(0, len(windows), self.batch_size):
                chunk = windows[b : b + self.batch_size]
                if k:  # (B, 1 + 2k, 1, H, W): sections z - k .. z + k as channels (data starts at z_origin)
                    batch = np.stack(
                        [
                            volume[
                                (
                                    slice(w[0] - z_origin - k, w[0] - z_origin + k + 1),
                                    *(slice(s - o, s - o + n) for s, o, n in zip(w[1:], lo, roi[1:])),
                                )
                            ]
                            for w in chunk
                        ]
                    )[:, :, None]
                else:
                    batch = np.stack(
                        [
                            volume[tuple(slice(s - o, s - o + n) for s, o, n in zip(w, (z_origin, *lo), roi))]
                            for w in chunk
                        ]
                    )[:, None]
                out = self._forward(batch)  # already multiplied by the weight map
                for w, values in zip(chunk, out):
                    acc.add(w, values, self.weight)
                if tick is not None:
                    tick(len(chunk))

    def finish(self, acc: SlabAccumulator, block: Block) -> np.ndarray:
        """The block's stored values ``(C, *block shape)``: blended, activated, encoded."""
        from mtbio.data.store import encode_probability

        p = self.grid.pad_lo
        values = acc.normalized(tuple(a + q for a, q in zip(block.lo, p)), tuple(b + q for b, q in zip(block.hi, p)))
        if self.activation is None:
            return values.cpu().numpy().astype(np.dtype(self.out_dtype), copy=False)
        # the activation's result goes to a buffer of our own (on the CPU numpy-backed, see ``float_buffer``),
        # which the encoding then uses as scratch space: no temporaries of the block's size
        values = apply_activation(values, self.activation, out=float_buffer(values.shape, values.device, zero=False))
        return encode_probability(values.cpu().numpy(), self.out_dtype, overwrite_input=True)

    def new_box(self, block: Block, rows: tuple[int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The box of :meth:`new_accumulator` (padded coordinates)."""
        _, lo, hi = self.column_box(block)
        z0 = block.lo[0] + self.grid.pad_lo[0]
        z1 = self.grid.starts[0][rows[1] - 1] + self.grid.roi[0]
        return (z0, *lo), (z1, *hi)

    def new_accumulator(self, block: Block, rows: tuple[int, int]) -> SlabAccumulator:
        """An empty accumulator from the block's first voxel (axis 0) to the end of its last window row."""
        return SlabAccumulator(self.channels, *self.new_box(block, rows), self.device)


def _product(axes: Sequence[Sequence[int]]) -> Iterable[tuple[int, ...]]:
    import itertools

    return itertools.product(*axes)


@dataclass(frozen=True)
class BlockTask:
    """One planned unit: run window rows ``rows`` for ``block``; ``carry`` reuses the previous slab's sums."""

    block: Block
    rows: tuple[int, int]
    carry: bool


def plan_tasks(engine: Engine, blocks: Sequence[Block], done: set[int], *, carry: bool = True) -> list[BlockTask]:
    """Tasks for the blocks not in ``done``; with ``carry`` a slab following a computed slab of the same column
    only runs the window rows the previous one did not."""
    tasks: list[BlockTask] = []
    prev: Block | None = None
    prev_end = 0
    for block in blocks:
        if block.index in done:
            prev = None
            continue
        r0, r1 = engine.block_rows(block)
        if carry and prev is not None and prev.column == block.column and prev.slab == block.slab - 1:
            tasks.append(BlockTask(block, (max(r0, prev_end), r1), True))
        else:
            tasks.append(BlockTask(block, (r0, r1), False))
        prev, prev_end = block, r1
    return tasks


def split_rows(rows: tuple[int, int], first: bool) -> list[tuple[int, int]]:
    """The parts in which a task's window rows are read: ``[rows]``, or with ``first`` its first row alone and
    then the rest, so that the run's first forward pass waits only for the input of one window row."""
    r0, r1 = rows
    if first and r1 - r0 > 1:
        return [(r0, r0 + 1), (r0 + 1, r1)]
    return [(r0, r1)]


def run_task(
    engine: Engine,
    task: BlockTask,
    parts: Iterable[tuple[tuple[int, int], tuple[int, np.ndarray] | None]],
    acc: SlabAccumulator | None,
    tick: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, SlabAccumulator]:
    """Compute one task. ``acc`` is the previous slab's accumulator when ``task.carry``; otherwise ``None`` or
    an empty accumulator from ``engine.new_accumulator`` (made while the input was being read).

    Args:
        parts: ``(rows, data)`` pairs covering ``task.rows`` in order, ``data`` from :meth:`Engine.read_rows`
            of those rows (``[(task.rows, data)]`` for one read; an iterator may still be reading the later
            parts while the first ones run).
        tick: called with the number of windows of every forward pass (finer progress than blocks).

    Returns:
        ``(values (C, *block shape) in the stored dtype, the accumulator to carry to the next slab)``.
    """
    full_rows = engine.block_rows(task.block)
    if task.carry:
        if acc is None:
            raise ValueError("internal error: a carried task without the previous accumulator")
        z1 = engine.grid.starts[0][full_rows[1] - 1] + engine.grid.roi[0]
        acc = acc.shifted(task.block.lo[0] + engine.grid.pad_lo[0], z1)
    elif acc is None:
        acc = engine.new_accumulator(task.block, full_rows)
    elif (acc.lo, acc.hi) != (fresh := engine.new_box(task.block, full_rows)):
        raise ValueError(f"internal error: accumulator box {acc.lo}-{acc.hi} is not the block's {fresh}")
    next_row = task.rows[0]
    for rows, data in parts:
        if rows[0] != next_row:
            raise ValueError(f"internal error: rows {rows} do not continue the task's rows {task.rows} at {next_row}")
        if data is not None:
            engine.run_rows(acc, task.block, rows, data, tick)
        next_row = max(next_row, rows[1])
    if next_row < task.rows[1]:
        raise ValueError(f"internal error: the parts stopped at row {next_row} of the task's rows {task.rows}")
    return engine.finish(acc, task.block), acc
