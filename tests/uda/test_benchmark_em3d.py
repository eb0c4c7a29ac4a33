"""benchmarks/uda_em3d.py: sizes in nm -> voxels, the answers with seed noise, and a smoke run on the real data."""

from __future__ import annotations

import json

import pytest
import torch

from tests._scripts import load_benchmark


def _bench():
    return load_benchmark("uda_em3d")


def test_sizes_are_given_in_nm_and_converted_on_the_training_grid(tmp_path):
    bench = _bench()
    args = bench.parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "out")])
    lucchi = bench.sizes(args, (50.0, 5.0, 5.0))  # VNC III -> pooled Lucchi++: the target's grid
    assert lucchi["patch_3d"] == (8, 128, 128) and lucchi["block_3d"] == (2, 32, 32)
    assert lucchi["crop_2d"] == (192, 192) and lucchi["block_2d"] == (32, 32) and lucchi["multiple_3d"] == (4, 8, 8)
    vnc = bench.sizes(args, (50.0, 4.6, 4.6))  # pooled Lucchi++ -> VNC III
    assert vnc["patch_3d"] == (8, 136, 136) and vnc["block_3d"] == (2, 35, 35) and vnc["crop_2d"] == (208, 208)
    with pytest.raises(SystemExit):
        bench.parse_args(["--data", str(tmp_path), "--out", str(tmp_path), "--variants", "masktwins,mic"])


def _rows(values):
    return [{"seed": k, "IoU": v} for k, v in enumerate(values)]


def test_comparisons_answer_with_seed_noise():
    bench = _bench()
    results = {
        "source_only": _rows([0.40, 0.42, 0.41]),
        "mean_teacher": _rows([0.50, 0.53, 0.56]),
        "masktwins": _rows([0.55, 0.56, 0.57]),
        "2d_source_only": _rows([0.60, 0.61, 0.62]),
        "2d_masktwins": _rows([0.45, 0.46, 0.47]),
    }
    lines = bench.comparisons(results)
    assert len(lines) == 3
    assert "masktwins - source_only: +15.0 IoU points" in lines[0] and lines[0].endswith("-> yes")
    assert "masktwins - mean_teacher: +3.0" in lines[1] and lines[1].endswith("within seed noise")  # std 3.0
    assert "masktwins - 2d_source_only: -5.0" in lines[2] and lines[2].endswith("no, it is worse")  # best vs best
    one = bench.comparisons({"source_only": _rows([0.4]), "masktwins": _rows([0.5])})
    assert one == ["- does 3D MaskTwins beat 3D source_only? masktwins - source_only: +10.0 IoU points "
                   "(2 x max std 0.0, seeds 1) -> one seed: no noise estimate"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.realdata
def test_smoke_run_on_the_real_pair_resumes(shared_data, tmp_path, capsys):
    bench = _bench()
    threads = torch.get_num_threads()
    out = tmp_path / "run"
    argv = [
        "--data", str(shared_data), "--out", str(out), "--seeds", "1", "--threads", "1",
        "--iters", "1", "--pretrain", "1", "--patch-nm", "200,160,160", "--block-nm", "100,80,80",
        "--channels", "4,8,16,32", "--batch", "1", "--eval-roi", "4,256,256",
        "--iters-2d", "1", "--pretrain-2d", "1", "--network-2d", "small_unet", "--crop-2d-nm", "160",
        "--block-2d-nm", "80", "--batch-2d", "1", "--eval-roi-2d", "256", "--eval-sections", "2",
    ]  # fmt: skip
    try:
        assert bench.main(argv) == 0
        results = json.loads((out / "results.json").read_text())
        assert sorted(results) == sorted(bench.VARIANTS)
        for rows in results.values():
            assert len(rows) == 1 and set(rows[0]) >= {"seed", "mAP", "F1", "MCC", "IoU", "sec_per_iter", "wall_sec"}
        assert results["source_only"][0]["pretrain"] == "trained" and results["masktwins"][0]["pretrain"] == "reused"
        config = json.loads((out / "config.json").read_text())
        assert config["sizes_in_voxels"]["patch_3d"] == [4, 32, 32] and config["training_grid_nm"] == [50.0, 5.0, 5.0]
        assert (
            config["uda"]["masktwins"]["block_size"] == [2, 16, 16] and config["recipe_3d"]["pretrain_iterations"] == 1
        )
        assert config["shapes"]["test_image"] == [2, 768, 1024]
        md = (out / "results.md").read_text()
        assert "does 3D MaskTwins beat 3D source_only?" in md and "best 3D model beat the best 2D model" in md
        capsys.readouterr()
        assert bench.main(argv) == 0  # everything is in results.json: nothing is trained again
        assert capsys.readouterr().out.count("[skip]") == len(bench.VARIANTS)
        probe = ["--out", str(tmp_path / "probe"), "--time-iters", "2", "--variants", "source_only,2d_masktwins"]
        assert bench.main([*argv, *probe]) == 0  # measures, trains nothing into results.json
        timing = json.loads((tmp_path / "probe" / "timing.json").read_text())
        assert sorted(timing["per_variant"]) == ["2d_masktwins", "source_only"] and timing["iterations_timed"] == 2
        assert timing["one_seed_estimate_sec"]["cpu"] > 0 and not (tmp_path / "probe" / "results.json").exists()
    finally:
        torch.set_num_threads(threads)
