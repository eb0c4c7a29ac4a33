"""benchmarks/ortho_planes.py: each plane predicted in its own axes and returned in (Z, Y, X); variants scored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtbio.data.normalize import image_stats, zscore
from mtbio.uda.evaluate import predict_in_memory
from tests._scripts import load_benchmark

ortho = load_benchmark("ortho_planes")


class _Pixelwise(torch.nn.Module):
    """Logits (-x, x): the foreground probability is sigmoid(2 x) of the z-scored intensity, pixel by pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x], dim=1)


def _predict(volume, **kw):
    return predict_in_memory(_Pixelwise(), volume, overlap=0.25, **kw)


def test_plane_roi_caps_the_window_at_the_plane_rounded_up_to_16():
    assert ortho.plane_roi((40, 1024), 384) == (48, 384)
    assert ortho.plane_roi((768, 1024), 384) == (384, 384)
    assert ortho.plane_roi((5, 17), 384) == (16, 32)


@pytest.mark.parametrize("plane", ["xy", "xz", "yz"])
def test_each_plane_is_z_scored_as_its_own_images_and_returned_in_zyx(plane):
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(6, 20, 28)).astype(np.float32) * np.arange(1, 7, dtype=np.float32)[:, None, None]
    prob = ortho.predict_plane(_predict, vol, plane, 32, "none")
    assert prob.shape == vol.shape
    # the expected result built by hand: the plane's images (a transposed volume), each z-scored with its own stats
    order = ortho.PLANES[plane]
    view = np.transpose(vol, order)
    mean, std = image_stats(view, 2)
    expected = 1.0 / (1.0 + np.exp(-2.0 * zscore(view, mean[:, None, None], std[:, None, None])))
    np.testing.assert_allclose(prob, np.transpose(expected, np.argsort(order)), atol=1e-5)


def test_score_variants_averages_planes_and_times_each_prediction():
    torch.set_num_threads(2)
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(16, 32, 32)).astype(np.float32)
    label = vol > 0.5
    timing: dict[str, float] = {}
    scored = ortho.score_variants(_predict, vol, label, 32, timing)
    assert set(scored) == set(ortho.VARIANTS) | {"xyz_flips_fgxy", "xyz_flips_logit"}
    # the calibrated consensus predicts the xy prediction's foreground (labels not read), its ranking unchanged
    assert scored["xyz_flips_fgxy"]["foreground"] == pytest.approx(scored["xy_flips"]["foreground"], abs=2e-3)
    assert scored["xyz_flips_fgxy"]["mAP"] == pytest.approx(scored["xyz_flips"]["mAP"], abs=1e-6)
    assert set(timing) == {f"{p}_{t}" for p in ortho.PLANES for t in ("none", "flips")}
    for metrics in scored.values():
        assert {"IoU", "mAP", "F1", "MCC", "foreground"} <= set(metrics) and 0.0 <= metrics["IoU"] <= 1.0
    # a pixelwise network is flip-equivariant: flips change nothing, and xy alone thresholds each section at its mean
    assert scored["xy_none"] == pytest.approx(scored["xy_flips"], abs=1e-6)
    assert scored["xyz_none"]["IoU"] != pytest.approx(scored["xy_none"]["IoU"], abs=1e-9)


def test_window_depth_rows_are_the_tools_xyz_path_at_that_depth():
    torch.set_num_threads(2)
    from mtbio.inference.planes import plane_window

    vol = np.random.default_rng(2).normal(size=(20, 32, 32)).astype(np.float32) * 3 + 7
    net = _Pixelwise()
    depth = plane_window((32, 32), vol.shape[0])[0]
    tools = predict_in_memory(net, vol, roi_size=(32, 32), planes="xyz", tta="none")
    np.testing.assert_allclose(ortho.predict_windows(net, vol, 32, depth), tools, atol=1e-5)


def test_parse_args_reads_window_depths():
    args = ortho.parse_args(["--checkpoints", "C", "--eval-data", "D", "--out", "O", "--window-depths", "48,96"])
    assert args.window_depths == [48, 96] and args.score_sections is None and not args.depths_only
    with pytest.raises(SystemExit):
        ortho.parse_args(["--checkpoints", "C", "--eval-data", "D", "--out", "O", "--window-depths", "a"])


def test_match_foreground_moves_the_threshold_and_keeps_the_order():
    prob = np.random.default_rng(4).random((5, 30, 30)).astype(np.float32)
    for fraction in (0.02, 0.3, 0.9):
        out = ortho.match_foreground(prob, fraction)
        assert np.mean(out >= 0.5) == pytest.approx(fraction, abs=2e-3)
        order = np.argsort(prob.ravel(), kind="stable")
        assert np.all(np.diff(out.ravel()[order]) >= -1e-7)  # monotone in the input
    with pytest.raises(ValueError, match="fraction must be in"):
        ortho.match_foreground(prob, 1.5)


def test_logit_mean_lets_a_sure_plane_outweigh_two_leaning_planes():
    sure, lean = np.array([0.99], np.float32), np.array([0.4], np.float32)
    assert float(np.mean([sure, lean, lean])) > 0.5 and ortho.logit_mean([sure, lean, lean])[0] > 0.5
    lean = np.array([0.2], np.float32)
    assert float(np.mean([sure, lean, lean])) < 0.5  # the probability mean says background
    z = (np.log(0.99 / 0.01) + 2 * np.log(0.2 / 0.8)) / 3
    np.testing.assert_allclose(ortho.logit_mean([sure, lean, lean]), 1 / (1 + np.exp(-z)), rtol=1e-5)
    assert ortho.logit_mean([sure, lean, lean])[0] > 0.5
