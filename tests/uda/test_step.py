"""The pure UDA step on toy data, for every strategy."""

from __future__ import annotations

import pytest
import torch

from mtbio.networks import get_network
from mtbio.uda.config import StrongAugment, UDAConfig
from mtbio.uda.step import target_views, uda_step
from mtbio.uda.strategy import Strategy, strategy_spec
from mtbio.uda.teacher import EMATeacher


def _batch(seed: int = 0, spatial=(32, 32)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randn(2, 1, *spatial, generator=g)
    tgt = torch.randn(2, 1, *spatial, generator=g) * 0.5 + 0.3
    return {
        "source_image": src,
        "source_label": (src > 0.5).long(),
        "target_image": tgt,
        "target_label": (tgt > 0.6).long(),
    }


def _nets(spatial_dims: int = 2):
    torch.manual_seed(0)
    student = get_network("small_unet", spatial_dims, channels=(4, 8, 16), strides=(2, 2))
    return student, EMATeacher(student, alpha=0.9)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_every_strategy_finite_loss_grads_only_student(strategy):
    student, teacher = _nets()
    cfg = UDAConfig(strategy=strategy, block_size=8, tau=0.5)
    out = uda_step(student, teacher, _batch(), cfg, torch.Generator().manual_seed(0))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert torch.equal(out.logs["loss"], out.loss.detach())
    assert all(v.ndim == 0 and not v.requires_grad for v in out.logs.values())
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    spec = strategy_spec(strategy)
    if spec.pseudo_labels:
        assert {"loss_pl", "teacher_confidence", "pl_weight"} <= set(out.logs)
    if spec.consistency:
        assert 0.0 <= float(out.logs["view_agreement"]) <= 1.0 and "loss_cm" in out.logs


def test_3d_masktwins_step_anisotropic_blocks():
    student, teacher = _nets(3)
    cfg = UDAConfig(strategy="masktwins", block_size=(2, 8, 8), tau=0.5)
    out = uda_step(student, teacher, _batch(spatial=(8, 32, 32)), cfg, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_source_only_ignores_target():
    student, teacher = _nets()
    cfg = UDAConfig(strategy="source_only")
    b = _batch()
    only_source = {k: v for k, v in b.items() if k.startswith("source")}
    a = uda_step(student, teacher, b, cfg).loss
    c = uda_step(student, None, only_source, cfg).loss
    assert torch.equal(a, c)


def test_oracle_uses_target_labels_not_source():
    student, teacher = _nets()
    cfg = UDAConfig(strategy="oracle")
    b = _batch()
    base = uda_step(student, teacher, b, cfg).loss
    flipped = dict(b, target_label=1 - b["target_label"])
    assert not torch.allclose(base, uda_step(student, teacher, flipped, cfg).loss)
    other_source = dict(b, source_image=torch.zeros_like(b["source_image"]), source_label=None)
    assert torch.equal(base, uda_step(student, teacher, other_source, cfg).loss)
    with pytest.raises(ValueError, match="target_label"):
        uda_step(student, teacher, {k: v for k, v in b.items() if k != "target_label"}, cfg)


def test_masktwins_views_are_complementary_splits_of_one_augmented_image():
    x = torch.randn(3, 1, 48, 40)
    cfg = UDAConfig(strategy="masktwins", block_size=16)
    views, masks = target_views(x, cfg, torch.Generator().manual_seed(3))
    assert len(views) == 2 and torch.equal(masks[0] + masks[1], torch.ones_like(masks[0]))
    assert torch.equal(views[0] * masks[1], torch.zeros_like(x))
    assert torch.equal(views[1] * masks[0], torch.zeros_like(x))
    # hidden voxels are 0 after augmentation; together the views are one augmented image, not x itself
    whole = views[0] + views[1]
    assert not torch.allclose(whole, x)
    strong_only = UDAConfig(strategy="mean_teacher", block_size=16)
    ref, no_masks = target_views(x, strong_only, torch.Generator().manual_seed(3))
    assert no_masks == [] and torch.allclose(whole, ref[0])


def test_mic_single_mask_ratio_and_pair_independence():
    x = torch.randn(4, 1, 64, 64)
    views, masks = target_views(x, UDAConfig(strategy="mic", block_size=8), torch.Generator().manual_seed(0))
    assert len(views) == 1 and float(1 - masks[0].mean()) == pytest.approx(0.7, abs=0.01)
    views, masks = target_views(x, UDAConfig(strategy="random_pair", block_size=8), torch.Generator().manual_seed(0))
    assert len(views) == 2 and not torch.equal(masks[0] + masks[1], torch.ones_like(masks[0]))


def test_views_go_through_student_in_one_forward():
    student, teacher = _nets()
    sizes: list[int] = []
    student.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))
    uda_step(student, teacher, _batch(), UDAConfig(strategy="masktwins", block_size=8))
    assert sizes == [2, 6]  # source batch, then the unmasked strong view and both masked views in one batch
    sizes.clear()
    uda_step(student, teacher, _batch(), UDAConfig(strategy="masktwins", block_size=8, lambda_st=0.0))
    assert sizes == [2, 4]  # without the self-training term: only the two masked views


