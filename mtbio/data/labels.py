"""The label rule: one way to turn every common mitochondria mask encoding into a boolean mask.

The rule decides by the **values** a label array holds, not by its dtype alone. It looks at a whole file (one
section file of a folder, or the whole array of a TIF stack / HDF5 dataset / zarr array / NIfTI), never at a
patch, so every read of one file is thresholded the same way.

1. Reduce to one value per voxel: PIL mode ``"1"`` / bool -> 0 / 1; palette PNGs (mode ``"P"``) -> the palette
   **index** (not its colour); RGB / RGBA -> the brightest of R, G, B (**alpha is never used**); ``"LA"`` -> L.
2. Integer values (any dtype, including the above):

   * any negative value -> error (mtbio cannot tell which value is background);
   * at most one non-zero value (``{0, 1}``, ``{0, 255}``, ``{0, 65535}``, ``{0}``) -> foreground ``!= 0``;
   * several non-zero values and no 0 (e.g. ilastik's ``{1, 2}``) -> error (no background value);
   * an 8-bit greyscale mask with anti-aliased or compressed edges -> foreground ``> 127``. It is one when all
     values are whole numbers in 0..255, the largest is 255, and 255 is the most common value above 127
     (VNC III: 255 plus a few edge pixels 1..254);
   * anything else is an instance label map (MitoEM, CREMI; ids 1, 2, 3, ...) -> foreground ``!= 0``.
3. Float values: NaN -> error; all within [0, 1] -> fractions, foreground ``>= 0.5``; all whole numbers ->
   the integer rule; anything else (e.g. logits) -> error.

A label *volume* with no foreground, or with every voxel foreground, emits a ``UserWarning`` naming the file
(from the whole-array decision, or from :func:`foreground_fraction` for section folders, where one empty
section is normal).

Why values, not dtype: VNC III sections 01, 07, 18 are 1-bit PNGs (a raw ``> 127`` on their 0/1 array drops
every mitochondrion), the other sections have anti-aliased edges 1..254 (``> 0`` dilates them), the Lucchi++
``Test_Out`` PNGs are RGBA with alpha 255 everywhere ("any channel > 0" makes every pixel foreground), and many
releases store ``{0, 1}`` in uint8 or as palette indices whose colour for index 1 is nearly black (a greyscale
``> 127`` reads those as empty). Known limits: 255 used as an "ignore" value next to foreground 1 reads as the
foreground; inverted masks (foreground 0) read inverted.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtbio.data.errors import VolumeError

if TYPE_CHECKING:
    from mtbio.data.volumes import Volume

__all__ = [
    "LabelValues",
    "binarize_label",
    "decide_rule",
    "foreground_fraction",
    "open_label_volume",
    "read_label_image",
    "rgb_to_grey",
]

_PIL_DIRECT_MODES = ("1", "L", "P", "I;16", "I;16L", "I;16B", "I", "F")
_BLOCK_BYTES = 64 << 20


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """8-bit luminance of ``(..., 3)`` or ``(..., 4)`` uint8 colour pixels, exactly as PIL ``convert("L")``.

    Not used by the label rule (which takes the brightest channel) but kept for callers.

    Args:
        rgb: ``(..., S)`` with S = 3 (RGB) or 4 (RGBA; alpha is ignored).

    Returns:
        ``(...)`` uint8.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim < 1 or rgb.shape[-1] not in (3, 4):
        raise ValueError(f"rgb must end in an RGB or RGBA axis of 3 or 4, got shape {rgb.shape}")
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


