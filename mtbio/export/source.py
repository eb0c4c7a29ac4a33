"""What is exported: a weights file read through the one weights record, and the network it builds.

A weights file is anything :func:`mtbio.networks.weights.read_weights` reads: a ``final.pt`` record, a training
checkpoint ``checkpoint_iteration=N.pt`` (its run folder's ``config.json`` names the network) or a bundle's
``models/model.pt``. The network comes from the record (``network`` + ``spatial_dims``), from ``--network NAME
--spatial-dims D``, or from a bundle's ``network_def`` (``--bundle DIR``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mtbio.networks.weights import WeightsError, WeightsRecord, read_weights

__all__ = ["Architecture", "ExportSource", "example_input", "load_source", "normalize_sample"]

#: the eps of bioimage.io's zero_mean_unit_variance ((x - mean) / (std + eps)); mtbio floors std at 1e-6
NORM_EPS = 1e-6
#: modules a model description may import its network class from (also what loading a package back allows)
ALLOWED_IMPORTS = ("monai.networks.nets",)


@dataclass(frozen=True)
class Architecture:
    """A network as ``from <import_from> import <callable>; callable(**kwargs)`` (plain JSON values).

    Attributes:
        import_from: module path, one of :data:`ALLOWED_IMPORTS`.
        callable: class name in that module (``"UNet"``, ``"BasicUNet"``).
        kwargs: constructor keyword arguments.
    """

    import_from: str
    callable: str
    kwargs: dict[str, Any]

    def build(self) -> torch.nn.Module:
        """The network (random weights, eval mode).

        Raises:
            ValueError: a module outside :data:`ALLOWED_IMPORTS` or a name that is not a torch module class.
        """
        import importlib

        if self.import_from not in ALLOWED_IMPORTS:
            raise ValueError(
                f"architecture imports from {self.import_from!r}; mtbio builds only {', '.join(ALLOWED_IMPORTS)}"
            )
        cls = getattr(importlib.import_module(self.import_from), self.callable, None)
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            raise ValueError(f"{self.import_from}.{self.callable} is not a torch module class")
        return cls(**self.kwargs).eval()


@dataclass
class ExportSource:
    """A network ready to export and what describes it.

    Attributes:
        path: the weights file.
        record: its weights record (fields the file lacked filled from the run folder, the bundle or the options).
        network: the network with the record's teacher weights, on the CPU, in eval mode.
        spatial_dims: 2 or 3.
        architecture: how to rebuild the network from a public library (``None`` when unknown).
        step: per spatial axis, the size multiple the network accepts (the product of its downsampling strides).
    """

    path: Path
    record: WeightsRecord
    network: torch.nn.Module
    spatial_dims: int
    architecture: Architecture | None
    step: tuple[int, ...]

    @property
    def normalization(self) -> str:
        """``"zscore_section"`` (per 2D section) or ``"zscore"`` (per volume): the record's (an old record's
        ``"zscore_volume"`` read as ``"zscore"``), else mtbio's rule
        (:func:`mtbio.data.normalize.default_normalization`)."""
        from mtbio.data.normalize import resolve_normalization

        rule = resolve_normalization("auto", self.spatial_dims, self.record.normalization or None)
        return "none" if rule is None else rule.value

    @property
    def context_sections(self) -> int:
        """The record's 2.5D context ``k`` (adjacent sections on each side as input channels; 0 = none)."""
        return int(self.record.context_sections)

    @property
    def in_channels(self) -> int:
        """Input channels: ``1 + 2k``."""
        return 1 + 2 * self.context_sections


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _architecture(name: str, spatial_dims: int, kwargs: dict[str, Any]) -> Architecture:
    import monai.networks.nets as nets

    from mtbio.networks import network_constructor

    cls, args = network_constructor(name, spatial_dims, **kwargs)
    if getattr(nets, cls.__name__, None) is not cls:  # pragma: no cover - every mtbio network is a MONAI net
        raise ValueError(f"network {name!r} ({cls.__qualname__}) is not importable from monai.networks.nets")
    return Architecture("monai.networks.nets", cls.__name__, _plain(args))


