"""Truncated and corrupt files: every reader checks what it read against what the file declares and raises
VolumeError naming the file (and the region or member), never a silently short or zero-filled volume."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from mtbio.data.errors import VolumeError
from mtbio.data.labels import open_label_volume
from mtbio.data.volumes import open_volume
from tests.data.volume_helpers import ramp_volume, write_png_sections

STACK = (10, 32, 48)


def _cut_after_page(path: Path, page: int, extra: int = 0) -> None:
    """Truncate ``path`` right after the pixel data of ``page`` (plus ``extra`` bytes, negative cuts into it)."""
    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        end = max(o + c for o, c in zip(p.dataoffsets, p.databytecounts))
    raw = path.read_bytes()
    path.write_bytes(raw[: end + extra])


def _stack(tmp_path: Path, name: str, **kwargs) -> tuple[Path, np.ndarray]:
    data = ramp_volume(STACK, seed=1)
    path = tmp_path / name
    tifffile.imwrite(path, data, **kwargs)
    return path, data


# ----------------------------------------------------------------------------------------------------------- TIF


def test_intact_stacks_still_open(tmp_path):
    for name, kwargs in [("s.tif", {}), ("ij.tif", {"imagej": True}), ("z.tif", {"compression": "zlib"})]:
        path, data = _stack(tmp_path, name, **kwargs)
        np.testing.assert_array_equal(np.asarray(open_volume(path)), data)
    path, data = _stack(tmp_path, "plain.tif", metadata=None)  # no shape metadata: all pages as Z
    vol = open_volume(path)
    assert vol.shape == STACK
    np.testing.assert_array_equal(np.asarray(vol), data)


def test_shaped_tif_cut_at_a_page_boundary(tmp_path):
    path, _ = _stack(tmp_path, "shaped.tif")
    _cut_after_page(path, 5)
    with pytest.raises(VolumeError, match=r"shaped\.tif: TIF is truncated"):
        open_volume(path)


def test_imagej_tif_cut_at_a_page_boundary_does_not_open_as_2d(tmp_path):
    path, _ = _stack(tmp_path, "ij.tif", imagej=True)
    _cut_after_page(path, 5)
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].shape == STACK[1:]  # tifffile alone would give one 2D image
    with pytest.raises(VolumeError, match=r"ij\.tif: TIF is truncated"):
        open_volume(path)


def test_tif_without_metadata_cut_at_a_page_boundary(tmp_path):
    path, _ = _stack(tmp_path, "plain.tif", metadata=None)
    _cut_after_page(path, 5)
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].shape == STACK[1:]  # one 2D image, silently
    with pytest.raises(VolumeError, match=r"plain\.tif: TIF is truncated after page 1"):
        open_volume(path)


@pytest.mark.parametrize("extra", [0, -100])
def test_zlib_tif_cut_at_or_inside_a_page(tmp_path, extra):
    path, _ = _stack(tmp_path, "z.tif", compression="zlib")
    _cut_after_page(path, 5, extra)
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].shape == STACK[1:]  # tifffile gives up the shaped series and reads page 0 only
    with pytest.raises(VolumeError, match=r"z\.tif: TIF is truncated after page 6"):
        open_volume(path)


def test_shaped_description_declaring_more_pages_than_the_file_holds(tmp_path):
    path, _ = _stack(tmp_path, "s.tif", compression="zlib")
    raw = path.read_bytes()
    assert raw.count(b"[10, 32, 48]") == 1
    path.write_bytes(raw.replace(b"[10, 32, 48]", b"[12, 32, 48]"))  # as if two pages were lost
    with pytest.raises(
        VolumeError,
        match=r"s\.tif: TIF is truncated or corrupt: its description declares shape "
        r"\(12, 32, 48\) but the file holds 10 readable page",
    ):
        open_volume(path)


def test_imagej_images_count_disagreeing_with_the_pages(tmp_path):
    path, _ = _stack(tmp_path, "ij.tif", imagej=True)
    raw = path.read_bytes()
    assert raw.count(b"images=10\n") == 1
    path.write_bytes(raw.replace(b"images=10\n", b"images=1 \n"))  # same length: only the count lies
    with pytest.raises(
        VolumeError, match=r"ij\.tif: TIF is truncated or corrupt: its ImageJ metadata declares images=1 "
    ):
        open_volume(path)


def test_zlib_page_that_fails_to_decode_names_file_and_region(tmp_path):
    path, data = _stack(tmp_path, "z.tif", compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[3].dataoffsets[0], tif.pages[3].databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[offset + 10 : offset + count] = b"\x00" * (count - 10)
    path.write_bytes(bytes(raw))
    vol = open_volume(path)  # the file is whole: it opens
    np.testing.assert_array_equal(vol[2], data[2])
    with pytest.raises(VolumeError, match=r"z\.tif: cannot read region \[3, 0:32, 0:48\]: DeflateError"):
        vol[3]
    with pytest.raises(VolumeError, match=r"z\.tif: cannot read region \[0:10, 0:32, 0:48\]"):
        open_label_volume(path)[0]  # the label decision reads the whole array: the bad page is found


def test_truncated_single_page_tif(tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", ramp_volume((64, 64)))
    raw = (tmp_path / "one.tif").read_bytes()
    (tmp_path / "one.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(VolumeError, match=r"one\.tif: TIF is truncated"):
        open_volume(tmp_path / "one.tif")


# ------------------------------------------------------------------------------------------------ section folders


def test_tif_section_folder_with_a_truncated_member(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    data = ramp_volume((3, 40, 40), seed=2)
    for i, section in enumerate(data):
        tifffile.imwrite(folder / f"{i}.tif", section, compression="zlib")
    raw = (folder / "1.tif").read_bytes()
    (folder / "1.tif").write_bytes(raw[: len(raw) - 200])  # the directory is first: pixels cut
    with pytest.raises(VolumeError, match=r"s/1\.tif"):
        np.asarray(open_volume(folder))


def test_section_folder_member_that_is_a_cut_stack(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"{i}.tif", ramp_volume((40, 40), seed=i))
    tifffile.imwrite(folder / "3.tif", ramp_volume((4, 40, 40)), imagej=True)
    _cut_after_page(folder / "3.tif", 0)  # now reads as one 2D page: a section, silently
    with pytest.raises(VolumeError, match=r"s/3\.tif: TIF is truncated"):
        open_volume(folder)


def test_label_folder_with_a_truncated_png_names_the_member(tmp_path):
    folder = tmp_path / "lab"
    paths = write_png_sections(folder, (ramp_volume((3, 64, 64)) > 128).astype(np.uint8) * 255)
    raw = paths[2].read_bytes()
    paths[2].write_bytes(raw[: len(raw) // 2])
    vol = open_label_volume(folder)
    assert vol[0].shape == (64, 64)
    with pytest.raises(VolumeError, match=r"lab/2\.png: cannot read label image"):
        vol[2]


def test_label_folder_with_an_unreadable_member_names_it_at_open(tmp_path):
    folder = tmp_path / "lab"
    write_png_sections(folder, np.zeros((2, 8, 8), np.uint8))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "2.png")
    (folder / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(VolumeError, match=r"lab/1\.png: not a readable image file"):
        open_label_volume(folder)


# --------------------------------------------------------------------------------------------------- HDF5 / zarr


def test_h5_chunk_that_fails_to_decode(tmp_path):
    data = ramp_volume((6, 32, 48), seed=3)
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset("raw", data=data, chunks=(1, 32, 48), compression="gzip")
        info = dataset.id.get_chunk_info(2)
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset : info.byte_offset + info.size] = b"\xff" * info.size
    path.write_bytes(bytes(raw))
    vol = open_volume(path)
    np.testing.assert_array_equal(vol[1], data[1])
    with pytest.raises(VolumeError, match=r"c\.h5\[raw\]: cannot read region \[1:4, 0:32, 0:48\]: OSError"):
        vol[1:4]


def test_truncated_h5_file(tmp_path):
    path = tmp_path / "cut.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=ramp_volume((6, 32, 48)))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(VolumeError, match=r"cut\.h5: not a readable HDF5 file"):
        open_volume(path)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_chunk_that_fails_to_decode_and_a_missing_chunk(tmp_path, zarr_format):
    data = ramp_volume((6, 32, 48), seed=4)
    path = tmp_path / "a.zarr"
    z = zarr.create_array(str(path), shape=data.shape, chunks=(1, 32, 48), dtype=np.uint8, zarr_format=zarr_format)
    z[...] = data
    chunk = path / ("c/2/0/0" if zarr_format == 3 else "2.0.0")
    chunk.write_bytes(chunk.read_bytes()[:20])
    (path / ("c/3/0/0" if zarr_format == 3 else "3.0.0")).unlink()
    vol = open_volume(path)
    with pytest.raises(VolumeError, match=r"a\.zarr: cannot read region \[2, 0:32, 0:48\]"):
        vol[2]
    assert not vol[3].any()  # a missing chunk is the fill value (0): zarr's design, documented
    np.testing.assert_array_equal(vol[4:], data[4:])


def test_label_volume_over_a_corrupt_zarr_raises_on_the_decision_scan(tmp_path):
    path = tmp_path / "lab.zarr"
    z = zarr.create_array(str(path), shape=(4, 16, 16), chunks=(1, 16, 16), dtype=np.uint8)
    z[...] = 255
    (path / "c/3/0/0").write_bytes(b"not zstd")
    vol = open_label_volume(path)
    with pytest.raises(VolumeError, match=r"lab\.zarr: cannot read region \[0:4, 0:16, 0:16\]"):
        vol[0]


def test_truncated_nifti(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    path = tmp_path / "v.nii"
    nibabel.save(nibabel.Nifti1Image(ramp_volume((40, 32, 6)), np.eye(4)), str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 2000])
    with pytest.raises(VolumeError, match=r"v\.nii"):
        np.asarray(open_volume(path))
