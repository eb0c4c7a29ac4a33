"""The napari reader and sample data, without a viewer: layer types, scales, contents, laziness."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

pytest.importorskip("dask")

from mtbio.data.store import create_prediction_store, encode_probability, mark_complete  # noqa: E402
from mtbio.napari._layers import IncompletePredictionWarning, prediction_layers  # noqa: E402
from mtbio.napari._options import INCOMPLETE_SUFFIX  # noqa: E402
from mtbio.napari._reader import napari_get_reader, read  # noqa: E402


def _is_lazy(data: object) -> bool:
    import dask.array as da

    return isinstance(data, da.Array)


def _store(path: Path, prob: np.ndarray, *, complete: bool = True, voxel_size=None) -> Path:
    store = create_prediction_store(path, prob.shape, voxel_size=voxel_size, chunks=(4, 16, 16)[-prob.ndim :])
    store.array[1] = encode_probability(prob, "uint8")
    store.array[0] = encode_probability(1 - prob, "uint8")
    if complete:
        mark_complete(path)
    return path


def test_get_reader_accepts_only_supported(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader([]) is None
    (tmp_path / "empty_dir").mkdir()
    assert napari_get_reader(str(tmp_path / "empty_dir")) is None
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((2, 8, 8), np.uint8))
    assert napari_get_reader(str(tmp_path / "a.tif")) is read


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.zarr"):
        read(tmp_path / "nope.zarr")


def test_zarr_group_raw_and_label(tmp_path: Path) -> None:
    import zarr

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (4, 32, 32), dtype=np.uint8)
    label = (rng.random((4, 32, 32)) > 0.8).astype(np.uint8) * 255
    group = zarr.open_group(str(tmp_path / "vol.zarr"), mode="w", zarr_format=3)
    group.attrs["voxel_size"] = [40.0, 8.0, 8.0]
    group.create_array("raw", data=raw, chunks=(2, 16, 16))
    group.create_array("label", data=label, chunks=(2, 16, 16))
    layers = read(str(tmp_path / "vol.zarr"))
    kinds = {kw["name"]: kind for _, kw, kind in layers}
    assert kinds == {"vol raw": "image", "vol label": "labels"}
    assert [kind for *_, kind in layers] == ["image", "labels"]  # labels drawn on top
    for data, kw, _ in layers:
        assert _is_lazy(data)
        assert kw["scale"] == (40.0, 8.0, 8.0)
    by_name = {kw["name"]: data for data, kw, _ in layers}
    np.testing.assert_array_equal(by_name["vol raw"].compute(), raw)
    np.testing.assert_array_equal(by_name["vol label"].compute(), label)


def test_ome_zarr_pyramid_is_multiscale(tmp_path: Path) -> None:
    import zarr

    base = np.arange(8 * 64 * 64, dtype=np.uint16).reshape(8, 64, 64)
    levels = [base, base[:, ::2, ::2], base[:, ::4, ::4]]
    group = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w", zarr_format=3)
    datasets = []
    for i, lv in enumerate(levels):
        group.create_array(str(i), data=lv, chunks=(4, 32, 32))
        f = 2**i
        datasets.append(
            {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [30.0, 5.0 * f, 5.0 * f]}]}
        )
    axes = [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}
    ((data, kw, kind),) = read(tmp_path / "img.ome.zarr")
    assert kind == "image" and kw["multiscale"] is True
    assert [d.shape for d in data] == [lv.shape for lv in levels]
    assert all(_is_lazy(d) for d in data)
    assert kw["scale"] == (30.0, 5.0, 5.0)
    np.testing.assert_array_equal(data[2].compute(), levels[2])


def test_h5_datasets_and_voxel_size(tmp_path: Path) -> None:
    import h5py

    raw = np.random.default_rng(1).integers(0, 255, (3, 20, 24), dtype=np.uint8)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        d = f.create_dataset("volumes/raw", data=raw, chunks=(1, 20, 24))
        d.attrs["resolution"] = [50.0, 4.6, 4.6]
        f.create_dataset("volumes/labels/mito", data=(raw > 200).astype(np.uint8))
    layers = read(tmp_path / "v.h5")
    by_name = {kw["name"]: (data, kw, kind) for data, kw, kind in layers}
    data, kw, kind = by_name["v volumes/raw"]
    assert kind == "image" and _is_lazy(data) and kw["scale"] == (50.0, 4.6, 4.6)
    np.testing.assert_array_equal(data.compute(), raw)
    assert by_name["v volumes/labels/mito"][2] == "labels"


def test_tif_stack(tmp_path: Path) -> None:
    import tifffile

    raw = np.random.default_rng(2).integers(0, 255, (5, 16, 12), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", raw)
    ((data, kw, kind),) = read(tmp_path / "stack.tif")
    assert kind == "image" and kw["name"] == "stack" and _is_lazy(data)
    np.testing.assert_array_equal(np.asarray(data), raw)


def test_prediction_store_layers(tmp_path: Path) -> None:
    prob = np.random.default_rng(3).random((6, 32, 32)).astype(np.float32)
    path = _store(tmp_path / "pred.zarr", prob, voxel_size=(12.0, 12.0, 12.0))
    layers = read(path)
    assert [kind for *_, kind in layers] == ["image", "labels"]
    (p, pkw, _), (m, mkw, _) = layers
    assert _is_lazy(p) and _is_lazy(m)
    assert pkw["name"] == "pred probability" and pkw["contrast_limits"] == (0.0, 255.0)
    assert pkw["scale"] == (12.0, 12.0, 12.0)
    np.testing.assert_array_equal(p.compute(), encode_probability(prob, "uint8"))
    # the derived mask is the metrics' rule: decoded probability >= 0.5
    np.testing.assert_array_equal(m.compute(), (encode_probability(prob, "uint8") / 255.0 >= 0.5).astype(np.uint8))


def test_prediction_store_with_written_mask(tmp_path: Path) -> None:
    from mtbio.inference import write_mask

    prob = np.random.default_rng(4).random((4, 16, 16)).astype(np.float32)
    path = _store(tmp_path / "p.zarr", prob)
    write_mask(path, threshold=0.7)
    names = [kw["name"] for _, kw, _ in read(path)]
    assert names == ["p probability", "p mask"]
    mask = read(path)[1][0].compute()
    np.testing.assert_array_equal(mask, (encode_probability(prob, "uint8") / 255.0 >= 0.7).astype(np.uint8))


def test_incomplete_store_is_flagged(tmp_path: Path) -> None:
    prob = np.full((2, 16, 16), 0.9, np.float32)
    path = _store(tmp_path / "half.zarr", prob, complete=False)
    with pytest.warns(IncompletePredictionWarning, match="incomplete"):
        layers = prediction_layers(path)
    assert all(kw["name"].endswith(INCOMPLETE_SUFFIX) for _, kw, _ in layers)
    assert all(kw["metadata"]["mtbio"]["complete"] is False for _, kw, _ in layers)


def test_large_store_opens_lazily(tmp_path: Path) -> None:
    """A 2.1 GB prediction store (no chunk written) opens in a few MB: nothing is loaded until shown."""
    path = tmp_path / "big.zarr"
    create_prediction_store(path, (64, 4096, 4096), chunks=(16, 512, 512))
    mark_complete(path)
    tracemalloc.start()
    layers = read(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    prob = layers[0][0]
    assert _is_lazy(prob) and prob.nbytes >= 2**30
    assert sum(np.prod(d.shape) for d, _, _ in layers) * 1 >= 2 * 2**30  # probability + mask, each 1 GiB
    assert peak < 64 * 2**20, f"reading the store allocated {peak / 2**20:.0f} MiB"
    section = np.asarray(prob[10, :64, :64])  # reads only what is shown
    assert section.shape == (64, 64) and not section.any()


def test_sample_data_pair() -> None:
    from mtbio.data.synthetic import SOURCE, TARGET
    from mtbio.napari._sample_data import synthetic_pair

    layers = synthetic_pair(shape=(4, 64, 64))
    assert [kw["name"] for _, kw, _ in layers] == ["source raw", "source label", "target raw", "target label"]
    for data, _kw, kind in layers:
        assert data.shape == (4, 64, 64)
        if kind == "labels":
            assert set(np.unique(data)) <= {0, 1}
        else:
            assert data.dtype == np.uint8
    assert layers[0][1]["scale"] == tuple(SOURCE.voxel_size_nm) and layers[2][1]["scale"] == tuple(TARGET.voxel_size_nm)
    assert layers[2][1]["translate"][2] > 64 * SOURCE.voxel_size_nm[2]  # target beside the source


def test_plugin_modules_import_no_gui() -> None:
    code = (
        "import mtbio, mtbio.napari, mtbio.napari._reader, mtbio.napari._sample_data, sys; "
        "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('napari', 'PyQt6', 'qtpy', 'magicgui', 'vispy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_npe2_manifest_validates_with_imports() -> None:
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent))
    if npe2 is None:
        pytest.skip("npe2 is not installed (pip install 'mtbio[napari]')")
    res = subprocess.run([npe2, "validate", "mtbio", "--imports"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in res.stdout


def test_manifest_names_every_contribution() -> None:
    import yaml

    manifest = yaml.safe_load((REPO_ROOT / "mtbio" / "napari" / "napari.yaml").read_text())
    assert manifest["name"] == "mtbio"
    commands = {c["id"] for c in manifest["contributions"]["commands"]}
    used = [c["command"] for key in ("readers", "widgets", "sample_data") for c in manifest["contributions"][key]]
    assert set(used) == commands
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for c in manifest["contributions"]["commands"]:
            module, attr = c["python_name"].split(":")
            if "widget" not in module:  # widget modules need Qt; npe2 validate --imports covers them
                assert callable(getattr(__import__(module, fromlist=[attr]), attr))


@pytest.mark.realdata
def test_vnc3_section_folders(vnc3_dir: Path) -> None:
    """VNC III: the raw TIF folder opens as an image, the mixed 1-bit / 8-bit mask folder as 0/1 labels."""
    from PIL import Image

    ((raw, raw_kw, raw_kind),) = read(vnc3_dir / "stack1" / "raw")
    ((mito, mito_kw, mito_kind),) = read(vnc3_dir / "stack1" / "mitochondria")
    assert (raw_kind, mito_kind) == ("image", "labels")
    assert _is_lazy(raw) and _is_lazy(mito) and raw.shape == mito.shape == (20, 1024, 1024)
    for z in (0, 1):  # 00.png is 8-bit with anti-aliased edges, 01.png is 1-bit
        ref = np.asarray(Image.open(vnc3_dir / "stack1" / "mitochondria" / f"{z:02d}.png").convert("L")) > 127
        np.testing.assert_array_equal(np.asarray(mito[z]), ref.astype(np.uint8))
