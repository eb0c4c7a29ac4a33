"""A rendered view: target image + probability + labels, checked to be non-blank and to show the labels.

Set ``MTBIO_SCREENSHOT=path.png`` to keep the picture (the README's ``docs/images/napari.png``) and
``MTBIO_SCREENSHOT_MODEL`` to a trained (e.g. MaskTwins) model, a MONAI bundle folder or a checkpoint of
``MTBIO_SCREENSHOT_NETWORK`` (default ``small_unet``, 2D), to draw its probability through the Predict widget.
Without a model the probability is a smoothed copy of the ground truth, named "stand-in" in the layer list.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

SHAPE = (8, 320, 320)
SEED = 1  # a target volume the screenshot model was not adapted on


def _probability(viewer, qtbot, tmp_path: Path, raw_name: str, label: np.ndarray) -> tuple[str, str]:  # noqa: ANN001
    """Add a probability and a mask layer; returns their names."""
    model = os.environ.get("MTBIO_SCREENSHOT_MODEL")
    if model:
        from mtbio.napari.predict_widget import BUNDLE, PredictWidget

        widget = PredictWidget(viewer)
        widget.image.value = viewer.layers[raw_name]
        widget.network.value = (
            BUNDLE if Path(model).is_dir() else os.environ.get("MTBIO_SCREENSHOT_NETWORK", "small_unet")
        )
        widget.model_path.value = Path(model)
        widget.roi.value = os.environ.get("MTBIO_SCREENSHOT_ROI", "256, 256")
        widget.output.value = tmp_path / "masktwins.zarr"
        assert widget.start() is not None, widget.status.value
        qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
        assert widget.status.value.startswith("done"), widget.status.value
        return f"{raw_name} probability", f"{raw_name} mask"
    from scipy.ndimage import gaussian_filter

    from mtbio.napari._options import PROBABILITY_STYLE

    prob = np.clip(gaussian_filter(label.astype(np.float32), sigma=(0, 2.5, 2.5)), 0, 1)
    viewer.add_image(prob, name="probability (stand-in)", **PROBABILITY_STYLE.kwargs())
    viewer.add_labels((prob >= 0.5).astype(np.uint8), name="mask (stand-in)")
    return "probability (stand-in)", "mask (stand-in)"


def test_screenshot_shows_image_probability_and_labels(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    from mtbio.napari._options import PROBABILITY_STYLE
    from mtbio.napari._sample_data import synthetic_target
    from mtbio.napari._widget_common import direct_colormap

    viewer = make_napari_viewer(show=False)
    (raw, raw_kw, _), (label, _, _) = synthetic_target(shape=SHAPE, seed=SEED)
    raw_kw = {k: v for k, v in raw_kw.items() if k not in ("scale", "translate")}
    viewer.add_image(raw, **raw_kw)
    prob_name, mask_name = _probability(viewer, qtbot, tmp_path, raw_kw["name"], label)
    mask = viewer.layers[mask_name]
    mask.colormap = direct_colormap({1: "cyan"})
    mask.contour = 2
    mask.opacity = 1.0
    viewer.window.resize(1000, 900)
    viewer.dims.set_point(0, SHAPE[0] // 2)
    viewer.screenshot(canvas_only=False, flash=False)  # the first grab of a hidden viewer is black
    viewer.reset_view()  # after that grab, which sizes the hidden canvas

    shot = viewer.screenshot(canvas_only=True, flash=False)
    mask.visible = False
    without_labels = viewer.screenshot(canvas_only=True, flash=False)
    mask.visible = True

    rgb = shot[..., :3].astype(int)
    assert rgb.std() > 20, "the canvas is blank"
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 256, "the canvas shows no image"
    changed = np.abs(rgb - without_labels[..., :3].astype(int)).sum(-1) > 30
    assert changed.mean() > 0.005, "the labels layer is not visible"
    # where the labels draw, the contour colour (cyan: blue and green up) shows
    delta = rgb[changed] - without_labels[..., :3].astype(int)[changed]
    assert delta[:, 1].mean() > 0 and delta[:, 2].mean() > 0
    assert viewer.layers[prob_name].colormap.name == PROBABILITY_STYLE.colormap

    out = os.environ.get("MTBIO_SCREENSHOT")
    if out:
        from PIL import Image

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(shot).save(out)
