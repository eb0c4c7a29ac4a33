"""Lucchi++ pooled along z: a *thick-section simulation* of the EPFL hippocampus volumes (anisotropic, ssTEM-like).

The Lucchi++ release (:mod:`mtbio.data.sources.lucchi_pp`, same root folder and layout) holds 5 nm isotropic
FIB-SEM sections. Averaging every ``group`` consecutive sections (:func:`mtbio.data.pooling.pool_z`) gives sections
``5 * group`` nm thick: with the default ``group = 10``, 5 x 5 x 50 nm voxels, close to VNC III's ssTEM
(4.6 x 4.6 x 45-50 nm). It is a simulation, not real ssTEM: no cutting artefacts and no misalignment.

* Image: the mean of each group's sections (``float32``).
* Label: majority, foreground where at least half of the group's sections are (each section read with mtbio's
  label rule first); see :mod:`mtbio.data.pooling` for why majority rather than max.
* The sections after the last complete group are dropped: the EPFL training volume (``Test_*``, 165 sections)
  gives 16 pooled sections from sections 0-159 (160-164 unused); the 40 ``Train_*`` sections give 4.

Splits: those of :mod:`~mtbio.data.sources.lucchi_pp` (``"epfl_train"`` = ``Test_*``, ``"epfl_test"`` =
``Train_*``, and the release's names ``"Test"``, ``"Train"``); a split's ``name`` gets ``_z<group>`` appended.
Voxel size ``(5 * group, 5, 5)`` nm: ``VOXEL_SIZE = (50, 5, 5)`` for the default group.
"""

from __future__ import annotations

import os

from mtbio.data.pooling import Pooling, pool_z
from mtbio.data.sources import lucchi_pp
from mtbio.data.sources._split import DatasetSplit, make_split

NAME = "Lucchi++ z-pooled (thick-section simulation)"
DOWNLOAD = lucchi_pp.DOWNLOAD
#: default sections per pooled section
GROUP = 10
VOXEL_SIZE = (lucchi_pp.VOXEL_SIZE[0] * GROUP, lucchi_pp.VOXEL_SIZE[1], lucchi_pp.VOXEL_SIZE[2])
SPLITS = tuple(lucchi_pp.SPLITS)


def load_split(
    root: str | os.PathLike, split: str, *, group: int = GROUP, label_pooling: Pooling = "majority"
) -> DatasetSplit:
    """Open one Lucchi++ split pooled in groups of ``group`` sections along z, lazily.

    Args:
        root: the Lucchi++ folder (``Test_In``, ``Test_Out``, ``Train_In``, ``Train_Out``).
        split: ``"epfl_train"``, ``"epfl_test"``, ``"Test"`` or ``"Train"``.
        group: thin sections per pooled section (10: 50 nm sections from 5 nm ones).
        label_pooling: ``"majority"`` (default) or ``"max"``.

    Returns:
        A :class:`DatasetSplit` named ``f"{split}_z{group}"``: ``(Z // group, 768, 1024)`` ``float32`` image and
        ``bool`` label :class:`~mtbio.data.pooling.PooledVolume` s, voxel size ``(5 * group, 5, 5)`` nm.

    Raises:
        ValueError: unknown split, ``group`` outside ``1..Z``, or a ``label_pooling`` other than majority / max.
        VolumeError: missing or malformed files, or image and label shapes differ.
    """
    if label_pooling not in ("majority", "max"):
        raise ValueError(f"label_pooling must be 'majority' or 'max', got {label_pooling!r}")
    thin = lucchi_pp.load_split(root, split)
    image = pool_z(thin.image, group)
    label = pool_z(thin.label, group, how=label_pooling)
    return make_split(f"{split}_z{int(group)}", image, label, image.voxel_size)
