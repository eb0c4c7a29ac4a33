"""Target crops along three planes: ``CropSampler(planes="xyz")`` and ``Recipe.target_planes``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mtbio.data.sampling import CropSampler
from mtbio.uda.recipe import Recipe

torch.set_num_threads(2)


def _ramp(depth: int = 40, size: int = 48) -> np.ndarray:
    """Section z is constant ``10 * z`` plus a little noise, so z-scoring a section takes its level away."""
    noise = np.random.default_rng(0).normal(0, 1, (depth, size, size))
    return (10.0 * np.arange(depth)[:, None, None] + noise).astype(np.float32)


def _plane_kind(crop: np.ndarray, volume: np.ndarray) -> str:
    """Where an un-augmented crop (h, w) came from: an xy section, an xz or a yz plane of the z-scored volume."""
    from mtbio.data.normalize import image_stats, zscore

    mean, std = image_stats(volume, 2)
    norm = zscore(volume, mean[:, None, None], std[:, None, None], precision=np.float64)
    stacks = {"xy": norm, "xz": norm.transpose(1, 0, 2), "yz": norm.transpose(2, 0, 1)}  # (planes, rows, cols)
    for kind, stack in stacks.items():
        windows = np.lib.stride_tricks.sliding_window_view(stack, crop.shape, axis=(1, 2))
        if np.isclose(windows, crop, atol=1e-5).all(axis=(-2, -1)).any():
            return kind
    return "none"


def test_xyz_crops_come_from_all_three_planes_each_row_zscored_by_its_own_section():
    volume = _ramp(depth=24, size=24)
    sampler = CropSampler(volume, crop_size=(16, 16), batch_size=8, seed=2, planes="xyz", augment=False)
    kinds = [_plane_kind(crop, volume) for i in range(3) for crop in sampler(i)["image"][:, 0].numpy()]
    assert "none" not in kinds
    assert {"xy", "xz", "yz"} <= set(kinds)  # 24 draws, each plane with probability 1/3
    # the sections' levels (10 z) are z-scored away row by row: no ramp is left along an xz / yz crop
    for crop in sampler(0)["image"][:, 0].numpy():
        assert abs(float(crop.mean())) < 0.5 and abs(float(np.diff(crop.mean(axis=1)).mean())) < 0.2


def test_a_shallow_volume_is_mirrored_at_its_last_section_and_labels_follow():
    volume = _ramp(depth=10, size=32)
    label = np.zeros(volume.shape, bool)
    label[3:6, 8:20, 8:20] = True  # a block of sections 3-5
    sampler = CropSampler(volume, label, crop_size=(16, 16), batch_size=12, seed=1, planes="xyz", augment=False)
    plane_crops = 0
    for i in range(4):
        batch = sampler(i)
        assert batch["image"].shape == (12, 1, 16, 16) and batch["label"].shape == (12, 1, 16, 16)
        for img, lab in zip(batch["image"][:, 0].numpy(), batch["label"][:, 0].numpy()):
            if np.allclose(img[10:16], img[8:2:-1]):  # rows 10.. mirror rows 8..3: an xz / yz crop of 10 sections
                plane_crops += 1
                assert np.array_equal(lab[10:16], lab[8:2:-1])
                assert not lab[:3].any() and not lab[6:10].any()  # the label's sections where the image's are
    assert plane_crops > 0


def test_planes_xy_draws_the_same_crops_as_before():
    volume = _ramp()
    a = CropSampler(volume, crop_size=(16, 16), batch_size=4, seed=5)
    b = CropSampler(volume, crop_size=(16, 16), batch_size=4, seed=5, planes="xy")
    for i in range(3):
        assert torch.equal(a(i)["image"], b(i)["image"])
    c = CropSampler(volume, crop_size=(16, 16), batch_size=4, seed=5, planes="xyz")
    assert torch.equal(c(1)["image"], c(1)["image"])  # deterministic per iteration


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(crop_size=(4, 16, 16)), "plain 2D crops"),
        (dict(crop_size=(16, 16), context_sections=1), "plain 2D crops"),
        (dict(crop_size=(16, 16), zoom=2.0), "plain 2D crops"),
        (dict(crop_size=(16, 16), planes="xz"), "planes must be one of"),
    ],
)
def test_bad_plane_requests_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CropSampler(_ramp(), batch_size=1, **{"planes": "xyz", **kwargs})


def test_a_volume_too_narrow_for_plane_crops_is_refused():
    with pytest.raises(ValueError, match="xz / yz planes need"):
        CropSampler(np.zeros((1, 32, 32), np.float32), crop_size=(16, 16), batch_size=1, planes="xyz")


def test_recipe_target_planes():
    assert Recipe().target_planes == "xy"  # the validated recipe (docs/uda.md "Target crops along three planes")
    assert Recipe(target_planes="auto").to_dict()["target_planes"] == "auto"
    assert type(Recipe(target_planes="xyz").to_dict()["target_planes"]) is str  # plain types in the weights record
    with pytest.raises(ValueError, match="target_planes 'xyz'"):
        Recipe(crop_size=(4, 16, 16), target_planes="xyz")
    with pytest.raises(ValueError, match="target_planes 'xyz'"):
        Recipe(context_sections=1, target_planes="xyz")
    with pytest.raises(ValueError, match="planes"):
        Recipe(target_planes="xz")


def _spec(out: Path, planes: str, voxel_size, depth: int = 40):
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.run import RunSpec

    rng = np.random.default_rng(0)
    label = np.zeros((depth, 48, 48), bool)
    label[:, 10:20, 10:20] = True
    image = (label * 60 + rng.normal(100, 10, label.shape)).astype(np.float32)
    recipe = Recipe(
        network="small_unet", iterations=2, pretrain_iterations=0, crop_size=32, batch_size=2, score_crops=0,
        target_planes=planes,
    )  # fmt: skip
    return RunSpec(
        out=out, config=UDAConfig(block_size=8), recipe=recipe, progress=False, source_image=image,
        source_label=label, target_image=(255 - image).astype(np.float32), target_voxel_size=voxel_size,
        source_voxel_size=voxel_size,
    )  # fmt: skip


@pytest.mark.parametrize(
    "planes, voxel_size, depth, used",
    [
        ("auto", (5.0, 5.0, 5.0), 40, "xyz"),  # isotropic, deep enough
        ("auto", (40.0, 5.0, 5.0), 40, "xy"),  # serial sections
        ("auto", None, 40, "xy"),  # voxel size unknown
        ("auto", (5.0, 5.0, 5.0), 8, "xy"),  # too thin
        ("xyz", None, 40, "xyz"),  # asked for: the user knows the target
        ("xy", (5.0, 5.0, 5.0), 40, "xy"),
    ],
)
def test_target_planes_resolve_as_inference_planes(planes, voxel_size, depth, used):
    from types import SimpleNamespace

    from mtbio.uda.run import _target_planes

    spec = SimpleNamespace(recipe=Recipe(target_planes=planes), target_voxel_size=voxel_size)
    assert _target_planes(spec, SimpleNamespace(target_image=np.zeros((depth, 48, 48), np.float32))) == used
    # a list of target volumes: xyz only when every volume takes it
    both = SimpleNamespace(target_image=[np.zeros((depth, 48, 48), np.float32), np.zeros((8, 48, 48), np.float32)])
    assert _target_planes(spec, both) == ("xyz" if planes == "xyz" else "xy")


def test_run_training_draws_and_records_the_resolved_target_planes(tmp_path, monkeypatch):
    from mtbio.data import sampling
    from mtbio.networks.weights import read_weights
    from mtbio.uda.run import run_training

    made = []
    real = sampling.CropSampler.__init__

    def spy(self, *args, **kwargs):
        made.append((kwargs["stream"], kwargs.get("planes", "xy")))
        real(self, *args, **kwargs)

    monkeypatch.setattr(sampling.CropSampler, "__init__", spy)
    result = run_training(_spec(tmp_path / "run", "auto", (5.0, 5.0, 5.0)))
    record = read_weights(result.weights)
    assert record.extra["target_planes"] == "xyz" and record.extra["recipe"]["target_planes"] == "auto"
    assert sorted(made) == [(sampling.SOURCE_STREAM, "xy"), (sampling.TARGET_STREAM, "xyz")]  # source crops stay xy


def test_xyz_on_an_anisotropic_target_is_refused_before_training(tmp_path):
    from mtbio.uda.run import run_training

    with pytest.raises(ValueError, match=r"isotropic.*target \(target_planes\)"):
        run_training(_spec(tmp_path / "run", "xyz", (40.0, 5.0, 5.0)))
    assert not (tmp_path / "run").exists()


def test_a_run_recorded_before_target_planes_existed_resumes_only_with_xy(tmp_path):
    from mtbio.uda.run import _check_resume

    old = Recipe().to_dict()
    del old["target_planes"]  # a config.json written before the field existed (xy crops)
    (tmp_path / "config.json").write_text(json.dumps({"recipe": old}))
    _check_resume(tmp_path / "config.json", {"recipe": Recipe().to_dict()})
    with pytest.raises(ValueError, match=r"recipe\.target_planes xy -> xyz"):
        _check_resume(tmp_path / "config.json", {"recipe": Recipe(target_planes="xyz").to_dict()})
