"""Crash-safe store lifecycle: atomic creation, the progress ledger, and the resume identity check.

* Creation is atomic: the store is built in a sibling ``.<name>.partial`` folder and renamed into place, so
  a run killed during creation leaves no half-made store at the output path (the next run removes the
  partial folder and starts again).
* Progress is a small JSON ledger ``<out>/inference_progress.json`` listing the finished block ids; the
  writer rewrites it atomically (temporary file + ``os.replace``) only after all of a block's chunks are on
  disk. A block missing from the ledger is recomputed whole on resume.
* A store is resumed only when its recorded model hash, inference config and input fingerprint equal the
  current run's.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LEDGER_NAME = "inference_progress.json"
IDENTITY_KEYS = ("model_hash", "config", "source")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


def _atomic_write_json(path: Path, payload: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Ledger:
    """The set of finished block ids of one store, persisted after every addition.

    Args:
        store_path: the prediction store folder.
        num_blocks: total blocks of the run (recorded for a sanity check).
    """

    def __init__(self, store_path: str | os.PathLike, num_blocks: int, done: set[int] | None = None) -> None:
        self.path = Path(store_path) / LEDGER_NAME
        self.num_blocks = int(num_blocks)
        self.done: set[int] = set(done or ())
        self._lock = threading.Lock()

    @classmethod
    def load(cls, store_path: str | os.PathLike) -> Ledger:
        """Read the ledger of ``store_path``; raises ValueError if it is missing or unreadable."""
        path = Path(store_path) / LEDGER_NAME
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            return cls(store_path, int(payload["num_blocks"]), {int(i) for i in payload["done"]})
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: unreadable inference progress ledger ({err}); rerun with overwrite") from err

    def save(self) -> None:
        with self._lock:
            payload = {"num_blocks": self.num_blocks, "done": sorted(self.done)}
            _atomic_write_json(self.path, payload)

    def add(self, block_index: int) -> None:
        """Record a finished block (call only after its chunks are written)."""
        with self._lock:
            self.done.add(int(block_index))
        self.save()

    @property
    def finished(self) -> bool:
        return len(self.done) >= self.num_blocks


def check_identity(path: Path, meta: Mapping[str, Any], identity: Mapping[str, Any]) -> None:
    """Raise ValueError when the stored model hash / config / input differ from the current run's."""
    for key in IDENTITY_KEYS:
        stored, current = _jsonable(meta.get(key)), _jsonable(identity.get(key))
        if stored != current:
            raise ValueError(
                f"{path}: cannot resume: the store was written with a different {key} "
                f"(stored {stored!r}, this run {current!r}); pass overwrite=True (CLI: --overwrite) to replace it"
            )


def _partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def _remove_store(path: Path) -> None:
    from mtbio.data.store import is_prediction_store

    if path.is_dir() and (is_prediction_store(path) or not any(path.iterdir())):
        shutil.rmtree(path)
    else:
        raise FileExistsError(f"{path} exists and is not an mtbio prediction store; refusing to delete it")


def reserve(path: str | os.PathLike, *, resume: bool, overwrite: bool) -> Path | None:
    """The checks of :func:`open_or_create` that decide what happens to ``path``, done before any compute.

    Returns:
        ``None`` when an existing store is to be resumed; otherwise the empty ``.<name>.partial`` folder, created
        now so that an unwritable location fails at once, which :func:`create_store` fills and renames.

    Raises:
        FileExistsError: the output exists and neither ``resume`` nor ``overwrite`` was given.
        ValueError: both flags, or an unwritable location.
    """
    if resume and overwrite:
        raise ValueError("pass either resume=True or overwrite=True, not both")
    path = Path(path)
    if path.exists():
        if resume:
            return None
        if not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) or resume=True (--resume)")
        _remove_store(path)
    partial = _partial_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir()
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        raise ValueError(f"{path}: cannot write the prediction store there ({err.strerror or err})") from err
    return partial


def create_store(
    path: str | os.PathLike,
    partial: Path,
    *,
    identity: Mapping[str, Any],
    num_blocks: int,
    create_kwargs: Mapping[str, Any],
) -> Any:
    """Build the store in ``partial`` (from :func:`reserve`), write an empty ledger and rename it to ``path``.

    A kill at any point leaves either no store at ``path`` or a complete empty one.

    Returns:
        The full-resolution zarr array.
    """
    from mtbio.data.store import create_prediction_store, open_prediction_store

    path = Path(path)
    try:
        create_prediction_store(partial, extra_meta=dict(identity), overwrite=True, **create_kwargs)
        Ledger(partial, num_blocks).save()
        os.rename(partial, path)
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        raise ValueError(f"{path}: cannot write the prediction store there ({err.strerror or err})") from err
    return open_prediction_store(path, require_complete=False, mode="r+").array


def open_existing(path: str | os.PathLike, *, identity: Mapping[str, Any], num_blocks: int) -> tuple[Any, Ledger]:
    """Open a store to resume: check its identity and read its ledger.

    Raises:
        ValueError: another model / config / input, or a ledger of another block count.
    """
    from mtbio.data.store import open_prediction_store

    path = Path(path)
    store = open_prediction_store(path, require_complete=False, mode="r+")
    check_identity(path, store.meta, identity)
    ledger = Ledger.load(path)
    if ledger.num_blocks != num_blocks:
        raise ValueError(f"{path}: cannot resume: ledger has {ledger.num_blocks} blocks, this run {num_blocks}")
    return store.array, ledger


def open_or_create(
    path: str | os.PathLike,
    *,
    resume: bool,
    overwrite: bool,
    identity: Mapping[str, Any],
    num_blocks: int,
    create_kwargs: Mapping[str, Any],
) -> tuple[Any, Ledger]:
    """Open the store at ``path`` for resuming or create it atomically (:func:`reserve`, then
    :func:`open_existing` or :func:`create_store`).

    Args:
        path: the prediction store folder.
        resume: continue an existing store with the same identity (a missing store is created).
        overwrite: replace an existing store.
        identity: ``{"model_hash", "config", "source"}`` recorded in ``attrs["mtbio"]``.
        num_blocks: blocks of this run.
        create_kwargs: keyword arguments of :func:`mtbio.data.store.create_prediction_store`.

    Returns:
        ``(full-resolution zarr array, ledger)``.

    Raises:
        FileExistsError: the output exists and neither ``resume`` nor ``overwrite`` was given.
        ValueError: a resumed store of another model / config / input, or an unwritable location.
    """
    partial = reserve(path, resume=resume, overwrite=overwrite)
    if partial is None:
        return open_existing(path, identity=identity, num_blocks=num_blocks)
    array = create_store(path, partial, identity=identity, num_blocks=num_blocks, create_kwargs=create_kwargs)
    return array, Ledger(path, num_blocks)
