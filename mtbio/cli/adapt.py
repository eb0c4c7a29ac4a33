"""``mtbio adapt``: adapt to your own unlabelled volume and get its prediction, the label-free choice and a report.

One command runs the whole path (:func:`mtbio.uda.adapt.run_adapt`): the source-only start (the recipe's
pre-training on the labelled source, or ``--source-model``), MaskTwins on the target with every checkpoint scored
without labels, the label-free choice between the best adapted checkpoint and the source-only start, the streaming
prediction of the whole target and the report. OUT receives ``prediction.zarr`` (OME-Zarr, channel 1 = mitochondrion
probability), ``selected.json`` (which model was delivered and why), ``report.md`` with ``figures/``, and the runs
(``pretrain/``, ``masktwins/``).

Volumes are ``PATH`` or ``PATH:KEY`` (or ``--target-key`` / ``--source-key`` / ``--source-label-key``), in any format
mtbio reads. The training defaults are the validated recipe (:class:`mtbio.uda.recipe.Recipe`); the prediction's are
``mtbio predict``'s. ``--device`` is used for training and prediction (default: CUDA when available, else the CPU).

Ctrl-C (SIGINT) or SIGTERM stops at an iteration boundary (training) or a block boundary (prediction) with
everything written so far kept; running the same command again continues (exit status 130 / 143).

Example::

    mtbio adapt --target my_stack.h5 --target-key raw --source-image vnc3/stack1/raw \\
        --source-label vnc3/stack1/mitochondria --out adapt_run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: InferenceSettings fields without a flag here: adapt stores softmax probabilities (the report reads them), and
#: --batch-size is the training recipe's (the prediction keeps InferenceSettings' windows per forward pass)
FIXED_SETTINGS = ("activation", "batch_size")


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of ``mtbio adapt``: data and run flags here; the Recipe, UDAConfig and InferenceSettings flags
    generated from those classes (their defaults shown in the help)."""
    from mtbio.cli.predict import add_settings_arguments
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.options import add_config_arguments
    from mtbio.uda.recipe import Recipe

    data = p.add_argument_group("data")
    data.add_argument(
        "--target", required=True, help="your unlabelled target volume PATH[:KEY] (adapted to, predicted)"
    )
    data.add_argument("--target-key", help="dataset / array inside --target (HDF5, zarr)")
    data.add_argument("--source-image", "--source", dest="source_image", help="labelled source volume PATH[:KEY]")
    data.add_argument("--source-label", help="its labels PATH[:KEY] (mtbio's label rule)")
    data.add_argument("--source-key", help="dataset / array inside --source-image")
    data.add_argument("--source-label-key", help="dataset / array inside --source-label")
    data.add_argument(
        "--source-model",
        type=Path,
        help="a source-only weights file (e.g. an earlier run's pretrain/final.pt) to start from instead of the "
        "recipe's source-only pre-training; its network is used unless --network is given",
    )
    data.add_argument(
        "--source-voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"), help="source voxel size in nm"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (running the command again resumes)")
    p.add_argument("--figure-sections", type=int, default=3, help="target sections shown in the report (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print selected.json as one JSON line at the end")
    add_config_arguments(p, Recipe, prefix="recipe", title="training recipe (defaults: the validated Recipe)")
    add_config_arguments(p, UDAConfig, title="UDA step (defaults: UDAConfig, MaskTwins)")
    add_settings_arguments(p, exclude=FIXED_SETTINGS)
    return p


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "adapt",
        help="adapt to a new unlabelled volume: MaskTwins, label-free model choice, prediction and a report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build_parser(p)
    p.set_defaults(func=run)


def _spec(path: str | None, key: str | None) -> str | None:
    return path if path is None or key is None else f"{path}:{key}"


def spec_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~mtbio.uda.adapt.AdaptSpec` of parsed ``mtbio adapt`` arguments."""
    import dataclasses

    import torch

    from mtbio.cli.predict import settings_from_args as inference_from_args
    from mtbio.cli.train import _open
    from mtbio.cli.train import settings_from_args as training_from_args
    from mtbio.uda.adapt import AdaptSpec

    recipe, config = training_from_args(args)
    settings = inference_from_args(args)
    if args.source_model is not None and "recipe.network" not in vars(args):
        recipe = _network_of(args.source_model, recipe)
    if (args.source_image is None) != (args.source_label is None):
        raise ValueError("--source-image and --source-label go together")
    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    source_image = _spec(args.source_image, args.source_key)
    source_label = _spec(args.source_label, args.source_label_key)
    target = _spec(args.target, args.target_key)
    return AdaptSpec(
        out=args.out,
        target_image=_open(target, False, "--target"),
        source_image=_open(source_image, False, "--source-image"),
        source_label=_open(source_label, True, "--source-label"),
        source_model=args.source_model,
        config=config,
        recipe=recipe,
        inference=dataclasses.replace(settings, device=device),
        target_voxel_size=settings.voxel_size,
        source_voxel_size=None if args.source_voxel_size is None else tuple(args.source_voxel_size),
        resample=settings.resample,
        target_description=target,
        source_description=source_image,
        device=device,
        figure_sections=args.figure_sections,
        record={"argv": ["mtbio", *getattr(args, "argv", sys.argv[1:])]},
    )


def _network_of(path: Path, recipe: Any) -> Any:
    """``recipe`` with the source model's mtbio network and keyword arguments (when the file names one)."""
    from mtbio.networks.weights import read_weights

    record = read_weights(path)
    if record.network is None:
        return recipe
    return recipe.replace(network=record.network, network_kwargs=dict(record.network_kwargs))


def run(args: argparse.Namespace) -> int:
    import logging

    import torch

    from mtbio.uda.adapt import PredictionInterrupted, run_adapt
    from mtbio.uda.interrupt import TrainingInterrupted

    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("mtbio.adapt", "mtbio.adapt.train"):
        logger = logging.getLogger(name)
        if not logger.handlers and name == "mtbio.adapt":
            logger.addHandler(logging.StreamHandler(sys.stderr if args.json else sys.stdout))
        logger.setLevel(logging.INFO)
    spec = spec_from_args(args)
    try:
        result = run_adapt(spec)
    except (TrainingInterrupted, PredictionInterrupted) as stop:  # everything done so far is kept
        print(f"mtbio adapt: {stop}; to resume, run the same command again", file=sys.stderr, flush=True)
        return int(stop.code)
    if not result.complete:
        print("mtbio adapt: stopped early; to resume, run the same command again", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.selected))
    else:
        print(result.selected["verdict"])
        print(f"wrote {result.prediction}, {result.report} and {spec.out / 'selected.json'}")
    return 0
