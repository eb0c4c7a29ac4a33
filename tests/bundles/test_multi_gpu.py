"""multi_gpu_train.yaml under ``torchrun --nproc_per_node=2`` on the CPU (gloo): the list-merged config form, DDP,
crops sharded by rank, checkpoints / logs / weights written by rank 0 only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.bundles._run import config_files, copy_bundle


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.parametrize("bundle", ["masktwins_demo"])
def test_torchrun_two_processes_on_cpu(bundle, tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    root = copy_bundle(bundle, tmp_path / "copies")  # the list-merged form from a copy, cwd elsewhere
    files = str(config_files(root, "multi_gpu"))
    cmd = _torchrun() + ["--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run", "training"]
    cmd += ["--bundle_root", str(root), "--config_file", files]
    cmd += ["--output_dir", str(tmp_path), "--models_dir", str(tmp_path / "models")]
    cmd += ["--data_shape", "[8,64,64]", "--crop_size", "[32,32]", "--block_size", "16"]
    cmd += ["--iterations", "4", "--checkpoint_interval", "2", "--log_interval", "2", "--strategies", "['masktwins']"]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
        stdout, stderr = proc.communicate()
        pytest.fail("torchrun did not finish in 240 s:\n" + stdout[-2000:] + stderr[-2000:])
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    run = tmp_path / "masktwins"
    resolved = json.loads((run / "config.json").read_text())
    assert resolved["world_size"] == 2 and resolved["argv"]
    assert (run / "checkpoint_final_iteration=4.pt").is_file()
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1  # one TensorBoard writer: rank 0
    payload = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert payload["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in payload["teacher"].values() if v.is_floating_point())
    assert "Engine run starting" in stdout + stderr


def test_rank_shard_is_a_slice_of_the_global_batch():
    """Rank r of w trains on crops r::w of the batch a single process draws (DistributedSampler-style)."""
    import numpy as np

    from mtbio.networks import get_network
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.experiment import build_trainer
    from mtbio.uda.trainer import step_seed

    rng = np.random.default_rng(0)
    img = rng.normal(size=(3, 40, 40)).astype(np.float32)
    net = get_network("small_unet", 2, channels=(4, 8, 16), strides=(2, 2))
    kw = dict(config=UDAConfig(), iterations=2, source_image=img, source_label=img > 1, target_image=img * 2)
    full = build_trainer(crop_size=(32, 32), batch_size=4, network=net, **kw).make_batch(7)
    shard = build_trainer(crop_size=(32, 32), batch_size=4, network=net, **kw)
    shard.rank, shard.world_size = 1, 2
    part = shard.make_batch(7)
    for key in full:
        assert torch.equal(part[key], full[key][1::2])
    assert step_seed(0, 7, 0) != step_seed(0, 7, 1)  # ranks draw different masks
