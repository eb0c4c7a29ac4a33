"""Which parts of a MONAI bundle config mtbio may build without the user's opt-in.

A bundle config can run any Python: ``"$..."`` expressions go through ``eval`` and ``_target_`` names any importable
callable. ``mtbio predict --bundle`` and the napari Predict widget only need the network (``network_def``) and the
inferer settings, so they build just those entries and what they reference, and only when that part is
*declarative*: plain values, ``@id`` references, and ``_target_`` components that are torch modules from
``mtbio.networks`` / ``monai.networks.nets`` / ``torch.nn`` (or ``mtbio.networks.get_network``). No ``$`` expression,
no ``%`` file macro, no ``_mode_``. Everything else of the config (imports, workflows, data) is never evaluated.

The bundles shipped with mtbio pass by construction (their ``network_def`` is a ``mtbio.networks.get_network``
component and their inferer settings are literals), wherever they are copied; a bundle whose network needs code
is built only with ``trust=True`` (``--trust-bundle``, the widget's "trust bundle" box).
"""

from __future__ import annotations

import inspect
import pydoc
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SAFE_TARGET_PREFIXES", "UntrustedBundleError", "declarative_closure"]

#: modules whose torch.nn.Module classes (and mtbio.networks.get_network) a bundle may name without opt-in
SAFE_TARGET_PREFIXES = ("mtbio.networks.", "monai.networks.nets.", "torch.nn.")


class UntrustedBundleError(ValueError):
    """A bundle config needs code to be run (an expression, a macro or a non-network ``_target_``)."""


def _full_target(name: str) -> str:
    if "." in name:
        return name
    from monai.bundle.config_item import ComponentLocator

    module = ComponentLocator().get_component_module_name(name)
    return f"{module}.{name}" if isinstance(module, str) else name


def _safe_target(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    full = _full_target(name)
    if not full.startswith(SAFE_TARGET_PREFIXES):
        return False
    obj = pydoc.locate(full)
    if inspect.isclass(obj):
        import torch

        return issubclass(obj, torch.nn.Module)
    from mtbio.networks import get_network

    return obj is get_network


def _walk(value: Any, where: str, refs: set[str]) -> None:
    """Collect the ``@`` references of ``value``; raise at the first executable piece."""
    from monai.bundle.reference_resolver import ReferenceResolver

    if isinstance(value, str):
        if value.startswith("$"):
            raise UntrustedBundleError(f"{where}: expression {value[:80]!r}")
        if value.startswith("%"):
            raise UntrustedBundleError(f"{where}: macro {value[:80]!r} (reads another file)")
        for ref in ReferenceResolver.match_refs_pattern(value):
            if ref.startswith(("#", ":")) or not ref:
                raise UntrustedBundleError(f"{where}: relative reference {value[:80]!r}")
            refs.add(ref)
    elif isinstance(value, Mapping):
        if "_target_" in value and not _safe_target(value["_target_"]):
            raise UntrustedBundleError(f"{where}: _target_ {value['_target_']!r} is not a network class")
        if value.get("_mode_", "default") != "default":
            raise UntrustedBundleError(f"{where}: _mode_ {value['_mode_']!r}")
        for key, item in value.items():
            _walk(item, f"{where}#{key}", refs)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _walk(item, f"{where}#{i}", refs)


def _get(config: Mapping[str, Any], key: str) -> Any:
    """``config[a][b]`` for ``a#b`` (``a::b``); raises KeyError naming the id."""
    from monai.bundle.reference_resolver import ReferenceResolver
    from monai.bundle.utils import ID_SEP_KEY

    value: Any = config
    for part in ReferenceResolver.normalize_id(key).split(ID_SEP_KEY):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(key)
    return value


def declarative_closure(config: Mapping[str, Any], ids: Sequence[str]) -> dict[str, Any]:
    """The top-level entries that ``ids`` (``"network_def"``, ``"inferer#roi_size"``, ...) need, each checked to be
    declarative (see the module docstring); ``{"__id_0__": value of ids[0], ..., <referenced top-level ids>}``,
    ready for a fresh ``ConfigParser``.

    Raises:
        KeyError: an id (or a referenced id) the config lacks.
        UntrustedBundleError: naming the first piece that would run code, and where it is.
    """
    from monai.bundle.reference_resolver import ReferenceResolver
    from monai.bundle.utils import ID_SEP_KEY

    out: dict[str, Any] = {}
    pending: list[tuple[str, str, Any]] = [(f"__id_{i}__", key, _get(config, key)) for i, key in enumerate(ids)]
    seen: set[str] = set()
    while pending:
        slot, where, value = pending.pop()
        refs: set[str] = set()
        _walk(value, where, refs)
        out[slot] = value
        for ref in refs:
            top = ReferenceResolver.normalize_id(ref).split(ID_SEP_KEY)[0]
            if top not in seen:
                seen.add(top)
                pending.append((top, top, _get(config, top)))
    return out
