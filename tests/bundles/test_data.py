"""mtbio.bundle.data: the bundles' volume pairs, PATH[:KEY] specs and physical mask blocks."""

from __future__ import annotations

import numpy as np
import pytest

from mtbio.bundle.data import (
    DomainPair,
    block_in_voxels,
    em2d_pair,
    em3d_pair,
    mitoem_pair,
    open_spec,
    patch_in_voxels,
    synthetic_pair,
    volume_pair,
)
from tests.conftest import SHARED_DATA


def test_block_in_voxels():
    assert block_in_voxels(128, (30, 8, 8)) == (4, 16, 16)
    assert block_in_voxels(160, (5, 5, 5)) == (32, 32, 32)
    assert block_in_voxels(10, (50, 4.6, 4.6)) == (1, 2, 2)  # at least one voxel per axis
    with pytest.raises(ValueError, match="positive"):
        block_in_voxels(0, (1, 1, 1))
    assert block_in_voxels((100, 160, 160), (50, 5, 5)) == (2, 32, 32)  # one size per axis
    assert block_in_voxels((100, 160, 160), (50, 4.6, 4.6)) == (2, 35, 35)
    with pytest.raises(ValueError, match="one per axis"):
        block_in_voxels((100, 160), (50, 5, 5))
    with pytest.raises(ValueError, match="voxel size is unknown"):
        block_in_voxels(128, None)


def test_patch_in_voxels_rounds_to_the_network_multiple():
    assert patch_in_voxels((400, 640, 640), (50, 5, 5), multiple=(4, 8, 8)) == (8, 128, 128)
    assert patch_in_voxels((400, 640, 640), (50, 4.6, 4.6), multiple=(4, 8, 8)) == (8, 136, 136)  # 139 px
    assert patch_in_voxels((480, 1024, 1024), (30, 8, 8), multiple=(4, 8, 8)) == (16, 128, 128)  # MitoEM
    assert patch_in_voxels((50, 20, 20), (50, 5, 5), multiple=(4, 8, 8)) == (4, 8, 8)  # at least one multiple
    assert patch_in_voxels(960, (5, 5), multiple=16) == (192, 192)
    with pytest.raises(ValueError, match="multiple must be >= 1"):
        patch_in_voxels((400, 640, 640), (50, 5, 5), multiple=(4, 8))


def test_grid_voxel_size_is_the_target_s_then_the_source_s():
    pair = DomainPair(None, None, None, voxel_size={"source": (50, 4.6, 4.6), "target": (50, 5, 5)})
    assert pair.grid_voxel_size() == (50.0, 5.0, 5.0)
    assert DomainPair(None, None, None, voxel_size={"source": (30, 8, 8), "target": None}).grid_voxel_size() == (
        30.0,
        8.0,
        8.0,
    )
    assert DomainPair(None, None, None).grid_voxel_size((30, 8, 8)) == (30.0, 8.0, 8.0)
    assert DomainPair(None, None, None).grid_voxel_size() is None


def test_synthetic_pair_is_generated_once(tmp_path):
    a = synthetic_pair(tmp_path, seed=1, shape=(4, 32, 32))
    stamp = (tmp_path / "synth.json").stat().st_mtime_ns
    b = synthetic_pair(tmp_path, seed=1, shape=(4, 32, 32))
    assert (tmp_path / "synth.json").stat().st_mtime_ns == stamp
    assert a.source_image.shape == a.test_label.shape == (4, 32, 32)
    assert np.array_equal(a.test_image[:], b.test_image[:])
    assert a.voxel_size["source"] != a.voxel_size["target"]  # anisotropic ssTEM-like vs isotropic FIB-SEM-like


