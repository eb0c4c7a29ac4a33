"""The prediction store: the one on-disk layout that inference writes and ``evaluate``, resume and the napari
reader read.

Layout (an OME-Zarr group, zarr format 3, OME-NGFF 0.5 metadata)::

    <out>/                 group; attrs["ome"]   = OME-NGFF multiscales (axes c, [z,] y, x; scale = voxel size)
                                  attrs["mtbio"] = {"complete": bool, "dtype": ..., "channels": [...],
                                                    "model_hash": ..., "config": ..., "mtbio_version": ...,
                                                    "voxel_size": [...], "source": ...}
    <out>/0                full resolution, shape (C, *spatial); channel 1 = foreground probability
    <out>/labels/...       optional (binary mask / instances), written by later stages

Probability encoding: ``uint8`` stores ``round(p * 255)``; ``float16`` / ``float32`` store ``p`` itself (or,
when the writer used ``activation=None``, the blended network output as is; ``attrs["mtbio"]["activation"]``
says which).

``complete`` is ``False`` from creation until the writer calls :func:`mark_complete` after its last chunk.
Readers that need a finished prediction call :func:`open_prediction_store` with ``require_complete=True``
(the default) and get an :class:`IncompletePredictionError` otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtbio.errors import UserError

STORE_KEY = "mtbio"
FULL_RES = "0"
FOREGROUND_CHANNEL = 1
PROBABILITY_DTYPES = ("uint8", "float16", "float32")
_SPATIAL_NAMES = {2: ("y", "x"), 3: ("z", "y", "x")}


class IncompletePredictionError(UserError, RuntimeError):
    """Raised when a prediction store is read as finished but its writer never marked it complete."""


class NotAPredictionStoreError(ValueError):
    """Raised when a path is not an mtbio prediction store."""


def ome_multiscales(
    spatial_ndim: int, voxel_size: Sequence[float] | None, *, channel_axis: bool = True, name: str = "prediction"
) -> dict[str, Any]:
    """OME-NGFF multiscales metadata for one full-resolution level at path ``"0"``.

    Args:
        spatial_ndim: 2 (y, x) or 3 (z, y, x).
        voxel_size: physical size of a voxel per spatial axis in nanometres, or ``None`` (unit scale).
        channel_axis: prepend a ``c`` channel axis.
        name: the multiscale's name.
    """
    if spatial_ndim not in _SPATIAL_NAMES:
        raise ValueError(f"spatial_ndim must be 2 or 3, got {spatial_ndim}")
    vs = [1.0] * spatial_ndim if voxel_size is None else [float(v) for v in voxel_size]
    if len(vs) != spatial_ndim:
        raise ValueError(f"voxel_size {tuple(vs)} has {len(vs)} entries, expected {spatial_ndim}")
    axes = [{"name": n, "type": "space", "unit": "nanometer"} for n in _SPATIAL_NAMES[spatial_ndim]]
    scale = vs
    if channel_axis:
        axes = [{"name": "c", "type": "channel"}, *axes]
        scale = [1.0, *vs]
    return {
        "version": "0.5",
        "name": name,
        "axes": axes,
        "datasets": [{"path": FULL_RES, "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
    }


@dataclass
class PredictionStore:
    """An opened prediction store.

    Attributes:
        path: the group's path.
        array: the full-resolution zarr array, shape ``(C, *spatial)``.
        meta: ``attrs["mtbio"]`` as a dict.
    """

    path: Path
    array: Any
    meta: dict[str, Any]

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete", False))

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    @property
    def voxel_size(self) -> tuple[float, ...] | None:
        vs = self.meta.get("voxel_size")
        return None if vs is None else tuple(float(v) for v in vs)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    def probability(self, index: Any = ..., channel: int = FOREGROUND_CHANNEL) -> np.ndarray:
        """Read the foreground probability of a region as float32 in [0, 1].

        Args:
            index: a numpy index into the spatial axes (``...`` reads everything: fine only when it fits).
            channel: the channel to read (1 = mitochondrion).
        """
        if not isinstance(index, tuple):
            index = (index,)
        raw = np.asarray(self.array[(channel, *index)])
        return decode_probability(raw)

    def foreground(self) -> ForegroundView:
        """A lazily indexable view of the foreground channel in its stored dtype (uint8 or float)."""
        return ForegroundView(self.array, FOREGROUND_CHANNEL)


class ForegroundView:
    """Lazy ``(*spatial)`` view of one channel of a ``(C, *spatial)`` array; slicing reads only what it needs."""

    def __init__(self, array: Any, channel: int) -> None:
        self._array = array
        self._channel = channel
        self.shape = tuple(array.shape[1:])
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        if not isinstance(index, tuple):
            index = (index,)
        return np.asarray(self._array[(self._channel, *index)])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]


def decode_probability(values: np.ndarray) -> np.ndarray:
    """Stored probability values -> float32 probabilities (uint8 is divided by 255)."""
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values.astype(np.float32) / np.float32(255.0)
    return values.astype(np.float32, copy=False)


def encode_probability(prob: np.ndarray, dtype: str | np.dtype, *, overwrite_input: bool = False) -> np.ndarray:
    """float probabilities in [0, 1] -> the store's dtype (``uint8`` = ``round(p * 255)``).

    ``overwrite_input=True`` lets the uint8 encoding use a float32 ``prob`` as its scratch space (no temporary
    arrays; the same result).
    """
    dt = np.dtype(dtype)
    if dt == np.uint8:
        p = np.asarray(prob, dtype=np.float32)
        if overwrite_input and p.flags.writeable:
            np.multiply(p, np.float32(255.0), out=p)
            np.rint(p, out=p)
            np.clip(p, 0, 255, out=p)
            return p.astype(np.uint8)
        return np.clip(np.rint(p * np.float32(255.0)), 0, 255).astype(np.uint8)
    return np.asarray(prob).astype(dt)


def is_prediction_store(path: str | os.PathLike) -> bool:
    """True when ``path`` is a zarr group carrying ``attrs["mtbio"]`` and a full-resolution array ``0``."""
    p = Path(path)
    if not p.is_dir() or not ((p / "zarr.json").exists() or (p / ".zgroup").exists()):
        return False
    try:
        import zarr

        group = zarr.open_group(str(p), mode="r")
        return STORE_KEY in group.attrs and FULL_RES in group
    except Exception:
        return False


def open_prediction_store(
    path: str | os.PathLike, *, require_complete: bool = True, mode: str = "r"
) -> PredictionStore:
    """Open a prediction store.

    Args:
        path: the store's group path.
        require_complete: raise :class:`IncompletePredictionError` when the writer never marked it complete.
        mode: zarr open mode (``"r"`` or ``"r+"``).

    Raises:
        NotAPredictionStoreError: ``path`` is not a zarr group with ``attrs["mtbio"]`` and array ``0``.
        IncompletePredictionError: the store is not complete and ``require_complete`` is true.
    """
    import zarr

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such prediction store")
    try:
        group = zarr.open_group(str(p), mode=mode)
    except Exception as err:  # noqa: BLE001 - re-raised with the path
        raise NotAPredictionStoreError(f"{p}: not a zarr group ({err})") from err
    if STORE_KEY not in group.attrs or FULL_RES not in group:
        raise NotAPredictionStoreError(
            f"{p}: not an mtbio prediction store (needs attrs['{STORE_KEY}'] and a full-resolution array '{FULL_RES}')"
        )
    meta = dict(group.attrs[STORE_KEY])
    store = PredictionStore(path=p, array=group[FULL_RES], meta=meta)
    if require_complete and not store.complete:
        raise IncompletePredictionError(
            f"{p}: prediction is incomplete (attrs['{STORE_KEY}']['complete'] is false): the run that wrote it "
            "stopped early; rerun it with --resume to finish it"
        )
    return store


def create_prediction_store(
    path: str | os.PathLike,
    spatial_shape: Sequence[int],
    *,
    num_channels: int = 2,
    dtype: str | np.dtype = "uint8",
    chunks: Sequence[int] | None = None,
    voxel_size: Sequence[float] | None = None,
    activation: str | None = "softmax",
    extra_meta: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> PredictionStore:
    """Create an empty prediction store marked ``complete: false``.

    Args:
        path: group path to create.
        spatial_shape: ``(Y, X)`` or ``(Z, Y, X)``.
        num_channels: C of the ``(C, *spatial)`` array (2 for background / mitochondrion).
        dtype: ``uint8`` (p·255), ``float16`` or ``float32``.
        chunks: spatial chunk shape; each channel is chunked on its own (channel chunk 1), so readers of the
            foreground probability decode only channel 1, and a writer encodes the channels in parallel.
            Default 64³ / 512².
        voxel_size: nanometres per spatial axis, copied from the input.
        activation: what produced the values (``"softmax"``, ``"sigmoid"`` or ``None`` for raw blended output).
        extra_meta: more keys for ``attrs["mtbio"]`` (model hash, config, source path, ...).
        overwrite: replace an existing store; otherwise an existing path raises ``FileExistsError``.
    """
    import zarr

    from mtbio import __version__

    p = Path(path)
    spatial_shape = tuple(int(s) for s in spatial_shape)
    nd = len(spatial_shape)
    if nd not in (2, 3):
        raise ValueError(f"spatial_shape must have 2 or 3 entries, got {spatial_shape}")
    dt = np.dtype(dtype)
    if dt.name not in PROBABILITY_DTYPES:
        raise ValueError(f"dtype must be one of {PROBABILITY_DTYPES}, got {dt.name}")
    if dt == np.uint8 and activation is None:
        raise ValueError("uint8 stores probabilities (p*255); raw network output (activation=None) needs a float dtype")
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} exists; pass overwrite=True (CLI: --overwrite) to replace it or resume it")
    if chunks is None:
        chunks = (64, 64, 64) if nd == 3 else (512, 512)
    chunks = tuple(min(int(c), s) for c, s in zip(chunks, spatial_shape))
    group = zarr.open_group(str(p), mode="w", zarr_format=3)
    arr = group.create_array(
        FULL_RES,
        shape=(num_channels, *spatial_shape),
        chunks=(1, *chunks),
        dtype=dt,
        fill_value=0,
    )
    meta = {
        "complete": False,
        "dtype": dt.name,
        "activation": activation,
        "channels": ["background", "mitochondrion"][:num_channels] if num_channels <= 2 else None,
        "voxel_size": None if voxel_size is None else [float(v) for v in voxel_size],
        "mtbio_version": __version__,
        **dict(extra_meta or {}),
    }
    group.attrs.update({"ome": {"version": "0.5", "multiscales": [ome_multiscales(nd, voxel_size)]}, STORE_KEY: meta})
    return PredictionStore(path=p, array=arr, meta=meta)


def update_store_meta(path: str | os.PathLike, **values: Any) -> dict[str, Any]:
    """Merge ``values`` into ``attrs["mtbio"]`` of the store at ``path`` and return the new dict."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    meta = dict(group.attrs.get(STORE_KEY, {}))
    meta.update(values)
    group.attrs[STORE_KEY] = meta
    return meta


def mark_complete(path: str | os.PathLike, complete: bool = True) -> None:
    """Set ``attrs["mtbio"]["complete"]``; writers call this only after their last chunk is on disk."""
    update_store_meta(path, complete=bool(complete))
