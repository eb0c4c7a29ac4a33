"""A seeded short synthetic source -> target run: MaskTwins beats source-only on target IoU for every seed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

ITERATIONS = 400


@pytest.mark.slow
def test_masktwins_improves_target_iou_over_source_only(tmp_path: Path):
    import torch

    from mtbio.data.labels import open_label_volume
    from mtbio.data.synthetic import TARGET, generate_synthetic
    from mtbio.data.volumes import open_volume
    from mtbio.uda.config import DEMO_UDA
    from mtbio.uda.evaluate import evaluate_network
    from mtbio.uda.experiment import build_trainer

    torch.set_num_threads(2)
    # the product's default domains with their own UDA step as shipped (DEMO_UDA: UDAConfig's defaults, ramp-up over
    # half of the run, but no class-prior calibration of the pseudo-labels, which costs IoU on these domains)
    paths = generate_synthetic(tmp_path / "synth", seed=0, shape=(16, 128, 128), target=TARGET, progress=False)
    src = np.asarray(open_volume(paths["source"], "raw")[:])
    src_lab = np.asarray(open_label_volume(paths["source"], "label")[:])
    tgt = np.asarray(open_volume(paths["target"], "raw")[:])
    test = np.asarray(open_volume(paths["target_test"], "raw")[:])
    test_lab = np.asarray(open_label_volume(paths["target_test_labels"], "label")[:])

    def target_iou(strategy: str, seed: int) -> float:
        trainer = build_trainer(
            config=dataclasses.replace(DEMO_UDA, strategy=strategy, block_size=24),
            iterations=ITERATIONS,
            source_image=src,
            source_label=src_lab,
            target_image=tgt,
            crop_size=(96, 96),
            batch_size=4,
            network="small_unet",
            seed=seed,
        )
        trainer.fit()
        return evaluate_network(trainer.teacher.module, test, test_lab, roi_size=(128, 128))["IoU"]

    gains = {}
    for seed in range(3):
        gains[seed] = target_iou("masktwins", seed) - target_iou("source_only", seed)
    print("MaskTwins - source-only target IoU per seed:", gains)
    assert all(g >= 0.03 for g in gains.values()), gains
