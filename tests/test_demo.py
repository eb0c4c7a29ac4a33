"""`mtbio demo` end to end on tiny settings: every stage runs and the printed table is the store's metrics."""

from __future__ import annotations

import json

from mtbio.cli import main


def test_demo_tiny_end_to_end(tmp_path, capsys):
    from mtbio.data.labels import open_label_volume
    from mtbio.data.store import open_prediction_store
    from mtbio.metrics import em_metrics

    out = tmp_path / "demo"
    code = main(
        ["demo", "--out", str(out), "--iters", "4", "--shape", "8", "64", "64", "--crop", "32"]
        + ["--strategies", "source_only,masktwins", "--threads", "2"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())["results"]
    assert set(results) == {"source_only", "masktwins"}
    label = open_label_volume(out / "data" / "target_test_labels.zarr", "label")
    for strategy, rows in results.items():
        store = open_prediction_store(out / "predictions" / f"{strategy}.zarr")  # complete, or it raises
        assert store.spatial_shape == (8, 64, 64)
        assert rows[0]["IoU"] == em_metrics(store.foreground(), label)["IoU"]
        assert (out / "models" / f"{strategy}.pt").is_file()
        assert f"| {strategy} | 1 |" in printed
    # the demo's own UDA step (mtbio.uda.config.DEMO_UDA): no pseudo-label class shares on the synthetic domains
    ran = json.loads((out / "runs" / "masktwins" / "config.json").read_text())["config"]
    assert ran["pl_class_balance"] == "none"
