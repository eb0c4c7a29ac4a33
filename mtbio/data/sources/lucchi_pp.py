"""Lucchi++ (Casser et al. 2018, arXiv:1812.06024): the EPFL hippocampus volumes with re-annotated labels.

Download: the Lucchi++ release of Casser, Kang, Pfister, Haehn, "Fast Mitochondria Detection for Connectomics"
(MIDL 2020 / arXiv:1812.06024; linked from the paper's project page). Cite it and Lucchi et al. Layout::

    root/Test_In/mask0000.png ...     EPFL *training* volume sections (768 x 1024 uint8)
    root/Test_Out/0.png ...           its labels (RGBA, R=G=B in {0, 255}, alpha 255)
    root/Train_In/mask0000.png ...    EPFL *testing* volume sections
    root/Train_Out/0.png ...          its labels (greyscale {0, 255})

Naming quirk of the release: ``Test_*`` is the EPFL training volume and ``Train_*`` the EPFL testing volume.
Splits by meaning: ``"epfl_train"`` = Test_In/Test_Out (the unlabelled target-training data of the protocol;
its labels serve only an oracle row) and ``"epfl_test"`` = Train_In/Train_Out (the target test data). The
release's own names are splits too and mean exactly those folders: ``"Test"`` = ``"epfl_train"``, ``"Train"`` =
``"epfl_test"``.

Protocol subsets (:data:`SUBSETS`): "subset 1" adapts on ``"epfl_train"`` and tests on ``"epfl_test"``;
"subset 2" swaps them. Voxel size: 5 nm isotropic.
"""

from __future__ import annotations

import os

from mtbio.data.labels import open_label_volume
from mtbio.data.sources._split import DatasetSplit, check_root, check_split, make_split, require
from mtbio.data.volumes import open_volume

NAME = "Lucchi++"
DOWNLOAD = "Casser et al. 2018, arXiv:1812.06024 (Lucchi++ release); images from EPFL CVLab"
VOXEL_SIZE = (5.0, 5.0, 5.0)
#: split -> (image folder, label folder)
SPLITS = {
    "epfl_train": ("Test_In", "Test_Out"),
    "epfl_test": ("Train_In", "Train_Out"),
    "Test": ("Test_In", "Test_Out"),
    "Train": ("Train_In", "Train_Out"),
}
#: protocol subsets: number -> (split to adapt on, split to test on)
SUBSETS = {1: ("epfl_train", "epfl_test"), 2: ("epfl_test", "epfl_train")}


def load_split(root: str | os.PathLike, split: str) -> DatasetSplit:
    """Open one Lucchi++ split lazily.

    Args:
        root: the folder holding ``Test_In``, ``Test_Out``, ``Train_In``, ``Train_Out``.
        split: ``"epfl_train"``, ``"epfl_test"``, or the release names ``"Test"`` / ``"Train"``.

    Returns:
        A :class:`DatasetSplit` with ``(Z, 768, 1024)`` uint8 image and bool label volumes.

    Raises:
        ValueError: unknown split.
        VolumeError: missing or malformed files, or image and label shapes differ.
    """
    check_split(split, list(SPLITS), NAME)
    base = check_root(root, NAME)
    image_dir, label_dir = SPLITS[split]
    image = open_volume(require(base / image_dir, f"folder {image_dir}", NAME), voxel_size=VOXEL_SIZE)
    label = open_label_volume(require(base / label_dir, f"folder {label_dir}", NAME), voxel_size=VOXEL_SIZE)
    return make_split(split, image, label, VOXEL_SIZE)
