"""``UDAConfig``: every knob of a UDA step, typed, with the paper's symbols and defaults."""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from mtbio.uda.losses import ConsistencyForm
from mtbio.uda.strategy import Strategy, strategy_spec

__all__ = [
    "DEFAULT_BLOCK_NM",
    "DEFAULT_BLOCK_VOXELS",
    "DEMO_UDA",
    "ClassBalance",
    "ConsistencyForm",
    "PseudoLabelWeighting",
    "StrongAugment",
    "UDAConfig",
    "ema_alpha_for",
]

#: the validated mask block in voxels (VNC III -> Lucchi++ at Lucchi++'s 5 nm); a step run without a resolved
#: ``block_size`` uses it, and ``block_size=None`` falls back to it where no voxel size is known at all
DEFAULT_BLOCK_VOXELS = 32
#: the validated mask block in nm: 32 px at 5 nm
DEFAULT_BLOCK_NM = 160.0


class PseudoLabelWeighting(enum.StrEnum):
    """How pseudo-labelled voxels are weighted in the pseudo-label loss.

    ``PIXEL``: weight 1 where the teacher's confidence ``max_c p_c >= tau``, else 0.
    ``IMAGE``: MIC / DACS quality weight: every voxel of an image gets the fraction of that image's voxels with
    confidence ``>= tau``.
    ``NONE``: every voxel weighs 1 (hard pseudo-labels, no threshold).
    """

    PIXEL = "pixel"
    IMAGE = "image"
    NONE = "none"


class ClassBalance(enum.StrEnum):
    """How the pseudo-label loss shares its weight between background and foreground (on top of
    :class:`PseudoLabelWeighting`).

    ``NONE``: as the pseudo-labels fall (argmax counts).
    ``EQUAL``: both classes carry the same total weight per batch.
    ``SOURCE_PRIOR``: the classes carry the shares of the source batch's label frequencies (CBST-style
    class-prior matching: a teacher that drifts towards one class is pulled back to the source's proportions),
    each class factor clamped to ``[1/10, 10]``.
    """

    NONE = "none"
    EQUAL = "equal"
    SOURCE_PRIOR = "source_prior"


@dataclass
class StrongAugment:
    """Strong intensity augmentation of the student's target views (on z-scored images), drawn per image.

    Attributes:
        brightness: additive shift ~ U(-brightness, brightness) (in std units).
        contrast: multiplicative factor ~ U(1 - contrast, 1 + contrast) around the image mean.
        gamma: gamma ~ exp(U(-gamma, gamma)) applied to the image min-max rescaled to [0, 1], then mapped back.
        blur_prob: probability of a Gaussian blur.
        blur_sigma: blur sigma ~ U(0.1, blur_sigma) voxels, in-plane (Y, X) only, also for 3D.
        noise_std: additive Gaussian noise with std ~ U(0, noise_std).
    """

    brightness: float = 0.2
    contrast: float = 0.2
    gamma: float = 0.3
    blur_prob: float = 0.5
    blur_sigma: float = 1.0
    noise_std: float = 0.1

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "gamma", "blur_sigma", "noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"StrongAugment.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.blur_prob <= 1.0:
            raise ValueError(f"StrongAugment.blur_prob must be in [0, 1], got {self.blur_prob}")
        if self.contrast >= 1.0:
            raise ValueError(f"StrongAugment.contrast must be < 1, got {self.contrast}")


