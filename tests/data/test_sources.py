"""Dataset sources: synthetic fixtures in each release layout, and the real VNC III / Lucchi++ subsets."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from mtbio.data.errors import VolumeError
from mtbio.data.sources import SOURCES, DatasetSplit, load_split, lucchi, lucchi_pp, mitoem, vnc3
from tests.data.volume_helpers import labelled_section, ramp_volume, save_label_png, write_png_sections

SHAPE = (12, 14)


def _masks(n: int, seed: int) -> np.ndarray:
    return np.stack([labelled_section(SHAPE, seed=seed + i) for i in range(n)])


@pytest.fixture
def fake_vnc3(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    images, masks = ramp_volume((20, *SHAPE), seed=3), _masks(20, 0)
    stack = tmp_path / "vnc3" / "stack1"
    (stack / "raw").mkdir(parents=True)
    for i in range(20):
        tifffile.imwrite(stack / "raw" / f"{i:02d}.tif", images[i])
        save_label_png(stack / "mitochondria" / f"{i:02d}.png", masks[i], "1" if i in (1, 7, 18) else "L")
    return tmp_path / "vnc3", images, masks


@pytest.fixture
def fake_lucchi_pp(tmp_path) -> Path:
    root = tmp_path / "lucchi_pp"
    for folder, n, seed, mode in (("Test", 6, 10, "RGBA"), ("Train", 4, 20, "L")):
        write_png_sections(
            root / f"{folder}_In", ramp_volume((n, *SHAPE), seed=seed), [f"mask{i:04d}.png" for i in range(n)]
        )
        for i, mask in enumerate(_masks(n, seed)):
            save_label_png(root / f"{folder}_Out" / f"{i}.png", mask, mode)
    return root


def test_registry_lists_every_source():
    assert set(SOURCES) == {"vnc3", "lucchi", "lucchi_pp", "lucchi_pp_pooled", "mitoem"}
    for info in SOURCES.values():
        assert info.splits and len(info.voxel_size) == 3 and info.download
    with pytest.raises(ValueError, match=r"unknown dataset source 'cremi'.*'vnc3'"):
        load_split("cremi", "/nowhere", "train")


def test_vnc3_splits_on_a_fixture(fake_vnc3):
    root, images, masks = fake_vnc3
    full = load_split("vnc3", root, "all")
    assert isinstance(full, DatasetSplit) and full.image.shape == (20, *SHAPE) and full.voxel_size == vnc3.VOXEL_SIZE
    for split, sections in (("train", slice(0, 10)), ("test", slice(10, 20))):
        part = vnc3.load_split(root, split)
        assert part.name == split and part.image.shape == (10, *SHAPE) and part.label.shape == (10, *SHAPE)
        np.testing.assert_array_equal(part.image[...], images[sections])
        np.testing.assert_array_equal(part.label[...], masks[sections])
    with pytest.raises(ValueError, match=r"unknown VNC III split 'val'; the splits are \['all', 'train', 'test'\]"):
        vnc3.load_split(root, "val")


def test_vnc3_missing_folder_is_named(tmp_path):
    (tmp_path / "stack1").mkdir()
    with pytest.raises(VolumeError, match=r"stack1/raw: missing folder stack1/raw"):
        vnc3.load_split(tmp_path, "all")
    with pytest.raises(VolumeError, match="no such folder"):
        vnc3.load_split(tmp_path / "absent", "all")


def test_lucchi_pp_naming_swap_on_a_fixture(fake_lucchi_pp):
    train, test = lucchi_pp.load_split(fake_lucchi_pp, "epfl_train"), lucchi_pp.load_split(fake_lucchi_pp, "epfl_test")
    assert train.image.path.name == "Test_In" and train.label.path.name == "Test_Out" and len(train.image) == 6
    assert test.image.path.name == "Train_In" and test.label.path.name == "Train_Out" and len(test.image) == 4
    np.testing.assert_array_equal(train.label[...], _masks(6, 10))
    assert lucchi_pp.load_split(fake_lucchi_pp, "Test").image.path == train.image.path
    assert lucchi_pp.load_split(fake_lucchi_pp, "Train").label.path == test.label.path
    assert lucchi_pp.SUBSETS[1] == ("epfl_train", "epfl_test") and lucchi_pp.SUBSETS[2] == ("epfl_test", "epfl_train")


def test_lucchi_pp_image_label_mismatch_is_caught(fake_lucchi_pp):
    (fake_lucchi_pp / "Train_Out" / "3.png").unlink()
    with pytest.raises(VolumeError, match=r"Train_In has spatial shape \(4, 12, 14\).*Train_Out has \(3, 12, 14\)"):
        lucchi_pp.load_split(fake_lucchi_pp, "epfl_test")


def test_lucchi_epfl_multipage_tifs(tmp_path):
    volumes = {}
    for name, n, seed in (("training", 5, 1), ("testing", 4, 2)):
        image, masks = ramp_volume((n, *SHAPE), seed=seed), _masks(n, seed)
        tifffile.imwrite(tmp_path / f"{name}.tif", image, photometric="minisblack")
        tifffile.imwrite(
            tmp_path / f"{name}_groundtruth.tif", np.where(masks, 255, 0).astype(np.uint8), photometric="minisblack"
        )
        volumes[name] = image, masks
    for split, name in (("train", "training"), ("test", "testing")):
        part = load_split("lucchi", tmp_path, split)
        assert part.voxel_size == (5.0, 5.0, 5.0) and part.label.dtype == np.bool_
        np.testing.assert_array_equal(part.image[...], volumes[name][0])
        np.testing.assert_array_equal(part.label[...], volumes[name][1])
    (tmp_path / "testing_groundtruth.tif").unlink()
    with pytest.raises(VolumeError, match=r"testing_groundtruth\.tif: missing testing_groundtruth\.tif"):
        lucchi.load_split(tmp_path, "test")


def test_mitoem_assumed_layout(tmp_path):
    images = ramp_volume((9, *SHAPE), seed=5)
    write_png_sections(tmp_path / "im", images, [f"im{i:04d}.png" for i in range(9)])
    rng = np.random.default_rng(0)
    instances = (rng.random((6, *SHAPE)) < 0.2) * rng.integers(1, 5000, size=(6, *SHAPE))
    for name, part in (("mito_train.h5", instances[:4]), ("mito_val.h5", instances[4:])):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("main", data=part.astype(np.uint16))
    train, val, test = (mitoem.load_split(tmp_path, s) for s in ("train", "val", "test"))
    np.testing.assert_array_equal(train.image[...], images[:4])
    np.testing.assert_array_equal(train.label[...], instances[:4] > 0)
    np.testing.assert_array_equal(val.image[...], images[4:6])
    np.testing.assert_array_equal(val.label[...], instances[4:] > 0)
    assert test.label is None and test.image.shape == (3, *SHAPE) and test.voxel_size == (30.0, 8.0, 8.0)
    np.testing.assert_array_equal(test.image[-1], images[-1])
    for path in (tmp_path / "im").glob("im000[6-8].png"):
        path.unlink()
    with pytest.raises(VolumeError, match=r"im: has 6 sections but split 'test' needs sections 6-6"):
        mitoem.load_split(tmp_path, "test")


@pytest.mark.realdata
def test_vnc3_real(vnc3_dir):
    full, test = load_split("vnc3", vnc3_dir, "all"), load_split("vnc3", vnc3_dir, "test")
    assert full.image.shape == full.label.shape and full.image.dtype == np.uint8
    assert len(test.image) == len(full.image) - 10
    np.testing.assert_array_equal(test.image[0, :64, :64], full.image[10, :64, :64])
    np.testing.assert_array_equal(test.label[-1], full.label[-1])


@pytest.mark.realdata
def test_lucchi_pp_real(lucchi_pp_dir):
    adapt_split, test_split = lucchi_pp.SUBSETS[1]
    adapt, test = (
        load_split("lucchi_pp", lucchi_pp_dir, adapt_split),
        load_split("lucchi_pp", lucchi_pp_dir, test_split),
    )
    assert adapt.image.path.name == "Test_In" and test.image.path.name == "Train_In"
    assert adapt.image.shape == adapt.label.shape and test.image.shape == test.label.shape
    assert adapt.image.shape[1:] == test.image.shape[1:] and adapt.voxel_size == (5.0, 5.0, 5.0)
    section = test.label[len(test.label) // 2]
    assert 0 < section.mean() < 0.5
