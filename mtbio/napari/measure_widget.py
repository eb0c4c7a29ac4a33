"""Measure widget: label a prediction store's objects (or take a labels layer), measure them, list them in a table;
selecting a row moves the viewer to that object (its centroid's section, camera centred on it)."""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton, Table

from mtbio.napari._options import DEFAULT_THRESHOLD
from mtbio.napari._widget_common import (
    add_or_replace,
    full_resolution,
    layer_picker,
    report,
    start_worker,
)

#: columns shown in the table (all are computed; the CSV / Parquet export of ``mtbio measure`` has every one)
SHOWN = ("id", "voxel_count", "volume_nm3", "area_nm2", "surface_nm2", "perimeter_nm", "equivalent_diameter_nm",
         "elongation", "touches_border")  # fmt: skip


def measure_layer_data(
    layer_meta: dict[str, Any], data: Any, scale: tuple[float, ...], *, threshold: float, watershed: bool
) -> tuple[Any, Any]:
    """(ObjectTable, labels or None): a prediction store (``metadata["mtbio_store"]``) is labelled into
    ``<store>/labels/instances`` first (replacing an earlier result); a labels layer is measured as it is."""
    from mtbio.inference.measure import measure_labels

    store_path = layer_meta.get("mtbio_store")
    if store_path is not None:
        from mtbio.data.store import open_prediction_store
        from mtbio.inference.instances import instances_from_store

        labels = instances_from_store(store_path, threshold=threshold, watershed=watershed, overwrite=True)
        return measure_labels(labels, open_prediction_store(store_path).voxel_size), labels
    return measure_labels(data, scale[-data.ndim :]), None


class MeasureWidget(Container):
    """Measure the objects of a prediction-store layer (labelled first) or of a labels layer.

    Attributes (sub-widgets): ``layer``, ``threshold``, ``split``, ``run_button``, ``table``, ``status``;
    ``result`` is the last :class:`mtbio.inference.measure.ObjectTable`, ``worker`` the last thread worker,
    ``busy`` true while it runs, ``target`` the layer the table's objects are in.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.layer = layer_picker(napari_viewer, (napari.layers.Image, napari.layers.Labels), "layer")
        self.threshold = FloatSpinBox(label="threshold", value=DEFAULT_THRESHOLD, min=0.0, max=1.0, step=0.05)
        self.split = ComboBox(label="split", choices=["none", "watershed"], value="none")
        self.run_button = PushButton(text="Measure")
        self.table = Table(label="objects")
        self.status = Label(label="", value="")
        self.extend([self.layer, self.threshold, self.split, self.run_button, self.table, self.status])
        self.result: Any = None
        self.worker: Any = None
        self.busy = False
        self.target: napari.layers.Layer | None = None
        self.run_button.clicked.connect(self.start)
        self.table.native.itemSelectionChanged.connect(self._on_selection)

    def start(self) -> Any:
        """Start labelling (store layers) and measuring in a thread worker."""
        layer = self.layer.value
        if layer is None:
            report(self.status, "error: choose a prediction-store layer or a labels layer")
            return None
        is_store = isinstance(layer, napari.layers.Image) and "mtbio_store" in layer.metadata
        if not is_store and not isinstance(layer, napari.layers.Labels):
            report(self.status, f"error: {layer.name!r} is neither a prediction store's layer nor a labels layer")
            return None
        report(self.status, "measuring ...")
        return start_worker(
            self,
            measure_layer_data,
            dict(layer.metadata) if is_store else {},
            full_resolution(layer),
            tuple(float(s) for s in layer.scale),
            threshold=float(self.threshold.value),
            watershed=self.split.value == "watershed",
            on_done=lambda out: self._on_done(layer, *out),
        )

    def _on_done(self, layer: napari.layers.Layer, table: Any, labels: Any) -> None:
        from mtbio.napari._layers import lazy

        self.result = table
        self.target = layer
        if labels is not None:
            name = layer.name.replace(" probability", "") + " instances"
            self.target = add_or_replace(
                self.viewer, (lazy(labels), {"name": name, "scale": tuple(layer.scale)}, "labels")
            )
        self.table.value = {k: [v.item() for v in table.columns[k]] for k in SHOWN if k in table.columns}
        s = table.summary()
        size = table.size_column
        report(self.status, f"{s['objects']} object(s); median {size} {s[f'median_{size}']:.4g}")

    def _on_selection(self) -> None:
        row = self.table.native.currentRow()
        if self.result is not None and 0 <= row < len(self.result):
            self.jump_to(row)

    def jump_to(self, row: int) -> None:
        """Move the viewer to object ``row`` of the table: the section of its centroid, camera centred on it."""
        if self.result is None or self.target is None:
            return
        axes = "zyx"[-self.result.ndim :]
        centroid_nm = np.array([self.result.columns[f"centroid_{a}_nm"][row] for a in axes])
        voxel = centroid_nm / np.asarray(self.result.voxel_size)
        world = np.asarray(self.target.data_to_world(voxel), dtype=float)
        offset = self.viewer.dims.ndim - len(world)
        if self.result.ndim == 3 and self.viewer.dims.ndisplay == 2:
            self.viewer.dims.set_point(offset, float(world[0]))
        self.viewer.camera.center = tuple(world[-2:])
