"""Mask blocks that follow the data's scale (mtbio.uda.blocks) and their resolution inside run_training."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from mtbio.networks.weights import read_weights
from mtbio.uda import blocks
from mtbio.uda.blocks import (
    MaskBlock,
    ObjectSizes,
    clip_block,
    measure_object_sizes,
    nm_to_voxels,
    object_diameter,
    resolve_mask_block,
)
from mtbio.uda.config import DEFAULT_BLOCK_VOXELS, UDAConfig
from mtbio.uda.recipe import Recipe
from mtbio.uda.run import RunSpec, run_training

torch.set_num_threads(2)


def _discs(shape: tuple[int, int, int], diameter: float, seed: int = 0) -> np.ndarray:
    """Boolean (Z, Y, X) volume of non-touching discs of ``diameter`` px on a jittered grid (some cut by the
    border)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, dtype=bool)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    step = int(np.ceil(diameter * 1.8))
    for z in range(shape[0]):
        for cy in range(0, shape[1], step):
            for cx in range(0, shape[2], step):
                jy, jx = rng.uniform(-0.2, 0.2, 2) * diameter
                out[z] |= (yy - cy - jy) ** 2 + (xx - cx - jx) ** 2 <= (diameter / 2) ** 2
    return out


# ---------------------------------------------------------------- the rules


def test_nm_blocks_per_axis_for_anisotropic_voxels_and_the_validated_default():
    assert nm_to_voxels(160, (30, 8, 8)) == (5, 20, 20)
    cfg = UDAConfig()  # block_size None, block_nm 160
    lucchi = resolve_mask_block(cfg, (192, 192), target_voxel_size=(5.0, 5.0), source_voxel_size=(4.6, 4.6))
    assert (lucchi.rule, lucchi.voxels, lucchi.value, lucchi.clipped) == ("nm", (32, 32), 32, False)
    assert "32 x 32 px = 160 nm" in lucchi.note and "(5, 5) nm" in lucchi.note
    vnc = resolve_mask_block(cfg, (192, 192), target_voxel_size=(4.6, 4.6))
    assert vnc.voxels == (35, 35)  # round(160 / 4.6)
    mitoem = resolve_mask_block(cfg, (16, 128, 128), target_voxel_size=(30.0, 8.0, 8.0))
    assert mitoem.voxels == (4, 20, 20) and mitoem.value == (4, 20, 20)  # z: 5 clipped to 16 // 4
    assert mitoem.clipped and "clipped from 5 x 20 x 20 px" in mitoem.note
    wide = resolve_mask_block(UDAConfig(block_nm=400), (64, 64), target_voxel_size=(10.0, 5.0))
    assert wide.voxels == (16, 16)  # (40, 80) clipped to 64 // 4


def test_a_given_block_is_voxels_as_written_and_never_clipped():
    cfg = UDAConfig(block_size=64)
    block = resolve_mask_block(cfg, (64, 64), target_voxel_size=(5.0, 5.0))
    assert (block.rule, block.voxels, block.clipped) == ("voxels", (64, 64), False)
    assert "= 320 x 320 nm" in block.note
    aniso = resolve_mask_block(UDAConfig(block_size=(4, 16, 16)), (16, 64, 64))
    assert aniso.voxels == (4, 16, 16) and aniso.voxel_size is None
    with pytest.raises(ValueError, match="must be one int or have 2 entries"):
        resolve_mask_block(UDAConfig(block_size=(4, 16, 16)), (64, 64))
    with pytest.raises(ValueError, match="one value per network axis"):
        resolve_mask_block(UDAConfig(), (64, 64), target_voxel_size=(5.0, 5.0, 5.0))


def test_clipping_to_four_and_a_quarter_of_the_crop():
    assert clip_block((1, 200), (192, 192)) == (4, 48)
    assert clip_block((1, 1, 1), (8, 2, 64)) == (2, 1, 4)  # small crops: the floor gives way to crop // 4
    tiny = resolve_mask_block(UDAConfig(block_nm=5), (192, 192), target_voxel_size=(5.0, 5.0))
    assert tiny.voxels == (4, 4) and tiny.clipped


def test_bad_block_settings_are_refused():
    assert UDAConfig(block_nm=120).block_nm == 120.0 and isinstance(UDAConfig(block_nm=120).block_nm, float)
    for bad in (0, -160, float("nan"), float("inf"), "160", True):
        with pytest.raises(ValueError, match="block_nm must be a positive number"):
            UDAConfig(block_nm=bad)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        UDAConfig(block_size=(0, 16))
    with pytest.raises(ValueError, match="must be positive"):
        nm_to_voxels(160, (0.0, 5.0))


