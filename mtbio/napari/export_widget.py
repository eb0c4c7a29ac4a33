"""Export widget: the model the Predict widget runs (a bundle, or a weights file of an mtbio network) exported as a
bioimage.io package, ONNX or TorchScript, checked against PyTorch (:func:`mtbio.export.api.export_model`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, PushButton

from mtbio.napari._widget_common import report, start_worker

BUNDLE = "bundle"


def export_job(network: str, model_path: Path, fmt: str, out: Path, roi: str, test: bool) -> dict[str, Any]:
    """Run :func:`mtbio.export.api.export_model` for the widget's choices (``network == "bundle"``: ``model_path`` is
    a bundle folder whose ``models/model.pt`` is exported; else a weights file, built as ``network`` when the file
    names no network)."""
    from mtbio.export.api import export_model

    roi_size = [int(v) for v in roi.replace(",", " ").split()] or None
    if network == BUNDLE:
        return export_model(model_path / "models" / "model.pt", fmt, out, bundle=model_path, roi=roi_size, test=test)
    return export_model(model_path, fmt, out, network=network, roi=roi_size, test=test, overwrite=False)


class ExportWidget(Container):
    """Export a model for use outside mtbio.

    Attributes (sub-widgets tests and users set): ``network``, ``model_path``, ``format``, ``roi`` (empty: the
    default for the network), ``test`` (bioimage.io: run ``bioimageio.core``'s test), ``output``, ``run_button``,
    ``status``; ``result`` is the last export's summary, ``worker`` the last thread worker, ``busy`` true while it runs.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        from mtbio.export.api import FORMATS
        from mtbio.networks import NETWORKS

        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.network = ComboBox(label="network", choices=[BUNDLE, *NETWORKS], value=BUNDLE)
        self.model_path = FileEdit(label="bundle / weights", mode="d")
        self.format = ComboBox(label="format", choices=list(FORMATS), value="bioimageio")
        self.roi = LineEdit(label="test size", value="")
        self.test = CheckBox(label="bioimage.io test", value=True)
        self.output = FileEdit(label="output", mode="w")
        self.run_button = PushButton(text="Export")
        self.status = Label(label="", value="")
        self.extend([self.network, self.model_path, self.format, self.roi, self.test, self.output, self.run_button,
                     self.status])  # fmt: skip
        self.network.changed.connect(self._on_network)
        self.run_button.clicked.connect(self.start)
        self.result: dict[str, Any] | None = None
        self.worker: Any = None
        self.busy = False

    def _on_network(self, value: str) -> None:
        self.model_path.mode = "d" if value == BUNDLE else "r"

    def start(self) -> Any:
        """Start the export in a thread worker (``None`` when an input is missing)."""
        model, out = self.model_path.value, self.output.value
        if model is None or str(model) in ("", "."):
            report(self.status, "error: choose a bundle folder or a weights file")
            return None
        if out is None or str(out) in ("", "."):
            report(self.status, "error: choose an output (.onnx / .pt file, or a folder for bioimageio)")
            return None
        report(self.status, f"exporting {self.format.value} ...")
        return start_worker(
            self,
            export_job,
            self.network.value,
            Path(model),
            self.format.value,
            Path(out),
            self.roi.value,
            bool(self.test.value),
            on_done=self._on_done,
        )

    def _on_done(self, summary: dict[str, Any]) -> None:
        self.result = summary
        diff = (summary.get("check") or summary.get("onnx_check") or {}).get("max_abs_diff")
        checked = "" if diff is None else f"; max |diff| vs PyTorch {diff:.2g}"
        test = f"; bioimage.io test {summary['bioimageio_test']}" if "bioimageio_test" in summary else ""
        report(self.status, f"wrote {self.output.value}{checked}{test}")