def test_masked_strategy_adds_the_mean_teacher_term():
    """With lambda_pl = lambda_cm = 0, a masked strategy's target loss is mean_teacher's (same strong view)."""
    student, teacher = _nets()
    student.eval()  # BatchNorm batch statistics would differ between a batch of 1 view and one of 3
    batch = _batch()
    base = dict(block_size=8, tau=0.5, lambda_cm=0.0)
    gen = torch.Generator
    mt = uda_step(student, teacher, batch, UDAConfig(strategy="mean_teacher", **base), gen().manual_seed(1))
    tw = uda_step(student, teacher, batch, UDAConfig(strategy="masktwins", lambda_pl=0.0, **base), gen().manual_seed(1))
    assert torch.allclose(tw.logs["loss_st"], mt.logs["loss_pl"], atol=1e-6)
    assert torch.allclose(tw.loss, mt.loss, atol=1e-6)


def test_no_augmentation_no_mask_view_equals_target():
    cfg = UDAConfig(
        strategy="mean_teacher",
        augment=StrongAugment(brightness=0, contrast=0, gamma=0, blur_prob=0, noise_std=0),
    )
    x = torch.randn(2, 1, 16, 16)
    views, _ = target_views(x, cfg)
    assert torch.allclose(views[0], x, atol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="tau"):
        UDAConfig(tau=1.5)
    with pytest.raises(ValueError, match="block_size"):
        UDAConfig(block_size=0)
    with pytest.raises(ValueError, match="strategy"):
        UDAConfig(strategy="fixmatch")
    assert UDAConfig(strategy="mic").ratio == 0.7 and UDAConfig().ratio == 0.5
    assert UDAConfig(block_size=[2, 8, 8]).to_dict()["block_size"] == [2, 8, 8]


