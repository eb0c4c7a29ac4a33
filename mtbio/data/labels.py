"""The label rule: one way to turn every real mitochondria label file into a boolean mask.

Rule (applied by :func:`binarize_label`, :func:`read_label_image` and :func:`open_label_volume`):

1. Convert to 8-bit greyscale first: PIL mode ``"1"`` / bool ``True`` -> 255; RGB / RGBA -> the luminance of
   R, G, B with PIL's ``convert("L")`` integer formula ``(19595 R + 38470 G + 7471 B + 32768) >> 16``
   (ITU-R 601-2); the alpha channel is never used; palette PNGs go through their palette.
2. Foreground is ``grey > 127``.

Exceptions, by dtype: integer arrays wider than 8 bits (``uint16``/``uint32``/``uint64``) and every signed
integer array hold *instance* labels (MitoEM, CREMI): foreground is ``> 0``. Float arrays are taken as
fractions: foreground is ``> 0.5`` (reads {0, 1} and {0, 255} masks alike).

Why one rule: VNC III sections 01, 07, 18 are 1-bit PNGs (a raw ``> 127`` on their 0/1 array drops every
mitochondrion), the others have anti-aliased edges 1..254 (``> 0`` dilates them), and the Lucchi++ ``Test_Out``
PNGs are RGBA with alpha 255 everywhere (``any channel > 0`` makes every pixel foreground). The mtbio synthetic
generator writes ``uint8`` {0, 255}, which the rule reads as is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtbio.data.errors import VolumeError

if TYPE_CHECKING:
    from mtbio.data.volumes import Volume

__all__ = ["binarize_label", "read_label_image", "open_label_volume", "rgb_to_grey"]

_PIL_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I", "F")


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """8-bit luminance of ``(..., 3)`` or ``(..., 4)`` uint8 colour pixels, exactly as PIL ``convert("L")``.

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


def binarize_label(image: np.ndarray | Any, *, color: bool | None = None) -> np.ndarray:
    """Apply the label rule (module docstring) to a label array or PIL image.

    Args:
        image: a numpy array — ``(Y, X)``, ``(Z, Y, X)``, or with a trailing RGB/RGBA axis ``(..., 3|4)`` — or a
            ``PIL.Image.Image`` (converted with ``convert("L")`` unless it is a 16/32-bit or float image).
        color: whether the last axis holds RGB(A) samples. ``None`` guesses: yes for ``uint8`` arrays of 3 or more
            dimensions whose last axis is 3 or 4 long (a 3D volume only 3-4 voxels wide would be misread: pass
            ``color=False`` for it).

    Returns:
        A bool array of the spatial shape (the colour axis removed).
    """
    if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image
        if image.mode in _PIL_INTEGER_MODES:
            return binarize_label(np.asarray(image), color=False)
        return np.asarray(image.convert("L")) > 127
    array = np.asarray(image)
    if color is None:
        color = array.dtype == np.uint8 and array.ndim >= 3 and array.shape[-1] in (3, 4)
    if color:
        if array.dtype == np.bool_:
            return array[..., :3].any(axis=-1)
        if array.dtype != np.uint8:
            raise ValueError(f"colour label pixels must be uint8, got {array.dtype}")
        return rgb_to_grey(array) > 127
    if array.dtype == np.bool_:
        return array.copy()
    if array.dtype == np.uint8:
        return array > 127
    if np.issubdtype(array.dtype, np.integer):
        return array > 0
    if np.issubdtype(array.dtype, np.floating):
        return array > 0.5
    raise ValueError(f"label arrays must be bool, integer or float, got dtype {array.dtype}")


def read_label_image(path: str | os.PathLike) -> np.ndarray:
    """Read one 2D label file (PNG, TIF, JPEG, BMP) and apply the label rule.

    Returns:
        ``(Y, X)`` bool.

    Raises:
        VolumeError: missing, unreadable or not 2D.
    """
    from mtbio.data.volumes import IMAGE_SUFFIXES

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
                axes, data = tif.series[0].axes, tif.series[0].asarray()
            if axes not in ("YX", "YXS"):
                raise VolumeError(p, f"a label image must be 2D, this TIF has axes {axes} {data.shape}")
            mask = binarize_label(data, color=axes == "YXS")
        else:
            from PIL import Image

            with Image.open(p) as im:
                mask = binarize_label(im)
    except VolumeError:
        raise
    except Exception as err:  # noqa: BLE001 - corrupt or truncated file
        raise VolumeError(p, f"cannot read label image: {type(err).__name__}: {err}") from err
    if mask.ndim != 2:
        raise VolumeError(p, f"a label image must be 2D, this one reads as {mask.shape}")
    return mask


def open_label_volume(
    path: str | os.PathLike, key: str | None = None, *, voxel_size: Sequence[float] | None = None
) -> Volume:
    """Open a label volume lazily as bool, applying the label rule to every read.

    Takes every format :func:`mtbio.data.volumes.open_volume` takes. Section folders may mix 1-bit, greyscale and
    RGB(A) files (VNC III does); each file goes through :func:`read_label_image`. A trailing RGB(A) axis of a TIF
    is folded into the rule, so the volume's shape is spatial only.

    Returns:
        A :class:`~mtbio.data.volumes.Volume` with ``dtype == bool``.
    """
    from mtbio.data.volumes import open_any

    return open_any(path, key, voxel_size=voxel_size, label=True)
