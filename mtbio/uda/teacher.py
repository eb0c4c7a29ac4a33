"""The EMA mean teacher."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn

__all__ = ["EMATeacher"]


class EMATeacher(nn.Module):
    """Exponential moving average of a student network, used in eval mode without gradients.

    After update ``t`` (0-based) the teacher holds ``theta' <- a_t * theta' + (1 - a_t) * theta`` with the warm-up
    ``a_t = min(1 - 1 / (t + 1), alpha)``: update 0 copies the student, and early updates are plain running
    means until ``1 - 1 / (t + 1)`` reaches ``alpha``.

    Both parameters and floating-point buffers (BatchNorm ``running_mean`` / ``running_var``) are averaged;
    integer buffers (``num_batches_tracked``) are copied from the student. The teacher always runs in eval
    mode, so its BatchNorm uses the averaged running statistics.

    Args:
        student: the network to follow; it is deep-copied at construction.
        alpha: EMA decay alpha in [0, 1) (paper 0.999 for ~40k steps; see
            :func:`mtbio.uda.config.ema_alpha_for` for shorter runs).
        ema_buffers: average floating-point buffers too (default); ``False`` copies every buffer from the student.
    """

    def __init__(self, student: nn.Module, alpha: float = 0.999, ema_buffers: bool = True) -> None:
        super().__init__()
        self.ema_buffers = bool(ema_buffers)
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        self.alpha = float(alpha)
        self.module = copy.deepcopy(student)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.module.eval()
        self.num_updates = 0

    def train(self, mode: bool = True) -> EMATeacher:  # the teacher never leaves eval mode
        super().train(False)
        return self

    def decay(self, t: int | None = None) -> float:
        """The decay ``a_t = min(1 - 1 / (t + 1), alpha)`` of update ``t`` (default: the next update)."""
        t = self.num_updates if t is None else t
        return min(1.0 - 1.0 / (t + 1), self.alpha)

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """One EMA update from the student's current parameters and buffers."""
        a = self.decay()
        for tp, sp in zip(self.module.parameters(), student.parameters(), strict=True):
            tp.mul_(a).add_(sp.detach(), alpha=1.0 - a)
        for tb, sb in zip(self.module.buffers(), student.buffers(), strict=True):
            if tb.dtype.is_floating_point and self.ema_buffers:
                tb.mul_(a).add_(sb.detach(), alpha=1.0 - a)
            else:
                tb.copy_(sb)
        self.num_updates += 1

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher logits (B, C, *spatial) for images (B, 1, *spatial), without gradients."""
        return self.module(x)

    def get_extra_state(self) -> dict[str, Any]:
        return {"num_updates": self.num_updates, "alpha": self.alpha}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
        self.alpha = float(state["alpha"])
