"""Crop samplers (determinism, normalisation, rejection, augmentation) and the network factory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtbio.data.sampling import SOURCE_STREAM, TARGET_STREAM, CropSampler, MinForeground, image_stats
from mtbio.networks import NETWORKS, get_network


def _vol(seed: int = 0, shape=(5, 48, 40)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * 20 + 100).astype(np.float32)


def test_deterministic_per_seed_stream_iteration():
    v = _vol()
    a = CropSampler(v, v > 120, crop_size=(16, 16), batch_size=3, seed=4)
    b = CropSampler(v, v > 120, crop_size=(16, 16), batch_size=3, seed=4)
    # order of calls does not matter: batch i is a function of (seed, stream, i)
    b(7), b(2)
    assert torch.equal(a(3)["image"], b(3)["image"]) and torch.equal(a(3)["label"], b(3)["label"])
    assert not torch.equal(a(3)["image"], a(4)["image"])
    c = CropSampler(v, v > 120, crop_size=(16, 16), batch_size=3, seed=4, stream=TARGET_STREAM)
    assert not torch.equal(a(3)["image"], c(3)["image"])
    assert SOURCE_STREAM != TARGET_STREAM


def test_shapes_dtypes_and_section_zscore():
    v = _vol()
    s = CropSampler(v, v > 120, crop_size=(48, 40), batch_size=2, augment=False)
    out = s(0)
    assert out["image"].shape == (2, 1, 48, 40) and out["image"].dtype == torch.float32
    assert out["label"].dtype == torch.int64 and set(out["label"].unique().tolist()) <= {0, 1}
    # full-section crops: z-score per section -> mean 0, std 1 (sklearn-free closed form)
    img = out["image"].double()
    assert torch.allclose(img.mean(dim=(1, 2, 3)), torch.zeros(2, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(img.std(dim=(1, 2, 3), unbiased=False), torch.ones(2, dtype=torch.float64), atol=1e-4)
    mean, std = image_stats(v, 2)
    assert np.allclose(mean, v.reshape(5, -1).mean(1), rtol=1e-5)
    assert np.allclose(std, v.reshape(5, -1).std(1), rtol=1e-4)
    mean3, std3 = image_stats(v, 3)
    assert mean3.shape == (1,) and np.isclose(mean3[0], v.mean(), rtol=1e-5) and np.isclose(std3[0], v.std(), rtol=1e-4)


def test_3d_patches_and_multiple_volumes():
    vols = [_vol(0, (6, 20, 20)), _vol(1, (8, 24, 24))]
    s = CropSampler(vols, [v > 120 for v in vols], crop_size=(4, 16, 16), batch_size=2)
    out = s(1)
    assert out["image"].shape == (2, 1, 4, 16, 16) and out["label"].shape == (2, 1, 4, 16, 16)


def test_augmentation_keeps_image_label_aligned():
    rng = np.random.default_rng(3)
    lab = rng.random((4, 32, 32)) > 0.7
    img = lab.astype(np.float32)  # every section has both classes, so z-scored fg > 0 > bg
    s = CropSampler(img, lab, crop_size=(16, 16), batch_size=16, augment=True, seed=1)
    out = s(0)
    assert torch.equal(out["image"] > 0, out["label"].bool())
    # augmentation changes crops (flips / rot90) relative to the un-augmented sampler with the same draws
    plain = CropSampler(img, lab, crop_size=(16, 16), batch_size=16, augment=False, seed=1)(0)
    assert not torch.equal(plain["image"], out["image"])


def test_foreground_rejection_bounded():
    v = np.zeros((2, 64, 64), np.float32)
    lab = np.zeros((2, 64, 64), bool)
    lab[1, 40:56, 40:56] = True
    v[lab] = 1.0
    accept = MinForeground(0.2)
    s = CropSampler(v, lab, crop_size=(16, 16), batch_size=16, accept=accept, max_retries=200, seed=0)
    assert float(s(0)["label"].float().flatten(1).mean(1).min()) >= 0.2
    # impossible rule: bounded retries, still returns a batch
    never = CropSampler(v, lab, crop_size=(16, 16), batch_size=2, accept=lambda crop: False, max_retries=3)
    assert never(0)["image"].shape == (2, 1, 16, 16)


def test_sampler_errors():
    v = _vol()
    with pytest.raises(ValueError, match="smaller than the crop"):
        CropSampler(v, crop_size=(64, 64), batch_size=1)
    with pytest.raises(ValueError, match="label volume"):
        CropSampler(v, v[:2] > 0, crop_size=(16, 16), batch_size=1)
    with pytest.raises(ValueError, match="needs label"):
        CropSampler(v, crop_size=(16, 16), batch_size=1, accept=MinForeground())
    with pytest.raises(ValueError, match="crop_size"):
        CropSampler(v, crop_size=(16,), batch_size=1)


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("dims", [2, 3])
def test_networks_output_two_channel_logits(name, dims):
    kw = {} if name == "basic_unet" else {"channels": (4, 8, 16), "strides": (2, 2)}
    if name == "basic_unet":
        kw = {"features": (4, 4, 8, 8, 16, 4)}
    net = get_network(name, dims, **kw)
    shape = (2, 1, 16, 16) if dims == 2 else (2, 1, 16, 16, 16)
    out = net(torch.randn(shape))
    assert out.shape == (shape[0], 2, *shape[2:])


def test_network_errors():
    with pytest.raises(ValueError, match="unknown network"):
        get_network("segformer", 2)
    with pytest.raises(ValueError, match="spatial_dims"):
        get_network("unet", 4)
