"""The bundles' ``adapt`` run id (``mtbio.bundle.workflow.adapt`` -> :func:`mtbio.uda.adapt.run_adapt`) for a few
iterations on tiny synthetic data, from a copy of the bundle with the working directory elsewhere."""

from __future__ import annotations

import json

import pytest
import torch

from tests.bundles._run import config_files, copy_bundle, run_workflow, tiny

ADAPT_BUNDLES = ("masktwins_em2d_vnc3_lucchi", "masktwins_em3d")


@pytest.fixture(autouse=True)
def _elsewhere(monkeypatch, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("bundle", ADAPT_BUNDLES)
def test_adapt_run_id_predicts_and_reports(bundle, tmp_path):
    from mtbio.data.store import open_prediction_store

    root = copy_bundle(bundle, tmp_path / "copies")
    kw = tiny(
        bundle, tmp_path / "runs", pretrain_iterations=2, checkpoint_interval=2, score_crops=2, score_crop_size=32
    )
    selected = run_workflow(root, "adapt", "adapt", **kw)[0]
    out = tmp_path / "runs" / "adapt"
    assert selected == json.loads((out / "selected.json").read_text()) and selected["complete"] is True
    assert selected["delivered"] in ("adapted", "source_only") and selected["adapted_strategy"] == "masktwins"
    assert selected["iterations"] == {"pretrain": 2, "strategy": 4}
    store = open_prediction_store(out / "prediction.zarr")
    assert store.spatial_shape == (8, 64, 64)
    assert (out / "report.md").is_file() and (out / "figures" / "scores.png").is_file()
    assert (tmp_path / "runs" / "models" / "adapt.pt").read_bytes() == open(selected["checkpoint"], "rb").read()
    assert not any((tmp_path / "elsewhere").iterdir()), "the run wrote into the working directory"


def test_adapt_config_extends_train_and_inference(tmp_path):
    """adapt.yaml is merged over train.yaml and inference.yaml: it reads their ids, and the em3d bundle's own
    pretrain_iterations (adapt needs a source-only start; its training starts from scratch) wins."""
    from monai.bundle import ConfigParser

    for bundle, pretrain in (("masktwins_em2d_vnc3_lucchi", 800), ("masktwins_em3d", 1000)):
        root = copy_bundle(bundle, tmp_path / "copies")
        parser = ConfigParser()
        parser.read_config(config_files(root, "adapt"))
        assert parser["pretrain_iterations"] == pretrain
        assert parser["adapt"]["roi_size"] == "@roi_size" and parser["adapt_image"] == "$@data.target_image"
        assert parser["adapt"]["_target_"] == "mtbio.bundle.workflow.adapt"