def _step(arch: Architecture | None, spatial_dims: int) -> tuple[int, ...]:
    """Per-axis size multiple of a MONAI UNet (product of strides) or BasicUNet (16); 1 when unknown."""
    if arch is None:
        return (1,) * spatial_dims
    if arch.callable == "BasicUNet":
        return (16,) * spatial_dims
    if arch.callable == "UNet":
        step = [1] * spatial_dims
        for s in arch.kwargs.get("strides", ()):
            per_axis = s if isinstance(s, list) else [s] * spatial_dims
            step = [a * int(b) for a, b in zip(step, per_axis)]
        return tuple(step)
    return (1,) * spatial_dims


def _run_config(path: Path) -> dict[str, Any]:
    """``config.json`` next to a training checkpoint (``mtbio train`` writes network and spatial_dims there)."""
    config = path.parent / "config.json"
    if not config.is_file():
        return {}
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _bundle_network(bundle: Path) -> tuple[str, int, dict[str, Any]] | Architecture | None:
    """What a bundle's ``network_def`` builds: ``(name, spatial_dims, kwargs)`` for ``mtbio.networks.get_network``,
    an :class:`Architecture` for a ``monai.networks.nets`` class, ``None`` for anything else."""
    import contextlib

    from monai.bundle import ConfigParser

    from mtbio.inference.model_io import BUNDLE_CONFIGS

    root = bundle.resolve()
    config = next((root / c for c in BUNDLE_CONFIGS if (root / c).is_file()), None)
    if config is None:
        raise FileNotFoundError(f"{bundle}: bundle has none of {', '.join(BUNDLE_CONFIGS)}")
    base = root.parents[1] if len(root.parents) > 1 and (root.parents[1] / "configs").is_dir() else Path.cwd()
    with contextlib.chdir(base):
        parser = ConfigParser()
        parser.read_config(str(config))
        if "network_def" not in parser.config:
            raise ValueError(f"{config}: no 'network_def' entry")
        parser.resolve_macro_and_relative_ids()
        net_def = parser.get("network_def")
    if not isinstance(net_def, dict):
        return None
    target = str(net_def.get("_target_", ""))
    kwargs = {k: v for k, v in net_def.items() if not k.startswith("_")}
    module, _, name = target.rpartition(".")
    if module in ALLOWED_IMPORTS and not any(
        isinstance(v, str) and v.startswith(("@", "$", "%")) for v in kwargs.values()
    ):
        return Architecture(module, name, _plain(kwargs))
    if target not in ("mtbio.networks.get_network", "get_network"):
        return None
    name, dims = kwargs.pop("name", None), kwargs.pop("spatial_dims", None)
    if not isinstance(name, str) or dims not in (2, 3):
        return None
    return name, int(dims), kwargs


