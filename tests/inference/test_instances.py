"""Blockwise instance labelling against skimage.measure.label on the whole volume."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from skimage.measure import label as sk_label

from mtbio.data.store import IncompletePredictionError, create_prediction_store, encode_probability, mark_complete
from mtbio.inference.instances import WatershedSplit, instances_from_store, label_blockwise


def assert_same_objects(ours: np.ndarray, ref: np.ndarray) -> None:
    """Equal up to renumbering: same foreground, a bijection between ids, ids consecutive 1..K."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    np.testing.assert_array_equal(ours > 0, ref > 0)
    fg = ref > 0
    pairs = np.unique(np.stack([ours[fg], ref[fg]]), axis=1)
    n_ours, n_ref = len(np.unique(ours[fg])), len(np.unique(ref[fg]))
    assert n_ours == n_ref == pairs.shape[1], (n_ours, n_ref, pairs.shape[1])
    assert int(ours.max()) == n_ours  # consecutive ids


@pytest.mark.parametrize("density", [0.15, 0.35, 0.55])
@pytest.mark.parametrize("connectivity", [1, 2, 3])
def test_random_3d_matches_skimage(density: float, connectivity: int) -> None:
    rng = np.random.default_rng(int(density * 100) + connectivity)
    mask = rng.random((19, 33, 26)) < density  # not divisible by the block shape
    ours = label_blockwise(mask, block_shape=(5, 8, 7), connectivity=connectivity)
    assert_same_objects(ours, sk_label(mask, connectivity=connectivity))


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6])
@pytest.mark.parametrize("connectivity", [1, 2])
def test_random_2d_matches_skimage(density: float, connectivity: int) -> None:
    rng = np.random.default_rng(7 + int(density * 100) + connectivity)
    mask = rng.random((97, 61)) < density
    ours = label_blockwise(mask, block_shape=(10, 9), connectivity=connectivity)
    assert_same_objects(ours, sk_label(mask, connectivity=connectivity))


def test_single_voxel_blocks_and_one_big_block() -> None:
    rng = np.random.default_rng(3)
    mask = rng.random((6, 7, 5)) < 0.4
    ref = sk_label(mask, connectivity=3)
    assert_same_objects(label_blockwise(mask, block_shape=(1, 1, 1), connectivity=3), ref)
    assert_same_objects(label_blockwise(mask, block_shape=(50, 50, 50), connectivity=3), ref)


def test_u_shape_joined_only_in_a_far_block() -> None:
    mask = np.zeros((40, 30), dtype=bool)
    mask[0:35, 3] = True  # left leg, blocks in column 0
    mask[0:35, 25] = True  # right leg, blocks in column 2
    mask[34, 3:26] = True  # bottom, joined only in the last block row
    ours = label_blockwise(mask, block_shape=(8, 10))
    assert ours.max() == 1
    assert_same_objects(ours, sk_label(mask, connectivity=1))


def _spiral(n: int) -> np.ndarray:
    """A square spiral with one-pixel gaps between its arms: a single object."""
    mask = np.zeros((n, n), dtype=bool)
    lengths = [n - 1, n - 1, n - 1]
    length = n - 3
    while length > 0:
        lengths += [length, length]
        length -= 2
    r = c = 0
    mask[0, 0] = True
    for k, length in enumerate(lengths):
        dr, dc = [(0, 1), (1, 0), (0, -1), (-1, 0)][k % 4]
        for _ in range(length):
            r, c = r + dr, c + dc
            mask[r, c] = True
    return mask


@pytest.mark.parametrize("connectivity", [1, 2])
def test_spiral_spanning_many_blocks(connectivity: int) -> None:
    mask = _spiral(61)
    ref = sk_label(mask, connectivity=connectivity)
    assert ref.max() == 1
    ours = label_blockwise(mask, block_shape=(7, 6), connectivity=connectivity)
    assert_same_objects(ours, ref)


