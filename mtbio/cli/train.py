"""``mtbio train``: unsupervised domain adaptation (MaskTwins and baselines) from volumes on disk.

Volumes are given as ``PATH`` or ``PATH:KEY`` (the HDF5 dataset / zarr array inside ``PATH``; the key is split
off at the last ``:`` only when ``PATH`` itself does not exist). Labels are read with the project's label rule
(``open_label_volume``). A 2D crop (``--crop 192``) trains on sections; a 3D crop (``--crop 16,128,128``) on
patches.

The defaults are the validated recipe (:class:`mtbio.uda.recipe.Recipe`, docs/uda.md): ``unet``, 800 source-only
iterations (``--pretrain-iterations``, run in ``RUN_DIR/pretrain``), then 3200 iterations of the strategy, 192 px
crops, batch 4, lr 1e-3. The run goes through :func:`mtbio.uda.run.run_training`: RUN_DIR receives ``config.json``,
resumable checkpoints ``checkpoint_iteration=N.pt`` (student, teacher, optimizer, iteration; ``--resume`` continues
from the newest one exactly), ``final.pt`` (the weights record), ``validation.json`` (with ``--target-eval``) and
TensorBoard logs in ``RUN_DIR/tb``.

Ctrl-C (SIGINT) or SIGTERM stops after the current iteration: a checkpoint of the completed iterations is
written, no ``final.pt``, the command to resume is printed and the exit status is 130 (SIGINT) / 143 (SIGTERM).

Example::

    mtbio train --source vnc3/stack1/raw --source-label vnc3/stack1/mitochondria \\
        --target lucchi_pp/Test_In --target-eval lucchi_pp/Train_In --target-eval-label lucchi_pp/Train_Out \\
        --strategy masktwins --out runs/masktwins
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of ``mtbio train``: data and run flags here; one flag per :class:`~mtbio.uda.recipe.Recipe` and
    :class:`~mtbio.uda.config.UDAConfig` field, generated from them (their defaults, shown in the help, are the
    validated recipe)."""
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.options import add_config_arguments
    from mtbio.uda.recipe import Recipe

    p.add_argument("--source", help="labelled source image volume PATH[:KEY]")
    p.add_argument("--source-label", help="source label volume PATH[:KEY]")
    p.add_argument("--target", help="unlabelled target image volume PATH[:KEY]")
    p.add_argument("--target-label", help="target training labels PATH[:KEY] (only for --strategy oracle)")
    p.add_argument("--target-eval", help="labelled target evaluation image volume PATH[:KEY]")
    p.add_argument("--target-eval-label", help="target evaluation labels PATH[:KEY]")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--val-every", type=int, default=0, help="validate every N iterations (0: only at the end)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument(
        "--init-weights",
        type=Path,
        help="start from the EMA weights of an earlier run's final.pt (the pre-training, when there is one, starts "
        "from them); same --network needed",
    )
    p.add_argument(
        "--source-voxel-size",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="source voxel size in nm (overrides the file's; for files without it)",
    )
    p.add_argument("--target-voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"), help="target voxel size (nm)")
    p.add_argument(
        "--no-resample",
        action="store_true",
        help="train on the volumes as given (default: the source is resampled to the target's voxel size on the "
        "network's axes when both are known and differ by more than 10 %%)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_config_arguments(p, Recipe, prefix="recipe", title="training recipe (defaults: the validated Recipe)")
    add_config_arguments(p, UDAConfig, title="UDA step (defaults: UDAConfig)")
    return p


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a segmentation network with unsupervised domain adaptation (MaskTwins)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build_parser(p)
    p.set_defaults(func=run)


def split_key(spec: str) -> tuple[Path, str | None]:
    """``PATH`` or ``PATH:KEY`` -> (path, key). The key is split off only when ``spec`` is not itself a path."""
    if Path(spec).exists() or ":" not in spec:
        return Path(spec), None
    path, key = spec.rsplit(":", 1)
    if not key:
        raise ValueError(f"{spec}: empty key after ':'")
    return Path(path), key


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise ValueError(f"{what} must be positive, got {text!r}")
    return values


def _as_zyx(volume: Any, name: str) -> Any:
    import numpy as np

    if len(volume.shape) == 3:
        return volume
    if len(volume.shape) == 2:
        return np.asarray(volume[:])[None]
    raise ValueError(f"{name}: expected a 2D or 3D single-channel volume, got shape {tuple(volume.shape)}")


def _open(spec: str | None, label: bool, name: str) -> Any:
    if spec is None:
        return None
    from mtbio.data.labels import foreground_fraction, open_label_volume
    from mtbio.data.volumes import open_volume

    path, key = split_key(spec)
    vol = open_label_volume(path, key) if label else open_volume(path, key)
    if label:
        print(f"{name} {spec}: label foreground fraction {foreground_fraction(vol):.4f}")
    return _as_zyx(vol, f"{name} {spec}")


def settings_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(Recipe, UDAConfig)`` of parsed ``mtbio train`` arguments (the classes' defaults where no flag was given)."""
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.options import config_from_args
    from mtbio.uda.recipe import Recipe

    return config_from_args(args, Recipe, prefix="recipe"), config_from_args(args, UDAConfig)


def spec_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~mtbio.uda.run.RunSpec` of parsed ``mtbio train`` arguments."""
    from mtbio.uda.run import RunSpec
    from mtbio.uda.strategy import strategy_spec

    recipe, cfg = settings_from_args(args)
    spec = strategy_spec(cfg.strategy)
    strategy = cfg.strategy.value
    if spec.uses_source and (args.source is None or args.source_label is None):
        raise ValueError(f"--strategy {strategy} needs --source and --source-label")
    if recipe.pretrain_iterations > 0 and (args.source is None or args.source_label is None):
        raise ValueError("--pretrain-iterations > 0 needs --source and --source-label (or --pretrain-iterations 0)")
    if spec.uses_target and args.target is None:
        raise ValueError(f"--strategy {strategy} needs --target")
    if spec.target_supervised and args.target_label is None:
        raise ValueError("--strategy oracle needs --target-label")
    if (args.target_eval is None) != (args.target_eval_label is None):
        raise ValueError("--target-eval and --target-eval-label go together")
    need_source = spec.uses_source or recipe.pretrain_iterations > 0
    return RunSpec(
        out=args.out,
        config=cfg,
        recipe=recipe,
        source_image=_open(args.source, False, "--source") if need_source else None,
        source_label=_open(args.source_label, True, "--source-label") if need_source else None,
        target_image=_open(args.target, False, "--target") if spec.uses_target else None,
        target_label=_open(args.target_label, True, "--target-label") if spec.target_supervised else None,
        source_voxel_size=args.source_voxel_size,
        target_voxel_size=args.target_voxel_size,
        resample=not args.no_resample,
        source_description=args.source,
        target_description=args.target,
        init_weights=args.init_weights,
        device=args.device,
        in_memory=False,
        resume="require" if args.resume else "never",
        eval_image=_open(args.target_eval, False, "--target-eval") if args.target_eval else None,
        eval_label=_open(args.target_eval_label, True, "--target-eval-label") if args.target_eval else None,
        val_interval=args.val_every,
        record={"args": {k: str(v) for k, v in vars(args).items() if k != "func"}},
    )


def run(args: argparse.Namespace) -> int:
    import logging

    import torch

    from mtbio.uda.run import run_training
    from mtbio.uda.trainer import TrainingInterrupted

    if args.threads:
        torch.set_num_threads(args.threads)
    logger = logging.getLogger("mtbio.train")
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler(sys.stdout))
    logger.setLevel(logging.INFO)
    spec = spec_from_args(args)
    try:
        result = run_training(spec)
    except TrainingInterrupted as stop:  # a checkpoint of the completed iterations is written, no final.pt
        print(f"to resume: {_resume_command(args)}", file=sys.stderr, flush=True)
        return int(stop.code)
    if result.validation:
        last = result.validation[-1]
        print("target evaluation (teacher): " + ", ".join(f"{k} {last[k]:.4f}" for k in ("mAP", "F1", "MCC", "IoU")))
    print(f"wrote {result.weights}")
    return 0


def _resume_command(args: argparse.Namespace) -> str:
    """The command that resumes this run: this process's own command line plus ``--resume`` when it was
    ``mtbio train ...``, else one rebuilt from the parsed arguments."""
    if sys.argv[1:2] == ["train"]:
        words = ["mtbio", *sys.argv[1:]]
    else:
        words = ["mtbio", "train"]
        for k, v in vars(args).items():
            if k in ("func", "command", "resume") or v is None or v is False:
                continue
            words += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return shlex.join(words + ([] if "--resume" in words else ["--resume"]))