@dataclass
class LabelValues:
    """What the rule needs to know about the values of a label array; blocks of one array merge with ``+``.

    Attributes:
        kind: ``"i"`` for integer / bool values, ``"f"`` for float values.
        size: number of voxels.
        lo, hi: smallest and largest value (NaN ignored).
        distinct: the distinct values while there are at most 3, else ``None``.
        hist: voxel count of each value 0..255 when every value is a whole number in 0..255, else ``None``.
        nonzero, above_127, at_least_half: voxel counts ``!= 0``, ``> 127``, ``>= 0.5``.
        nan: NaN count. fractional: a float value that is no whole number exists.
    """

    kind: str
    size: int = 0
    lo: float = math.inf
    hi: float = -math.inf
    distinct: frozenset[float] | None = field(default_factory=frozenset)
    hist: np.ndarray | None = field(default_factory=lambda: np.zeros(256, np.int64))
    nonzero: int = 0
    above_127: int = 0
    at_least_half: int = 0
    nan: int = 0
    fractional: bool = False

    @classmethod
    def of(cls, array: np.ndarray) -> LabelValues:
        """The summary of one single-valued array (colour already reduced)."""
        a = np.asarray(array)
        if a.dtype == np.bool_:
            a = a.view(np.uint8)
        if a.dtype.kind not in "uif":
            raise ValueError(f"label arrays must be bool, integer or float, got dtype {array.dtype}")
        if a.dtype == np.uint8:  # one pass: everything follows from the histogram
            hist = np.bincount(a.ravel(), minlength=256).astype(np.int64)
            present = np.flatnonzero(hist)
            if present.size == 0:
                return cls(kind="i")
            nonzero = int(a.size - hist[0])
            return cls(
                kind="i",
                size=int(a.size),
                lo=float(present[0]),
                hi=float(present[-1]),
                distinct=frozenset(float(v) for v in present) if len(present) <= 3 else None,
                hist=hist,
                nonzero=nonzero,
                above_127=int(hist[128:].sum()),
                at_least_half=nonzero,
            )
        kind = "f" if a.dtype.kind == "f" else "i"
        nan = int(np.count_nonzero(np.isnan(a))) if kind == "f" else 0
        finite = a[~np.isnan(a)] if nan else a
        if finite.size == 0:
            return cls(kind=kind, size=int(a.size), nan=nan)
        lo, hi = float(finite.min()), float(finite.max())
        fractional = kind == "f" and bool(np.any(finite != np.round(finite)))
        hist = None
        if lo >= 0 and hi <= 255 and not fractional:
            hist = np.bincount(finite.ravel().astype(np.intp, copy=False), minlength=256).astype(np.int64)
            present = np.flatnonzero(hist)
            distinct = frozenset(float(v) for v in present) if len(present) <= 3 else None
        else:
            n_ends = int(np.count_nonzero(finite == lo)) + (int(np.count_nonzero(finite == hi)) if hi != lo else 0)
            distinct = frozenset({lo, hi}) if n_ends == finite.size else None
        return cls(
            kind=kind,
            size=int(a.size),
            lo=lo,
            hi=hi,
            distinct=distinct,
            hist=hist,
            nonzero=int(np.count_nonzero(finite)),
            above_127=int(np.count_nonzero(finite > 127)),
            at_least_half=int(np.count_nonzero(finite >= 0.5)),
            nan=nan,
            fractional=fractional,
        )

    def __add__(self, other: LabelValues) -> LabelValues:
        distinct = None
        if self.distinct is not None and other.distinct is not None and len(self.distinct | other.distinct) <= 3:
            distinct = self.distinct | other.distinct
        hist = None if self.hist is None or other.hist is None else self.hist + other.hist
        return LabelValues(
            kind="f" if "f" in (self.kind, other.kind) else "i",
            size=self.size + other.size,
            lo=min(self.lo, other.lo),
            hi=max(self.hi, other.hi),
            distinct=distinct,
            hist=hist,
            nonzero=self.nonzero + other.nonzero,
            above_127=self.above_127 + other.above_127,
            at_least_half=self.at_least_half + other.at_least_half,
            nan=self.nan + other.nan,
            fractional=self.fractional or other.fractional,
        )

    def describe(self) -> str:
        if self.distinct is not None:
            return "values {" + ", ".join(f"{v:g}" for v in sorted(self.distinct)) + "}"
        return f"values {self.lo:g}..{self.hi:g}"


@dataclass(frozen=True)
class LabelRule:
    """A decided threshold: ``name`` is ``"nonzero"`` (``!= 0``), ``"grey"`` (``> 127``) or ``"fraction"``
    (``>= 0.5``); ``reason`` says which encoding was recognised; ``fraction`` is the foreground fraction of the
    values it was decided on."""

    name: str
    reason: str
    fraction: float

    def apply(self, array: np.ndarray) -> np.ndarray:
        """``(...)`` bool mask of a single-valued array (colour already reduced)."""
        a = np.asarray(array)
        if self.name == "grey":
            return a > 127
        if self.name == "fraction":
            return a >= 0.5
        return a != 0


