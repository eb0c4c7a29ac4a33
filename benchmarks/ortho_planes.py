"""Ortho-plane consensus for isotropic targets (issue #16's lever): a 2D network predicts the volume along xy, xz and
yz, and the three probabilities are averaged.

Lucchi++ is FIB-SEM at 5 nm in every axis, so its xz and yz planes look like its xy sections to a 2D network; three
views of every voxel from three planes may agree better than one. This script measures it on saved weights (no
training): for each ``<strategy>_seed<k>.pt`` in ``--checkpoints`` (the EMA teacher), the first ``--sections``
sections of the split are predicted along each plane with :func:`mtbio.uda.evaluate.predict_in_memory` (the
benchmarks' in-memory sliding window, z-score per plane image as training, ``--eval-roi`` windows capped at each
plane's size rounded up to 16), with and without the tools' ``flips`` test-time augmentation, and scored per **xy**
section (the literature's protocol, :func:`mtbio.metrics.evaluate`):

* ``xy_none`` / ``xy_flips``: what ``benchmarks/uda_em2d.py`` scores with ``--tta none`` / ``flips``;
* ``xz_flips`` / ``yz_flips``: one other plane alone (flips);
* ``xyz_none`` / ``xyz_flips``: the mean probability of the three planes (3 / 12 forward passes per voxel against
  ``xy_flips``' 4);
* ``xyz_flips_fgxy``: a label-free calibration of ``xyz_flips``: its threshold moved (:func:`match_foreground`, a
  shift of the logit, so mAP is unchanged) so that it predicts the foreground fraction of ``xy_flips`` at 0.5 over
  the predicted volume (the consensus ranks voxels, the xy prediction sets how many are foreground);
* ``xyz_flips_logit``: the three planes' (flip-averaged) probabilities averaged as log-odds instead of as
  probabilities (``sigmoid(mean(logit(p)))``: a plane that is sure outweighs two that lean the other way); the
  tools' rule since 2026-12-06 (:class:`mtbio.inference.planes.OrthoPlanes`), so also the ``xyz_d<depth>`` rows'.

``--window-depths 48,96,176`` adds ``xyz_d<depth>`` rows: the tools' way (``InferenceSettings.planes = "xyz"``,
:class:`mtbio.inference.planes.OrthoPlanes` on 3D windows ``(depth, roi, roi)``, z-scored per xy section, no TTA)
with that window depth (the tools take :func:`mtbio.inference.planes.plane_window`: as deep as the window is wide,
capped at the volume).

``--sections`` sets the depth the xz / yz planes see: the final table's Lucchi++ test volume here has 40 sections
(200 nm, about one mitochondrion's diameter), the EPFL training volume 165. Decide on the design split
(``--eval-data DESIGN/lucchi_pp``, docs/uda.md "Quality levers"), not on the test sections.

Example::

    python benchmarks/ortho_planes.py --checkpoints CK --eval-data DESIGN/lucchi_pp --sections 40 --out OUT
    python benchmarks/ortho_planes.py --checkpoints CK --eval-data DESIGN/lucchi_pp --sections 165 --score-sections 40 \
        --window-depths 48,96,176 --depths-only --out OUT_DEPTHS     # window depth on the whole volume

Writes ``OUT/results.json`` ({variant: [{"seed", "mAP", "F1", "MCC", "IoU", "foreground", ...}]}, updated after every
checkpoint so a stopped run resumes), ``OUT/results.md`` (mean ± sample std per variant), ``OUT/config.json`` and
``OUT/timing.json`` (seconds per plane and pass).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: each plane as the axis order that puts it last (a (Z, Y, X) volume transposed so the plane is (rows, columns))
PLANES: dict[str, tuple[int, int, int]] = {"xy": (0, 1, 2), "xz": (1, 0, 2), "yz": (2, 0, 1)}
#: the scored variants: (planes averaged, tta)
VARIANTS: dict[str, tuple[tuple[str, ...], str]] = {
    "xy_none": (("xy",), "none"),
    "xy_flips": (("xy",), "flips"),
    "xz_flips": (("xz",), "flips"),
    "yz_flips": (("yz",), "flips"),
    "xyz_none": (("xy", "xz", "yz"), "none"),
    "xyz_flips": (("xy", "xz", "yz"), "flips"),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", type=Path, required=True, help="folder of <strategy>_seed<k>.pt weights records")
    p.add_argument("--eval-data", type=Path, required=True, help="a Lucchi++ folder (release layout)")
    p.add_argument("--split", default="epfl_test", help="the mtbio.data.sources split scored (default %(default)s)")
    p.add_argument("--sections", type=int, default=40, help="predict and score the first N sections (default 40)")
    p.add_argument("--eval-roi", type=int, default=384, help="sliding-window size (capped per plane)")
    p.add_argument(
        "--score-sections", type=int, default=None, help="score only the first N predicted sections (default: all)"
    )
    p.add_argument("--depths-only", action="store_true", help="only the --window-depths rows (no plane variants)")
    p.add_argument(
        "--window-depths", default="", help="comma-separated 3D window depths of extra xyz_d<depth> rows (tools' path)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.sections < 1:
        p.error("--sections must be >= 1")
    try:
        args.window_depths = [int(d) for d in args.window_depths.split(",") if d.strip()]
    except ValueError:
        p.error(f"--window-depths takes comma-separated integers, got {args.window_depths!r}")
    return args


def plane_roi(shape: Sequence[int], roi: int, multiple: int = 16) -> tuple[int, int]:
    """The window for a plane of ``shape`` (rows, columns): ``roi`` capped at each size rounded up to ``multiple``
    (a 40-row xz plane takes 48-row windows, not 384 rows mostly of padding)."""
    return tuple(min(int(roi), -(-int(s) // multiple) * multiple) for s in shape[-2:])  # type: ignore[return-value]


def predict_plane(predict: Callable[..., np.ndarray], volume: np.ndarray, plane: str, roi: int, tta: str) -> np.ndarray:
    """Foreground probability of a (Z, Y, X) ``volume`` predicted image by image along ``plane`` (``xy``, ``xz``,
    ``yz``) by ``predict(volume, roi_size=..., tta=...)`` (:func:`mtbio.uda.evaluate.predict_in_memory` with its
    network bound), returned in (Z, Y, X) order."""
    order = PLANES[plane]
    view = np.ascontiguousarray(np.transpose(volume, order))
    prob = predict(view, roi_size=plane_roi(view.shape, roi), tta=tta)
    return np.ascontiguousarray(np.transpose(prob, np.argsort(order)))


def score_variants(
    predict: Callable[..., np.ndarray],
    image: np.ndarray,
    label: np.ndarray,
    roi: int,
    timing: dict[str, float],
    scored: slice = slice(None),
) -> dict[str, dict[str, float]]:
    """Every :data:`VARIANTS` entry's metrics on ``label`` (per xy section, the sections ``scored`` of the prediction);
    ``timing`` gets seconds per ``<plane>_<tta>`` prediction."""
    from mtbio.metrics import evaluate

    probs: dict[tuple[str, str], np.ndarray] = {}
    for plane in PLANES:
        for tta in ("none", "flips"):
            t0 = time.perf_counter()
            probs[plane, tta] = predict_plane(predict, image, plane, roi, tta)
            timing[f"{plane}_{tta}"] = time.perf_counter() - t0
    out: dict[str, dict[str, float]] = {}
    means: dict[str, np.ndarray] = {}
    for name, (planes, tta) in VARIANTS.items():
        prob = means[name] = np.mean([probs[p, tta] for p in planes], axis=0)
        ev = evaluate(prob[scored], label[scored])
        out[name] = {k: float(v) for k, v in {**ev.mean(), **ev.foreground()}.items()}
    xy_fraction = float(np.mean(means["xy_flips"] >= 0.5))  # over the predicted volume: no label read
    ev = evaluate(match_foreground(means["xyz_flips"], xy_fraction)[scored], label[scored])
    out["xyz_flips_fgxy"] = {k: float(v) for k, v in {**ev.mean(), **ev.foreground()}.items()}
    ev = evaluate(logit_mean([probs[p, "flips"] for p in PLANES])[scored], label[scored])
    out["xyz_flips_logit"] = {k: float(v) for k, v in {**ev.mean(), **ev.foreground()}.items()}
    return out


def logit_mean(probs: Sequence[np.ndarray]) -> np.ndarray:
    """``sigmoid(mean(logit(p)))`` over ``probs`` (probabilities clipped to [1e-6, 1 - 1e-6])."""
    eps = 1e-6
    z = np.mean([np.log(np.clip(p, eps, 1 - eps)) - np.log(np.clip(1 - p, eps, 1 - eps)) for p in probs], axis=0)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def match_foreground(prob: np.ndarray, fraction: float) -> np.ndarray:
    """``prob`` with its logit shifted so that ``prob >= 0.5`` holds on ``fraction`` of the voxels (up to ties): the
    threshold ``t`` is the ``1 - fraction`` quantile of ``prob`` and the result ``sigmoid(logit(p) - logit(t))``, a
    monotone map (the ranking, hence average precision, is unchanged)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    eps = 1e-6
    p = np.clip(prob.astype(np.float64), eps, 1 - eps)
    t = float(np.clip(np.quantile(p, 1.0 - fraction), eps, 1 - eps))
    shift = np.log(t / (1 - t))
    return (1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) - shift)))).astype(np.float32)


