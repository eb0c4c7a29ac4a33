"""Format readers behind :func:`mtbio.data.volumes.open_volume`: one ``Backend`` per file format (PNG/TIF section
folders, TIF stacks, HDF5, zarr / OME-Zarr, NIfTI) plus lazy views and the label-rule wrapper."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtbio.data.errors import VolumeError

IMAGE_SUFFIXES = {".png": "png", ".tif": "tif", ".tiff": "tif", ".jpg": "jpg", ".jpeg": "jpg", ".bmp": "bmp"}
_H5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")
_NON_SPATIAL = ("c", "t")
_DEFAULT_AXES = {2: ("y", "x"), 3: ("z", "y", "x"), 4: ("c", "z", "y", "x")}

# ---------------------------------------------------------------------------------------------- format readers
# A backend reads one array: ``read(index)`` gets one in-bounds int or step >= 1 slice per axis (no empty slice).
# Handles are opened on first read and dropped on pickling, so a Volume can go to DataLoader worker processes.

_UNIT_NM = {
    "angstrom": 0.1,
    "picometer": 1e-3,
    "nanometer": 1.0,
    "nm": 1.0,
    "micrometer": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "um": 1e3,
    "\u00b5m": 1e3,
    "\u03bcm": 1e3,
    "\\u00b5m": 1e3,
    "millimeter": 1e6,
    "mm": 1e6,
    "centimeter": 1e7,
    "cm": 1e7,
    "meter": 1e9,
    "m": 1e9,
}
#: PIL mode -> (dtype, colour samples or 0)
_PIL_MODES = {
    "1": ("bool", 0),
    "L": ("u1", 0),
    "P": ("u1", 0),
    "LA": ("u1", 2),
    "RGB": ("u1", 3),
    "RGBA": ("u1", 4),
    "I;16": ("u2", 0),
    "I;16L": ("u2", 0),
    "I;16B": ("u2", 0),
    "I": ("i4", 0),
    "F": ("f4", 0),
}
_TIFF_AXES = {"Z": "z", "Q": "z", "I": "z", "Y": "y", "X": "x", "S": "c", "C": "c", "T": "t"}


def _is_tif(path: Path) -> bool:
    return IMAGE_SUFFIXES.get(path.suffix.lower()) == "tif"


def _native(data: np.ndarray) -> np.ndarray:
    return data.astype(data.dtype.newbyteorder("="), copy=False)


def image_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape ``(Y, X)`` or ``(Y, X, S)`` and dtype of one 2D image file, from its header only."""
    try:
        if _is_tif(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = check_tiff(tif, path)
                shape, dtype, axes = tuple(series.shape), np.dtype(series.dtype), series.axes
            if axes not in ("YX", "YXS"):
                raise VolumeError(path, f"is a TIF with axes {axes} {shape}: a section file must hold one 2D image")
            return shape, dtype
        from PIL import Image

        with Image.open(path) as im:
            mode, (width, height) = im.mode, im.size
    except VolumeError:
        raise
    except Exception as err:  # noqa: BLE001 - corrupt or not an image
        raise VolumeError(path, f"not a readable image file: {type(err).__name__}: {err}") from err
    if mode not in _PIL_MODES:
        raise VolumeError(path, f"unsupported image mode {mode!r} (supported: {', '.join(_PIL_MODES)})")
    dtype, samples = _PIL_MODES[mode]
    return (height, width, samples) if samples else (height, width), np.dtype(dtype)


def read_image_file(path: Path) -> np.ndarray:
    """All pixels of one 2D image file as stored: ``(Y, X)`` or ``(Y, X, S)`` (PIL mode "1" -> bool)."""
    try:
        if _is_tif(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                data = check_tiff(tif, path).asarray()
        else:
            from PIL import Image

            with Image.open(path) as im:
                data = np.asarray(im)
    except VolumeError:
        raise
    except Exception as err:  # noqa: BLE001 - corrupt or truncated file
        raise VolumeError(path, f"cannot read image: {type(err).__name__}: {err}") from err
    return _native(data)


def region(index: tuple[int | slice, ...]) -> str:
    """``(slice(0, 4, 1), 2)`` -> ``"[0:4, 2]"``: the region of a backend read, for error messages."""
    parts = []
    for i in index:
        if isinstance(i, slice):
            parts.append(f"{i.start}:{i.stop}" + (f":{i.step}" if i.step not in (None, 1) else ""))
        else:
            parts.append(str(i))
    return "[" + ", ".join(parts) + "]"


def read_failed(where: Any, index: tuple[int | slice, ...], err: BaseException) -> VolumeError:
    """The :class:`VolumeError` for a read of ``index`` that raised ``err`` (a corrupt chunk, a truncated page)."""
    return VolumeError(where, f"cannot read region {region(index)}: {type(err).__name__}: {err}")


def check_tiff(tif: Any, path: Path) -> Any:
    """The one image series of an open ``tifffile.TiffFile`` after checking it against the file itself.

    Raises :class:`VolumeError` naming ``path`` when the TIF holds no or several series, its page chain points
    past the end of the file (cut after a page), a page's pixel data ends past the end of the file (cut inside
    a page), its shaped description or ImageJ ``images=`` declares more planes than the series holds, or the
    file has more pages than the series covers (a multi-page stack that would otherwise read as one image).
    """
    import struct

    if not tif.series:
        raise VolumeError(path, "not a readable TIF: it holds no image")
    if len(tif.series) != 1:
        shapes = [tuple(se.shape) for se in tif.series]
        raise VolumeError(path, f"TIF holds {len(shapes)} image series {shapes}: expected one stack")
    series, fh = tif.series[0], tif.filehandle
    size = fh.size
    n_pages = len(tif.pages)
    next_at = tif.pages.next_page_offset
    if next_at is not None:
        offsetsize = tif.tiff.offsetsize
        if next_at + offsetsize > size:
            raise VolumeError(path, f"TIF is truncated: page {n_pages}'s directory ends past the end of the file")
        fh.seek(next_at)
        following = struct.unpack(tif.tiff.offsetformat, fh.read(offsetsize))[0]
        if following >= size:
            raise VolumeError(
                path,
                f"TIF is truncated after page {n_pages}: the next page starts at byte {following}, the file "
                f"has {size} bytes",
            )
    page_shape = tuple(series.keyframe.shape)
    planes = int(np.prod(series.shape, dtype=np.int64)) // max(int(np.prod(page_shape, dtype=np.int64)), 1)
    declared = None
    if tif.is_shaped and tif.shaped_metadata and "shape" in tif.shaped_metadata[0]:
        shaped = tuple(tif.shaped_metadata[0]["shape"])
        if int(np.prod(shaped, dtype=np.int64)) != int(np.prod(series.shape, dtype=np.int64)):
            declared = f"its description declares shape {shaped}"
    images = (tif.imagej_metadata or {}).get("images")
    if images is not None and int(images) != planes:
        declared = f"its ImageJ metadata declares images={images}"
    if declared is not None:
        raise VolumeError(
            path,
            f"TIF is truncated or corrupt: {declared} but the file holds {n_pages} readable page(s) "
            f"forming {tuple(series.shape)} were found",
        )
    if n_pages > planes:
        raise VolumeError(
            path,
            f"TIF has {n_pages} pages but its image series {tuple(series.shape)} ({series.axes}) covers only "
            f"{planes}: pages differ or the metadata is wrong; mtbio will not read part of a stack",
        )
    if series.dataoffset is not None:
        needed = series.dataoffset + int(np.prod(series.shape, dtype=np.int64)) * np.dtype(series.dtype).itemsize
        if needed > size:
            raise VolumeError(
                path, f"TIF is truncated: its {tuple(series.shape)} pixels need {needed} bytes, the file has {size}"
            )
    else:
        for i, page in enumerate(series.pages):
            if page is None:
                continue
            ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts) if c]
            if ends and max(ends) > size:
                raise VolumeError(
                    path, f"TIF is truncated: page {i}'s pixel data ends at byte {max(ends)}, the file has {size}"
                )
    return series