def load_source(
    weights: str | os.PathLike,
    *,
    bundle: str | os.PathLike | None = None,
    network: str | None = None,
    spatial_dims: int | None = None,
) -> ExportSource:
    """Read ``weights`` (``weights_only``) and build its network.

    Args:
        weights: a weights record, training checkpoint or plain ``state_dict`` file.
        bundle: a MONAI bundle folder whose ``network_def`` builds the network (for a bundle's ``models/model.pt``).
        network: an :func:`mtbio.networks.get_network` name, for a file that names none.
        spatial_dims: with ``network`` (default: the record's, else 2).

    Raises:
        FileNotFoundError: no weights file or bundle.
        WeightsError: an unreadable file, a pickled payload (refused), or weights that do not fit the network.
        ValueError: no way to know the network, or conflicting options.
    """
    from mtbio.inference.model_io import load_bundle_network
    from mtbio.networks import NETWORKS

    path = Path(weights)
    if path.is_dir():
        raise ValueError(
            f"{path}: is a folder; pass the weights file (final.pt, checkpoint_iteration=N.pt, models/model.pt)"
        )
    record = read_weights(path)
    if bundle is not None and network is not None:
        raise ValueError("pass --bundle DIR or --network NAME, not both")
    if record.network is None and network is None and bundle is None:
        config = _run_config(path)
        if config.get("network") in NETWORKS and config.get("spatial_dims") in (2, 3):
            record.network, record.spatial_dims = config["network"], int(config["spatial_dims"])
            for key in ("strategy", "seed", "crop", "config"):
                if getattr(record, key) is None and config.get(key) is not None:
                    setattr(record, key, config[key])
            if config.get("init_weights"):
                record.provenance.setdefault("parent", config["init_weights"])
    if network is not None:
        if network not in NETWORKS:
            raise ValueError(f"unknown network {network!r}; choose one of {', '.join(NETWORKS)}")
        if record.network is not None and record.network != network:
            raise ValueError(f"{path}: the file holds a {record.network!r} network, not {network!r}")
        dims = spatial_dims or record.spatial_dims or 2
        if record.spatial_dims is not None and dims != record.spatial_dims:
            raise ValueError(f"{path}: the file holds a {record.spatial_dims}D network, not {dims}D")
        record.network, record.spatial_dims = network, dims
    arch: Architecture | None = None
    if bundle is not None:
        bundle = Path(bundle)
        described = _bundle_network(bundle)
        net = load_bundle_network(bundle, path).eval()
        if isinstance(described, Architecture):
            arch = described
            record.network_class = arch.callable
            record.spatial_dims = int(arch.kwargs.get("spatial_dims") or _dims_of(net, path))
        elif described is not None:
            name, dims, kwargs = described
            record.network, record.spatial_dims, record.network_kwargs = name, dims, kwargs
            arch = _architecture(name, dims, kwargs)
        else:
            dims = record.spatial_dims or _dims_of(net, path)
            record.spatial_dims = dims
        record.provenance.setdefault("bundle", str(bundle))
    elif record.network is not None and record.spatial_dims is not None:
        net = record.build_network(path)
        kwargs = dict(record.network_kwargs)
        if record.context_sections:  # a 2.5D network: 1 + 2k input channels
            kwargs.setdefault("in_channels", 1 + 2 * record.context_sections)
        arch = _architecture(record.network, record.spatial_dims, kwargs)
    else:
        raise WeightsError(
            path,
            "the file names no mtbio network: pass --network NAME --spatial-dims D, or --bundle DIR (its network_def)",
        )
    dims = int(record.spatial_dims)  # type: ignore[arg-type]
    return ExportSource(path, record, net.cpu().eval(), dims, arch, _step(arch, dims))


def _dims_of(network: torch.nn.Module, path: Path) -> int:
    conv = next((m for m in network.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d)), None)
    if conv is None:
        raise WeightsError(path, "cannot tell the network's spatial dims (no Conv2d / Conv3d); pass --spatial-dims")
    return 2 if isinstance(conv, torch.nn.Conv2d) else 3


def example_input(roi: tuple[int, ...], *, seed: int = 0, batch: int = 1, channels: int = 1) -> torch.Tensor:
    """A deterministic EM-like test tensor ``(batch, channels, *roi)``: bright blobs on a textured background, uint8
    range (``channels > 1``: a 2.5D network's sections, the same blobs with their own noise).

    Returns:
        float32 tensor with values in [0, 255].
    """
    g = torch.Generator().manual_seed(seed)
    grids = torch.meshgrid(*[torch.linspace(0, 1, int(r)) for r in roi], indexing="ij")
    image = torch.full(tuple(roi), 120.0)
    for _ in range(6):
        centre = torch.rand(len(roi), generator=g)
        radius = 0.06 + 0.1 * float(torch.rand(1, generator=g))
        dist2 = sum((grid - c) ** 2 for grid, c in zip(grids, centre))
        image -= 70.0 * torch.exp(-dist2 / (2 * radius**2))  # dark mitochondria-like bodies
    noise = torch.randn((batch, channels, *roi), generator=g) * 12.0
    return (image + noise).clamp(0, 255).float()


def normalize_sample(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """bioimage.io's ``zero_mean_unit_variance`` per sample and channel over all spatial axes.

    Args:
        x: ``(B, C, *spatial)``.

    Returns:
        ``(x - mean) / (std + eps)`` with population std, the shape of ``x``.
    """
    dims = tuple(range(2, x.ndim))
    x64 = x.double()
    mean = x64.mean(dim=dims, keepdim=True)
    std = x64.std(dim=dims, keepdim=True, correction=0)
    return ((x64 - mean) / (std + eps)).float()
