"""MaskTwins unsupervised domain adaptation (EMA mean teacher + complementary block masks) and its baselines.

Import the pieces from their modules (``mtbio.uda.config``, ``.step``, ``.trainer`` ...); the names below are
re-exported lazily so ``import mtbio.uda`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # editors and type checkers see the lazily exported names
    from mtbio.uda.augment import strong_augment
    from mtbio.uda.config import PseudoLabelWeighting, StrongAugment, UDAConfig, ema_alpha_for
    from mtbio.uda.evaluate import TargetValidation, evaluate_network, predict_in_memory
    from mtbio.uda.interrupt import TrainingInterrupted
    from mtbio.uda.pseudo_labels import pseudo_labels
    from mtbio.uda.step import StepOutput, uda_step
    from mtbio.uda.strategy import Strategy, strategy_spec
    from mtbio.uda.teacher import EMATeacher
    from mtbio.uda.trainer import UDATrainer, attach_checkpointing, load_checkpoint

_EXPORTS = {
    "UDAConfig": "config",
    "PseudoLabelWeighting": "config",
    "StrongAugment": "config",
    "ema_alpha_for": "config",
    "Strategy": "strategy",
    "strategy_spec": "strategy",
    "EMATeacher": "teacher",
    "pseudo_labels": "pseudo_labels",
    "strong_augment": "augment",
    "uda_step": "step",
    "StepOutput": "step",
    "UDATrainer": "trainer",
    "attach_checkpointing": "trainer",
    "load_checkpoint": "trainer",
    "TrainingInterrupted": "interrupt",
    "TargetValidation": "evaluate",
    "predict_in_memory": "evaluate",
    "evaluate_network": "evaluate",
}

__all__ = [
    "EMATeacher",
    "PseudoLabelWeighting",
    "StepOutput",
    "Strategy",
    "StrongAugment",
    "TargetValidation",
    "TrainingInterrupted",
    "UDAConfig",
    "UDATrainer",
    "attach_checkpointing",
    "ema_alpha_for",
    "evaluate_network",
    "load_checkpoint",
    "predict_in_memory",
    "pseudo_labels",
    "strategy_spec",
    "strong_augment",
    "uda_step",
]  # = sorted(_EXPORTS) (tests/test_package.py checks)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mtbio.uda.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mtbio.uda' has no attribute {name!r}")
