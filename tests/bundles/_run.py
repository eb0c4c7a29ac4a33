"""Run a bundle's workflow the model-zoo way (``monai.bundle.ConfigWorkflow`` with overrides) from a copy of the
bundle folder, with the working directory elsewhere (the bundles must not depend on the repository)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUNDLES = ("masktwins_demo", "masktwins_em2d_vnc3_lucchi", "masktwins_em3d")
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"
#: the built-in synthetic domains as a ``data`` override (every bundle; em2d / em3d get data_seed / data_shape too)
SYNTHETIC = {
    "_target_": "mtbio.bundle.data.synthetic_pair",
    "data_dir": "$@output_dir + '/data'",
    "seed": "@data_seed",
    "shape": "@data_shape",
}
#: config files of each workflow, in merge order (inference / evaluate / multi-GPU extend train.yaml, adapt extends
#: train.yaml and inference.yaml)
WORKFLOW_CONFIGS = {
    "train": ("train.yaml",),
    "inference": ("train.yaml", "inference.yaml"),
    "evaluate": ("train.yaml", "evaluate.yaml"),
    "adapt": ("train.yaml", "inference.yaml", "adapt.yaml"),
    "multi_gpu": ("train.yaml", "multi_gpu_train.yaml"),
}


def config(bundle: str, name: str) -> Path:
    return REPO / "bundles" / bundle / "configs" / name


def copy_bundle(bundle: str, dest: Path) -> Path:
    """``bundles/<bundle>`` copied to ``dest/<bundle>`` (without runs or weights); returns the copy."""
    ignore = shutil.ignore_patterns("runs", "models", "eval", "__pycache__")
    return Path(shutil.copytree(REPO / "bundles" / bundle, dest / bundle, ignore=ignore))


def config_files(root: Path, which: str) -> list[str]:
    return [str(root / "configs" / name) for name in WORKFLOW_CONFIGS[which]]


def run_workflow(root: Path, which: str, run_id: str, **overrides: Any) -> list[Any]:
    """``initialize`` / ``run`` / ``finalize`` of the bundle folder ``root``'s ``which`` configs with ``run_id``
    and ``--bundle_root root``; returns what ``run`` returns (one entry per expression)."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=config_files(root, which),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=None,
        run_id=run_id,
        bundle_root=str(root),
        **overrides,
    )
    workflow.initialize()
    out = workflow.run()
    workflow.finalize()
    return out


def tiny(bundle: str, out: Path | None, **extra: Any) -> dict[str, Any]:
    """Overrides for a few-second run of ``bundle`` on tiny synthetic data; written under ``out`` (``None``: the
    bundle's own ``runs`` / ``models`` under ``bundle_root``)."""
    kw: dict[str, Any] = {
        "num_threads": 1,
        "log_interval": 2,
        "data": SYNTHETIC,
        "data_seed": 0,
        "data_shape": [8, 64, 64],
        "iterations": 4,
        # the em2d bundle pre-trains source-only for 800 iterations: 2 here, so its test runs that path too
        "pretrain_iterations": 2 if bundle == "masktwins_em2d_vnc3_lucchi" else 0,
    }
    if out is not None:
        kw.update(output_dir=str(out), models_dir=str(out / "models"))
    if bundle == "masktwins_em3d":
        kw.update(
            crop_size=[8, 32, 32],
            roi_size=[8, 32, 32],
            block_size=[4, 16, 16],
            batch_size=2,
            network_def={
                "_target_": "mtbio.networks.get_network",
                "name": "small_unet",
                "spatial_dims": 3,
                "channels": [4, 8, 16, 32],
                "strides": [[1, 2, 2], 2, 2],
            },
        )
    else:
        kw.update(crop_size=[32, 32], roi_size=[32, 32], block_size=16)
    kw.update(extra)
    return kw
