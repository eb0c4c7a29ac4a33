"""The data of a bundle run: a labelled source, an unlabelled target and a labelled target test volume.

Every bundle's ``data`` entry builds one :class:`DomainPair` through one of these functions:

* :func:`synthetic_pair`: the built-in synthetic domains (``mtbio.data.synthetic``), generated on first use;
* :func:`em2d_pair`: VNC III <-> Lucchi++ from folders in the public releases' layout (both directions, both
  protocol subsets);
* :func:`em3d_pair`: VNC III <-> Lucchi++ pooled along z to 50 nm sections (a thick-section simulation,
  :mod:`mtbio.data.sources.lucchi_pp_pooled`): a real anisotropic pair for 3D networks, both directions;
* :func:`mitoem_pair`: MitoEM-R -> MitoEM-H style volume pairs (one release folder per volume);
* :func:`volume_pair`: any volumes given as ``PATH`` or ``PATH:KEY`` (h5 / zarr / tif / PNG folders).

Volumes stay lazy (:class:`mtbio.data.volumes.Volume`) until a sampler or the inferer reads them. The voxel
sizes are recorded in the pair; :meth:`DomainPair.on_training_grid` brings the source to the target's voxel size
(lazily, :func:`mtbio.data.resample.training_grid`) when both are known and differ by more than 10 % on the
network's axes, which :func:`mtbio.bundle.workflow.train` does by default. Crops, mask blocks and inference windows
are in voxels of the training grid (:meth:`DomainPair.grid_voxel_size`); :func:`block_in_voxels` and
:func:`patch_in_voxels` turn physical sizes in nm into per-axis voxels for anisotropic volumes; a training run
left at ``UDAConfig.block_size=None`` sizes its mask blocks itself (:mod:`mtbio.uda.blocks`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "DIRECTIONS",
    "EM3D_DIRECTIONS",
    "DomainPair",
    "block_in_voxels",
    "em2d_pair",
    "em3d_pair",
    "mitoem_pair",
    "open_spec",
    "patch_in_voxels",
    "synthetic_pair",
    "volume_pair",
]

#: the 2D protocol's directions
DIRECTIONS = ("vnc3_to_lucchi", "lucchi_to_vnc3")
#: the directions of the anisotropic 3D pair (VNC III and the z-pooled Lucchi++)
EM3D_DIRECTIONS = ("vnc3_to_lucchi_pooled", "lucchi_pooled_to_vnc3")


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

    def grid_voxel_size(self, default: Sequence[float] | None = None) -> tuple[float, ...] | None:
        """The ``(z, y, x)`` voxel size in nm of the training grid (:func:`mtbio.data.resample.training_grid`): the
        target's when known, else the source's, else ``default`` (crops, mask blocks and inference windows are in
        voxels of this grid)."""
        vs = dict(self.voxel_size or {})
        for chosen in (vs.get("target"), vs.get("source"), default):
            if chosen is not None:
                return tuple(float(v) for v in chosen)
        return None

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


def em3d_pair(
    dataset_dir: str | os.PathLike,
    *,
    direction: str = "vnc3_to_lucchi_pooled",
    group: int = 10,
    subset: int = 1,
    lucchi_test_split: str = "epfl_train",
    label_pooling: str = "majority",
) -> DomainPair:
    """VNC III (ssTEM, 50 x 4.6 x 4.6 nm) <-> Lucchi++ pooled along z (a thick-section simulation, 50 x 5 x 5 nm for
    ``group`` 10; :mod:`mtbio.data.sources.lucchi_pp_pooled`) from ``dataset_dir`` holding ``vnc3/`` and
    ``lucchi_pp/`` (the releases' layouts): an anisotropic pair for 3D networks.

    * ``vnc3_to_lucchi_pooled``: source VNC III ``stack1`` (all 20 sections, labelled); target = the pooled EPFL
      training volume (Lucchi++ ``Test_*``: 165 sections -> 16 pooled sections from sections 0-159), unlabelled for
      adaptation; test = ``lucchi_test_split`` pooled: ``"epfl_train"`` (default) tests on the very volume adapted on,
      with its labels (*transductive*: the 40 ``Train_*`` sections of ``../shared/data`` pool to only 4 sections),
      ``"epfl_test"`` on the pooled EPFL testing volume (``Train_*``; 16 pooled sections in the full release).
    * ``lucchi_pooled_to_vnc3``: source the pooled EPFL training volume (16 labelled sections); as
      :func:`em2d_pair`'s reverse direction, subset 1 adapts on VNC III sections 0-9 and tests on 10-19 (held out),
      subset 2 swaps them.

    Args:
        dataset_dir: folder holding ``vnc3/`` and ``lucchi_pp/``.
        direction: one of :data:`EM3D_DIRECTIONS`.
        group: Lucchi++ sections (5 nm) per pooled section.
        subset: 1 or 2 (``lucchi_pooled_to_vnc3`` only).
        lucchi_test_split: ``"epfl_train"`` or ``"epfl_test"`` (``vnc3_to_lucchi_pooled`` only).
        label_pooling: ``"majority"`` or ``"max"`` (:mod:`mtbio.data.pooling`).

    Raises:
        ValueError: unknown direction, subset or test split; a group that does not fit the volumes.
        VolumeError: missing release folders.
    """
    from mtbio.data.sources import load_split
    from mtbio.data.sources import lucchi_pp_pooled as pooled

    if direction not in EM3D_DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of {list(EM3D_DIRECTIONS)}")
    if subset not in (1, 2):
        raise ValueError(f"subset must be 1 or 2, got {subset!r}")
    if lucchi_test_split not in ("epfl_train", "epfl_test"):
        raise ValueError(f"lucchi_test_split must be 'epfl_train' or 'epfl_test', got {lucchi_test_split!r}")
    root = Path(dataset_dir)

    if label_pooling not in ("majority", "max"):
        raise ValueError(f"label_pooling must be 'majority' or 'max', got {label_pooling!r}")
    how_labels: Literal["majority", "max"] = "majority" if label_pooling == "majority" else "max"

    def lucchi_split(split: str) -> Any:
        return pooled.load_split(root / "lucchi_pp", split, group=group, label_pooling=how_labels)

    lucchi = lucchi_split("epfl_train")
    if direction == "vnc3_to_lucchi_pooled":
        source, adapt = load_split("vnc3", root / "vnc3", "all"), lucchi
        test = lucchi if lucchi_test_split == "epfl_train" else lucchi_split("epfl_test")
        names = ("VNC III all", f"Lucchi++ {adapt.name}", f"Lucchi++ {test.name}")
        how = "transductive: the volume adapted on" if test is adapt else "held out"
    else:
        source = lucchi
        splits = ("train", "test") if subset == 1 else ("test", "train")
        adapt, test = (load_split("vnc3", root / "vnc3", s) for s in splits)
        names = (f"Lucchi++ {source.name}", f"VNC III {adapt.name}", f"VNC III {test.name}")
        how = f"held out, subset {subset}"
    description = (
        f"{direction}: source {names[0]}, adapt on {names[1]}, test on {names[2]} ({how}); Lucchi++ = mean of "
        f"{group} sections along z, {label_pooling} labels: a thick-section simulation ({root})"
    )
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


def _per_axis(
    size_nm: float | Sequence[float], voxel_size: Sequence[float] | None, what: str
) -> list[tuple[float, float]]:
    """``[(nm, voxel nm), ...]`` per axis, checked."""
    if voxel_size is None:
        raise ValueError(
            f"{what}: the voxel size is unknown (the data records none): give the size in voxels instead "
            "(e.g. the bundle's crop_size / block_size / roi_size), or data with a voxel size"
        )
    vs = [float(v) for v in voxel_size]
    nm = [float(size_nm)] * len(vs) if isinstance(size_nm, int | float) else [float(v) for v in size_nm]
    if not vs or len(nm) != len(vs) or any(v <= 0 for v in (*vs, *nm)):
        raise ValueError(f"{what}: sizes and voxel_size must be positive, one per axis; got {size_nm}, {voxel_size}")
    return list(zip(nm, vs))


def block_in_voxels(block_nm: float | Sequence[float], voxel_size: Sequence[float] | None) -> tuple[int, ...]:
    """A mask block of ``block_nm`` nanometres (one value for every axis, or one per axis) as voxels per axis
    (rounded, at least 1), for anisotropic data.

    >>> block_in_voxels(256, (30, 8, 8))   # MitoEM: 30 x 8 x 8 nm voxels
    (9, 32, 32)
    >>> block_in_voxels((100, 160, 160), (50, 5, 5))   # VNC III / pooled Lucchi++: 50 x 5 x 5 nm
    (2, 32, 32)

    Raises:
        ValueError: non-positive sizes, a length mismatch, or an unknown (``None``) voxel size.
    """
    return tuple(max(1, round(nm / v)) for nm, v in _per_axis(block_nm, voxel_size, "block size"))


def patch_in_voxels(
    patch_nm: float | Sequence[float], voxel_size: Sequence[float] | None, *, multiple: int | Sequence[int] = 1
) -> tuple[int, ...]:
    """A training patch / inference window of ``patch_nm`` nanometres per axis as voxels per axis, rounded to the
    nearest multiple of ``multiple`` (what the network's strides need, e.g. ``(4, 8, 8)`` for strides
    ``[(1, 2, 2), 2, 2]``), at least one multiple.

    >>> patch_in_voxels((400, 640, 640), (50, 5, 5), multiple=(4, 8, 8))
    (8, 128, 128)
    >>> patch_in_voxels((400, 640, 640), (50, 4.6, 4.6), multiple=(4, 8, 8))   # 139 px -> 136
    (8, 136, 136)

    Raises:
        ValueError: non-positive sizes or multiples, a length mismatch, or an unknown (``None``) voxel size.
    """
    axes = _per_axis(patch_nm, voxel_size, "patch size")
    mult = [int(multiple)] * len(axes) if isinstance(multiple, int) else [int(m) for m in multiple]
    if len(mult) != len(axes) or any(m < 1 for m in mult):
        raise ValueError(f"multiple must be >= 1, one per axis, got {multiple}")
    return tuple(m * max(1, round(nm / v / m)) for (nm, v), m in zip(axes, mult))
