"""Sizing a training schedule to a wall-clock budget (``benchmarks/paper_protocol.py``).

The job is: warm-up (measure), then per seed a source-only pre-training of ``pretrain`` iterations, a MaskTwins run
of ``iterations`` (both through :func:`mtbio.uda.run.run_training`), and the evaluations. :func:`plan_schedule`
turns the warm-up's measurements into iteration counts that end the job within the budget:

* ``left = budget - elapsed - seeds * (evaluations + scoring + 2 stages' overhead and checkpoints)`` is the training
  time of all seeds;
* ``train = safety * left / seeds`` per seed, split ``pretrain_share : 1 - pretrain_share`` between the
  pre-training (at the measured source-only seconds per iteration) and the adaptation (at the measured MaskTwins
  seconds per iteration).

Pure arithmetic: no torch, no clock.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["BudgetError", "Schedule", "WarmupTimes", "plan_schedule"]


class BudgetError(ValueError):
    """The budget leaves no training time after the warm-up, the evaluations and the margins."""


@dataclass
class WarmupTimes:
    """What the warm-up measured (seconds).

    Attributes:
        pretrain_s_per_iter: a source-only iteration (the pre-training's step), steady state.
        adapt_s_per_iter: a MaskTwins iteration, steady state.
        eval_s_per_run: one evaluation of one network on all test sections (prediction and metrics).
        evals_per_seed: evaluations per seed (source-only start, last, label-free selected when available).
        score_s_per_run: label-free scoring during one MaskTwins run (0 when run_training scores nothing).
        overhead_s_per_stage: a ``run_training`` stage's time outside its iterations (network, samplers,
            the weights file), measured as the warm-up call's wall time minus its iterations.
        checkpoint_s: writing one resumable checkpoint (student, teacher, optimizer state).
        checkpoints_per_stage: checkpoints a stage writes (every ``iterations // 10``, and the final one).
    """

    pretrain_s_per_iter: float
    adapt_s_per_iter: float
    eval_s_per_run: float
    evals_per_seed: int
    score_s_per_run: float = 0.0
    overhead_s_per_stage: float = 0.0
    checkpoint_s: float = 0.0
    checkpoints_per_stage: int = 11

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Schedule:
    """Iteration counts per seed and what they are expected to cost.

    Attributes:
        pretrain_iterations: source-only iterations (the MaskTwins run starts from their EMA weights).
        iterations: MaskTwins iterations.
        train_s_per_seed: expected training seconds of one seed (both stages, iterations only).
        expected_end_s: expected seconds from the job's start to its end (``None`` for a fixed schedule).
        budget_s: the budget (``None`` for a fixed schedule).
        sized: ``True`` when sized to a budget, ``False`` for ``--iters`` / ``--pretrain`` given.
    """

    pretrain_iterations: int
    iterations: int
    train_s_per_seed: float | None = None
    expected_end_s: float | None = None
    budget_s: float | None = None
    sized: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_schedule(
    budget_s: float,
    elapsed_s: float,
    times: WarmupTimes,
    *,
    seeds: int = 1,
    pretrain_share: float = 0.25,
    safety: float = 0.9,
) -> Schedule:
    """Iteration counts that end the job within ``budget_s`` (see the module docstring).

    Args:
        budget_s: wall-clock seconds for the whole job, counted from its start.
        elapsed_s: seconds already spent (imports, data loading, warm-up).
        times: the warm-up's measurements.
        seeds: seeds trained one after the other.
        pretrain_share: share of each seed's training time spent on the source-only pre-training.
        safety: share of the remaining time planned for training (the rest absorbs timing noise).

    Returns:
        the :class:`Schedule` (``sized=True``).

    Raises:
        BudgetError: no MaskTwins iteration fits.
        ValueError: arguments out of range.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if not 0.0 <= pretrain_share < 1.0:
        raise ValueError(f"pretrain_share must be in [0, 1), got {pretrain_share}")
    if not 0.0 < safety <= 1.0:
        raise ValueError(f"safety must be in (0, 1], got {safety}")
    if min(times.pretrain_s_per_iter, times.adapt_s_per_iter) <= 0:
        raise ValueError(f"seconds per iteration must be > 0, got {times}")
    stage = times.overhead_s_per_stage + times.checkpoints_per_stage * times.checkpoint_s
    fixed = times.eval_s_per_run * times.evals_per_seed + times.score_s_per_run + 2 * stage
    left = budget_s - elapsed_s - seeds * fixed
    train = safety * left / seeds
    pretrain = max(0, math.floor(pretrain_share * train / times.pretrain_s_per_iter)) if train > 0 else 0
    iterations = math.floor((1.0 - pretrain_share) * train / times.adapt_s_per_iter) if train > 0 else 0
    if iterations < 1:
        raise BudgetError(
            f"a budget of {budget_s:.0f} s leaves no MaskTwins iteration: {elapsed_s:.0f} s spent before training, "
            f"{seeds} x {fixed:.0f} s of evaluation, scoring and run overhead, {times.adapt_s_per_iter:.3f} s per "
            "MaskTwins iteration; give more --minutes, fewer --seeds or smaller --crop / --batch"
        )
    spent = pretrain * times.pretrain_s_per_iter + iterations * times.adapt_s_per_iter
    return Schedule(
        pretrain_iterations=int(pretrain),
        iterations=int(iterations),
        train_s_per_seed=spent,
        expected_end_s=elapsed_s + seeds * (spent + fixed),
        budget_s=float(budget_s),
        sized=True,
    )
