"""``mtbio score TARGET --checkpoint W``: the label-free score of a model on an unlabelled target volume."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "score",
        help="label-free score of a model on an unlabelled target (higher = better; flags collapse)",
        description=(
            "Score a trained model on an unlabelled target volume without labels: agreement of its predictions "
            "under flips, under the complementary masked views and across adjacent sections, and the plausibility "
            "of its predicted foreground fraction (docs/uda.md, 'Label-free model selection'). A model whose "
            "predictions are all one class, or whose foreground fraction is below 1/5 or above 5x the source's, "
            "is reported collapsed. Works for final.pt files and intermediate training checkpoints alike."
        ),
    )
    parser.add_argument("target", metavar="TARGET", help="unlabelled target volume (any format mtbio reads)")
    parser.add_argument("--checkpoint", required=True, metavar="W", help="weights: final.pt, checkpoint_*.pt, ...")
    parser.add_argument(
        "--network", default=None, help="mtbio network name, for weights files that name none (a bare state_dict)"
    )
    parser.add_argument("--key", default=None, help="dataset / array key inside TARGET (HDF5, zarr, ...)")
    parser.add_argument(
        "--crop", type=int, nargs="+", default=None, metavar="N",
        help="score crop: H W for 2D networks (default 256 256), D H W for 3D (default 32 128 128)",
    )  # fmt: skip
    parser.add_argument("--crops", type=int, default=16, help="crops in the fixed sample (16; ~6 forwards each)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crop sample (keep fixed to compare models)")
    parser.add_argument(
        "--source-fraction", type=float, default=None, metavar="F",
        help="the source's labelled foreground fraction (default: the one the weights file records, if any)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from mtbio.cli.train import _as_zyx
    from mtbio.data.volumes import open_volume
    from mtbio.networks.weights import read_weights
    from mtbio.uda.config import DEFAULT_BLOCK_VOXELS
    from mtbio.uda.selection import score_network

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    record = read_weights(args.checkpoint)
    if record.network is None and args.network is None:
        raise ValueError(f"{args.checkpoint}: the file names no mtbio network; pass --network NAME")
    if record.network is not None and args.network not in (None, record.network):
        raise ValueError(f"{args.checkpoint}: holds a {record.network!r} network, --network says {args.network!r}")
    dims = record.spatial_dims or (len(args.crop) if args.crop else 2)
    crop = tuple(args.crop) if args.crop else ((256, 256) if dims == 2 else (32, 128, 128))
    if len(crop) != dims:
        raise ValueError(f"--crop {list(crop)} has {len(crop)} values, the network is {dims}D")
    record.network = record.network or args.network
    record.spatial_dims = dims
    network = record.build_network(args.checkpoint)
    volume = _as_zyx(open_volume(args.target, args.key), f"TARGET {args.target}")
    block = (record.config or {}).get("block_size") or DEFAULT_BLOCK_VOXELS  # the run's resolved mask block
    source_fraction = args.source_fraction
    if source_fraction is None:
        source_fraction = record.extra.get("source_foreground_fraction")
    result = score_network(
        network, volume, crop_size=crop, n_crops=args.crops, seed=args.seed, block_size=block,
        source_fraction=source_fraction, device=args.device,
    )  # fmt: skip
    out = {"checkpoint": str(args.checkpoint), "iteration": record.iteration, "strategy": record.strategy,
           **result.to_dict()}  # fmt: skip
    if args.json:
        print(json.dumps(out))
    else:
        state = "COLLAPSED (" + "; ".join(result.reasons) + ")" if result.collapsed else "healthy"
        adjacent = "-" if result.adjacent_dice is None else f"{result.adjacent_dice:.3f}"
        print(
            f"score {result.score:.4f} ({state}): flip Dice {result.flip_dice:.3f}, view Dice {result.view_dice:.3f}, "
            f"adjacent Dice {adjacent}, foreground {result.foreground_fraction:.4f}"
            + ("" if source_fraction is None else f" (source {source_fraction:.4f})")
        )
    return 0
