"""mtbio: unsupervised domain adaptation (MaskTwins) for electron-microscopy segmentation, built on MONAI.

``import mtbio`` is light: it loads no GUI toolkit and no heavy optional dependency. Import the
sub-packages you need (``mtbio.data``, ``mtbio.metrics``, ``mtbio.masking``, ``mtbio.uda``,
``mtbio.networks``, ``mtbio.inference``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mtbio")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
