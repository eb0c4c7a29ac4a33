"""benchmarks/teacher_ensemble.py: members scored alone and as their mean probability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtbio.metrics import evaluate
from tests._scripts import load_benchmark

ens = load_benchmark("teacher_ensemble")


def test_score_members_scores_each_member_and_the_mean_probability():
    rng = np.random.default_rng(0)
    label = rng.random((4, 24, 24)) > 0.7
    # two noisy members whose errors differ: their mean ranks the labelled pixels better than either
    probs = {
        Path(f"m{i}.pt"): np.clip(label * 0.6 + rng.random(label.shape) * 0.7, 0, 1).astype(np.float32)
        for i in range(2)
    }
    seen: list[Path] = []

    def predict(path: Path) -> np.ndarray:
        seen.append(path)
        return probs[path]

    scored, seconds = ens.score_members(predict, list(probs), label)
    assert seen == list(probs) and set(seconds) == {"member0", "member1"}
    for i, p in enumerate(probs.values()):
        assert scored[f"member{i}"]["IoU"] == pytest.approx(evaluate(p, label).mean()["IoU"])
    mean = (probs[Path("m0.pt")].astype(np.float64) + probs[Path("m1.pt")]) / 2
    assert scored["ensemble"]["mAP"] == pytest.approx(evaluate(mean.astype(np.float32), label).mean()["mAP"])
    assert scored["ensemble"]["mAP"] > max(scored["member0"]["mAP"], scored["member1"]["mAP"])


def test_parse_args_needs_two_members_and_reads_seeds(capsys):
    base = ["--eval-data", "d", "--out", "o"]
    args = ens.parse_args([*base, "--members", "a{seed}", "--members", "b", "--seeds", "1,3"])
    assert args.seeds == [1, 3] and args.members == ["a{seed}", "b"]
    with pytest.raises(SystemExit):
        ens.parse_args([*base, "--members", "a"])
    assert "at least twice" in capsys.readouterr().err


def test_labelled_sections_reads_the_first_sections_as_float_and_bool(monkeypatch):
    import types

    from _common import labelled_sections

    import mtbio.data.sources as sources

    seen = []
    raw = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    lab = (raw % 3 == 0).astype(np.uint8) * 255

    def fake(kind, folder, split):
        seen.append((kind, folder, split))
        return types.SimpleNamespace(image=raw, label=lab, voxel_size=(5.0, 5.0, 5.0))

    monkeypatch.setattr(sources, "load_split", fake)
    split, image, label = labelled_sections("DATA", "epfl_test", 3)
    assert seen == [("lucchi_pp", "DATA", "epfl_test")] and split.voxel_size == (5.0, 5.0, 5.0)
    assert image.dtype == np.float32 and image.shape == (3, 4, 4) and np.array_equal(image, raw[:3])
    assert label.dtype == bool and np.array_equal(label, lab[:3] > 0)