def test_volume_pair_from_h5_and_zarr_specs(tmp_path):
    import h5py
    import zarr

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, size=(4, 16, 16), dtype=np.uint8)
    with h5py.File(tmp_path / "src.h5", "w") as f:
        f["raw"] = raw
        f["label"] = (raw > 200).astype(np.uint8) * 255
    z = zarr.open_group(str(tmp_path / "tgt.zarr"), mode="w")
    z.create_array("raw", shape=raw.shape, dtype=raw.dtype)[...] = raw[::-1]
    pair = volume_pair(
        source=f"{tmp_path}/src.h5:raw", source_label=f"{tmp_path}/src.h5:label", target=f"{tmp_path}/tgt.zarr:raw"
    )
    assert np.array_equal(pair.source_image[:], raw)
    assert np.array_equal(np.asarray(pair.source_label[:]) > 0, raw > 200)
    assert np.array_equal(pair.test_image[:], raw[::-1]) and pair.test_label is None
    with pytest.raises(ValueError, match="Z, Y, X"):
        with h5py.File(tmp_path / "flat.h5", "w") as f:
            f["raw"] = raw[0]
        open_spec(f"{tmp_path}/flat.h5:raw")


def test_mitoem_pair_reads_the_release_layout(tmp_path):
    import h5py
    from PIL import Image

    for name, offset in (("R", 0), ("H", 100)):
        root = tmp_path / f"MitoEM-{name}"
        (root / "im").mkdir(parents=True)
        for k in range(5):
            Image.fromarray(np.full((16, 16), offset + k, np.uint8)).save(root / "im" / f"im{k:04d}.png")
        with h5py.File(root / "mito_train.h5", "w") as f:
            f["main"] = np.zeros((3, 16, 16), np.uint16)
        with h5py.File(root / "mito_val.h5", "w") as f:
            f["main"] = np.ones((2, 16, 16), np.uint16)
    pair = mitoem_pair(tmp_path / "MitoEM-R", tmp_path / "MitoEM-H")
    assert pair.source_image.shape == (3, 16, 16) and int(pair.source_image[2, 0, 0]) == 2
    assert pair.target_image.shape == (3, 16, 16) and int(pair.target_image[0, 0, 0]) == 100
    assert pair.test_image.shape == (2, 16, 16) and int(pair.test_image[0, 0, 0]) == 103
    assert np.asarray(pair.test_label[:]).all() and pair.voxel_size["target"] == (30.0, 8.0, 8.0)


def test_em2d_pair_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="direction"):
        em2d_pair(tmp_path, direction="lucchi_to_mitoem")
    with pytest.raises(ValueError, match="subset"):
        em2d_pair(tmp_path, subset=3)


def _fake_releases(root):
    """``root/vnc3`` (20 sections) and ``root/lucchi_pp`` (Test_* 25 sections, Train_* 12) in the release layouts."""
    import tifffile

    from tests.data.volume_helpers import labelled_section, ramp_volume, save_label_png, write_png_sections

    shape = (16, 16)
    stack = root / "vnc3" / "stack1"
    (stack / "raw").mkdir(parents=True)
    for i, section in enumerate(ramp_volume((20, *shape), seed=1)):
        tifffile.imwrite(stack / "raw" / f"{i:02d}.tif", section)
        save_label_png(stack / "mitochondria" / f"{i:02d}.png", labelled_section(shape, seed=i), "L")
    for folder, n in (("Test", 25), ("Train", 12)):
        images = ramp_volume((n, *shape), seed=n)
        write_png_sections(root / "lucchi_pp" / f"{folder}_In", images, [f"mask{i:04d}.png" for i in range(n)])
        for i in range(n):
            save_label_png(root / "lucchi_pp" / f"{folder}_Out" / f"{i}.png", labelled_section(shape, seed=i), "RGBA")


