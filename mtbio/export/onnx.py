"""Export a network to ONNX and check it under onnxruntime against PyTorch."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["DEFAULT_OPSET", "check_onnx", "export_onnx"]

#: ONNX opset written (onnxruntime >= 1.14 runs it; bioimage.io records it as ``opset_version``)
DEFAULT_OPSET = 17
#: tolerance of the parity check (max absolute difference of the logits)
ONNX_ATOL = 1e-4


def export_onnx(
    network: torch.nn.Module,
    path: str | os.PathLike,
    example: torch.Tensor,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
) -> Path:
    """Write ``network`` as an ONNX graph with input ``input`` and output ``output``.

    Uses PyTorch's TorchScript-based exporter (``dynamo=False``: it needs no extra package).

    Args:
        network: the network (put in eval mode on the CPU).
        path: the ``.onnx`` file.
        example: ``(B, C, *spatial)`` tensor traced through the network.
        opset: ONNX opset version.
        dynamic: batch and spatial axes of any size (the network still needs sizes it can downsample).

    Returns:
        the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = network.cpu().eval()
    axes = {0: "batch", **{2 + i: f"spatial{i}" for i in range(example.ndim - 2)}}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.onnx.export(
            network,
            (example.cpu(),),
            str(path),
            dynamo=False,
            opset_version=int(opset),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": axes, "output": axes} if dynamic else None,
        )
    return path


def check_onnx(
    path: str | os.PathLike, network: torch.nn.Module, inputs: list[torch.Tensor], *, atol: float = ONNX_ATOL
) -> dict[str, Any]:
    """Run the ONNX file under onnxruntime (CPU) and compare with ``network`` on each input.

    Returns:
        ``{"max_abs_diff": float, "shapes": [...], "atol": atol}``.

    Raises:
        ImportError: onnx / onnxruntime are missing (``pip install 'mtbio[export]'``).
        ValueError: the ONNX model is invalid or differs from PyTorch by more than ``atol``, naming the file.
    """
    import onnx
    import onnxruntime as ort

    path = Path(path)
    try:
        onnx.checker.check_model(str(path))
    except Exception as err:  # noqa: BLE001 - re-raised with the path
        raise ValueError(f"{path}: invalid ONNX model ({err})") from err
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        with torch.inference_mode():
            expected = network.cpu().eval()(x.cpu()).numpy()
        got = session.run(None, {"input": x.cpu().numpy()})[0]
        if got.shape != expected.shape:
            raise ValueError(f"{path}: onnxruntime output {got.shape} differs from PyTorch's {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > atol:
        raise ValueError(f"{path}: onnxruntime differs from PyTorch by {worst:.3g} (> {atol:g})")
    return {"max_abs_diff": worst, "shapes": [list(x.shape) for x in inputs], "atol": atol}
