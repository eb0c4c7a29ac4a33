"""Load a network for inference (a MONAI bundle folder or an mtbio network name + checkpoint) and hash it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

#: config files of a bundle folder, in merge order (inference extends train)
BUNDLE_CONFIGS = ("configs/train.json", "configs/train.yaml", "configs/inference.json", "configs/inference.yaml")
BUNDLE_WEIGHTS = "models/model.pt"


def model_hash(network: torch.nn.Module) -> str:
    """SHA-256 of the network's class name and its state dict (names, dtypes, shapes and values)."""
    digest = hashlib.sha256(type(network).__qualname__.encode())
    for name, tensor in sorted(network.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def load_state(network: torch.nn.Module, checkpoint: str | os.PathLike) -> torch.nn.Module:
    """Load the state dict of ``checkpoint`` (a plain state dict or a dict with ``state_dict`` / ``model`` /
    ``network`` / ``teacher`` / ``student``: the EMA teacher is preferred over the student) into ``network``
    strictly; raises ValueError naming the file. A weights record marks ``network`` with its ``context_sections``
    (:func:`mtbio.networks.context.with_context`); a plain ``state_dict`` leaves it as it is."""
    from mtbio.networks.context import with_context
    from mtbio.networks.weights import WeightsError, read_weights

    record = read_weights(checkpoint)
    if record.version > 0:  # a record: its check names the input channels (a 2.5D network's weights) and marks
        try:
            return record.load_into(network, checkpoint)
        except WeightsError as err:
            if "input channel" in err.problem:
                raise
    try:
        network.load_state_dict(record.teacher, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        detail = detail if len(detail) <= 300 else detail[:300] + " ..."
        raise ValueError(f"{checkpoint}: checkpoint does not fit the network ({detail})") from err
    return with_context(network, record.context_sections) if record.version > 0 else network


def bundle_config(bundle: str | os.PathLike) -> tuple[dict[str, Any], list[Path]]:
    """The raw (unevaluated) config of a MONAI bundle folder: ``configs/train`` then ``configs/inference``
    (``.yaml`` / ``.json``) merged top-level id by id, the inference file winning (the model-zoo
    ``--config_file "['train', 'inference']"`` form; mtbio's inference.yaml extends train.yaml).

    Raises:
        FileNotFoundError: no bundle folder, or none of :data:`BUNDLE_CONFIGS`.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: bundle folder does not exist")
    files = [root / c for c in BUNDLE_CONFIGS if (root / c).is_file()]
    if not files:
        raise FileNotFoundError(f"{root}: bundle has none of {', '.join(BUNDLE_CONFIGS)}")
    merged: dict[str, Any] = {}
    for path in files:
        content = ConfigParser.load_config_file(str(path))
        if not isinstance(content, dict):
            raise ValueError(f"{path}: a bundle config must be a mapping of ids, got {type(content).__name__}")
        merged.update(content)
    return merged, files


def _parse_bundle_ids(bundle: Path, ids: list[str], trust: bool) -> list[Any]:
    """Build ``ids`` of the bundle's config: everything (``trust``) or only their declarative closure."""
    from monai.bundle import ConfigParser

    from mtbio.bundle.trust import UntrustedBundleError, declarative_closure

    config, files = bundle_config(bundle)
    where = ", ".join(str(f) for f in files)
    if trust:
        parser = ConfigParser(config)
        parser["bundle_root"] = str(bundle.resolve())
        keys = ids
    else:
        try:
            parser = ConfigParser(declarative_closure(config, ids))
        except UntrustedBundleError as err:
            raise UntrustedBundleError(
                f"{bundle}: its config runs code ({err}); it is not a plain network definition as mtbio's bundles "
                "are. Only if you trust where it comes from: pass --trust-bundle (napari: tick 'trust bundle')"
            ) from err
        keys = [f"__id_{i}__" for i in range(len(ids))]
    out = []
    for key, name in zip(keys, ids, strict=True):
        try:
            out.append(parser.get_parsed_content(key))
        except Exception as err:  # noqa: BLE001 - re-raised with the files
            raise ValueError(f"{where}: cannot build {name!r} ({err})") from err
    return out


def load_bundle_network(
    bundle: str | os.PathLike, checkpoint: str | os.PathLike | None = None, *, trust: bool = False
) -> torch.nn.Module:
    """Instantiate ``network_def`` of a MONAI bundle folder and load its weights, from any working directory.

    Without ``trust`` only a declarative ``network_def`` is built (:mod:`mtbio.bundle.trust`: network classes of
    mtbio / MONAI / torch, plain values, ``@`` references; nothing else of the config is evaluated), which covers
    the bundles shipped with mtbio and copies of them. ``trust=True`` parses the whole config as MONAI does
    (``$`` expressions, any ``_target_``), with ``bundle_root`` set to the folder. Weights of a 2.5D network
    (``context_sections = k`` in the record) go into a ``1 + 2k``-channel build of a one-channel
    :func:`mtbio.networks.get_network` ``network_def`` (:func:`mtbio.networks.with_input_channels`).

    Args:
        bundle: folder with ``configs/train.yaml`` and / or ``configs/inference.yaml`` (or ``.json``) defining
            ``network_def`` (:func:`bundle_config`).
        checkpoint: weights; default ``<bundle>/models/model.pt``.
        trust: allow the config to run code.

    Raises:
        FileNotFoundError: no bundle folder, config or weights.
        mtbio.bundle.trust.UntrustedBundleError: (a ValueError) ``network_def`` needs code and ``trust`` is false.
        ValueError: a config without ``network_def`` or weights that do not fit.
    """
    root = Path(bundle)
    config, files = bundle_config(root)
    if "network_def" not in config:
        raise ValueError(f"{', '.join(str(f) for f in files)}: no 'network_def' entry")
    network = _parse_bundle_ids(root, ["network_def"], trust)[0]
    if not isinstance(network, torch.nn.Module):
        raise ValueError(f"{root}: 'network_def' is a {type(network).__name__}, not a torch module")
    weights = Path(checkpoint) if checkpoint is not None else root / BUNDLE_WEIGHTS
    if weights.is_file():  # a 2.5D network's weights (context_sections k): a one-channel get_network gets 1 + 2k
        from mtbio.networks import with_input_channels
        from mtbio.networks.weights import read_weights

        record = read_weights(weights)
        if record.version > 0 and record.context_sections:
            k = record.context_sections
            network = with_input_channels(network, 1 + 2 * k, f"{weights} (context_sections {k})")
    return load_state(network, weights)


#: inferer settings a bundle may state: top-level ids (mtbio's inference.yaml) or inside ``inferer`` (model zoo)
INFERER_SETTINGS = ("roi_size", "overlap", "normalize", "tta", "planes")


def bundle_inferer_settings(bundle: str | os.PathLike, *, trust: bool = False) -> dict[str, Any]:
    """``roi_size``, ``overlap``, ``normalize``, ``tta`` and ``planes`` stated by a bundle (top level, else in
    ``inferer``), built under the same trust rule as :func:`load_bundle_network`; absent ones are left out."""
    config, _ = bundle_config(bundle)
    inferer = config.get("inferer") if isinstance(config.get("inferer"), dict) else {}
    present = [
        (name, name if name in config else f"inferer#{name}")
        for name in INFERER_SETTINGS
        if name in config or name in inferer
    ]
    values = _parse_bundle_ids(Path(bundle), [key for _, key in present], trust) if present else []
    return {name: value for (name, _), value in zip(present, values, strict=True)}


def load_named_network(
    name: str, spatial_dims: int, checkpoint: str | os.PathLike | None = None, **kwargs: Any
) -> torch.nn.Module:
    """``mtbio.networks.get_network(name, spatial_dims, **kwargs)`` with the weights of ``checkpoint``; a weights
    record's ``context_sections`` gives the network ``1 + 2k`` input channels (unless ``in_channels`` is given) and
    marks it (:mod:`mtbio.networks.context`).

    Raises:
        ValueError: unknown name, or weights that do not fit.
    """
    from mtbio.networks import get_network

    if checkpoint is not None and "in_channels" not in kwargs:
        from mtbio.networks.weights import read_weights

        kwargs["in_channels"] = 1 + 2 * read_weights(checkpoint).context_sections
    network = get_network(name, spatial_dims, **kwargs)
    return network if checkpoint is None else load_state(network, checkpoint)
