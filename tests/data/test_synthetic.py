"""Synthetic EM domains: determinism, labels, distractors, domain differences, the zarr layout and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from mtbio.data.synthetic import SOURCE, TARGET, TARGET_HARD, DomainStyle, generate_synthetic, synthesize
from mtbio.data.synthetic.io import LAYOUT, MANIFEST
from mtbio.data.synthetic.shapes import CellTessellation, Grid

SMALL = (6, 96, 96)
NOISELESS = {"gaussian_noise": 0.0, "photons": 0.0, "section_jitter": 0.0, "curtain_amplitude": 0.0}


@pytest.mark.parametrize("style", [SOURCE, TARGET, TARGET_HARD], ids=lambda s: s.name)
def test_shapes_dtypes_and_label_values(style: DomainStyle) -> None:
    raw, label = synthesize(style, SMALL, seed=5)
    assert raw.shape == label.shape == SMALL
    assert raw.dtype == np.uint8 and label.dtype == np.uint8
    assert set(np.unique(label).tolist()) == {0, 255}
    assert raw.std() > 5  # an image, not a constant


@pytest.mark.parametrize("style", [SOURCE, TARGET], ids=lambda s: s.name)
def test_same_seed_is_bitwise_identical_and_other_seed_differs(style: DomainStyle) -> None:
    raw_a, lab_a = synthesize(style, SMALL, seed=11)
    raw_b, lab_b = synthesize(style, SMALL, seed=11)
    raw_c, lab_c = synthesize(style, SMALL, seed=12)
    assert np.array_equal(raw_a, raw_b) and np.array_equal(lab_a, lab_b)
    assert not np.array_equal(raw_a, raw_c)
    assert not np.array_equal(lab_a, lab_c)


@pytest.mark.parametrize("style", [SOURCE, TARGET], ids=lambda s: s.name)
def test_foreground_fraction_in_range(style: DomainStyle) -> None:
    fractions = [(synthesize(style, (12, 160, 160), seed=s)[1] > 127).mean() for s in range(3)]
    # the painter aims at style.mito_fraction (5-10 %); edge effects and label sampling allow a margin
    assert all(0.035 <= f <= 0.13 for f in fractions), fractions


def test_mitochondria_are_darker_than_cytoplasm() -> None:
    for style in (SOURCE, TARGET):
        raw, label = synthesize(style, (8, 128, 128), seed=2)
        fg = label > 127
        assert raw[fg].mean() < raw[~fg].mean() - 10, style.name


def test_distractors_exist_and_are_not_labelled() -> None:
    plain = SOURCE.replace(
        vesicle_per_um3=0.0, large_vesicle_per_um3=0.0, dense_body_per_um3=0.0, synapse_per_um3=0.0, **NOISELESS
    )
    busy = plain.replace(
        vesicle_per_um3=150.0, large_vesicle_per_um3=30.0, dense_body_per_um3=15.0, synapse_per_um3=5.0
    )
    raw_plain, lab_plain = synthesize(plain, (6, 128, 128), seed=3)
    raw_busy, lab_busy = synthesize(busy, (6, 128, 128), seed=3)
    # the geometry of mitochondria does not depend on the distractors: identical labels
    assert np.array_equal(lab_plain, lab_busy)
    darker = raw_busy.astype(int) < raw_plain.astype(int) - 25
    assert darker.sum() > 200  # dark blobs were added ...
    mito = lab_busy > 127
    # ... outside the labelled mitochondria (a blurred rim of a vesicle touching one may reach 1 voxel in)
    assert (darker & mito).sum() < 0.02 * darker.sum(), ((darker & mito).sum(), darker.sum())
    assert (darker & ndimage.binary_erosion(mito, iterations=2)).sum() == 0
    _, n_blobs = ndimage.label(darker & ~mito)
    assert n_blobs >= 5


def test_no_mitochondria_when_fraction_is_zero() -> None:
    raw, label = synthesize(TARGET.replace(mito_fraction=(0.0, 0.0)), SMALL, seed=1)
    assert label.max() == 0
    assert raw.min() < np.median(raw) - 30  # distractors and membranes still make dark structures


def _component_diameters(label: np.ndarray) -> list[float]:
    out: list[float] = []
    for section in label > 127:
        lab, n = ndimage.label(section)
        if n:
            out += list(2 * np.sqrt(np.bincount(lab.ravel())[1:] / np.pi))
    return out


def test_domains_differ_in_scale_and_intensity() -> None:
    src = [synthesize(SOURCE, (8, 128, 128), seed=s) for s in range(3)]
    tgt = [synthesize(TARGET, (8, 128, 128), seed=s) for s in range(3)]
    d_src = np.median(sum((_component_diameters(lab) for _, lab in src), []))
    d_tgt = np.median(sum((_component_diameters(lab) for _, lab in tgt), []))
    # same physical sizes, pixel ratio 10 nm / 8 nm: organelles look bigger in source pixels
    assert d_src > 1.1 * d_tgt, (d_src, d_tgt)
    # intensity histograms differ (total variation distance of the normalised 32-bin histograms)
    h_src = np.histogram(np.concatenate([r.ravel() for r, _ in src]), bins=32, range=(0, 256))[0]
    h_tgt = np.histogram(np.concatenate([r.ravel() for r, _ in tgt]), bins=32, range=(0, 256))[0]
    tv = 0.5 * np.abs(h_src / h_src.sum() - h_tgt / h_tgt.sum()).sum()
    assert tv > 0.2, tv
    # relative fine-grain (noise / speck) energy differs: the target is grainier once both are z-scored

    def grain(raw: np.ndarray) -> float:
        img = raw.astype(float)
        return float(np.std(img - ndimage.uniform_filter(img, (1, 3, 3))) / img.std())

    g_src, g_tgt = np.mean([grain(r) for r, _ in src]), np.mean([grain(r) for r, _ in tgt])
    assert g_tgt > 1.2 * g_src, (g_src, g_tgt)


def test_anisotropic_source_integrates_thick_sections() -> None:
    raw_thick, _ = synthesize(SOURCE.replace(**NOISELESS), (4, 64, 64), seed=0)
    raw_thin, _ = synthesize(SOURCE.replace(section_samples=1, **NOISELESS), (4, 64, 64), seed=0)
    assert raw_thick.shape == raw_thin.shape and not np.array_equal(raw_thick, raw_thin)
    assert SOURCE.anisotropy >= 4 and TARGET.anisotropy == 1


def test_voronoi_boundary_distance_matches_brute_force() -> None:
    grid = Grid((3, 60, 60), (12.0, 12.0, 12.0))
    cells = CellTessellation(np.random.default_rng(0), grid, 600.0)
    dist = cells.boundary_distance(np.random.default_rng(1), wobble_nm=0.0)
    z, y, x = np.meshgrid(*[(np.arange(n) + 0.5) * 12.0 for n in grid.shape], indexing="ij")
    pts = np.stack([z, y, x], -1).reshape(-1, 3)
    d2 = ((pts[:, None, :] - cells.seeds[None]) ** 2).sum(-1)
    order = np.argsort(d2, axis=1)
    c1, c2 = cells.seeds[order[:, 0]], cells.seeds[order[:, 1]]
    exact = (np.sort(d2, axis=1)[:, 1] - np.sort(d2, axis=1)[:, 0]) / (2 * np.linalg.norm(c2 - c1, axis=1))
    near = exact.reshape(grid.shape) < 30  # near membranes the interpolated field is accurate ...
    err = np.abs(dist - exact.reshape(grid.shape))[near]
    assert np.median(err) < 0.5 and np.quantile(err, 0.75) < 3.0, (np.median(err), np.quantile(err, 0.75))
    # ... except close to junctions of three cells, where the nearest pair of seeds changes


@pytest.mark.parametrize(
    "changes",
    [
        {"voxel_size_nm": (0.0, 8.0, 8.0)},
        {"voxel_size_nm": (8.0, 8.0)},
        {"section_samples": 0},
        {"gamma": 0.0},
        {"invert_mix": 1.5},
        {"mito_fraction": (0.2, 0.1)},
        {"gaussian_noise": -0.1},
    ],
)
def test_style_validation(changes: dict) -> None:
    with pytest.raises(ValueError):
        SOURCE.replace(**changes)


@pytest.mark.parametrize("shape", [(4, 8, 64), (4, 64), (0, 64, 64), (2.5, 64, 64)])
def test_bad_shape_is_rejected(shape: tuple) -> None:
    with pytest.raises(ValueError, match="shape"):
        synthesize(SOURCE, shape, seed=0)


def test_style_dict_round_trip() -> None:
    assert DomainStyle.from_dict(json.loads(json.dumps(TARGET.to_dict()))) == TARGET
    with pytest.raises(ValueError, match="unknown"):
        DomainStyle.from_dict({**TARGET.to_dict(), "colour": 1})


def test_generate_layout_attrs_and_manifest(tmp_path) -> None:
    import zarr

    out = tmp_path / "synth"
    paths = generate_synthetic(out, seed=4, shape=(4, 64, 64), progress=False)
    assert set(paths) == {"source", "target", "target_labels", "target_test", "target_test_labels", "manifest"}
    members = {
        "source.zarr": ("raw", "label"),
        "target.zarr": ("raw",),
        "target_labels.zarr": ("label",),
        "target_test.zarr": ("raw",),
        "target_test_labels.zarr": ("label",),
    }
    assert set(members) == set(LAYOUT)
    for name, arrays in members.items():
        group = zarr.open_group(str(out / name), mode="r")
        assert group.metadata.zarr_format == 3
        assert sorted(group.array_keys()) == sorted(arrays)
        style = SOURCE if name == "source.zarr" else TARGET
        for key in arrays:
            arr = group[key]
            assert arr.shape == (4, 64, 64) and arr.dtype == np.uint8
            assert list(arr.attrs["voxel_size"]) == list(style.voxel_size_nm)
            if key == "label":
                assert set(np.unique(arr[...]).tolist()) <= {0, 255}
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["seed"] == 4 and manifest["shape"] == [4, 64, 64]
    assert DomainStyle.from_dict(manifest["source"]) == SOURCE
    assert DomainStyle.from_dict(manifest["target"]) == TARGET
    assert "mtbio_version" in manifest
    assert not list(out.glob(".tmp-*"))
    # the stored volumes are what synthesize() makes with the documented seeds
    raw, label = synthesize(SOURCE, (4, 64, 64), seed=4)
    source = zarr.open_group(str(out / "source.zarr"), mode="r")
    assert np.array_equal(source["raw"][...], raw) and np.array_equal(source["label"][...], label)
    target = zarr.open_group(str(out / "target.zarr"), mode="r")["raw"][...]
    test = zarr.open_group(str(out / "target_test.zarr"), mode="r")["raw"][...]
    assert not np.array_equal(target, test)  # the held-out volume is another scene


def test_generate_is_deterministic_idempotent_and_refuses_overwrite(tmp_path) -> None:
    import zarr

    a, b = tmp_path / "a", tmp_path / "b"
    generate_synthetic(a, seed=1, shape=(3, 48, 48), progress=False)
    generate_synthetic(b, seed=1, shape=(3, 48, 48), progress=False)
    for name in ("source.zarr", "target_test.zarr"):
        ga, gb = zarr.open_group(str(a / name), mode="r"), zarr.open_group(str(b / name), mode="r")
        assert np.array_equal(ga["raw"][...], gb["raw"][...])
    stamp = (a / MANIFEST).stat().st_mtime_ns
    generate_synthetic(a, seed=1, shape=(3, 48, 48), progress=False)  # same args: returns at once
    assert (a / MANIFEST).stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_synthetic(a, seed=2, shape=(3, 48, 48), progress=False)
    generate_synthetic(a, seed=2, shape=(3, 48, 48), overwrite=True, progress=False)
    assert json.loads((a / MANIFEST).read_text())["seed"] == 2


def test_incomplete_folder_is_rebuilt_and_foreign_folder_refused(tmp_path) -> None:
    out = tmp_path / "synth"
    generate_synthetic(out, seed=0, shape=(3, 48, 48), progress=False)
    (out / MANIFEST).unlink()  # as if interrupted before the end
    generate_synthetic(out, seed=0, shape=(3, 48, 48), progress=False)
    assert (out / MANIFEST).is_file()
    foreign = tmp_path / "other"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_synthetic(foreign, seed=0, shape=(3, 48, 48), progress=False)
    with pytest.raises(ValueError, match="seed"):
        generate_synthetic(tmp_path / "x", seed=-1, shape=(3, 48, 48), progress=False)


def test_cli_synth(tmp_path, capsys) -> None:
    import zarr

    from mtbio.cli import main

    out = tmp_path / "cli"
    assert main(["synth", str(out), "--seed", "3", "--shape", "3", "48", "48", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "source.zarr" in printed and "target_test_labels.zarr" in printed
    assert zarr.open_group(str(out / "source.zarr"), mode="r")["raw"].shape == (3, 48, 48)
    assert main(["synth", str(out), "--seed", "4", "--shape", "3", "48", "48", "--quiet"]) == 1
    assert "overwrite" in capsys.readouterr().err
    assert main(["synth", str(out), "--seed", "4", "--shape", "3", "48", "48", "--quiet", "--overwrite"]) == 0
    assert main(["synth", str(tmp_path / "bad"), "--shape", "3", "8", "48", "--quiet"]) == 1
    assert "shape" in capsys.readouterr().err
