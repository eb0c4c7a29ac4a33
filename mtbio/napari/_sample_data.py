"""Sample data: the synthetic source (ssTEM, VNC III-like) / target (FIB-SEM, Lucchi-like) pair.

Rendered in memory by :func:`mtbio.data.synthetic.synthesize` (seeded, so every opening shows the same
volumes). Each sample is an image layer plus its mitochondria labels (1 = mitochondrion); the scale is the
domain's voxel size in nanometres.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtbio.napari._layers import LayerData
from mtbio.napari._options import IMAGE_STYLE, LABELS_STYLE

#: (Z, Y, X) of a sample volume: big enough to look like EM, small enough to render in about a second
SAMPLE_SHAPE = (16, 256, 256)
SAMPLE_SEED = 0


def _domain(style: Any, name: str, shape: tuple[int, int, int], seed: int, translate_x: float = 0.0) -> list[LayerData]:
    from mtbio.data.synthetic import synthesize

    raw, label = synthesize(style, shape, seed)
    scale = tuple(float(v) for v in style.voxel_size_nm)
    translate = (0.0, 0.0, float(translate_x))
    meta = {"domain": style.name, "seed": seed}
    return [
        (
            raw,
            {
                "name": f"{name} raw",
                "scale": scale,
                "translate": translate,
                "contrast_limits": (0, 255),
                "metadata": meta,
            }
            | IMAGE_STYLE.kwargs(),
            "image",
        ),
        (
            (label > 0).astype(np.uint8),
            {"name": f"{name} label", "scale": scale, "translate": translate, "metadata": meta} | LABELS_STYLE.kwargs(),
            "labels",
        ),
    ]


def synthetic_source(shape: tuple[int, int, int] = SAMPLE_SHAPE, seed: int = SAMPLE_SEED) -> list[LayerData]:
    """The synthetic source domain (ssTEM-like, anisotropic voxels): raw uint8 (Z, Y, X) and labels {0, 1}."""
    from mtbio.data.synthetic import SOURCE

    return _domain(SOURCE, "source", shape, seed)


def synthetic_target(shape: tuple[int, int, int] = SAMPLE_SHAPE, seed: int = SAMPLE_SEED) -> list[LayerData]:
    """The synthetic target domain (FIB-SEM-like, isotropic voxels): raw uint8 (Z, Y, X) and labels {0, 1}."""
    from mtbio.data.synthetic import TARGET

    return _domain(TARGET, "target", shape, seed)


def synthetic_pair(shape: tuple[int, int, int] = SAMPLE_SHAPE, seed: int = SAMPLE_SEED) -> list[LayerData]:
    """Source and target side by side (the target placed to the right of the source, in nanometres)."""
    from mtbio.data.synthetic import SOURCE, TARGET

    width = shape[2] * SOURCE.voxel_size_nm[2] * 1.05
    return _domain(SOURCE, "source", shape, seed) + _domain(TARGET, "target", shape, seed, translate_x=width)
