"""Export trained mtbio networks for use outside mtbio: ONNX, TorchScript and bioimage.io model packages.

Modules: :mod:`~mtbio.export.source` (read a weights file, build its network), :mod:`~mtbio.export.onnx`,
:mod:`~mtbio.export.torchscript`, :mod:`~mtbio.export.bioimageio` (write a package and load one back). ONNX and
bioimage.io need the ``export`` extra (``pip install 'mtbio[export]'``: onnx, onnxruntime, bioimageio.core).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # editors and type checkers see the names; importing the package stays light (no torch)
    from mtbio.export.api import export_model
    from mtbio.export.source import ExportSource, example_input, load_source

__all__ = ["ExportSource", "example_input", "export_model", "load_source"]
_LAZY = {
    "export_model": "mtbio.export.api",
    **dict.fromkeys(("ExportSource", "example_input", "load_source"), "mtbio.export.source"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mtbio.export' has no attribute {name!r}")