def _positive_nm(value: Any) -> float | tuple[float, ...]:
    """``block_nm`` checked: one positive finite number of nm, or one per axis (a tuple)."""

    def ok(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0

    if ok(value):
        return float(value)
    if isinstance(value, list | tuple) and value and all(ok(v) for v in value):
        return tuple(float(v) for v in value)
    raise ValueError(f"block_nm must be a positive number of nm, or one per axis, got {value!r}")


def ema_alpha_for(total_steps: int, low: float = 0.99, high: float = 0.999) -> float:
    """EMA decay for a run length: ``alpha = clip(1 - 10 / total_steps, low, high)``.

    The teacher then averages roughly the last ``total_steps / 10`` students (its time constant is
    ``1 / (1 - alpha)`` steps): 0.99 up to 1k steps, 0.998 at 5k, 0.999 from 10k steps (the paper's value). With
    the warm-up ``a_t = min(1 - 1/(t + 1), alpha)`` the teacher is the plain mean of all students until step
    ``1 / (1 - alpha)``. Measured on the synthetic domains (150 steps, 3 seeds): the floor 0.99 gave MaskTwins
    +0.05 to +0.26 target IoU over source-only, a floor of 0.9 (alpha 0.933) gave -0.03 to -0.18.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return float(min(max(1.0 - 10.0 / total_steps, low), high))


@dataclass
class UDAConfig:
    """Configuration of one UDA step (MaskTwins, ICML 2025, and its baselines).

    Attributes:
        strategy: the training signal (:class:`Strategy`).
        tau: pseudo-label confidence threshold tau (paper 0.968).
        lambda_pl: weight lambda_pl of the pseudo-label loss (1/2 of the sum over the two views for pairs).
        lambda_st: weight of the plain self-training loss on the strongly augmented, *unmasked* target view in
            the masked strategies (``mic``, ``random_pair``, ``masktwins``): the mean-teacher / DACS loss that MIC
            and the MaskTwins code keep beside their masked losses. ``0`` = masked views only. ``mean_teacher``
            uses ``lambda_pl`` for its (only) unmasked view.
        lambda_cm: weight lambda_cm of the consistency loss between the two masked views (paper 0.01).
        consistency: what that loss compares (:class:`ConsistencyForm`): ``PROBABILITIES`` (MSE of softmax
            probabilities, the default) or ``LOGITS`` (MSE of logits, the authors' code). Measured on VNC III ->
            Lucchi++ with a small U-Net, the unbounded logit MSE drove MaskTwins to all-background (IoU 0.011 vs
            0.410 with probabilities, one seed; docs/uda.md); with ``unet`` on the 3200-iteration schedule the
            logit form cost 7.0 IoU on the design split (one seed, docs/uda.md "The pair's own knobs").
        mask_ratio: ratio r of hidden blocks; ``None`` = the strategy's default (0.7 MIC, 0.5 pairs).
        block_size: mask block size b in voxels, an int or one per spatial axis (anisotropic 3D e.g. (4, 16, 16)),
            used as given; ``None`` (default) = the block follows the data's scale, resolved by the training run
            (:func:`mtbio.uda.blocks.resolve_mask_block`, docs/uda.md "Mask blocks follow scale"): ``block_nm`` per
            axis at the training grid's voxel size when the target's voxel size is known; when it is unknown, the
            source's block (``block_nm`` at the source's voxel size, or 32 px when that is unknown too) scaled by the
            ratio of the median object diameters in the target (the source-only model's predictions) and in the
            source (its labels). A derived block is clipped to [4, crop / 4] voxels per axis; the resolved block and
            its derivation are logged and recorded (``mask_block`` in config.json and the weights record).
        block_nm: the mask block edge in nm that ``block_size=None`` resolves (per axis); 160 nm = 32 px at
            Lucchi++'s 5 nm, the validated VNC III -> Lucchi++ block (about half a median mitochondrion's diameter
            in a section there); 80 and 320 nm each cost ~3 IoU on the design split at 3200 iterations (one seed,
            docs/uda.md "The pair's own knobs").
        pl_weighting: pseudo-label weighting (:class:`PseudoLabelWeighting`).
        dice_weight: weight of a soft Dice loss added to the supervised cross-entropy (0 = CE only).
        pl_dice_weight: weight of a (voxel-weighted) soft Dice loss of the foreground added to every pseudo-label
            cross-entropy (0 = CE only).
        pl_class_balance: how the pseudo-label loss's weight is shared between the classes (:class:`ClassBalance`);
            default ``SOURCE_PRIOR`` (since 2026-12-05): decided on the design split (VNC III -> the EPFL training
            volume, one seed, 800 + 3200 iterations), MaskTwins IoU 53.5 -> 61.1 and mAP 86.8 -> 89.0 against
            ``NONE``, the teacher's foreground on those sections 16.1 % -> 13.4 % (labels 9.0 %); held out, 3 seeds:
            IoU 68.3 -> 72.1; Lucchi++ -> VNC III (one seed, the teacher under-segments there): 49.1 -> 51.1. It cost
            9.4 IoU on the synthetic domains, whose demo keeps ``NONE`` (:data:`DEMO_UDA`); docs/uda.md "Calibrating
            the pseudo-labels".
        augment: strong intensity augmentation of the student's target views.
        source_augment: apply ``augment`` (contrast, brightness, gamma, blur, noise, drawn per crop) to the source
            crops of the supervised loss too, in the pre-training and the strategy alike (EM-style intensity
            augmentation of the labelled domain). ``False`` (default): on the design split (VNC III -> the EPFL
            training volume, 800 + 3200, 2 seeds) it cost MaskTwins 1.8-8.3 IoU and its source-only start collapsed
            on the target for one seed (docs/uda.md "EM-style intensity augmentation of the source").
        alpha: EMA decay alpha of the teacher (paper 0.999); ``None`` = :func:`ema_alpha_for` the run length.
        target_bn_stats: let the student's forward pass on the (masked) target views update BatchNorm running
            statistics; ``False`` normalises those views with their batch statistics but keeps the running
            statistics (which the teacher averages and evaluation uses) to source batches.
        ema_buffers: the teacher averages the student's BatchNorm running statistics like its parameters
            (default); ``False`` copies them from the student at every update.
        rampup_iterations: the target terms (pseudo-label and consistency) are weighted by the Mean-Teacher
            sigmoid ramp ``exp(-5 (1 - min(i / R, 1))^2)`` over the first ``R`` iterations; ``None`` (default) =
            half of the run (``R = T // 2``, resolved by the trainer), ``0`` = off. Measured: without a ramp-up the
            from-scratch EMA teacher's early pseudo-labels are all background and self-training collapses to
            predicting background (synthetic 600 iterations: MaskTwins IoU 0.009 vs 0.66 with ``R = 300``; see
            docs/uda.md).
    """

    strategy: Strategy = Strategy.MASKTWINS
    tau: float = 0.968
    lambda_pl: float = 1.0
    lambda_st: float = 1.0
    lambda_cm: float = 0.01
    consistency: ConsistencyForm = ConsistencyForm.PROBABILITIES
    mask_ratio: float | None = None
    block_size: int | tuple[int, ...] | None = None
    block_nm: float | tuple[float, ...] = DEFAULT_BLOCK_NM
    pl_weighting: PseudoLabelWeighting = PseudoLabelWeighting.IMAGE
    dice_weight: float = 0.0
    pl_dice_weight: float = 0.0
    pl_class_balance: ClassBalance = ClassBalance.SOURCE_PRIOR
    augment: StrongAugment = field(default_factory=StrongAugment)
    source_augment: bool = False
    alpha: float | None = None
    target_bn_stats: bool = True
    ema_buffers: bool = True
    rampup_iterations: int | None = None

    def __post_init__(self) -> None:
        try:
            self.strategy = Strategy(self.strategy)
        except ValueError:
            raise ValueError(
                f"unknown strategy {self.strategy!r}; choose one of {', '.join(s.value for s in Strategy)}"
            ) from None
        try:
            self.pl_weighting = PseudoLabelWeighting(self.pl_weighting)
        except ValueError:
            raise ValueError(
                f"unknown pl_weighting {self.pl_weighting!r}; choose one of "
                f"{', '.join(w.value for w in PseudoLabelWeighting)}"
            ) from None
        try:
            self.pl_class_balance = ClassBalance(self.pl_class_balance)
        except ValueError:
            raise ValueError(
                f"unknown pl_class_balance {self.pl_class_balance!r}; choose one of "
                f"{', '.join(c.value for c in ClassBalance)}"
            ) from None
        try:
            self.consistency = ConsistencyForm(self.consistency)
        except ValueError:
            raise ValueError(
                f"unknown consistency {self.consistency!r}; choose one of {', '.join(c.value for c in ConsistencyForm)}"
            ) from None
        if isinstance(self.augment, dict):
            self.augment = StrongAugment(**self.augment)
        if not isinstance(self.source_augment, bool):
            raise ValueError(f"source_augment must be true or false, got {self.source_augment!r}")
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {self.tau}")
        if min(self.lambda_pl, self.lambda_st, self.lambda_cm, self.dice_weight, self.pl_dice_weight) < 0:
            raise ValueError(
                f"lambda_pl, lambda_st, lambda_cm, dice_weight and pl_dice_weight must be >= 0, got {self.lambda_pl}, "
                f"{self.lambda_st}, {self.lambda_cm}, {self.dice_weight}, {self.pl_dice_weight}"
            )
        if self.mask_ratio is not None and not 0.0 <= self.mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1] or None, got {self.mask_ratio}")
        if isinstance(self.block_size, list):
            self.block_size = tuple(self.block_size)
        if self.block_size is not None:
            blocks = (self.block_size,) if isinstance(self.block_size, int) else self.block_size
            if not blocks or any(int(b) < 1 for b in blocks):
                raise ValueError(f"block_size must be >= 1 (per axis) or None, got {self.block_size}")
        self.block_nm = _positive_nm(self.block_nm)
        if self.rampup_iterations is not None and self.rampup_iterations < 0:
            raise ValueError(f"rampup_iterations must be >= 0, got {self.rampup_iterations}")
        if self.alpha is not None and not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1) or None, got {self.alpha}")

    def rampup_length(self, total_iterations: int | None = None) -> int:
        """``R`` of the ramp-up: ``rampup_iterations``, or ``total_iterations // 2`` when it is ``None``
        (0, i.e. no ramp-up, when neither is known)."""
        if self.rampup_iterations is not None:
            return int(self.rampup_iterations)
        return 0 if total_iterations is None else int(total_iterations) // 2

    def target_weight(self, iteration: int, total_iterations: int | None = None) -> float:
        """The ramp-up factor of the target terms at 0-based ``iteration`` of a ``total_iterations`` run
        (1.0 without ramp-up)."""
        length = self.rampup_length(total_iterations)
        if length <= 0:
            return 1.0
        x = min(iteration / length, 1.0)
        return float(math.exp(-5.0 * (1.0 - x) ** 2))

    @property
    def block(self) -> int | tuple[int, ...]:
        """The mask block in voxels: ``block_size``, or :data:`DEFAULT_BLOCK_VOXELS` while it is ``None`` (a step
        run outside :func:`mtbio.uda.run.run_training`, which resolves ``None`` from the data's scale)."""
        return DEFAULT_BLOCK_VOXELS if self.block_size is None else self.block_size

    @property
    def ratio(self) -> float:
        """The mask ratio in effect (``mask_ratio`` or the strategy's default)."""
        return strategy_spec(self.strategy).default_mask_ratio if self.mask_ratio is None else self.mask_ratio

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-friendly dict (enums as their values)."""
        d = asdict(self)
        d["strategy"] = self.strategy.value
        d["pl_weighting"] = self.pl_weighting.value
        d["consistency"] = self.consistency.value
        d["pl_class_balance"] = self.pl_class_balance.value
        if isinstance(self.block_size, tuple):
            d["block_size"] = list(self.block_size)
        if isinstance(self.block_nm, tuple):
            d["block_nm"] = list(self.block_nm)
        return d


#: the UDA step of the synthetic demo (``mtbio demo``, the ``masktwins_demo`` bundle): :class:`UDAConfig`'s defaults
#: but ``pl_class_balance`` ``NONE``. On the synthetic domains ``SOURCE_PRIOR`` cost MaskTwins 9.4 IoU points
#: (76.6 -> 67.2, seed 0, 2026-12-05; docs/uda.md "Calibrating the pseudo-labels")
DEMO_UDA = UDAConfig(pl_class_balance=ClassBalance.NONE)