def test_diagonal_contact_across_a_block_corner_2d() -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[3, 3] = mask[4, 4] = True  # touch only by a corner, in diagonal blocks
    mask[3, 4] = False
    assert label_blockwise(mask, block_shape=(4, 4), connectivity=1).max() == 2
    assert label_blockwise(mask, block_shape=(4, 4), connectivity=2).max() == 1
    anti = np.zeros((8, 8), dtype=bool)
    anti[3, 4] = anti[4, 3] = True  # the other diagonal
    assert label_blockwise(anti, block_shape=(4, 4), connectivity=2).max() == 1


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        ((4, 4, 4), {1: 2, 2: 2, 3: 1}),
        ((4, 4, 3), {1: 2, 2: 1, 3: 1}),
        ((4, 2, 2), {1: 2, 2: 2, 3: 1}),
        ((4, 3, 3), {1: 1, 2: 1, 3: 1}),
        ((5, 3, 3), {1: 2, 2: 2, 3: 2}),
    ],
)
def test_corner_and_edge_contacts_3d(second: tuple[int, int, int], expected: dict[int, int]) -> None:
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[3, 3, 3] = True
    mask[second] = True
    for connectivity, count in expected.items():
        ours = label_blockwise(mask, block_shape=(4, 4, 4), connectivity=connectivity)
        assert ours.max() == count == sk_label(mask, connectivity=connectivity).max()