def decide_rule(values: LabelValues, where: str | os.PathLike | None = None) -> LabelRule:
    """Choose the threshold for a whole label array from its values (the rule in the module docstring).

    Raises:
        VolumeError: NaN, negative values, several non-zero values without a 0 background, or floats that are
            neither fractions in [0, 1] nor whole numbers; the message names ``where`` and the values.
    """
    seen = values.describe()
    size = max(values.size, 1)
    if values.nan:
        raise VolumeError(where, f"label holds {values.nan} NaN value(s): mtbio cannot read them as a mask")
    if values.size == 0 or values.hi == -math.inf:
        return LabelRule("nonzero", "empty array", 0.0)
    if values.kind == "f" and values.lo >= 0 and values.hi <= 1:
        return LabelRule("fraction", f"float fractions in [0, 1] ({seen}): >= 0.5", values.at_least_half / size)
    if values.kind == "f" and values.fractional:
        raise VolumeError(
            where, f"float label {seen} is neither fractions in [0, 1] nor whole numbers: is it a network output?"
        )
    if values.lo < 0:
        raise VolumeError(where, f"label has negative {seen}: mtbio cannot tell which value is background")
    nonzero_values = None if values.distinct is None else values.distinct - {0.0}
    if nonzero_values is not None and len(nonzero_values) <= 1:
        return LabelRule("nonzero", f"binary mask ({seen}): != 0", values.nonzero / size)
    if values.lo > 0:
        raise VolumeError(
            where,
            f"label has several non-zero {seen} and no 0 background (ilastik-style classes?): "
            "mtbio cannot tell which value is foreground; save it as 0 = background",
        )
    if values.hist is not None and values.hi == 255 and int(np.argmax(values.hist[128:])) == 127:
        return LabelRule("grey", f"8-bit greyscale mask with soft edges ({seen}): > 127", values.above_127 / size)
    return LabelRule("nonzero", f"instance labels ({seen}): != 0", values.nonzero / size)


def _reduce_color(array: np.ndarray) -> np.ndarray:
    """``(..., 3|4)`` -> ``(...)``: the brightest of R, G, B; alpha is dropped."""
    a = np.asarray(array)
    return np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2])


def _single_valued(image: np.ndarray | Any, color: bool | None) -> np.ndarray:
    if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image
        if image.mode in _PIL_DIRECT_MODES:
            return np.asarray(image)  # "P": the palette indices
        if image.mode in ("LA", "PA"):
            return np.asarray(image)[..., 0]
        return _reduce_color(np.asarray(image.convert("RGB")))
    array = np.asarray(image)
    if color is None:
        color = array.dtype == np.uint8 and array.ndim >= 3 and array.shape[-1] in (3, 4)
    return _reduce_color(array) if color else array


def binarize_label(
    image: np.ndarray | Any, *, color: bool | None = None, where: str | os.PathLike | None = None
) -> np.ndarray:
    """Apply the label rule (module docstring) to one whole label array or PIL image.

    Pass the whole file's array: the rule decides by the values it finds, so a patch can be read differently.

    Args:
        image: a numpy array — ``(Y, X)``, ``(Z, Y, X)``, or with a trailing RGB/RGBA axis ``(..., 3|4)`` — or a
            ``PIL.Image.Image`` (mode ``"P"`` is read by index).
        color: whether the last axis holds RGB(A) samples. ``None`` guesses: yes for ``uint8`` arrays of 3 or more
            dimensions whose last axis is 3 or 4 long (a 3D volume only 3-4 voxels wide would be misread: pass
            ``color=False`` for it).
        where: the file named in errors.

    Returns:
        A bool array of the spatial shape (the colour axis removed).

    Raises:
        VolumeError: values the rule refuses (see :func:`decide_rule`).
    """
    array = _single_valued(image, color)
    if array.dtype == np.bool_:
        return array.copy()
    rule = decide_rule(LabelValues.of(array), where)
    return rule.apply(array)


