"""EM data: lazy volumes in any common format, the label rule, literature dataset sources, synthetic domains,
patch sampling and the prediction store.

Importing this package is light: the format libraries (zarr, h5py, tifffile, nibabel, PIL) load on first use.
"""

from __future__ import annotations

from mtbio.data.errors import VolumeError
from mtbio.data.labels import binarize_label, foreground_fraction, open_label_volume, read_label_image
from mtbio.data.sources import SOURCES, DatasetSplit, load_split
from mtbio.data.volumes import Volume, check_same_shape, open_volume

__all__ = [
    "SOURCES",
    "DatasetSplit",
    "Volume",
    "VolumeError",
    "binarize_label",
    "check_same_shape",
    "foreground_fraction",
    "load_split",
    "open_label_volume",
    "open_volume",
    "read_label_image",
]
