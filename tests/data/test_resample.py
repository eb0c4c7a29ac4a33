"""The lazy resampled view: same values as skimage's resize, block = whole, reads only what it needs."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import resize

from mtbio.data.resample import ResampledVolume, differs, zoom_factors


class Recording:
    """An array that records every index it is read with."""

    def __init__(self, data: np.ndarray, voxel_size=None) -> None:
        self.data, self.shape, self.dtype, self.voxel_size = data, data.shape, data.dtype, voxel_size
        self.reads: list[tuple] = []

    def __getitem__(self, index):
        self.reads.append(index)
        return self.data[index]


def _stack(seed: int = 0, shape=(4, 60, 84)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


@pytest.mark.parametrize("factor", [0.5, 0.37, 2.0, 1.6])
def test_matches_skimage_resize_with_antialiasing(factor):
    a = _stack()
    view = ResampledVolume(a, (1.0, factor, factor))
    out = (view.shape[1], view.shape[2])
    assert out == (round(60 * factor), round(84 * factor))
    ref = np.stack([resize(s, out, order=1, mode="edge", anti_aliasing=factor < 1) for s in a])
    np.testing.assert_allclose(view[...], ref, atol=1e-5)


def test_any_block_equals_the_same_block_of_the_whole():
    a = _stack(1)
    for factors in [(1.0, 0.5, 0.5), (0.5, 2.0, 0.7)]:
        view = ResampledVolume(a, factors)
        whole = view[...]
        for index in [np.s_[1, 3:17, 5:40], np.s_[:, -9:, 2], np.s_[1:2, ::3, 4:30:2], np.s_[..., 7]]:
            np.testing.assert_allclose(view[index], whole[index], atol=1e-5)


def test_reads_only_the_sections_and_rows_asked():
    rec = Recording(_stack(2, (20, 200, 240)), voxel_size=(5.0, 10.0, 10.0))
    view = ResampledVolume(rec, (1.0, 2.0, 2.0))
    assert view.shape == (20, 400, 480) and view.voxel_size == (5.0, 5.0, 5.0)
    assert rec.reads == []  # nothing read at construction
    view[7, 100:140, 0:50]
    ((z, y, x),) = rec.reads
    assert z == slice(7, 8)  # z is not resampled: exactly the section asked
    assert y.start >= 48 and y.stop <= 72  # ~rows 50-70 of the input (plus one for interpolation)
    assert x.start == 0 and x.stop <= 27
    rec.reads.clear()
    ResampledVolume(rec, (1.0, 0.5, 0.5))[3:5, 10:20, 10:20]  # downsampling: + the anti-aliasing margin
    ((z, y, x),) = rec.reads
    assert z == slice(3, 5) and y.stop - y.start <= 20 + 2 * 4 + 2


def test_labels_stay_binary_and_channels_pass_through():
    lab = np.zeros((2, 40, 40), bool)
    lab[:, 10:30, 10:30] = True
    view = ResampledVolume(lab, (1.0, 0.5, 0.5), label=True)
    out = view[...]
    assert out.dtype == bool and out.shape == (2, 20, 20)
    assert out[:, 6:14, 6:14].all() and not out[:, :4].any()
    probs = np.stack([1 - _stack(3, (3, 30, 30)), _stack(3, (3, 30, 30))])  # (C, Z, Y, X)
    back = ResampledVolume(probs, (1.0, 1.0, 2.0), shape=(3, 30, 60))
    assert back.shape == (2, 3, 30, 60)
    np.testing.assert_allclose(
        back[1, 2], np.stack([resize(probs[1, 2], (30, 60), order=1, mode="edge")])[0], atol=1e-5
    )


def test_tolerance_and_factors():
    assert not differs((5.0, 5.4, 5.4), (5.0, 5.0, 5.0))  # 8 %: the same grid
    assert differs((5.0, 5.6, 5.6), (5.0, 5.0, 5.0))
    assert zoom_factors((5, 10, 10), (5, 5, 5)) == (1.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="different lengths"):
        differs((5, 5), (5, 5, 5))
    with pytest.raises(ValueError, match="positive"):
        ResampledVolume(np.zeros((4, 4)), (0.0, 1.0))


class _Vol:
    """An in-memory (Z, Y, X) volume with a voxel size."""

    def __init__(self, data, voxel_size):
        self.data, self.shape, self.dtype, self.voxel_size = data, data.shape, data.dtype, voxel_size

    def __getitem__(self, index):
        return self.data[index]


def test_training_grid_brings_the_source_to_the_targets_in_plane_voxel_size():
    from mtbio.data.resample import training_grid

    src = _Vol(_stack(4, (3, 80, 80)), (40.0, 8.0, 8.0))
    lab = _Vol(_stack(5, (3, 80, 80)) > 0.5, None)
    tgt = _Vol(_stack(6, (5, 50, 50)), (10.0, 10.0, 10.0))
    grid = training_grid(src, lab, tgt, spatial_dims=2)
    assert grid.voxel_size == (10.0, 10.0) and grid.target_image is tgt
    assert grid.source_image.shape == (3, 64, 64)  # z (40 nm sections) untouched by a 2D network
    assert grid.source_label.shape == (3, 64, 64) and grid.source_label[0].dtype == bool
    assert "resampled from (8, 8) nm to the target's (10, 10) nm" in grid.note
    grid3 = training_grid(src, lab, tgt, spatial_dims=3)
    assert grid3.voxel_size == (10.0, 10.0, 10.0) and grid3.source_image.shape == (12, 64, 64)
    off = training_grid(src, lab, tgt, spatial_dims=2, resample=False)
    assert off.source_image is src and off.voxel_size == (10.0, 10.0) and "--no-resample" in off.note
    close = training_grid(src, lab, tgt, spatial_dims=2, target_voxel_size=(10.0, 8.5, 8.5))
    assert close.source_image is src and "no resampling" in close.note
    only = training_grid(src, lab, None, spatial_dims=2)  # source-only: the source's grid
    assert only.source_image is src and only.voxel_size == (8.0, 8.0)
    unknown = training_grid(_Vol(src.data, None), lab, tgt, spatial_dims=2)
    assert unknown.source_image is not src and unknown.voxel_size == (10.0, 10.0) and "unknown" in unknown.note


@pytest.mark.slow  # two (one-iteration) training runs: about 10-25 s on the shared 2-core machine
def test_train_cli_records_voxel_size_and_normalization(tmp_path, capsys):
    import zarr

    from mtbio.cli import main
    from mtbio.networks.weights import read_weights

    def write(name, data, voxel_size):
        arr = zarr.open_array(str(tmp_path / name), mode="w", shape=data.shape, dtype=data.dtype, chunks=data.shape)
        arr[:] = data
        arr.attrs["voxel_size"] = list(voxel_size)
        return str(tmp_path / name)

    rng = np.random.default_rng(0)
    src = write("s.zarr", rng.integers(0, 255, (2, 40, 40), dtype=np.uint8), (40, 8, 8))
    lab = write("l.zarr", (rng.random((2, 40, 40)) > 0.7).astype(np.uint8) * 255, (40, 8, 8))
    tgt = write("t.zarr", rng.integers(0, 255, (2, 40, 40), dtype=np.uint8), (10, 10, 10))
    common = [
        "train",
        "--source",
        src,
        "--source-label",
        lab,
        "--target",
        tgt,
        "--strategy",
        "masktwins",
        "--iters",
        "1",
        "--crop",
        "32",
        "--batch",
        "1",
        "--block-size",
        "8",
    ]
    assert main([*common, "--out", str(tmp_path / "run")]) == 0
    record = read_weights(tmp_path / "run" / "final.pt")
    assert record.voxel_size == [10.0, 10.0] and record.normalization == "zscore_section"
    assert "source resampled from (8, 8) nm to the target's (10, 10) nm" in capsys.readouterr().out
    assert main([*common, "--out", str(tmp_path / "run2"), "--target-voxel-size", "10", "8", "8"]) == 0
    assert read_weights(tmp_path / "run2" / "final.pt").voxel_size == [8.0, 8.0]
    assert "no resampling" in capsys.readouterr().out


def test_bundle_pair_on_training_grid_resamples_the_source_only():
    from mtbio.bundle.data import DomainPair

    src = _Vol(_stack(7, (2, 40, 40)), (40.0, 8.0, 8.0))
    tgt = _Vol(_stack(8, (2, 30, 30)), (10.0, 10.0, 10.0))
    pair = DomainPair(
        src,
        _Vol(src.data > 0.5, None),
        tgt,
        None,
        tgt,
        None,
        voxel_size={"source": src.voxel_size, "target": tgt.voxel_size},
    )
    moved, grid = pair.on_training_grid(2)
    assert moved.source_image.shape == (2, 32, 32) and moved.source_label.shape == (2, 32, 32)
    assert moved.target_image is tgt and moved.test_image is tgt and grid.voxel_size == (10.0, 10.0)
    same, grid = pair.on_training_grid(2, resample=False)
    assert same.source_image is src and grid.voxel_size == (10.0, 10.0)
