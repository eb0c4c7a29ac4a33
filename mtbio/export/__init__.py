"""Export trained mtbio networks for use outside mtbio: ONNX, TorchScript and bioimage.io model packages.

Modules: :mod:`~mtbio.export.source` (read a weights file, build its network), :mod:`~mtbio.export.onnx`,
:mod:`~mtbio.export.torchscript`, :mod:`~mtbio.export.bioimageio` (write a package and load one back). ONNX and
bioimage.io need the ``export`` extra (``pip install 'mtbio[export]'``: onnx, onnxruntime, bioimageio.core).
"""

from __future__ import annotations

from mtbio.export.source import ExportSource, example_input, load_source

__all__ = ["ExportSource", "example_input", "load_source"]
