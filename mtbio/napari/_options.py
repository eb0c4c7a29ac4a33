"""The one place that defines the options, defaults and layer styles the mtbio napari widgets share.

Nothing here imports napari, Qt or torch, so the reader and the tests can use it cheaply.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

#: probability threshold that turns a foreground probability into a mask (the metrics' ``>= 0.5``)
DEFAULT_THRESHOLD = 0.5
# the predict widget's sliding-window defaults are mtbio.inference.settings.TOOL_DEFAULTS' / DEFAULT_ROI (one place)
#: MaskTwins mask defaults (block edge in voxels, fraction of blocks hidden in M)
DEFAULT_BLOCK_SIZE = 32
DEFAULT_MASK_RATIO = 0.5
#: name suffix of a layer read from a prediction store whose writer never finished
INCOMPLETE_SUFFIX = " [INCOMPLETE]"
#: the 3D crop (z, y, x) the mask preview works on when the image is larger
MASK_PREVIEW_MAX_3D = (64, 512, 512)

#: label values of the compare widget's difference layer
GAINED, LOST = 1, 2


class Device(enum.StrEnum):
    """Where the predict widget runs the network."""

    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


def available_devices() -> list[Device]:
    """The devices torch can use here (CPU always; CUDA / MPS when present)."""
    import torch

    out = [Device.CPU]
    if torch.cuda.is_available():
        out.insert(0, Device.CUDA)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.insert(0, Device.MPS)
    return out


class Metric(enum.StrEnum):
    """Per-section metric columns of :func:`mtbio.metrics.em_metrics_per_section`."""

    IOU = "IoU"
    F1 = "F1"
    MCC = "MCC"
    MAP = "mAP"


class MaskView(enum.StrEnum):
    """Spatial layout of the mask preview: 2D blocks on the current section, or 3D blocks over the volume."""

    PLANE = "2D (current section)"
    VOLUME = "3D (volume)"


@dataclass(frozen=True)
class LayerStyle:
    """napari layer keyword arguments for one kind of mtbio layer."""

    colormap: str | None = None
    opacity: float = 1.0
    blending: str = "translucent"

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"opacity": self.opacity, "blending": self.blending}
        if self.colormap is not None:
            out["colormap"] = self.colormap
        return out


#: EM intensities
IMAGE_STYLE = LayerStyle(colormap="gray")
#: foreground probability added over the EM image (p = 0 adds nothing, so the EM texture stays visible)
PROBABILITY_STYLE = LayerStyle(colormap="magenta", opacity=0.5, blending="additive")
#: binary / instance labels drawn over the EM image
LABELS_STYLE = LayerStyle(opacity=0.5)
#: the compare widget's gained / lost voxels
DIFFERENCE_STYLE = LayerStyle(opacity=0.8)
#: colours of the difference layer (value -> colour)
DIFFERENCE_COLORS = {GAINED: "lime", LOST: "red"}
#: colours of the mask-pair layer: 1 = visible in M, 2 = visible in 1 - M
MASK_PAIR_COLORS = {1: "cyan", 2: "orange"}


def probability_contrast(dtype: Any) -> tuple[float, float]:
    """Contrast limits of a stored probability: ``(0, 255)`` for uint8 (p·255), else ``(0, 1)``."""
    import numpy as np

    return (0.0, 255.0) if np.dtype(dtype) == np.uint8 else (0.0, 1.0)


def stored_threshold(dtype: Any, *, threshold: float = DEFAULT_THRESHOLD) -> float:
    """``threshold`` in the stored encoding of ``dtype`` (uint8 stores ``round(p * 255)``)."""
    import numpy as np

    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return threshold * 255.0 if np.dtype(dtype) == np.uint8 else threshold