def test_em3d_pair_both_directions_on_fixtures(tmp_path):
    from mtbio.data.volumes import open_volume

    _fake_releases(tmp_path)
    thin = open_volume(tmp_path / "lucchi_pp" / "Test_In")
    vnc = open_volume(tmp_path / "vnc3" / "stack1" / "raw")
    fwd = em3d_pair(tmp_path, direction="vnc3_to_lucchi_pooled", group=10)
    assert fwd.source_image.shape == (20, 16, 16) and fwd.voxel_size["source"] == (50.0, 4.6, 4.6)
    assert fwd.target_image.shape == (2, 16, 16) and fwd.voxel_size["target"] == (50.0, 5.0, 5.0)  # 25 -> 2
    np.testing.assert_allclose(fwd.target_image[1], np.asarray(thin[10:20], np.float64).mean(0), rtol=1e-6)
    assert fwd.test_image is fwd.target_image and fwd.test_label is fwd.target_label  # transductive, stated
    assert "transductive" in fwd.description and "thick-section simulation" in fwd.description
    held = em3d_pair(tmp_path, lucchi_test_split="epfl_test", group=4)
    assert held.target_image.shape == (6, 16, 16) and held.test_image.shape == (3, 16, 16)  # Train_*: 12 -> 3
    rev = em3d_pair(tmp_path, direction="lucchi_pooled_to_vnc3", group=5)
    assert rev.source_image.shape == (5, 16, 16) and rev.voxel_size["source"] == (25.0, 5.0, 5.0)
    assert rev.source_label.dtype == np.bool_ and rev.grid_voxel_size() == (50.0, 4.6, 4.6)
    assert np.array_equal(rev.target_image[0], vnc[0]) and np.array_equal(rev.test_image[0], vnc[10])
    rev2 = em3d_pair(tmp_path, direction="lucchi_pooled_to_vnc3", subset=2)
    assert np.array_equal(rev2.target_image[0], vnc[10]) and np.array_equal(rev2.test_image[0], vnc[0])


def test_em3d_pair_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="direction"):
        em3d_pair(tmp_path, direction="vnc3_to_lucchi")
    with pytest.raises(ValueError, match="subset"):
        em3d_pair(tmp_path, subset=0)
    with pytest.raises(ValueError, match="lucchi_test_split"):
        em3d_pair(tmp_path, lucchi_test_split="Train")
    with pytest.raises(ValueError, match="label_pooling"):
        em3d_pair(tmp_path, label_pooling="mean")


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "vnc3").is_dir(), reason=f"no real data under {SHARED_DATA}")
def test_em3d_pair_on_the_real_data():
    fwd = em3d_pair(SHARED_DATA)
    assert fwd.target_image.shape == fwd.test_label.shape == (16, 768, 1024)
    assert fwd.voxel_size == {"source": (50.0, 4.6, 4.6), "target": (50.0, 5.0, 5.0)}
    rev = em3d_pair(SHARED_DATA, direction="lucchi_pooled_to_vnc3")
    assert rev.source_image.shape == (16, 768, 1024) and rev.test_image.shape == (10, 1024, 1024)


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "vnc3").is_dir(), reason=f"no real data under {SHARED_DATA}")
def test_em2d_pair_directions_and_subsets():
    from mtbio.data.volumes import open_volume

    lucchi_test_in = open_volume(SHARED_DATA / "lucchi_pp" / "Test_In")  # the EPFL *training* volume
    lucchi_train_in = open_volume(SHARED_DATA / "lucchi_pp" / "Train_In")  # the EPFL *testing* volume
    one = em2d_pair(SHARED_DATA, direction="vnc3_to_lucchi", subset=1)
    assert one.source_image.shape[0] == 20 and one.voxel_size["source"] == (50.0, 4.6, 4.6)
    assert np.array_equal(one.target_image[0], lucchi_test_in[0])
    assert np.array_equal(one.test_image[0], lucchi_train_in[0]) and one.test_label is not None
    two = em2d_pair(SHARED_DATA, direction="vnc3_to_lucchi", subset=2)
    assert np.array_equal(two.target_image[0], lucchi_train_in[0])
    rev = em2d_pair(SHARED_DATA, direction="lucchi_to_vnc3", subset=1)
    vnc = open_volume(SHARED_DATA / "vnc3" / "stack1" / "raw")
    assert np.array_equal(rev.source_image[0], lucchi_test_in[0])
    assert rev.target_image.shape[0] == rev.test_image.shape[0] == 10
    assert np.array_equal(rev.target_image[9], vnc[9]) and np.array_equal(rev.test_image[0], vnc[10])
    rev2 = em2d_pair(SHARED_DATA, direction="lucchi_to_vnc3", subset=2)
    assert np.array_equal(rev2.target_image[0], vnc[10])
