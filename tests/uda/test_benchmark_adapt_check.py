"""benchmarks/adapt_check.py: the benchmark's MaskTwins rows read from a pool, the summary and its table."""

from __future__ import annotations

import json
import types

import pytest

from tests._scripts import load_benchmark

chk = load_benchmark("adapt_check")


def _pool_row(seed, it, iou, strategy="masktwins", kind="healthy", direction="vnc3_to_lucchi"):
    metrics = {"IoU": iou, "mAP": iou + 0.1, "F1": iou + 0.05, "MCC": iou + 0.04}
    return {"direction": direction, "strategy": strategy, "kind": kind, "seed": seed, "iteration": it, **metrics}


def _adapt_row(seed, iou, delivered="adapted"):
    return {
        "seed": seed, "IoU": iou, "mAP": iou + 0.1, "F1": iou + 0.05, "MCC": iou + 0.04, "delivered": delivered,
        "iteration": 800, "score": 0.8, "source_only_score": 0.7, "sec_per_iter": {"pretrain": 0.08, "strategy": 0.3},
        "seconds": {"total": 600.0},
    }  # fmt: skip


def test_benchmark_rows_are_the_last_masktwins_checkpoint_per_seed(tmp_path):
    rows = [
        _pool_row(0, 400, 0.60), _pool_row(0, 800, 0.64), _pool_row(1, 800, 0.66),
        _pool_row(1, 800, 0.10, strategy="mic"), _pool_row(2, 800, 0.01, kind="forced_collapse"),
        _pool_row(2, 800, 0.30, direction="lucchi_to_vnc3"),
    ]  # fmt: skip
    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    bench = chk.benchmark_masktwins(pool)
    assert sorted(bench) == [0, 1]  # rows without "tta" were scored without it
    assert bench[0]["iteration"] == 800 and bench[0]["IoU"] == 0.64 and bench[1]["IoU"] == 0.66
    assert chk.benchmark_masktwins(tmp_path / "missing.jsonl") == {} and chk.benchmark_masktwins(None) == {}


def test_summary_compares_on_the_same_seeds():
    bench = {0: _pool_row(0, 800, 0.64), 1: _pool_row(1, 800, 0.66)}
    args = types.SimpleNamespace(data="DATA", out="OUT", pool="POOL", tta="flips", planes="auto")
    ok = chk.report([_adapt_row(0, 0.635), _adapt_row(1, 0.66)], bench, args)
    assert ok["adapt_IoU"][0] == pytest.approx(64.75) and ok["benchmark_IoU"][0] == pytest.approx(65.0)
    assert ok["difference_IoU"] == pytest.approx(-0.25) and ok["within_1_or_better"] is True
    worse = chk.report([_adapt_row(0, 0.60), _adapt_row(1, 0.62, delivered="source_only")], bench, args)
    assert worse["within_1_or_better"] is False
    unpaired = chk.report([_adapt_row(0, 0.70), _adapt_row(5, 0.70)], bench, args)
    assert unpaired["within_1_or_better"] is False  # a seed without a benchmark run is no pass
    table = chk.markdown(worse, bench, args)
    assert "| 1 | source_only | 800 | 0.800 (0.700) | 62.0 |" in table and "0.080 / 0.300" in table
    assert "within 1 point or better: False" in table
    assert "--tta flips --planes auto`" in table and "test-time augmentation `flips`, planes `auto`" in table


def test_benchmark_rows_count_only_the_same_tta(tmp_path):
    rows = [
        _pool_row(0, 800, 0.64), {**_pool_row(0, 800, 0.70), "tta": "flips"},
        {**_pool_row(1, 800, 0.66), "tta": "none"},
    ]  # fmt: skip
    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert {s: r["IoU"] for s, r in chk.benchmark_masktwins(pool).items()} == {0: 0.64, 1: 0.66}
    assert {s: r["IoU"] for s, r in chk.benchmark_masktwins(pool, tta="flips").items()} == {0: 0.70}


def test_seeds_scored_with_another_tta_are_scored_again(tmp_path):
    rows_file = tmp_path / "rows.jsonl"
    assert chk.scored_rows(rows_file, "flips") == {}
    rows = [_adapt_row(0, 0.70), {**_adapt_row(1, 0.72), "tta": "flips"}, {**_adapt_row(2, 0.71), "tta": "none"}]
    rows_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert sorted(chk.scored_rows(rows_file, "flips")) == [1]
    assert sorted(chk.scored_rows(rows_file, "none")) == [0, 2]


def test_tta_and_planes_default_to_the_tools():
    from mtbio.inference.settings import TOOL_DEFAULTS

    args = chk.parse_args(["--data", "D", "--out", "O"])
    assert args.tta == TOOL_DEFAULTS.tta.value and args.planes == TOOL_DEFAULTS.planes.value
    assert chk.parse_args(["--data", "D", "--out", "O", "--tta", "none"]).tta == "none"
    assert chk.parse_args(["--data", "D", "--out", "O", "--planes", "xy"]).planes == "xy"


def test_rows_count_only_the_same_planes(tmp_path):
    pool = tmp_path / "pool.jsonl"
    rows = [{**_pool_row(0, 800, 0.64), "tta": "flips"}, {**_pool_row(0, 800, 0.72), "tta": "flips", "planes": "auto"}]
    pool.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert chk.benchmark_masktwins(pool, tta="flips")[0]["IoU"] == 0.64  # rows without the key: xy
    assert chk.benchmark_masktwins(pool, tta="flips", planes="auto")[0]["IoU"] == 0.72
    msg = chk.pool_warning(pool, chk.benchmark_masktwins(pool, tta="none", planes="auto"), "none", "auto")
    assert "--tta none --planes auto" in msg
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text(json.dumps({**_adapt_row(0, 0.7), "tta": "flips"}) + "\n")
    assert chk.scored_rows(rows_file, "flips") and not chk.scored_rows(rows_file, "flips", "auto")


def test_a_pool_without_rows_of_the_same_tta_is_reported(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps(_pool_row(0, 800, 0.64)) + "\n")  # scored without TTA
    bench = chk.benchmark_masktwins(pool, tta="flips")
    msg = chk.pool_warning(pool, bench, "flips")
    assert bench == {} and str(pool) in msg and "--tta flips" in msg
    assert chk.pool_warning(pool, chk.benchmark_masktwins(pool), "none") is None
    assert chk.pool_warning(None, {}, "flips") is None
    assert "no such file" in chk.pool_warning(tmp_path / "missing.jsonl", {}, "flips")
    args = types.SimpleNamespace(data="DATA", out="OUT", pool=pool, tta="flips", planes="xy")
    summary = {**chk.report([_adapt_row(0, 0.70)], bench, args), "pool_warning": msg}
    assert f"Not compared: {msg}." in chk.markdown(summary, bench, args)
