"""Flags generated from UDAConfig: every field reachable, defaults only from the dataclass."""

from __future__ import annotations

import argparse

import pytest

from mtbio.uda.config import ClassBalance, StrongAugment, UDAConfig
from mtbio.uda.options import add_config_arguments, config_fields, config_from_args, field_docs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_config_arguments(p, UDAConfig)
    return p


def test_no_flag_gives_the_dataclass_defaults():
    assert config_from_args(_parser().parse_args([])) == UDAConfig()


def test_every_field_has_a_flag_and_a_help_text():
    p = _parser()
    flags = {s for a in p._actions for s in a.option_strings}
    docs = field_docs(UDAConfig) | {f"augment.{k}": v for k, v in field_docs(StrongAugment).items()}
    for name, _, _ in config_fields(UDAConfig):
        assert "--" + name.replace(".", "-").replace("_", "-") in flags, name
        assert docs[name], f"{name} has no line in the Attributes section"


def test_flags_parse_every_kind_of_field():
    args = _parser().parse_args(
        ["--tau", "0.9", "--block-size", "4,16,16", "--no-target-bn-stats", "--augment-gamma", "0.1",
         "--rampup", "5", "--mask-ratio", "none", "--strategy", "mic", "--pl-class-balance", "equal"]
    )  # fmt: skip
    cfg = config_from_args(args)
    assert cfg.tau == 0.9 and cfg.block_size == (4, 16, 16) and cfg.target_bn_stats is False
    assert cfg.augment.gamma == 0.1 and cfg.augment.brightness == StrongAugment().brightness
    assert cfg.rampup_iterations == 5 and cfg.mask_ratio is None and cfg.strategy.value == "mic"
    assert cfg.pl_class_balance is ClassBalance.EQUAL
    assert config_from_args(args, strategy="source_only").strategy.value == "source_only"


def test_bad_values_are_refused():
    with pytest.raises(SystemExit):
        _parser().parse_args(["--pl-weighting", "bogus"])
    with pytest.raises(ValueError, match="tau"):
        config_from_args(_parser().parse_args(["--tau", "2"]))
