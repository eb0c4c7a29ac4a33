"""``mtbio evaluate PRED LABEL``: the literature metrics (per-section mAP, F1, MCC, IoU; 3D Dice / IoU).

PRED is an mtbio prediction store (channel 1 read lazily; an incomplete store is refused) or any volume
``mtbio.data.volumes.open_volume`` reads; LABEL is binarised by ``mtbio.data.labels.open_label_volume``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a prediction against labels (per-section mAP / F1 / MCC / IoU, 3D Dice / IoU)",
        description=(
            "Score a foreground-probability map against a label volume with the DA-ISC / MaskTwins protocol: "
            "per 2D section along axis 0, average precision (mAP) of the probability and F1, MCC, IoU of "
            "prob >= threshold, then the mean over sections; plus whole-volume Dice and IoU. Inputs are read "
            "a block of sections at a time."
        ),
    )
    parser.add_argument("pred", metavar="PRED", help="prediction store (mtbio predict output) or probability volume")
    parser.add_argument("label", metavar="LABEL", help="label volume (binarised with the label rule)")
    parser.add_argument("--key", default=None, help="dataset / array key inside PRED (HDF5, zarr, ...)")
    parser.add_argument("--label-key", default=None, help="dataset / array key inside LABEL")
    parser.add_argument("--threshold", type=float, default=0.5, help="foreground is prob >= THRESHOLD (0.5)")
    parser.add_argument("--per-section", action="store_true", help="also list every section's scores")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--voxel-size",
        type=float,
        nargs="+",
        default=None,
        metavar="NM",
        help="expected voxel size in nm per spatial axis ([Z] Y X); refused when PRED records another one; "
        "reported in the output",
    )
    parser.set_defaults(func=run)


def _open_prediction(path: str, key: str | None) -> tuple[Any, tuple[float, ...] | None]:
    """(lazy probability array, recorded voxel size or None)."""
    from mtbio.data.store import is_prediction_store, open_prediction_store

    if is_prediction_store(path):
        if key is not None:
            raise ValueError(f"{path}: --key does not apply to a prediction store (channel 1 is read)")
        store = open_prediction_store(path, require_complete=True)
        if store.meta.get("activation", "softmax") is None:
            raise ValueError(
                f"{path}: the store holds raw network output (activation None), not probabilities; "
                "predict with a softmax / sigmoid activation to evaluate it"
            )
        return store.foreground(), store.voxel_size
    from mtbio.data.volumes import open_volume

    volume = open_volume(path, key=key)
    voxel_size = getattr(volume, "voxel_size", None)
    return volume, None if voxel_size is None else tuple(float(v) for v in voxel_size)


def _check_voxel_size(given: list[float] | None, recorded: tuple[float, ...] | None, ndim: int, pred: str) -> Any:
    if given is None:
        return None if recorded is None else list(recorded)
    if len(given) != ndim:
        raise ValueError(f"--voxel-size has {len(given)} values, the prediction {pred} has {ndim} spatial axes")
    if recorded is not None and any(abs(a - b) > 1e-6 * max(abs(a), abs(b), 1.0) for a, b in zip(given, recorded)):
        raise ValueError(f"{pred}: records voxel size {list(recorded)} nm, --voxel-size says {given}")
    return [float(v) for v in given]


def _table(result: Any, per_section: bool) -> str:
    from mtbio.metrics.em import SECTION_METRICS

    head = f"{'section':>8}" + "".join(f"{k:>9}" for k in SECTION_METRICS)
    lines = [head]
    if per_section:
        for row in result.rows():
            lines.append(f"{row['section']:>8}" + "".join(f"{row[k]:>9.4f}" for k in SECTION_METRICS))
    mean = result.mean()
    lines.append(f"{'mean':>8}" + "".join(f"{mean[k]:>9.4f}" for k in SECTION_METRICS))
    vol = result.volume()
    lines.append(f"3D (whole volume, prob >= {result.threshold:g}): Dice {vol['Dice']:.4f}  IoU {vol['IoU']:.4f}")
    fg = result.foreground()
    lines.append(
        f"foreground fraction: predicted {fg['foreground']:.4f} (prob >= {result.threshold:g}), "
        f"labelled {fg['foreground_label']:.4f}"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from mtbio.data.labels import foreground_fraction, open_label_volume
    from mtbio.metrics.em import evaluate

    prob, recorded = _open_prediction(args.pred, args.key)
    label = open_label_volume(args.label, key=args.label_key)
    print(f"{args.label}: label foreground fraction {foreground_fraction(label):.4f}", file=sys.stderr)
    voxel_size = _check_voxel_size(args.voxel_size, recorded, len(prob.shape), args.pred)
    result = evaluate(prob, label, threshold=args.threshold, name=str(args.pred), label_name=str(args.label))
    if args.json:
        out: dict[str, Any] = {
            "pred": str(args.pred),
            "label": str(args.label),
            "shape": [int(s) for s in prob.shape],
            "sections": len(result.sections),
            "threshold": result.threshold,
            "voxel_size": voxel_size,
            "mean": result.mean(),
            "volume": result.volume(),
            "foreground": result.foreground(),
        }
        if args.per_section:
            out["per_section"] = result.rows()
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"{args.pred} vs {args.label}: {len(result.sections)} section(s) of {tuple(prob.shape[-2:])}")
        print(_table(result, args.per_section))
    return 0
