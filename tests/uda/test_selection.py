"""Label-free score: a perfect model scores top, a collapsed one is flagged, bad targets are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.nn as nn

from mtbio.cli import main
from mtbio.networks import get_network
from mtbio.networks.weights import WeightsRecord, write_weights
from mtbio.uda.selection import is_collapsed, sample_crops, score_network

torch.set_num_threads(2)


def _volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image, label): dark balls (foreground ~8 %) on a bright background, with noise."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:12, :96, :96]
    label = np.zeros((12, 96, 96), bool)
    for _ in range(14):
        c = rng.uniform((0, 0, 0), (12, 96, 96))
        label |= ((zz - c[0]) / 4) ** 2 + ((yy - c[1]) / 7) ** 2 + ((xx - c[2]) / 7) ** 2 < 1
    image = (1.0 - 2.0 * label + rng.normal(0, 0.05, label.shape)).astype(np.float32)
    return image, label


class Threshold(nn.Module):
    """A 'perfect' model for :func:`_volume`: foreground where the z-scored image is below 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([8 * x, -8 * x], dim=1)


class Constant(nn.Module):
    """A collapsed model: background everywhere (or foreground everywhere with ``fg=True``)."""

    def __init__(self, fg: bool = False) -> None:
        super().__init__()
        self.sign = -1.0 if fg else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.sign * torch.ones_like(x), -self.sign * torch.ones_like(x)], dim=1)


class Noise(nn.Module):
    """A useless model whose foreground is unrelated to the objects (a fixed random pattern per input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.sin(37.0 * x + 11.0 * torch.arange(x.shape[-1]).float())
        return torch.cat([g, -g - 0.9], dim=1)


def test_perfect_model_scores_top_and_collapses_are_flagged():
    image, label = _volume()
    src = float(label.mean())
    kw = dict(crop_size=(64, 64), n_crops=8, source_fraction=src)
    perfect = score_network(Threshold(), image, **kw)
    noise = score_network(Noise(), image, **kw)
    empty = score_network(Constant(), image, **kw)
    full = score_network(Constant(fg=True), image, **kw)
    assert not perfect.collapsed and perfect.score > 0.9
    assert perfect.flip_dice > 0.95 and perfect.view_dice > 0.9 and perfect.adjacent_dice > 0.5
    assert noise.score < perfect.score - 0.3
    assert empty.collapsed and empty.reasons == ["all background"] and empty.score == 0.0
    assert full.collapsed and full.reasons == ["all foreground"]
    # the same sample for every model: a fixed seed gives the same score
    assert score_network(Threshold(), image, **kw).score == perfect.score


def test_collapse_rule_follows_the_source_fraction():
    assert is_collapsed(0.05, 0.06) == []
    assert is_collapsed(0.05, None) == []
    assert "1/5" in is_collapsed(0.01, 0.06)[0]
    assert "5x" in is_collapsed(0.40, 0.06)[0]
    assert is_collapsed(0.0, None) == ["all background"]


def test_3d_network_is_scored_on_patches():
    image, label = _volume()
    res = score_network(Threshold(), image, crop_size=(8, 48, 48), n_crops=4, source_fraction=float(label.mean()))
    assert res.adjacent_dice is None and res.score > 0.9 and not res.collapsed


def test_bad_targets_are_clear_errors():
    with pytest.raises(ValueError, match="constant"):
        sample_crops(np.full((4, 64, 64), 7, np.uint8), (32, 32), 4)
    with pytest.raises(ValueError, match="smaller than the score crop"):
        sample_crops(np.zeros((4, 40, 40), np.uint8), (64, 64), 4)


def test_cli_score_json(tmp_path: Path, capsys):
    image, label = _volume()
    tifffile.imwrite(tmp_path / "target.tif", (image * 60 + 120).clip(0, 255).astype(np.uint8))
    torch.manual_seed(0)
    net = get_network("small_unet", 2)
    write_weights(WeightsRecord.from_network(net, network="small_unet", spatial_dims=2), tmp_path / "w.pt")
    argv = ["score", str(tmp_path / "target.tif"), "--checkpoint", str(tmp_path / "w.pt"), "--crop", "64", "64",
            "--crops", "4", "--json", "--source-fraction", str(float(label.mean()))]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"score", "collapsed", "foreground_fraction", "flip_dice", "view_dice"} <= set(out)
    assert 0.0 <= out["score"] <= 1.0 and isinstance(out["collapsed"], bool)
    # a 3D crop for a 2D network, and a bare state_dict without --network, are one-line errors
    assert main([*argv[:2], "--checkpoint", str(tmp_path / "w.pt"), "--crop", "8", "64", "64"]) == 1
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    assert main(["score", str(tmp_path / "target.tif"), "--checkpoint", str(tmp_path / "bare.pt")]) == 1
    assert "pass --network" in capsys.readouterr().err
