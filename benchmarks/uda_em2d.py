"""Real-data UDA benchmark: VNC III (labelled source) -> Lucchi++ (target), 2D, every strategy x seeds.

Protocol (DA-ISC / MaskTwins "subset 1" on the sections this data folder holds):

* source: VNC III ``stack1`` (20 sections, 4.6 nm in-plane, labelled) from ``DATA/vnc3``;
* target training: Lucchi++ ``Test_In`` (the EPFL *training* volume; unlabelled here, its labels are read only by
  the ``oracle`` row) from ``DATA/lucchi_pp``;
* target test: Lucchi++ ``Train_In`` / ``Train_Out`` (the EPFL *testing* volume) from ``--eval-data``
  (default ``DATA/lucchi_pp``), scored with :func:`mtbio.metrics.em_metrics` (per-section mAP, F1, MCC, IoU).

Every seed first trains one source-only network for ``--pretrain`` iterations (default 800; its own crop
sequence); every strategy of that seed, source-only included, then starts from those weights (student and teacher)
and trains ``--iters`` more iterations (default 800) with the same source crop sequence, and is evaluated through
its EMA teacher at the last iteration (no checkpoint selection on target labels). Self-training from scratch
collapsed to background on some seeds (the early teacher labels almost no target voxel foreground; docs/uda.md).
Intensities are z-scored per section; the pixel sizes (VNC 4.6 nm vs Lucchi 5 nm in-plane, ~8 %) are not
resampled.

Writes ``OUT/results.json`` ({strategy: [{"seed", "mAP", "F1", "MCC", "IoU", "sec_per_iter"}, ...]}, updated
after every run, so an interrupted benchmark resumes where it stopped), ``OUT/results.md`` (mean ± sample std),
``OUT/config.json`` (arguments, UDA config, git hash), ``OUT/checkpoints/<strategy>_seed<k>.pt`` and the shared
source-only starting points ``OUT/pretrain/seed<k>.pt``.

Examples::

    python benchmarks/uda_em2d.py --data ../shared/data --out runs/em2d            # the full default run
    python benchmarks/uda_em2d.py --data ../shared/data --strategies source_only,masktwins --seeds 1 \\
        --iters 20 --eval-sections 2 --out /tmp/em2d_smoke                          # a smoke test
    python benchmarks/uda_em2d.py --eval-only --checkpoints runs/em2d/checkpoints --eval-data /data/lucchi_pp \\
        --out runs/em2d_full_test                                                   # re-score saved weights
    python benchmarks/uda_em2d.py --data ../shared/data --first-seed 2 --seeds 1 --out runs/em2d_s2  # seeds split
        # over processes: copy every OUT/checkpoints/*.pt into one folder, then --eval-only scores them together
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_STRATEGIES = ("source_only", "mean_teacher", "mic", "random_pair", "masktwins", "oracle")
PRETRAIN_SEED_OFFSET = 10_000


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="folder holding vnc3/ and lucchi_pp/ (the release layouts)")
    p.add_argument("--eval-data", type=Path, help="Lucchi++ release folder to test on (default DATA/lucchi_pp)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (FIRST .. FIRST+N-1)")
    p.add_argument("--first-seed", type=int, default=0, help="first seed (to split seeds over processes/machines)")
    p.add_argument("--iters", type=int, default=800, help="iterations per run (6 x 3 runs in about 1 h on 2 cores)")
    p.add_argument(
        "--pretrain",
        type=int,
        default=800,
        help="source-only iterations per seed; every strategy starts from those weights (0 = from scratch)",
    )
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--network", default="unet", help="mtbio.networks name (unet: 5 levels, 2 residual units)")
    p.add_argument(
        "--norm", default="batch", choices=("batch", "instance"), help="normalisation layers (instance: affine)"
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--block-size", type=int, default=32, help="mask block size b in pixels")
    p.add_argument("--tau", type=float, default=0.968)
    p.add_argument("--lambda-pl", type=float, default=1.0)
    p.add_argument("--lambda-st", type=float, default=1.0, help="unmasked self-training term of masked strategies")
    p.add_argument("--lambda-cm", type=float, default=0.01)
    p.add_argument("--consistency", default="probabilities", choices=("logits", "probabilities"))
    p.add_argument("--pl-weighting", default="image", choices=("image", "pixel", "none"))
    p.add_argument("--dice-weight", type=float, default=0.0, help="soft Dice added to the source CE")
    p.add_argument("--pl-dice-weight", type=float, default=0.0, help="soft Dice added to every pseudo-label CE")
    p.add_argument("--pl-class-balance", default="none", choices=("none", "equal", "source_prior"))
    p.add_argument("--rampup", type=int, default=None, help="ramp-up iterations of the target terms (default iters/2)")
    p.add_argument(
        "--target-bn-stats", default="on", choices=("on", "off"), help="target views update BatchNorm running stats"
    )
    p.add_argument("--alpha", type=float, default=None, help="EMA decay (default 1 - 10/iters clipped to [.99,.999])")
    p.add_argument("--eval-sections", type=int, default=None, help="score only the first N test sections")
    p.add_argument("--eval-roi", type=int, default=384, help="sliding-window size at evaluation")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-only", action="store_true", help="score the checkpoints of --checkpoints, no training")
    p.add_argument("--checkpoints", type=Path, help="folder of <strategy>_seed<k>.pt files (with --eval-only)")
    args = p.parse_args(argv)
    if args.eval_only:
        if args.checkpoints is None:
            p.error("--eval-only needs --checkpoints DIR")
        if args.eval_data is None and args.data is None:
            p.error("--eval-only needs --eval-data (or --data)")
    elif args.data is None:
        p.error("--data is required for training")
    if args.eval_data is None:
        args.eval_data = args.data / "lucchi_pp"
    return args


def _eval_split(args: argparse.Namespace) -> tuple[Any, Any]:
    from mtbio.data.sources import load_split

    test = load_split("lucchi_pp", args.eval_data, "epfl_test")
    image, label = test.image, test.label
    if args.eval_sections:
        image, label = image[: args.eval_sections], label[: args.eval_sections]
    return image, label


def _score(net: Any, image: Any, label: Any, args: argparse.Namespace) -> dict[str, float]:
    from mtbio.uda.evaluate import evaluate_network

    return evaluate_network(net, image, label, roi_size=(args.eval_roi, args.eval_roi), device=args.device)


def _load_results(path: Path) -> dict[str, list[dict[str, Any]]]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_outputs(out: Path, results: dict[str, list[dict[str, Any]]], config: dict[str, Any]) -> None:
    from mtbio.uda.experiment import acceptance, summarize, write_json_atomic

    write_json_atomic(out / "results.json", results)
    write_json_atomic(out / "config.json", config)
    md = summarize(results)
    acc = acceptance(results)
    if acc:
        md += "\nAcceptance (IoU, sample std over seeds): " + json.dumps(acc) + "\n"
    tmp = out / ".results.md.tmp"
    tmp.write_text(md)
    tmp.replace(out / "results.md")


def run_eval_only(args: argparse.Namespace) -> int:
    from mtbio.uda.experiment import git_hash, load_weights

    image, label = _eval_split(args)
    results: dict[str, list[dict[str, Any]]] = {}
    files = sorted(args.checkpoints.glob("*_seed*.pt"))
    if not files:
        raise FileNotFoundError(f"no <strategy>_seed<k>.pt checkpoints in {args.checkpoints}")
    for f in files:
        net, meta = load_weights(f, "teacher")
        metrics = _score(net, image, label, args)
        results.setdefault(meta["strategy"], []).append({"seed": meta["seed"], **metrics})
        print(f"{f.name}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
    config = {"eval_only": True, "checkpoints": str(args.checkpoints), "eval_data": str(args.eval_data)}
    config["git"] = git_hash()
    _write_outputs(args.out, results, config)
    print((args.out / "results.md").read_text())
    return 0


def run(args: argparse.Namespace) -> int:
    import torch

    from mtbio.data.sources import load_split
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.experiment import git_hash, save_weights, timed_fit

    torch.set_num_threads(args.threads)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    src = load_split("vnc3", args.data / "vnc3", "all")
    tgt = load_split("lucchi_pp", args.data / "lucchi_pp", "epfl_train")
    image, label = _eval_split(args)
    args.out.mkdir(parents=True, exist_ok=True)
    results = _load_results(args.out / "results.json")
    base = dict(
        block_size=args.block_size,
        tau=args.tau,
        lambda_pl=args.lambda_pl,
        lambda_st=args.lambda_st,
        lambda_cm=args.lambda_cm,
        consistency=args.consistency,
        pl_weighting=args.pl_weighting,
        dice_weight=args.dice_weight,
        pl_dice_weight=args.pl_dice_weight,
        pl_class_balance=args.pl_class_balance,
        rampup_iterations=args.rampup,
        target_bn_stats=args.target_bn_stats == "on",
        alpha=args.alpha,
    )
    config = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "uda": {s: UDAConfig(strategy=s, **base).to_dict() for s in strategies},
        "source": "vnc3/all (4.6 nm)",
        "target_train": "lucchi_pp/epfl_train = Test_In (5 nm)",
        "target_test": "lucchi_pp/epfl_test = Train_In/Train_Out",
        "git": git_hash(),
        "torch": torch.__version__,
    }
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        init_state = None
        for strategy in strategies:
            if any(r["seed"] == seed for r in results.get(strategy, [])):
                print(f"[skip] {strategy} seed {seed}: already in results.json", flush=True)
                continue
            if args.pretrain > 0 and init_state is None:
                init_state = _pretrained(args, src, tgt, seed)
            cfg = UDAConfig(strategy=strategy, **base)
            trainer = _trainer(args, cfg, args.iters, seed, src, tgt, init_state)
            _attach_progress(trainer, strategy, seed, args.log_every)
            sec = timed_fit(trainer)
            meta = {"strategy": strategy, "seed": seed, "network": args.network, "spatial_dims": 2}
            meta["network_kwargs"] = _network_kwargs(args)
            meta["config"] = cfg.to_dict()
            # VNC III 4.6 nm vs Lucchi++ 5 nm in-plane agree within 10 %: trained as given, at the target's grid
            meta.update(voxel_size=_in_plane(tgt.voxel_size), normalization="zscore_section")
            save_weights(trainer, args.out / "checkpoints" / f"{strategy}_seed{seed}.pt", meta)
            t0 = time.perf_counter()
            metrics = _score(trainer.teacher.module, image, label, args)
            row = {"seed": seed, **metrics, "sec_per_iter": sec, "eval_sec": time.perf_counter() - t0}
            results.setdefault(strategy, []).append(row)
            print(f"[done] {strategy} seed {seed}: " + json.dumps(row), flush=True)
            _write_outputs(args.out, results, config)
    _write_outputs(args.out, results, config)
    print((args.out / "results.md").read_text())
    return 0


def _trainer(
    args: argparse.Namespace,
    cfg: Any,
    iterations: int,
    seed: int,
    src: Any,
    tgt: Any,
    init_state: dict[str, Any] | None = None,
) -> Any:
    """The benchmark's :func:`build_trainer` call (crops, batch, network, lr and device from ``args``)."""
    from mtbio.uda.experiment import build_trainer

    return build_trainer(
        config=cfg,
        iterations=iterations,
        source_image=src.image,
        source_label=src.label,
        target_image=tgt.image,
        target_label=tgt.label,
        crop_size=(args.crop, args.crop),
        batch_size=args.batch,
        network=args.network,
        network_kwargs=_network_kwargs(args),
        lr=args.lr,
        seed=seed,
        device=args.device,
        init_state=init_state,
    )


