"""Real Lucchi++ labels (label rule: greyscale, > 127) with blurred-label probability maps, against scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtbio.metrics import em_metrics_per_section, volume_metrics

from ._oracle import sklearn_rows

pytestmark = pytest.mark.realdata


def read_labels(folder: Path, count: int) -> np.ndarray:
    """The first ``count`` sections of a Lucchi++ label folder as bool (Z, Y, X), by the label rule."""
    from mtbio.data.labels import open_label_volume

    return np.asarray(open_label_volume(folder)[:count]).astype(bool)


def blurred_map(label: np.ndarray, seed: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    p = gaussian_filter(label.astype(np.float32), sigma=(0, 4, 4)) * 0.9 + rng.normal(0.05, 0.08, label.shape)
    return np.clip(p, 0, 1).astype(np.float32)


@pytest.mark.parametrize("folder", ["Train_Out", "Test_Out"])  # greyscale and RGBA label PNGs
@pytest.mark.parametrize("kind", ["uint8", "float16", "float32"])
def test_lucchi_pp_sections_match_sklearn(lucchi_pp_dir: Path, folder: str, kind: str) -> None:
    label = read_labels(lucchi_pp_dir / folder, 2)
    assert label.shape == (2, 768, 1024)
    assert 0.01 < label.mean() < 0.2  # the label rule read real mitochondria (about 7 % foreground)
    p = blurred_map(label, seed=len(folder))
    prob = np.rint(p * 255).astype(np.uint8) if kind == "uint8" else p.astype(kind)
    got = em_metrics_per_section(prob, label)
    want = sklearn_rows(prob, label)
    for g, w in zip(got, want):
        for k in ("mAP", "F1", "MCC", "IoU"):
            assert abs(g[k] - w[k]) <= 1e-9, (k, g[k], w[k])
        assert 0.5 < g["mAP"] <= 1.0  # a blurred label is a good predictor
    vol = volume_metrics(prob, label)
    assert 0.0 < vol["IoU"] < vol["Dice"] <= 1.0
