"""Open EM image and label volumes from the formats EM data ships in, lazily and read-only.

:func:`open_volume` returns a :class:`Volume`: it knows its ``shape``, ``dtype``, ``axes`` and voxel size at
once and reads pixels only when indexed (numpy basic slicing), so a 1000-section stack costs nothing until
a patch of it is read. Formats (see ``docs/data.md``):

* a folder of per-section 2D files (``.png``, ``.tif``/``.tiff``, ``.jpg``/``.jpeg``, ``.bmp``), sorted
  naturally (``2.png`` before ``10.png``); one file is read per indexed section -> ``(Z, Y, X)``;
* one TIF (multi-page -> ``(Z, Y, X)``, memory-mapped when the pixels are contiguous and uncompressed,
  otherwise read page by page; a single page -> ``(Y, X)``) or one PNG/JPEG/BMP -> ``(Y, X)``;
* HDF5 (``key`` = dataset path; optional when the file holds exactly one dataset);
* zarr format 2 and 3 arrays and groups (``key`` = array path; optional when the group holds one array),
  OME-Zarr (OME-NGFF 0.4 ``attrs["multiscales"]`` and 0.5 ``attrs["ome"]["multiscales"]``: level 0, i.e. the
  first ``datasets`` path, unless ``key`` names another), which includes mtbio prediction stores -> ``(C, ...)``;
* NIfTI (``.nii``, ``.nii.gz``): nibabel's ``(x, y, z)`` is returned transposed as ``(z, y, x)``.

Axes keep the stored order and are named in :attr:`Volume.axes`: ``z``, ``y``, ``x`` (spatial), ``c`` (channel
/ colour samples), ``t`` (time). Without metadata a 2D array is ``yx``, 3D ``zyx``, 4D ``czyx``.

Voxel size (nanometres per *spatial* axis, in stored order) is read from the file when it carries one:
OME-Zarr ``scale`` with units, zarr ``attrs["voxel_size"]`` (nm), HDF5 ``resolution`` (nm) or
``element_size_um`` (micrometres), NIfTI zooms (``xyzt_units``; "unknown" is taken as millimetres), TIF
resolution tags (centimetre/millimetre/micrometre units, or ImageJ's ``unit`` + ``spacing`` for z; inch
resolutions under 10000 dpi are print defaults and ignored). A ``voxel_size`` argument overrides the file.
A file that gives only some axes (a TIF without z spacing, a section folder) gives ``None``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtbio.data._backends import (
    _H5_SUFFIXES,
    _NON_SPATIAL,
    _ZARR_MARKERS,
    IMAGE_SUFFIXES,
    Backend,
    H5Backend,
    LabelBackend,
    NiftiBackend,
    SectionBackend,
    TiffBackend,
    ViewBackend,
    ZarrBackend,
    image_header,
    read_image_file,
)
from mtbio.data.errors import VolumeError

__all__ = ["Volume", "open_volume", "check_same_shape", "natural_sort_key", "IMAGE_SUFFIXES"]

#: per-section / single image file suffixes (``.tif`` and ``.tiff`` count as one kind)


def natural_sort_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders the digit runs of ``name`` by value: ``2.png`` < ``10.png``, ``mask0002`` < ``mask10``."""
    return tuple(
        (0, int(part), part) if part.isdigit() else (1, part.lower(), part) for part in re.split(r"(\d+)", name)
    )


