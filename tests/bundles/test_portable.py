"""Bundles outside the repository: the ``monai.bundle`` command line on a copy from another working directory,
unknown override ids, ``ckpt_export``, and the bundles' independence of the repository (no file macros). The shared
pieces written into every bundle from ``configs/``: tests/bundles/test_sync.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.bundles._run import BUNDLES, REPO, config, config_files, copy_bundle


def _monai_bundle(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "monai.bundle", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


TINY = ["--data_shape", "[8,64,64]", "--crop_size", "[32,32]", "--roi_size", "[32,32]", "--block_size", "16"]
TINY += ["--iterations", "2", "--log_interval", "1", "--num_threads", "1", "--strategies", "['masktwins']"]


@pytest.mark.slow
def test_command_line_train_infer_evaluate_from_a_copy(tmp_path):
    """The README commands on a copy of the demo bundle, cwd elsewhere: runs and weights land in the copy."""
    root = copy_bundle("masktwins_demo", tmp_path / "copies")
    (tmp_path / "elsewhere").mkdir()
    for run_id, which in (("training", "train"), ("inference", "inference"), ("evaluate", "evaluate")):
        files = str(config_files(root, which))
        res = _monai_bundle(
            ["run", run_id, "--bundle_root", str(root), "--config_file", files, *TINY], tmp_path / "elsewhere"
        )
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert (root / "models" / "model.pt").is_file()
    assert (root / "runs" / "predictions" / "masktwins.zarr" / "0").is_dir()
    assert "| masktwins | 1 |" in (root / "runs" / "results.md").read_text()
    assert not any((tmp_path / "elsewhere").iterdir())


@pytest.mark.slow
def test_typo_override_is_an_error_naming_the_close_match(tmp_path):
    """`python -m monai.bundle run training ... --iteratons 5` fails in `initialize`, before any work."""
    root = copy_bundle("masktwins_demo", tmp_path / "copies")
    train = str(root / "configs" / "train.yaml")
    res = _monai_bundle(
        ["run", "training", "--bundle_root", str(root), "--config_file", train, "--iteratons", "5"], tmp_path
    )
    assert res.returncode != 0
    assert "unknown bundle override --iteratons (did you mean --iterations," in res.stderr
    assert not (root / "runs").exists() and not (root / "models").exists()


def test_typo_override_stops_the_workflow_in_initialize(tmp_path, monkeypatch):
    """The same check in process: the command line of `monai.bundle run` is read from sys.argv."""
    import monai.bundle.__main__ as main
    from monai.bundle import ConfigWorkflow

    root = copy_bundle("masktwins_demo", tmp_path / "copies")
    train = str(root / "configs" / "train.yaml")
    argv = [main.__file__, "run", "training", "--bundle_root", str(root), "--config_file", train, "--iteratons", "5"]
    monkeypatch.setattr(sys, "argv", argv)
    workflow = ConfigWorkflow(
        config_file=train, logging_file=False, workflow_type=None, run_id="training", bundle_root=str(root), iteratons=5
    )
    with pytest.raises(RuntimeError) as err:
        workflow.initialize()
    assert "unknown bundle override --iteratons (did you mean --iterations," in str(err.value.__cause__)
    assert not (root / "runs").exists()
    # a correct command line passes the same check
    monkeypatch.setattr(sys, "argv", [*argv[:-2], "--iterations", "5"])
    from mtbio.bundle.overrides import check_command_line

    check_command_line()


def test_check_override_keys():
    from mtbio.bundle.overrides import check_override_keys, command_line_overrides, valid_override_keys

    folder = config("masktwins_em2d_vnc3_lucchi", "train.yaml").parent
    valid = valid_override_keys(folder)
    # ids of train / inference / evaluate / multi-GPU configs, and MONAI's run arguments; not the metadata's
    assert {"iterations", "tau", "subset", "roi_size", "overlap", "title", "finalize"} <= valid
    assert {"config_file", "meta_file", "logging_file", "bundle_root", "run_id", "tracking"} <= valid
    assert "changelog" not in valid
    check_override_keys(["iterations", "data#subset", "config_file", "bundle_root"], folder)
    with pytest.raises(ValueError, match=r"--subsett \(did you mean --subset\?\); --zzz_qq: not an id"):
        check_override_keys(["subsett", "zzz_qq"], folder)
    main = "/x/site-packages/monai/bundle/__main__.py"
    argv = [main, "run", "training", "--config_file", "['a/c/train.yaml','a/c/x.yaml']", "--tau=0.9", "--lr", "1"]
    assert command_line_overrides(argv) == (["config_file", "tau", "lr"], ["a/c/train.yaml", "a/c/x.yaml"])
    assert command_line_overrides(["/usr/bin/pytest", "run", "--x", "1"]) is None
    assert command_line_overrides([main, "verify_metadata", "--x", "1"]) is None


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_configs_reference_no_other_file(bundle):
    """Portable: no `%file#id` macro (MONAI resolves those from the working directory); code comes from the
    installed package through `_target_: mtbio...` / `$mtbio...`."""
    for path in (REPO / "bundles" / bundle / "configs").glob("*.yaml"):
        assert '"%' not in path.read_text(), f"{path} includes another file"


def test_ckpt_export_of_a_freshly_initialised_network(tmp_path, monkeypatch):
    """`python -m monai.bundle ckpt_export network_def ...` (in process) on a copy: the TorchScript module computes
    what network_def with those weights computes."""
    from monai.bundle import ckpt_export

    from mtbio.inference.model_io import load_bundle_network

    root = copy_bundle("masktwins_demo", tmp_path)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    from mtbio.networks import get_network

    net = get_network("small_unet", 2)  # the demo's network_def, freshly initialised
    (root / "models").mkdir()
    torch.save(net.state_dict(), root / "models" / "model.pt")
    ckpt_export(
        "network_def",
        filepath=str(root / "models" / "model.ts"),
        ckpt_file=str(root / "models" / "model.pt"),
        meta_file=str(root / "configs" / "metadata.json"),
        config_file=config_files(root, "inference"),
        bundle_root=str(root),
    )
    scripted = torch.jit.load(str(root / "models" / "model.ts"))
    x = torch.randn(1, 1, 32, 32)
    eager = load_bundle_network(root).eval()
    with torch.no_grad():
        assert torch.allclose(scripted.eval()(x), eager(x), atol=1e-5)
