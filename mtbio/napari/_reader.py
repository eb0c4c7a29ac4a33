"""The napari reader: zarr / OME-Zarr (multiscale pyramids), HDF5, TIFF stacks, folders of section images and
mtbio prediction stores.

Every layer is lazy (dask over the file's chunks). Voxel sizes (nm) become the layer ``scale``. Arrays whose
name says they hold labels (``label``, ``mask``, ``seg``, ``gt``, ``instance``, ``truth``, ``mito``) open as labels
layers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mtbio.napari._layers import LayerData, _scale, label_arrays, lazy, prediction_layers
from mtbio.napari._options import IMAGE_STYLE, LABELS_STYLE

ZARR_SUFFIXES = (".zarr", ".ome.zarr", ".n5")
H5_SUFFIXES = (".h5", ".hdf5", ".hdf")
TIFF_SUFFIXES = (".tif", ".tiff")
_LABEL_WORDS = ("label", "mask", "seg", "gt", "instance", "truth", "mito")


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("zarr.json", ".zgroup", ".zarray"))


def _is_section_folder(path: Path) -> bool:
    from mtbio.data.volumes import IMAGE_SUFFIXES

    return path.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in path.iterdir())


def _is_label_name(name: str) -> bool:
    low = name.lower()
    return any(word in low for word in _LABEL_WORDS)


def napari_get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader hook: :func:`read` when mtbio can open ``path`` (or every path of a list), else ``None``."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    for p in paths:
        p = Path(p)
        if not (_is_zarr(p) or p.suffix.lower() in H5_SUFFIXES + TIFF_SUFFIXES or _is_section_folder(p)):
            return None
    return read


def read(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[LayerData]:
    """Read one path (or several) into napari layer data tuples ``(data, kwargs, layer_type)``.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a file mtbio cannot read, with the file named in the message.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        layers.extend(read_one(Path(p)))
    return layers


def read_one(path: Path) -> list[LayerData]:
    """Layer data tuples for one file or zarr folder (see :func:`read`)."""
    from mtbio.data.store import is_prediction_store

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if is_prediction_store(path):
        return prediction_layers(path)
    if _is_zarr(path):
        return _read_zarr(path)
    suffix = path.suffix.lower()
    if suffix in H5_SUFFIXES:
        return _read_h5(path)
    if suffix in TIFF_SUFFIXES or _is_section_folder(path):
        return _read_volume(path)
    raise ValueError(f"{path}: not a zarr folder, HDF5 or TIFF file, or folder of section images")


def _layer(
    data: Any, name: str, voxel_size: Sequence[float] | None, *, labels: bool | None = None, meta: dict | None = None
) -> LayerData:
    if isinstance(data, list):  # multiscale pyramid, level 0 first
        ndim, dtype = data[0].ndim, data[0].dtype
    else:
        ndim, dtype = data.ndim, data.dtype
    is_labels = _is_label_name(name) if labels is None else labels
    if is_labels and dtype.kind not in "iub":
        is_labels = False  # float "masks" are probabilities: show them as images
    kwargs: dict[str, Any] = {"name": name, "scale": _scale(voxel_size, ndim), "metadata": dict(meta or {})}
    if isinstance(data, list):
        kwargs["multiscale"] = True
    if is_labels:
        if dtype.kind == "b":
            data = [d.astype("uint8") for d in data] if isinstance(data, list) else data.astype("uint8")
        return data, kwargs | LABELS_STYLE.kwargs(), "labels"
    if dtype.kind == "u" and dtype.itemsize == 1:
        kwargs["contrast_limits"] = (0, 255)
    return data, kwargs | IMAGE_STYLE.kwargs(), "image"


# ----------------------------------------------------------------------------------------------------- zarr