def test_threshold_encodings() -> None:
    p = np.array([[0.0, 0.49, 0.5, 0.51, 1.0]], dtype=np.float32)
    u8 = encode_probability(p, "uint8")  # 0, 125, 128, 130, 255
    expected = np.array([[0, 0, 1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(label_blockwise(p, block_shape=(1, 2)) > 0, expected)
    np.testing.assert_array_equal(label_blockwise(u8, block_shape=(1, 2)) > 0, expected)
    edge = np.array([[127, 128]], dtype=np.uint8)  # uint8 >= 128 is p >= 0.5
    np.testing.assert_array_equal(label_blockwise(edge) > 0, [[False, True]])
    ints = np.array([[0, 1, 0, 2]], dtype=np.int32)
    np.testing.assert_array_equal(label_blockwise(ints, threshold=None), [[0, 1, 0, 2]])


class CountingArray:
    """Wraps an array and records the largest number of elements read at once."""

    def __init__(self, array) -> None:
        self.array = array
        self.shape, self.dtype, self.chunks = array.shape, array.dtype, getattr(array, "chunks", None)
        self.largest = 0

    def __getitem__(self, index):
        out = np.asarray(self.array[index])
        self.largest = max(self.largest, out.size)
        return out

    def __setitem__(self, index, value) -> None:
        self.array[index] = value


def test_zarr_in_zarr_out_never_reads_the_whole_volume(tmp_path) -> None:
    rng = np.random.default_rng(11)
    data = (rng.random((24, 40, 36)) < 0.3).astype(np.uint8) * 255
    src = zarr.create_array(str(tmp_path / "in.zarr"), shape=data.shape, chunks=(8, 10, 12), dtype=np.uint8)
    src[...] = data
    dst = zarr.create_array(str(tmp_path / "out.zarr"), shape=data.shape, chunks=(8, 10, 12), dtype=np.uint32)
    mask, out = CountingArray(src), CountingArray(dst)
    label_blockwise(mask, out, connectivity=3)  # block shape = the output's chunks
    assert_same_objects(dst[...], sk_label(data > 0, connectivity=3))
    block = 8 * 10 * 12
    face = 2 * 12 * 14  # two planes of the largest face, widened by one voxel on each side
    assert mask.largest == block
    assert out.largest <= max(block, face) < data.size // 10


def test_progress_and_validation() -> None:
    mask = np.ones((10, 10), dtype=bool)
    calls = []
    label_blockwise(mask, block_shape=(5, 5), progress=lambda d, t: calls.append((d, t)))
    # 4 blocks labelled, 4 block borders with a lower neighbour (2 blocks x 1 axis + 1 block x 2 axes), 4 relabelled
    assert calls[-1] == (12, 12) and len(calls) == 12
    with pytest.raises(ValueError, match="connectivity"):
        label_blockwise(mask, connectivity=3)
    with pytest.raises(ValueError, match="threshold"):
        label_blockwise(mask, threshold=1.5)
    with pytest.raises(ValueError, match="output shape"):
        label_blockwise(mask, np.zeros((9, 10), np.uint32))
    with pytest.raises(ValueError, match="unsigned"):
        label_blockwise(mask, np.zeros((10, 10), np.int32))
    with pytest.raises(ValueError, match="2D"):
        label_blockwise(np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match="block_shape"):
        label_blockwise(mask, block_shape=(5,))
    checker = np.indices((40, 40)).sum(axis=0) % 2 == 0  # 800 isolated pixels
    with pytest.raises(ValueError, match="uint64"):
        label_blockwise(checker, np.zeros((40, 40), np.uint8), block_shape=(40, 40))


def _balls(shape, specs):
    grid = np.indices(shape)
    mask = np.zeros(shape, dtype=bool)
    for center, radius in specs:
        mask |= sum((g - c) ** 2 for g, c in zip(grid, center)) <= radius**2
    return mask


@pytest.mark.parametrize("block_shape", [(40, 48, 64), (16, 16, 16), (13, 11, 17)])
def test_watershed_splits_touching_balls_consistently(block_shape) -> None:
    specs = [((20, 24, 20), 10), ((20, 24, 37), 10), ((20, 24, 57), 4)]
    mask = _balls((40, 48, 64), specs)
    assert sk_label(mask).max() == 2  # the two big balls touch
    ours = label_blockwise(mask, block_shape=block_shape, split=WatershedSplit(h=2.0, halo=12))
    assert ours.max() == 3
    for center, radius in specs:  # each ball's interior is one instance, its own
        inner = _balls(mask.shape, [(center, radius - 3)])
        assert len(np.unique(ours[inner])) == 1
    ids = [ours[c] for c, _ in specs]
    assert len(set(ids)) == 3
    # the split never joins different objects of the mask
    ref = sk_label(mask)
    fg = mask
    pairs = np.unique(np.stack([ours[fg], ref[fg]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]


def _store(tmp_path, prob: np.ndarray, *, complete: bool = True):
    path = tmp_path / "pred.zarr"
    store = create_prediction_store(path, prob.shape, chunks=(8, 16, 16), voxel_size=(5.0, 5.0, 5.0))
    store.array[1] = encode_probability(prob, "uint8")
    store.array[0] = encode_probability(1 - prob, "uint8")
    if complete:
        mark_complete(path)
    return path


def test_instances_from_store_layout_and_rerun(tmp_path) -> None:
    rng = np.random.default_rng(5)
    prob = rng.random((20, 40, 36)).astype(np.float32)
    path = _store(tmp_path, prob)
    out = instances_from_store(path, connectivity=1)
    fg = encode_probability(prob, "uint8") >= 128
    assert_same_objects(out[...], sk_label(fg, connectivity=1))
    root = zarr.open_group(str(path), mode="r")
    assert root["labels"].attrs["ome"]["labels"] == ["instances"]
    inst = root["labels/instances"]
    meta = inst.attrs["mtbio"]
    assert meta["complete"] is True and meta["num_instances"] == sk_label(fg, connectivity=1).max()
    ms = inst.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"] and ms["datasets"][0]["path"] == "0"
    assert "image-label" in inst.attrs["ome"]
    assert inst["0"].dtype == np.uint32 and inst["0"].chunks == (8, 16, 16)
    # same options: returned as is; other options: refused unless overwrite
    again = instances_from_store(path, connectivity=1)
    np.testing.assert_array_equal(again[...], out[...])
    with pytest.raises(FileExistsError, match="overwrite"):
        instances_from_store(path, connectivity=3)
    three = instances_from_store(path, connectivity=3, overwrite=True)
    assert_same_objects(three[...], sk_label(fg, connectivity=3))
    assert zarr.open_group(str(path), mode="r")["labels"].attrs["ome"]["labels"] == ["instances"]


def test_instances_from_incomplete_store_is_refused(tmp_path) -> None:
    path = _store(tmp_path, np.zeros((4, 8, 8), np.float32), complete=False)
    with pytest.raises(IncompletePredictionError):
        instances_from_store(path)


def test_instances_from_store_with_watershed(tmp_path) -> None:
    mask = _balls((24, 32, 48), [((12, 16, 14), 8), ((12, 16, 28), 8)])
    path = _store(tmp_path, mask.astype(np.float32))
    out = instances_from_store(path, watershed=WatershedSplit(h=2.0, halo=10))
    assert int(np.asarray(out[...]).max()) == 2
    meta = zarr.open_group(str(path), mode="r")["labels/instances"].attrs["mtbio"]
    assert meta["watershed"]["halo"] == 10 and meta["num_instances"] == 2
