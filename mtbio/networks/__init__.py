"""2D and 3D segmentation networks by name, built from MONAI.

Every network maps (B, in_channels, *spatial) to (B, out_channels, *spatial) logits; with the default
``out_channels=2`` channel 0 is background and channel 1 is mitochondrion.

Names:
    ``"unet"``: :class:`monai.networks.nets.UNet`, channels (16, 32, 64, 128, 256), strides 2, two residual
    units per level, batch norm.
    ``"small_unet"``: the same MONAI UNet, channels (16, 32, 64, 128), strides 2, no residual units, batch norm;
    the default for CPU experiments (input sizes divisible by 8).
    ``"basic_unet"``: :class:`monai.networks.nets.BasicUNet`, features (16, 32, 64, 128, 256, 16), batch norm.

Keyword arguments override the constructor arguments (e.g. ``channels``, ``strides`` with per-axis tuples such
as ``(1, 2, 2)`` for anisotropic 3D data, ``norm``, ``dropout``).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch.nn as nn

__all__ = ["NETWORKS", "get_network", "network_constructor", "with_input_channels"]

NETWORKS = ("unet", "small_unet", "basic_unet")

#: network -> the :func:`get_network` arguments it was built with (a bundle's ``network_def`` is such a build)
_BUILT: weakref.WeakKeyDictionary[nn.Module, tuple[str, int, int, int, dict[str, Any]]] = weakref.WeakKeyDictionary()


def get_network(name: str, spatial_dims: int, in_channels: int = 1, out_channels: int = 2, **kwargs: Any) -> nn.Module:
    """Build a MONAI segmentation network by name.

    Args:
        name: one of :data:`NETWORKS`.
        spatial_dims: 2 or 3.
        in_channels: input channels (1 for EM).
        out_channels: output logit channels (2: background, mitochondrion).
        **kwargs: passed to the MONAI constructor, overriding the defaults listed in the module docstring.

    Returns:
        the network, in training mode.
    """
    cls, args = network_constructor(name, spatial_dims, in_channels, out_channels, **kwargs)
    network = cls(**args)
    _BUILT[network] = (name, spatial_dims, in_channels, out_channels, dict(kwargs))
    return network


def with_input_channels(network: nn.Module, channels: int, why: str) -> nn.Module:
    """``network`` taking ``channels`` input channels: itself when its first convolution takes them, a new
    :func:`get_network` build with ``in_channels=channels`` (same name and arguments, fresh weights) when it is a
    one-channel :func:`get_network` build (a bundle's plain ``network_def``).

    Args:
        network: the network to check (its first weight with 3 or more dims is the input convolution).
        channels: the input channels the data gives, e.g. ``1 + 2k`` for ``context_sections = k``.
        why: what asks for ``channels``, for the error (``"context_sections 1"``).

    Raises:
        ValueError: the network takes other input channels and is not a one-channel :func:`get_network` build
            (e.g. a ``network_def`` whose ``in_channels`` conflicts with ``context_sections``).
    """
    from mtbio.networks.context import input_channels

    have = input_channels(network.state_dict())
    if have is None or have == int(channels):
        return network
    built = _BUILT.get(network)
    if built is not None and built[2] == 1:
        name, spatial_dims, _, out_channels, kwargs = built
        return get_network(name, spatial_dims, int(channels), out_channels, **kwargs)
    raise ValueError(
        f"the network ({type(network).__name__}) takes {have} input channel(s), {why} gives {channels}: leave "
        f"network_def's in_channels out (a mtbio.networks.get_network network_def gets {channels}) or set it to "
        f"{channels}"
    )


def network_constructor(
    name: str, spatial_dims: int, in_channels: int = 1, out_channels: int = 2, **kwargs: Any
) -> tuple[type[nn.Module], dict[str, Any]]:
    """The MONAI class and the full keyword arguments :func:`get_network` builds ``name`` with (same arguments).

    Returns:
        ``(cls, kwargs)`` with ``cls(**kwargs)`` equal to ``get_network(...)``; what a model description that
        imports the MONAI class needs (``mtbio.export.bioimageio``).
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
    from monai.networks.nets import BasicUNet, UNet

    base = dict(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels)
    if name == "unet":
        args: dict[str, Any] = dict(
            channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch"
        )
        return UNet, {**base, **args, **kwargs}
    if name == "small_unet":
        args = dict(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=0, norm="batch")
        return UNet, {**base, **args, **kwargs}
    if name == "basic_unet":
        args = dict(features=(16, 32, 64, 128, 256, 16), norm="batch")
        return BasicUNet, {**base, **args, **kwargs}
    raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