def test_target_bn_stats_false_keeps_running_stats_to_source():
    b = _batch()
    student, teacher = _nets()
    uda_step(student, teacher, b, UDAConfig(strategy="source_only"))
    ref = [m.running_mean.clone() for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    student, teacher = _nets()
    uda_step(student, teacher, b, UDAConfig(strategy="masktwins", block_size=8, target_bn_stats=False))
    got = [m.running_mean for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.allclose(r, g) for r, g in zip(ref, got))
    student, teacher = _nets()
    uda_step(student, teacher, b, UDAConfig(strategy="masktwins", block_size=8, target_bn_stats=True))
    moved = [m.running_mean for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not all(torch.allclose(r, g) for r, g in zip(ref, moved))
    assert all(m.momentum == 0.1 for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_rampup_closed_form_and_target_weight_scales_target_terms():
    import math

    cfg = UDAConfig(strategy="masktwins", block_size=8, tau=0.5, rampup_iterations=10)
    assert cfg.target_weight(0) == pytest.approx(math.exp(-5.0))
    assert cfg.target_weight(5) == pytest.approx(math.exp(-5.0 * 0.25))
    assert cfg.target_weight(10) == 1.0 and cfg.target_weight(99) == 1.0
    assert UDAConfig(rampup_iterations=0).target_weight(0, 100) == 1.0
    # default: the ramp covers half of the run
    assert UDAConfig().target_weight(0, total_iterations=20) == pytest.approx(math.exp(-5.0))
    assert UDAConfig().target_weight(10, total_iterations=20) == 1.0
    student, teacher = _nets()
    b = _batch()
    full = uda_step(student, teacher, b, cfg, torch.Generator().manual_seed(0))
    off = uda_step(student, teacher, b, cfg, torch.Generator().manual_seed(0), target_weight=0.0)
    assert torch.allclose(off.loss, full.logs["loss_sup"])
    expected = full.logs["loss_sup"] + cfg.lambda_st * full.logs["loss_st"] + cfg.lambda_pl * full.logs["loss_pl"]
    expected = expected + cfg.lambda_cm * full.logs["loss_cm"]
    assert torch.allclose(full.loss, expected, atol=1e-6)


def test_consistency_forms_against_closed_form():
    from mtbio.uda.losses import ConsistencyForm, consistency_loss

    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 2, 8, 8, generator=g) * 5, torch.randn(2, 2, 8, 8, generator=g) * 5
    assert torch.allclose(consistency_loss(a, b, "logits"), ((a - b) ** 2).mean())
    pa, pb = torch.exp(a) / torch.exp(a).sum(1, keepdim=True), torch.exp(b) / torch.exp(b).sum(1, keepdim=True)
    got = consistency_loss(a, b, ConsistencyForm.PROBABILITIES)
    assert torch.allclose(got, ((pa - pb) ** 2).mean(), atol=1e-7)
    assert float(got) <= 1.0  # bounded, unlike the logit form
    with pytest.raises(ValueError):
        consistency_loss(a, b, "features")


def test_consistency_form_reaches_the_step_loss():
    student, teacher = _nets()
    batch, gen = _batch(), lambda: torch.Generator().manual_seed(0)
    base = dict(strategy="masktwins", block_size=8, tau=0.5, lambda_cm=1.0)
    lo = uda_step(student, teacher, batch, UDAConfig(**base, consistency="logits"), gen())
    pr = uda_step(student, teacher, batch, UDAConfig(**base, consistency="probabilities"), gen())
    # same views and pseudo-label loss, different consistency term
    assert torch.equal(lo.logs["loss_pl"], pr.logs["loss_pl"])
    assert torch.allclose(lo.loss - lo.logs["loss_cm"], pr.loss - pr.logs["loss_cm"], atol=1e-6)
    assert not torch.allclose(lo.logs["loss_cm"], pr.logs["loss_cm"])
    with pytest.raises(ValueError, match="consistency"):
        UDAConfig(consistency="kl")


def test_source_prior_class_balance_reaches_the_pseudo_label_loss():
    from mtbio.uda.config import ClassBalance

    student, teacher = _nets()
    g = torch.Generator().manual_seed(1)
    batch = {
        "source_image": torch.randn(2, 1, 32, 32, generator=g),
        "source_label": (torch.rand(2, 1, 32, 32, generator=g) > 0.7).long(),
        "target_image": torch.randn(2, 1, 32, 32, generator=g),
    }
    losses = {}
    for balance in ClassBalance:
        cfg = UDAConfig(strategy=Strategy.MEAN_TEACHER, tau=0.0, pl_class_balance=balance)
        out = uda_step(student, teacher, batch, cfg, torch.Generator().manual_seed(2))
        losses[balance] = out.logs["loss_pl"].item()
        assert torch.isfinite(out.loss)
    assert len({round(v, 6) for v in losses.values()}) == 3
    with pytest.raises(ValueError, match="pl_class_balance"):
        UDAConfig(pl_class_balance="bogus")


def test_source_augment_feeds_the_augmented_source_crop_to_the_supervised_loss():
    from mtbio.uda.augment import strong_augment
    from mtbio.uda.losses import supervised_loss

    student, _ = _nets()
    b = _batch()
    plain = UDAConfig(strategy="source_only")
    aug = UDAConfig(strategy="source_only", source_augment=True)
    off = uda_step(student, None, b, plain, torch.Generator().manual_seed(3)).loss
    assert torch.equal(off, supervised_loss(student(b["source_image"]), b["source_label"], 0.0))  # off: as before
    on = uda_step(student, None, b, aug, torch.Generator().manual_seed(3)).loss
    expected_image = strong_augment(b["source_image"], aug.augment, torch.Generator().manual_seed(3))
    assert not torch.equal(expected_image, b["source_image"])
    # on: the loss of the image drawn from the step's generator, against the unchanged labels
    assert torch.allclose(on, supervised_loss(student(expected_image), b["source_label"], 0.0))
    with pytest.raises(ValueError, match="source_augment must be true or false"):
        UDAConfig(source_augment="yes")
