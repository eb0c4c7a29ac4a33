"""mtbio.data.pooling and the z-pooled Lucchi++ source: shape, voxel size, the pooling rules, lazy cached reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtbio.data.labels import open_label_volume
from mtbio.data.pooling import PooledVolume, pool_sections, pool_z
from mtbio.data.sources import SOURCES, load_split, lucchi_pp_pooled
from mtbio.data.volumes import open_volume
from tests.data.volume_helpers import labelled_section, ramp_volume, save_label_png, write_png_sections

SHAPE = (12, 14)


def test_pool_sections_rules():
    x = np.arange(24, dtype=np.uint8).reshape(6, 2, 2)
    np.testing.assert_allclose(pool_sections(x, 3, "mean"), np.stack([x[:3].mean(0), x[3:].mean(0)]))
    assert pool_sections(x, 3, "mean").dtype == np.float32
    # one pixel, a group of 4 thin sections with 0..4 of them foreground
    votes = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], bool).T[..., None]
    assert pool_sections(votes, 4, "majority")[0, :, 0].tolist() == [False, False, True, True, True]  # tie -> fg
    assert pool_sections(votes, 4, "max")[0, :, 0].tolist() == [False, True, True, True, True]
    assert not pool_sections(np.array([[1], [0], [0]], bool), 3, "majority")[0, 0]  # 1 of 3
    assert pool_sections(np.array([[1], [1], [0]], bool), 3, "majority")[0, 0]  # 2 of 3
    with pytest.raises(ValueError, match="bool label arrays"):
        pool_sections(x, 3, "majority")
    with pytest.raises(ValueError, match="not a multiple of group 4"):
        pool_sections(x, 4, "mean")
    with pytest.raises(ValueError, match="unknown pooling 'median'"):
        pool_sections(x, 3, "median")  # type: ignore[arg-type]


@pytest.fixture
def thin(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A Lucchi++-like ``Test_In`` / ``Test_Out`` of 23 sections (RGBA labels, as the release)."""
    images = ramp_volume((23, *SHAPE), seed=1)
    masks = np.stack([labelled_section(SHAPE, seed=i // 2) for i in range(23)])  # pairs of equal sections
    root = tmp_path / "lucchi_pp"
    write_png_sections(root / "Test_In", images, [f"mask{i:04d}.png" for i in range(23)])
    for i, mask in enumerate(masks):
        save_label_png(root / "Test_Out" / f"{i}.png", mask, "RGBA")
    return root, images, masks


def test_pool_z_volume_shape_voxel_size_and_values(thin):
    root, images, masks = thin
    image = pool_z(open_volume(root / "Test_In", voxel_size=(5, 5, 5)), 5)
    label = pool_z(open_label_volume(root / "Test_Out", voxel_size=(5, 5, 5)), 5)
    assert isinstance(image, PooledVolume) and image.shape == label.shape == (4, *SHAPE)  # 23 // 5: 3 dropped
    assert image.dropped == 3 and image.voxel_size == label.voxel_size == (25.0, 5.0, 5.0)
    assert image.dtype == np.float32 and label.dtype == np.bool_ and label.how == "majority"
    expected = images[:20].reshape(4, 5, *SHAPE).mean(axis=1)
    np.testing.assert_allclose(image[...], expected, rtol=1e-6)
    np.testing.assert_allclose(image[2, 3:7, 1:9], expected[2, 3:7, 1:9], rtol=1e-6)  # a region
    np.testing.assert_allclose(image[1:4:2, :, -1], expected[1:4:2, :, -1], rtol=1e-6)  # a step along z
    counts = masks[:20].reshape(4, 5, *SHAPE).sum(axis=1)
    np.testing.assert_array_equal(label[...], counts >= 3)  # 2 * count >= 5
    np.testing.assert_array_equal(pool_z(open_label_volume(root / "Test_Out"), 5, how="max")[...], counts >= 1)
    assert "group=5" in repr(image) and image.view(np.s_[1:3]).shape == (2, *SHAPE)


def test_pool_z_reads_each_group_once_and_without_cache(thin, monkeypatch):
    root, images, _ = thin
    source = open_volume(root / "Test_In")
    reads: list[object] = []
    inner = source._backend
    original = inner.read
    monkeypatch.setattr(inner, "read", lambda index: reads.append(index[0]) or original(index))
    cached = pool_z(source, 5)
    first = cached[1, 2:5, 2:5]
    again = cached[1:3, :4, :4]
    assert reads == [slice(5, 10, 1), slice(10, 15, 1)]  # group 1 once, then only group 2
    np.testing.assert_array_equal(first[:2, :2], again[0, 2:4, 2:4])
    np.testing.assert_allclose(first, images[5:10, 2:5, 2:5].mean(axis=0), rtol=1e-6)
    reads.clear()
    uncached = pool_z(source, 5, cache_bytes=0)
    np.testing.assert_allclose(uncached[1, 2:5, 2:5], first)
    np.testing.assert_allclose(uncached[1, 2:5, 2:5], first)
    assert len(reads) == 2  # nothing kept: every read pools again (only the region asked)


def test_pool_z_refuses_bad_settings(thin):
    root, _, _ = thin
    image = open_volume(root / "Test_In")
    with pytest.raises(ValueError, match=r"Test_In: group must be between 1 and the 23 sections"):
        pool_z(image, 24)
    with pytest.raises(ValueError, match="does not fit a uint8 image volume"):
        pool_z(image, 5, how="majority")
    with pytest.raises(ValueError, match="does not fit a bool label volume"):
        pool_z(open_label_volume(root / "Test_Out"), 5, how="mean")
    with pytest.raises(ValueError, match="takes a mtbio Volume"):
        pool_z(np.zeros((4, 4, 4)), 2)  # type: ignore[arg-type]


def test_pooled_lucchi_pp_source_on_a_fixture(thin):
    root, images, masks = thin
    assert "lucchi_pp_pooled" in SOURCES and SOURCES["lucchi_pp_pooled"].voxel_size == (50.0, 5.0, 5.0)
    split = lucchi_pp_pooled.load_split(root, "epfl_train", group=4)
    assert split.name == "epfl_train_z4" and split.image.shape == (5, *SHAPE) and split.voxel_size == (20.0, 5.0, 5.0)
    np.testing.assert_allclose(split.image[4], images[16:20].mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(split.label[4], masks[16:20].sum(axis=0) >= 2)
    default = load_split("lucchi_pp_pooled", root, "Test")  # group 10: 23 sections -> 2
    assert default.image.shape == (2, *SHAPE) and default.voxel_size == lucchi_pp_pooled.VOXEL_SIZE
    with pytest.raises(ValueError, match="label_pooling must be 'majority' or 'max'"):
        lucchi_pp_pooled.load_split(root, "epfl_train", label_pooling="mean")  # type: ignore[arg-type]


@pytest.mark.realdata
def test_pooled_lucchi_pp_real(lucchi_pp_dir):
    split = load_split("lucchi_pp_pooled", lucchi_pp_dir, "epfl_train")
    assert split.image.shape == split.label.shape == (16, 768, 1024)  # 165 sections: 160-164 dropped
    assert split.voxel_size == split.image.voxel_size == (50.0, 5.0, 5.0) and split.image.dropped == 5
    thin = load_split("lucchi_pp", lucchi_pp_dir, "epfl_train")
    group = np.asarray(thin.label[150:160])
    np.testing.assert_array_equal(split.label[15], 2 * group.sum(axis=0) >= 10)
    np.testing.assert_allclose(
        split.image[15, :64], np.asarray(thin.image[150:160, :64], np.float64).mean(0), rtol=1e-6
    )