def _normalize_index(index: Any, shape: tuple[int, ...]) -> tuple[tuple[int | slice, ...], tuple[Any, ...], list[int]]:
    """Split a numpy basic index into an in-bounds read index (ints, slices with step >= 1, one per axis), the
    index that finishes the result (reversals for negative steps, ``None`` new axes) and the result's length per
    kept axis."""
    items = index if isinstance(index, tuple) else (index,)
    n_real = sum(1 for i in items if i is not None and i is not Ellipsis)
    if n_real > len(shape):
        raise IndexError(f"too many indices for a {len(shape)}-D volume: {n_real}")
    if sum(1 for i in items if i is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if Ellipsis not in items:
        items = (*items, Ellipsis)
    expanded: list[Any] = []
    for item in items:
        expanded.extend([slice(None)] * (len(shape) - n_real) if item is Ellipsis else [item])
    read: list[int | slice] = []
    post: list[Any] = []
    counts: list[int] = []
    axis = 0
    for item in expanded:
        if item is None:
            post.append(None)
            continue
        n = shape[axis]
        if isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
            if not -n <= int(item) < n:
                raise IndexError(f"index {int(item)} is out of bounds for axis {axis} with size {n}")
            read.append(int(item) % n)
        elif isinstance(item, slice):
            start, stop, step = item.indices(n)
            count = len(range(start, stop, step))
            counts.append(count)
            if step > 0:
                read.append(slice(start, start + (count - 1) * step + 1, step) if count else slice(0, 0, 1))
                post.append(slice(None))
            else:
                first = start + (count - 1) * step
                read.append(slice(first, start + 1, -step) if count else slice(0, 0, 1))
                post.append(slice(None, None, -1))
        else:
            raise IndexError(
                f"a Volume takes numpy basic indices (int, slice, ..., None), got {type(item).__name__}; "
                "read a region first, then index the numpy array"
            )
        axis += 1
    return tuple(read), tuple(post), counts


class Volume:
    """A lazily indexable, read-only image or label volume.

    Attributes:
        path: the file or folder it reads.
        key: the HDF5 dataset / zarr array path inside ``path`` (``None`` for single-array formats).
        shape: the stored shape, e.g. ``(Z, Y, X)``, ``(Y, X)``, ``(C, Z, Y, X)`` or ``(Y, X, 3)`` for RGB.
        dtype: the numpy dtype a read returns.
        ndim: ``len(shape)``.
        axes: one name per axis (``"z"``, ``"y"``, ``"x"`` spatial; ``"c"`` channel; ``"t"`` time).
        voxel_size: nanometres per spatial axis, in stored order (``(z, y, x)`` or ``(y, x)``), or ``None``.
    """

    def __init__(
        self,
        backend: Backend,
        path: Path,
        *,
        key: str | None,
        axes: Sequence[str],
        voxel_size: Sequence[float] | None,
    ) -> None:
        self._backend = backend
        self.path = Path(path)
        self.key = key
        self.shape: tuple[int, ...] = tuple(int(s) for s in backend.shape)
        self.dtype = np.dtype(backend.dtype)
        self.ndim = len(self.shape)
        self.axes: tuple[str, ...] = tuple(axes)
        if len(self.axes) != self.ndim:
            raise VolumeError(self.path, f"axes {self.axes} do not match the {self.ndim}-D shape {self.shape}")
        self.voxel_size = _check_voxel_size(self.path, voxel_size, self.spatial_axes)

    @property
    def spatial_axes(self) -> tuple[str, ...]:
        """The spatial axis names in stored order, e.g. ``("z", "y", "x")``."""
        return tuple(a for a in self.axes if a not in _NON_SPATIAL)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The shape without channel/time axes, e.g. ``(Z, Y, X)``."""
        return tuple(s for s, a in zip(self.shape, self.axes) if a not in _NON_SPATIAL)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        read, post, counts = _normalize_index(index, self.shape)
        if 0 in counts:
            return np.empty(tuple(counts), dtype=self.dtype)[post]
        try:
            data = self._backend.read(read)
        except VolumeError:
            raise
        except Exception as err:  # noqa: BLE001 - any reader failure is reported with the file
            where = f"{self.path}[{self.key}]" if self.key else self.path
            raise VolumeError(where, f"cannot read {read}: {type(err).__name__}: {err}") from err
        return np.asarray(data)[post]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)

    def view(self, index: Any) -> Volume:
        """A lazy sub-volume (nothing is read): ``index`` may hold only slices with step >= 1 and ``...``.

        Example: ``vol.view(np.s_[0:10])`` is sections 0-9 of a ``(Z, Y, X)`` stack, still shaped ``(10, Y, X)``.
        A step multiplies the voxel size of its axis.
        """
        items = index if isinstance(index, tuple) else (index,)
        for item in items:
            if not (item is Ellipsis or (isinstance(item, slice) and (item.step is None or item.step >= 1))):
                raise IndexError(
                    f"view() takes slices with step >= 1 and '...' only (it keeps every axis), got {item!r}"
                )
        read, _, _ = _normalize_index(items, self.shape)
        backend = ViewBackend(self._backend, read)  # type: ignore[arg-type]
        voxel = None
        if self.voxel_size is not None:
            steps = [s.step for s, a in zip(read, self.axes) if a not in _NON_SPATIAL]  # type: ignore[union-attr]
            voxel = tuple(v * st for v, st in zip(self.voxel_size, steps))
        return Volume(backend, self.path, key=self.key, axes=self.axes, voxel_size=voxel)

    def close(self) -> None:
        """Release any open file handle (a later read reopens it)."""
        self._backend.close()

    def __repr__(self) -> str:
        key = f", key={self.key!r}" if self.key else ""
        return (
            f"Volume({str(self.path)!r}{key}, shape={self.shape}, dtype={self.dtype}, axes={''.join(self.axes)!r}, "
            f"voxel_size={self.voxel_size})"
        )


def check_same_shape(image: Volume, label: Volume) -> None:
    """Raise :class:`VolumeError` naming both paths when ``image`` and ``label`` differ in spatial shape."""
    if image.spatial_shape != label.spatial_shape:
        raise VolumeError(
            None,
            f"image {image.path} has spatial shape {image.spatial_shape} ({''.join(image.spatial_axes)}) but label "
            f"{label.path} has {label.spatial_shape} ({''.join(label.spatial_axes)}): they must match",
        )


def _check_voxel_size(
    path: Path, voxel_size: Sequence[float] | None, spatial: Sequence[str]
) -> tuple[float, ...] | None:
    if voxel_size is None:
        return None
    try:
        values = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError) as err:
        raise VolumeError(path, f"voxel_size must be a sequence of numbers, got {voxel_size!r}") from err
    if len(values) != len(spatial):
        raise VolumeError(
            path,
            f"voxel_size {values} has {len(values)} entries but the volume has {len(spatial)} spatial axes "
            f"({''.join(spatial)})",
        )
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise VolumeError(path, f"voxel_size must be positive and finite (nm), got {values}")
    return values


def open_volume(
    path: str | os.PathLike, key: str | None = None, *, voxel_size: Sequence[float] | None = None
) -> Volume:
    """Open an image volume lazily (see the module docstring for formats, axes and voxel-size rules).

    Args:
        path: a section folder, a TIF/PNG/JPEG/BMP file, an HDF5 file, a zarr/OME-Zarr store or a NIfTI file.
        key: the HDF5 dataset or zarr array inside ``path``; needed only when it holds several.
        voxel_size: nanometres per spatial axis in stored order, e.g. ``(50, 4.6, 4.6)`` for ``(z, y, x)``;
            overrides what the file says.

    Returns:
        A :class:`Volume` of 2 to 4 dimensions.

    Raises:
        VolumeError: the path is missing, unsupported, empty, corrupt, of the wrong rank, the key is missing or
            ambiguous, the sections disagree in shape or dtype, or ``voxel_size`` does not fit.
    """
    return open_any(path, key, voxel_size=voxel_size, label=False)


def open_any(
    path: str | os.PathLike, key: str | None = None, *, voxel_size: Sequence[float] | None = None, label: bool
) -> Volume:
    """:func:`open_volume` (``label=False``) or :func:`mtbio.data.labels.open_label_volume` (``label=True``)."""
    from mtbio.data.labels import read_label_image

    p = Path(path)
    if not p.exists():
        raise VolumeError(p, "no such file or folder")
    name = p.name.lower()
    is_zarr = p.is_dir() and (name.endswith(".zarr") or any((p / m).exists() for m in _ZARR_MARKERS))
    if key is not None and not (is_zarr or name.endswith(_H5_SUFFIXES)):
        raise VolumeError(p, f"key={key!r} was given but only HDF5 files and zarr stores hold several arrays")
    if is_zarr:
        backend, key, axes, file_voxel = ZarrBackend.open(p, key)
    elif p.is_dir():
        backend, axes, file_voxel = _open_folder(p, read_label_image if label else read_image_file, label)
    elif name.endswith(_H5_SUFFIXES):
        backend, key, axes, file_voxel = H5Backend.open(p, key)
    elif name.endswith((".nii", ".nii.gz")):
        backend, axes, file_voxel = NiftiBackend.open(p)
    elif Path(name).suffix in IMAGE_SUFFIXES and IMAGE_SUFFIXES[Path(name).suffix] == "tif":
        backend, axes, file_voxel = TiffBackend.open(p)
    elif Path(name).suffix in IMAGE_SUFFIXES:
        shape, dtype = image_header(p)
        if label:
            shape, dtype = shape[:2], np.dtype(bool)
        backend = SectionBackend([p], read_label_image if label else read_image_file, shape, dtype, stacked=False)
        axes, file_voxel = ("y", "x", "c")[: len(shape)], None
        label = False  # the reader applied the label rule already
    else:
        raise VolumeError(
            p,
            "unsupported file type: expected a folder of sections, .tif/.tiff, .png, .jpg, .bmp, .h5/.hdf5, "
            ".nii/.nii.gz or a zarr store",
        )
    if p.is_dir() and not is_zarr:
        label = False  # the folder reader applied the label rule already
    if not 2 <= len(backend.shape) <= 4 or not 2 <= sum(a not in _NON_SPATIAL for a in axes) <= 3:
        where = f"{p}[{key}]" if key else p
        raise VolumeError(where, f"has shape {tuple(backend.shape)} (axes {''.join(axes)}): mtbio reads 2D or 3D data")
    if np.dtype(backend.dtype).kind not in "biuf":
        raise VolumeError(
            f"{p}[{key}]" if key else p, f"has dtype {np.dtype(backend.dtype)}: expected bool, int or float"
        )
    if label:
        color = axes[-1] == "c" and backend.shape[-1] in (3, 4)
        backend = LabelBackend(backend, color=color, where=f"{p}[{key}]" if key else p)
        axes = axes[:-1] if color else axes
    if voxel_size is None:
        voxel_size = file_voxel
    return Volume(backend, p, key=key, axes=axes, voxel_size=voxel_size)


def _open_folder(
    folder: Path, reader: Callable[[Path], np.ndarray], label: bool
) -> tuple[Backend, tuple[str, ...], None]:
    files = [
        f for f in folder.iterdir() if not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
    ]
    if not files:
        raise VolumeError(folder, f"folder holds no section files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    kinds = sorted({IMAGE_SUFFIXES[f.suffix.lower()] for f in files})
    if len(kinds) > 1:
        raise VolumeError(folder, f"folder mixes section file types {kinds}: keep one kind of file per stack")
    files.sort(key=lambda f: natural_sort_key(f.name))
    first_shape, first_dtype = image_header(files[0])
    for i, f in enumerate(files[1:], start=1):
        shape, dtype = image_header(f)
        if (shape[:2] if label else shape) != (first_shape[:2] if label else first_shape):
            raise VolumeError(
                folder,
                f"sections differ in shape: section {i} ({f.name}) is {shape}, section 0 ({files[0].name}) is "
                f"{first_shape}",
            )
        if not label and dtype != first_dtype:
            raise VolumeError(
                folder,
                f"sections differ in dtype: section {i} ({f.name}) is {dtype}, section 0 ({files[0].name}) is "
                f"{first_dtype} (a label folder? open it with open_label_volume)",
            )
    if label:
        section_shape, dtype = first_shape[:2], np.dtype(bool)
    else:
        section_shape, dtype = first_shape, first_dtype
    backend = SectionBackend(files, reader, section_shape, dtype, stacked=True)
    return backend, ("z", "y", "x", "c")[: 1 + len(section_shape)], None
