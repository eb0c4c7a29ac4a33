"""The README's "Measure mitochondria" figure: a histogram of object volumes from ``mtbio measure``.

Usage (from the repository root)::

    .venv/bin/python scripts/measure_figure.py                      # synthetic target labels as the store
    .venv/bin/python scripts/measure_figure.py --store bundles/masktwins_demo/runs/predictions/masktwins.zarr

Without ``--store`` it renders the synthetic FIB-SEM-like target (``mtbio.data.synthetic``, the demo's target
style) and writes its ground-truth labels as a prediction store (probability 1 inside mitochondria, 0 outside),
so no training is needed; the caption must say so. The table goes next to the figure's work folder, the PNG to
``--png`` (default ``docs/images/measure_volumes.png``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def synthetic_store(folder: Path, shape: tuple[int, int, int], seed: int) -> Path:
    """A prediction store holding the synthetic target's labels as probabilities (uint8: 255 inside, 0 outside)."""
    from mtbio.data.store import create_prediction_store, mark_complete
    from mtbio.data.synthetic.domains import TARGET
    from mtbio.data.synthetic.render import synthesize

    _, label = synthesize(TARGET, shape, seed)
    fg = (label > 0).astype(np.uint8) * np.uint8(255)
    path = folder / "target_labels.pred.zarr"
    store = create_prediction_store(path, shape, dtype="uint8", voxel_size=TARGET.voxel_size_nm)
    store.array[0] = 255 - fg
    store.array[1] = fg
    mark_complete(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None, help="a prediction store (default: synthetic labels)")
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 512, 512], help="synthetic volume (Z Y X)")
    parser.add_argument("--seed", type=int, default=1, help="synthetic seed (1 = the demo's unlabelled target)")
    parser.add_argument("--split", choices=("none", "watershed"), default="none")
    parser.add_argument("--png", type=Path, default=Path("docs/images/measure_volumes.png"))
    args = parser.parse_args()

    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtbio.cli import main as mtbio

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = args.store or synthetic_store(folder, tuple(args.shape), args.seed)
        table = folder / "objects.csv"
        argv = ["measure", str(store), str(table), "--split", args.split, "--json"]
        print("mtbio " + " ".join(argv))
        if mtbio(argv) != 0:
            raise SystemExit("mtbio measure failed")
        data = np.genfromtxt(table, delimiter=",", names=True, dtype=None, encoding="utf-8")
    volumes = np.atleast_1d(data["volume_nm3"]) / 1e9  # um^3
    inside = np.atleast_1d(data["touches_border"]).astype(str) != "True"
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=120)
    bins = np.logspace(np.log10(max(volumes.min(), 1e-5)), np.log10(volumes.max()), 25)
    ax.hist([volumes[inside], volumes[~inside]], bins=bins, stacked=True, label=["inside", "touches the border"])
    ax.set_xscale("log")
    ax.set_xlabel("object volume (µm³)")
    ax.set_ylabel("objects")
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    what = "synthetic target labels" if args.store is None else str(args.store)
    ax.set_title(f"mtbio measure: {len(volumes)} objects ({what})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png)
    summary = {
        "objects": int(len(volumes)),
        "touching_border": int((~inside).sum()),
        "total_um3": float(volumes.sum()),
        "median_um3": float(np.median(volumes)),
        "png": str(args.png),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
