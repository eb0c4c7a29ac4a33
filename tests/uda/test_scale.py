"""mtbio.uda.scale: the zoom search for a target's apparent object scale (voxel size unknown)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from mtbio.uda.scale import DEFAULT_ZOOMS, ZoomRow, choose, zoom_search

torch.set_num_threads(2)


class BrightIsForeground(nn.Module):
    """Logits (background, foreground) = (-x, x): foreground where the z-scored intensity is positive, at any zoom."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x[:, :1], x[:, :1]], dim=1) * 10.0


def discs(diameter: float, size: int = 256, sections: int = 3, spacing: int = 64) -> np.ndarray:
    """(Z, size, size) float volume of bright discs of ``diameter`` px on a grid, dark background."""
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size), np.float32)
    for cy in range(spacing // 2, size, spacing):
        for cx in range(spacing // 2, size, spacing):
            image[(yy - cy) ** 2 + (xx - cx) ** 2 <= (diameter / 2) ** 2] = 1.0
    return np.stack([image] * sections)


def row(zoom: float, score: float, diameter: float | None, n: int = 10, collapsed: bool = False) -> ZoomRow:
    return ZoomRow(zoom, score, collapsed, 0.1, 0.9, 0.8, 0.9, diameter, n, [64, 64])


def test_default_zooms_span_quarter_to_four():
    assert DEFAULT_ZOOMS[0] == pytest.approx(0.25) and DEFAULT_ZOOMS[-1] == pytest.approx(4.0)
    assert DEFAULT_ZOOMS[4] == 1.0 and len(DEFAULT_ZOOMS) == 9


def test_choose_readings_skip_collapsed_and_sparse_rows():
    rows = [
        row(0.5, 0.95, 40.0, collapsed=True),  # best score but collapsed: never chosen
        row(1.0, 0.80, 30.0),
        row(2.0, 0.70, 61.0),
        row(4.0, 0.60, 60.0, n=2),  # closest diameter, but too few objects
    ]
    assert choose(rows, 60.0) == {"score": 1.0, "diameter": 2.0}
    assert choose(rows, None) == {"score": 1.0, "diameter": None}
    assert choose([row(1.0, 0.5, None, collapsed=True)], 60.0) == {"score": None, "diameter": None}


def test_zoom_search_diameter_reading_recovers_the_scale():
    # source objects 40 px across, target objects 20 px: the target looks x0.5, so zoom 2 restores the source's size
    source = discs(40.0) > 0
    target = discs(20.0)
    found = zoom_search(
        BrightIsForeground(), target, source, zooms=(0.5, 1.0, 2.0), roi_size=(64, 64), score_crop=64, n_crops=4
    )
    assert found.source_diameter == pytest.approx(40.0, rel=0.05)
    assert [r.zoom for r in found.rows] == [0.5, 1.0, 2.0]
    by_zoom = {r.zoom: r for r in found.rows}
    assert by_zoom[1.0].diameter == pytest.approx(20.0, rel=0.1)
    assert by_zoom[2.0].diameter == pytest.approx(40.0, rel=0.1)  # objects grow with the zoom
    assert found.chosen["diameter"] == 2.0
    assert found.apparent_scale("diameter") == pytest.approx(0.5)
    d = found.to_dict()
    assert set(d) == {"rows", "source_diameter", "source_fraction", "chosen", "apparent_scale"}
    assert d["source_fraction"] == pytest.approx(float(source.mean()), rel=1e-6)
    with pytest.raises(ValueError, match="reading"):
        found.apparent_scale("size")


def test_zoom_search_clips_the_score_crop_to_small_zoomed_sections():
    found = zoom_search(
        BrightIsForeground(), discs(20.0, size=128), discs(40.0) > 0, zooms=(0.25,), roi_size=(64, 64), n_crops=2
    )
    assert found.rows[0].crop == [32, 32]  # 128 px x 0.25 = 32 px sections


@pytest.mark.parametrize("zooms", [(), (0.0,), (1.0, -2.0), (float("nan"),)])
def test_zoom_search_refuses_bad_zooms(zooms):
    with pytest.raises(ValueError, match="zooms"):
        zoom_search(BrightIsForeground(), discs(20.0), discs(40.0) > 0, zooms=zooms)


def test_zoom_search_refuses_a_2d_target():
    with pytest.raises(ValueError, match="Z, Y, X"):
        zoom_search(BrightIsForeground(), discs(20.0)[0], discs(40.0) > 0)


def test_zoom_search_with_a_unet_on_sections_smaller_than_its_window():
    # a 77 px section (not a multiple of the U-Net's 16) is padded by the sliding window, not cropped to fit
    from mtbio.networks import get_network

    torch.manual_seed(0)
    net = get_network("small_unet", 2)
    found = zoom_search(net, discs(20.0, size=154), discs(40.0) > 0, zooms=(0.5,), roi_size=(96, 96), n_crops=2)
    assert len(found.rows) == 1 and found.rows[0].crop == [64, 64] and 0.0 <= found.rows[0].score <= 1.0
