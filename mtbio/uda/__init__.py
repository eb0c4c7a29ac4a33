"""MaskTwins unsupervised domain adaptation (EMA mean teacher + complementary block masks) and its baselines.

Import the pieces from their modules (``mtbio.uda.config``, ``.step``, ``.trainer`` ...); the names below are
re-exported lazily so ``import mtbio.uda`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

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

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mtbio.uda.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mtbio.uda' has no attribute {name!r}")
