"""``mtbio train`` end to end on tiny volumes written to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from mtbio.cli import main
from mtbio.cli.train import split_key


def _write(tmp_path: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    lab = rng.random((3, 40, 40)) > 0.8
    img = (lab * 60 + rng.normal(100, 10, lab.shape)).clip(0, 255).astype(np.uint8)
    tgt = (255 - img).astype(np.uint8)
    paths = {}
    for name, arr in {"src": img, "src_lab": (lab * 255).astype(np.uint8), "tgt": tgt}.items():
        paths[name] = str(tmp_path / f"{name}.tif")
        tifffile.imwrite(paths[name], arr)
    return paths


def _args(p: dict[str, str], out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--source", p["src"],
        "--source-label", p["src_lab"],
        "--target", p["tgt"],
        "--target-eval", p["tgt"],
        "--target-eval-label", p["src_lab"],
        "--crop", "16",
        "--batch", "2",
        "--block-size", "4",
        "--iters", "4",
        "--save-every", "2",
        "--network", "small_unet",
        "--pretrain", "0",
        "--out", str(out),
        *extra,
    ]  # fmt: skip


def test_train_writes_run_dir_and_resume_is_exact(tmp_path: Path):
    p = _write(tmp_path)
    out = tmp_path / "run"
    assert main(_args(p, out)) == 0
    assert (out / "config.json").is_file() and (out / "final.pt").is_file()
    history = json.loads((out / "validation.json").read_text())
    assert history[-1]["iteration"] == 4 and set(history[-1]) >= {"mAP", "F1", "MCC", "IoU"}
    final = torch.load(out / "final.pt", weights_only=True)
    # simulate an interruption after iteration 2: drop everything written later, then --resume
    for f in out.glob("checkpoint_*"):
        if "iteration=2" not in f.name:
            f.unlink()
    (out / "final.pt").unlink()
    assert main(_args(p, out, "--resume")) == 0
    resumed = torch.load(out / "final.pt", weights_only=True)
    for part in ("teacher", "student"):  # bitwise on the CPU
        assert final[part].keys() == resumed[part].keys()
        for k, v in final[part].items():
            assert torch.equal(v, resumed[part][k]), (part, k)
    # without --resume an existing run folder is refused
    assert main(_args(p, out)) == 1


def test_train_errors_are_one_line(tmp_path: Path, capsys):
    p = _write(tmp_path)
    assert main(["train", "--target", p["tgt"], "--out", str(tmp_path / "x")]) == 1
    assert "needs --source" in capsys.readouterr().err
    assert main(["train", *_args(p, tmp_path / "y")[1:3], "--source-label", str(tmp_path / "missing.tif"),
                 "--target", p["tgt"], "--out", str(tmp_path / "y")]) == 1  # fmt: skip
    assert "missing.tif" in capsys.readouterr().err


def test_split_key(tmp_path: Path):
    f = tmp_path / "a.zarr"
    f.mkdir()
    assert split_key(str(f)) == (f, None)
    assert split_key(f"{f}:raw") == (f, "raw")
    with pytest.raises(ValueError, match="empty key"):
        split_key(f"{tmp_path}/b.h5:")


def test_init_weights_starts_from_an_earlier_run(tmp_path: Path, capsys):
    """--init-weights loads an earlier run's EMA weights into student and teacher: with a vanishing learning rate
    (1e-30) the new run's parameters stay those weights."""
    p = _write(tmp_path)
    first = tmp_path / "source_only"
    assert main(_args(p, first, "--strategy", "source_only")) == 0
    start = torch.load(first / "final.pt", weights_only=True)["teacher"]
    second = tmp_path / "masktwins"
    assert main(_args(p, second, "--init-weights", str(first / "final.pt"), "--lr", "1e-30")) == 0
    final = torch.load(second / "final.pt", weights_only=True)
    assert json.loads((second / "config.json").read_text())["init_weights"] == str(first / "final.pt")
    for k, v in start.items():
        if v.is_floating_point() and "running" not in k:
            assert torch.allclose(final["student"][k], v, rtol=0, atol=1e-25), k
    bad = tmp_path / "bad.pt"
    bad.write_text("not weights")
    assert main(_args(p, tmp_path / "x", "--init-weights", str(bad))) == 1
    assert "bad.pt" in capsys.readouterr().err
    assert main(_args(p, tmp_path / "y", "--init-weights", str(first / "final.pt"), "--network", "unet")) == 1
    assert "small_unet" in capsys.readouterr().err
