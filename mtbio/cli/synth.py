"""``mtbio synth OUT``: generate the built-in synthetic source / target EM domains."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="generate synthetic EM source/target volumes with mitochondria labels",
        description=(
            "Generate a labelled source volume (ssTEM-like, anisotropic), an unlabelled target volume "
            "(FIB-SEM-like, isotropic) with its evaluation labels, and a held-out target test volume, as "
            "zarr groups under OUT (see docs/synthetic.md)."
        ),
    )
    parser.add_argument("out", metavar="OUT", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")
    parser.add_argument(
        "--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=(32, 256, 256), help="volume shape"
    )
    parser.add_argument("--target-style", choices=("target", "target_hard"), default="target", help="target preset")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from mtbio.data.synthetic import PRESETS, SOURCE
    from mtbio.data.synthetic.io import generate_synthetic

    start = time.perf_counter()
    paths = generate_synthetic(
        args.out,
        seed=args.seed,
        shape=tuple(args.shape),
        source=SOURCE,
        target=PRESETS[args.target_style],
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    elapsed = time.perf_counter() - start
    print(f"synthetic data (seed {args.seed}, shape {tuple(args.shape)}) in {args.out} ({elapsed:.1f} s):")
    for name, path in paths.items():
        print(f"  {name:20s} {path}")
    return 0
