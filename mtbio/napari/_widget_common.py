"""Helpers every mtbio widget shares: layer pickers that follow the viewer, adding / replacing result layers,
reading a layer's full-resolution data lazily, and a Qt relay that carries progress out of worker threads.

Imported only by the widget modules (it imports napari, magicgui and Qt).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox
from qtpy.QtCore import QObject, Signal

from mtbio.napari._layers import LayerData, lazy


class ProgressRelay(QObject):
    """Emits ``progress(done, total)`` on the GUI thread when called from a worker thread."""

    progress = Signal(int, int)

    def __call__(self, done: int, total: int) -> None:
        self.progress.emit(int(done), int(total))


def layer_picker(
    viewer: napari.Viewer, kind: type | tuple[type, ...], label: str, *, nullable: bool = False
) -> ComboBox:
    """A ComboBox of the viewer's layers of ``kind`` that refreshes when layers are added, removed or renamed.

    Args:
        viewer: the viewer whose layers are listed.
        kind: a napari layer class (or classes), e.g. ``napari.layers.Image``.
        label: the widget label.
        nullable: offer ``None`` (an optional input).
    """

    def choices(_widget: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, kind)]

    box = ComboBox(label=label, choices=choices, nullable=nullable)
    if nullable:
        box.value = None

    def refresh(event: Any = None) -> None:
        try:
            box.reset_choices()
        except RuntimeError:  # the widget was closed and its Qt object deleted: stop listening
            for emitter in events:
                emitter.disconnect(refresh)

    events = (viewer.layers.events.inserted, viewer.layers.events.removed, viewer.layers.events.reordered)
    for emitter in events:
        emitter.connect(refresh)
    return box


def full_resolution(layer: napari.layers.Layer) -> Any:
    """The layer's data at full resolution (level 0 of a multiscale layer), as a lazy dask array."""
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    return lazy(data)


def add_or_replace(viewer: napari.Viewer, layer_data: LayerData) -> napari.layers.Layer:
    """Add a layer from a ``(data, kwargs, type)`` tuple, replacing an existing layer of the same name in place."""
    data, kwargs, layer_type = layer_data
    layer = napari.layers.Layer.create(data, dict(kwargs), layer_type)
    name = kwargs.get("name")
    if name is not None and name in viewer.layers:
        index = viewer.layers.index(name)
        viewer.layers.pop(index)
        viewer.layers.insert(index, layer)
    else:
        viewer.add_layer(layer)
    return layer


def direct_colormap(colors: dict[int, str]) -> Any:
    """A napari label colormap drawing value ``k`` in ``colors[k]`` and everything else transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", **colors})


def spatial_origin(layer: napari.layers.Layer, offset: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, translate)`` placing an array that starts at data index ``offset`` of ``layer`` over it."""
    scale = np.asarray(layer.scale, dtype=float)
    translate = np.asarray(layer.translate, dtype=float) + np.asarray(offset, dtype=float) * scale
    return scale, translate


def current_index(viewer: napari.Viewer, layer: napari.layers.Layer) -> tuple[int, ...]:
    """The data index of ``layer`` under the viewer's current dims point, clipped into the layer."""
    point = np.asarray(viewer.dims.point)[-layer.ndim :]
    idx = np.asarray(layer.world_to_data(point), dtype=float)
    shape = np.asarray(full_resolution(layer).shape[: layer.ndim])
    return tuple(int(v) for v in np.clip(np.round(idx), 0, shape - 1))


def jump_to_section(viewer: napari.Viewer, layer: napari.layers.Layer, section: int) -> None:
    """Move the viewer's axis-0 slider to section ``section`` of ``layer`` (a no-op for 2D layers)."""
    if layer.ndim < 3:
        return
    world = layer.data_to_world([float(section)] + [0.0] * (layer.ndim - 1))
    axis = viewer.dims.ndim - layer.ndim
    viewer.dims.set_point(axis, float(world[0]))


def report(status: Any, message: str) -> None:
    """Show ``message`` in a widget's status label."""
    status.value = message


def report_error(status: Any, err: BaseException) -> None:
    """Show a worker's error in the status label and as a napari notification (the thread's errors are
    handled here instead of being re-raised in the event loop)."""
    from napari.utils.notifications import show_error

    status.value = f"error: {err}"
    show_error(f"mtbio: {err}")


def start_worker(widget: Any, func: Any, *args: Any, on_done: Any, **kwargs: Any) -> Any:
    """Run ``func(*args, **kwargs)`` in a napari thread worker for a widget with ``run_button``, ``status``,
    ``busy`` and ``worker``: the button is disabled and ``busy`` set while it runs, ``on_done(result)`` gets the
    result, an error goes to the status line (:func:`report_error`). Returns the started worker."""
    from napari.qt.threading import create_worker

    def finished() -> None:
        widget.busy = False
        widget.run_button.enabled = True

    widget.run_button.enabled = False
    widget.busy = True
    worker = create_worker(func, *args, _start_thread=False, _ignore_errors=True, **kwargs)
    worker.returned.connect(on_done)
    worker.errored.connect(lambda err: report_error(widget.status, err))
    worker.finished.connect(finished)
    widget.worker = worker
    worker.start()
    return worker
