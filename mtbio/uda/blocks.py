"""Mask blocks that follow the data's scale: :func:`resolve_mask_block` turns ``UDAConfig.block_size`` /
``block_nm`` into voxels per axis of the training grid, and says how it got there (:class:`MaskBlock`).

Rules (``UDAConfig.block_size``; docs/uda.md "Mask blocks follow scale"):

* ``"voxels"``: ``block_size`` is given (an int or one per axis): used as it is, never clipped.
* ``"nm"``: ``block_size=None`` and the target's voxel size is known (the training grid is the target's):
  ``round(block_nm / voxel)`` per axis.
* ``"objects"``: ``block_size=None``, the target's voxel size is unknown: the source's block (``block_nm`` at the
  source's voxel size, or :data:`~mtbio.uda.config.DEFAULT_BLOCK_VOXELS` per axis when that is unknown too) times
  ``d_target / d_source``, the ratio of the median object diameters (:func:`object_diameter`) in the target (the
  source-only model's predictions ``p >= 0.5``) and in the source (its labels), measured by
  :func:`measure_object_sizes`. Objects are taken to have the same physical size in both domains, so the ratio is
  the ratio of the voxel sizes; in 3D every axis is scaled by it (the target's anisotropy is taken as the source's).
* ``"source"``: as ``"objects"`` but nothing to measure with (no source-only model, or no object found): the
  source's block, i.e. objects are taken to look as large in the target as in the source.

A derived block (every rule but ``"voxels"``) is clipped to ``[4, crop // 4]`` voxels per axis (``[min(4, c // 4),
c // 4]`` on an axis whose crop ``c`` is under 16): a block must not hide most of a crop, and one of a few voxels is
noise rather than missing context.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mtbio.uda.config import DEFAULT_BLOCK_VOXELS, UDAConfig

__all__ = [
    "MIN_BLOCK",
    "MIN_OBJECT_AREA",
    "MaskBlock",
    "ObjectSizes",
    "clip_block",
    "label_diameter",
    "measure_object_sizes",
    "needs_object_sizes",
    "nm_to_voxels",
    "object_diameter",
    "predicted_diameter",
    "resolve_mask_block",
]

#: the smallest derived block edge (voxels), where the crop allows it
MIN_BLOCK = 4
#: 2D objects smaller than this many pixels are ignored by :func:`object_diameter` (specks of a noisy prediction)
MIN_OBJECT_AREA = 16
#: sections :func:`measure_object_sizes` reads per domain (evenly spaced), and their largest in-plane window
ESTIMATE_SECTIONS = 8
ESTIMATE_WINDOW = 1024
RULES = ("voxels", "nm", "objects", "source")


@dataclass
class MaskBlock:
    """A resolved mask block and how it was derived.

    Attributes:
        voxels: block edge per network axis, in voxels of the training grid.
        rule: ``"voxels"``, ``"nm"``, ``"objects"`` or ``"source"`` (module docstring).
        note: one line saying how the block was derived (logged by the training run).
        block_nm: ``UDAConfig.block_nm`` for the derived rules, ``None`` for ``"voxels"``.
        voxel_size: the nm per voxel the block was converted with: the target's (``"nm"``) or the source's
            (``"objects"`` / ``"source"``, ``None`` when unknown); for ``"voxels"`` the target's when known.
        source_block: the source's block in source voxels (``"objects"`` / ``"source"``).
        source_diameter: median object diameter in the source labels, px (``"objects"``).
        target_diameter: median object diameter in the target predictions, px (``"objects"``).
        clipped: the block was clipped to ``[4, crop // 4]``.
    """

    voxels: tuple[int, ...]
    rule: str
    note: str
    block_nm: float | tuple[float, ...] | None = None
    voxel_size: list[float] | None = None
    source_block: list[int] | None = None
    source_diameter: float | None = None
    target_diameter: float | None = None
    clipped: bool = False

    @property
    def value(self) -> int | tuple[int, ...]:
        """The block as ``UDAConfig.block_size`` takes it: one int when every axis agrees, else one per axis."""
        return self.voxels[0] if len(set(self.voxels)) == 1 else tuple(self.voxels)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["voxels"] = list(self.voxels)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MaskBlock:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if known.get("rule") not in RULES or not known.get("voxels"):
            raise ValueError(f"not a mask block record: {dict(data)}")
        known["voxels"] = tuple(int(v) for v in known["voxels"])
        return cls(**known)


@dataclass
class ObjectSizes:
    """Median object diameters (px) of the two domains, how many objects each is measured on, and what the target's
    objects were taken from."""

    source: float | None
    target: float | None
    n_source: int = 0
    n_target: int = 0
    target_from: str = "source-only model's predictions"


def nm_to_voxels(block_nm: float | Sequence[float], voxel_size: Sequence[float]) -> tuple[int, ...]:
    """A block of ``block_nm`` nm (one value for every axis, or one per axis) as voxels per axis
    (``round(block_nm / voxel)``, at least 1).

    >>> nm_to_voxels(256, (30, 8, 8))   # MitoEM: 30 x 8 x 8 nm voxels
    (9, 32, 32)
    >>> nm_to_voxels((100, 160, 160), (50, 5, 5))
    (2, 32, 32)

    Raises:
        ValueError: a non-positive block or voxel size, or per-axis sizes of another length than ``voxel_size``.
    """
    vs = [float(v) for v in voxel_size] if voxel_size else []
    nm = [float(block_nm)] * len(vs) if isinstance(block_nm, int | float) else [float(b) for b in block_nm]
    if not vs or len(nm) != len(vs) or any(not v > 0 for v in (*vs, *nm)):
        raise ValueError(f"block_nm and voxel_size must be positive, one per axis; got {block_nm}, {tuple(voxel_size)}")
    return tuple(max(1, round(b / v)) for b, v in zip(nm, vs))


def clip_block(block: Sequence[int], crop: Sequence[int]) -> tuple[int, ...]:
    """``block`` clipped per axis to ``[min(MIN_BLOCK, c // 4), max(1, c // 4)]`` for crop extent ``c``."""
    if len(block) != len(crop):
        raise ValueError(f"block {tuple(block)} and crop {tuple(crop)} have different lengths")
    out = []
    for b, c in zip(block, crop):
        high = max(1, int(c) // 4)
        out.append(int(min(max(int(b), min(MIN_BLOCK, high)), high)))
    return tuple(out)


def object_diameter(masks: Any, min_area: int = MIN_OBJECT_AREA) -> tuple[float | None, int]:
    """The median equivalent diameter (px) of the 2D objects of binary masks, weighted by object area.

    Objects are the 8-connected components of each 2D image ``(..., H, W)`` (a 3D mask is read section by
    section); a component's equivalent diameter is ``sqrt(4 area / pi)`` (a disc's diameter). Components smaller than
    ``min_area`` px are ignored; so are components touching the image border (cut by it), unless nothing else is
    left. The area-weighted median is the diameter of the object a typical foreground pixel belongs to, so a few
    specks or fragments hardly move it.

    Args:
        masks: boolean (or 0 / non-zero) array ``(H, W)``, ``(N, H, W)`` or more leading axes.
        min_area: smallest object counted, px.

    Returns:
        ``(diameter, n_objects)``; ``(None, 0)`` when there is no object.
    """
    from scipy import ndimage

    arr = np.asarray(masks) > 0
    if arr.ndim < 2:
        raise ValueError(f"masks must be at least 2D (..., H, W), got shape {arr.shape}")
    structure = np.ones((3, 3), dtype=bool)
    inner_d, inner_a, all_d, all_a = [], [], [], []
    for image in arr.reshape(-1, *arr.shape[-2:]):
        labels, n = ndimage.label(image, structure=structure)
        if n == 0:
            continue
        area = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.float64)
        keep = area >= min_area
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        inner = keep.copy()
        inner[edge[edge > 0] - 1] = False
        diameter = np.sqrt(4.0 * area / math.pi)
        all_d.append(diameter[keep])
        all_a.append(area[keep])
        inner_d.append(diameter[inner])
        inner_a.append(area[inner])
    d, a = (np.concatenate(inner_d), np.concatenate(inner_a)) if inner_d else (np.empty(0), np.empty(0))
    if d.size == 0 and all_d:
        d, a = np.concatenate(all_d), np.concatenate(all_a)
    if d.size == 0:
        return None, 0
    order = np.argsort(d)
    cumulative = np.cumsum(a[order])
    median = d[order][int(np.searchsorted(cumulative, 0.5 * cumulative[-1]))]
    return float(median), int(d.size)


def needs_object_sizes(config: UDAConfig, target_voxel_size: Sequence[float] | None) -> bool:
    """Whether :func:`resolve_mask_block` would use measured object sizes (``block_size=None`` and the target's
    voxel size unknown)."""
    return config.block_size is None and target_voxel_size is None


def resolve_mask_block(
    config: UDAConfig,
    crop: Sequence[int],
    *,
    target_voxel_size: Sequence[float] | None = None,
    source_voxel_size: Sequence[float] | None = None,
    sizes: ObjectSizes | None = None,
    unmeasured: str = "object sizes not measured",
) -> MaskBlock:
    """The mask block of ``config`` for training crops ``crop`` (rules in the module docstring).

    Args:
        config: the UDA step (``block_size``, ``block_nm``).
        crop: the training crop, one extent per network axis (``(H, W)`` or ``(D, H, W)``).
        target_voxel_size: the target's voxel size on the network's axes, nm (``None`` = unknown).
        source_voxel_size: the source's, nm (``None`` = unknown).
        sizes: the measured object diameters (:func:`measure_object_sizes`), used when the target's voxel size is
            unknown.
        unmeasured: why ``sizes`` is missing, for the note of the ``"source"`` rule.

    Returns:
        The :class:`MaskBlock`.

    Raises:
        ValueError: a ``block_size`` or voxel size with another number of axes than ``crop``.
    """
    crop = tuple(int(c) for c in crop)
    dims = len(crop)
    tvs, svs = (None if v is None else [float(x) for x in v] for v in (target_voxel_size, source_voxel_size))
    for name, vs in (("target", tvs), ("source", svs)):
        if vs is not None and len(vs) != dims:
            raise ValueError(f"{name} voxel size {vs} needs one value per network axis of the crop {list(crop)}")
    if config.block_size is not None:
        given = config.block_size
        voxels = (int(given),) * dims if isinstance(given, int) else tuple(int(b) for b in given)
        if len(voxels) != dims:
            raise ValueError(f"block_size {given} must be one int or have {dims} entries for {dims}D crops {crop}")
        note = f"mask blocks {_px(voxels)} (block_size, in voxels)"
        if tvs is not None:
            extent = " x ".join(f"{b * v:g}" for b, v in zip(voxels, tvs))
            note += f" = {extent} nm at the target's {_nm(tvs)} voxels"
        return MaskBlock(voxels, "voxels", note, voxel_size=tvs)
    nm = config.block_nm
    nm_text = f"{nm:g}" if isinstance(nm, float) else " x ".join(f"{v:g}" for v in nm)
    if tvs is not None:
        raw = nm_to_voxels(nm, tvs)
        voxels = clip_block(raw, crop)
        note = f"mask blocks {_px(voxels)} = {nm_text} nm (block_nm) at the target's {_nm(tvs)} voxels"
        return MaskBlock(voxels, "nm", note + _clip_note(raw, voxels, crop), nm, tvs, clipped=raw != voxels)
    source_block = nm_to_voxels(nm, svs) if svs is not None else (DEFAULT_BLOCK_VOXELS,) * dims
    source_text = f"{_px(source_block)} (" + (
        f"{nm_text} nm at its {_nm(svs)} voxels)" if svs is not None else "the default, its voxel size unknown too)"
    )
    if sizes is not None and sizes.source and sizes.target:
        ratio = float(sizes.target) / float(sizes.source)
        raw = tuple(max(1, round(b * ratio)) for b in source_block)
        voxels = clip_block(raw, crop)
        note = (
            f"mask blocks {_px(voxels)} = the source's {source_text} x {ratio:.2f}, the ratio of the median object "
            f"diameters {sizes.target:.1f} px in the target ({sizes.target_from}, {sizes.n_target} "
            f"objects) / {sizes.source:.1f} px in the source (labels, {sizes.n_source} objects); target voxel size "
            "unknown"
        )
        return MaskBlock(
            voxels, "objects", note + _clip_note(raw, voxels, crop), nm, svs, list(source_block),
            float(sizes.source), float(sizes.target), clipped=raw != voxels,
        )  # fmt: skip
    voxels = clip_block(source_block, crop)
    why = (
        unmeasured
        if sizes is None
        else "no object found to measure in the "
        + ("source labels" if not sizes.source else "source-only model's target predictions")
    )
    note = f"mask blocks {_px(voxels)} = the source's {source_text}: target voxel size unknown and {why}"
    return MaskBlock(
        voxels, "source", note + _clip_note(source_block, voxels, crop), nm, svs, list(source_block),
        clipped=tuple(source_block) != voxels,
    )  # fmt: skip


def measure_object_sizes(
    network: Any,
    source_label: Any,
    target_image: Any,
    *,
    roi_size: Sequence[int],
    device: Any = "cpu",
    sections: int = ESTIMATE_SECTIONS,
    window: int = ESTIMATE_WINDOW,
) -> ObjectSizes:
    """The median object diameters (:func:`object_diameter`) of the source labels and of ``network``'s predictions
    (``p >= 0.5``) on the target, each on a fixed sample: ``sections`` evenly spaced sections (2D ``roi_size``) or
    a centred slab of ``2 * D`` sections (3D), cut to a centred in-plane window of at most ``window`` px.

    Args:
        network: ``(B, 1, *spatial) -> (B, 2, *spatial)`` logits (the source-only model); run in eval mode.
        source_label: labelled source ``(Z, Y, X)`` volume.
        target_image: target ``(Z, Y, X)`` volume.
        roi_size: the sliding window of the prediction (the training crop), 2D or 3D.
        device: where the network runs.
        sections: sections per domain (2D).
        window: largest in-plane extent read, px.
    """
    roi = tuple(int(r) for r in roi_size)
    d_src, n_src = label_diameter(source_label, roi_size=roi, sections=sections, window=window)
    d_tgt, n_tgt = predicted_diameter(
        network, target_image, roi_size=roi, device=device, sections=sections, window=window
    )
    return ObjectSizes(d_src, d_tgt, n_src, n_tgt)


def predicted_diameter(
    network: Any,
    image: Any,
    *,
    roi_size: Sequence[int],
    device: Any = "cpu",
    sections: int = ESTIMATE_SECTIONS,
    window: int = ESTIMATE_WINDOW,
    tta: str | None = None,
) -> tuple[float | None, int]:
    """:func:`object_diameter` of ``network``'s predictions (``p >= 0.5``) on :func:`measure_object_sizes`'s fixed
    sample of the ``(Z, Y, X)`` volume ``image`` (the target side of the measurement).

    Args:
        network: ``(B, 1 + 2k, *spatial) -> (B, 2, *spatial)`` logits; a 2.5D network sees each sampled section with
            its true neighbours.
        image: the volume (numpy array or lazy ``Volume``, e.g. a :class:`~mtbio.data.resample.ResampledVolume`).
        roi_size: the sliding window of the prediction, 2D or 3D.
        device: where the network runs.
        sections, window: the sample (:func:`measure_object_sizes`).
        tta: test-time augmentation of the prediction (``None`` = :func:`~mtbio.uda.evaluate.predict_in_memory`'s
            default).

    Returns:
        ``(diameter, n_objects)``; ``(None, 0)`` when the network finds no object.
    """
    from mtbio.networks.context import context_of
    from mtbio.uda.evaluate import predict_in_memory

    roi = tuple(int(r) for r in roi_size)
    kwargs: dict[str, Any] = {"roi_size": roi, "device": device}
    if tta is not None:
        kwargs["tta"] = tta
    k = context_of(network)
    if k and len(roi) == 2:  # a 2.5D network: each sampled section predicted with its true neighbours
        prob = np.stack(
            [
                predict_in_memory(network, sub.astype(np.float32), **kwargs)[k]
                for sub in _context_sample(image, k, sections, window)
            ]
        )
    else:
        sample = _sample(image, len(roi), roi, sections, window).astype(np.float32)
        prob = predict_in_memory(network, sample, **kwargs)
    return object_diameter(prob >= 0.5)


def label_diameter(
    label: Any, *, roi_size: Sequence[int], sections: int = ESTIMATE_SECTIONS, window: int = ESTIMATE_WINDOW
) -> tuple[float | None, int]:
    """:func:`object_diameter` of a label volume on :func:`measure_object_sizes`'s fixed sample (the source side of
    the measurement; on target labels it shows what the rule gives with a perfect source-only model)."""
    roi = tuple(int(r) for r in roi_size)
    return object_diameter(_sample(label, len(roi), roi, sections, window))


def _sample(volume: Any, dims: int, roi: tuple[int, ...], sections: int, window: int) -> np.ndarray:
    """The fixed sample of :func:`measure_object_sizes` as a ``(Z', Y', X')`` array."""
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 3:
        raise ValueError(f"expected a (Z, Y, X) volume, got shape {shape}")
    plane = tuple(slice((s - min(s, window)) // 2, (s - min(s, window)) // 2 + min(s, window)) for s in shape[1:])
    if dims == 2:
        zs = sorted({int(round(z)) for z in np.linspace(0, shape[0] - 1, min(shape[0], max(1, sections)))})
        return np.stack([np.asarray(volume[(z, *plane)]) for z in zs])
    depth = min(shape[0], 2 * roi[0])
    z0 = (shape[0] - depth) // 2
    return np.asarray(volume[(slice(z0, z0 + depth), *plane)])


def _context_sample(volume: Any, k: int, sections: int, window: int) -> list[np.ndarray]:
    """The 2D sample of :func:`_sample`, each section as a ``(1 + 2k, Y', X')`` stack of it and its neighbours
    (replicated at the ends, :mod:`mtbio.data.context`): its middle section is the sampled one."""
    from mtbio.data.context import context_indices

    shape = tuple(int(s) for s in volume.shape)
    plane = tuple(slice((s - min(s, window)) // 2, (s - min(s, window)) // 2 + min(s, window)) for s in shape[1:])
    zs = sorted({int(round(z)) for z in np.linspace(0, shape[0] - 1, min(shape[0], max(1, sections)))})
    return [np.stack([np.asarray(volume[(int(c), *plane)]) for c in context_indices(z, k, shape[0])]) for z in zs]


def _px(voxels: Sequence[int]) -> str:
    return " x ".join(str(int(v)) for v in voxels) + " px"


def _nm(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ") nm"


def _clip_note(raw: Sequence[int], voxels: Sequence[int], crop: Sequence[int]) -> str:
    if tuple(raw) == tuple(voxels):
        return ""
    return f" (clipped from {_px(raw)} to [4, crop / 4] of the {'x'.join(str(c) for c in crop)} crop)"
