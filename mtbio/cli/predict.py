"""``mtbio predict``: sliding-window inference of one stack (or many) into prediction stores.

Examples::

    mtbio predict stack.h5 out.pred.zarr --bundle bundles/vnc3_to_lucchi --key raw
    mtbio predict sections/ out.pred.zarr --network small_unet --checkpoint model.pt --roi 256 256 --mask
    mtbio predict 'data/*.tif' preds/ --bundle my_bundle --resume            # many stacks -> one folder
    mtbio predict big.zarr out.pred.zarr --bundle my_bundle --dask            # LocalCluster, 2 workers
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

DEFAULT_ROI = {2: (256, 256), 3: (32, 128, 128)}


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT / SIGTERM at a block boundary (a KeyboardInterrupt, so batch runs stop too)."""

    def __init__(self, signum: int, output: str | None = None) -> None:
        super().__init__(signum)
        self.signum = signum
        self.output = output


@contextlib.contextmanager
def graceful_signals() -> Iterator[dict[str, int | None]]:
    """While active, the first SIGINT / SIGTERM only asks the run to stop (``state["signum"]`` is set; the run
    finishes the blocks in flight, leaves its store resumable and releases its lock); a second one raises
    :class:`Interrupted` at once. Off the main thread (where Python allows no handlers) nothing is installed."""
    state: dict[str, int | None] = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, frame: Any) -> None:
        if state["signum"] is not None:
            raise Interrupted(signum)
        state["signum"] = signum
        name = signal.Signals(signum).name
        print(f"mtbio predict: {name}: stopping after the blocks in flight (send it again to abort)", file=sys.stderr)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def resume_hint(argv: Sequence[str] | None, output: str | None) -> str:
    """How to resume: the same command with ``--resume`` (and without ``--overwrite``)."""
    if argv is None:
        return "rerun the same command with --resume (instead of --overwrite) to finish it"
    args = [a for a in argv if a not in ("--overwrite", "--resume")]
    return "resume with:  " + shlex.join(["mtbio", *args, "--resume"])


def _normalization(choice: str, roi_dims: int, bundle: str | None = None) -> str | None:
    """The ``predict_volume`` normalisation for a ``--normalize`` choice: ``auto`` is the bundle's ``normalize``
    when it states one, else mtbio's training rule (2D nets per section, 3D nets per volume)."""
    if choice == "none":
        return None
    if choice == "auto":
        if bundle is not None:
            return None if bundle in ("none", "None") else bundle
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
    net = p.add_argument_group("network (one of --bundle / --network / --model)")
    net.add_argument("--bundle", type=Path, help="MONAI bundle folder (configs/inference.yaml with network_def)")
    net.add_argument("--network", help="an mtbio network name (mtbio.networks.get_network), e.g. small_unet")
    net.add_argument("--spatial-dims", type=int, choices=(2, 3), help="with --network (default: len(--roi) or 2)")
    net.add_argument("--checkpoint", type=Path, help="weights (default <bundle>/models/model.pt)")
    net.add_argument(
        "--trust-bundle",
        action="store_true",
        help="let the bundle's config run code ($ expressions, any _target_); needed only for bundles whose "
        "network_def is not a plain network class (mtbio's own bundles are)",
    )
    net.add_argument("--model", type=Path, help="a bioimage.io model package (folder or rdf.yaml, e.g. mtbio export)")
    p.add_argument("--key", help="dataset inside an h5 / zarr input")
    p.add_argument("--roi", type=int, nargs="+", help="window size, 2 or 3 values (default 256 256 / 32 128 128)")
    p.add_argument("--overlap", type=float, help="window overlap fraction (default: the bundle's, else 0.25)")
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
        help="intensity z-score: auto (default) = the bundle's normalize, else per section for 2D networks, per "
        "volume for 3D ones",
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


DEFAULT_OVERLAP = 0.25


