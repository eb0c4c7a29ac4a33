"""Drosophila VNC III (Gerhard et al. 2013): the labelled *source* domain of the VNC III -> Lucchi protocol.

Download: figshare, doi:10.6084/m9.figshare.856713, or the repository ``unidesigner/groundtruth-drosophila-vnc``
on GitHub (licence CC BY-NC-SA 3.0: non-commercial use, cite the authors). Pass the folder that holds
``stack1/`` as ``root``::

    root/stack1/raw/00.tif ... 19.tif             20 ssTEM sections, 1024 x 1024, uint8
    root/stack1/mitochondria/00.png ... 19.png    mitochondria masks (01, 07, 18 are 1-bit PNGs; see labels.py)

Voxel size: 4.6 x 4.6 nm in-plane; the sections are 45-50 nm thick, and mtbio uses 50 nm:
``VOXEL_SIZE = (50, 4.6, 4.6)`` nm for ``(z, y, x)``.

Splits: ``"all"`` (sections 0-19), ``"train"`` (sections 0-9) and ``"test"`` (sections 10-19), the split the
literature states for the reverse direction Lucchi -> VNC III.
"""

from __future__ import annotations

import os

import numpy as np

from mtbio.data.labels import open_label_volume
from mtbio.data.sources._split import DatasetSplit, check_root, check_split, make_split, require
from mtbio.data.volumes import open_volume

NAME = "VNC III"
DOWNLOAD = "https://doi.org/10.6084/m9.figshare.856713 (github.com/unidesigner/groundtruth-drosophila-vnc)"
VOXEL_SIZE = (50.0, 4.6, 4.6)
#: split -> section range
SPLITS = {"all": slice(0, 20), "train": slice(0, 10), "test": slice(10, 20)}


def load_split(root: str | os.PathLike, split: str) -> DatasetSplit:
    """Open one split of VNC III lazily.

    Args:
        root: the folder holding ``stack1/``.
        split: ``"all"``, ``"train"`` (sections 0-9) or ``"test"`` (sections 10-19).

    Returns:
        A :class:`DatasetSplit` with ``(Z, 1024, 1024)`` uint8 image and bool label volumes.

    Raises:
        ValueError: unknown split.
        VolumeError: missing or malformed files.
    """
    check_split(split, list(SPLITS), NAME)
    stack = check_root(root, NAME) / "stack1"
    image = open_volume(require(stack / "raw", "folder stack1/raw", NAME), voxel_size=VOXEL_SIZE)
    label = open_label_volume(
        require(stack / "mitochondria", "folder stack1/mitochondria", NAME), voxel_size=VOXEL_SIZE
    )
    sections = SPLITS[split]
    if split != "all":
        if image.shape[0] < sections.stop:
            raise ValueError(
                f"{stack / 'raw'}: has {image.shape[0]} sections; split {split!r} needs sections "
                f"{sections.start}-{sections.stop - 1} (use split 'all' for a partial download)"
            )
        image, label = image.view(np.s_[sections]), label.view(np.s_[sections])
    return make_split(split, image, label, VOXEL_SIZE)
