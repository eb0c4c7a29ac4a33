"""Helpers of the multi-process inference tests: slow bundles, a CLI child, waiting for its progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from mtbio.inference.resume import LEDGER_NAME

from ._nets import Slow, tiny_unet

REPO = Path(__file__).resolve().parents[2]
CHILD_THREADS = 2

SLOW_YAML = """network_def:
  _target_: tests.inference._nets.Slow
  network:
    _target_: monai.networks.nets.UNet
    spatial_dims: 3
    in_channels: 1
    out_channels: 2
    channels: [4, 8]
    strides: [2]
    num_res_units: 1
  delay: {delay}
roi_size: [8, 16, 16]
"""


def slow_bundle(root: Path, seed: int, delay: float) -> Path:
    """A bundle of ``Slow(tiny_unet(3, seed), delay)``; bundles of one seed share weights (and model hash)."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.yaml").write_text(SLOW_YAML.format(delay=delay))
    torch.save(Slow(tiny_unet(3, seed=seed)).state_dict(), root / "models" / "model.pt")
    return root


def cli_child(args: list[str]) -> subprocess.Popen:
    """``python -m mtbio ARGS`` with this worktree first on the path and a fixed torch thread count."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": str(CHILD_THREADS),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "mtbio", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_blocks(child: subprocess.Popen, store: Path, n: int, timeout: float = 90) -> list[int]:
    """Poll the store's ledger until ``n`` blocks are done; fails if the child exits first."""
    ledger = store / LEDGER_NAME
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ledger.exists():
            try:
                done = json.loads(ledger.read_text())["done"]
            except (ValueError, KeyError):
                done = []
            if len(done) >= n:
                return done
        if child.poll() is not None:
            raise AssertionError(f"the child exited ({child.returncode}) first: {child.communicate()[1][-2000:]}")
        time.sleep(0.02)
    raise AssertionError("the child never finished enough blocks")
