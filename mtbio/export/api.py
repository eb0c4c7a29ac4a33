"""One call that exports a weights file in any format (what ``mtbio export`` and the napari Export widget run)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtbio.errors import MissingDependencyError

__all__ = ["DEFAULT_ROI", "FORMATS", "SUFFIXES", "export_model"]

FORMATS = ("onnx", "torchscript", "bioimageio")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
#: export / test tensor spatial size per network dimensionality
DEFAULT_ROI = {2: (128, 128), 3: (16, 64, 64)}


def _require(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(f"{module} is not installed ({err}); pip install 'mtbio[export]'") from err


def export_model(
    weights: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike,
    *,
    bundle: str | os.PathLike | None = None,
    network: str | None = None,
    spatial_dims: int | None = None,
    roi: Sequence[int] | None = None,
    opset: int | None = None,
    static: bool = False,
    zip_package: bool = False,
    test: bool = True,
    onnx: bool = True,
    name: str | None = None,
    authors: Sequence[str] | None = None,
    license: str = "CC-BY-4.0",
    overwrite: bool = False,
    tta: str | None = None,
    planes: str | None = None,
) -> dict[str, Any]:
    """Export the network of ``weights`` as ``fmt`` into ``out`` and check it against PyTorch.

    Args:
        weights: a weights record (``final.pt``), a training checkpoint or a bundle's ``models/model.pt`` (read with
            ``weights_only=True``).
        fmt: ``"onnx"`` (a ``.onnx`` file), ``"torchscript"`` (a ``.pt`` file) or ``"bioimageio"`` (a package folder).
        out: the output file or folder.
        bundle: a bundle folder whose ``network_def`` builds the network (for a bare ``state_dict``).
        network: an mtbio network name (for a bare ``state_dict``), with ``spatial_dims``.
        spatial_dims: 2 or 3 (default: the file's, else 2).
        roi: export / test tensor size (default :data:`DEFAULT_ROI`); multiples of the network's stride.
        opset: ONNX opset (default :data:`mtbio.export.onnx.DEFAULT_OPSET`).
        static: ONNX with a fixed input shape (default: dynamic batch and spatial axes).
        zip_package: bioimageio: also write ``<out>.zip``.
        test: bioimageio: run ``bioimageio.core``'s ``test_model`` on the package.
        onnx: bioimageio: add ONNX weights beside the ``pytorch_state_dict`` ones.
        name, authors, license: bioimageio: the package's name, authors and licence.
        overwrite: replace an existing ``out``.
        tta: test-time augmentation (``"none"``, ``"flips"``, ``"flips_rot90"``; :mod:`mtbio.inference.tta`). ONNX and
            TorchScript: the exported module is the :class:`~mtbio.inference.tta.TTAWrapper` of the network (its
            output ``log`` of the views' mean softmax probability; ``flips_rot90`` needs square in-plane inputs) and
            is checked against it; ``None``: the tools' default (``TOOL_DEFAULTS.tta``). bioimageio: a given value is
            recorded as ``config.mtbio.tta`` (used by ``mtbio predict --model``; ``None`` records nothing, so the
            tools' default applies); the package's weights stay the plain network.
        planes: bioimageio only: recorded as ``config.mtbio.planes`` (``"xy"``, ``"xyz"``, ``"auto"``;
            :mod:`mtbio.inference.planes`) for ``mtbio predict --model``; ``None`` records nothing. An ONNX /
            TorchScript file is the 2D network, which a consumer runs along the planes itself: ``planes`` other than
            ``xy`` is refused there.

    Returns:
        a summary (format, path, roi, the check's largest difference, the bioimage.io test result ...).

    Raises:
        ValueError: an unknown format, an output of the wrong kind, a ``roi`` the network cannot take, an unknown
            ``tta`` or ``flips_rot90`` with a ``roi`` that is not square in-plane; ``planes`` ``xyz`` / ``auto`` for
            ONNX / TorchScript, or ``xyz`` for a 3D network.
        FileExistsError: ``out`` exists and ``overwrite`` is false.
        MissingDependencyError: the ``export`` extra is not installed.
    """
    from mtbio.export.source import example_input, load_source, normalize_sample
    from mtbio.inference.settings import TOOL_DEFAULTS, Planes, as_planes, as_tta, check_tta_window

    mode = TOOL_DEFAULTS.tta if tta is None else as_tta(tta)
    plane_mode = None if planes is None else as_planes(planes)
    if plane_mode not in (None, Planes.XY) and fmt != "bioimageio":
        raise ValueError(
            f"--planes {plane_mode.value}: the {fmt} export holds the 2D network, which predicts one image; "
            "ortho-plane consensus is how a volume is run through it (xy, xz and yz images, probabilities "
            "averaged). Export --format bioimageio to record it for mtbio predict --model, or run the file along the "
            "three planes"
        )
    out = Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt in SUFFIXES and out.suffix.lower() != SUFFIXES[fmt]:
        raise ValueError(f"{out}: --format {fmt} writes a {SUFFIXES[fmt]} file")
    if fmt == "bioimageio" and out.suffix.lower() in (".onnx", ".pt", ".zip", ".yaml"):
        raise ValueError(f"{out}: --format bioimageio writes a folder (use --zip for a zip next to it)")
    if fmt in SUFFIXES and out.exists() and not overwrite:
        raise FileExistsError(f"{out}: exists (pass --overwrite)")
    for module in {"onnx": ("onnx", "onnxruntime"), "bioimageio": ("onnx", "onnxruntime", "bioimageio.core")}.get(
        fmt, ()
    ):
        _require(module)
    source = load_source(weights, bundle=bundle, network=network, spatial_dims=spatial_dims)
    dims = source.spatial_dims
    roi = tuple(int(r) for r in roi) if roi else DEFAULT_ROI[dims]
    if len(roi) != dims or any(r < 1 or r % s for r, s in zip(roi, source.step)):
        raise ValueError(f"--roi {list(roi)}: a {dims}D network needs {dims} positive multiples of {list(source.step)}")
    check_tta_window(mode, roi)
    summary: dict[str, Any] = {
        "weights": str(weights),
        "network": source.record.network,
        "spatial_dims": dims,
        "tta": None if fmt == "bioimageio" and tta is None else mode.value,
    }
    if source.context_sections:  # a 2.5D network: the input holds 1 + 2k sections as channels
        summary["context_sections"] = source.context_sections
    if fmt == "bioimageio":
        from mtbio.export.bioimageio import export_bioimageio

        summary.update(
            export_bioimageio(
                source,
                out,
                roi=roi,
                name=name,
                authors=list(authors) if authors else None,
                license=license,
                onnx=onnx,
                opset=opset,
                overwrite=overwrite,
                zip_path=out.with_name(out.name + ".zip") if zip_package else None,
                test=test,
                tta=None if tta is None else mode,
                planes=plane_mode,
            )
        )
    else:
        from mtbio.inference.tta import with_tta

        network = with_tta(source.network.cpu().eval(), mode).eval()
        c = source.in_channels
        example = normalize_sample(example_input(roi, channels=c))
        checks = [example, normalize_sample(example_input(roi, seed=1, batch=2, channels=c))]
        if fmt == "onnx":
            from mtbio.export.onnx import DEFAULT_OPSET, check_onnx, export_onnx

            opset = opset or DEFAULT_OPSET
            export_onnx(network, out, example, opset=opset, dynamic=not static)
            check = check_onnx(out, network, checks if not static else [example])
            summary.update(format="onnx", path=str(out), opset=opset, dynamic=not static, check=check)
        else:
            from mtbio.export.torchscript import check_torchscript, export_torchscript

            export_torchscript(network, out, example)
            summary.update(format="torchscript", path=str(out), check=check_torchscript(out, network, checks))
        summary["roi"] = list(roi)
    return summary
