"""What every dataset source returns: :class:`DatasetSplit`, plus the shared layout checks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mtbio.data.errors import VolumeError
from mtbio.data.volumes import Volume, check_same_shape

__all__ = ["DatasetSplit", "check_root", "check_split", "require", "make_split"]


@dataclass(frozen=True)
class DatasetSplit:
    """One named split of a public dataset.

    Attributes:
        name: the split name as asked, e.g. ``"train"`` or ``"epfl_test"``.
        image: the lazy ``(Z, Y, X)`` EM volume.
        label: the lazy ``(Z, Y, X)`` bool mitochondria mask, or ``None`` where the release has no public labels.
        voxel_size: nanometres per ``(z, y, x)``.
    """

    name: str
    image: Volume
    label: Volume | None
    voxel_size: tuple[float, float, float]


def check_root(root: str | os.PathLike, dataset: str) -> Path:
    """``root`` as a Path; :class:`VolumeError` when it is not a folder."""
    p = Path(root)
    if not p.is_dir():
        raise VolumeError(p, f"no such folder: expected the root of the {dataset} download (see docs/data.md)")
    return p


def check_split(split: str, splits: Sequence[str], dataset: str) -> None:
    """:class:`ValueError` listing the valid splits when ``split`` is not one of them."""
    if split not in splits:
        raise ValueError(f"unknown {dataset} split {split!r}; the splits are {list(splits)}")


def require(path: Path, what: str, dataset: str) -> Path:
    """``path`` when it exists, else :class:`VolumeError` saying which part of the release layout is missing."""
    if not path.exists():
        raise VolumeError(path, f"missing {what}: is this the root of the {dataset} download (see docs/data.md)?")
    return path


def make_split(name: str, image: Volume, label: Volume | None, voxel_size: Sequence[float]) -> DatasetSplit:
    """A :class:`DatasetSplit` after checking that image and label have the same shape."""
    if label is not None:
        check_same_shape(image, label)
    vz, vy, vx = (float(v) for v in voxel_size)
    return DatasetSplit(name=name, image=image, label=label, voxel_size=(vz, vy, vx))
