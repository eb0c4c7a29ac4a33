"""EMA teacher: closed forms, warm-up, buffers, eval mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from mtbio.uda.config import ema_alpha_for
from mtbio.uda.teacher import EMATeacher


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2))


def test_warmup_decay_values():
    t = EMATeacher(_net(), alpha=0.99)
    assert [t.decay(k) for k in range(4)] == [0.0, 0.5, pytest.approx(2 / 3), 0.75]
    assert t.decay(1000) == 0.99


def test_first_update_copies_student_and_constant_student_closed_form():
    student = _net()
    t = EMATeacher(student, alpha=0.9)
    with torch.no_grad():
        for p in student.parameters():
            p.fill_(1.0)
    t.update(student)  # update 0: a_0 = 0 -> copy
    assert all(torch.equal(p, torch.ones_like(p)) for p in t.module.parameters())
    # now a constant student c = 3 from the start of a fresh teacher with value 0
    t2 = EMATeacher(student, alpha=0.9)
    with torch.no_grad():
        for p in t2.module.parameters():
            p.zero_()
        for p in student.parameters():
            p.fill_(3.0)
    t2.num_updates = 50  # past warm-up: a_t = alpha for every update
    n = 7
    for _ in range(n):
        t2.update(student)
    expected = 3.0 * (1 - 0.9**n)  # theta_n = c (1 - alpha^n) from theta_0 = 0
    for p in t2.module.parameters():
        assert torch.allclose(p, torch.full_like(p, expected), atol=1e-6)


def test_warmup_is_running_mean():
    """During warm-up a_t = 1 - 1/(t+1), so the teacher is the plain mean of the students seen."""
    student = _net()
    t = EMATeacher(student, alpha=0.999)
    values = [1.0, 2.0, 6.0, -1.0]
    for v in values:
        with torch.no_grad():
            for p in student.parameters():
                p.fill_(v)
        t.update(student)
    for p in t.module.parameters():
        assert torch.allclose(p, torch.full_like(p, sum(values) / len(values)), atol=1e-6)


def test_buffers_averaged_and_counters_copied_eval_no_grad():
    student = _net()
    t = EMATeacher(student, alpha=0.5)
    student.train()
    student(torch.randn(4, 1, 8, 8) * 3 + 2)  # changes BN running stats
    t.update(student)  # copy (a_0 = 0)
    bn_s, bn_t = student[1], t.module[1]
    assert torch.equal(bn_t.running_mean, bn_s.running_mean)
    assert torch.equal(bn_t.running_var, bn_s.running_var)
    old_mean = bn_t.running_mean.clone()
    student(torch.randn(4, 1, 8, 8) - 5)
    t.update(student)  # a_1 = 0.5
    assert torch.allclose(bn_t.running_mean, 0.5 * old_mean + 0.5 * bn_s.running_mean)
    assert int(bn_t.num_batches_tracked) == int(bn_s.num_batches_tracked) == 2
    t.train()
    assert not t.module.training and not t.training
    out = t(torch.randn(1, 1, 8, 8))
    assert not out.requires_grad
    assert all(not p.requires_grad for p in t.parameters())


def test_state_dict_roundtrip_keeps_update_count():
    student = _net()
    t = EMATeacher(student, alpha=0.9)
    for _ in range(3):
        t.update(student)
    t2 = EMATeacher(_net(), alpha=0.5)
    t2.load_state_dict(t.state_dict())
    assert t2.num_updates == 3 and t2.alpha == 0.9


def test_alpha_rule_and_validation():
    assert ema_alpha_for(1000) == pytest.approx(0.99)
    assert ema_alpha_for(150) == 0.99
    assert ema_alpha_for(5000) == pytest.approx(0.998)
    assert ema_alpha_for(40000) == 0.999
    with pytest.raises(ValueError, match="alpha"):
        EMATeacher(_net(), alpha=1.0)


def test_copy_buffers_mode():
    student = _net()
    t = EMATeacher(student, alpha=0.9, ema_buffers=False)
    t.update(student)
    student.train()
    student(torch.randn(4, 1, 8, 8) * 2)
    t.update(student)  # a_1 = 0.5 for parameters, buffers copied
    assert torch.equal(t.module[1].running_var, student[1].running_var)
