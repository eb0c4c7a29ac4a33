"""MitoEM-R (rat) and MitoEM-H (human) (Wei et al., MICCAI 2020): large anisotropic EM volumes with
mitochondria *instance* labels.

Download: https://mitoem.grand-challenge.org/ (one root per volume, MitoEM-R or MitoEM-H).

**Assumed layout (not verifiable offline, so stated here):** the release's image and label archives unpacked
side by side::

    root/im/im0000.png ... im0999.png    per-section EM images (4096 x 4096, uint8), natural order
    root/mito_train.h5                   instance labels of sections 0-399, dataset key "main" (Z, Y, X)
    root/mito_val.h5                     instance labels of the next 100 sections (400-499), key "main"

Instance ids are binarised ``> 0`` (the label rule for integer labels wider than 8 bits; a ``uint8`` file would
follow the ``> 127`` rule instead: see :mod:`mtbio.data.labels`). The section ranges follow the label files:
``"train"`` = the first ``len(mito_train.h5)`` sections of ``im/``, ``"val"`` = the next ``len(mito_val.h5)``,
``"test"`` = every section after those (no public labels: ``label`` is ``None``).

Voxel size: 30 x 8 x 8 nm (``VOXEL_SIZE``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mtbio.data.errors import VolumeError
from mtbio.data.labels import open_label_volume
from mtbio.data.sources._split import DatasetSplit, check_root, check_split, make_split, require
from mtbio.data.volumes import Volume, open_volume

NAME = "MitoEM"
DOWNLOAD = "https://mitoem.grand-challenge.org/"
VOXEL_SIZE = (30.0, 8.0, 8.0)
SPLITS = ("train", "val", "test")
IMAGE_DIR = "im"
LABEL_FILES = {"train": "mito_train.h5", "val": "mito_val.h5"}
LABEL_KEY = "main"


def _labels(base: Path, split: str) -> Volume:
    return open_label_volume(
        require(base / LABEL_FILES[split], LABEL_FILES[split], NAME), LABEL_KEY, voxel_size=VOXEL_SIZE
    )


def load_split(root: str | os.PathLike, split: str) -> DatasetSplit:
    """Open one MitoEM split lazily (image sections are read only when indexed).

    Args:
        root: the MitoEM-R or MitoEM-H folder (layout in the module docstring).
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        A :class:`DatasetSplit`: ``(Z, Y, X)`` uint8 image, bool label (``None`` for ``"test"``).

    Raises:
        ValueError: unknown split.
        VolumeError: missing or malformed files, or too few image sections for the label files.
    """
    check_split(split, SPLITS, NAME)
    base = check_root(root, NAME)
    image = open_volume(require(base / IMAGE_DIR, f"folder {IMAGE_DIR}", NAME), voxel_size=VOXEL_SIZE)
    train = _labels(base, "train")
    start, label = 0, None
    if split in ("val", "test"):
        start = train.shape[0]
        label = _labels(base, "val") if split == "val" else None
        if split == "test":
            start += _labels(base, "val").shape[0]
    else:
        label = train
    stop = start + label.shape[0] if label is not None else image.shape[0]
    if stop > image.shape[0] or start >= stop:
        raise VolumeError(
            base / IMAGE_DIR,
            f"has {image.shape[0]} sections but split {split!r} needs sections {start}-{max(stop, start + 1) - 1}",
        )
    return make_split(split, image.view(np.s_[start:stop]), label, VOXEL_SIZE)
