"""napari plugin of mtbio (npe2 manifest ``napari.yaml``; install with ``pip install 'mtbio[napari]'``).

Contributions: a reader (zarr / OME-Zarr pyramids, HDF5, TIFF stacks, section folders and mtbio prediction
stores, all lazy), the Predict, Compare and Mask preview widgets, and the synthetic source / target sample
data. See ``docs/napari.md``.

This package module imports nothing heavy: napari, magicgui and Qt are imported by the widget modules
(``predict_widget``, ``compare_widget``, ``mask_widget``) only, and ``import mtbio`` never imports this package.
"""

from __future__ import annotations

__all__: list[str] = []
