"""``mtbio predict``: sliding-window inference of one stack (or many) into prediction stores.

Every :class:`mtbio.inference.settings.InferenceSettings` field is a flag (``--roi-size`` / ``--roi``,
``--overlap``, ``--batch-size``, ``--normalize``, ``--tta``, ``--no-resample`` ...) whose default is
:data:`~mtbio.inference.settings.TOOL_DEFAULTS`'s (:func:`add_settings_arguments`); a bundle's ``roi_size`` /
``overlap`` / ``normalize`` / ``tta`` (a package's ``roi_size`` / ``tta``) apply unless given.

Examples::

    mtbio predict stack.h5 out.pred.zarr --bundle bundles/masktwins_em2d_vnc3_lucchi --key raw
    mtbio predict sections/ out.pred.zarr --network small_unet --checkpoint model.pt --roi 256 256 --mask
    mtbio predict 'data/*.tif' preds/ --bundle my_bundle --resume            # many stacks -> one folder
    mtbio predict big.zarr out.pred.zarr --bundle my_bundle --dask            # LocalCluster, 2 workers
    mtbio predict stack.h5 out.pred.zarr --bundle my_bundle --tta flips        # test-time augmentation, 4 views
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import enum
import shlex
import signal
import sys
import threading
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mtbio.inference.settings import TOOL_DEFAULTS, InferenceSettings, as_activation

#: earlier flag spellings kept working (field -> extra option strings)
FLAG_ALIASES: dict[str, tuple[str, ...]] = {"roi_size": ("--roi",)}
#: the argparse ``dest`` prefix of the settings flags
_DEST = "settings."


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


def _cli_form(tp: Any) -> dict[str, Any]:
    """argparse keywords for a field type: tuples take several values, enums their values as choices (a union with
    an enum, ``normalize``'s, offers the enum), the rest as :mod:`mtbio.uda.options` makes them."""
    from mtbio.uda.options import _optional, _parser_for

    inner, optional = _optional(tp)
    members = typing.get_args(inner) if typing.get_origin(inner) in (typing.Union, types.UnionType) else (inner,)
    enums = [m for m in members if isinstance(m, type) and issubclass(m, enum.Enum)]
    if enums:  # the value stays a string ("none" included): the dataclass reads it
        return {"choices": [e.value for e in enums[0]] + (["none"] if optional else [])}
    tuples = [m for m in members if typing.get_origin(m) is tuple]
    if tuples:
        elem = typing.get_args(tuples[0])[0]
        return {"type": elem, "nargs": "+", "metavar": elem.__name__.upper()}
    conv, kwargs = _parser_for(inner, optional)
    metavar = inner.__name__.upper() if inner in (int, float) else "VALUE"
    return kwargs if conv is None else {"type": conv, "metavar": metavar, **kwargs}


def add_settings_arguments(
    parser: argparse.ArgumentParser, base: InferenceSettings = TOOL_DEFAULTS, *, exclude: Sequence[str] = ()
) -> None:
    """One flag per :class:`InferenceSettings` field (``--field-name`` plus :data:`FLAG_ALIASES`), its help the field's
    line of the class docstring and the default shown ``base``'s; a flag not given is absent from the namespace
    (:func:`settings_from_args` then keeps ``base``'s value): no default is restated here. Fields in ``exclude`` get
    no flag (the entry point fixes them), nor do fields with ``metadata={"cli": False}`` (``context_sections``: the
    weights record decides)."""
    from mtbio.uda.options import _plain_doc, field_docs

    docs = field_docs(InferenceSettings)
    hints = typing.get_type_hints(InferenceSettings)
    group = parser.add_argument_group("inference settings (mtbio.inference.settings.InferenceSettings)")
    for f in dataclasses.fields(InferenceSettings):
        if f.name in exclude or not f.metadata.get("cli", True):
            continue
        default = getattr(base, f.name)
        shown = default.value if isinstance(default, enum.Enum) else default
        if isinstance(shown, tuple):
            shown = " ".join(str(v) for v in shown)
        help_text = f"{_plain_doc(docs[f.name])} (default: {shown})".replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        group.add_argument(
            flag, *FLAG_ALIASES.get(f.name, ()), dest=_DEST + f.name, default=argparse.SUPPRESS, help=help_text,
            **_cli_form(hints[f.name]),
        )  # fmt: skip


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings fields given on the command line (one value of a several-value flag that also takes a single
    number, ``--overlap 0.5``, is that number)."""
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith(_DEST):
            name = key[len(_DEST) :]
            if isinstance(value, list):
                value = value[0] if len(value) == 1 and name == "overlap" else tuple(value)
            out[name] = value
    return out


def settings_from_args(
    args: argparse.Namespace, base: InferenceSettings = TOOL_DEFAULTS, **model: Any
) -> InferenceSettings:
    """``base`` with the model's values (a bundle's ``roi_size`` ...) and then the flags given."""
    return InferenceSettings.merged(base, **{**model, **given_settings(args)})


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
    add_settings_arguments(p)
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


def _load_network(args: argparse.Namespace) -> tuple[Any, InferenceSettings, str | None]:
    """The network, the run's settings and the bundle's normalisation (``None``: not stated) of the command line; a
    bundle's (or package's) ``roi_size`` / ``overlap`` / ``tta`` / ``planes`` apply unless given on the command line."""
    from mtbio.inference.model_io import bundle_inferer_settings, load_bundle_network, load_named_network

    model = getattr(args, "model", None)
    if sum(x is not None for x in (args.bundle, args.network, model)) != 1:
        raise ValueError("pass exactly one of --bundle DIR, --network NAME (with --checkpoint) or --model PACKAGE")
    given_roi = given_settings(args).get("roi_size")
    from_model: dict[str, Any] = {}
    bundle_normalize = None
    if model is not None:
        from mtbio.export.bioimageio import load_package

        if args.checkpoint is not None:
            raise ValueError("--model loads the package's own weights; drop --checkpoint")
        package = load_package(model)
        network, dims = package.network, package.spatial_dims
        from_model["roi_size"] = package.roi
        if package.tta is not None:
            from_model["tta"] = package.tta
        if package.planes is not None:
            from_model["planes"] = package.planes
        bundle_normalize = "none" if package.normalize is None else package.normalize
    elif args.bundle is not None:
        network = load_bundle_network(args.bundle, args.checkpoint, trust=args.trust_bundle)
        stated = bundle_inferer_settings(args.bundle, trust=args.trust_bundle)
        bundle_roi = stated.get("roi_size")
        dims = len(given_roi) if given_roi else len(bundle_roi) if isinstance(bundle_roi, list | tuple) else 2
        from_model.update({k: stated[k] for k in ("roi_size", "overlap", "tta", "planes") if stated.get(k) is not None})
        bundle_normalize = None if stated.get("normalize") is None else str(stated["normalize"])
    else:
        dims = args.spatial_dims or (len(given_roi) if given_roi else 2)
        if args.checkpoint is None:
            raise ValueError("--network needs --checkpoint PATH (the trained weights)")
        network = load_named_network(args.network, dims, args.checkpoint)
    if isinstance(from_model.get("roi_size"), int):
        from_model["roi_size"] = (from_model["roi_size"],) * dims
    settings = settings_from_args(args, **from_model)
    roi = settings.window(dims)
    if len(roi) != dims:
        raise ValueError(f"--roi {roi} has {len(roi)} values for a {dims}D network")
    return network, dataclasses.replace(settings, roi_size=roi), bundle_normalize


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
    if args.mask and as_activation(given_settings(args).get("activation", TOOL_DEFAULTS.activation)) is None:
        raise ValueError("--mask needs probabilities: drop --activation none")
    settings_from_args(args)  # bad flag values fail before a network is loaded
    network, settings, bundle_normalize = _load_network(args)
    with graceful_signals() as signals:
        try:
            return _predict(args, inputs, output, network, settings, bundle_normalize, signals)
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
    settings: InferenceSettings,
    bundle_normalize: str | None,
    signals: dict[str, int | None],
) -> int:
    from tqdm import tqdm

    from mtbio.data.normalize import resolve_normalization
    from mtbio.data.store import open_prediction_store
    from mtbio.inference.distributed import predict_volume_dask
    from mtbio.inference.mask import write_mask
    from mtbio.inference.resampled import predict_at_model_voxel_size, weights_settings

    def stop() -> bool:
        return signals["signum"] is not None

    weights = args.checkpoint or (None if args.bundle is None else args.bundle / "models" / "model.pt")
    model_voxel, model_norm = weights_settings(weights)
    # normalize auto: the weights' own rule first, then the bundle's, then mtbio's rule for the network's dims
    record = model_norm if model_norm is not None else bundle_normalize
    roi = settings.window()
    if not isinstance(settings.normalize, tuple):
        settings = dataclasses.replace(settings, normalize=resolve_normalization(settings.normalize, len(roi), record))

    def predict_one(source: Path | str, out: Path | str, resume: bool) -> None:
        kwargs: dict[str, Any] = dict(
            settings=settings, resume=resume, overwrite=args.overwrite and not resume, key=args.key
        )
        bars: list[Any] = []

        def progress(done: int, total: int) -> None:
            if not bars:  # created on the first report, so errors before the run print no empty bar
                bars.append(tqdm(desc=Path(source).name, total=total, unit="chunk", leave=False, dynamic_ncols=True))
            bars[0].n = done
            bars[0].refresh()

        try:
            if args.dask is not None:
                if model_voxel is not None and settings.resample:
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
