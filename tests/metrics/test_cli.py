"""``mtbio evaluate`` on a prediction store and on a plain volume, against em_metrics; refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtbio.cli import main
from mtbio.metrics import em_metrics, em_metrics_per_section, volume_metrics


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = rng.random((4, 40, 56)) < 0.2
    p = np.clip(0.6 * label + rng.normal(0.2, 0.15, label.shape), 0, 1).astype(np.float32)
    return p, label


def _write_label(path: Path, label: np.ndarray) -> Path:
    import tifffile

    tifffile.imwrite(path, label.astype(np.uint8) * 255)  # a raw 0/255 label file: the CLI applies the label rule
    return path


def _write_store(path: Path, p: np.ndarray, dtype: str, *, complete: bool = True, voxel=(5.0, 5.0, 5.0)) -> Path:
    from mtbio.data.store import create_prediction_store, encode_probability, mark_complete

    store = create_prediction_store(path, p.shape, dtype=dtype, chunks=(2, 32, 32), voxel_size=voxel)
    fg = encode_probability(p, dtype)
    store.array[1] = fg
    if complete:
        mark_complete(path)
    return path


def _run_json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
def test_prediction_store_json(tmp_path, capsys, dtype: str) -> None:
    from mtbio.data.store import encode_probability

    p, label = _data()
    pred = _write_store(tmp_path / "pred.zarr", p, dtype)
    lab = _write_label(tmp_path / "label.tif", label)
    out = _run_json(capsys, ["evaluate", str(pred), str(lab), "--json", "--per-section"])
    stored = encode_probability(p, dtype)
    assert out["mean"] == pytest.approx(em_metrics(stored, label), abs=1e-12)
    assert out["volume"] == pytest.approx(volume_metrics(stored, label), abs=1e-12)
    decoded = stored.astype(np.float64) / 255 if dtype == "uint8" else stored.astype(np.float64)
    assert out["foreground"] == pytest.approx({"foreground": (decoded >= 0.5).mean(), "foreground_label": label.mean()})
    assert out["per_section"] == [pytest.approx(r, abs=1e-12) for r in em_metrics_per_section(stored, label)]
    assert out["sections"] == 4 and out["shape"] == [4, 40, 56] and out["voxel_size"] == [5.0, 5.0, 5.0]


def test_table_output(tmp_path, capsys) -> None:
    p, label = _data(1)
    pred = _write_store(tmp_path / "pred.zarr", p, "uint8")
    lab = _write_label(tmp_path / "label.tif", label)
    assert main(["evaluate", str(pred), str(lab), "--per-section"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[1].split() == ["section", "mAP", "F1", "MCC", "IoU"]
    mean_row = next(line for line in lines if line.split()[0] == "mean")
    want = em_metrics(np.rint(p * 255).astype(np.uint8), label)
    assert [float(v) for v in mean_row.split()[1:]] == pytest.approx([want[k] for k in want], abs=6e-5)
    assert sum(line.split()[0].isdigit() for line in lines) == 4
    assert "Dice" in lines[-2]
    fg = (np.rint(p * 255).astype(np.uint8) >= 128).mean()  # u8 / 255 >= 0.5
    assert lines[-1] == f"foreground fraction: predicted {fg:.4f} (prob >= 0.5), labelled {label.mean():.4f}"


def test_plain_volume_with_key(tmp_path, capsys) -> None:
    import h5py

    p, label = _data(2)
    with h5py.File(tmp_path / "prob.h5", "w") as f:
        f["p"] = p
        f["other"] = np.zeros(3)
    lab = _write_label(tmp_path / "label.tif", label)
    out = _run_json(capsys, ["evaluate", str(tmp_path / "prob.h5"), str(lab), "--key", "p", "--json"])
    assert out["mean"] == pytest.approx(em_metrics(p, label), abs=1e-12)


def test_incomplete_store_is_refused(tmp_path, capsys) -> None:
    p, label = _data()
    pred = _write_store(tmp_path / "pred.zarr", p, "uint8", complete=False)
    lab = _write_label(tmp_path / "label.tif", label)
    assert main(["evaluate", str(pred), str(lab)]) == 1
    err = capsys.readouterr().err
    assert "incomplete" in err and "pred.zarr" in err and "Traceback" not in err


def test_refusals(tmp_path, capsys) -> None:
    p, label = _data()
    pred = _write_store(tmp_path / "pred.zarr", p, "uint8")
    lab = _write_label(tmp_path / "label.tif", label)
    small = _write_label(tmp_path / "small.tif", label[:, :20])
    cases = [
        (["evaluate", str(pred), str(small)], "does not match"),
        (["evaluate", str(pred), str(lab), "--voxel-size", "50", "5", "5"], "voxel size"),
        (["evaluate", str(pred), str(lab), "--voxel-size", "5", "5"], "2 values"),
        (["evaluate", str(pred), str(lab), "--threshold", "2"], "threshold"),
        (["evaluate", str(tmp_path / "missing.zarr"), str(lab)], "missing.zarr"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        assert message in capsys.readouterr().err
    from mtbio.data.store import create_prediction_store, mark_complete

    create_prediction_store(tmp_path / "raw.zarr", p.shape, dtype="float32", activation=None)
    mark_complete(tmp_path / "raw.zarr")
    assert main(["evaluate", str(tmp_path / "raw.zarr"), str(lab)]) == 1
    assert "raw network output" in capsys.readouterr().err
    assert main(["evaluate", str(pred), str(lab), "--key", "x"]) == 1
    assert "--key does not apply" in capsys.readouterr().err
    out = _run_json(capsys, ["evaluate", str(pred), str(lab), "--voxel-size", "5", "5", "5", "--json"])
    assert out["voxel_size"] == [5.0, 5.0, 5.0]
