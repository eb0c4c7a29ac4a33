"""``mtbio export``: a trained network as ONNX, TorchScript or a bioimage.io model package.

Examples::

    mtbio export runs/mt/final.pt --format onnx model.onnx
    mtbio export runs/mt/checkpoint_iteration=600.pt --format torchscript model.pt
    mtbio export bundles/masktwins_demo/models/model.pt --bundle bundles/masktwins_demo --format bioimageio pkg/ --zip
    mtbio export model_state.pt --network small_unet --spatial-dims 3 --format onnx model.onnx --roi 16 64 64
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

FORMATS = ("onnx", "torchscript", "bioimageio")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a trained network as ONNX, TorchScript or a bioimage.io model package",
        description=(
            "WEIGHTS is a final.pt weights record, a training checkpoint (checkpoint_iteration=N.pt) or a bundle's "
            "models/model.pt (with --bundle DIR, or --network NAME --spatial-dims D when the file names no network); "
            "it is read with torch.load(weights_only=True). OUT is a .onnx / .pt file, or for bioimageio a folder "
            "(rdf.yaml, weights, test tensors, cover, README). Every export is checked against PyTorch on test "
            "tensors; a bioimage.io package also passes bioimageio.core's test_model. ONNX and bioimageio need "
            "pip install 'mtbio[export]'."
        ),
    )
    p.add_argument("weights", type=Path, metavar="WEIGHTS", help="weights file")
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx | torchscript | bioimageio")
    p.add_argument("out", type=Path, metavar="OUT", help="output file (.onnx / .pt) or package folder")
    net = p.add_argument_group("network (when the file names none)")
    net.add_argument("--bundle", type=Path, help="MONAI bundle folder whose network_def builds the network")
    net.add_argument("--network", help="an mtbio network name (mtbio.networks.get_network), e.g. small_unet")
    net.add_argument("--spatial-dims", type=int, choices=(2, 3), help="with --network (default: the file's, else 2)")
    p.add_argument("--roi", type=int, nargs="+", help="export / test tensor spatial size (default 128 128 / 16 64 64)")
    p.add_argument("--opset", type=int, help="ONNX opset (default 17)")
    p.add_argument("--static", action="store_true", help="ONNX: fixed input shape (default: dynamic batch, spatial)")
    p.add_argument("--zip", action="store_true", help="bioimageio: also write OUT.zip")
    p.add_argument("--no-test", action="store_true", help="bioimageio: skip bioimageio.core's test_model")
    p.add_argument("--no-onnx", action="store_true", help="bioimageio: pytorch_state_dict weights only")
    p.add_argument("--name", help="bioimageio: model name")
    p.add_argument("--author", action="append", help="bioimageio: author name (repeatable)")
    p.add_argument("--license", default="CC-BY-4.0", help="bioimageio: license of the weights (default CC-BY-4.0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


DEFAULT_ROI = {2: (128, 128), 3: (16, 64, 64)}


def _require(module: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as err:
        raise RuntimeError(f"{module} is not installed ({err}); pip install 'mtbio[export]'") from err


def run(args: argparse.Namespace) -> int:
    from mtbio.export.source import example_input, load_source

    fmt = args.format
    out: Path = args.out
    if fmt in SUFFIXES and out.suffix.lower() != SUFFIXES[fmt]:
        raise ValueError(f"{out}: --format {fmt} writes a {SUFFIXES[fmt]} file")
    if fmt == "bioimageio" and out.suffix.lower() in (".onnx", ".pt", ".zip", ".yaml"):
        raise ValueError(f"{out}: --format bioimageio writes a folder (use --zip for a zip next to it)")
    if fmt in SUFFIXES and out.exists() and not args.overwrite:
        raise FileExistsError(f"{out}: exists (pass --overwrite)")
    for module in {"onnx": ("onnx", "onnxruntime"), "bioimageio": ("onnx", "onnxruntime", "bioimageio.core")}.get(
        fmt, ()
    ):
        _require(module)
    source = load_source(args.weights, bundle=args.bundle, network=args.network, spatial_dims=args.spatial_dims)
    dims = source.spatial_dims
    roi = tuple(args.roi) if args.roi else DEFAULT_ROI[dims]
    if len(roi) != dims or any(r < 1 or r % s for r, s in zip(roi, source.step)):
        raise ValueError(f"--roi {list(roi)}: a {dims}D network needs {dims} positive multiples of {list(source.step)}")
    summary: dict[str, Any] = {"weights": str(args.weights), "network": source.record.network, "spatial_dims": dims}
    if fmt == "bioimageio":
        from mtbio.export.bioimageio import export_bioimageio

        summary.update(
            export_bioimageio(
                source,
                out,
                roi=roi,
                name=args.name,
                authors=args.author,
                license=args.license,
                onnx=not args.no_onnx,
                opset=args.opset,
                overwrite=args.overwrite,
                zip_path=out.with_name(out.name + ".zip") if args.zip else None,
                test=not args.no_test,
            )
        )
    else:
        from mtbio.export.source import normalize_sample

        example = normalize_sample(example_input(roi))
        checks = [example, normalize_sample(example_input(roi, seed=1, batch=2))]
        if fmt == "onnx":
            from mtbio.export.onnx import DEFAULT_OPSET, check_onnx, export_onnx

            opset = args.opset or DEFAULT_OPSET
            export_onnx(source.network, out, example, opset=opset, dynamic=not args.static)
            check = check_onnx(out, source.network, checks if not args.static else [example])
            summary.update(format="onnx", path=str(out), opset=opset, dynamic=not args.static, check=check)
        else:
            from mtbio.export.torchscript import check_torchscript, export_torchscript

            export_torchscript(source.network, out, example)
            summary.update(format="torchscript", path=str(out), check=check_torchscript(out, source.network, checks))
        summary["roi"] = list(roi)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        diff = (summary.get("check") or summary.get("onnx_check") or {}).get("max_abs_diff")
        extra = "" if diff is None else f" (max |diff| vs PyTorch {diff:.2g})"
        test = f", bioimageio test {summary['bioimageio_test']}" if "bioimageio_test" in summary else ""
        print(f"wrote {out}{extra}{test}")
    return 0
