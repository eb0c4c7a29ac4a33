"""The same prediction through dask.distributed: one task per chunk-aligned block (with its window halo).

Each task reads its block's input plus the halo its windows need, runs every window touching the block,
blends, and writes the block's own output chunks; no two tasks write the same chunk. The client records
finished blocks in the resume ledger as tasks complete and marks the store complete at the end. Tasks do
not carry sums between slabs (they are independent), so windows shared by two blocks run twice; the output
equals the single-process path to float rounding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from mtbio.data.normalize import Normalization
from mtbio.inference.engine import BlockTask, Engine, plan_tasks, run_task
from mtbio.inference.lock import acquire_store_lock
from mtbio.inference.settings import TTA, UNSET, Activation, Blend, InferenceSettings, Planes
from mtbio.inference.setup import ProgressFn, StopFn, prepare


def _block_task(engine: Engine, source: Any, key: str | None, store_path: str, task: BlockTask) -> int:
    """Worker side: compute one block and write its chunks; returns the block id."""
    import zarr

    from mtbio.data.store import FULL_RES
    from mtbio.inference.sources import open_source

    if isinstance(source, str):
        source = open_source(source, key)[0]
    data = engine.read_rows(source, task.block, task.rows)
    values, _ = run_task(engine, task, [(task.rows, data)], None)
    array = zarr.open_array(os.path.join(store_path, FULL_RES), mode="r+")
    array[(slice(None), *task.block.slices())] = values
    return task.block.index


def predict_volume_dask(
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
    client: Any = None,
    scheduler: str | None = None,
    n_workers: int = 2,
    processes: bool = False,
) -> Any:
    """:func:`mtbio.inference.predict.predict_volume` with blocks run as dask.distributed tasks.

    Arguments not listed here are those of ``predict_volume`` (``settings`` and the keyword arguments that
    replace its fields: :class:`~mtbio.inference.settings.InferenceSettings`).

    Args:
        client: a ``distributed.Client`` to use (left open).
        scheduler: a scheduler address (``"tcp://host:8786"``) to connect to when no ``client`` is given.
        n_workers: workers of the LocalCluster started when neither ``client`` nor ``scheduler`` is given
            (one thread each); it is closed at the end.
        processes: LocalCluster workers are processes (the network is pickled to them) instead of threads.

    Returns:
        The full-resolution zarr array ``(C, *spatial)`` of the store.

    Note:
        The source must reach the workers: a path (reopened there, with ``key``) or a picklable array
        (numpy, zarr). On an external scheduler the output path must be on storage every worker sees.
    """
    from distributed import Client, LocalCluster, as_completed

    from mtbio.data.store import mark_complete

    if not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be a positive int, got {n_workers!r}")
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
    lock = acquire_store_lock(output)  # one writer per store (the client holds it for all workers)
    try:
        prepared = prepare(network, source, output, run_settings, resume=resume, overwrite=overwrite, key=key)
        tasks = plan_tasks(prepared.engine, prepared.blocks, prepared.ledger.done, carry=False)
        total = sum(b.num_chunks for b in prepared.blocks)
        done = sum(b.num_chunks for b in prepared.blocks if b.index in prepared.ledger.done)
        chunks_of = {b.index: b.num_chunks for b in prepared.blocks}
        store_path = os.path.abspath(prepared.output)

        cluster = None
        own_client = client is None
        if client is None:
            if scheduler is not None:
                client = Client(scheduler)
            else:
                cluster = LocalCluster(
                    n_workers=n_workers, threads_per_worker=1, processes=processes, dashboard_address=None
                )
                client = Client(cluster)
        futures: list[Any] = []
        try:
            if progress is not None:
                progress(done, total)
            if tasks:
                engine_f = client.scatter(prepared.engine, broadcast=True)
                src: Any = prepared.source_path if prepared.source_path is not None else prepared.source
                src_f = src if isinstance(src, str) else client.scatter(src, broadcast=True)
                futures = [
                    client.submit(_block_task, engine_f, src_f, prepared.key, store_path, t, pure=False) for t in tasks
                ]
                stream = as_completed(futures)
                for future in stream:
                    index = future.result()
                    prepared.ledger.add(index)
                    done += chunks_of[index]
                    if progress is not None:
                        progress(done, total)
                    if stop is not None and stop():
                        for f in futures:
                            f.cancel()
                        break
        finally:
            for f in futures:  # an error or Ctrl-C: no task of this run starts after the lock is released
                f.cancel()
            if own_client:
                client.close()
            if cluster is not None:
                cluster.close()
        if prepared.ledger.finished:
            mark_complete(prepared.output)
    finally:
        lock.release()
    return prepared.array