class Backend:
    """Reads one array lazily (see the section comment)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    _handle: Any = None

    def read(self, index: tuple[int | slice, ...]) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if hasattr(handle, "close"):
            handle.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handle"] = None
        return state


class SectionBackend(Backend):
    """One 2D file per section (``stacked``: ``(Z, *section_shape)``) or a single file (``section_shape``)."""

    def __init__(
        self,
        files: Sequence[Path],
        reader: Callable[[Path], np.ndarray],
        section_shape: tuple[int, ...],
        dtype: np.dtype,
        *,
        stacked: bool,
    ) -> None:
        self.files, self.reader, self.section_shape, self.stacked = list(files), reader, section_shape, stacked
        self.shape = (len(self.files), *section_shape) if stacked else section_shape
        self.dtype = np.dtype(dtype)

    def _section(self, path: Path) -> np.ndarray:
        data = self.reader(path)
        if data.shape != self.section_shape:
            raise VolumeError(path, f"is {data.shape}, expected {self.section_shape} like its stack (did it change?)")
        return data.astype(self.dtype, copy=False)

    def read(self, index: tuple[int | slice, ...]) -> np.ndarray:
        if not self.stacked:
            return self._section(self.files[0])[index]
        first, rest = index[0], index[1:]
        if isinstance(first, int):
            return self._section(self.files[first])[rest]
        return np.stack([self._section(f)[rest] for f in self.files[first]])


class TiffBackend(Backend):
    """One TIF: memory-mapped when contiguous, else page by page (a page stack) or whole on first read."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, mode: str) -> None:
        self.path, self.shape, self.dtype, self.mode = path, shape, np.dtype(dtype), mode

    @classmethod
    def open(cls, path: Path) -> tuple[TiffBackend, tuple[str, ...], tuple[float, ...] | None]:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                series = check_tiff(tif, path)
                shape, dtype, tif_axes = tuple(series.shape), np.dtype(series.dtype), series.axes.upper()
                paged = len(shape) == 3 and len(series.pages) == shape[0] > 1
                mode = "memmap" if series.dataoffset is not None else ("pages" if paged else "whole")
                if any(a not in _TIFF_AXES for a in tif_axes):
                    raise VolumeError(path, f"TIF axes {tif_axes} {shape} are not supported (expected Z/Y/X/C/S/T)")
                axes = tuple(_TIFF_AXES[a] for a in tif_axes)
                voxel = _tiff_voxel_size(tif, series, axes)
        except VolumeError:
            raise
        except Exception as err:  # noqa: BLE001 - corrupt file
            raise VolumeError(path, f"not a readable TIF: {type(err).__name__}: {err}") from err
        return cls(path, shape, dtype, mode), axes, voxel

    def read(self, index: tuple[int | slice, ...]) -> np.ndarray:
        try:
            return self._read(index)
        except VolumeError:
            raise
        except Exception as err:  # noqa: BLE001 - a page that fails to decode, a file cut after opening
            raise read_failed(self.path, index, err) from err

    def _read(self, index: tuple[int | slice, ...]) -> np.ndarray:
        import tifffile

        if self.mode == "memmap":
            if self._handle is None:
                self._handle = tifffile.memmap(self.path, mode="r").reshape(self.shape)
            return np.array(self._handle[index])
        if self.mode == "whole":
            if self._handle is None:
                self._handle = tifffile.imread(self.path, series=0).reshape(self.shape)
            return np.array(self._handle[index])
        if self._handle is None:
            self._handle = tifffile.TiffFile(self.path)
        first = index[0]
        pages = [first] if isinstance(first, int) else list(range(first.start, first.stop, first.step))
        data = self._handle.asarray(key=pages, series=0).reshape(len(pages), *self.shape[1:])
        return _native(data[(0 if isinstance(first, int) else slice(None), *index[1:])])


