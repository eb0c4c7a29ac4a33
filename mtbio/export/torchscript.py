"""Export a network to TorchScript (``torch.jit.trace``) and check the saved file against PyTorch."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["check_torchscript", "export_torchscript"]


def export_torchscript(network: torch.nn.Module, path: str | os.PathLike, example: torch.Tensor) -> Path:
    """Trace ``network`` on ``example`` (``(B, C, *spatial)``) and save it as a TorchScript ``.pt`` file.

    The traced graph has no data-dependent control flow for mtbio's MONAI UNets, so it runs on other batch and
    spatial sizes the network accepts.

    Returns:
        the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = network.cpu().eval()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        traced = torch.jit.trace(network, example.cpu(), check_trace=False)
    torch.jit.save(traced, str(path))
    return path


def check_torchscript(
    path: str | os.PathLike, network: torch.nn.Module, inputs: list[torch.Tensor], *, atol: float = 0.0
) -> dict[str, Any]:
    """Load the saved TorchScript file and compare it with ``network`` on each input.

    Returns:
        ``{"max_abs_diff": float, "shapes": [...], "atol": atol}``.

    Raises:
        ValueError: the outputs differ by more than ``atol``, naming the file.
    """
    path = Path(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
    worst = 0.0
    with torch.inference_mode():
        for x in inputs:
            expected = network.cpu().eval()(x.cpu())
            got = loaded(x.cpu())
            if got.shape != expected.shape:
                raise ValueError(f"{path}: TorchScript output {tuple(got.shape)} differs from {tuple(expected.shape)}")
            worst = max(worst, float((got - expected).abs().max()))
    if worst > atol:
        raise ValueError(f"{path}: TorchScript differs from PyTorch by {worst:.3g} (> {atol:g})")
    return {"max_abs_diff": worst, "shapes": [list(x.shape) for x in inputs], "atol": atol}
