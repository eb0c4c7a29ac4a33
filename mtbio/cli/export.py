"""``mtbio export``: a trained network as ONNX, TorchScript or a bioimage.io model package.

Examples::

    mtbio export runs/mt/final.pt --format onnx model.onnx
    mtbio export runs/mt/checkpoint_iteration=600.pt --format torchscript model.pt
    mtbio export bundles/masktwins_demo/models/model.pt --bundle bundles/masktwins_demo --format bioimageio pkg/ --zip
    mtbio export model_state.pt --network small_unet --spatial-dims 3 --format onnx model.onnx --roi 16 64 64
    mtbio export runs/mt/final.pt --format onnx model_tta.onnx --tta flips         # 4 flipped views averaged
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mtbio.export.api import FORMATS
from mtbio.inference.settings import TOOL_DEFAULTS, TTA, Planes


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
    p.add_argument(
        "--tta",
        choices=[t.value for t in TTA],
        help="test-time augmentation (mtbio.inference.settings.InferenceSettings.tta): onnx / torchscript export the "
        "network wrapped to average its in-plane flips (flips_rot90: and 90 degree rotations; needs a square --roi) "
        "and output log(mean probability); bioimageio records it in config.mtbio.tta for mtbio predict --model "
        f"(default: the tools' default, {TOOL_DEFAULTS.tta.value}; bioimageio then records nothing)",
    )
    p.add_argument(
        "--planes",
        choices=[m.value for m in Planes],
        help="bioimageio: record the planes mtbio predicts a volume along (mtbio.inference.settings."
        "InferenceSettings.planes: xy, xyz = ortho-plane consensus, auto) in config.mtbio.planes for mtbio predict "
        f"--model (default: nothing recorded; the tools' default is {TOOL_DEFAULTS.planes.value})",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mtbio.export.api import export_model

    summary = export_model(
        args.weights,
        args.format,
        args.out,
        bundle=args.bundle,
        network=args.network,
        spatial_dims=args.spatial_dims,
        roi=args.roi,
        opset=args.opset,
        static=args.static,
        zip_package=args.zip,
        test=not args.no_test,
        onnx=not args.no_onnx,
        name=args.name,
        authors=args.author,
        license=args.license,
        overwrite=args.overwrite,
        tta=args.tta,
        planes=args.planes,
    )
    out = args.out
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        diff = (summary.get("check") or summary.get("onnx_check") or {}).get("max_abs_diff")
        extra = "" if diff is None else f" (max |diff| vs PyTorch {diff:.2g})"
        test = f", bioimageio test {summary['bioimageio_test']}" if "bioimageio_test" in summary else ""
        print(f"wrote {out}{extra}{test}")
    return 0
