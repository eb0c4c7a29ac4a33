"""EPFL hippocampus (Lucchi et al. 2012), original release: the *target* domain of VNC III -> Lucchi.

Download: EPFL CVLab, "Electron Microscopy Dataset" (https://www.epfl.ch/labs/cvlab/data/data-em/): CA1
hippocampus FIB-SEM, two 165 x 768 x 1024 volumes with mitochondria labels. Pass the folder holding::

    root/training.tif                 multi-page TIF, 165 sections, uint8
    root/training_groundtruth.tif     labels, uint8 {0, 255}
    root/testing.tif
    root/testing_groundtruth.tif

Voxel size: 5 nm isotropic (``VOXEL_SIZE = (5, 5, 5)``). Splits: ``"train"`` (training.tif) and ``"test"``
(testing.tif). In the VNC III -> Lucchi protocol, "subset 1" adapts on ``"train"`` (unlabelled) and tests on
``"test"``; "subset 2" swaps them. For the Lucchi++ re-annotated labels see :mod:`mtbio.data.sources.lucchi_pp`.
"""

from __future__ import annotations

import os

from mtbio.data.labels import open_label_volume
from mtbio.data.sources._split import DatasetSplit, check_root, check_split, make_split, require
from mtbio.data.volumes import open_volume

NAME = "Lucchi (EPFL)"
DOWNLOAD = "https://www.epfl.ch/labs/cvlab/data/data-em/"
VOXEL_SIZE = (5.0, 5.0, 5.0)
#: split -> (image file, label file)
SPLITS = {
    "train": ("training.tif", "training_groundtruth.tif"),
    "test": ("testing.tif", "testing_groundtruth.tif"),
}
#: protocol subsets: number -> (split to adapt on, split to test on)
SUBSETS = {1: ("train", "test"), 2: ("test", "train")}


def load_split(root: str | os.PathLike, split: str) -> DatasetSplit:
    """Open one EPFL volume lazily (memory-mapped when the TIF is uncompressed).

    Args:
        root: the folder holding the four TIFs.
        split: ``"train"`` or ``"test"``.

    Returns:
        A :class:`DatasetSplit` with ``(Z, 768, 1024)`` uint8 image and bool label volumes.

    Raises:
        ValueError: unknown split.
        VolumeError: missing or malformed files, or image and label shapes differ.
    """
    check_split(split, list(SPLITS), NAME)
    base = check_root(root, NAME)
    image_name, label_name = SPLITS[split]
    image = open_volume(require(base / image_name, image_name, NAME), voxel_size=VOXEL_SIZE)
    label = open_label_volume(require(base / label_name, label_name, NAME), voxel_size=VOXEL_SIZE)
    return make_split(split, image, label, VOXEL_SIZE)
