"""Teacher ensembling (issue #16's lever): average the foreground probabilities of several EMA teachers of one run.

The EMA teacher already averages the student's weights over the last ~``1 / (1 - alpha)`` iterations; this measures
whether averaging the *predictions* of teachers from different points of the same run (the last checkpoint and the
label-free choice ``selected.pt``, or any files given) adds to it. Inference only: no training, no extra training
cost, one more prediction per member.

For each seed, ``--members`` names the member files by a pattern with ``{seed}`` (one ``--members`` per member); each
is predicted on the first ``--sections`` sections of the split with :func:`mtbio.uda.evaluate.predict_in_memory`
(the benchmarks' in-memory sliding window, the tools' ``--tta`` and ``--planes``), and scored per xy section
(:func:`mtbio.metrics.evaluate`) alone (``member<i>``) and as the mean probability of all members (``ensemble``).
Decide on the design split (``--eval-data DESIGN/lucchi_pp``, docs/uda.md "Quality levers").

Example (the default recipe's MaskTwins runs: last checkpoint and label-free choice)::

    python benchmarks/teacher_ensemble.py --eval-data DESIGN/lucchi_pp --seeds 0,1,2 --planes xy \\
        --members 'RUNS{seed}/checkpoints/masktwins_seed{seed}.pt' \\
        --members 'RUNS{seed}/runs/masktwins_seed{seed}/selected.pt' --out OUT

Writes ``OUT/results.json`` ({row: [{"seed", "mAP", "F1", "MCC", "IoU", "foreground", ...}]}, updated after every
seed so a stopped run resumes), ``OUT/results.md`` (mean ± sample std per row) and ``OUT/config.json``.
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from _common import add_planes_argument, add_tta_argument

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--eval-data", type=Path, required=True, help="a Lucchi++ folder (release layout)")
    p.add_argument("--split", default="epfl_test", help="the mtbio.data.sources split scored (default %(default)s)")
    p.add_argument("--sections", type=int, default=40, help="predict and score the first N sections (default 40)")
    p.add_argument("--eval-roi", type=int, default=384, help="sliding-window size (default 384)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds filled into the member patterns")
    p.add_argument(
        "--members", action="append", required=True,
        help="a member's weights file, '{seed}' replaced by each seed (give it once per member, at least twice)",
    )  # fmt: skip
    add_tta_argument(p, "of every member's prediction (default: the tools', %(default)s)")
    add_planes_argument(p, "every member predicts along (default: the tools', %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if len(args.members) < 2:
        p.error("give --members at least twice (an ensemble of one is the member itself)")
    args.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    return args


def score_members(
    predict: Callable[[Path], np.ndarray], files: Sequence[Path], label: np.ndarray
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Metrics of each member (``member<i>``) and of their mean probability (``ensemble``) on ``label``, and the
    seconds of each member's prediction."""
    from mtbio.metrics import evaluate

    def metrics(prob: np.ndarray) -> dict[str, float]:
        ev = evaluate(prob, label)
        return {k: float(v) for k, v in {**ev.mean(), **ev.foreground()}.items()}

    out: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    total: np.ndarray | None = None
    for i, f in enumerate(files):
        t0 = time.perf_counter()
        prob = predict(f)
        seconds[f"member{i}"] = time.perf_counter() - t0
        out[f"member{i}"] = metrics(prob)
        total = prob.astype(np.float64) if total is None else total + prob
    assert total is not None
    out["ensemble"] = metrics((total / len(files)).astype(np.float32))
    return out, seconds


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from _common import labelled_sections, summarize

    from mtbio.provenance import git_hash, write_json_atomic
    from mtbio.uda.evaluate import predict_in_memory
    from mtbio.uda.experiment import load_weights

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    split, image, label = labelled_sections(args.eval_data, args.split, args.sections)
    res_path = args.out / "results.json"
    results: dict[str, list[dict[str, Any]]] = json.loads(res_path.read_text()) if res_path.is_file() else {}
    done = {r["seed"] for r in results.get("ensemble", [])}
    config = {"args": {k: str(v) for k, v in vars(args).items()}, "shape": list(image.shape), "git": git_hash()}
    write_json_atomic(args.out / "config.json", config)

    def predict(path: Path) -> np.ndarray:
        net, _ = load_weights(path, "teacher")
        return predict_in_memory(
            net, image, roi_size=(args.eval_roi, args.eval_roi), tta=args.tta, planes=args.planes,
            voxel_size=split.voxel_size, device="cpu",
        )  # fmt: skip

    for seed in args.seeds:
        if seed in done:
            print(f"seed {seed}: scored already", flush=True)
            continue
        files = [Path(m.format(seed=seed)) for m in args.members]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"seed {seed}: no weights file {', '.join(missing)}")
        scored, seconds = score_members(predict, files, label)
        for name, m in scored.items():
            row = {"seed": seed, **m}
            if name != "ensemble":
                row["file"] = str(files[int(name.removeprefix("member"))])
                row["seconds"] = seconds[name]
            results.setdefault(name, []).append(row)
            print(f"seed {seed} {name}: IoU {m['IoU']:.4f} mAP {m['mAP']:.4f} fg {m['foreground']:.4f}", flush=True)
        write_json_atomic(res_path, results)
    md = summarize({k: [{m: r[m] for m in r if m not in ("file",)} for r in v] for k, v in results.items()})
    (args.out / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
