"""The data of ``paper_protocol.py``: VNC III -> Lucchi++ subset 1 in memory, or the tiny synthetic domains."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

__all__ = ["load_data"]


def load_data(args: argparse.Namespace) -> SimpleNamespace:
    """Source, target and test volumes (in memory) with their voxel sizes and descriptions."""
    from mtbio.bundle.data import em2d_pair

    if args.tiny:
        return _tiny_data()
    pair = em2d_pair(args.data, direction="vnc3_to_lucchi", subset=1)
    if args.eval_data != args.data / "lucchi_pp":
        from mtbio.data.sources import load_split

        test = load_split("lucchi_pp", args.eval_data, "epfl_test")
        pair.test_image, pair.test_label = test.image, test.label
    names = (
        "vnc3/all (4.6 nm)",
        "lucchi_pp/epfl_train = Test_In (5 nm, unlabelled)",
        f"lucchi_pp/epfl_test = Train_In/Train_Out ({args.eval_data})",
    )
    n = pair.test_image.shape[0] if args.eval_sections is None else min(args.eval_sections, pair.test_image.shape[0])
    vs = pair.voxel_size or {}
    return SimpleNamespace(  # read once: every run_training call of the job trains on the same arrays
        source_image=np.asarray(pair.source_image[:]),
        source_label=np.asarray(pair.source_label[:]),
        target_image=np.asarray(pair.target_image[:]),
        test_image=np.asarray(pair.test_image[:n]),
        test_label=np.asarray(pair.test_label[:n]) > 0,
        source_voxel_size=vs.get("source"),
        target_voxel_size=vs.get("target"),
        names=names,
        sections={"source": pair.source_image.shape[0], "target": pair.target_image.shape[0], "test": n},
        pack=_pack_record(args.data),
    )


def _tiny_data(shape: tuple[int, int, int] = (8, 96, 96)) -> SimpleNamespace:
    """The synthetic source / target / held-out target domains (``mtbio.data.synthetic``), rendered in memory."""
    from mtbio.data.synthetic import SOURCE, TARGET, synthesize
    from mtbio.data.synthetic.io import TEST_SEED_OFFSET

    source, source_label = synthesize(SOURCE, shape, 0)
    target, _ = synthesize(TARGET, shape, 1)
    test, test_label = synthesize(TARGET, shape, TEST_SEED_OFFSET)
    return SimpleNamespace(
        source_image=source,
        source_label=source_label,
        target_image=target,
        test_image=test,
        test_label=np.asarray(test_label) > 0,
        source_voxel_size=SOURCE.voxel_size_nm,
        target_voxel_size=TARGET.voxel_size_nm,
        names=(f"synthetic source {shape}", f"synthetic target {shape}", f"synthetic held-out target {shape}"),
        sections={"source": shape[0], "target": shape[0], "test": shape[0]},
        pack=None,
    )


def _pack_record(data: Path) -> dict[str, Any] | None:
    """``DATA/PACK.json`` (what ``scripts/gpu_prepare.py`` packed for a device machine), when there is one."""
    path = data / "PACK.json"
    return json.loads(path.read_text()) if path.is_file() else None