def read_label_image(path: str | os.PathLike) -> np.ndarray:
    """Read one 2D label file (PNG, TIF, JPEG, BMP) and apply the label rule to its own values.

    Returns:
        ``(Y, X)`` bool.

    Raises:
        VolumeError: missing, unreadable, truncated, not 2D, or values the rule refuses.
    """
    from mtbio.data._backends import IMAGE_SUFFIXES, check_tiff

    p = Path(path)
    if not p.is_file():
        raise VolumeError(p, "no such label file")
    kind = IMAGE_SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise VolumeError(p, f"unsupported label file type {p.suffix!r} (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
    try:
        if kind == "tif":
            import tifffile

            with tifffile.TiffFile(p) as tif:
                series = check_tiff(tif, p)
                axes, data = series.axes, series.asarray()
            if axes not in ("YX", "YXS"):
                raise VolumeError(p, f"a label image must be 2D, this TIF has axes {axes} {data.shape}")
            single = _single_valued(data, axes == "YXS")
        else:
            from PIL import Image

            with Image.open(p) as im:
                im.load()
                single = _single_valued(im, None)
    except VolumeError:
        raise
    except Exception as err:  # noqa: BLE001 - corrupt or truncated file
        raise VolumeError(p, f"cannot read label image: {type(err).__name__}: {err}") from err
    if single.ndim != 2:
        raise VolumeError(p, f"a label image must be 2D, this one reads as {single.shape}")
    if single.dtype == np.bool_:
        return single.copy()
    return decide_rule(LabelValues.of(single), p).apply(single)


def scan_label_backend(backend: Any, color: bool, where: str | os.PathLike) -> LabelRule:
    """Decide the rule for a whole single-array label volume, reading it block by block along axis 0.

    Warns (``UserWarning`` naming ``where``) when the volume has no foreground or is all foreground.
    """
    shape = tuple(backend.shape)
    per_row = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(backend.dtype).itemsize
    step = max(1, _BLOCK_BYTES // max(per_row, 1))
    values = LabelValues(kind="f" if np.dtype(backend.dtype).kind == "f" else "i")
    for start in range(0, shape[0], step):
        index = (slice(start, min(start + step, shape[0]), 1), *(slice(0, n, 1) for n in shape[1:]))
        block = backend.read(index)
        values = values + LabelValues.of(_reduce_color(block) if color else block)
    rule = decide_rule(values, where)
    _warn_if_degenerate(where, rule.fraction, f"; {rule.reason}")
    return rule


def _warn_if_degenerate(where: str | os.PathLike, fraction: float, detail: str = "") -> None:
    if fraction == 0.0:
        warnings.warn(f"{where}: label volume has no foreground (every voxel is background{detail})", stacklevel=3)
    elif fraction == 1.0:
        warnings.warn(f"{where}: label volume is all foreground (no background voxel{detail})", stacklevel=3)


def foreground_fraction(volume: Volume) -> float:
    """The foreground fraction of a label volume (from :func:`open_label_volume`), reading it block by block.

    Warns (``UserWarning`` naming the file) when it is 0 or 1.

    Raises:
        ValueError: ``volume`` is not a bool label volume.
    """
    from mtbio.data._backends import LabelBackend

    if volume.dtype != np.bool_:
        raise ValueError(f"{volume.path}: foreground_fraction needs a bool label volume, got dtype {volume.dtype}")
    backend = volume._backend
    if isinstance(backend, LabelBackend):  # the whole-volume decision counted it (and warned)
        return backend.decided().fraction
    shape = volume.shape
    if 0 in shape:
        return 0.0
    step = max(1, _BLOCK_BYTES // max(int(np.prod(shape[1:], dtype=np.int64)), 1))
    count = sum(int(np.count_nonzero(volume[s : s + step])) for s in range(0, shape[0], step))
    fraction = count / float(np.prod(shape, dtype=np.float64))
    where = f"{volume.path}[{volume.key}]" if volume.key else volume.path
    _warn_if_degenerate(where, fraction)
    return fraction


def open_label_volume(
    path: str | os.PathLike, key: str | None = None, *, voxel_size: Sequence[float] | None = None
) -> Volume:
    """Open a label volume lazily as bool, applying the label rule.

    Takes every format :func:`mtbio.data.volumes.open_volume` takes. Section folders may mix 1-bit, greyscale,
    palette and RGB(A) files (VNC III does); each file is decided by its own values (:func:`read_label_image`),
    so an all-zero section stays empty. A single-array volume (TIF stack, HDF5, zarr, NIfTI) is decided once for
    the whole array, by one block-wise pass on its first read. A trailing RGB(A) axis of a TIF is folded into the
    rule, so the volume's shape is spatial only.

    Returns:
        A :class:`~mtbio.data.volumes.Volume` with ``dtype == bool``.
    """
    from mtbio.data.volumes import open_any

    return open_any(path, key, voxel_size=voxel_size, label=True)
