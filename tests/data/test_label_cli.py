"""``mtbio evaluate`` and ``mtbio train`` print the foreground fraction of the labels they read."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tifffile

from mtbio.cli import main


def _label(tmp_path, fill: float | None = None):
    rng = np.random.default_rng(0)
    label = rng.random((3, 24, 32)) < 0.2 if fill is None else np.full((3, 24, 32), bool(fill))
    path = tmp_path / "label.tif"
    tifffile.imwrite(path, label.astype(np.uint8))  # {0, 1}: the old grey rule read this as empty
    return path, label


def test_evaluate_prints_the_label_foreground_fraction_to_stderr(tmp_path, capsys):
    path, label = _label(tmp_path)
    pred = tmp_path / "pred.tif"
    tifffile.imwrite(pred, np.where(label, 0.9, 0.1).astype(np.float32))
    assert main(["evaluate", str(pred), str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    json.loads(out)  # stdout stays pure JSON
    found = re.search(r"label\.tif: label foreground fraction (\d\.\d{4})", err)
    assert found and float(found.group(1)) == pytest.approx(label.mean(), abs=5e-5)


def test_evaluate_warns_on_an_empty_label(tmp_path, capsys):
    path, label = _label(tmp_path, fill=0)
    pred = tmp_path / "pred.tif"
    tifffile.imwrite(pred, np.full(label.shape, 0.1, np.float32))
    with pytest.warns(UserWarning, match=r"label\.tif: label volume has no foreground"):
        main(["evaluate", str(pred), str(path)])
    assert "label foreground fraction 0.0000" in capsys.readouterr().err


def test_train_open_prints_the_label_foreground_fraction(tmp_path, capsys):
    from mtbio.cli.train import _open

    path, label = _label(tmp_path)
    vol = _open(str(path), True, "--source-label")
    np.testing.assert_array_equal(np.asarray(vol), label)
    found = re.search(r"--source-label .*label\.tif: label foreground fraction (\d\.\d{4})", capsys.readouterr().out)
    assert found and float(found.group(1)) == pytest.approx(label.mean(), abs=5e-5)
    _open(str(path), False, "--source")  # an image volume prints nothing
    assert capsys.readouterr().out == ""
