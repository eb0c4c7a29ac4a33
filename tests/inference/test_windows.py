"""The window grid equals MONAI's; blocks tile the volume; the accumulator keeps carried sums."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from mtbio.inference.blending import importance_map
from mtbio.inference.merger import SlabAccumulator
from mtbio.inference.windows import WindowGrid, iter_blocks, resolve_block_shape

CASES = [
    ((37, 50, 45), (16, 24, 16), 0.25),
    ((64, 256, 256), (32, 96, 96), 0.25),
    ((10, 33), (8, 8), 0.5),
    ((7, 100), (16, 30), 0.25),  # roi larger than the volume along axis 0
    ((20, 20, 20), (20, 5, 7), 0.9),
    ((5, 64, 64), (1, 32, 32), 0.25),
]


@pytest.mark.parametrize(("shape", "roi", "overlap"), CASES)
def test_window_starts_equal_monai(shape, roi, overlap):
    grid = WindowGrid.build(shape, roi, overlap)
    padded = tuple(max(s, r) for s, r in zip(shape, roi))
    interval = _get_scan_interval(padded, roi, len(shape), (overlap,) * len(shape))
    monai = [tuple(s.start for s in sl) for sl in dense_patch_slices(padded, roi, interval)]
    assert grid.all_windows() == monai
    assert grid.padded == padded
    assert grid.pad_lo == tuple((p - s) // 2 for p, s in zip(padded, shape))


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_importance_map_is_monais(mode):
    ours = importance_map((6, 10, 8), mode, 0.125)
    ref = compute_importance_map((6, 10, 8), mode=mode, sigma_scale=0.125)
    assert torch.equal(ours, ref)


def test_rows_intersecting_match_brute_force():
    grid = WindowGrid.build((50, 10), (12, 10), 0.4)
    for lo, hi in [(0, 5), (5, 17), (30, 50), (49, 50)]:
        i0, i1 = grid.rows_intersecting(lo, hi)
        brute = [i for i, s in enumerate(grid.starts[0]) if s < hi and s + 12 > lo]
        assert list(range(i0, i1)) == brute


@pytest.mark.parametrize(("shape", "chunks", "block"), [((37, 50, 45), (8, 16, 16), None), ((9, 13), (4, 5), (5, 6))])
def test_blocks_tile_the_volume_once_and_are_chunk_aligned(shape, chunks, block):
    bs = resolve_block_shape(shape, chunks, block)
    assert all(b % c == 0 or b >= s for b, c, s in zip(bs, chunks, shape))
    cover = np.zeros(shape, dtype=int)
    total = 0
    for b in iter_blocks(shape, chunks, bs):
        cover[b.slices()] += 1
        assert all(lo % c == 0 for lo, c in zip(b.lo, chunks))
        total += b.num_chunks
    assert (cover == 1).all()
    assert total == int(np.prod([-(-s // c) for s, c in zip(shape, chunks)]))


def test_accumulator_shift_keeps_overlap_and_normalises():
    acc = SlabAccumulator(2, (0, 0), (10, 4))
    w = torch.full((6, 4), 2.0)
    acc.add((0, 0), torch.ones(2, 6, 4) * w, w)
    acc.add((4, 0), torch.full((2, 6, 4), 3.0) * w, w)
    moved = acc.shifted(5, 12)
    assert torch.equal(moved.sums[:, :5], acc.sums[:, 5:10])
    assert torch.equal(moved.sums[:, 5:], torch.zeros(2, 2, 4))
    out = acc.normalized((0, 0), (10, 4))
    assert torch.allclose(out[:, 4:6], torch.full((2, 2, 4), 2.0))
    with pytest.raises(ValueError, match="no window"):
        SlabAccumulator(1, (0,), (3,)).normalized((0,), (3,))


def test_bad_grid_arguments():
    with pytest.raises(ValueError, match="overlap"):
        WindowGrid.build((10, 10), (4, 4), 1.0)
    with pytest.raises(ValueError, match="entries"):
        WindowGrid.build((10, 10), (4, 4, 4), 0.25)
    assert len(list(itertools.islice(iter_blocks((4, 4), (2, 2), (2, 4)), 10))) == 2
