"""Instance labels from a binary mask, computed block by block over volumes larger than memory.

:func:`label_blockwise` gives the same objects as ``skimage.measure.label`` on the whole volume (equal up to
renumbering) while it holds only about one block in memory:

1. each block of the ``block_shape`` grid is thresholded and labelled on its own (``scipy.ndimage.label``
   with the neighbourhood of ``connectivity``), its ids offset to be unique over the volume, and written to
   the output as provisional ids;
2. for every block border, the two voxel planes on either side of it are read back tile by tile and every
   pair of foreground voxels that are neighbours under the same connectivity (straight across the face, or
   diagonally across it for edge / corner connectivity, which also reaches blocks that share only an edge
   or a corner) records an equivalence of their provisional ids;
3. the equivalences are joined (connected components of the equivalence graph, i.e. union-find) and the
   objects renumbered 1..K in the order of their first block;
4. the output is rewritten block by block through that lookup table.

:func:`instances_from_store` runs it on a prediction store's foreground probability and writes
``<store>/labels/instances`` (layout in its docstring).

Optional watershed split (:class:`WatershedSplit`): each block is read with a halo, its Euclidean distance
transform is flooded from the h-maxima seeds (``skimage.segmentation.watershed``) and only the block's core is
kept. Pieces are then joined across block borders by *dominant contact*: pieces ``a`` and ``b`` on the two sides
of a border are joined when their contacts make up at least half of all the border contacts of ``a`` or of
``b``. Limits: the split is exact only away from block borders and when ``halo`` is at least the radius of the
objects (seeds and distances near a border then agree on both sides); a split line that runs along a block
border, or blocks that disagree on the seeds, give one merged instance (the rule errs on the side of merging),
never a spurious id that differs between blocks. A piece is never joined to a different object of the mask.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Box = tuple[slice, ...]
ProgressFn = Callable[[int, int], None]

#: name of the instance label image inside ``<store>/labels``
INSTANCES = "instances"


@dataclass(frozen=True)
class WatershedSplit:
    """Options of the blockwise watershed split of touching objects.

    Attributes:
        h: seeds are the h-maxima of the distance transform: two objects are split when their neck is at least
            ``h`` (in ``sampling`` units) thinner than their centres.
        halo: voxels read around each block; splits are consistent across borders for objects whose radius is
            at most ``halo``.
        sampling: voxel size per spatial axis for the distance transform (anisotropic EM), ``None`` = 1.
    """

    h: float = 2.0
    halo: int = 16
    sampling: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.h > 0:
            raise ValueError(f"WatershedSplit.h must be > 0, got {self.h}")
        if int(self.halo) < 1:
            raise ValueError(f"WatershedSplit.halo must be >= 1 voxel, got {self.halo}")


def block_boxes(shape: Sequence[int], block_shape: Sequence[int]) -> list[Box]:
    """The chunk-aligned blocks tiling ``shape`` (the last ones clipped), in C order."""
    ranges = [range(0, s, b) for s, b in zip(shape, block_shape)]
    return [
        tuple(slice(o, min(o + b, s)) for o, b, s in zip(c, block_shape, shape)) for c in itertools.product(*ranges)
    ]


def _foreground(values: np.ndarray, threshold: float | None) -> np.ndarray:
    """Stored values -> bool mask: bool as is; ``threshold=None`` = nonzero; uint8 = ``p*255`` (``v/255 >= t``)."""
    values = np.asarray(values)
    if values.dtype == bool:
        return values
    if threshold is None:
        return values != 0
    if values.dtype == np.uint8:
        return values >= math.ceil(threshold * 255 - 1e-9)
    return values >= threshold


def _neighbour_offsets(ndim: int, connectivity: int) -> list[tuple[int, ...]]:
    """Offsets of the other ``ndim`` axes for a step of +1 across a face: at most ``connectivity - 1`` nonzero."""
    return [d for d in itertools.product((-1, 0, 1), repeat=ndim) if sum(map(abs, d)) <= connectivity - 1]


def _check_mask(mask: Any) -> Any:
    if not hasattr(mask, "shape") or not hasattr(mask, "__getitem__"):
        mask = np.asarray(mask)
    if len(mask.shape) not in (2, 3):
        raise ValueError(f"mask must be 2D (Y, X) or 3D (Z, Y, X), got shape {tuple(mask.shape)}")
    return mask


def _default_block_shape(mask: Any, output: Any) -> tuple[int, ...]:
    for arr in (output, mask):
        chunks = getattr(arr, "chunks", None)
        if chunks is not None and len(chunks) == len(mask.shape) and all(isinstance(c, int) for c in chunks):
            return tuple(int(c) for c in chunks)
    return (128, 256, 256) if len(mask.shape) == 3 else (2048, 2048)


class _Tracker:
    def __init__(self, total: int, progress: ProgressFn | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _label_block(mask: Any, box: Box, threshold: float | None, structure: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    labels, n = ndimage.label(_foreground(mask[box], threshold), structure=structure)
    return labels, int(n)


def _watershed_block(
    mask: Any, box: Box, threshold: float | None, structure: np.ndarray, connectivity: int, split: WatershedSplit
) -> tuple[np.ndarray, int]:
    from scipy import ndimage
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    halo_box = tuple(slice(max(s.start - split.halo, 0), min(s.stop + split.halo, n)) for s, n in zip(box, mask.shape))
    fg = _foreground(mask[halo_box], threshold)
    if not fg.any():
        return np.zeros(tuple(s.stop - s.start for s in box), dtype=np.int64), 0
    dist = ndimage.distance_transform_edt(fg, sampling=split.sampling)
    seeds, _ = ndimage.label(h_maxima(dist, split.h), structure=structure)
    pieces = watershed(-dist, seeds, mask=fg, connectivity=connectivity)
    core = tuple(slice(s.start - h.start, s.stop - h.start) for s, h in zip(box, halo_box))
    pieces = pieces[core]
    # objects without a seed (thinner than h) stay whole: label them as their own pieces
    rest, n_rest = ndimage.label(fg[core] & (pieces == 0), structure=structure)
    ids, inverse = np.unique(pieces, return_inverse=True)  # renumber 1..n (ids[0] = 0 when background exists)
    inverse = inverse.reshape(pieces.shape)
    n_ws = len(ids) - (1 if ids[0] == 0 else 0)
    out = inverse.astype(np.int64) if ids[0] == 0 else inverse.astype(np.int64) + 1
    out[rest > 0] = rest[rest > 0] + n_ws
    return out, n_ws + int(n_rest)


def _face_tiles(shape: Sequence[int], block_shape: Sequence[int]) -> Iterator[tuple[int, Box, Box]]:
    """For every block and each axis where it has a lower neighbour: (axis, read box, core box).

    The read box spans planes ``b-1, b`` along ``axis`` and the block's extent widened by one voxel on the other
    axes; the core boxes are in read-box coordinates and cover the block's extent on the lower plane.
    """
    nd = len(shape)
    for box in block_boxes(shape, block_shape):
        for axis in range(nd):
            b = box[axis].start
            if b == 0:
                continue
            read, core = [], []
            for k, s in enumerate(box):
                if k == axis:
                    read.append(slice(b - 1, b + 1))
                    core.append(slice(0, 1))
                else:
                    lo, hi = max(s.start - 1, 0), min(s.stop + 1, shape[k])
                    read.append(slice(lo, hi))
                    core.append(slice(s.start - lo, s.stop - lo))
            yield axis, tuple(read), tuple(core)


def _face_pairs(labels: np.ndarray, axis: int, core: Box, connectivity: int) -> np.ndarray:
    """Neighbouring (lower, upper) id pairs with their contact counts, shape (P, 3), from a 2-plane read."""
    lower = np.take(labels, 0, axis=axis)
    upper = np.take(labels, 1, axis=axis)
    core_o = [c for k, c in enumerate(core) if k != axis]
    found = []
    for delta in _neighbour_offsets(lower.ndim, connectivity):
        sl_lo, sl_hi = [], []
        for c, d, n in zip(core_o, delta, lower.shape):
            start, stop = max(c.start, -d), min(c.stop, n - d)
            sl_lo.append(slice(start, max(stop, start)))
            sl_hi.append(slice(start + d, max(stop, start) + d))
        a, b = lower[tuple(sl_lo)], upper[tuple(sl_hi)]
        touch = (a > 0) & (b > 0)
        if touch.any():
            found.append(np.stack([a[touch], b[touch]], axis=1))
    if not found:
        return np.zeros((0, 3), dtype=np.int64)
    pairs, counts = np.unique(np.concatenate(found).astype(np.int64), axis=0, return_counts=True)
    return np.column_stack([pairs, counts])


def _dominant_pairs(pairs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Keep (a, b) when its contacts are >= half of all contacts of ``a`` with b's block, or of ``b`` with a's."""
    if len(pairs) == 0:
        return pairs
    a, b, cnt = pairs[:, 0], pairs[:, 1], pairs[:, 2].astype(np.float64)
    block_a = np.searchsorted(offsets, a, side="left") - 1
    block_b = np.searchsorted(offsets, b, side="left") - 1

    def share(key_id: np.ndarray, key_block: np.ndarray) -> np.ndarray:
        keys, inverse = np.unique(np.stack([key_id, key_block], axis=1), axis=0, return_inverse=True)
        totals = np.bincount(inverse.ravel(), weights=cnt, minlength=len(keys))
        return cnt / totals[inverse.ravel()]

    keep = (share(a, block_b) >= 0.5) | (share(b, block_a) >= 0.5)
    return pairs[keep]


