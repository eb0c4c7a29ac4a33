"""The ignite/MONAI trainer: one backward per iteration, handlers, exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtbio.data.sampling import SOURCE_STREAM, TARGET_STREAM, CropSampler
from mtbio.networks import get_network
from mtbio.uda.config import UDAConfig
from mtbio.uda.trainer import UDATrainer, attach_checkpointing, load_checkpoint


def _data():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(3, 40, 40)).astype(np.float32)
    tgt = (rng.normal(size=(3, 40, 40)) * 2 + 1).astype(np.float32)
    return src, src > 0.8, tgt, tgt > 2.5


def _trainer(strategy: str = "masktwins", iters: int = 6, epoch_length: int | None = None, seed: int = 0):
    src, src_lab, tgt, tgt_lab = _data()
    torch.manual_seed(0)
    net = get_network("small_unet", 2, channels=(4, 8, 16), strides=(2, 2))
    return UDATrainer(
        student=net,
        config=UDAConfig(strategy=strategy, block_size=8, tau=0.6),
        max_iterations=iters,
        source=CropSampler(src, src_lab, crop_size=(16, 16), batch_size=2, seed=seed, stream=SOURCE_STREAM),
        target=CropSampler(tgt, tgt_lab, crop_size=(16, 16), batch_size=2, seed=seed, stream=TARGET_STREAM),
        seed=seed,
        epoch_length=epoch_length,
        lr=1e-2,
    )


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().flatten().float() for t in module.state_dict().values() if torch.is_tensor(t)])


def test_one_backward_per_iteration_and_teacher_updates(monkeypatch):
    calls = []
    original = torch.Tensor.backward

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "backward", counting)
    t = _trainer(iters=3)
    state = t.fit()
    assert state.iteration == 3 and len(calls) == 3
    assert t.teacher.num_updates == 3
    assert set(state.output) >= {"loss", "loss_sup", "loss_pl", "loss_cm", "view_agreement", "teacher_confidence"}


@pytest.mark.parametrize("split,epoch_length", [(4, 2), (3, 6)])
def test_resume_equals_uninterrupted(tmp_path: Path, split: int, epoch_length: int):
    full = _trainer(iters=6, epoch_length=epoch_length)
    full.fit()
    # interrupted run: stop after `split` iterations with a checkpoint, then resume in a fresh trainer
    first = _trainer(iters=6, epoch_length=epoch_length)
    attach_checkpointing(first, tmp_path, interval=split)

    from ignite.engine import Events

    first.add_event_handler(Events.ITERATION_COMPLETED(once=split), lambda e: e.terminate())
    first.fit()
    ckpt = tmp_path / f"checkpoint_iteration={split}.pt"
    assert ckpt.is_file()
    second = _trainer(iters=6, epoch_length=epoch_length)
    load_checkpoint(second, ckpt)
    state = second.fit()
    assert state.iteration == 6
    assert torch.equal(_flat(second.student), _flat(full.student))  # bitwise on the CPU
    assert torch.equal(_flat(second.teacher), _flat(full.teacher))
    assert second.teacher.num_updates == 6
    for i, state in full.optimizer.state_dict()["state"].items():
        assert all(torch.equal(v, second.optimizer.state_dict()["state"][i][k]) for k, v in state.items())


def test_same_source_stream_across_strategies():
    a = _trainer("source_only").make_batch(5)
    b = _trainer("masktwins").make_batch(5)
    assert torch.equal(a["source_image"], b["source_image"]) and torch.equal(a["source_label"], b["source_label"])
    assert "target_image" not in a


def test_monai_stats_handler_runs():
    import logging

    from monai.handlers import StatsHandler

    records: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    t = _trainer(iters=2)
    StatsHandler(name="uda_test", iteration_log=1, tag_name="train", output_transform=lambda out: out).attach(t)
    logger = logging.getLogger("uda_test")
    logger.setLevel(logging.INFO)
    list_handler = ListHandler()
    logger.addHandler(list_handler)
    try:
        t.fit()
    finally:
        logger.removeHandler(list_handler)
    assert any("loss_cm" in r and "view_agreement" in r for r in records)


def test_validation_handler_reports_em_metrics():
    pytest.importorskip("mtbio.metrics")
    from mtbio.metrics import em_metrics
    from mtbio.uda.evaluate import TargetValidation, predict_in_memory

    src, src_lab, tgt, tgt_lab = _data()
    t = _trainer("source_only", iters=2)
    val = TargetValidation(tgt, tgt_lab, roi_size=(16, 16), interval=1)
    val.attach(t)
    state = t.fit()
    assert [h["iteration"] for h in val.history] == [1, 2]
    expected = em_metrics(predict_in_memory(t.teacher.module, tgt, roi_size=(16, 16)), tgt_lab)
    for k in ("mAP", "F1", "MCC", "IoU"):
        assert state.metrics[f"target_{k}"] == pytest.approx(float(expected[k]))


def test_trainer_validation():
    with pytest.raises(ValueError, match="epoch_length"):
        _trainer(iters=6, epoch_length=4)
    src, src_lab, *_ = _data()
    with pytest.raises(ValueError, match="target sampler"):
        UDATrainer(
            student=get_network("small_unet", 2),
            config=UDAConfig(strategy="mic"),
            max_iterations=2,
            source=CropSampler(src, src_lab, crop_size=(16, 16), batch_size=1),
        )
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_checkpoint(_trainer(iters=2), "/nonexistent/ckpt.pt")