def test_object_diameter_of_discs_of_known_size():
    for diameter in (8.0, 14.0, 30.0):
        measured, n = object_diameter(_discs((3, 160, 160), diameter, seed=int(diameter)))
        assert measured == pytest.approx(diameter, rel=0.06), diameter
        assert n >= 6
    assert object_diameter(np.zeros((2, 32, 32), bool)) == (None, 0)
    specks = _discs((1, 64, 64), 20.0)
    specks[0, ::9, ::9] = True  # isolated single pixels: below MIN_OBJECT_AREA
    assert object_diameter(specks)[0] == pytest.approx(20.0, rel=0.06)
    one_big = np.ones((1, 40, 40), bool)  # only a border-touching object: counted rather than nothing
    assert object_diameter(one_big)[1] == 1


def test_unknown_target_voxel_size_scales_the_source_block_by_the_object_ratio():
    cfg = UDAConfig()
    sizes = ObjectSizes(source=30.0, target=12.0, n_source=20, n_target=50)
    unknown = resolve_mask_block(cfg, (192, 192), sizes=sizes)  # neither voxel size known: 32 px source block
    assert (unknown.rule, unknown.voxels) == ("objects", (13,) * 2)  # round(32 * 0.4)
    assert unknown.source_block == [DEFAULT_BLOCK_VOXELS] * 2
    src_known = resolve_mask_block(cfg, (192, 192), source_voxel_size=(4.0, 4.0), sizes=sizes)
    assert src_known.voxels == (16, 16) and src_known.source_block == [40, 40]  # 160 nm / 4 nm x 0.4
    assert "median object diameters 12.0 px in the target" in src_known.note
    larger = resolve_mask_block(cfg, (192, 192), sizes=ObjectSizes(20.0, 60.0))
    assert larger.voxels == (48, 48) and larger.clipped  # 96 clipped to 192 // 4
    fallback = resolve_mask_block(cfg, (192, 192), source_voxel_size=(4.0, 4.0), unmeasured="no model")
    assert (fallback.rule, fallback.voxels) == ("source", (40, 40)) and fallback.note.endswith("no model")
    nothing = resolve_mask_block(cfg, (192, 192), sizes=ObjectSizes(30.0, None))
    assert nothing.rule == "source" and "target predictions" in nothing.note
    assert MaskBlock.from_dict(json.loads(json.dumps(src_known.to_dict()))) == src_known