def _relabel_table(n_provisional: int, pairs: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, int]:
    """Lookup table provisional id -> final id (0 stays 0, objects 1..K in order of their smallest id)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    size = n_provisional + 1
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(size, size))
    _, comp = connected_components(graph, directed=False)
    # first (smallest) provisional id of every component, components sorted by it; id 0 is its own component
    first = np.full(comp.max() + 1, size, dtype=np.int64)
    np.minimum.at(first, comp, np.arange(size))
    order = np.argsort(first, kind="stable")
    new_id = np.empty_like(order)
    new_id[order] = np.arange(len(order))  # component of provisional id 0 has the smallest first (0) -> 0
    return new_id[comp].astype(dtype), len(order) - 1


def _label_into(
    mask: Any,
    out: Any,
    block_shape: Sequence[int],
    *,
    connectivity: int,
    threshold: float | None,
    split: WatershedSplit | None,
    progress: ProgressFn | None,
) -> int:
    from scipy import ndimage

    shape = tuple(mask.shape)
    nd = len(shape)
    dtype = np.dtype(out.dtype)
    limit = np.iinfo(dtype).max
    structure = ndimage.generate_binary_structure(nd, connectivity)
    boxes = block_boxes(shape, block_shape)
    faces = list(_face_tiles(shape, block_shape))
    track = _Tracker(2 * len(boxes) + len(faces), progress)

    offsets = [0]  # provisional ids of block i are offsets[i] + 1 .. offsets[i + 1]
    for box in boxes:
        if split is None:
            labels, n = _label_block(mask, box, threshold, structure)
        else:
            labels, n = _watershed_block(mask, box, threshold, structure, connectivity, split)
        if offsets[-1] + n > limit:
            raise ValueError(f"more than {limit} provisional ids: label into a uint64 output (dtype=np.uint64)")
        block = labels.astype(dtype)
        block[labels > 0] += dtype.type(offsets[-1])
        out[box] = block
        offsets.append(offsets[-1] + n)
        track.step()

    found = [np.zeros((0, 3), dtype=np.int64)]
    for axis, read, core in faces:
        found.append(_face_pairs(np.asarray(out[read]), axis, core, connectivity))
        track.step()
    pairs = np.concatenate(found)
    if split is None:
        pairs = pairs[:, :2]
    else:
        # the same pair may appear in several tiles: sum its contacts first
        keys, inverse = np.unique(pairs[:, :2], axis=0, return_inverse=True)
        counts = np.bincount(inverse.ravel(), weights=pairs[:, 2], minlength=len(keys)).astype(np.int64)
        pairs = _dominant_pairs(np.column_stack([keys, counts]), np.asarray(offsets))[:, :2]
    table, count = _relabel_table(offsets[-1], pairs, dtype)

    for box in boxes:
        out[box] = table[np.asarray(out[box])]
        track.step()
    return count


def label_blockwise(
    mask: Any,
    output: Any = None,
    *,
    block_shape: Sequence[int] | None = None,
    connectivity: int = 1,
    threshold: float | None = 0.5,
    dtype: np.dtype | type = np.uint32,
    split: WatershedSplit | None = None,
    progress: ProgressFn | None = None,
) -> Any:
    """Connected components of a (probability) mask, block by block, with ids consistent over the volume.

    Args:
        mask: array-like of shape (Y, X) or (Z, Y, X) that supports slicing (numpy, zarr, ``ForegroundView``).
            Only blocks and two-plane border tiles of it are read. bool is used as is; otherwise a voxel is
            foreground when its probability is ``>= threshold`` (uint8 holds ``p * 255``, so 0.5 -> ``>= 128``).
        output: array of the same shape to fill (a zarr array for volumes larger than memory); ``None``
            allocates a numpy array of ``dtype``. It is read back during the run and holds provisional ids
            until the function returns.
        block_shape: block grid; default the output's (or mask's) chunks, so every write fills whole chunks.
        connectivity: neighbourhood as in ``skimage.measure.label``: 1 = faces; 2 = + edges; 3 (3D) = + corners.
        threshold: foreground threshold in [0, 1]; ``None`` treats every nonzero value as foreground.
        dtype: unsigned integer id type when ``output`` is ``None`` (uint32 or uint64).
        split: split touching objects with a blockwise watershed (see the module's limits); ``None`` = no split.
        progress: called with (steps done, total steps) after every block and border tile.

    Returns:
        ``output`` (or the new numpy array) holding ids 0 (background) and 1..K, K the number of objects.
    """
    output, _ = _label_checked(mask, output, block_shape, connectivity, threshold, dtype, split, progress)
    return output


def _label_checked(
    mask: Any,
    output: Any,
    block_shape: Sequence[int] | None,
    connectivity: int,
    threshold: float | None,
    dtype: np.dtype | type,
    split: WatershedSplit | None,
    progress: ProgressFn | None,
) -> tuple[Any, int]:
    """Validate the arguments of :func:`label_blockwise`, run it, return (output, number of objects)."""
    mask = _check_mask(mask)
    shape = tuple(int(s) for s in mask.shape)
    nd = len(shape)
    if not 1 <= int(connectivity) <= nd:
        raise ValueError(f"connectivity must be in 1..{nd} for a {nd}D mask, got {connectivity}")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1] or None, got {threshold}")
    if output is None:
        dt = np.dtype(dtype)
        if dt.kind != "u" or dt.itemsize < 4:
            raise ValueError(f"dtype must be uint32 or uint64, got {dt}")
        output = np.zeros(shape, dtype=dt)
    else:
        if tuple(output.shape) != shape:
            raise ValueError(f"output shape {tuple(output.shape)} differs from the mask shape {shape}")
        if np.dtype(output.dtype).kind != "u":
            raise ValueError(f"output dtype must be an unsigned integer type, got {output.dtype}")
    block_shape = _default_block_shape(mask, output) if block_shape is None else tuple(int(b) for b in block_shape)
    if len(block_shape) != nd or min(block_shape) < 1:
        raise ValueError(f"block_shape must have {nd} positive entries, got {block_shape}")
    if split is not None and split.sampling is not None and len(split.sampling) != nd:
        raise ValueError(f"WatershedSplit.sampling {split.sampling} needs {nd} entries")
    count = _label_into(
        mask,
        output,
        block_shape,
        connectivity=int(connectivity),
        threshold=None if threshold is None else float(threshold),
        split=split,
        progress=progress,
    )
    return output, count


def instances_from_store(
    store_path: str | Path,
    *,
    threshold: float = 0.5,
    connectivity: int = 1,
    block_shape: Sequence[int] | None = None,
    watershed: bool | WatershedSplit = False,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> Any:
    """Label the objects of a finished prediction store and write them into the store.

    Layout (OME-NGFF 0.5 image-label, zarr v3)::

        <store>/labels                attrs["ome"] = {"version": "0.5", "labels": ["instances", ...]}
        <store>/labels/instances      attrs["ome"] = {"version": "0.5", "multiscales": [...], "image-label": {...}}
                                      attrs["mtbio"] = {"complete", "threshold", "connectivity", "watershed",
                                                        "num_instances", "dtype"}
        <store>/labels/instances/0    uint32 ids, shape (*spatial), chunks = the prediction's spatial chunks

    ``attrs["mtbio"]["complete"]`` is false until the last block is written, and ``"instances"`` joins the
    labels list only then. A complete result made with the same options is returned as is; an incomplete one
    is redone; a complete one made with other options needs ``overwrite=True``.

    Args:
        store_path: the prediction store (must be complete).
        threshold: foreground probability threshold (``p >= threshold``).
        connectivity: 1 = face neighbours ... ndim = corner neighbours.
        block_shape: block grid (default the store's spatial chunks).
        watershed: ``True`` (default :class:`WatershedSplit` with the store's voxel size) or options.
        overwrite: replace a complete result made with other options.
        progress: called with (steps done, total steps).

    Returns:
        the zarr array ``<store>/labels/instances/0``.
    """
    import zarr

    from mtbio.data.store import ome_multiscales, open_prediction_store

    store = open_prediction_store(store_path, require_complete=True)
    nd = len(store.spatial_shape)
    split: WatershedSplit | None
    if isinstance(watershed, WatershedSplit):
        split = watershed
    elif watershed:
        split = WatershedSplit(sampling=store.voxel_size)
    else:
        split = None
    options = {
        "threshold": float(threshold),
        "connectivity": int(connectivity),
        "watershed": None if split is None else {"h": split.h, "halo": split.halo, "sampling": split.sampling},
    }
    if split is not None and split.sampling is not None:
        options["watershed"]["sampling"] = [float(s) for s in split.sampling]
    root = zarr.open_group(str(store.path), mode="r+")
    labels = root.require_group("labels")
    if INSTANCES in labels:
        prev = dict(labels[INSTANCES].attrs.get("mtbio", {}))
        if prev.get("complete") and all(prev.get(k) == v for k, v in options.items()):
            return labels[INSTANCES]["0"]
        if prev.get("complete") and not overwrite:
            raise FileExistsError(
                f"{store.path}/labels/{INSTANCES} exists with other options {prev}; pass overwrite=True to replace it"
            )
    chunks = tuple(int(c) for c in store.array.chunks[1:])
    group = labels.create_group(INSTANCES, overwrite=True)
    meta = {"complete": False, "dtype": "uint32", **options}
    multiscales = ome_multiscales(nd, store.voxel_size, channel_axis=False, name=INSTANCES)
    group.attrs.update(
        {"ome": {"version": "0.5", "multiscales": [multiscales], "image-label": {"version": "0.5"}}, "mtbio": meta}
    )
    out = group.create_array("0", shape=store.spatial_shape, chunks=chunks, dtype=np.uint32, fill_value=0)
    blocks = chunks if block_shape is None else block_shape
    _, count = _label_checked(store.foreground(), out, blocks, connectivity, threshold, np.uint32, split, progress)
    group.attrs["mtbio"] = {**meta, "num_instances": count, "complete": True}
    listed = list(dict(labels.attrs.get("ome", {})).get("labels", []))
    labels.attrs["ome"] = {"version": "0.5", "labels": [*listed, INSTANCES] if INSTANCES not in listed else listed}
    return out