def _ome_multiscale(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The first OME-NGFF multiscale of a group's attrs (0.5 keeps it under ``"ome"``, 0.4 at the top)."""
    ome = attrs.get("ome", attrs)
    ms = ome.get("multiscales") if isinstance(ome, dict) else None
    return ms[0] if ms else None


def _ome_scale(dataset: dict[str, Any]) -> list[float] | None:
    for t in dataset.get("coordinateTransformations", []):
        if t.get("type") == "scale":
            return [float(s) for s in t["scale"]]
    return None


def _attr_voxel_size(attrs: Any) -> list[float] | None:
    for key in ("voxel_size", "resolution"):
        if key in attrs:
            return [float(v) for v in attrs[key]]
    mt = attrs.get("mtbio") if hasattr(attrs, "get") else None
    if isinstance(mt, dict) and mt.get("voxel_size") is not None:
        return [float(v) for v in mt["voxel_size"]]
    return None


def _ome_image_layers(group: Any, name: str, ms: dict[str, Any]) -> list[LayerData]:
    """An OME-NGFF image group -> one (multiscale) layer, split by channel when it has a channel axis."""
    datasets = ms["datasets"]
    levels = [lazy(group[d["path"]]) for d in datasets]
    axes = ms.get("axes", [])
    types = [a.get("type") if isinstance(a, dict) else None for a in axes]
    scale0 = _ome_scale(datasets[0])
    spatial = [i for i, t in enumerate(types) if t == "space"] or list(range(levels[0].ndim))
    voxel_size = [scale0[i] for i in spatial] if scale0 else None
    data: Any = levels if len(levels) > 1 else levels[0]
    layers = []
    if "channel" in types:
        c = types.index("channel")
        n = levels[0].shape[c]
        for k in range(n):
            idx = tuple([slice(None)] * c + [k])
            per = [lv[idx] for lv in levels] if len(levels) > 1 else levels[0][idx]
            layers.append(_layer(per, f"{name} c{k}" if n > 1 else name, voxel_size, labels=False))
    else:
        layers.append(_layer(data, name, voxel_size))
    for label_name, array in label_arrays(group).items():
        lab = lazy(array)
        layers.append(_layer(lab, f"{name} {label_name}", voxel_size, labels=True))
    return layers


def _read_zarr(path: Path) -> list[LayerData]:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # noqa: BLE001 - re-raised with the path
        raise ValueError(f"{path}: cannot open as zarr ({err})") from err
    name = path.name.split(".")[0]
    if isinstance(node, zarr.Array):
        return [_layer(lazy(node), name, _attr_voxel_size(node.attrs))]
    return _read_group(node, name, path, _attr_voxel_size(node.attrs))


def _read_group(group: Any, name: str, path: Path, voxel_size: list[float] | None) -> list[LayerData]:
    import zarr

    ms = _ome_multiscale(dict(group.attrs))
    if ms is not None:
        return _ome_image_layers(group, name, ms)
    layers: list[LayerData] = []
    for key in sorted(group.array_keys()):
        array = group[key]
        if array.ndim < 2:
            continue
        vs = _attr_voxel_size(array.attrs) or voxel_size
        layers.append(_layer(lazy(array), f"{name} {key}" if name else key, vs))
    for key in sorted(group.group_keys()):
        sub = group[key]
        if isinstance(sub, zarr.Group):
            layers.extend(_read_group(sub, f"{name} {key}", path, _attr_voxel_size(sub.attrs) or voxel_size))
    if not layers and name == path.name.split(".")[0]:
        raise ValueError(f"{path}: zarr group holds no 2D/3D arrays")
    # raw images under labels, so labels draw on top
    return sorted(layers, key=lambda layer: layer[2] == "labels")


# ------------------------------------------------------------------------------------------------ h5 / tif


def _read_volume(path: Path) -> list[LayerData]:
    """A TIFF stack or a folder of section images through :func:`mtbio.data.volumes.open_volume`; label files
    (a label-like name, or sections mixing 1-bit and 8-bit files as VNC III's do) through
    :func:`mtbio.data.labels.open_label_volume` (1-bit, greyscale and RGBA labels read as 0 / 1)."""
    from mtbio.data.errors import VolumeError
    from mtbio.data.labels import open_label_volume
    from mtbio.data.volumes import open_volume

    if _is_label_name(path.stem):
        volume = open_label_volume(path)
    else:
        try:
            volume = open_volume(path)
        except VolumeError as err:
            if "label" not in str(err):
                raise
            volume = open_label_volume(path)
    if volume.dtype == bool:
        return [_layer(lazy(volume), path.stem, volume.voxel_size, labels=True)]
    if volume.axes[-1] == "c":  # RGB(A) sections: napari shows them as colour images
        return [(lazy(volume), {"name": path.stem, "rgb": volume.shape[-1] in (3, 4)}, "image")]
    return [_layer(lazy(volume), path.stem, volume.voxel_size)]


def _read_h5(path: Path) -> list[LayerData]:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: cannot open as HDF5 ({err})") from err
    keys: list[str] = []
    handle.visititems(lambda k, obj: keys.append(k) if isinstance(obj, h5py.Dataset) and obj.ndim >= 2 else None)
    if not keys:
        raise ValueError(f"{path}: HDF5 file holds no 2D/3D datasets")
    layers = []
    for key in keys:
        dset = handle[key]
        vs = _attr_voxel_size(dset.attrs)
        if vs is None and "element_size_um" in dset.attrs:
            vs = [float(v) * 1000.0 for v in dset.attrs["element_size_um"]]
        layers.append(_layer(lazy(dset), f"{path.stem} {key}", vs))
    return sorted(layers, key=lambda layer: layer[2] == "labels")
