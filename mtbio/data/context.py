"""2.5D input: the one rule for a 2D network that sees a section and its ``k`` neighbours on each side as channels.

A network trained with ``context_sections = k`` (``mtbio.uda.recipe.Recipe.context_sections``, recorded in the
weights record) takes ``1 + 2k`` input channels: channel ``c`` holds section ``z - k + c`` of the same (Y, X)
window, so the section being predicted is the middle channel ``k``. At the ends of a volume the missing neighbours
are **replicated**: section ``z + d`` outside ``[0, Z)`` reads the nearest end section (``clip(z + d, 0, Z - 1)``).
Replication (not reflection) is used because it is defined for any number of sections, one included: a single 2D
image ``(Y, X)`` (or a one-section volume) is the image repeated ``1 + 2k`` times. Each channel is z-scored with
its own section's statistics (mtbio's per-section rule, :mod:`mtbio.data.normalize`). Training crops
(:class:`mtbio.data.sampling.CropSampler`), the in-memory prediction (:func:`mtbio.uda.evaluate.predict_in_memory`),
the label-free score's crops and the streaming predictor (:mod:`mtbio.inference.engine`) all use
:func:`context_indices`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_context", "context_channels", "context_indices", "stack_context"]


def check_context(k: Any, name: str = "context_sections") -> int:
    """``k`` as a non-negative int; raises ValueError otherwise."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or int(k) < 0:
        raise ValueError(f"{name} must be an int >= 0 (adjacent sections on each side), got {k!r}")
    return int(k)


def context_channels(k: int) -> int:
    """Input channels of a network with ``k`` context sections on each side: ``1 + 2k``."""
    return 1 + 2 * check_context(k)


def context_indices(z: int | np.ndarray, k: int, depth: int) -> np.ndarray:
    """Section indices of the ``1 + 2k`` channels of section(s) ``z`` in a volume of ``depth`` sections.

    Args:
        z: a section index, or an array of them (shape ``S``).
        k: context sections on each side.
        depth: sections in the volume (``Z >= 1``).

    Returns:
        int array ``(1 + 2k,)`` for one ``z``, ``(S, 1 + 2k)`` for an array: ``clip(z + d, 0, depth - 1)`` for
        ``d = -k .. k`` (replicate padding at the ends).
    """
    if depth < 1:
        raise ValueError(f"a volume needs at least one section, got {depth}")
    offsets = np.arange(-check_context(k), k + 1)
    return np.clip(np.asarray(z)[..., None] + offsets, 0, depth - 1)


def stack_context(sections: np.ndarray, k: int) -> np.ndarray:
    """``(S, *in-plane)`` sections -> ``(S, 1 + 2k, *in-plane)``: each section with its neighbours as channels,
    replicated at the ends (:func:`context_indices`). ``k = 0`` gives ``sections[:, None]``."""
    return sections[context_indices(np.arange(sections.shape[0]), k, sections.shape[0])]