def _tiff_voxel_size(tif: Any, series: Any, axes: tuple[str, ...]) -> tuple[float, ...] | None:
    page = series.keyframe
    try:
        xres, yres = (float(r) for r in page.resolution)
        unit = int(page.resolutionunit)
    except Exception:  # noqa: BLE001 - no or odd resolution tags
        return None
    imagej = tif.imagej_metadata or {}
    ij_factor = _UNIT_NM.get(str(imagej.get("unit", "")).strip().lower())
    factor = {3: 1e7, 4: 1e6, 5: 1e3}.get(unit)
    if unit == 2 and xres > 10000:  # inch; below 10000 dpi it is a print default, not an EM pixel
        factor = 2.54e7
    if unit == 1:
        factor = ij_factor
    if factor is None or xres <= 0 or yres <= 0:
        return None
    sizes = {"y": factor / yres, "x": factor / xres}
    if imagej.get("spacing"):
        sizes["z"] = float(imagej["spacing"]) * (ij_factor or factor)
    spatial = [a for a in axes if a not in _NON_SPATIAL]
    return tuple(sizes[a] for a in spatial) if all(a in sizes for a in spatial) else None


def _attr_axes(where: Any, attrs: Any, ndim: int) -> tuple[str, ...]:
    """Axis names from ``attrs["axes"]`` (e.g. ``["z", "y", "x"]``, as the synthetic generator writes), else the
    defaults for ``ndim``."""
    if "axes" not in attrs:
        return _DEFAULT_AXES.get(ndim, ("?",) * ndim)
    raw = attrs["axes"]
    names = tuple(str(a).lower() for a in (list(raw) if not isinstance(raw, str) else raw))
    if len(names) != ndim or len(set(names)) != ndim or not set(names) <= {"z", "y", "x", "c", "t"}:
        raise VolumeError(where, f"attribute axes={list(names)} does not name the {ndim} axes with z, y, x, c, t")
    return names


