"""Run a bundle's workflow the model-zoo way (``monai.bundle.ConfigWorkflow`` with overrides), from the repo root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUNDLES = ("masktwins_demo", "masktwins_em2d_vnc3_lucchi", "masktwins_em3d")
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"
SYNTHETIC = "%configs/data.yaml#synthetic"


def config(bundle: str, name: str) -> Path:
    return REPO / "bundles" / bundle / "configs" / name


def run_workflow(bundle: str, which: str, run_id: str, **overrides: Any) -> list[Any]:
    """``initialize`` / ``run`` / ``finalize`` of ``bundles/<bundle>/configs/<which>.yaml`` with ``run_id``;
    returns what ``run`` returns (one entry per expression)."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(config(bundle, f"{which}.yaml")),
        meta_file=str(config(bundle, "metadata.json")),
        logging_file=False,
        workflow_type=None,
        run_id=run_id,
        **overrides,
    )
    workflow.initialize()
    out = workflow.run()
    workflow.finalize()
    return out


def tiny(bundle: str, out: Path, **extra: Any) -> dict[str, Any]:
    """Overrides for a few-second run of ``bundle`` on tiny synthetic data written under ``out``."""
    kw: dict[str, Any] = {
        "output_dir": str(out),
        "models_dir": str(out / "models"),
        "num_threads": 1,
        "log_interval": 2,
        "data": SYNTHETIC,
        "data_seed": 0,
        "data_shape": [8, 64, 64],
        "iterations": 4,
        # the em2d bundle pre-trains source-only for 800 iterations: 2 here, so its test runs that path too
        "pretrain_iterations": 2 if bundle == "masktwins_em2d_vnc3_lucchi" else 0,
    }
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
