"""Load a network for inference (a MONAI bundle folder or an mtbio network name + checkpoint) and hash it."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

BUNDLE_CONFIGS = ("configs/inference.yaml", "configs/inference.json", "configs/train.yaml", "configs/train.json")
BUNDLE_WEIGHTS = "models/model.pt"


def model_hash(network: torch.nn.Module) -> str:
    """SHA-256 of the network's class name and its state dict (names, dtypes, shapes and values)."""
    digest = hashlib.sha256(type(network).__qualname__.encode())
    for name, tensor in sorted(network.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _state_dict(checkpoint: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """The teacher weights of any weights file :func:`mtbio.networks.weights.read_weights` reads (the record, a
    training checkpoint, a plain ``state_dict``), loaded with ``weights_only=True``."""
    from mtbio.networks.weights import read_weights

    return read_weights(checkpoint).teacher


def load_state(network: torch.nn.Module, checkpoint: str | os.PathLike) -> torch.nn.Module:
    """Load the state dict of ``checkpoint`` (a plain state dict or a dict with ``state_dict`` / ``model`` /
    ``network`` / ``teacher`` / ``student``: the EMA teacher is preferred over the student) into ``network``
    strictly; raises ValueError naming the file."""
    state = _state_dict(checkpoint)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        detail = detail if len(detail) <= 300 else detail[:300] + " ..."
        raise ValueError(f"{checkpoint}: checkpoint does not fit the network ({detail})") from err
    return network


def load_bundle_network(bundle: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> torch.nn.Module:
    """Instantiate ``network_def`` of a MONAI bundle folder and load its weights.

    Args:
        bundle: folder with ``configs/inference.yaml`` (or ``.json`` / ``train.yaml``) defining ``network_def``.
        checkpoint: weights; default ``<bundle>/models/model.pt``.

    Raises:
        FileNotFoundError: no bundle folder, config or weights.
        ValueError: a config without ``network_def`` or weights that do not fit.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: bundle folder does not exist")
    config = next((root / c for c in BUNDLE_CONFIGS if (root / c).is_file()), None)
    if config is None:
        raise FileNotFoundError(f"{root}: bundle has none of {', '.join(BUNDLE_CONFIGS)}")
    root, config = root.resolve(), config.resolve()
    # mtbio's bundles include shared fragments as ``%configs/<file>.yaml#key``, relative to the repository root
    # (the folder holding ``bundles/``): parse from there, so the network loads from any working directory
    base = root.parents[1] if len(root.parents) > 1 and (root.parents[1] / "configs").is_dir() else Path.cwd()
    with contextlib.chdir(base):
        parser = ConfigParser()
        parser.read_config(str(config))
        parser["bundle_root"] = str(root)
        if "network_def" not in parser.config:
            raise ValueError(f"{config}: no 'network_def' entry")
        try:
            network = parser.get_parsed_content("network_def")
        except Exception as err:  # noqa: BLE001 - re-raised with the path
            raise ValueError(f"{config}: cannot build 'network_def' ({err})") from err
    if not isinstance(network, torch.nn.Module):
        raise ValueError(f"{config}: 'network_def' is a {type(network).__name__}, not a torch module")
    weights = Path(checkpoint) if checkpoint is not None else root / BUNDLE_WEIGHTS
    return load_state(network, weights)


def load_named_network(
    name: str, spatial_dims: int, checkpoint: str | os.PathLike | None = None, **kwargs: Any
) -> torch.nn.Module:
    """``mtbio.networks.get_network(name, spatial_dims, **kwargs)`` with the weights of ``checkpoint``.

    Raises:
        ValueError: unknown name, or weights that do not fit.
        RuntimeError: ``mtbio.networks`` is not available.
    """
    try:
        from mtbio.networks import get_network
    except ImportError as err:
        raise RuntimeError(f"mtbio.networks.get_network is not available ({err}); use --bundle") from err
    network = get_network(name, spatial_dims, **kwargs)
    return network if checkpoint is None else load_state(network, checkpoint)
