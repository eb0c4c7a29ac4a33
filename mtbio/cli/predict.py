"""``mtbio predict``: sliding-window inference of one stack (or many) into prediction stores.

Examples::

    mtbio predict stack.h5 out.pred.zarr --bundle bundles/vnc3_to_lucchi --key raw
    mtbio predict sections/ out.pred.zarr --network small_unet --checkpoint model.pt --roi 256 256 --mask
    mtbio predict 'data/*.tif' preds/ --bundle my_bundle --resume            # many stacks -> one folder
    mtbio predict big.zarr out.pred.zarr --bundle my_bundle --dask            # LocalCluster, 2 workers
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_ROI = {2: (256, 256), 3: (32, 128, 128)}


def _normalization(choice: str, roi_dims: int) -> str | None:
    """The ``predict_volume`` normalisation for a ``--normalize`` choice (mtbio trains 2D nets per section)."""
    if choice == "none":
        return None
    if choice == "auto":
        return "zscore_section" if roi_dims == 2 else "zscore"
    return choice


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict mitochondria probabilities of EM stacks into OME-Zarr prediction stores",
        description=(
            "Out-of-core, resumable sliding-window inference (MONAI's window grid and Gaussian blending). "
            "INPUT is a stack (zarr / OME-Zarr / h5 / tif / folder of sections); OUTPUT is its prediction store. "
            "Several inputs, a glob or a folder of stacks write one <stem>.pred.zarr per stack into OUTPUT. "
            "Intensities are z-scored as mtbio trains (--normalize auto: per section for a 2D network, per volume for "
            "a 3D one) unless --normalize none."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="INPUT... OUTPUT", help="input stack(s) then the output")
    net = p.add_argument_group("network (one of --bundle / --network)")
    net.add_argument("--bundle", type=Path, help="MONAI bundle folder (configs/inference.yaml with network_def)")
    net.add_argument("--network", help="an mtbio network name (mtbio.networks.get_network), e.g. small_unet")
    net.add_argument("--spatial-dims", type=int, choices=(2, 3), help="with --network (default: len(--roi) or 2)")
    net.add_argument("--checkpoint", type=Path, help="weights (default <bundle>/models/model.pt)")
    p.add_argument("--key", help="dataset inside an h5 / zarr input")
    p.add_argument("--roi", type=int, nargs="+", help="window size, 2 or 3 values (default 256 256 / 32 128 128)")
    p.add_argument("--overlap", type=float, default=0.25, help="window overlap fraction (default 0.25)")
    p.add_argument("--mode", choices=("gaussian", "constant"), default="gaussian", help="blending (default gaussian)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    p.add_argument("--device", help="torch device (default cuda when available, else cpu)")
    p.add_argument("--amp", action="store_true", help="float16 autocast on CUDA")
    p.add_argument("--dtype", choices=("uint8", "float16", "float32"), default="uint8", help="stored (default uint8)")
    p.add_argument("--activation", choices=("softmax", "sigmoid", "none"), default="softmax", help="default softmax")
    p.add_argument(
        "--normalize",
        choices=("auto", "zscore", "zscore_section", "none"),
        default="auto",
        help="intensity z-score: auto (default) = per section for 2D networks, per volume for 3D ones",
    )
    p.add_argument("--chunks", type=int, nargs="+", help="output chunk shape")
    p.add_argument(
        "--voxel-size",
        type=float,
        nargs="+",
        metavar="NM",
        help="input voxel size in nm, Z Y X (or Y X); overrides the file's (for files that lack it)",
    )
    p.add_argument(
        "--no-resample",
        action="store_true",
        help="predict at the input's voxel size even when the model was trained at another one (default: resample "
        "to the model's voxel size and back when they differ by more than 10 %%)",
    )
    p.add_argument("--mask", action="store_true", help="also write labels/mask (foreground probability >= 0.5)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="finish an interrupted run (same model and settings)")
    again.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--dask",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run blocks as dask.distributed tasks: a LocalCluster, or the scheduler at ADDRESS",
    )
    p.add_argument("--dask-workers", type=int, default=2, help="LocalCluster workers (default 2)")
    p.set_defaults(func=run)


def _bundle_settings(bundle: Path) -> dict[str, Any]:
    """``roi_size``, ``overlap``, ``spatial_dims`` stated by a bundle config (top level / inferer / network_def)."""
    from mtbio.inference.model_io import BUNDLE_CONFIGS

    config = next((bundle / c for c in BUNDLE_CONFIGS if (bundle / c).is_file()), None)
    if config is None:
        return {}
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config))
    raw = parser.config
    out: dict[str, Any] = {}
    inferer = raw.get("inferer") if isinstance(raw.get("inferer"), dict) else {}
    for name in ("roi_size", "overlap"):
        value = raw.get(name, inferer.get(name))
        if isinstance(value, (int, float, list, tuple)):
            out[name] = value
    net_def = raw.get("network_def")
    if isinstance(net_def, dict) and isinstance(net_def.get("spatial_dims"), int):
        out["spatial_dims"] = net_def["spatial_dims"]
    return out


def _load_network(args: argparse.Namespace) -> tuple[Any, tuple[int, ...], float]:
    from mtbio.inference.model_io import load_bundle_network, load_named_network

    if (args.bundle is None) == (args.network is None):
        raise ValueError("pass exactly one of --bundle DIR or --network NAME (with --checkpoint)")
    overlap = args.overlap
    if args.bundle is not None:
        settings = _bundle_settings(args.bundle)
        network = load_bundle_network(args.bundle, args.checkpoint)
        dims = len(args.roi) if args.roi else settings.get("spatial_dims", len(settings.get("roi_size", ())) or 2)
        roi = args.roi or settings.get("roi_size") or DEFAULT_ROI[dims]
    else:
        dims = args.spatial_dims or (len(args.roi) if args.roi else 2)
        if args.checkpoint is None:
            raise ValueError("--network needs --checkpoint PATH (the trained weights)")
        network = load_named_network(args.network, dims, args.checkpoint)
        roi = args.roi or DEFAULT_ROI[dims]
    roi = tuple(int(r) for r in ([roi] * dims if isinstance(roi, int) else roi))
    if len(roi) != dims:
        raise ValueError(f"--roi {roi} has {len(roi)} values for a {dims}D network")
    return network, roi, overlap


def _single_stack(inputs: list[str]) -> bool:
    if len(inputs) != 1 or any(ch in inputs[0] for ch in "*?["):
        return False
    path = Path(inputs[0])
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such input file or folder")
    if path.is_file():
        return True
    if path.name.lower().endswith(".zarr") or any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zarray")):
        return True
    from mtbio.inference.batch import is_section_folder

    return is_section_folder(path)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mtbio.inference.distributed import predict_volume_dask
    from mtbio.inference.mask import write_mask

    if len(args.paths) < 2:
        raise ValueError("give at least one INPUT and the OUTPUT path")
    *inputs, output = args.paths
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    activation = None if args.activation == "none" else args.activation
    if args.mask and activation is None:
        raise ValueError("--mask needs probabilities: drop --activation none")
    network, roi, overlap = _load_network(args)
    from mtbio.inference.resampled import normalization_for, predict_at_model_voxel_size, weights_settings

    weights = args.checkpoint or (None if args.bundle is None else args.bundle / "models" / "model.pt")
    model_voxel, model_norm = weights_settings(weights)
    if args.voxel_size is not None and len(args.voxel_size) not in (2, 3):
        raise ValueError(f"--voxel-size takes 2 (Y X) or 3 (Z Y X) values, got {args.voxel_size}")
    auto = args.normalize == "auto"
    normalize = normalization_for(model_norm, len(roi)) if auto else _normalization(args.normalize, len(roi))

    def predict_one(source: Path | str, out: Path | str, resume: bool) -> None:
        kwargs: dict[str, Any] = dict(
            roi_size=roi,
            overlap=overlap,
            mode=args.mode,
            batch_size=args.batch_size,
            device=args.device,
            activation=activation,
            dtype=args.dtype,
            chunks=args.chunks,
            amp=args.amp,
            normalize=normalize,
            resume=resume,
            overwrite=args.overwrite and not resume,
            key=args.key,
        )
        bars: list[Any] = []

        def progress(done: int, total: int) -> None:
            if not bars:  # created on the first report, so errors before the run print no empty bar
                bars.append(tqdm(desc=Path(source).name, total=total, unit="chunk", leave=False, dynamic_ncols=True))
            bars[0].n = done
            bars[0].refresh()

        try:
            if args.dask is not None:
                if model_voxel is not None and not args.no_resample:
                    raise ValueError(
                        "--dask does not resample to the model's voxel size: pass --no-resample, or drop --dask"
                    )
                scheduler = None if args.dask == "local" else args.dask
                predict_volume_dask(
                    network,
                    str(source),
                    out,
                    scheduler=scheduler,
                    n_workers=args.dask_workers,
                    progress=progress,
                    **kwargs,
                )
            else:
                result = predict_at_model_voxel_size(
                    network,
                    str(source),
                    out,
                    model_voxel_size=model_voxel,
                    voxel_size=args.voxel_size,
                    resample=not args.no_resample,
                    progress=progress,
                    **kwargs,
                )
                print(result.note)
        finally:
            for bar in bars:
                bar.close()
        if args.mask:
            write_mask(out)

    try:
        if _single_stack(inputs):
            predict_one(inputs[0], output, args.resume)
            print(f"wrote {output}")
            return 0
        from mtbio.inference.batch import predict_many

        results = predict_many(
            inputs, output, predict_fn=lambda s, o, r: predict_one(s, o, r or args.resume), overwrite=args.overwrite
        )
    except PermissionError as err:
        raise ValueError(f"{err.filename or output}: permission denied ({err.strerror})") from err
    return 1 if any(r.status == "failed" for r in results) else 0