def predict_windows(net: Any, image: np.ndarray, roi: int, depth: int) -> np.ndarray:
    """Foreground probability of ``image`` (Z, Y, X) the tools' ``xyz`` way with 3D windows ``(depth, roi, roi)``:
    z-scored per xy section, :class:`mtbio.inference.planes.OrthoPlanes` in MONAI's sliding window (overlap 0.25,
    gaussian), no TTA."""
    import torch
    from monai.inferers import sliding_window_inference

    from mtbio.data.normalize import image_stats, zscore
    from mtbio.inference.planes import OrthoPlanes

    mean, std = image_stats(image, 2)
    x = torch.from_numpy(zscore(image, mean[:, None, None], std[:, None, None]))[None, None]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            logits = sliding_window_inference(
                x, (depth, roi, roi), 1, OrthoPlanes(net, "softmax"), overlap=0.25, mode="gaussian"
            )
    finally:
        net.train(was_training)
    return torch.softmax(logits, dim=1)[0, 1].numpy()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from _common import labelled_sections, summarize

    from mtbio.provenance import git_hash, write_json_atomic
    from mtbio.uda.evaluate import predict_in_memory
    from mtbio.uda.experiment import load_weights

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    _, image, label = labelled_sections(args.eval_data, args.split, args.sections)
    scored_z = slice(0, args.score_sections)  # the first N predicted sections are scored (all by default)
    files = sorted(args.checkpoints.glob("*_seed*.pt"))
    if not files:
        raise FileNotFoundError(f"no <strategy>_seed<k>.pt weights in {args.checkpoints}")
    res_path, timing_path = args.out / "results.json", args.out / "timing.json"
    results: dict[str, list[dict[str, Any]]] = json.loads(res_path.read_text()) if res_path.is_file() else {}
    timings: dict[str, dict[str, float]] = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    config = {"args": {k: str(v) for k, v in vars(args).items()}, "shape": list(image.shape), "git": git_hash()}
    write_json_atomic(args.out / "config.json", config)
    for f in files:
        if f.name in timings:
            print(f"{f.name}: scored already", flush=True)
            continue
        net, meta = load_weights(f, "teacher")

        def predict(volume: np.ndarray, **kw: Any) -> np.ndarray:
            return predict_in_memory(net, volume, device="cpu", **kw)  # noqa: B023 (called before net changes)

        timing: dict[str, float] = {}
        scored = {} if args.depths_only else score_variants(predict, image, label, args.eval_roi, timing, scored_z)
        for depth in args.window_depths:
            from mtbio.metrics import evaluate

            t0 = time.perf_counter()
            ev = evaluate(predict_windows(net, image, args.eval_roi, depth)[scored_z], label[scored_z])
            timing[f"xyz_d{depth}"] = time.perf_counter() - t0
            scored[f"xyz_d{depth}"] = {k: float(v) for k, v in {**ev.mean(), **ev.foreground()}.items()}
        for name, metrics in scored.items():
            results.setdefault(name, []).append({"seed": meta["seed"], "checkpoint": f.name, **metrics})
            print(f"{f.name} {name}: IoU {metrics['IoU']:.4f} mAP {metrics['mAP']:.4f}", flush=True)
        timings[f.name] = timing
        print(f"{f.name} seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timing.items()), flush=True)
        write_json_atomic(res_path, results)
        write_json_atomic(timing_path, timings)
    md = summarize({k: [{m: r[m] for m in r if m not in ("checkpoint",)} for r in v] for k, v in results.items()})
    (args.out / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
