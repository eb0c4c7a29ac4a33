"""Mask preview widget: the MaskTwins complementary pair ``M`` / ``1 - M`` over the current image.

It shows what the student network sees: the image z-scored (:func:`mtbio.data.normalize.zscore_image`) and
multiplied by ``M`` and by ``1 - M`` (hidden blocks become 0, the image mean), placed to the right of the image,
plus a labels layer over the image colouring the blocks each view keeps.
2D blocks are drawn on the current section, 3D blocks over the volume (a crop around the current position
when the volume is larger than :data:`~mtbio.napari._options.MASK_PREVIEW_MAX_3D`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSlider, Label, PushButton, SpinBox

from mtbio.data.normalize import zscore_image
from mtbio.napari._options import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_MASK_RATIO,
    MASK_PAIR_COLORS,
    MASK_PREVIEW_MAX_3D,
    MaskView,
)
from mtbio.napari._widget_common import (
    add_or_replace,
    current_index,
    direct_colormap,
    full_resolution,
    layer_picker,
    report,
    spatial_origin,
)

PAIR_LAYER = "mask pair (M / 1-M)"
VIEW_M_LAYER = "student view x*M"
VIEW_C_LAYER = "student view x*(1-M)"


@dataclass
class MaskPreview:
    """One preview: the region, its offset in the image, the z-scored region and the mask ``M``.

    Attributes:
        offset: data index of ``region[0, ...]`` in the image (one entry per image axis).
        image: z-scored region, float32, shape (1, H, W) for a 2D preview of a 3D image, else the region's shape.
        mask: ``M`` as float32 0/1 of the same shape (1 = visible in the first view).
    """

    offset: tuple[int, ...]
    image: np.ndarray
    mask: np.ndarray

    @property
    def pair(self) -> np.ndarray:
        """uint8 labels: 1 where ``M`` keeps the voxel, 2 where ``1 - M`` does."""
        return np.where(self.mask > 0, 1, 2).astype(np.uint8)


def preview_region(shape: tuple[int, ...], center: tuple[int, ...], view: MaskView) -> tuple[slice, ...]:
    """The region the preview covers: the current section (2D) or a crop of at most ``MASK_PREVIEW_MAX_3D``
    centred on ``center`` (3D) of a (Y, X) or (Z, Y, X) image."""
    if len(shape) == 2:
        limit = MASK_PREVIEW_MAX_3D[1:]
        return tuple(_window(s, c, m) for s, c, m in zip(shape, center, limit))
    if view is MaskView.PLANE:
        z = center[0]
        return (slice(z, z + 1), *(_window(s, c, m) for s, c, m in zip(shape[1:], center[1:], MASK_PREVIEW_MAX_3D[1:])))
    return tuple(_window(s, c, m) for s, c, m in zip(shape, center, MASK_PREVIEW_MAX_3D))


def _window(size: int, center: int, limit: int) -> slice:
    n = min(size, limit)
    start = int(np.clip(center - n // 2, 0, size - n))
    return slice(start, start + n)


def make_preview(
    image: Any, center: tuple[int, ...], *, block_size: int, ratio: float, seed: int, view: MaskView
) -> MaskPreview:
    """Draw ``(M, 1 - M)`` with :func:`mtbio.masking.complementary_masks` over the preview region of ``image``.

    Args:
        image: (Y, X) or (Z, Y, X) array (read only in the region).
        center: data index the region is centred on (its axis 0 is the section of a 2D preview).
        block_size: mask block edge in voxels (> 0).
        ratio: fraction of blocks hidden in ``M``, in [0, 1].
        seed: seed of the ``torch.Generator`` (the same seed gives the same mask).
        view: 2D blocks on the current section or 3D blocks over the (cropped) volume.
    """
    import torch

    from mtbio.masking import complementary_masks

    if image.ndim not in (2, 3):
        raise ValueError(f"the mask preview needs a (Y, X) or (Z, Y, X) image, got shape {tuple(image.shape)}")
    if block_size < 1:
        raise ValueError(f"block size must be >= 1, got {block_size}")
    region = preview_region(tuple(image.shape), center, view)
    data = zscore_image(image[region])  # the region is one section (2D blocks) or the crop the 3D blocks cover
    generator = torch.Generator().manual_seed(int(seed))
    if data.ndim == 3 and view is MaskView.PLANE:  # one section: 2D blocks
        m, _ = complementary_masks((1, 1, *data.shape[1:]), block_size, ratio, generator)
        mask = m[0].numpy()  # (1, H, W)
    else:
        m, _ = complementary_masks((1, 1, *data.shape), block_size, ratio, generator)
        mask = m[0, 0].numpy()
    return MaskPreview(tuple(s.start for s in region), data, mask.astype(np.float32))


class MaskPreviewWidget(Container):
    """Preview the complementary block masks ``M`` / ``1 - M`` the MaskTwins student is trained with.

    Attributes (sub-widgets): ``image``, ``block_size``, ``ratio``, ``seed``, ``view``, ``live`` (redraw on
    every change), ``preview_button``, ``status``; ``preview`` is the last :class:`MaskPreview`.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = layer_picker(napari_viewer, napari.layers.Image, "image")
        self.block_size = SpinBox(label="block size", value=DEFAULT_BLOCK_SIZE, min=1, max=1024)
        self.ratio = FloatSlider(label="mask ratio", value=DEFAULT_MASK_RATIO, min=0.0, max=1.0, step=0.05)
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.view = ComboBox(label="blocks", choices=list(MaskView), value=MaskView.PLANE)
        self.live = CheckBox(label="live", value=True, tooltip="redraw when a setting or the section changes")
        self.preview_button = PushButton(text="Preview masks")
        self.status = Label(label="", value="")
        self.extend(
            [self.image, self.block_size, self.ratio, self.seed, self.view, self.live, self.preview_button, self.status]
        )
        self.preview: MaskPreview | None = None
        self.preview_button.clicked.connect(self.update_preview)
        for w in (self.block_size, self.ratio, self.seed, self.view):
            w.changed.connect(self._maybe_update)
        napari_viewer.dims.events.current_step.connect(self._on_step)

    def _maybe_update(self, *_: Any) -> None:
        if self.live.value and self.preview is not None:
            self.update_preview()

    def _on_step(self, *_: Any) -> None:
        try:
            if self.preview is not None and MaskView(self.view.value) is MaskView.PLANE:
                self._maybe_update()
        except RuntimeError:  # the widget was closed and its Qt object deleted: stop following the slider
            self.viewer.dims.events.current_step.disconnect(self._on_step)

    def update_preview(self) -> MaskPreview | None:
        """Draw a new mask pair for the current settings and section; returns it (also ``self.preview``)."""
        layer = self.image.value
        if layer is None:
            report(self.status, "error: choose an image layer")
            return None
        data = full_resolution(layer)
        try:
            preview = make_preview(
                data,
                current_index(self.viewer, layer),
                block_size=int(self.block_size.value),
                ratio=float(self.ratio.value),
                seed=int(self.seed.value),
                view=MaskView(self.view.value),
            )
        except ValueError as err:
            report(self.status, f"error: {err}")
            return None
        self.preview = preview
        offset = preview.offset if data.ndim == preview.image.ndim else (0, *preview.offset)
        scale, translate = spatial_origin(layer, offset)
        width = preview.image.shape[-1] * scale[-1]
        beside = [translate.copy(), translate.copy()]  # the two student views to the right of the image
        beside[0][-1] += width * 1.05
        beside[1][-1] += width * 2.10
        lim = float(max(np.abs(np.percentile(preview.image, [1, 99])).max(), 1e-6))
        style = {"colormap": "gray", "contrast_limits": (-lim, lim), "scale": scale}
        pair_kwargs = {"name": PAIR_LAYER, "scale": scale, "translate": translate, "opacity": 0.35}
        add_or_replace(
            self.viewer, (preview.pair, pair_kwargs | {"colormap": direct_colormap(MASK_PAIR_COLORS)}, "labels")
        )
        view_m = preview.image * preview.mask
        view_c = preview.image * (1 - preview.mask)
        add_or_replace(self.viewer, (view_m, {"name": VIEW_M_LAYER, "translate": beside[0]} | style, "image"))
        add_or_replace(self.viewer, (view_c, {"name": VIEW_C_LAYER, "translate": beside[1]} | style, "image"))
        shown = float(preview.mask.mean())
        report(
            self.status,
            f"M keeps {100 * shown:.1f}% of {preview.mask.size} voxels, 1-M the other {100 * (1 - shown):.1f}% "
            f"(blocks {self.block_size.value}, ratio {self.ratio.value:.2f})",
        )
        return preview
