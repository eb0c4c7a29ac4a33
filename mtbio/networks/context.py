"""Which 2.5D context a network module takes: the one inference-side place of ``context_sections``.

A network trained with ``Recipe.context_sections = k`` takes ``1 + 2k`` input channels (the section and ``k``
adjacent sections on each side, :mod:`mtbio.data.context`). The weights record stores ``k``
(:attr:`mtbio.networks.weights.WeightsRecord.context_sections`); building or loading a network from a record marks
the module with it (:func:`with_context`, a plain attribute), and every prediction path (``predict_volume``,
``predict_in_memory``, the label-free score, the collapse guard, the mask-block measurement, export) asks
:func:`context_of` the module it runs. So the record decides, and a user never states the context at inference;
``InferenceSettings.context_sections`` only names it for a network built elsewhere (and must agree with a marked
one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["CONTEXT_ATTRIBUTE", "context_of", "input_channels", "with_context"]

#: the module attribute that holds ``k``
CONTEXT_ATTRIBUTE = "mtbio_context_sections"


def with_context(network: torch.nn.Module, k: int) -> torch.nn.Module:
    """Mark ``network`` as taking ``k`` context sections on each side (``1 + 2k`` channels); returns it."""
    from mtbio.data.context import check_context

    setattr(network, CONTEXT_ATTRIBUTE, check_context(k))
    return network


def context_of(network: Any, default: Any = 0) -> Any:
    """The context sections ``network`` was marked with (``default`` when unmarked), looking through wrappers that
    keep the wrapped network as ``.module`` (DDP, the EMA teacher) or ``.network`` (test-time augmentation,
    section-wise runs)."""
    seen = 0
    while network is not None and seen < 8:
        k = getattr(network, CONTEXT_ATTRIBUTE, None)
        if k is not None:
            return int(k)
        network = getattr(network, "module", None) or getattr(network, "network", None)
        seen += 1
    return default


def input_channels(state: Mapping[str, torch.Tensor]) -> int | None:
    """Input channels of the first convolution of a ``state_dict`` (its first weight with 3 or more dims:
    ``(out, in, *kernel)``), or ``None`` when it has none."""
    for name, tensor in state.items():
        if name.endswith("weight") and isinstance(tensor, torch.Tensor) and tensor.ndim >= 3:
            return int(tensor.shape[1])
    return None
