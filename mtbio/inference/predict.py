"""Out-of-core, resumable sliding-window inference into a prediction store: :func:`predict_volume`."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from mtbio.data.normalize import Normalization
from mtbio.inference.engine import BlockTask, plan_tasks, run_task, split_rows
from mtbio.inference.lock import acquire_store_lock
from mtbio.inference.settings import TTA, UNSET, Activation, Blend, InferenceSettings, Planes
from mtbio.inference.setup import Prepared, ProgressFn, StopFn, prepare

_DONE = object()


def predict_volume(
    network: torch.nn.Module,
    source: Any,
    output: str | os.PathLike,
    *,
    settings: InferenceSettings | None = None,
    roi_size: Sequence[int] = UNSET,
    overlap: float | Sequence[float] = UNSET,
    mode: Blend | str = UNSET,
    sigma_scale: float = UNSET,
    batch_size: int = UNSET,
    device: torch.device | str | None = UNSET,
    activation: Activation | str | None = UNSET,
    dtype: str | None = UNSET,
    chunks: Sequence[int] | None = UNSET,
    block_shape: Sequence[int] | None = UNSET,
    normalize: Normalization | str | tuple[float, float] | None = UNSET,
    voxel_size: Sequence[float] | None = UNSET,
    amp: bool = UNSET,
    tta: TTA | str = UNSET,
    planes: Planes | str = UNSET,
    resume: bool = False,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    stop: StopFn | None = None,
    key: str | None = None,
    carry: bool = True,
) -> Any:
    """Sliding-window inference of a volume of any size into an OME-Zarr prediction store.

    The output equals ``sliding_window_inference(x[None, None], roi_size, batch_size, network, overlap, mode)``
    (to float rounding): same window grid, same importance map, same zero padding when the ROI is larger than
    the volume (half before, the rest after, cropped away). Memory is bounded by one block: the output is
    written block by block (by default one chunk deep along axis 0 and at most 2048 voxels along the other
    axes); every window touching a block is run, blended into that block's accumulators only, and each output
    chunk is written once. Windows shared with the next slab of the same column are not rerun: their sums are
    carried forward. A background thread reads the next block's input while the network runs; another creates
    a new store (while the first block computes) and writes finished blocks.

    Args:
        network: maps ``(B, 1, *roi)`` to ``(B, C, *roi)`` logits; moved to ``device`` and set to eval mode.
        source: ``(Z, Y, X)`` or ``(Y, X)``: a path (zarr, OME-Zarr, h5 with ``key``, tif, folder) or any
            sliceable array (numpy, zarr, dask, h5py). A 2D ``roi_size`` on a 3D volume runs section by section.
        output: prediction store folder (see :mod:`mtbio.data.store`); the array ``<output>/0`` is
            ``(C, *spatial)``.
        settings: the run's options and their defaults (:class:`~mtbio.inference.settings.InferenceSettings`:
            every option below is described there; ``roi_size`` is required). ``resample`` / ``tolerance`` are
            not used here (see :func:`mtbio.inference.resampled.predict_at_model_voxel_size`).
        roi_size, overlap, mode, sigma_scale, batch_size, device, activation, dtype, chunks, block_shape, normalize,
            voxel_size, amp, tta, planes: replace the field of that name of ``settings`` (left out: the settings'
            value).
            ``normalize="zscore"`` computes the whole-volume statistics out of core first, ``"zscore_section"``
            those of each section along axis 0; voxels are normalised before the zero padding. ``voxel_size`` is
            recorded in the store (default the source's). ``tta`` runs each window through
            :class:`mtbio.inference.tta.TTAWrapper` (the store's config records it). ``planes`` ``xyz`` (or ``auto`` on
            an isotropic volume) runs a 2D network on the xy, xz and yz images of 3D windows
            (:class:`mtbio.inference.planes.OrthoPlanes`; the store's config records ``planes`` and ``window``).
        resume: continue an existing store written by the same model, config and input (finished blocks are
            skipped; the result is bitwise that of an uninterrupted run with the same batch size and device).
            A missing store is created.
        overwrite: replace an existing store.
        progress: ``progress(done, total)`` in spatial output chunks, called from the calling thread.
        stop: polled before each block; when it returns True the run finishes the blocks in flight, leaves the
            store resumable and ``complete: false``, and returns.
        key: dataset inside an h5 / zarr container.
        carry: carry overlap sums from one slab to the next (``False`` reruns shared windows; for measuring).

    Returns:
        The full-resolution zarr array ``(C, *spatial)`` of the store.

    Raises:
        FileExistsError: ``output`` exists and neither ``resume`` nor ``overwrite`` is set.
        FileNotFoundError: a missing input path.
        ValueError: bad arguments, an input the network cannot take, an unwritable output, or resuming a
            store of another model / config / input.
    """
    run_settings = InferenceSettings.merged(
        settings,
        roi_size=roi_size,
        overlap=overlap,
        mode=mode,
        sigma_scale=sigma_scale,
        batch_size=batch_size,
        device=device,
        activation=activation,
        dtype=dtype,
        chunks=chunks,
        block_shape=block_shape,
        normalize=normalize,
        voxel_size=voxel_size,
        amp=amp,
        tta=tta,
        planes=planes,
    )
    lock = acquire_store_lock(output)  # one writer per store: a second run fails here, at once
    try:
        prepared = prepare(
            network, source, output, run_settings, resume=resume, overwrite=overwrite, key=key, defer_create=True
        )
        tasks = plan_tasks(prepared.engine, prepared.blocks, prepared.ledger.done, carry=carry)
        _run(prepared, tasks, progress, stop)
    finally:  # also on errors and Ctrl-C (KeyboardInterrupt); a killed process leaves a stale lock (taken over)
        lock.release()
    return prepared.array


def _put(q: queue.Queue, item: Any, halt: threading.Event) -> bool:
    while not halt.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _parts(read_q: queue.Queue, task: BlockTask) -> Iterator[tuple[tuple[int, int], Any]]:
    """The reader's ``(rows, data)`` parts of ``task``, taken from the queue as they arrive."""
    while True:
        item = read_q.get()
        if isinstance(item, BaseException):
            raise item
        if item is _DONE:
            raise RuntimeError("internal error: the reader stopped before the compute loop's task")
        read_task, rows, data = item
        if read_task is not task:
            raise RuntimeError("internal error: the reader and the compute loop disagree on the task order")
        yield rows, data
        if rows[1] >= task.rows[1] or rows[1] <= rows[0]:
            return


def _run(prepared: Prepared, tasks: list[BlockTask], progress: ProgressFn | None, stop: StopFn | None) -> None:
    from mtbio.data.store import mark_complete

    engine, ledger = prepared.engine, prepared.ledger
    total = sum(b.num_chunks for b in prepared.blocks)
    done = {"chunks": sum(b.num_chunks for b in prepared.blocks if b.index in ledger.done)}
    halt = threading.Event()
    read_q: queue.Queue = queue.Queue(maxsize=1)
    write_q: queue.Queue = queue.Queue(maxsize=2)
    errors: list[BaseException] = []
    first_read = threading.Event()
    read_failed = threading.Event()

    def reader() -> None:
        slabs = engine.slab_reader(prepared.source)  # this thread's: reuses the rows shared by consecutive slabs
        try:
            for i, task in enumerate(tasks):
                # the first task's first window row is read alone: the first forward pass need not wait for
                # the whole first slab (the only read not overlapped with compute)
                for rows in split_rows(task.rows, first=i == 0):
                    if halt.is_set():
                        return
                    data = engine.read_rows(prepared.source, task.block, rows, slabs)
                    first_read.set()
                    if not _put(read_q, (task, rows, data), halt):
                        return
            _put(read_q, _DONE, halt)
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            read_failed.set()  # before first_read: a store not made yet is not made (e.g. NaN in the first slab)
            _put(read_q, err, halt)
        finally:  # also when stopped or failed before any read: the writer must not wait for ever
            first_read.set()

    def writer() -> None:
        array = None
        try:
            if prepared.create is not None:  # a new store: made here while the first block computes
                first_read.wait()  # not while the first input is read: that read is on the critical path
                if read_failed.is_set():  # the run fails with the reader's error: no store is made
                    if prepared.abandon is not None:
                        prepared.abandon()
                else:
                    prepared.array = prepared.create()
                    prepared.create = None
            if prepared.array is not None:
                # every chunk is written whole, once: skip zarr's scan for chunks equal to the fill value
                array = prepared.array.with_config({"write_empty_chunks": True})
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            errors.append(err)
        while True:
            item = write_q.get()
            if item is _DONE:
                return
            if errors or array is None:  # drained, not written (the main thread raises)
                continue
            block, values = item
            try:
                array[(slice(None), *block.slices())] = values
                ledger.add(block.index)
                done["chunks"] += block.num_chunks
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                errors.append(err)

    threads = [
        threading.Thread(target=reader, name="mtbio-reader", daemon=True),
        threading.Thread(target=writer, name="mtbio-writer", daemon=True),
    ]
    for t in threads:
        t.start()
    bar = _Progress(progress, total, done["chunks"], engine, tasks)
    acc = None
    try:
        for i, task in enumerate(tasks):
            if stop is not None and stop():
                break
            if not task.carry:  # allocate (and zero) the accumulator while the reader is still busy
                acc = engine.new_accumulator(task.block, engine.block_rows(task.block))
                bar.start_group(i)
            values, acc = run_task(engine, task, _parts(read_q, task), acc, bar.tick)
            write_q.put((task.block, values))
            if errors:
                raise errors[0]
            bar.show(done["chunks"])
    finally:
        halt.set()
        write_q.put(_DONE)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    if progress is not None:
        progress(done["chunks"], total)
    if ledger.finished:
        mark_complete(prepared.output)


class _Progress:
    """``progress(done, total)`` in output chunks, moving while a block computes.

    A block's chunks count when it is written; but the first task of a column (``carry`` False) may compute the
    windows of every later slab of that column too (3D windows as deep as the volume: ortho-plane consensus), so
    that between two written blocks the count would not move for most of the run. While a column's windows run,
    the count goes up by that column's chunks times the share of its windows done; it never goes down.
    """

    def __init__(self, fn: ProgressFn | None, total: int, done: int, engine: Any, tasks: list[BlockTask]) -> None:
        self.fn, self.total, self.shown = fn, total, -1
        self.groups: dict[int, tuple[int, int]] = {}  # index of a column's first task -> (chunks, windows)
        first = None
        for i, task in enumerate(tasks):
            if not task.carry or first is None:
                first = i
            chunks, windows = self.groups.get(first, (0, 0))
            self.groups[first] = (chunks + task.block.num_chunks, windows + engine.task_windows(task))
        self.base, self.chunks, self.windows, self.ran = done, 0, 0, 0
        self.show(done)

    def start_group(self, i: int) -> None:
        """The column whose first task is ``tasks[i]`` starts: the count so far is its base."""
        if i not in self.groups:
            return
        self.base = max(self.shown, 0)
        self.chunks, self.windows = self.groups[i]
        self.ran = 0

    def tick(self, n: int) -> None:
        """``n`` more windows of the current column ran."""
        if self.fn is None or self.windows <= 0:
            return
        self.ran += n
        self.show(self.base + (self.chunks * min(self.ran, self.windows)) // self.windows)

    def show(self, value: int) -> None:
        value = min(int(value), self.total)
        if self.fn is not None and value > self.shown:
            self.shown = value
            self.fn(value, self.total)