def _attr_voxel(where: Any, attrs: Any, names: dict[str, float], n_spatial: int) -> tuple[float, ...] | None:
    """Voxel size (nm) from the first of ``names`` (attribute -> factor to nm) present in ``attrs``."""
    for name, factor in names.items():
        if name in attrs:
            values = np.atleast_1d(np.asarray(attrs[name], dtype=float))
            if values.shape != (n_spatial,):
                raise VolumeError(where, f"attribute {name}={values.tolist()} does not give {n_spatial} spatial axes")
            return tuple(float(v) * factor for v in values)
    return None


class H5Backend(Backend):
    """One HDF5 dataset."""

    def __init__(self, path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.key, self.shape, self.dtype = path, key, shape, np.dtype(dtype)

    @classmethod
    def open(cls, path: Path, key: str | None) -> tuple[H5Backend, str, tuple[str, ...], tuple[float, ...] | None]:
        import h5py

        try:
            handle = h5py.File(path, "r")
        except Exception as err:  # noqa: BLE001 - corrupt / not HDF5
            raise VolumeError(path, f"not a readable HDF5 file: {type(err).__name__}: {err}") from err
        with handle:
            names: list[str] = []
            handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
            if key is None and len(names) != 1:
                raise VolumeError(
                    path, "holds no datasets" if not names else f"holds {len(names)} datasets; pass key= one of {names}"
                )
            key = names[0] if key is None else key.strip("/")
            if key not in names:
                raise VolumeError(path, f"has no dataset {key!r}; its datasets are {names}")
            dataset = handle[key]
            shape, dtype = tuple(dataset.shape), dataset.dtype
            axes = _attr_axes(f"{path}[{key}]", dataset.attrs, len(shape))
            n_spatial = sum(a not in _NON_SPATIAL for a in axes)
            voxel = _attr_voxel(f"{path}[{key}]", dataset.attrs, {"resolution": 1.0, "element_size_um": 1e3}, n_spatial)
        return cls(path, key, shape, dtype), key, axes, voxel

    def read(self, index: tuple[int | slice, ...]) -> np.ndarray:
        if self._handle is None:
            import h5py

            self._handle = h5py.File(self.path, "r")
        try:
            return self._handle[self.key][index]
        except Exception as err:  # noqa: BLE001 - a chunk that fails to decode (corrupt or cut file)
            raise read_failed(f"{self.path}[{self.key}]", index, err) from err


class ZarrBackend(Backend):
    """One zarr (format 2 or 3) array, possibly a level of an OME-Zarr multiscale."""

    def __init__(self, path: Path, key: str | None, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.key, self.shape, self.dtype = path, key, shape, np.dtype(dtype)

    @classmethod
    def open(
        cls, path: Path, key: str | None
    ) -> tuple[ZarrBackend, str | None, tuple[str, ...], tuple[float, ...] | None]:
        import zarr

        try:
            node = zarr.open(str(path), mode="r")
        except Exception as err:  # noqa: BLE001 - not a zarr store / corrupt metadata
            raise VolumeError(path, f"not a readable zarr store: {type(err).__name__}: {err}") from err
        multiscale, level, group_attrs = None, None, {}
        if isinstance(node, zarr.Array):
            if key is not None:
                raise VolumeError(path, f"is a zarr array, not a group, so key={key!r} selects nothing")
            array = node
            parent = path.parent
            if any((parent / m).exists() for m in _ZARR_MARKERS):  # a level of an OME-Zarr group?
                try:
                    group_attrs = dict(zarr.open_group(str(parent), mode="r").attrs)
                except Exception:  # noqa: BLE001 - the parent is no group: no metadata to inherit
                    group_attrs = {}
                multiscale, level = _multiscale(group_attrs), path.name
        else:
            group_attrs = dict(node.attrs)
            multiscale = _multiscale(group_attrs)
            arrays = sorted(name for name, obj in node.members(max_depth=None) if isinstance(obj, zarr.Array))
            if key is None and multiscale is not None:
                key = str(multiscale["datasets"][0]["path"])
            if key is None and len(arrays) != 1:
                raise VolumeError(
                    path,
                    "group holds no arrays" if not arrays else f"holds {len(arrays)} arrays; pass key= one of {arrays}",
                )
            key = arrays[0] if key is None else key.strip("/")
            if key not in arrays:
                raise VolumeError(path, f"has no array {key!r}; its arrays are {arrays}")
            array, level = node[key], key
        shape = tuple(array.shape)
        paths = [str(d.get("path")) for d in multiscale["datasets"]] if multiscale else []
        where = f"{path}[{key}]" if key else path
        if multiscale is not None and level in paths:
            axes, voxel = _ome_axes_voxel(where, multiscale, paths.index(level), len(shape))
        else:
            axes = _attr_axes(where, array.attrs, len(shape))
            n_spatial = sum(a not in _NON_SPATIAL for a in axes)
            attrs = dict(array.attrs) if "voxel_size" in array.attrs else group_attrs
            voxel = _attr_voxel(where, attrs, {"voxel_size": 1.0}, n_spatial)
        backend = cls(path, key, shape, np.dtype(array.dtype))
        backend._handle = array
        return backend, key, axes, voxel

    def read(self, index: tuple[int | slice, ...]) -> np.ndarray:
        if self._handle is None:
            import zarr

            node = zarr.open(str(self.path), mode="r")
            self._handle = node if self.key is None else node[self.key]
        try:  # a missing chunk reads as fill_value (zarr's design); a chunk that fails to decode raises
            return np.asarray(self._handle[index])
        except Exception as err:  # noqa: BLE001 - named with the store and region
            raise read_failed(f"{self.path}[{self.key}]" if self.key else self.path, index, err) from err


def _multiscale(attrs: dict[str, Any]) -> dict[str, Any] | None:
    found = (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")
    return found[0] if found and found[0].get("datasets") else None


def _ome_axes_voxel(
    where: Any, multiscale: dict[str, Any], level: int, ndim: int
) -> tuple[tuple[str, ...], tuple[float, ...] | None]:
    """Axis names and nm voxel size of dataset ``level`` of an OME-NGFF multiscale (0.3 to 0.5)."""
    names, units = [], []
    for axis in multiscale.get("axes") or _DEFAULT_AXES.get(ndim, ()):
        name, kind, unit = (
            (axis, None, None) if isinstance(axis, str) else (axis["name"], axis.get("type"), axis.get("unit"))
        )
        kind = kind or {"c": "channel", "t": "time"}.get(name, "space")
        names.append(str(name).lower() if kind == "space" else ("t" if kind == "time" else "c"))
        units.append(unit)
    if len(names) != ndim:
        raise VolumeError(where, f"OME-NGFF axes {names} do not match the {ndim}-D array")
    scale = [1.0] * ndim
    for transforms in (
        multiscale["datasets"][level].get("coordinateTransformations"),
        multiscale.get("coordinateTransformations"),
    ):
        for t in transforms or []:
            if t.get("type") == "scale" and "scale" in t:
                scale = [a * float(b) for a, b in zip(scale, t["scale"])]
    spatial = [i for i, n in enumerate(names) if n not in _NON_SPATIAL]
    factors = [_UNIT_NM.get(str(units[i]).lower()) if units[i] else None for i in spatial]
    voxel = None if None in factors else tuple(scale[i] * f for i, f in zip(spatial, factors))  # type: ignore[operator]
    return tuple(names), voxel


class NiftiBackend(Backend):
    """A NIfTI image; nibabel's ``(x, y[, z[, t]])`` is exposed reversed: ``([t,] [z,] y, x)``."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)

    @classmethod
    def open(cls, path: Path) -> tuple[NiftiBackend, tuple[str, ...], tuple[float, ...] | None]:
        import nibabel

        try:
            image = nibabel.load(str(path))
            shape = tuple(int(s) for s in image.shape)[::-1]
            dtype = np.asarray(image.dataobj[(0,) * len(shape)]).dtype  # scl_slope may make it float
            zooms, unit = image.header.get_zooms(), image.header.get_xyzt_units()[0]
        except Exception as err:  # noqa: BLE001 - corrupt / not NIfTI
            raise VolumeError(path, f"not a readable NIfTI file: {type(err).__name__}: {err}") from err
        axes = {2: ("y", "x"), 3: ("z", "y", "x"), 4: ("t", "z", "y", "x")}.get(len(shape), ("?",) * len(shape))
        factor = {"meter": 1e9, "mm": 1e6, "micron": 1e3, "unknown": 1e6}.get(unit, 1e6)
        voxel = tuple(float(z) * factor for z in zooms[: min(len(shape), 3)])[::-1]
        return cls(path, shape, dtype), axes, voxel

    def read(self, index: tuple[int | slice, ...]) -> np.ndarray:
        if self._handle is None:
            import nibabel

            self._handle = nibabel.load(str(self.path)).dataobj
        try:
            return np.ascontiguousarray(np.asarray(self._handle[index[::-1]]).T)
        except Exception as err:  # noqa: BLE001 - a cut or corrupt file
            raise read_failed(self.path, index, err) from err

    def close(self) -> None:
        self._handle = None


class ViewBackend(Backend):
    """A fixed sub-box (slices with step >= 1) of another backend."""

    def __init__(self, inner: Backend, view: tuple[slice, ...]) -> None:
        self.inner, self.view, self.dtype = inner, view, inner.dtype
        self.shape = tuple(len(range(s.start, s.stop, s.step)) for s in view)

    def read(self, index: tuple[int | slice, ...]) -> np.ndarray:
        mapped: list[int | slice] = []
        for v, i in zip(self.view, index):
            if isinstance(i, int):
                mapped.append(v.start + i * v.step)
            else:
                count, start, step = len(range(i.start, i.stop, i.step)), v.start + i.start * v.step, i.step * v.step
                mapped.append(slice(start, start + (count - 1) * step + 1, step))
        return self.inner.read(tuple(mapped))

    def close(self) -> None:
        self.inner.close()


class LabelBackend(Backend):
    """Applies the label rule to every read of a single-array backend (dropping a trailing RGB(A) axis when
    ``color``); the threshold is decided once for the whole array, on the first read
    (:func:`mtbio.data.labels.scan_label_backend`)."""

    def __init__(self, inner: Backend, *, color: bool, where: Any) -> None:
        self.inner, self.color, self.where = inner, color, where
        self.shape = tuple(inner.shape[:-1]) if color else tuple(inner.shape)
        self.dtype = np.dtype(bool)
        self._rule: Any = None

    def decided(self) -> Any:
        """The :class:`mtbio.data.labels.LabelRule` of the whole array (scanned on the first call)."""
        if self._rule is None:
            from mtbio.data.labels import scan_label_backend

            self._rule = scan_label_backend(self.inner, self.color, self.where)
        return self._rule

    def read(self, index: tuple[int | slice, ...]) -> np.ndarray:
        rule = self.decided()
        full = (*index, slice(0, self.inner.shape[-1], 1)) if self.color else index
        data = self.inner.read(full)
        if data.dtype == np.bool_ and not self.color:
            return data
        return rule.apply(np.maximum(np.maximum(data[..., 0], data[..., 1]), data[..., 2]) if self.color else data)

    def close(self) -> None:
        self.inner.close()
