"""The one weights record: a versioned file of plain types that every mtbio writer produces and every reader accepts.

A weights file holds the EMA teacher's (and the student's) ``state_dict`` plus everything needed to use them on new
data: the network (an :func:`mtbio.networks.get_network` name with its keyword arguments, or only the class name
for a network built elsewhere, e.g. a bundle's ``network_def``), the training voxel size, the input normalisation,
the UDA configuration and the provenance (source and target data, the parent model it was adapted from, the code
version). It is a dict of tensors, strings, numbers, lists, dicts and ``None`` only, so
``torch.load(path, weights_only=True)`` reads it: **no user file is ever unpickled with code execution.**

:func:`read_weights` accepts, besides the current record (``format == "mtbio.weights"``):

* version-1 files (``{"teacher", "student", "iteration", "meta"}``, written by ``mtbio train``, the benchmarks and
  the bundle workflow before the record existed; the bundle stored ``type(network).__name__`` as ``meta["network"]``);
* MONAI ``CheckpointSaver`` training checkpoints (``checkpoint_iteration=N.pt``: ``student``, ``teacher`` with its
  ``module.`` prefix, ``optimizer``, ``trainer``);
* a plain ``state_dict`` (a bundle's ``models/model.pt``), or one under ``state_dict`` / ``model`` / ``network``.

Fields a file does not carry read as their documented defaults (``voxel_size=None``: unknown, used as it is;
``normalization=None``: the rule of the network's dimensionality, per section for 2D and per volume for 3D).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "WEIGHTS_FORMAT",
    "WEIGHTS_VERSION",
    "WeightsError",
    "WeightsRecord",
    "read_weights",
    "record_from_meta",
    "write_weights",
]

WEIGHTS_FORMAT = "mtbio.weights"
WEIGHTS_VERSION = 2
_CONTAINER_KEYS = ("state_dict", "model", "network")


class WeightsError(ValueError):
    """A weights file could not be read or does not fit; the message starts with the file."""

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{self.path}: {problem}")


@dataclass
class WeightsRecord:
    """One trained network and what is needed to use it (every field a plain type).

    Attributes:
        teacher: the EMA teacher's ``state_dict`` (the weights used for prediction).
        student: the student's ``state_dict`` (``None`` where the file had only one set of weights).
        network: :func:`mtbio.networks.get_network` name, or ``None`` for a network built elsewhere.
        network_class: ``type(network).__qualname__`` (informative; checked against ``network`` when both are set).
        spatial_dims: 2 or 3 (``None`` when unknown, e.g. a bare ``state_dict``).
        network_kwargs: keyword arguments of :func:`~mtbio.networks.get_network`.
        iteration: training iterations done.
        strategy: the UDA strategy that trained it (``"masktwins"``, ``"source_only"``, ...).
        seed: the run's seed.
        crop: the training crop size in voxels.
        config: ``UDAConfig.to_dict()`` of the run.
        voxel_size: the voxel size (nm) of the training data, one value per spatial axis of the network
            (``(y, x)`` for 2D, ``(z, y, x)`` for 3D); ``None`` = unknown.
        normalization: the input normalisation the network was trained with (``"zscore_section"``,
            ``"zscore"`` per volume; earlier files may say ``"zscore_volume"``, read as ``"zscore"``); ``None`` = the
            default rule for ``spatial_dims``.
        provenance: where it comes from: ``source`` / ``target`` (data descriptions), ``parent`` (the weights it
            started from), ``git``, ``mtbio_version``, ``created`` (UTC ISO time) and anything a writer adds.
        context_sections: 2.5D input of a 2D network: ``k`` adjacent sections on each side as further input
            channels (``1 + 2k``, :mod:`mtbio.data.context`); 0 (also for files written before the field) = one
            channel. :meth:`build_network` builds the network with ``1 + 2k`` input channels and marks it
            (:func:`mtbio.networks.context.with_context`), and every prediction path reads it from there.
        extra: further plain values a writer keeps (iterations of a pre-training, seconds per iteration, ...).
        version: the record's format version read from the file (:data:`WEIGHTS_VERSION` when written now).
    """

    teacher: dict[str, torch.Tensor]
    student: dict[str, torch.Tensor] | None = None
    network: str | None = None
    network_class: str | None = None
    spatial_dims: int | None = None
    network_kwargs: dict[str, Any] = field(default_factory=dict)
    iteration: int = 0
    strategy: str | None = None
    seed: int | None = None
    crop: list[int] | None = None
    config: dict[str, Any] | None = None
    voxel_size: list[float] | None = None
    normalization: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    context_sections: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = WEIGHTS_VERSION

    def __post_init__(self) -> None:
        if self.spatial_dims is not None and self.spatial_dims not in (2, 3):
            raise WeightsError(None, f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.voxel_size is not None:
            self.voxel_size = [float(v) for v in self.voxel_size]
            if self.spatial_dims is not None and len(self.voxel_size) != self.spatial_dims:
                raise WeightsError(
                    None, f"voxel_size {self.voxel_size} needs one value per spatial axis ({self.spatial_dims})"
                )
            if any(not v > 0 for v in self.voxel_size):
                raise WeightsError(None, f"voxel_size must be > 0, got {self.voxel_size}")
        if self.crop is not None:
            self.crop = [int(c) for c in self.crop]
        k = self.context_sections
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise WeightsError(None, f"context_sections must be an int >= 0, got {k!r}")
        if k and self.spatial_dims == 3:
            raise WeightsError(None, f"context_sections {k} (adjacent sections as channels) is for 2D networks")

    @classmethod
    def from_network(cls, module: torch.nn.Module, /, **kwargs: Any) -> WeightsRecord:
        """A record of ``module``'s weights (as teacher; ``student`` only when passed), with ``network_class`` set."""
        state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        kwargs.setdefault("network_class", type(module).__qualname__)
        return cls(teacher=state, **kwargs)

    def to_payload(self) -> dict[str, Any]:
        """The file's content: a dict of plain types and tensors (what :func:`write_weights` saves)."""
        payload: dict[str, Any] = {"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION}
        for f in fields(self):
            if f.name != "version":
                payload[f.name] = _plain(getattr(self, f.name))
        return payload

    def build_network(self, path: str | os.PathLike | None = None) -> torch.nn.Module:
        """The network with the teacher's weights, in eval mode.

        Raises:
            WeightsError: the record names no mtbio network (load it into the bundle's ``network_def`` with
                :meth:`load_into` instead), or the weights do not fit.
        """
        if self.network is None or self.spatial_dims is None:
            raise WeightsError(
                path,
                f"the file names no mtbio network (class {self.network_class or 'unknown'}); load it into a "
                "network you build (a bundle's network_def, or mtbio predict --network NAME)",
            )
        from mtbio.networks import get_network
        from mtbio.networks.context import with_context

        kwargs = dict(self.network_kwargs)
        kwargs.setdefault("in_channels", 1 + 2 * self.context_sections)
        net = get_network(self.network, self.spatial_dims, **kwargs)
        return with_context(self.load_into(net, path), self.context_sections).eval()

    def load_into(self, network: torch.nn.Module, path: str | os.PathLike | None = None) -> torch.nn.Module:
        """Load the teacher's weights into ``network`` strictly and mark it with the record's ``context_sections``
        (:func:`mtbio.networks.context.with_context`).

        Raises:
            WeightsError: they do not fit (a different network, spatial dimensionality or channels), naming the file;
                input channels that differ (e.g. a 2.5D network's weights in a one-channel network) are named.
        """
        from mtbio.networks.context import with_context

        mine, theirs = _first_conv_channels(self.teacher, network.state_dict())
        if mine != theirs:
            raise WeightsError(
                path,
                f"the weights take {mine} input channel(s) (context_sections {self.context_sections}: the section "
                f"and {self.context_sections} adjacent section(s) on each side), the network {theirs}; build the "
                f"network with in_channels={mine} (or from the file: WeightsRecord.build_network)",
            )
        try:
            network.load_state_dict(self.teacher, strict=True)
        except RuntimeError as err:
            detail = " ".join(str(err).split())
            detail = detail if len(detail) <= 300 else detail[:300] + " ..."
            what = self.network or self.network_class or "unknown"
            raise WeightsError(
                path,
                f"weights of a {what!r} network ({self.spatial_dims or '?'}D) do not fit {type(network).__name__} "
                f"({detail})",
            ) from err
        return with_context(network, self.context_sections)


def write_weights(record: WeightsRecord, path: str | os.PathLike) -> Path:
    """Save ``record`` atomically (a temporary file in the same folder, then ``os.replace``); fills
    ``provenance["created"]`` and ``provenance["mtbio_version"]`` when absent.

    Returns:
        the path written.
    """
    import mtbio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record.provenance.setdefault("mtbio_version", mtbio.__version__)
    record.provenance.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(record.to_payload(), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_weights(path: str | os.PathLike) -> WeightsRecord:
    """Read any mtbio weights file (see the module docstring) with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: no such file.
        WeightsError: not a torch file, a file that needs code execution to load (refused), or no weights in it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the path
        msg = " ".join(str(err).split())
        if "weights_only" in msg or "Unsupported global" in msg or "GLOBAL" in msg:
            raise WeightsError(
                path,
                "holds Python objects beyond tensors and plain values; mtbio loads weights only with "
                "torch.load(weights_only=True) and never runs code from a file (re-save it as a state_dict)",
            ) from err
        raise WeightsError(path, f"not a readable torch weights file ({msg[:200]})") from err
    return _record_from_payload(payload, path)


def _record_from_payload(payload: Any, path: Path) -> WeightsRecord:
    if not isinstance(payload, Mapping):
        raise WeightsError(path, f"holds a {type(payload).__name__}, not a dict of weights")
    if payload.get("format") == WEIGHTS_FORMAT:
        version = int(payload.get("version", 0))
        if version > WEIGHTS_VERSION:
            raise WeightsError(
                path,
                f"weights record version {version} is newer than this mtbio reads ({WEIGHTS_VERSION}); upgrade mtbio",
            )
        known = {f.name for f in fields(WeightsRecord)} - {"version"}
        values = {k: v for k, v in payload.items() if k in known}
        values["extra"] = {
            **dict(values.get("extra") or {}),
            **{k: v for k, v in payload.items() if k not in known and k not in ("format", "version")},
        }
        _check_state(values.get("teacher"), path, "teacher")
        return WeightsRecord(**values, version=version)
    if "meta" in payload and "teacher" in payload:  # version 1: save_weights before the record
        return _from_v1(payload, path)
    if "teacher" in payload and "trainer" in payload:  # a MONAI CheckpointSaver training checkpoint
        teacher = _strip_prefix(payload["teacher"], "module.")
        student = payload.get("student")
        trainer = payload.get("trainer") or {}
        return WeightsRecord(
            teacher=_check_state(teacher, path, "teacher"),
            student=_check_state(student, path, "student") if student is not None else None,
            iteration=int(trainer.get("iteration", 0)) if isinstance(trainer, Mapping) else 0,
            extra={"checkpoint": True},
            version=0,
        )
    state: Any = payload
    for key in _CONTAINER_KEYS:
        if key in payload and isinstance(payload[key], Mapping):
            state = payload[key]
            break
    return WeightsRecord(teacher=_check_state(state, path, "state_dict"), version=0)


def record_from_meta(
    teacher: Mapping[str, torch.Tensor],
    student: Mapping[str, torch.Tensor] | None,
    iteration: int,
    meta: Mapping[str, Any],
    *,
    path: str | os.PathLike | None = None,
    version: int = WEIGHTS_VERSION,
) -> WeightsRecord:
    """A record from weights and a flat ``meta`` dict of plain values (the version-1 layout that ``mtbio train``,
    the benchmarks and the bundle workflow write): known keys become fields (``network`` when it names an mtbio
    network, else ``network_class``; ``git`` and ``init_weights``/``parent`` go to ``provenance``; ``source`` /
    ``target`` / ``data`` too), the rest goes to ``extra``."""
    from mtbio.networks import NETWORKS

    meta = dict(meta)
    name = meta.pop("network", None)
    network, network_class = (name, meta.pop("network_class", None)) if name in NETWORKS else (None, name)
    provenance = dict(meta.pop("provenance", None) or {})
    for key in ("git", "source", "target", "data", "parent"):
        if key in meta:
            provenance[key] = meta.pop(key)
    if "init_weights" in meta:
        provenance["parent"] = meta.pop("init_weights")
    where = None if path is None else Path(path)
    return WeightsRecord(
        teacher=_check_state(teacher, where, "teacher"),
        student=_check_state(student, where, "student") if student is not None else None,
        network=network,
        network_class=network_class,
        spatial_dims=meta.pop("spatial_dims", None),
        network_kwargs=dict(meta.pop("network_kwargs", None) or {}),
        iteration=int(iteration),
        strategy=meta.pop("strategy", None),
        seed=meta.pop("seed", None),
        crop=meta.pop("crop", None),
        config=meta.pop("config", None),
        voxel_size=meta.pop("voxel_size", None),
        normalization=meta.pop("normalization", None),
        provenance=provenance,
        context_sections=int(meta.pop("context_sections", 0) or 0),
        extra=_plain(meta),
        version=version,
    )


def _from_v1(payload: Mapping[str, Any], path: Path) -> WeightsRecord:
    return record_from_meta(
        payload["teacher"],
        payload.get("student"),
        int(payload.get("iteration", 0)),
        payload.get("meta") or {},
        path=path,
        version=1,
    )


def _first_conv_channels(
    state: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor]
) -> tuple[int | None, int | None]:
    """Input channels of the first convolution weight of ``state`` and of the same weight in ``other`` (``(None,
    None)`` when ``other`` has no such weight with the same output channels and kernel)."""
    for name, tensor in state.items():
        if name.endswith("weight") and tensor.ndim >= 3:
            theirs = other.get(name)
            if theirs is None or theirs.ndim != tensor.ndim:
                return None, None
            if theirs.shape[0] != tensor.shape[0] or theirs.shape[2:] != tensor.shape[2:]:
                return None, None
            return int(tensor.shape[1]), int(theirs.shape[1])
    return None, None


def _check_state(state: Any, path: Path | None, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping) or not state:
        raise WeightsError(path, f"{what} is not a state_dict (a dict of tensors)")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(path, f"{what} holds no tensors")
    return tensors  # MONAI / EMATeacher extra states (``_extra_state``) are dropped: a network loads tensors


def _strip_prefix(state: Any, prefix: str) -> Any:
    if not isinstance(state, Mapping):
        return state
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


def _plain(value: Any) -> Any:
    """``value`` as plain types (tuples -> lists, enums -> values, paths -> str) for ``weights_only`` loading."""
    import enum

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"weights record value {value!r} ({type(value).__name__}) is not a plain type")
