"""The ``mtbio`` command line: ``mtbio synth | train | adapt | predict | evaluate | score | measure | export | demo``.

Each sub-command lives in its own module of this package with ``register(subparsers)``; a module imports
its heavy dependencies inside its handler so ``mtbio --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mtbio.errors import USER_ERRORS

#: sub-command modules, in the order ``mtbio --help`` lists them
COMMANDS = ("synth", "train", "adapt", "predict", "evaluate", "score", "measure", "export", "demo")


def build_parser() -> argparse.ArgumentParser:
    from mtbio import __version__

    parser = argparse.ArgumentParser(
        prog="mtbio", description="MaskTwins unsupervised domain adaptation for EM mitochondria segmentation."
    )
    parser.add_argument("--version", action="version", version=f"mtbio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"mtbio.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"mtbio.cli.{name}":
                raise
            continue  # sub-command not built yet
        module.register(sub)
    return parser


#: sub-commands whose work overlaps reader / writer threads with the network on the CPU
PASSIVE_OMP_COMMANDS = ("predict",)


def prefer_passive_omp(command: str | None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` for the streaming sub-commands, unless the user set it or torch (and so
    OpenMP) is already loaded; returns whether it was set.

    Spinning OpenMP workers (the default, ``ACTIVE``) hold both cores of a small CPU between network batches and
    starve the prediction's input/output threads. Measured with ``benchmarks/inference.py --repeats 3`` on the
    2-core machine: streaming zarr -> zarr took 0.82 -> 0.79 s (tiny anchor) and 0.54 -> 0.48 s (small_unet)
    with ``PASSIVE`` (docs/inference.md).
    """
    import os

    if command not in PASSIVE_OMP_COMMANDS or "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prefer_passive_omp(args.command)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # e.g. for a "resume with: ..." hint
    try:
        result = args.func(args)
    except USER_ERRORS as err:
        # the user's input or environment (mtbio.errors): one clear line, no traceback (MTBIO_DEBUG=1 shows it);
        # anything else is a defect and keeps its traceback
        import os

        if os.environ.get("MTBIO_DEBUG"):
            raise
        print(f"mtbio {args.command}: error: {err}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
