"""``mtbio train``: unsupervised domain adaptation (MaskTwins and baselines) from volumes on disk.

Volumes are given as ``PATH`` or ``PATH:KEY`` (the HDF5 dataset / zarr array inside ``PATH``; the key is split
off at the last ``:`` only when ``PATH`` itself does not exist). Labels are read with the project's label rule
(``open_label_volume``). A 2D crop (``--crop 192``) trains on sections; a 3D crop (``--crop 16,128,128``) on
patches.

RUN_DIR receives ``config.json``, resumable checkpoints ``checkpoint_iteration=N.pt`` (student, teacher, optimizer,
iteration; ``--resume`` continues from the newest one exactly), ``final.pt`` (teacher and student weights with
the network description), ``validation.json`` (with ``--target-eval``) and TensorBoard logs in ``RUN_DIR/tb``.

Ctrl-C (SIGINT) or SIGTERM stops after the current iteration: a checkpoint of the completed iterations is
written, no ``final.pt``, the command to resume is printed and the exit status is 130 (SIGINT) / 143 (SIGTERM).

Example::

    mtbio train --source vnc3/stack1/raw --source-label vnc3/stack1/mitochondria \\
        --target lucchi_pp/Test_In --target-eval lucchi_pp/Train_In --target-eval-label lucchi_pp/Train_Out \\
        --strategy masktwins --iters 500 --out runs/masktwins
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path
from typing import Any

STRATEGIES = ("source_only", "mean_teacher", "mic", "random_pair", "masktwins", "oracle")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a segmentation network with unsupervised domain adaptation (MaskTwins)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--source", help="labelled source image volume PATH[:KEY]")
    p.add_argument("--source-label", help="source label volume PATH[:KEY]")
    p.add_argument("--target", help="unlabelled target image volume PATH[:KEY]")
    p.add_argument("--target-label", help="target training labels PATH[:KEY] (only for --strategy oracle)")
    p.add_argument("--target-eval", help="labelled target evaluation image volume PATH[:KEY]")
    p.add_argument("--target-eval-label", help="target evaluation labels PATH[:KEY]")
    p.add_argument("--strategy", default="masktwins", choices=STRATEGIES)
    p.add_argument("--iters", type=int, default=500, help="training iterations")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--crop", default="192", help="crop size: H (square 2D), H,W (2D) or D,H,W (3D)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--network", default="small_unet", help="unet, small_unet or basic_unet")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--block-size", default="32", help="mask block size b: one int or D,H,W for 3D")
    p.add_argument("--mask-ratio", type=float, default=None, help="r (default: 0.5 pairs, 0.7 mic)")
    p.add_argument("--tau", type=float, default=0.968, help="pseudo-label confidence threshold")
    p.add_argument("--alpha", type=float, default=None, help="EMA decay (default clip(1 - 10/iters, .99, .999))")
    # None = the UDAConfig default (documented there), so the CLI never restates a default
    p.add_argument("--lambda-pl", type=float, default=None, help="weight of the pseudo-label loss (default 1)")
    p.add_argument("--lambda-st", type=float, default=None, help="unmasked self-training term of masked strategies")
    p.add_argument("--lambda-cm", type=float, default=None, help="weight of the consistency between the two views")
    p.add_argument("--consistency", default=None, choices=("logits", "probabilities"), help="what it compares")
    p.add_argument("--pl-weighting", default=None, choices=("image", "pixel", "none"))
    p.add_argument("--dice-weight", type=float, default=0.0)
    p.add_argument(
        "--rampup", type=int, default=None, help="ramp-up iterations of the target terms (default: half of --iters)"
    )
    p.add_argument("--val-every", type=int, default=0, help="validate every N iterations (0: only at the end)")
    p.add_argument("--save-every", type=int, default=None, help="checkpoint every N iterations (default iters/10)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument(
        "--init-weights",
        type=Path,
        help="start student and teacher from the EMA weights of an earlier run's final.pt (e.g. a source-only run: "
        "self-training from scratch can collapse on real data, docs/uda.md); same --network needed",
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


def _latest_checkpoint(run_dir: Path) -> Path | None:
    found = []
    for f in run_dir.glob("checkpoint_*iteration=*.pt"):
        m = re.search(r"iteration=(\d+)\.pt$", f.name)
        if m:
            found.append((int(m.group(1)), f))
    return max(found)[1] if found else None


def _init_state(path: Path, network: str) -> dict[str, Any]:
    """The teacher weights of a weights file (``final.pt`` of ``mtbio train``, a training checkpoint or a plain
    ``state_dict``), read with ``weights_only=True``."""
    from mtbio.networks.weights import read_weights

    record = read_weights(path)
    if record.network not in (None, network):
        raise ValueError(f"--init-weights: {path} holds a {record.network!r} network, this run builds {network!r}")
    return record.teacher


def run(args: argparse.Namespace) -> int:
    import torch

    from mtbio.uda.config import UDAConfig
    from mtbio.uda.experiment import build_trainer, git_hash, save_weights, write_json_atomic
    from mtbio.uda.strategy import strategy_spec
    from mtbio.uda.trainer import TrainingInterrupted, attach_checkpointing, load_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.iters < 1:
        raise ValueError(f"--iters must be >= 1, got {args.iters}")
    crop = _ints(args.crop, "--crop")
    crop = crop * 2 if len(crop) == 1 else crop
    if len(crop) not in (2, 3):
        raise ValueError(f"--crop must have 1, 2 or 3 values, got {args.crop!r}")
    block = _ints(args.block_size, "--block-size")
    optional = ("lambda_pl", "lambda_st", "lambda_cm", "consistency", "pl_weighting")
    cfg = UDAConfig(
        **{k: getattr(args, k) for k in optional if getattr(args, k) is not None},
        strategy=args.strategy,
        tau=args.tau,
        mask_ratio=args.mask_ratio,
        block_size=block[0] if len(block) == 1 else block,
        dice_weight=args.dice_weight,
        alpha=args.alpha,
        rampup_iterations=args.rampup,
    )
    spec = strategy_spec(cfg.strategy)
    if spec.uses_source and (args.source is None or args.source_label is None):
        raise ValueError(f"--strategy {args.strategy} needs --source and --source-label")
    if spec.uses_target and args.target is None:
        raise ValueError(f"--strategy {args.strategy} needs --target")
    if spec.target_supervised and args.target_label is None:
        raise ValueError("--strategy oracle needs --target-label")
    if (args.target_eval is None) != (args.target_eval_label is None):
        raise ValueError("--target-eval and --target-eval-label go together")
    out: Path = args.out
    checkpoint = None
    if args.resume:
        checkpoint = _latest_checkpoint(out)
        if checkpoint is None:
            raise FileNotFoundError(f"--resume: no checkpoint_iteration=N.pt in {out}")
        _check_resume_settings(out / "config.json", args)
    elif out.exists() and any(out.glob("checkpoint_*.pt")):
        raise FileExistsError(f"{out} already holds checkpoints: pass --resume to continue or choose another --out")
    init_state = _init_state(args.init_weights, args.network) if args.init_weights is not None else None
    from mtbio.data.resample import training_grid

    grid = training_grid(
        _open(args.source, False, "--source") if spec.uses_source else None,
        _open(args.source_label, True, "--source-label") if spec.uses_source else None,
        _open(args.target, False, "--target") if spec.uses_target else None,
        _open(args.target_label, True, "--target-label") if spec.target_supervised else None,
        spatial_dims=len(crop),
        source_voxel_size=args.source_voxel_size,
        target_voxel_size=args.target_voxel_size,
        resample=not args.no_resample,
    )
    print(f"voxel size: {grid.note}")
    trainer = build_trainer(
        config=cfg,
        iterations=args.iters,
        source_image=grid.source_image,
        source_label=grid.source_label,
        target_image=grid.target_image,
        target_label=grid.target_label,
        crop_size=crop,
        batch_size=args.batch,
        network=args.network,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        in_memory=False,
        init_state=init_state,
    )
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "strategy": cfg.strategy.value,
        "seed": args.seed,
        "network": args.network,
        "spatial_dims": len(crop),
        "crop": list(crop),
        "config": cfg.to_dict(),
        "git": git_hash(),
        "init_weights": None if args.init_weights is None else str(args.init_weights),
        "voxel_size": None if grid.voxel_size is None else list(grid.voxel_size),
        "normalization": "zscore_section" if len(crop) == 2 else "zscore_volume",
    }
    write_json_atomic(out / "config.json", {**meta, "args": {k: str(v) for k, v in vars(args).items() if k != "func"}})
    save_every = args.save_every or max(1, args.iters // 10)
    attach_checkpointing(trainer, out, save_every, n_saved=2)
    if checkpoint is not None:
        load_checkpoint(trainer, checkpoint)
        print(f"resuming from {checkpoint}")
    _attach_logging(trainer, out, args.log_every)
    validation = None
    if args.target_eval:
        from mtbio.uda.evaluate import TargetValidation

        roi = crop if len(crop) == 3 else tuple(max(c, 256) for c in crop)
        validation = TargetValidation(
            _open(args.target_eval, False, "--target-eval"),
            _open(args.target_eval_label, True, "--target-eval-label"),
            roi_size=roi,
            interval=args.val_every,
        )
        validation.attach(trainer)
    try:
        trainer.fit()
    except TrainingInterrupted as stop:  # a checkpoint of the completed iterations is written, no final.pt
        print(f"to resume: {_resume_command(args)}", file=sys.stderr, flush=True)
        return int(stop.code)
    save_weights(trainer, out / "final.pt", meta)
    if validation is not None:
        write_json_atomic(out / "validation.json", validation.history)
        last = validation.history[-1]
        print("target evaluation (teacher): " + ", ".join(f"{k} {last[k]:.4f}" for k in ("mAP", "F1", "MCC", "IoU")))
    print(f"wrote {out / 'final.pt'}")
    return 0


#: arguments a resumed run may change (they do not change the trained weights)
RESUME_MAY_CHANGE = frozenset(
    {
        "resume",
        "out",
        "device",
        "threads",
        "log_every",
        "save_every",
        "val_every",
        "target_eval",
        "target_eval_label",
        "argv",
    }
)


def _check_resume_settings(config: Path, args: argparse.Namespace) -> None:
    """Refuse ``--resume`` with other training settings than the run's ``config.json`` records (the result
    would be neither run); arguments the file does not record are not compared."""
    import json

    if not config.is_file():
        return
    try:
        saved = json.loads(config.read_text())["args"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"--resume: {config} is not a run configuration ({err})") from None
    now = {k: str(v) for k, v in vars(args).items() if k != "func"}
    changed = [
        f"--{k.replace('_', '-')} {saved[k]} -> {now[k]}"
        for k in sorted(now)
        if k in saved and k not in RESUME_MAY_CHANGE and saved[k] != now[k]
    ]
    if changed:
        raise ValueError(
            f"--resume with other settings than the run in {config.parent} ({'; '.join(changed)}): resume with the "
            "same settings, or start a new --out (--init-weights RUN/final.pt starts from a finished run)"
        )


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


def _attach_logging(trainer: Any, out: Path, every: int) -> None:
    from monai.handlers import StatsHandler

    every = max(1, every)

    def every_n(_: Any, iteration: int) -> bool:  # StatsHandler takes an event filter, not an interval
        return iteration % every == 0

    stats = StatsHandler(name="mtbio.train", iteration_log=every_n, tag_name="train", output_transform=lambda o: o)
    stats.attach(trainer)
    import logging

    logger = logging.getLogger("mtbio.train")
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler())
    logger.setLevel(logging.INFO)
    try:
        from monai.handlers import TensorBoardStatsHandler

        TensorBoardStatsHandler(
            log_dir=str(out / "tb"), iteration_log=every, epoch_log=False, output_transform=lambda o: o
        ).attach(trainer)
    except (ImportError, ModuleNotFoundError, RuntimeError):  # tensorboard is optional
        pass
