"""mtbio.bundle.data: the bundles' volume pairs, PATH[:KEY] specs and physical mask blocks."""

from __future__ import annotations

import numpy as np
import pytest

from mtbio.bundle.data import block_in_voxels, em2d_pair, mitoem_pair, open_spec, synthetic_pair, volume_pair
from tests.conftest import SHARED_DATA


def test_block_in_voxels():
    assert block_in_voxels(128, (30, 8, 8)) == (4, 16, 16)
    assert block_in_voxels(160, (5, 5, 5)) == (32, 32, 32)
    assert block_in_voxels(10, (50, 4.6, 4.6)) == (1, 2, 2)  # at least one voxel per axis
    with pytest.raises(ValueError, match="positive"):
        block_in_voxels(0, (1, 1, 1))


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
