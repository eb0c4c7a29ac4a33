"""Scale augmentation of the source crops: ``CropSampler(zoom=...)`` and ``Recipe.source_zoom``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtbio.data.sampling import CropSampler
from mtbio.uda.blocks import object_diameter
from mtbio.uda.recipe import Recipe

torch.set_num_threads(2)


def _discs(diameter: float = 20.0, size: int = 256, sections: int = 2) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    label = np.zeros((size, size), bool)
    for cy in range(32, size, 64):
        for cx in range(32, size, 64):
            label |= (yy - cy) ** 2 + (xx - cx) ** 2 <= (diameter / 2) ** 2
    return np.stack([label] * sections)


def test_zoomed_crops_keep_their_shape_and_labels_aligned_and_vary_object_size():
    label = _discs()
    image = label.astype(np.float32) + 0.05 * np.random.default_rng(0).standard_normal(label.shape).astype(np.float32)
    sampler = CropSampler(image, label, crop_size=(128, 128), batch_size=8, seed=3, zoom=2.0, augment=False)
    sizes = []
    for i in range(6):
        batch = sampler(i)
        assert batch["image"].shape == (8, 1, 128, 128) and batch["label"].shape == (8, 1, 128, 128)
        fg, lab = batch["image"][:, 0] > 0.5 * batch["image"].amax(dim=(1, 2), keepdim=True)[:, 0], batch["label"][:, 0]
        inter, union = int((fg & (lab > 0)).sum()), int((fg | (lab > 0)).sum())
        assert union == 0 or inter / union > 0.8  # the label follows the image through the resize
        for crop in batch["label"][:, 0].numpy():
            d, _ = object_diameter(crop, min_area=4)
            if d is not None:
                sizes.append(d)
    assert min(sizes) < 16 and max(sizes) > 26  # discs of 20 px shown from ~10 to ~40 px
    again = CropSampler(image, label, crop_size=(128, 128), batch_size=8, seed=3, zoom=2.0, augment=False)
    assert torch.equal(again(4)["image"], sampler(4)["image"])  # deterministic per (seed, iteration)


def test_zoom_one_is_the_plain_sampler():
    label = _discs()
    image = label.astype(np.float32)
    plain = CropSampler(image, label, crop_size=(128, 128), batch_size=4, seed=1)
    one = CropSampler(image, label, crop_size=(128, 128), batch_size=4, seed=1, zoom=1.0)
    for i in range(3):
        assert torch.equal(plain(i)["image"], one(i)["image"]) and torch.equal(plain(i)["label"], one(i)["label"])
    sizes = {object_diameter(c, min_area=4)[0] for c in plain(0)["label"][:, 0].numpy()} - {None}
    assert all(abs(d - 20.0) < 2.0 for d in sizes)


@pytest.mark.parametrize("zoom", [0.5, float("inf"), float("nan")])
def test_bad_zoom_is_refused(zoom):
    with pytest.raises(ValueError, match="zoom"):
        CropSampler(np.zeros((2, 64, 64), np.float32), crop_size=(32, 32), batch_size=1, zoom=zoom)


def test_zoom_needs_2d_crops():
    with pytest.raises(ValueError, match="2D crops"):
        CropSampler(np.zeros((8, 32, 32), np.float32), crop_size=(4, 16, 16), batch_size=1, zoom=2.0)
    with pytest.raises(ValueError, match="source_zoom"):
        Recipe(crop_size=(4, 16, 16), source_zoom=2.0)
    with pytest.raises(ValueError, match="source_zoom"):
        Recipe(source_zoom=0.5)
    assert Recipe().source_zoom == 1.0  # off by default: the validated recipe knows its voxel size


def test_run_training_records_source_zoom_and_never_reuses_a_pretraining_of_another(tmp_path):
    import dataclasses

    from mtbio.networks.weights import read_weights
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.recipe import PRETRAIN_SEED_OFFSET
    from mtbio.uda.run import RunSpec, _cached_pretrain, run_training

    label = _discs(diameter=8.0, size=64, sections=4)
    image = (label * 60 + np.random.default_rng(0).normal(100, 10, label.shape)).astype(np.float32)
    recipe = Recipe(
        network="small_unet", iterations=2, pretrain_iterations=2, crop_size=32, batch_size=2, score_crops=0,
        source_zoom=2.0,
    )  # fmt: skip
    spec = RunSpec(
        out=tmp_path / "run", config=UDAConfig(block_size=8), recipe=recipe, progress=False,
        source_image=image, source_label=label, target_image=(255 - image).astype(np.float32),
    )  # fmt: skip
    result = run_training(spec)
    assert read_weights(result.weights).extra["recipe"]["source_zoom"] == 2.0
    pre = spec.pretrain_weights_path
    assert read_weights(pre).extra["recipe"]["source_zoom"] == 2.0
    cfg = UDAConfig()
    assert _cached_pretrain(pre, recipe, PRETRAIN_SEED_OFFSET, cfg) == pre  # the same recipe reuses it
    assert _cached_pretrain(pre, dataclasses.replace(recipe, source_zoom=1.0), PRETRAIN_SEED_OFFSET, cfg) is None
    # nor one trained without the source intensity augmentation for a run that asks for it
    assert _cached_pretrain(pre, recipe, PRETRAIN_SEED_OFFSET, UDAConfig(source_augment=True)) is None
