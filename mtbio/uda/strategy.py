"""The UDA strategies one trainer runs, and what each one does in a step."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["MaskKind", "Strategy", "StrategySpec", "strategy_spec"]


class Strategy(enum.StrEnum):
    """Which training signal a step uses.

    ``SOURCE_ONLY``: supervised loss on labelled source crops only (the target is never looked at).
    ``MEAN_TEACHER``: + pseudo-label loss of the student on the strongly augmented, unmasked target.
    ``MIC``: + pseudo-label loss on one randomly block-masked strong view (default ratio 0.7).
    ``RANDOM_PAIR``: two independent random masks (ratio 0.5 each), pseudo-label loss on both + consistency.
    ``MASKTWINS``: the complementary pair ``M`` / ``1 - M`` (ratio 0.5), pseudo-label loss on both +
    consistency between the two views.
    ``ORACLE``: supervised loss on the *target* with its labels (an upper bound; the source is not used).
    """

    SOURCE_ONLY = "source_only"
    MEAN_TEACHER = "mean_teacher"
    MIC = "mic"
    RANDOM_PAIR = "random_pair"
    MASKTWINS = "masktwins"
    ORACLE = "oracle"


class MaskKind(enum.StrEnum):
    """How the student's target views are masked."""

    NONE = "none"
    SINGLE = "single"
    INDEPENDENT_PAIR = "independent_pair"
    COMPLEMENTARY_PAIR = "complementary_pair"


@dataclass(frozen=True)
class StrategySpec:
    """What a strategy needs and does (see :func:`strategy_spec`)."""

    uses_source: bool
    uses_target: bool
    pseudo_labels: bool
    target_supervised: bool
    mask: MaskKind
    default_mask_ratio: float
    consistency: bool

    @property
    def n_views(self) -> int:
        """Student views of the target per image."""
        return 2 if self.mask in (MaskKind.INDEPENDENT_PAIR, MaskKind.COMPLEMENTARY_PAIR) else 1


_SPECS = {
    Strategy.SOURCE_ONLY: StrategySpec(True, False, False, False, MaskKind.NONE, 0.0, False),
    Strategy.MEAN_TEACHER: StrategySpec(True, True, True, False, MaskKind.NONE, 0.0, False),
    Strategy.MIC: StrategySpec(True, True, True, False, MaskKind.SINGLE, 0.7, False),
    Strategy.RANDOM_PAIR: StrategySpec(True, True, True, False, MaskKind.INDEPENDENT_PAIR, 0.5, True),
    Strategy.MASKTWINS: StrategySpec(True, True, True, False, MaskKind.COMPLEMENTARY_PAIR, 0.5, True),
    Strategy.ORACLE: StrategySpec(False, True, False, True, MaskKind.NONE, 0.0, False),
}


def strategy_spec(strategy: Strategy | str) -> StrategySpec:
    """The :class:`StrategySpec` of a strategy (accepts the enum or its string value)."""
    try:
        return _SPECS[Strategy(strategy)]
    except ValueError:
        raise ValueError(
            f"unknown strategy {strategy!r}; choose one of {', '.join(s.value for s in Strategy)}"
        ) from None
