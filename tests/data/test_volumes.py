"""open_volume: every format written here in tmp_path, lazy reads, voxel sizes and every bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from mtbio.data import volumes
from mtbio.data.errors import VolumeError
from mtbio.data.store import create_prediction_store, encode_probability
from mtbio.data.volumes import check_same_shape, natural_sort_key, open_volume
from tests.data.volume_helpers import ramp_volume, write_png_sections

# ----------------------------------------------------------------------------------------------- section folders


def test_natural_sort_key_orders_digit_runs_by_value():
    names = ["10.png", "2.png", "1.png", "mask0010.png", "mask0002.png", "mask0009.png"]
    assert sorted(names, key=natural_sort_key) == [
        "1.png",
        "2.png",
        "10.png",
        "mask0002.png",
        "mask0009.png",
        "mask0010.png",
    ]


def test_png_folder_is_sorted_numerically(tmp_path):
    data = ramp_volume((12, 6, 7))
    write_png_sections(tmp_path / "stack", data)  # 0.png .. 11.png: lexicographic order would put 10 before 2
    vol = open_volume(tmp_path / "stack")
    assert vol.shape == (12, 6, 7) and vol.dtype == np.uint8 and vol.axes == ("z", "y", "x") and len(vol) == 12
    np.testing.assert_array_equal(np.asarray(vol), data)
    np.testing.assert_array_equal(vol[10], data[10])
    assert vol.voxel_size is None


def test_zero_padded_mask_names(tmp_path):
    data = ramp_volume((11, 4, 5), seed=1)
    write_png_sections(tmp_path / "Train_In", data, [f"mask{i:04d}.png" for i in range(11)])
    np.testing.assert_array_equal(open_volume(tmp_path / "Train_In")[:], data)


def test_folder_reads_only_indexed_sections(tmp_path, monkeypatch):
    data = ramp_volume((8, 5, 5))
    write_png_sections(tmp_path / "s", data)
    reads: list[str] = []
    real = volumes.read_image_file
    monkeypatch.setattr(volumes, "read_image_file", lambda p: reads.append(p.name) or real(p))
    vol = open_volume(tmp_path / "s")
    assert reads == []  # opening reads headers only
    np.testing.assert_array_equal(vol[3, 1:4], data[3, 1:4])
    assert reads == ["3.png"]
    reads.clear()
    np.testing.assert_array_equal(vol[2:7:2, :, ::-1], data[2:7:2, :, ::-1])
    assert reads == ["2.png", "4.png", "6.png"]


def test_uint16_tif_folder_and_ignored_other_files(tmp_path):
    data = ramp_volume((3, 4, 6), "uint16")
    (tmp_path / "t").mkdir()
    for i, section in enumerate(data):
        tifffile.imwrite(tmp_path / "t" / f"{i:02d}.tif", section)
    (tmp_path / "t" / "README.txt").write_text("not a section")
    (tmp_path / "t" / ".DS_Store").write_bytes(b"junk")
    vol = open_volume(tmp_path / "t")
    assert vol.dtype == np.uint16
    np.testing.assert_array_equal(vol[...], data)


def test_folder_with_mixed_shapes_names_the_file(tmp_path):
    write_png_sections(tmp_path / "s", ramp_volume((3, 5, 5)))
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(tmp_path / "s" / "3.png")
    with pytest.raises(VolumeError, match=r"differ in shape.*3\.png"):
        open_volume(tmp_path / "s")


def test_folder_with_mixed_dtypes(tmp_path):
    write_png_sections(tmp_path / "s", ramp_volume((2, 5, 5)))
    Image.fromarray(np.zeros((5, 5), np.uint16)).save(tmp_path / "s" / "2.png")
    with pytest.raises(VolumeError, match=r"differ in dtype.*2\.png"):
        open_volume(tmp_path / "s")


def test_folder_with_mixed_file_types(tmp_path):
    write_png_sections(tmp_path / "s", ramp_volume((2, 5, 5)))
    tifffile.imwrite(tmp_path / "s" / "2.tif", np.zeros((5, 5), np.uint8))
    with pytest.raises(VolumeError, match="mixes section file types"):
        open_volume(tmp_path / "s")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(VolumeError, match=r"empty.*no section files"):
        open_volume(tmp_path / "empty")


def test_corrupt_section_names_the_file(tmp_path):
    write_png_sections(tmp_path / "s", ramp_volume((2, 5, 5)))
    (tmp_path / "s" / "2.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(VolumeError, match=r"2\.png.*not a readable image"):
        open_volume(tmp_path / "s")


def test_truncated_section_fails_at_read_naming_the_file(tmp_path):
    paths = write_png_sections(tmp_path / "s", ramp_volume((2, 64, 64)))
    raw = paths[1].read_bytes()
    paths[1].write_bytes(raw[: len(raw) // 2])  # header intact, pixels cut
    vol = open_volume(tmp_path / "s")
    np.testing.assert_array_equal(vol[0].shape, (64, 64))
    with pytest.raises(VolumeError, match=r"1\.png"):
        vol[1]


# --------------------------------------------------------------------------------------------------- single files


def test_single_png_is_2d(tmp_path):
    data = ramp_volume((9, 7))
    Image.fromarray(data).save(tmp_path / "a.png")
    vol = open_volume(tmp_path / "a.png")
    assert vol.shape == (9, 7) and vol.axes == ("y", "x")
    np.testing.assert_array_equal(vol[2:5, -1], data[2:5, -1])


def test_rgb_png_keeps_its_colour_axis(tmp_path):
    data = ramp_volume((4, 5, 3))
    Image.fromarray(data, mode="RGB").save(tmp_path / "c.png")
    vol = open_volume(tmp_path / "c.png")
    assert vol.shape == (4, 5, 3) and vol.axes == ("y", "x", "c") and vol.spatial_shape == (4, 5)
    np.testing.assert_array_equal(vol[...], data)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_multipage_tif(tmp_path, compression):
    data = ramp_volume((5, 6, 7), "uint16")
    tifffile.imwrite(tmp_path / "v.tif", data, compression=compression, photometric="minisblack")
    vol = open_volume(tmp_path / "v.tif")
    assert vol.shape == (5, 6, 7) and vol.dtype == np.uint16 and vol.axes == ("z", "y", "x")
    assert vol._backend.mode == ("memmap" if compression is None else "pages")
    np.testing.assert_array_equal(vol[1:4:2, 2], data[1:4:2, 2])
    np.testing.assert_array_equal(vol[-1], data[-1])
    np.testing.assert_array_equal(np.asarray(vol), data)


def test_single_page_tif_is_2d(tmp_path):
    data = ramp_volume((6, 7))
    tifffile.imwrite(tmp_path / "p.tiff", data)
    vol = open_volume(tmp_path / "p.tiff")
    assert vol.shape == (6, 7)
    np.testing.assert_array_equal(vol[:], data)


def test_tif_voxel_size_from_imagej_calibration(tmp_path):
    data = ramp_volume((4, 6, 7))
    tifffile.imwrite(
        tmp_path / "ij.tif",
        data,
        imagej=True,
        resolution=(1 / 0.0046, 1 / 0.0046),
        metadata={"spacing": 0.05, "unit": "um", "axes": "ZYX"},
    )
    vol = open_volume(tmp_path / "ij.tif")
    np.testing.assert_allclose(vol.voxel_size, (50.0, 4.6, 4.6), rtol=1e-5)


def test_tif_voxel_size_from_centimetre_resolution_tags(tmp_path):
    tifffile.imwrite(
        tmp_path / "cm.tif", ramp_volume((6, 7)), resolution=(1e7 / 5, 1e7 / 4), resolutionunit="CENTIMETER"
    )
    np.testing.assert_allclose(open_volume(tmp_path / "cm.tif").voxel_size, (4.0, 5.0), rtol=1e-6)


def test_tif_print_dpi_and_missing_z_spacing_give_no_voxel_size(tmp_path):
    tifffile.imwrite(tmp_path / "dpi.tif", ramp_volume((6, 7)), resolution=(72, 72), resolutionunit="INCH")
    assert open_volume(tmp_path / "dpi.tif").voxel_size is None
    tifffile.imwrite(
        tmp_path / "noz.tif",
        ramp_volume((4, 6, 7)),
        resolution=(1e7 / 5, 1e7 / 5),
        resolutionunit="CENTIMETER",
        photometric="minisblack",
    )
    assert open_volume(tmp_path / "noz.tif").voxel_size is None  # y/x known, z not: all or nothing


def test_voxel_size_argument_overrides_the_file(tmp_path):
    tifffile.imwrite(
        tmp_path / "cm.tif", ramp_volume((6, 7)), resolution=(1e7 / 5, 1e7 / 5), resolutionunit="CENTIMETER"
    )
    assert open_volume(tmp_path / "cm.tif", voxel_size=(3, 2)).voxel_size == (3.0, 2.0)


def test_voxel_size_length_and_values_are_checked(tmp_path):
    write_png_sections(tmp_path / "s", ramp_volume((2, 5, 5)))
    with pytest.raises(VolumeError, match=r"s: voxel_size \(4.6, 4.6\) has 2 entries but the volume has 3"):
        open_volume(tmp_path / "s", voxel_size=(4.6, 4.6))
    with pytest.raises(VolumeError, match="positive"):
        open_volume(tmp_path / "s", voxel_size=(50, -1, 4.6))


# ---------------------------------------------------------------------------------------------------------- HDF5


def test_h5_single_dataset_needs_no_key_and_reads_resolution(tmp_path):
    data = ramp_volume((4, 5, 6), "uint16")
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("volumes/raw", data=data).attrs["resolution"] = [40.0, 4.0, 4.0]
    vol = open_volume(tmp_path / "a.h5")
    assert vol.key == "volumes/raw" and vol.voxel_size == (40.0, 4.0, 4.0) and vol.dtype == np.uint16
    np.testing.assert_array_equal(vol[:, ::2, 1:], data[:, ::2, 1:])


def test_h5_key_selects_and_element_size_um_is_converted(tmp_path):
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f.create_dataset("raw", data=ramp_volume((3, 4, 5)))
        f.create_dataset("label", data=np.ones((3, 4, 5), np.uint8)).attrs["element_size_um"] = [0.03, 0.008, 0.008]
    vol = open_volume(tmp_path / "b.h5", "label")
    np.testing.assert_allclose(vol.voxel_size, (30.0, 8.0, 8.0))
    assert vol[0].sum() == 20


def test_h5_missing_or_ambiguous_key_lists_the_datasets(tmp_path):
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f.create_dataset("raw", data=np.zeros((2, 3, 3), np.uint8))
        f.create_dataset("label", data=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(VolumeError, match=r"b\.h5: holds 2 datasets; pass key= one of \['label', 'raw'\]"):
        open_volume(tmp_path / "b.h5")
    with pytest.raises(VolumeError, match=r"b\.h5: has no dataset 'main'; its datasets are \['label', 'raw'\]"):
        open_volume(tmp_path / "b.h5", "main")


@pytest.mark.parametrize("shape", [(7,), (2, 2, 2, 2, 2)])
def test_wrong_rank_is_rejected(tmp_path, shape):
    with h5py.File(tmp_path / "r.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(shape, np.uint8))
    with pytest.raises(VolumeError, match=r"r\.h5\[x\]: has shape .*2D or 3D"):
        open_volume(tmp_path / "r.h5")


def test_corrupt_h5(tmp_path):
    (tmp_path / "bad.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(VolumeError, match=r"bad\.h5: not a readable HDF5 file"):
        open_volume(tmp_path / "bad.h5")


def test_volume_pickles_and_reads_after(tmp_path):
    data = ramp_volume((3, 4, 5))
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("x", data=data)
    vol = open_volume(tmp_path / "a.h5")
    vol[0]  # opens the file handle
    clone = pickle.loads(pickle.dumps(vol))
    np.testing.assert_array_equal(clone[2], data[2])
    vol.close()
    np.testing.assert_array_equal(vol[1], data[1])  # reopens


# ---------------------------------------------------------------------------------------------------------- zarr


def test_zarr_v3_array_with_voxel_size_attribute(tmp_path):
    data = ramp_volume((4, 6, 5)).astype(np.float32)
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=data.shape, chunks=(2, 3, 5), dtype="float32")
    arr[:] = data
    arr.attrs["voxel_size"] = [50, 4.6, 4.6]
    vol = open_volume(tmp_path / "a.zarr")
    assert vol.dtype == np.float32 and vol.voxel_size == (50.0, 4.6, 4.6) and vol.key is None
    np.testing.assert_array_equal(vol[1:3, ::-2, 2], data[1:3, ::-2, 2])


def test_zarr_group_key_rules(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("raw", shape=(2, 3, 4), dtype="uint8")[:] = 7
    vol = open_volume(tmp_path / "g.zarr")  # exactly one array: no key needed
    assert vol.key == "raw" and int(vol[1, 2, 3]) == 7
    group.create_array("labels/mito", shape=(2, 3, 4), dtype="uint16")
    with pytest.raises(VolumeError, match=r"g\.zarr: holds 2 arrays; pass key= one of \['labels/mito', 'raw'\]"):
        open_volume(tmp_path / "g.zarr")
    assert open_volume(tmp_path / "g.zarr", "labels/mito").dtype == np.uint16
    with pytest.raises(VolumeError, match="has no array 'nope'"):
        open_volume(tmp_path / "g.zarr", key="nope")


def test_zarr_v2_array(tmp_path):
    data = ramp_volume((3, 4, 5), "uint16")
    arr = zarr.create_array(str(tmp_path / "v2.zarr"), shape=data.shape, dtype="uint16", zarr_format=2)
    arr[:] = data
    assert (tmp_path / "v2.zarr" / ".zarray").exists()
    np.testing.assert_array_equal(open_volume(tmp_path / "v2.zarr")[...], data)


def _ome_axes(unit: str, channel: bool) -> list[dict]:
    axes = [{"name": n, "type": "space", "unit": unit} for n in "zyx"]
    return ([{"name": "c", "type": "channel"}] if channel else []) + axes


def test_ome_zarr_04_on_zarr_v2_in_micrometres(tmp_path):
    group = zarr.open_group(str(tmp_path / "o4.zarr"), mode="w", zarr_format=2)
    data = ramp_volume((4, 6, 8))
    group.create_array("s0", shape=data.shape, dtype="uint8")[:] = data
    group.create_array("s1", shape=(4, 3, 4), dtype="uint8")[:] = data[:, ::2, ::2]
    scales = [[0.05, 0.005, 0.005], [0.05, 0.01, 0.01]]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": _ome_axes("micrometer", channel=False),
            "datasets": [
                {"path": p, "coordinateTransformations": [{"type": "scale", "scale": s}]}
                for p, s in zip(["s0", "s1"], scales)
            ],
        }
    ]
    vol = open_volume(tmp_path / "o4.zarr")
    assert vol.key == "s0" and vol.shape == (4, 6, 8)
    np.testing.assert_allclose(vol.voxel_size, (50.0, 5.0, 5.0))
    low = open_volume(tmp_path / "o4.zarr", "s1")
    np.testing.assert_allclose(low.voxel_size, (50.0, 10.0, 10.0))
    np.testing.assert_array_equal(low[...], data[:, ::2, ::2])


def test_ome_zarr_05_on_zarr_v3_keeps_the_channel_axis(tmp_path):
    group = zarr.open_group(str(tmp_path / "o5.zarr"), mode="w", zarr_format=3)
    data = ramp_volume((1, 3, 4, 5))
    group.create_array("0", shape=data.shape, dtype="uint8")[:] = data
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": _ome_axes("nanometer", channel=True),
                "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 30, 8, 8]}]}],
            }
        ],
    }
    vol = open_volume(tmp_path / "o5.zarr")
    assert vol.axes == ("c", "z", "y", "x") and vol.shape == (1, 3, 4, 5) and vol.spatial_shape == (3, 4, 5)
    assert vol.voxel_size == (30.0, 8.0, 8.0)
    np.testing.assert_array_equal(vol[0, 1], data[0, 1])
    # the level array opened directly inherits the group's metadata
    assert open_volume(tmp_path / "o5.zarr" / "0").voxel_size == (30.0, 8.0, 8.0)


def test_prediction_store_opens_as_its_full_resolution_array(tmp_path):
    store = create_prediction_store(tmp_path / "pred.zarr", (3, 8, 8), voxel_size=(50, 4.6, 4.6))
    prob = np.random.default_rng(0).random((3, 8, 8))
    store.array[1] = encode_probability(prob, "uint8")
    vol = open_volume(tmp_path / "pred.zarr")
    assert vol.shape == (2, 3, 8, 8) and vol.axes == ("c", "z", "y", "x") and vol.voxel_size == (50.0, 4.6, 4.6)
    np.testing.assert_array_equal(vol[1], encode_probability(prob, "uint8"))


def test_not_a_zarr_store(tmp_path):
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(VolumeError, match=r"x\.zarr: not a readable zarr store"):
        open_volume(tmp_path / "x.zarr")


# --------------------------------------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize(("units", "factor"), [("micron", 1e3), ("mm", 1e6), ("unknown", 1e6)])
def test_nifti_is_transposed_to_zyx_with_voxel_size(tmp_path, units, factor):
    xyz = ramp_volume((6, 5, 4), "uint16")  # nibabel order (x, y, z)
    image = nib.Nifti1Image(xyz, np.eye(4))
    image.header.set_zooms((0.0046, 0.0047, 0.05))
    image.header.set_xyzt_units(xyz=units)
    nib.save(image, tmp_path / "v.nii.gz")
    vol = open_volume(tmp_path / "v.nii.gz")
    assert vol.shape == (4, 5, 6) and vol.axes == ("z", "y", "x") and vol.dtype == np.uint16
    np.testing.assert_array_equal(vol[...], xyz.transpose(2, 1, 0))
    np.testing.assert_array_equal(vol[2, 1:3], xyz[:, 1:3, 2].T)  # (z, y, x)[2, 1:3] = (x, y, z)[:, 1:3, 2].T
    np.testing.assert_allclose(vol.voxel_size, np.array([0.05, 0.0047, 0.0046]) * factor, rtol=1e-5)


# ---------------------------------------------------------------------------------------- indexing and bad input


INDICES = [
    0,
    -1,
    (slice(None), 2),
    (Ellipsis, 3),
    (1, Ellipsis, slice(1, 4)),
    (slice(None, None, -1), slice(1, None, 2), slice(4, 0, -3)),
    (slice(2, 2), 1),
    (None, 1, slice(None), None),
    np.int64(2),
    (slice(-3, None), -2, -1),
]


@pytest.mark.parametrize("index", INDICES)
def test_indexing_matches_numpy(tmp_path, index):
    data = ramp_volume((5, 4, 6))
    with h5py.File(tmp_path / "i.h5", "w") as f:
        f.create_dataset("x", data=data)
    vol = open_volume(tmp_path / "i.h5")
    out = vol[index]
    assert out.shape == data[index].shape and out.dtype == data.dtype
    np.testing.assert_array_equal(out, data[index])


def test_non_basic_and_out_of_bounds_indices_raise(tmp_path):
    write_png_sections(tmp_path / "s", ramp_volume((3, 4, 4)))
    vol = open_volume(tmp_path / "s")
    with pytest.raises(IndexError, match="basic"):
        vol[[0, 1]]
    with pytest.raises(IndexError, match="out of bounds"):
        vol[3]
    with pytest.raises(IndexError, match="too many"):
        vol[0, 0, 0, 0]


def test_view_is_lazy_and_scales_voxel_size(tmp_path, monkeypatch):
    data = ramp_volume((10, 6, 6))
    write_png_sections(tmp_path / "s", data)
    reads: list[str] = []
    real = volumes.read_image_file
    monkeypatch.setattr(volumes, "read_image_file", lambda p: reads.append(p.name) or real(p))
    vol = open_volume(tmp_path / "s", voxel_size=(50, 4, 4))
    sub = vol.view(np.s_[2:9, :, ::2])
    assert reads == [] and sub.shape == (7, 6, 3) and sub.voxel_size == (50.0, 4.0, 8.0)
    np.testing.assert_array_equal(sub[1:6:2, ::-1], data[2:9, :, ::2][1:6:2, ::-1])
    assert reads == ["3.png", "5.png", "7.png"]
    with pytest.raises(IndexError, match="view"):
        vol.view(np.s_[1])


def test_missing_path_unsupported_type_and_stray_key(tmp_path):
    with pytest.raises(VolumeError, match=r"nope\.tif: no such file or folder"):
        open_volume(tmp_path / "nope.tif")
    (tmp_path / "v.txt").write_text("1 2 3")
    with pytest.raises(VolumeError, match=r"v\.txt: unsupported file type"):
        open_volume(tmp_path / "v.txt")
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((3, 3), np.uint8))
    with pytest.raises(VolumeError, match="key='raw' was given"):
        open_volume(tmp_path / "a.tif", "raw")


def test_corrupt_tif(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(VolumeError, match=r"bad\.tif: not a readable TIF"):
        open_volume(tmp_path / "bad.tif")


def test_check_same_shape_names_both_paths(tmp_path):
    write_png_sections(tmp_path / "img", ramp_volume((3, 4, 4)))
    write_png_sections(tmp_path / "lab", ramp_volume((2, 4, 4)))
    image, label = open_volume(tmp_path / "img"), open_volume(tmp_path / "lab")
    check_same_shape(image, image)
    with pytest.raises(VolumeError, match=r"img has spatial shape \(3, 4, 4\).*lab has \(2, 4, 4\)"):
        check_same_shape(image, label)


def test_volume_array_protocol_casts(tmp_path):
    data = ramp_volume((2, 3, 3))
    write_png_sections(tmp_path / "s", data)
    out = np.asarray(open_volume(tmp_path / "s"), dtype=np.float32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data.astype(np.float32))


def test_volume_error_is_a_value_error_naming_the_path():
    err = VolumeError(Path("/x/y.h5"), "broken")
    assert isinstance(err, ValueError) and str(err) == "/x/y.h5: broken" and err.path == "/x/y.h5"


def test_axes_attribute_names_the_axes(tmp_path):
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=(2, 3, 4), dtype="uint8")
    arr.attrs.update({"axes": ["c", "y", "x"], "voxel_size": [4, 4]})
    vol = open_volume(tmp_path / "a.zarr")
    assert vol.axes == ("c", "y", "x") and vol.spatial_shape == (3, 4) and vol.voxel_size == (4.0, 4.0)
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f.create_dataset("x", data=np.zeros((2, 3, 4), np.uint8)).attrs["axes"] = ["z", "y", "q"]
    with pytest.raises(VolumeError, match=r"b\.h5\[x\]: attribute axes=\['z', 'y', 'q'\]"):
        open_volume(tmp_path / "b.h5")


def test_synthetic_generator_output_opens(tmp_path):
    synthetic = pytest.importorskip("mtbio.data.synthetic")
    paths = synthetic.generate_synthetic(tmp_path / "synth", shape=(4, 32, 32), seed=0)
    raw = open_volume(paths["source"], "raw")
    assert raw.shape == (4, 32, 32) and raw.axes == ("z", "y", "x") and raw.voxel_size is not None
    from mtbio.data.labels import open_label_volume

    label = open_label_volume(paths["source"], "label")
    stored = open_volume(paths["source"], "label")[...]
    np.testing.assert_array_equal(label[...], stored == 255)


def test_encode_probability_in_place_equals_the_plain_encoding_and_uses_its_input():
    rng = np.random.default_rng(1)
    prob = rng.random((4, 9, 7), dtype=np.float32)
    prob[0, 0, :4] = [0.0, 1.0, 0.5 / 255, 1.5 / 255]  # the ends and two ties of round(p * 255)
    oracle = np.clip(np.round(prob.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    plain = encode_probability(prob, "uint8")
    scratch = prob.copy()
    in_place = encode_probability(scratch, "uint8", overwrite_input=True)
    np.testing.assert_array_equal(plain, in_place)
    assert np.abs(plain.astype(int) - oracle.astype(int)).max() <= 1  # float32 vs float64 rounding at ties
    np.testing.assert_array_equal(scratch, plain.astype(np.float32))  # the scratch holds the rounded values
    read_only = prob.copy()
    read_only.flags.writeable = False
    np.testing.assert_array_equal(encode_probability(read_only, "uint8", overwrite_input=True), plain)


def test_prediction_store_chunks_each_channel_on_its_own(tmp_path):
    store = create_prediction_store(tmp_path / "pred.zarr", (6, 8, 8), chunks=(2, 4, 8))
    assert store.array.shape == (2, 6, 8, 8) and store.array.chunks == (1, 2, 4, 8)
