"""benchmarks/scale_robustness.py: its scaled, metadata-free targets, the check, and the --tiny smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests._scripts import load_benchmark


def _bench():
    return load_benchmark("scale_robustness")


class _Stack(np.ndarray):
    """A numpy volume with a ``voxel_size`` attribute (as the project's volumes have)."""


def test_a_scaled_target_has_no_voxel_size_and_scaled_objects():
    bench = _bench()
    label = np.zeros((2, 40, 60), bool)
    label[:, 10:30, 20:40] = True
    vol = label.view(_Stack)
    vol.voxel_size = (5.0, 5.0, 5.0)
    half = bench.without_voxel_size(vol, 0.5, label=True)
    assert half.shape == (2, 20, 30) and half.voxel_size is None and half.dtype == bool
    assert int(np.asarray(half[0]).sum()) == 100  # the 20 x 20 square is 10 x 10
    same = bench.without_voxel_size(vol)
    assert same.voxel_size is None and np.array_equal(np.asarray(same[:]), label)


def test_not_worse_beyond_seed_noise():
    bench = _bench()
    rows = lambda *ious: [{"IoU": v} for v in ious]  # noqa: E731
    assert bench.not_worse({"source_only": rows(0.5)}) == {}
    assert bench.not_worse({"source_only": rows(0.5), "masktwins": rows(0.49)})["not_worse"] is False  # one seed
    check = bench.not_worse({"source_only": rows(0.50, 0.52, 0.54), "masktwins": rows(0.47, 0.49, 0.51)})
    assert check["gain"] == pytest.approx(-0.03) and check["noise"] == pytest.approx(0.04) and check["not_worse"]


@pytest.mark.slow  # 11-22 s on the shared 2-core CPU
def test_tiny_smoke_run(tmp_path):
    bench = _bench()
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--tiny", "--out", str(tmp_path / "out"), "--threads", "2"]) == 0
    finally:
        torch.set_num_threads(threads)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(results["scales"]) == ["0.5", "2"]
    for per_strategy in results["scales"].values():
        assert sorted(per_strategy) == ["masktwins", "source_only"]
        assert {"seed", "mAP", "F1", "MCC", "IoU"} <= set(per_strategy["masktwins"][0])
        assert per_strategy["masktwins"][0]["block_rule"] in ("objects", "source")  # the target's voxel size unknown
        assert per_strategy["source_only"][0]["mask_block"] is None
    run = json.loads((tmp_path / "out" / "runs" / "scale2" / "masktwins_seed0" / "config.json").read_text())
    assert run["voxel_size"] == [8.0, 8.0]  # the source's: the target's is unknown, nothing was resampled
    assert (
        run["mask_block"]["rule"] in ("objects", "source") and "target voxel size unknown" in run["mask_block"]["note"]
    )
    md = (tmp_path / "out" / "results.md").read_text()
    assert "## objects x0.5" in md and "MaskTwins - source-only IoU" in md
    assert len(list((tmp_path / "out" / "pretrain").glob("seed0.pt"))) == 1  # one pre-training for every scale
    # --estimator-only: the object-size rule on the target labels, no training (the generated data is reused)
    assert bench.main(["--tiny", "--estimator-only", "--out", str(tmp_path / "out")]) == 0
    rows = json.loads((tmp_path / "out" / "estimator.json").read_text())
    assert [r["scale"] for r in rows] == [0.5, 2.0] and all(r["rule"] in ("objects", "source") for r in rows)
    # the zoom search reads the seeds' source-only starts the run left in OUT/pretrain
    try:
        assert bench.main(["--tiny", "--out", str(tmp_path / "out"), "--zoom-search", "--threads", "2"]) == 0
    finally:
        torch.set_num_threads(threads)
    search = json.loads((tmp_path / "out" / "zoom_search.json").read_text())
    assert [(r["scale"], r["seed"]) for r in search] == [(0.5, 0), (2.0, 0)]
    for r in search:
        assert len(r["rows"]) == 9 and set(r["chosen"]) == {"score", "diameter"}
        assert all(row["crop"][0] % 16 == 0 and row["crop"][0] <= 64 * row["zoom"] + 16 for row in r["rows"])
    assert "| 0.5 | 0 |" in (tmp_path / "out" / "zoom_search.md").read_text()
    with pytest.raises(SystemExit, match="seed1.pt"):
        bench.main(["--tiny", "--out", str(tmp_path / "out"), "--zoom-search", "--first-seed", "1", "--threads", "2"])
