"""Fixtures of the napari tests: tiny seeded networks saved as a checkpoint and as a MONAI bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

#: a MONAI UNet small enough for CPU tests; the same arguments build the bundle's network_def
TINY_UNET = {"channels": (4, 8), "strides": (2,), "num_res_units": 1}


def tiny_unet(spatial_dims: int, seed: int = 0):  # noqa: ANN201 - torch is imported lazily
    import torch

    from mtbio.networks import get_network

    torch.manual_seed(seed)
    return get_network("small_unet", spatial_dims, **TINY_UNET).eval()


def small_unet(spatial_dims: int, seed: int = 0):  # noqa: ANN201
    """mtbio's default ``small_unet`` with seeded weights, in eval mode."""
    import torch

    from mtbio.networks import get_network

    torch.manual_seed(seed)
    return get_network("small_unet", spatial_dims).eval()


@pytest.fixture
def checkpoint_2d(tmp_path: Path) -> Path:
    """A training-style checkpoint ``{"state_dict": ...}`` of the seeded 2D ``small_unet``."""
    import torch

    path = tmp_path / "small2d.pt"
    torch.save({"state_dict": small_unet(2).state_dict()}, path)
    return path


@pytest.fixture
def bundle_2d(tmp_path: Path) -> Path:
    """A MONAI bundle folder (configs/inference.yaml + models/model.pt) holding the same network."""
    import torch
    import yaml

    root = tmp_path / "bundle"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    net = {
        "_target_": "monai.networks.nets.UNet",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 2,
        "channels": list(TINY_UNET["channels"]),
        "strides": list(TINY_UNET["strides"]),
        "num_res_units": TINY_UNET["num_res_units"],
        "norm": "batch",
    }
    (root / "configs" / "inference.yaml").write_text(yaml.safe_dump({"network_def": net}))
    torch.save(tiny_unet(2).state_dict(), root / "models" / "model.pt")
    return root