def _pretrained(args: argparse.Namespace, src: Any, tgt: Any, seed: int) -> dict[str, Any]:
    """The source-only network of ``seed`` after ``--pretrain`` iterations (its EMA teacher's weights), trained
    once per seed with crop seed ``PRETRAIN_SEED_OFFSET + seed`` and cached as ``OUT/pretrain/seed<k>.pt``."""

    from mtbio.networks.weights import read_weights
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.experiment import save_weights, timed_fit

    path = args.out / "pretrain" / f"seed{seed}.pt"  # outside checkpoints/, which --eval-only scores
    if path.exists():
        record = read_weights(path)
        if record.extra.get("iterations") == args.pretrain:
            print(f"[pretrain] seed {seed}: reusing {path}", flush=True)
            return record.teacher
    trainer = _trainer(args, UDAConfig(strategy="source_only"), args.pretrain, PRETRAIN_SEED_OFFSET + seed, src, tgt)
    _attach_progress(trainer, "pretrain", seed, args.log_every)
    sec = timed_fit(trainer)
    meta = {"strategy": "source_only", "seed": seed, "network": args.network, "spatial_dims": 2}
    meta.update(network_kwargs=_network_kwargs(args), iterations=args.pretrain, sec_per_iter=sec)
    meta.update(voxel_size=_in_plane(src.voxel_size), normalization="zscore_section")
    save_weights(trainer, path, meta)
    print(f"[pretrain] seed {seed}: {args.pretrain} iterations, {sec:.3f} s/iter", flush=True)
    return {k: v.detach().clone() for k, v in trainer.teacher.module.state_dict().items()}


def _in_plane(voxel_size: Any) -> list[float] | None:
    """The (y, x) voxel size a 2D network is trained at (the weights record's ``voxel_size``)."""
    return None if voxel_size is None else [float(v) for v in voxel_size[-2:]]


def _network_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Constructor overrides of the network: its normalisation layers."""
    return {"norm": ("instance", {"affine": True})} if args.norm == "instance" else {"norm": "batch"}


def _attach_progress(trainer: Any, strategy: str, seed: int, every: int) -> None:
    from ignite.engine import Events

    @trainer.on(Events.ITERATION_COMPLETED(every=max(1, every)))
    def _log(engine: Any) -> None:  # the only host sync of the logs, every `every` iterations
        logs = {k: round(float(v), 4) for k, v in engine.state.output.items()}
        print(f"  {strategy} seed {seed} it {engine.state.iteration}: {logs}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_eval_only(args) if args.eval_only else run(args)


if __name__ == "__main__":
    sys.exit(main())