def _load_network(args: argparse.Namespace) -> tuple[Any, tuple[int, ...], float, str | None]:
    """The network, window, overlap and bundle normalisation (``None``: not stated) of the command line; a
    bundle's ``roi_size`` / ``overlap`` / ``normalize`` apply unless given on the command line."""
    from mtbio.inference.model_io import bundle_inferer_settings, load_bundle_network, load_named_network

    model = getattr(args, "model", None)
    if sum(x is not None for x in (args.bundle, args.network, model)) != 1:
        raise ValueError("pass exactly one of --bundle DIR, --network NAME (with --checkpoint) or --model PACKAGE")
    settings: dict[str, Any] = {}
    if model is not None:
        from mtbio.export.bioimageio import load_package

        if args.checkpoint is not None:
            raise ValueError("--model loads the package's own weights; drop --checkpoint")
        package = load_package(model)
        network, dims = package.network, package.spatial_dims
        roi = args.roi or package.roi
    elif args.bundle is not None:
        network = load_bundle_network(args.bundle, args.checkpoint, trust=args.trust_bundle)
        settings = bundle_inferer_settings(args.bundle, trust=args.trust_bundle)
        bundle_roi = settings.get("roi_size")
        dims = len(args.roi) if args.roi else len(bundle_roi) if isinstance(bundle_roi, list | tuple) else 2
        roi = args.roi or bundle_roi or DEFAULT_ROI[dims]
    else:
        dims = args.spatial_dims or (len(args.roi) if args.roi else 2)
        if args.checkpoint is None:
            raise ValueError("--network needs --checkpoint PATH (the trained weights)")
        network = load_named_network(args.network, dims, args.checkpoint)
        roi = args.roi or DEFAULT_ROI[dims]
    roi = tuple(int(r) for r in ([roi] * dims if isinstance(roi, int) else roi))
    if len(roi) != dims:
        raise ValueError(f"--roi {roi} has {len(roi)} values for a {dims}D network")
    overlap = args.overlap if args.overlap is not None else float(settings.get("overlap", DEFAULT_OVERLAP))
    normalize = settings.get("normalize")
    return network, roi, overlap, None if normalize is None else str(normalize)


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
    if len(args.paths) < 2:
        raise ValueError("give at least one INPUT and the OUTPUT path")
    *inputs, output = args.paths
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    activation = None if args.activation == "none" else args.activation
    if args.mask and activation is None:
        raise ValueError("--mask needs probabilities: drop --activation none")
    network, roi, overlap, bundle_normalize = _load_network(args)
    with graceful_signals() as signals:
        try:
            return _predict(args, inputs, output, network, roi, overlap, bundle_normalize, activation, signals)
        except Interrupted as err:  # SIGINT / SIGTERM: the store is incomplete, resumable and unlocked
            return _interrupted(args, err.signum, err.output or output)
        except KeyboardInterrupt:  # Ctrl-C outside the run loop
            return _interrupted(args, signal.SIGINT, output)


def _interrupted(args: argparse.Namespace, signum: int, output: str) -> int:
    from mtbio.inference.resume import Ledger

    state = ""
    with contextlib.suppress(ValueError):
        ledger = Ledger.load(output)
        state = f" ({len(ledger.done)} of {ledger.num_blocks} blocks finished and kept)"
    name = signal.Signals(signum).name
    print(
        f"mtbio predict: interrupted by {name}: {output} is incomplete{state}; "
        f"{resume_hint(getattr(args, 'argv', None), output)}",
        file=sys.stderr,
    )
    return 128 + int(signum)


def _predict(
    args: argparse.Namespace,
    inputs: list[str],
    output: str,
    network: Any,
    roi: tuple[int, ...],
    overlap: float,
    bundle_normalize: str | None,
    activation: str | None,
    signals: dict[str, int | None],
) -> int:
    from tqdm import tqdm

    from mtbio.data.store import open_prediction_store
    from mtbio.inference.distributed import predict_volume_dask
    from mtbio.inference.mask import write_mask

    def stop() -> bool:
        return signals["signum"] is not None

    from mtbio.inference.resampled import normalization_for, predict_at_model_voxel_size, weights_settings

    weights = args.checkpoint or (None if args.bundle is None else args.bundle / "models" / "model.pt")
    model_voxel, model_norm = weights_settings(weights)
    if args.voxel_size is not None and len(args.voxel_size) not in (2, 3):
        raise ValueError(f"--voxel-size takes 2 (Y X) or 3 (Z Y X) values, got {args.voxel_size}")
    if args.normalize == "auto" and model_norm is not None:  # the weights' own rule first, then the bundle's
        normalize = normalization_for(model_norm, len(roi))
    else:
        normalize = _normalization(args.normalize, len(roi), bundle_normalize)

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
                    stop=stop,
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
                    stop=stop,
                    **kwargs,
                )
                print(result.note)
        finally:
            for bar in bars:
                bar.close()
        if stop() and not open_prediction_store(out, require_complete=False).complete:
            # the run ended early at a block boundary: its store is incomplete and resumable
            raise Interrupted(int(signals["signum"] or signal.SIGINT), str(out))
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
