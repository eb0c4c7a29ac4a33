"""Property tests of the block masks through the public API."""

from __future__ import annotations

import math

import pytest
import torch

from mtbio.masking import apply_mask, block_grid, complementary_masks, random_mask, random_pair

SHAPES = [((3, 1, 64, 64), 16), ((2, 1, 50, 37), 8), ((2, 1, 12, 40, 33), (4, 8, 8)), ((1, 1, 9, 20, 20), 5)]


def _block_values(m: torch.Tensor, block: tuple[int, ...]) -> list[torch.Tensor]:
    """Every block's voxels (as flat tensors), blocks anchored at 0 and cropped at the border."""
    spatial = m.shape[2:]
    grid = [math.ceil(s / b) for s, b in zip(spatial, block)]
    out = []
    for idx in torch.cartesian_prod(*[torch.arange(g) for g in grid]).reshape(-1, len(grid)).tolist():
        sl = tuple(slice(i * b, min((i + 1) * b, s)) for i, b, s in zip(idx, block, spatial))
        out.append(m[(slice(None), 0, *sl)].reshape(m.shape[0], -1))
    return out


@pytest.mark.parametrize("shape,block", SHAPES)
def test_complementary_partition_and_blocks(shape, block):
    g = torch.Generator().manual_seed(0)
    m, mc = complementary_masks(shape, block, 0.5, g)
    assert m.shape == shape and mc.shape == shape
    assert torch.equal(m + mc, torch.ones(shape))
    assert torch.equal(m * mc, torch.zeros(shape))
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    b = (block,) * (len(shape) - 2) if isinstance(block, int) else block
    for vals in _block_values(m, b):
        # block-constant per image
        assert torch.all(vals == vals[:, :1])


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_measured_ratio_close_to_r(ratio):
    g = torch.Generator().manual_seed(1)
    shape = (4, 1, 128, 128)
    m = random_mask(shape, 16, ratio, g)
    n_blocks = math.prod(block_grid(shape, 16))
    # divisible shape: exactly round(r * n) hidden blocks per image
    hidden = 1.0 - m.flatten(1).mean(1)
    assert torch.allclose(hidden, torch.full((4,), round(ratio * n_blocks) / n_blocks))
    # non-divisible shape: close to r (partial edge blocks)
    m2 = random_mask((8, 1, 100, 90), 16, ratio, g)
    assert abs(float(1.0 - m2.mean()) - ratio) < 0.08


def test_seeded_reproducible_and_distinct_across_images():
    a = complementary_masks((4, 1, 64, 64), 8, generator=torch.Generator().manual_seed(7))
    b = complementary_masks((4, 1, 64, 64), 8, generator=torch.Generator().manual_seed(7))
    c = complementary_masks((4, 1, 64, 64), 8, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0][0], a[0][1])  # images of a batch get different masks


def test_random_pair_is_not_complementary():
    m1, m2 = random_pair((4, 1, 64, 64), 8, 0.5, torch.Generator().manual_seed(0))
    overlap_hidden = ((1 - m1) * (1 - m2)).mean()
    assert 0.1 < float(overlap_hidden) < 0.4  # ~0.25 for independent masks
    assert float(1 - m1.mean()) == pytest.approx(0.5) and float(1 - m2.mean()) == pytest.approx(0.5)


def test_device_kwarg_and_apply_mask():
    m, mc = complementary_masks((2, 1, 16, 16), 4, device="cpu")
    assert m.device.type == "cpu"
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(apply_mask(x, m) + apply_mask(x, mc), x)
    with pytest.raises(ValueError, match="does not match"):
        apply_mask(x, m[:, :, :8])


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(shape=(2, 1, 16), block_size=4), "mask shape"),
        (dict(shape=(2, 3, 16, 16), block_size=4), "one channel"),
        (dict(shape=(2, 1, 16, 16), block_size=(4, 4, 4)), "block_size"),
        (dict(shape=(2, 1, 16, 16), block_size=0), "block_size"),
        (dict(shape=(2, 1, 16, 16), block_size=4, ratio=1.5), "ratio"),
    ],
)
def test_bad_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        complementary_masks(**kwargs)
