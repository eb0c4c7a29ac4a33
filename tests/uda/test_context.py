"""2.5D input (``Recipe.context_sections``): the neighbour rule, training crops, the weights record, the in-memory
prediction and the label-free score."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mtbio.data.context import context_indices, stack_context
from mtbio.data.normalize import zscore
from mtbio.data.sampling import CropSampler
from mtbio.networks import get_network
from mtbio.networks.context import context_of, with_context
from mtbio.networks.weights import WeightsError, WeightsRecord, read_weights, write_weights
from mtbio.uda.config import UDAConfig
from mtbio.uda.recipe import Recipe
from mtbio.uda.run import RunSpec, run_training
from tests._context import context_reference

torch.set_num_threads(2)


def test_context_indices_replicate_the_ends():
    assert context_indices(0, 1, 5).tolist() == [0, 0, 1]
    assert context_indices(4, 2, 5).tolist() == [2, 3, 4, 4, 4]
    assert context_indices(np.arange(2), 1, 2).tolist() == [[0, 0, 1], [0, 1, 1]]
    assert context_indices(0, 2, 1).tolist() == [0, 0, 0, 0, 0]  # one section: repeated
    sections = np.arange(3)[:, None, None] * np.ones((3, 2, 2))
    assert stack_context(sections, 1)[:, :, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 2]]
    assert np.array_equal(stack_context(sections, 0), sections[:, None])
    with pytest.raises(ValueError, match="context_sections"):
        context_indices(0, -1, 3)


def test_sampler_channels_are_the_neighbours_with_replicated_ends():
    rng = np.random.default_rng(0)
    vol = rng.normal(100, 10, (2, 20, 20)).astype(np.float32)  # 2 sections: every draw touches an end
    lab = rng.random(vol.shape) > 0.7
    one = CropSampler(vol, lab, crop_size=(8, 8), batch_size=6, seed=3, augment=False, in_memory=True)
    ctx = CropSampler(
        vol, lab, crop_size=(8, 8), batch_size=6, seed=3, augment=False, in_memory=True, context_sections=1
    )
    a, b = one(5), ctx(5)
    assert tuple(b["image"].shape) == (6, 3, 8, 8) and tuple(b["label"].shape) == (6, 1, 8, 8)
    assert torch.equal(b["image"][:, 1:2], a["image"]) and torch.equal(b["label"], a["label"])  # same draws
    stats = [(float(s.mean()), float(s.std())) for s in vol.astype(np.float64)]
    for crop in b["image"].numpy():
        found = [
            (z, y, x)
            for z in range(2)
            for y in range(13)
            for x in range(13)
            if np.allclose(crop[1], zscore(vol[z, y : y + 8, x : x + 8], *stats[z], precision=np.float64), atol=1e-5)
        ]
        assert len(found) == 1
        z, y, x = found[0]
        for c, zc in enumerate(context_indices(z, 1, 2)):
            ref = zscore(vol[zc, y : y + 8, x : x + 8], *stats[zc], precision=np.float64)
            assert np.allclose(crop[c], ref, atol=1e-5)


def test_sampler_flips_and_rotates_every_channel_alike():
    rng = np.random.default_rng(1)
    pattern = rng.normal(size=(24, 24))
    # every section z-scores to the same image: a correct augmentation leaves the channels equal
    vol = np.stack([pattern * (z + 1) + 10 * z for z in range(4)]).astype(np.float32)
    sampler = CropSampler(vol, crop_size=(12, 12), batch_size=8, seed=0, augment=True, context_sections=2)
    image = sampler(0)["image"]
    assert tuple(image.shape) == (8, 5, 12, 12)
    assert torch.allclose(image, image[:, 2:3].expand_as(image), atol=1e-4)
    plain = CropSampler(vol, crop_size=(12, 12), batch_size=8, seed=0, augment=True)(0)["image"]
    assert torch.allclose(image[:, 2:3], plain, atol=1e-6)  # the same draws as the one-channel sampler


def test_context_needs_2d_crops():
    vol = np.zeros((8, 16, 16), np.float32)
    with pytest.raises(ValueError, match="needs 2D crops"):
        CropSampler(vol, crop_size=(4, 8, 8), batch_size=1, context_sections=1)
    with pytest.raises(ValueError, match="is for 2D networks"):
        Recipe(crop_size=(4, 16, 16), context_sections=1)
    with pytest.raises(ValueError, match="context_sections must be"):
        Recipe(context_sections=-1)


def _data() -> dict[str, object]:
    rng = np.random.default_rng(0)
    lab = rng.random((4, 40, 40)) > 0.8
    img = (lab * 60 + rng.normal(100, 10, lab.shape)).astype(np.float32)
    return dict(source_image=img, source_label=lab, target_image=(255 - img).astype(np.float32))


def test_run_training_records_the_context_and_every_reader_rebuilds_it(tmp_path: Path):
    recipe = Recipe(
        network="small_unet", iterations=2, pretrain_iterations=0, crop_size=16, batch_size=2, context_sections=1,
        score_crops=2, score_crop_size=32, checkpoint_interval=1,
    )  # fmt: skip
    spec = RunSpec(out=tmp_path / "run", config=UDAConfig(block_size=4), recipe=recipe, progress=False, **_data())
    result = run_training(spec)
    record = read_weights(result.weights)
    assert record.context_sections == 1
    net = record.build_network(result.weights)
    assert context_of(net) == 1 and net.state_dict()["model.0.conv.weight"].shape[1] == 3
    assert context_of(result.teacher()) == 1
    assert result.scores and all(r["iteration"] in (1, 2) for r in result.scores)  # scored on 3-channel crops
    # a one-channel network refuses the weights, naming the file and both channel counts
    with pytest.raises(WeightsError, match=r"final\.pt: the weights take 3 input channel\(s\).*the network 1"):
        record.load_into(get_network("small_unet", 2), result.weights)
    # the cached pre-training of another context is not reused
    from mtbio.uda.run import _cached_pretrain

    assert _cached_pretrain(result.weights, dataclasses.replace(recipe, pretrain_iterations=2), 0, UDAConfig()) is None


def test_records_without_the_field_read_as_one_channel(tmp_path: Path):
    net = get_network("small_unet", 2)
    path = write_weights(WeightsRecord.from_network(net, network="small_unet", spatial_dims=2), tmp_path / "w.pt")
    payload = torch.load(path, weights_only=True)
    payload.pop("context_sections")
    torch.save(payload, path)
    record = read_weights(path)
    assert record.context_sections == 0 and context_of(record.build_network(path), None) == 0


def _tiny_context_net(k: int) -> torch.nn.Module:
    torch.manual_seed(0)
    net = get_network("small_unet", 2, in_channels=1 + 2 * k, channels=(4, 8), strides=(2,))
    return with_context(net, k).eval()


def test_predict_in_memory_feeds_the_neighbours():
    from mtbio.uda.evaluate import predict_in_memory

    vol = np.random.default_rng(2).normal(100, 10, (5, 24, 20)).astype(np.float32)
    net = _tiny_context_net(1)
    prob = predict_in_memory(net, vol, roi_size=(16, 16), sections_per_batch=2)
    assert np.allclose(prob, context_reference(net, vol, 1, (16, 16)), atol=1e-5)


def test_score_network_feeds_context_crops():
    from mtbio.uda.selection import sample_crops, score_network

    vol = np.random.default_rng(3).normal(100, 10, (4, 32, 32)).astype(np.float32)
    crops, nbr = sample_crops(vol, (16, 16), 3, 0, adjacent=True, context_sections=1)
    plain, plain_nbr = sample_crops(vol, (16, 16), 3, 0, adjacent=True)
    assert crops.shape == (3, 3, 16, 16) and nbr.shape == (3, 3, 16, 16)
    assert np.array_equal(crops[:, 1:2], plain) and np.array_equal(nbr[:, 1:2], plain_nbr)
    net = _tiny_context_net(1)
    score = score_network(net, vol, crop_size=(16, 16), n_crops=3, block_size=4)
    again = score_network(net, None, crop_size=(16, 16), n_crops=3, block_size=4, sample=(crops, nbr))
    assert score.to_dict() == again.to_dict()
    with pytest.raises(ValueError, match="3 channel"):
        score_network(net, None, crop_size=(16, 16), n_crops=3, block_size=4, sample=(plain, plain_nbr))
