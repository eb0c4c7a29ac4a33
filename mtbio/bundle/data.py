"""The data of a bundle run: a labelled source, an unlabelled target and a labelled target test volume.

Every bundle's ``data`` entry builds one :class:`DomainPair` through one of these functions:

* :func:`synthetic_pair`: the built-in synthetic domains (``mtbio.data.synthetic``), generated on first use;
* :func:`em2d_pair`: VNC III <-> Lucchi++ from folders in the public releases' layout (both directions, both
  protocol subsets);
* :func:`mitoem_pair`: MitoEM-R -> MitoEM-H style volume pairs (one release folder per volume);
* :func:`volume_pair`: any volumes given as ``PATH`` or ``PATH:KEY`` (h5 / zarr / tif / PNG folders).

Volumes stay lazy (:class:`mtbio.data.volumes.Volume`) until a sampler or the inferer reads them. The voxel
sizes are recorded in the pair; :meth:`DomainPair.on_training_grid` brings the source to the target's voxel size
(lazily, :func:`mtbio.data.resample.training_grid`) when both are known and differ by more than 10 % on the
network's axes, which :func:`mtbio.bundle.workflow.train` does by default. Crops, mask blocks and inference windows
are in voxels of the training grid; mask blocks left at ``block_size: null`` follow the data's scale
(:mod:`mtbio.uda.blocks`), and :func:`block_in_voxels` turns a physical mask block size into per-axis voxels for a
bundle that sets its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DIRECTIONS",
    "DomainPair",
    "block_in_voxels",
    "em2d_pair",
    "mitoem_pair",
    "open_spec",
    "synthetic_pair",
    "volume_pair",
]

#: the 2D protocol's directions
DIRECTIONS = ("vnc3_to_lucchi", "lucchi_to_vnc3")


@dataclass
class DomainPair:
    """The volumes of one adaptation setting, each ``(Z, Y, X)``.

    Attributes:
        source_image: labelled source EM volume.
        source_label: its binary mitochondria labels.
        target_image: unlabelled target volume the student adapts on.
        target_label: labels of ``target_image``, read only by the ``oracle`` strategy (``None`` when absent).
        test_image: held-out target volume the bundle predicts and evaluates.
        test_label: its labels (``None``: inference only, no evaluation).
        voxel_size: ``{"source": (z, y, x), "target": (z, y, x)}`` in nm (``None`` where unknown).
        description: one line naming the setting (recorded in the run's config).
    """

    source_image: Any
    source_label: Any
    target_image: Any
    target_label: Any = None
    test_image: Any = None
    test_label: Any = None
    voxel_size: dict[str, Any] | None = None
    description: str = ""

    @classmethod
    def from_splits(cls, source: Any, target: Any, test: Any, description: str) -> DomainPair:
        """A pair from three loaded splits (:func:`mtbio.data.sources.load_split` results: ``image``, ``label``,
        ``voxel_size``): labelled source, target to adapt on (its labels for the oracle) and labelled test."""
        return cls(
            source_image=source.image,
            source_label=source.label,
            target_image=target.image,
            target_label=target.label,
            test_image=test.image,
            test_label=test.label,
            voxel_size={"source": source.voxel_size, "target": target.voxel_size},
            description=description,
        )

    def on_training_grid(self, spatial_dims: int, *, resample: bool = True) -> tuple[DomainPair, Any]:
        """This pair with the source resampled to the target's voxel size on the network's axes (see
        :func:`mtbio.data.resample.training_grid`) and the :class:`~mtbio.data.resample.TrainingGrid` (its
        ``voxel_size`` and ``note``). The test volume is the target's and stays as it is."""
        from dataclasses import replace

        from mtbio.data.resample import training_grid

        vs = dict(self.voxel_size or {})
        grid = training_grid(
            self.source_image,
            self.source_label,
            self.target_image,
            self.target_label,
            spatial_dims=spatial_dims,
            source_voxel_size=vs.get("source"),
            target_voxel_size=vs.get("target"),
            resample=resample,
        )
        pair = replace(self, source_image=grid.source_image, source_label=grid.source_label)
        return pair, grid


def _rank_zero_first(make: Any) -> Any:
    """``make()`` on rank 0 first, then on the other ranks of an initialised ``torch.distributed`` group (which
    then reuse what rank 0 wrote); just ``make()`` in a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return make()
    result = make() if dist.get_rank() == 0 else None
    dist.barrier()
    return result if result is not None else make()


def _voxel(volume: Any) -> tuple[float, ...] | None:
    vs = getattr(volume, "voxel_size", None)
    return None if vs is None else tuple(float(v) for v in vs)


def open_spec(spec: str | os.PathLike | None, *, label: bool = False) -> Any:
    """Open ``PATH`` or ``PATH:KEY`` (the HDF5 dataset / zarr array inside ``PATH``) lazily as ``(Z, Y, X)``.

    The key is split off at the last ``:`` only when ``spec`` itself does not exist. Labels go through the
    project's label rule (:func:`mtbio.data.labels.open_label_volume`). ``None`` gives ``None``.

    Raises:
        ValueError: a volume that is not 3D.
    """
    from mtbio.data.labels import open_label_volume
    from mtbio.data.volumes import open_volume

    if spec is None:
        return None
    text = os.fspath(spec)
    key = None
    if not Path(text).exists() and ":" in text:
        text, key = text.rsplit(":", 1)
    volume = open_label_volume(text, key or None) if label else open_volume(text, key or None)
    if len(volume.shape) != 3:
        raise ValueError(f"{spec}: expected a (Z, Y, X) volume, got shape {tuple(volume.shape)}")
    return volume


def synthetic_pair(data_dir: str | os.PathLike, *, seed: int = 0, shape: Sequence[int] = (32, 256, 256)) -> DomainPair:
    """The synthetic source (ssTEM-like, labelled) / target (FIB-SEM-like) domains, generated into ``data_dir``
    on first use (:func:`mtbio.data.synthetic.generate_synthetic`; a complete folder is reused).

    Args:
        data_dir: folder of the synthetic volumes.
        seed: generator seed (source ``seed``, target ``seed + 1``, held-out target another seed).
        shape: ``(Z, Y, X)`` of every volume.
    """
    from mtbio.data.synthetic import generate_synthetic

    def make() -> dict[str, Path]:
        return generate_synthetic(Path(data_dir), seed=int(seed), shape=tuple(int(s) for s in shape), progress=False)

    paths = _rank_zero_first(make)
    source = open_spec(f"{paths['source']}:raw")
    target = open_spec(f"{paths['target']}:raw")
    return DomainPair(
        source_image=source,
        source_label=open_spec(f"{paths['source']}:label", label=True),
        target_image=target,
        target_label=open_spec(f"{paths['target_labels']}:label", label=True),
        test_image=open_spec(f"{paths['target_test']}:raw"),
        test_label=open_spec(f"{paths['target_test_labels']}:label", label=True),
        voxel_size={"source": _voxel(source), "target": _voxel(target)},
        description=f"synthetic source -> target, seed {seed}, shape {list(shape)}",
    )


def em2d_pair(dataset_dir: str | os.PathLike, *, direction: str = "vnc3_to_lucchi", subset: int = 1) -> DomainPair:
    """VNC III <-> Lucchi++ from ``dataset_dir`` holding ``vnc3/`` and ``lucchi_pp/`` (the releases' layouts).

    ``vnc3_to_lucchi`` (the paper's setting): source VNC III ``stack1`` (all sections); subset 1 adapts on the
    EPFL training volume (Lucchi++ ``Test_*``) and tests on the EPFL testing volume (``Train_*``), subset 2 swaps
    them. ``lucchi_to_vnc3`` (reverse): source the EPFL training volume (``Test_*``); subset 1 adapts on VNC III
    sections 0-9 and tests on sections 10-19, subset 2 swaps them.

    Raises:
        ValueError: unknown direction or subset.
        VolumeError: missing release folders.
    """
    from mtbio.data.sources import load_split
    from mtbio.data.sources.lucchi_pp import SUBSETS

    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of {list(DIRECTIONS)}")
    if subset not in (1, 2):
        raise ValueError(f"subset must be 1 or 2, got {subset!r}")
    root = Path(dataset_dir)
    if direction == "vnc3_to_lucchi":
        source = load_split("vnc3", root / "vnc3", "all")
        adapt, test = (load_split("lucchi_pp", root / "lucchi_pp", s) for s in SUBSETS[subset])
    else:
        source = load_split("lucchi_pp", root / "lucchi_pp", "epfl_train")
        splits = ("train", "test") if subset == 1 else ("test", "train")
        adapt, test = (load_split("vnc3", root / "vnc3", s) for s in splits)
    description = f"{direction} subset {subset}: adapt on {adapt.name}, test on {test.name} ({root})"
    return DomainPair.from_splits(source, adapt, test, description)


def mitoem_pair(source_root: str | os.PathLike, target_root: str | os.PathLike) -> DomainPair:
    """A MitoEM-R -> MitoEM-H style pair: source = ``train`` split of ``source_root`` (labelled), target =
    ``train`` split of ``target_root`` (its labels only for the oracle), test = ``val`` split of ``target_root``
    (layout: :mod:`mtbio.data.sources.mitoem`)."""
    from mtbio.data.sources import load_split

    source = load_split("mitoem", source_root, "train")
    target = load_split("mitoem", target_root, "train")
    test = load_split("mitoem", target_root, "val")
    return DomainPair.from_splits(source, target, test, f"MitoEM {source_root} -> {target_root}")


def volume_pair(
    *,
    source: str,
    source_label: str,
    target: str,
    test: str | None = None,
    test_label: str | None = None,
    target_label: str | None = None,
) -> DomainPair:
    """Any volumes, each ``PATH`` or ``PATH:KEY`` (:func:`open_spec`); ``test`` defaults to ``target``."""
    src = open_spec(source)
    tgt = open_spec(target)
    return DomainPair(
        source_image=src,
        source_label=open_spec(source_label, label=True),
        target_image=tgt,
        target_label=open_spec(target_label, label=True),
        test_image=open_spec(test) if test is not None else tgt,
        test_label=open_spec(test_label, label=True),
        voxel_size={"source": _voxel(src), "target": _voxel(tgt)},
        description=f"{source} -> {target}",
    )


def block_in_voxels(block_nm: float, voxel_size: Sequence[float]) -> tuple[int, ...]:
    """A mask block of ``block_nm`` nanometres per axis as voxels per axis (at least 1), for anisotropic data
    (:func:`mtbio.uda.blocks.nm_to_voxels`; a training run does this itself for ``UDAConfig.block_size=None``).

    >>> block_in_voxels(256, (30, 8, 8))   # MitoEM: 30 x 8 x 8 nm voxels
    (9, 32, 32)
    """
    from mtbio.uda.blocks import nm_to_voxels

    return nm_to_voxels(block_nm, voxel_size)
