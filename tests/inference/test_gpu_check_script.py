"""benchmarks/gpu_check.py runs every check on a CPU with --quick (the GPU run itself needs a lent device)."""

from __future__ import annotations

import json

import numpy as np
import torch

from tests._scripts import load_benchmark


def _script():
    return load_benchmark("gpu_check")


def _monai_windows(shape, roi, batch):
    """Oracle: the windows MONAI's sliding_window_inference runs on the same volume."""
    from monai.inferers import sliding_window_inference

    seen = []

    def net(x):
        seen.append(x.shape[0])
        return torch.zeros((x.shape[0], 2, *x.shape[2:]))

    sliding_window_inference(torch.zeros((1, 1, *shape)), roi, batch, net, overlap=0.25)
    return sum(seen)


def test_quick_cpu_run_reports_every_check(tmp_path):
    script = _script()
    threads = torch.get_num_threads()
    try:
        assert script.main(["--device", "cpu", "--quick", "--repeats", "1", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    quick = script.QUICK
    expected = _monai_windows(quick["shape"], quick["roi"], quick["batch"])
    assert [r["model"] for r in result["inference"]] == ["tiny anchor UNet (8,16,32)", "mtbio small_unet 3D"]
    for row in result["inference"]:
        assert row["stream_fp32_windows"] == expected  # each window of the grid runs once
        assert row["raw_fp32_windows_per_s"] > 0 and row["stream_fp32_windows_per_s"] > 0
        assert np.isclose(row["fraction_fp32"], row["stream_fp32_windows_per_s"] / row["raw_fp32_windows_per_s"])
        assert "raw_amp_windows_per_s" not in row and "CUDA only" in row["amp_note"]
    train = {r["strategy"]: r for r in result["training"]}
    assert train["source_only"]["iterations"] == quick["train_iters"] - quick["train_warmup"]
    assert train["masktwins"]["sec_per_iter"] > 0
    ratio = train["masktwins"]["sec_per_iter"] / train["source_only"]["sec_per_iter"]
    assert np.isclose(train["masktwins / source_only"]["ratio"], ratio)
    assert "| masktwins |" in (tmp_path / "gpu_check.md").read_text()