class _Threshold(nn.Module):
    """Logits (-x, x): foreground where the (z-scored) image is above its mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x], dim=1)


def test_measured_object_sizes_give_the_expected_block():
    """Source labels of 30 px discs, a target whose discs look 12 px (and a model that finds them): the 32 px
    source block becomes ~13 px."""
    source_label = _discs((4, 200, 200), 30.0, seed=1)
    rng = np.random.default_rng(2)
    target = _discs((4, 120, 120), 12.0, seed=3).astype(np.float32) + rng.normal(0, 0.05, (4, 120, 120))
    sizes = measure_object_sizes(_Threshold(), source_label, target.astype(np.float32), roi_size=(64, 64))
    assert sizes.source == pytest.approx(30.0, rel=0.06) and sizes.target == pytest.approx(12.0, rel=0.1)
    block = resolve_mask_block(UDAConfig(), (64, 64), sizes=sizes)
    assert block.rule == "objects" and abs(block.voxels[0] - 32 * 12 / 30) <= 1.5


def test_block_flags_parse():
    from mtbio.cli.train import build_parser, settings_from_args

    parser = build_parser(argparse.ArgumentParser())
    _, cfg = settings_from_args(parser.parse_args(["--out", "x"]))
    assert (cfg.block_size, cfg.block_nm) == (None, 160.0)
    _, cfg = settings_from_args(parser.parse_args(["--out", "x", "--block-size", "4,16,16", "--block-nm", "120"]))
    assert (cfg.block_size, cfg.block_nm) == ((4, 16, 16), 120.0)
    _, cfg = settings_from_args(parser.parse_args(["--out", "x", "--block-size", "24"]))
    assert cfg.block_size == 24
    _, cfg = settings_from_args(parser.parse_args(["--out", "x", "--block-size", "none"]))
    assert cfg.block_size is None
    help_text = " ".join(parser.format_help().split())
    assert "follows the data's scale" in help_text and "clipped to [4, crop / 4]" in help_text


# ---------------------------------------------------------------- inside run_training


def _spec(out: Path, **kw) -> RunSpec:
    rng = np.random.default_rng(0)
    lab = rng.random((3, 40, 40)) > 0.8
    img = (lab * 60 + rng.normal(100, 10, lab.shape)).astype(np.float32)
    recipe = Recipe(network="small_unet", iterations=2, pretrain_iterations=0, crop_size=32, batch_size=2)
    recipe = dataclasses.replace(recipe, **kw.pop("recipe", {}))
    data = dict(source_image=img, source_label=lab, target_image=(255 - img).astype(np.float32))
    return RunSpec(out=out, config=UDAConfig(**kw.pop("config", {})), recipe=recipe, progress=False, **data, **kw)


def test_known_voxel_size_gives_nm_blocks_recorded_in_config_and_weights(tmp_path: Path, caplog):
    with caplog.at_level("INFO", logger="mtbio.train"):
        result = run_training(_spec(tmp_path / "run", source_voxel_size=(20.0,) * 3, target_voxel_size=(20.0,) * 3))
    assert not any("voxel size is unknown" in r.getMessage() for r in caplog.records)  # known: no warning
    record = read_weights(result.weights)
    assert record.config["block_size"] == 8 and record.config["block_nm"] == 160.0  # 160 nm / 20 nm
    assert record.extra["mask_block"]["rule"] == "nm" and record.extra["mask_block"]["voxels"] == [8, 8]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["config"]["block_size"] == 8 and saved["mask_block"]["note"].startswith("mask blocks 8 x 8 px")
    assert result.mask_block == saved["mask_block"]
    source_only = run_training(
        _spec(tmp_path / "so", config={"strategy": "source_only"}, target_voxel_size=(20.0,) * 3)
    )  # trains without the target, records the block a masked strategy gets on it (what `mtbio score` masks with)
    assert source_only.mask_block["rule"] == "nm" and read_weights(source_only.weights).config["block_size"] == 8


def test_a_given_block_is_recorded_as_written(tmp_path: Path):
    given = run_training(_spec(tmp_path / "given", config={"block_size": (4, 6)}, target_voxel_size=(20.0,) * 3))
    assert read_weights(given.weights).config["block_size"] == [4, 6] and given.mask_block["rule"] == "voxels"


def test_unknown_voxel_size_measures_objects_once_and_a_rerun_keeps_the_block(tmp_path: Path, monkeypatch, caplog):
    calls = []

    def fake_sizes(network, source_label, target_image, **kw):
        calls.append(kw["roi_size"])
        assert isinstance(network, nn.Module) and not network.training  # the source-only model, in eval mode
        return ObjectSizes(source=20.0, target=15.0, n_source=9, n_target=12)

    monkeypatch.setattr(blocks, "measure_object_sizes", fake_sizes)
    spec = _spec(tmp_path / "run", source_voxel_size=(20.0,) * 3, recipe={"pretrain_iterations": 2})
    with caplog.at_level("INFO", logger="mtbio.train"):
        result = run_training(spec)
    assert calls == [(32, 32)]
    assert result.mask_block["rule"] == "objects" and result.mask_block["voxels"] == [6, 6]  # 8 px x 15 / 20
    assert any("mask blocks 6 x 6 px" in r.getMessage() for r in caplog.records)
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "voxel size is unknown" in r.getMessage()]
    assert len(warned) == 1 and "--voxel-size" in warned[0].getMessage()  # the user is told the scale is assumed
    assert read_weights(result.weights).config["block_size"] == 6
    pre = read_weights(tmp_path / "run" / "pretrain" / "final.pt")  # the source-only start: not measured
    assert pre.extra["mask_block"]["rule"] == "source" and pre.config["block_size"] == 8
    again = run_training(_spec(tmp_path / "run", source_voxel_size=(20.0,) * 3, recipe={"pretrain_iterations": 2}))
    assert calls == [(32, 32)] and again.mask_block == result.mask_block and again.seconds == 0


def test_unknown_voxel_size_without_a_source_only_model_keeps_the_source_block(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(blocks, "measure_object_sizes", lambda *a, **k: pytest.fail("nothing to measure with"))
    result = run_training(_spec(tmp_path / "run", source_voxel_size=(20.0,) * 3))
    assert result.mask_block["rule"] == "source" and result.mask_block["voxels"] == [8, 8]
    assert "pretrain_iterations 0" in result.mask_block["note"]


def test_block_nm_per_axis_converts_per_axis_and_round_trips():
    """block_nm may give one size per axis (anisotropic 3D, the em3d bundle's [z, y, x] nm): converted per axis,
    kept as a tuple, written as a list, and a wrong count or a non-positive entry is refused."""
    from mtbio.uda.blocks import nm_to_voxels
    from mtbio.uda.config import UDAConfig

    assert nm_to_voxels((100, 160, 160), (50, 5, 5)) == (2, 32, 32)
    cfg = UDAConfig(block_nm=[100, 160, 160])
    assert cfg.block_nm == (100.0, 160.0, 160.0)
    assert cfg.to_dict()["block_nm"] == [100.0, 160.0, 160.0]
    assert UDAConfig(**cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="one per axis"):
        nm_to_voxels((100, 160), (50, 5, 5))
    with pytest.raises(ValueError, match="block_nm"):
        UDAConfig(block_nm=[100, 0, 160])
