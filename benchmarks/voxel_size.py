"""Voxel-size check on real data: a Lucchi++ model (5 nm) applied to a 2x in-plane downsampled stack (10 nm).

1. trains a source-only 2D network on Lucchi++ ``Test_*`` (the EPFL training volume, 5 nm) with ``mtbio train``
   (skipped when ``OUT/train/final.pt`` exists); the weights record ``voxel_size`` (5, 5);
2. writes ``Train_In`` (the 40 EPFL test sections) downsampled 2x in-plane (anti-aliased, the lazy
   :class:`mtbio.data.resample.ResampledVolume`) as a zarr array with ``attrs["voxel_size"] = [5, 10, 10]``;
3. predicts with ``mtbio predict``: the native stack (``--voxel-size 5 5 5``: a PNG folder carries none), the
   10 nm stack with resampling (the default) and with ``--no-resample``;
4. scores each against the native ``Train_Out`` labels with the literature metrics (per section, mean over
   sections): the 10 nm predictions are first resampled back to the native 5 nm grid (linear interpolation).

Writes ``OUT/voxel_size.json`` / ``.md`` (and, with ``--results``, the same into that folder).

Example::

    python benchmarks/voxel_size.py --data ../shared/data/lucchi_pp --out runs/voxel_size --results benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the Lucchi++ release folder (Test_In, Train_In, ...)")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--results", type=Path, help="also write voxel_size.{json,md} here (e.g. benchmarks/results)")
    p.add_argument("--network", default="unet")
    p.add_argument("--iters", type=int, default=600)
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--roi", type=int, default=256, help="inference window (square)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    from mtbio.cli import main as cli
    from mtbio.data.labels import open_label_volume
    from mtbio.data.resample import ResampledVolume
    from mtbio.data.store import open_prediction_store
    from mtbio.data.volumes import open_volume
    from mtbio.metrics import em_metrics

    torch.set_num_threads(args.threads)
    data, out = args.data, args.out
    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    weights = out / "train" / "final.pt"
    if not weights.is_file():
        t0 = time.perf_counter()
        code = cli(
            [
                "train",
                "--strategy",
                "source_only",
                "--network",
                args.network,
                "--iters",
                str(args.iters),
                "--crop",
                str(args.crop),
                "--source",
                str(data / "Test_In"),
                "--source-label",
                str(data / "Test_Out"),
                "--source-voxel-size",
                "5",
                "5",
                "5",
                "--out",
                str(out / "train"),
                "--threads",
                str(args.threads),
                "--log-every",
                "100",
            ]
        )
        if code != 0:
            return code
        timing["train_s"] = time.perf_counter() - t0
    native = open_volume(data / "Train_In")
    labels = open_label_volume(data / "Train_Out")
    down_path = out / "train_in_10nm.zarr"
    if not down_path.exists():
        import zarr

        down = ResampledVolume(native, (1.0, 0.5, 0.5))
        arr = zarr.open_array(str(down_path), mode="w", shape=down.shape, dtype="uint8", chunks=(8, *down.shape[1:]))
        for z in range(down.shape[0]):
            arr[z] = np.clip(np.rint(down[z]), 0, 255).astype(np.uint8)
        arr.attrs["voxel_size"] = [5.0, 10.0, 10.0]

    common = [
        "--network",
        args.network,
        "--checkpoint",
        str(weights),
        "--roi",
        str(args.roi),
        str(args.roi),
        "--overwrite",
    ]
    runs = {
        "native 5 nm": [str(data / "Train_In"), str(out / "native.zarr"), "--voxel-size", "5", "5", "5"],
        "10 nm, resampled to 5 nm and back": [str(down_path), str(out / "down_resampled.zarr")],
        "10 nm, --no-resample": [str(down_path), str(out / "down_plain.zarr"), "--no-resample"],
    }
    rows: dict[str, dict[str, Any]] = {}
    for name, spec in runs.items():
        t0 = time.perf_counter()
        if cli(["predict", *spec, *common]) != 0:
            return 1
        seconds = time.perf_counter() - t0
        store = open_prediction_store(spec[1])
        prob = store.probability()  # (Z, Y, X) float foreground probability
        if tuple(store.spatial_shape) != tuple(native.shape):  # the 10 nm grid: back to the labels' 5 nm grid
            prob = ResampledVolume(prob, (1.0, 2.0, 2.0), shape=native.shape)[...]
        scores = em_metrics(prob, labels)
        rows[name] = {
            **{k: float(v) for k, v in scores.items()},
            "predict_s": seconds,
            "store_voxel_size": list(store.voxel_size or []),
            "resampled": store.meta.get("resampled"),
        }
        print(f"{name}: IoU {scores['IoU']:.4f}", flush=True)

    ref = rows["native 5 nm"]["IoU"]
    lines = [
        f"Lucchi++ `Train_*` ({labels.shape[0]} sections), source-only `{args.network}` trained on `Test_*` at 5 nm "
        f"({args.iters} iterations, crop {args.crop}); 10 nm predictions scored after linear resampling back to "
        "5 nm against the native labels (per-section metrics, mean over sections, %).",
        "",
        "| input | mAP | F1 | MCC | IoU | IoU - native | predict (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {100 * r['mAP']:.1f} | {100 * r['F1']:.1f} | {100 * r['MCC']:.1f} | {100 * r['IoU']:.1f} | "
            f"{100 * (r['IoU'] - ref):+.1f} | {r['predict_s']:.0f} |"
        )
    load = os.getloadavg()
    lines += [
        "",
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} "
        f"/ {load[2]:.1f} (1 / 5 / 15 min) at the end; torch threads {args.threads}",
    ]
    text = "\n".join(lines) + "\n"
    result = {
        "rows": rows,
        "within_2_iou_points": abs(rows["10 nm, resampled to 5 nm and back"]["IoU"] - ref) <= 0.02,
        "args": {k: str(v) for k, v in vars(args).items()},
        "timing": timing,
        "loadavg": load,
        "argv": sys.argv,
    }
    print(text)
    for folder in {out, args.results} - {None}:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "voxel_size.json").write_text(json.dumps(result, indent=2))
        (folder / "voxel_size.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
