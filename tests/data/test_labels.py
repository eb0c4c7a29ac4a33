"""The label rule on crafted arrays and files (PIL as the oracle) and on the real VNC III / Lucchi++ labels."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from mtbio.data import volumes
from mtbio.data.errors import VolumeError
from mtbio.data.labels import (
    binarize_label,
    foreground_fraction,
    open_label_volume,
    read_label_image,
    rgb_to_grey,
)
from tests.data.volume_helpers import labelled_section, save_label_png, write_png_sections

# ------------------------------------------------------------------------------------------------ crafted arrays


@pytest.mark.parametrize("channels", [3, 4])
def test_rgb_to_grey_matches_pil_convert_l(channels):
    rgb = np.random.default_rng(channels).integers(0, 256, size=(64, 64, channels), dtype=np.uint8)
    mode = "RGB" if channels == 3 else "RGBA"
    expected = np.asarray(Image.fromarray(rgb, mode=mode).convert("L"))
    np.testing.assert_array_equal(rgb_to_grey(rgb), expected)


def test_rgba_with_opaque_alpha_is_not_all_foreground():
    mask = labelled_section((32, 32), seed=0)
    grey = np.where(mask, 255, 0).astype(np.uint8)
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)
    out = binarize_label(rgba)
    assert out.shape == (32, 32) and out.dtype == np.bool_
    np.testing.assert_array_equal(out, mask)
    assert (rgba > 0).any(axis=-1).all() and not out.all()  # "any channel > 0" would be all foreground


def test_anti_aliased_edges_threshold_at_127():
    mask = labelled_section((40, 40), seed=7)
    grey = np.where(mask, 255, 0).astype(np.uint8)
    grey[mask & ~np.roll(mask, 1, axis=1)] = 200  # anti-aliased foreground edge
    grey[~mask & np.roll(mask, -1, axis=1)] = 1  # faint background edge (VNC III has 1..254)
    grey[0, 0] = 100  # one mid-grey background pixel
    np.testing.assert_array_equal(binarize_label(grey), grey > 127)
    np.testing.assert_array_equal(binarize_label(grey), mask & (grey > 127))


def test_vnc3_section_15_values_0_1_255_read_as_greyscale():
    grey = np.zeros((8, 8), np.uint8)
    grey[2:6, 2:6] = 255
    grey[1, 3] = 1  # VNC III section 15 holds exactly {0, 1, 255}
    np.testing.assert_array_equal(binarize_label(grey), grey == 255)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int32", "int64", "float32"])
def test_zero_one_masks_in_any_dtype(dtype):
    mask = labelled_section((20, 20), seed=8)
    np.testing.assert_array_equal(binarize_label(mask.astype(dtype)), mask)


@pytest.mark.parametrize("value", [1, 100, 255])
def test_two_valued_uint8_masks_read_by_value_not_threshold(value):
    mask = labelled_section((20, 20), seed=9)
    np.testing.assert_array_equal(binarize_label(np.where(mask, value, 0).astype(np.uint8)), mask)


def test_uint8_instance_ids_are_foreground():
    ids = np.zeros((10, 10), np.uint8)
    ids[1:3, 1:3], ids[5:8, 5:8], ids[0, 9] = 1, 2, 3  # a few small ids: no 255
    np.testing.assert_array_equal(binarize_label(ids), ids != 0)


def test_instance_map_with_ids_up_to_255_is_not_thresholded():
    ids = np.repeat(np.arange(256, dtype=np.uint16), 4).reshape(32, 32)  # ids 1..255, id 255 smallest
    ids[-1, -3:] = 0
    np.testing.assert_array_equal(binarize_label(ids), ids != 0)


def test_rgb_colour_coded_mask_uses_the_brightest_channel():
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[1:3, 1:3] = (0, 0, 1)  # luminance 0: a grey conversion would drop it
    rgb[4:, 4:] = (120, 10, 60)
    np.testing.assert_array_equal(binarize_label(rgb), rgb.any(axis=-1))


def test_bool_and_pil_1bit_read_true_as_foreground():
    mask = labelled_section((20, 24), seed=1)
    np.testing.assert_array_equal(binarize_label(mask), mask)
    np.testing.assert_array_equal(binarize_label(Image.fromarray(mask).convert("1")), mask)


@pytest.mark.parametrize("dtype", ["uint16", "uint32", "uint64", "int32", "int64"])
def test_wide_integers_are_instance_labels(dtype):
    instances = np.zeros((3, 8, 8), dtype=dtype)
    instances[0, 1:3, 1:3] = 1
    instances[2, 4:, 4:] = 1000 if np.iinfo(dtype).max >= 1000 else 100
    np.testing.assert_array_equal(binarize_label(instances), instances > 0)


def test_float_labels_are_fractions_or_whole_numbers():
    fractions = np.array([[0.0, 0.4, 0.6], [1.0, 0.5, 0.49]], np.float32)
    np.testing.assert_array_equal(binarize_label(fractions), [[False, False, True], [True, True, False]])
    whole = np.array([[0.0, 255.0], [255.0, 0.0]], np.float64)
    np.testing.assert_array_equal(binarize_label(whole), whole > 0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array([[0.0, 1.7], [-0.3, 2.5]], np.float32), "neither fractions in \\[0, 1\\] nor whole numbers"),
        (np.array([[0.0, np.nan], [1.0, 0.0]], np.float32), "1 NaN value"),
        (np.array([[0, -1], [1, 2]], np.int32), "negative values -1..2"),
        (np.array([[1, 2], [2, 1]], np.uint8), "no 0 background"),
    ],
)
def test_values_the_rule_refuses(values, message):
    with pytest.raises(VolumeError, match=message):
        binarize_label(values, where="lab.h5")


def test_colour_guess_can_be_overridden():
    narrow = np.full((5, 6, 3), 200, np.uint8)  # a (Z, Y, X) volume only 3 voxels wide
    assert binarize_label(narrow).shape == (5, 6)
    assert binarize_label(narrow, color=False).shape == (5, 6, 3)


# -------------------------------------------------------------------------------------------------- crafted files


@pytest.mark.parametrize("mode", ["1", "L", "RGBA"])
def test_read_label_image_modes(tmp_path, mode):
    mask = labelled_section((30, 40), seed=2)
    save_label_png(tmp_path / "m.png", mask, mode)
    assert Image.open(tmp_path / "m.png").mode == mode
    out = read_label_image(tmp_path / "m.png")
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, mask)


def test_read_label_image_palette_16bit_and_tif(tmp_path):
    mask = labelled_section((16, 16), seed=3)
    palette = Image.fromarray(mask.astype(np.uint8), mode="L").convert("P")
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_label_image(tmp_path / "p.png"), mask)
    instances = mask.astype(np.uint16) * 7
    Image.fromarray(instances).save(tmp_path / "i16.png")
    np.testing.assert_array_equal(read_label_image(tmp_path / "i16.png"), mask)
    tifffile.imwrite(tmp_path / "t.tif", np.where(mask, 255, 0).astype(np.uint8))
    np.testing.assert_array_equal(read_label_image(tmp_path / "t.tif"), mask)


def test_read_label_image_bad_input(tmp_path):
    with pytest.raises(VolumeError, match=r"none\.png: no such label file"):
        read_label_image(tmp_path / "none.png")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(VolumeError, match=r"bad\.png: cannot read label image"):
        read_label_image(tmp_path / "bad.png")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((2, 4, 4), np.uint8), photometric="minisblack")
    with pytest.raises(VolumeError, match=r"stack\.tif: a label image must be 2D, this TIF has axes QYX"):
        read_label_image(tmp_path / "stack.tif")


def test_label_folder_mixing_1bit_grey_and_rgba(tmp_path, monkeypatch):
    masks = np.stack([labelled_section((24, 28), seed=s) for s in range(6)])
    for i, mode in enumerate(["L", "1", "RGBA", "L", "1", "L"]):
        save_label_png(tmp_path / "lab" / f"{i:02d}.png", masks[i], mode)
    with pytest.raises(VolumeError, match="differ in dtype"):  # as an image volume the modes disagree
        volumes.open_volume(tmp_path / "lab")
    reads: list[str] = []
    import mtbio.data.labels as labels

    real = labels.read_label_image
    monkeypatch.setattr(labels, "read_label_image", lambda p: reads.append(p.name) or real(p))
    vol = open_label_volume(tmp_path / "lab", voxel_size=(50, 4.6, 4.6))
    assert vol.shape == (6, 24, 28) and vol.dtype == np.bool_ and vol.voxel_size == (50.0, 4.6, 4.6)
    np.testing.assert_array_equal(vol[4], masks[4])
    assert reads == ["04.png"]
    np.testing.assert_array_equal(np.asarray(vol), masks)


def test_label_volume_from_h5_instances_and_rgb_tif(tmp_path):
    instances = np.zeros((3, 8, 8), np.uint16)
    instances[1, 2:5, 2:5] = 4
    instances[2, 6:, :3] = 300
    with h5py.File(tmp_path / "mito.h5", "w") as f:
        f.create_dataset("main", data=instances)
    vol = open_label_volume(tmp_path / "mito.h5", "main")
    assert vol.dtype == np.bool_
    np.testing.assert_array_equal(vol[1:], instances[1:] > 0)
    mask = labelled_section((10, 12), seed=4)
    rgb = np.repeat(np.where(mask, 255, 0).astype(np.uint8)[..., None], 3, axis=-1)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    lab = open_label_volume(tmp_path / "rgb.tif")
    assert lab.shape == (10, 12) and lab.axes == ("y", "x")
    np.testing.assert_array_equal(lab[2:, ::-1], mask[2:, ::-1])


def test_single_label_png(tmp_path):
    mask = labelled_section((9, 11), seed=5)
    save_label_png(tmp_path / "one.png", mask, "RGBA")
    vol = open_label_volume(tmp_path / "one.png")
    assert vol.shape == (9, 11)
    np.testing.assert_array_equal(vol[...], mask)


def _palette_png(path, indices, palette):
    im = Image.fromarray(indices.astype(np.uint8), mode="L")
    im = Image.frombytes("P", im.size, im.tobytes())
    im.putpalette(palette + [0] * (768 - len(palette)))
    im.save(path)
    assert Image.open(path).mode == "P"


def test_palette_png_is_read_by_index_not_colour(tmp_path):
    mask = labelled_section((16, 20), seed=11)
    _palette_png(tmp_path / "dark.png", mask, [0, 0, 0, 1, 1, 1])  # index 1 is nearly black
    _palette_png(tmp_path / "inverted.png", mask, [255, 255, 255, 0, 0, 0])  # index 0 is white
    for name in ("dark.png", "inverted.png"):
        np.testing.assert_array_equal(read_label_image(tmp_path / name), mask)
    assert not (np.asarray(Image.open(tmp_path / "dark.png").convert("L")) > 127).any()  # the old grey rule: empty


def test_zero_one_files_uint8_png_uint16_tif_int64_h5(tmp_path):
    mask = labelled_section((12, 16), seed=12)
    Image.fromarray(mask.astype(np.uint8)).save(tmp_path / "01.png")
    tifffile.imwrite(tmp_path / "01.tif", mask.astype(np.uint16))
    np.testing.assert_array_equal(read_label_image(tmp_path / "01.png"), mask)
    np.testing.assert_array_equal(np.asarray(open_label_volume(tmp_path / "01.tif")), mask)
    stack = np.stack([mask, ~mask, mask]).astype(np.int64)
    with h5py.File(tmp_path / "01.h5", "w") as f:
        f["label"] = stack
    np.testing.assert_array_equal(np.asarray(open_label_volume(tmp_path / "01.h5")), stack.astype(bool))


def test_folder_decides_per_file_by_its_values(tmp_path):
    """VNC III-like: 1-bit, anti-aliased 8-bit, {0, 1} uint8, palette and an all-zero section in one folder."""
    masks = np.stack([labelled_section((24, 28), seed=20 + s) for s in range(5)])
    masks[4] = False
    folder = tmp_path / "lab"
    save_label_png(folder / "00.png", masks[0], "1")
    save_label_png(folder / "01.png", masks[1], "L")
    Image.fromarray(masks[2].astype(np.uint8)).save(folder / "02.png")  # {0, 1} 8-bit
    _palette_png(folder / "03.png", masks[3], [0, 0, 0, 40, 0, 0])
    Image.fromarray(np.zeros((24, 28), np.uint8)).save(folder / "04.png")
    vol = open_label_volume(folder)
    np.testing.assert_array_equal(np.asarray(vol), masks)
    assert not vol[4].any()  # the all-zero section stays empty
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert foreground_fraction(vol) == pytest.approx(masks.mean())


def test_volume_is_decided_once_for_the_whole_array(tmp_path):
    grey = np.zeros((4, 16, 16), np.uint8)
    grey[0, 4:12, 4:12] = 255
    grey[0, 3, 4:12] = 40  # a faint anti-aliased edge: background under the > 127 rule
    with h5py.File(tmp_path / "grey.h5", "w") as f:
        f["label"] = grey
    vol = open_label_volume(tmp_path / "grey.h5")
    patch = vol[0, 2:4, :]  # holds only {0, 40}: a rule decided on the patch would call 40 foreground
    assert not patch.any()
    np.testing.assert_array_equal(np.asarray(vol), grey > 127)
    assert foreground_fraction(vol) == pytest.approx((grey > 127).mean())


@pytest.mark.parametrize(("fill", "words"), [(0, "has no foreground"), (255, "is all foreground")])
def test_degenerate_label_volume_warns_naming_the_file(tmp_path, fill, words):
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f["label"] = np.full((3, 8, 8), fill, np.uint8)
    vol = open_label_volume(tmp_path / "flat.h5")
    with pytest.warns(UserWarning, match=rf"flat\.h5\[label\]: label volume {words}"):
        assert foreground_fraction(vol) == (1.0 if fill else 0.0)
    folder = tmp_path / "sections"
    write_png_sections(folder, np.full((2, 8, 8), fill, np.uint8))
    with pytest.warns(UserWarning, match=rf"sections: label volume {words}"):
        foreground_fraction(open_label_volume(folder))


def test_foreground_fraction_needs_a_label_volume(tmp_path):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"img\.tif: foreground_fraction needs a bool label volume"):
        foreground_fraction(volumes.open_volume(tmp_path / "img.tif"))


# ------------------------------------------------------------------------------------------------------ real data


@pytest.mark.realdata
def test_vnc3_labels(vnc3_dir):
    folder = vnc3_dir / "stack1" / "mitochondria"
    vol = open_label_volume(folder)
    masks = np.asarray(vol)
    per_section = masks.reshape(len(masks), -1).mean(axis=1)
    assert (per_section > 0).all()  # every section has mitochondria
    assert 0.03 < masks.mean() < 0.08  # README: about 5.4 %
    files = sorted(folder.glob("*.png"))
    one_bit = [i for i, f in enumerate(files) if Image.open(f).mode == "1"]
    assert one_bit  # the 1-bit sections are read (README: 01, 07, 18)
    for i in one_bit:
        raw = np.asarray(Image.open(files[i]))
        assert not (raw.astype(np.uint8) > 127).any()  # the naive rule would drop them entirely ...
        np.testing.assert_array_equal(masks[i], raw)  # ... the label rule keeps exactly the set pixels
        assert masks[i].any()
    grey = next(i for i, f in enumerate(files) if Image.open(f).mode == "L")
    raw = np.asarray(Image.open(files[grey]))
    assert ((raw > 0) & (raw < 255)).any()  # anti-aliased edges exist ...
    assert masks[grey].sum() < (raw > 0).sum()  # ... and are not all taken as foreground


@pytest.mark.realdata
def test_lucchi_pp_labels(lucchi_pp_dir):
    rgba = open_label_volume(lucchi_pp_dir / "Test_Out")
    first = Image.open(lucchi_pp_dir / "Test_Out" / "0.png")
    assert first.mode == "RGBA"
    np.testing.assert_array_equal(rgba[0], np.asarray(first)[..., 0] > 127)  # R = G = B
    test_out = np.asarray(rgba)
    assert 0.01 < test_out.mean() < 0.2 and not test_out.all(axis=(1, 2)).any()
    grey = np.asarray(open_label_volume(lucchi_pp_dir / "Train_Out"))
    assert 0.01 < grey.mean() < 0.2 and grey.reshape(len(grey), -1).any(axis=1).all()
