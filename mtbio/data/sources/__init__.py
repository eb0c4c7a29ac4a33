"""Public EM mitochondria datasets laid out as their releases: one module per dataset, one registry.

Each module maps a user-given root folder to named :class:`DatasetSplit` s of lazy image / label volumes;
``docs/data.md`` says where to download each one.

>>> from mtbio.data.sources import load_split
>>> split = load_split("lucchi_pp", "/data/lucchi_pp", "epfl_test")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from mtbio.data.sources import lucchi, lucchi_pp, lucchi_pp_pooled, mitoem, vnc3
from mtbio.data.sources._split import DatasetSplit

__all__ = ["DatasetSplit", "SourceInfo", "SOURCES", "load_split"]


@dataclass(frozen=True)
class SourceInfo:
    """One registered dataset.

    Attributes:
        name: human-readable name.
        splits: the split names :attr:`load_split` accepts.
        voxel_size: nanometres per ``(z, y, x)``.
        download: where to get it.
        load_split: ``(root, split) -> DatasetSplit``.
    """

    name: str
    splits: tuple[str, ...]
    voxel_size: tuple[float, float, float]
    download: str
    load_split: Callable[[str | os.PathLike, str], DatasetSplit]


SOURCES: dict[str, SourceInfo] = {
    key: SourceInfo(
        name=module.NAME,
        splits=tuple(module.SPLITS),
        voxel_size=module.VOXEL_SIZE,
        download=module.DOWNLOAD,
        load_split=module.load_split,
    )
    for key, module in (
        ("vnc3", vnc3),
        ("lucchi", lucchi),
        ("lucchi_pp", lucchi_pp),
        ("lucchi_pp_pooled", lucchi_pp_pooled),
        ("mitoem", mitoem),
    )
}


def load_split(source: str, root: str | os.PathLike, split: str) -> DatasetSplit:
    """Open split ``split`` of dataset ``source`` (a key of :data:`SOURCES`) found under ``root``.

    Raises:
        ValueError: unknown source (the message lists them) or unknown split (it lists the splits).
        VolumeError: the files under ``root`` are missing or malformed.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown dataset source {source!r}; the sources are {list(SOURCES)}")
    return SOURCES[source].load_split(root, split)
