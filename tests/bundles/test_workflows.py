"""train -> inference -> evaluate of every bundle for a few iterations on tiny synthetic data (model-zoo style:
``ConfigWorkflow`` with overrides), each from a copy of the bundle folder with the working directory elsewhere, and
exact resume after an interrupted ``training``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.bundles._run import BUNDLES, copy_bundle, run_workflow, tiny


@pytest.fixture(autouse=True)
def _elsewhere(monkeypatch, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # neither the repository nor the bundle folder
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)  # leave the process as found (later tests compare against 2-thread children)


@pytest.fixture
def demo(tmp_path):
    return copy_bundle("masktwins_demo", tmp_path / "copies")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_train_infer_evaluate(bundle, tmp_path):
    """From a copy of the bundle, cwd elsewhere, runs and weights in the copy (bundle_root), and the weights load
    through load_bundle_network(copy) without --trust-bundle."""
    from mtbio.bundle.data import synthetic_pair
    from mtbio.data.store import open_prediction_store
    from mtbio.inference.model_io import load_bundle_network
    from mtbio.metrics import em_metrics
    from mtbio.uda.config import UDAConfig

    root = copy_bundle(bundle, tmp_path / "copies")
    runs = root / "runs"
    kw = tiny(bundle, None)
    strategies = ["source_only", "masktwins"]
    finished = run_workflow(root, "train", "training", strategies=strategies, **kw)[0]
    assert sorted(finished) == sorted(strategies)
    assert not any((tmp_path / "elsewhere").iterdir()), "the run wrote into the working directory"
    for s in strategies:
        run = runs / s
        assert (run / "checkpoint_final_iteration=4.pt").is_file()
        assert list((run / "tb").glob("events.out.tfevents.*")), "no TensorBoard log"
        resolved = json.loads((run / "config.json").read_text())
        assert resolved["iterations"] == 4 and resolved["strategy"] == s
        assert resolved["config"]["tau"] == UDAConfig.tau  # the bundle follows the library's defaults
    assert (root / "models" / "model.pt").read_bytes() == (root / "models" / "masktwins.pt").read_bytes()

    stores = run_workflow(root, "inference", "inference", strategies=strategies, **kw)[0]
    data = synthetic_pair(runs / "data", seed=0, shape=(8, 64, 64))
    for s in strategies:
        store = open_prediction_store(stores[s])  # complete, or it raises
        assert store.spatial_shape == (8, 64, 64)
        assert (stores[s] / "0").is_dir()
        assert stores[s].parent == runs / "predictions"

    results = run_workflow(root, "evaluate", "evaluate", strategies=strategies, **kw)[0]
    label = data.test_label[:] > 0
    for s in strategies:
        expected = em_metrics(open_prediction_store(stores[s]).foreground(), label)
        assert results[s][0]["IoU"] == pytest.approx(expected["IoU"])
        assert results[s][0]["mAP"] == pytest.approx(expected["mAP"])
        stored = np.asarray(open_prediction_store(stores[s]).foreground()[:])
        predicted = (stored / 255 if stored.dtype == np.uint8 else stored) >= 0.5  # uint8 stores hold p * 255
        assert results[s][0]["foreground"] == pytest.approx(predicted.mean())
        assert results[s][0]["foreground_label"] == pytest.approx(label.mean())
    saved = json.loads((runs / "results.json").read_text())["results"]
    assert saved == results
    md = (runs / "results.md").read_text()
    assert "| masktwins | 1 |" in md
    assert f"- masktwins: {100 * results['masktwins'][0]['foreground']:.1f} % of the voxels predicted" in md
    if bundle != "masktwins_em3d":  # (em3d's test network is an override, not the bundle's network_def)
        net = load_bundle_network(root)  # models/model.pt of the copy, no opt-in needed
        teacher = torch.load(root / "models" / "masktwins.pt", weights_only=True)["teacher"]
        assert all(torch.equal(v, teacher[k]) for k, v in net.state_dict().items())


def test_pretrain_start_every_strategy_from_the_source_only_weights(tmp_path, demo):
    """pretrain_iterations > 0: a source-only run first, and every strategy starts from its EMA weights. With lr 0
    (the trainer refuses lr 0: 1e-30) no parameter moves by more than ~1e-29, so the strategies' final parameters
    must equal the pre-trained ones (and differ from the seeded random start of a run without pre-training)."""
    kw = tiny("masktwins_demo", tmp_path, pretrain_iterations=3, lr=1e-30)
    finished = run_workflow(demo, "train", "training", strategies=["masktwins"], **kw)[0]
    assert sorted(finished) == ["masktwins"]  # the pre-training is not a strategy
    assert json.loads((tmp_path / "pretrain" / "config.json").read_text())["iterations"] == 3
    assert (tmp_path / "pretrain" / "checkpoint_final_iteration=3.pt").is_file()
    pre = torch.load(tmp_path / "models" / "pretrain.pt", weights_only=True)["teacher"]
    params = [k for k, v in pre.items() if v.is_floating_point() and "running" not in k]
    for s in ("masktwins",):
        assert json.loads((tmp_path / s / "config.json").read_text())["pretrained"] is True
        final = torch.load(tmp_path / "models" / f"{s}.pt", weights_only=True)
        for part in ("student", "teacher"):
            assert all(torch.allclose(final[part][k], pre[k], rtol=0, atol=1e-25) for k in params), (s, part)
    scratch = tmp_path / "scratch"
    kw_scratch = tiny("masktwins_demo", scratch, lr=1e-30)
    run_workflow(demo, "train", "training", strategies=["source_only"], **kw_scratch)
    other = torch.load(scratch / "models" / "source_only.pt", weights_only=True)["teacher"]
    assert max((other[k] - pre[k]).abs().max().item() for k in params) > 1e-3


def _weights(path):
    payload = torch.load(path, weights_only=True)
    return {f"{part}.{k}": v for part in ("student", "teacher") for k, v in payload[part].items()}


def test_resume_after_interrupt_equals_uninterrupted(tmp_path, demo):
    kw = dict(strategies=["masktwins"], iterations=6, checkpoint_interval=1)
    full = tmp_path / "full"
    run_workflow(demo, "train", "training", **tiny("masktwins_demo", full, **kw))
    part = tmp_path / "part"
    # first invocation stops after iteration 3 (as a killed job would, with its checkpoints on disk) ...
    out = run_workflow(demo, "train", "training", **tiny("masktwins_demo", part, stop_after=3, **kw))[0]
    assert out == {} and not (part / "models" / "masktwins.pt").exists()
    assert (part / "masktwins" / "checkpoint_iteration=3.pt").is_file()
    # ... the second one resumes from that checkpoint and finishes the run
    run_workflow(demo, "train", "training", **tiny("masktwins_demo", part, **kw))
    resumed = json.loads((part / "masktwins" / "config.json").read_text())["resumed_from"]
    assert resumed is not None and resumed.endswith("iteration=3.pt")
    a, b = _weights(full / "models" / "masktwins.pt"), _weights(part / "models" / "masktwins.pt")
    assert a.keys() == b.keys()
    for k in a:  # bitwise on the CPU
        assert torch.equal(a[k], b[k]), k
    assert torch.load(part / "models" / "masktwins.pt", weights_only=True)["iteration"] == 6
    # a third call finds the finished run and keeps it
    before = (part / "models" / "masktwins.pt").stat().st_mtime_ns
    run_workflow(demo, "train", "training", **tiny("masktwins_demo", part, **kw))
    assert (part / "models" / "masktwins.pt").stat().st_mtime_ns == before


def test_train_rejects_bad_arguments(tmp_path):
    from mtbio.bundle.data import synthetic_pair
    from mtbio.bundle.workflow import train
    from mtbio.networks import get_network

    data = synthetic_pair(tmp_path / "data", shape=(4, 32, 32))
    kw = dict(
        network=get_network("small_unet", 2),
        data=data,
        uda={},
        crop_size=(32, 32),
        output_dir=tmp_path / "run",
        models_dir=tmp_path / "models",
    )
    with pytest.raises(ValueError, match="iterations"):
        train(strategies=["masktwins"], iterations=0, **kw)
    with pytest.raises(ValueError, match="strategies is empty"):
        train(strategies=[], iterations=2, **kw)
    with pytest.raises(ValueError, match="unknown strategy"):
        train(strategies=["dann"], iterations=2, **kw)
    with pytest.raises(ValueError, match="stop_after"):
        train(strategies=["masktwins"], iterations=2, stop_after=0, **kw)
    assert not (tmp_path / "models").exists()


def test_predict_needs_an_image(tmp_path):
    from mtbio.bundle.workflow import predict
    from mtbio.networks import get_network

    with pytest.raises(ValueError, match="no image to predict"):
        predict(
            network=get_network("small_unet", 2),
            models_dir=tmp_path,
            strategies=["masktwins"],
            image=None,
            predictions_dir=tmp_path / "p",
            roi_size=(32, 32),
        )


@pytest.mark.slow
@pytest.mark.realdata
def test_em3d_training_on_the_pooled_vnc3_lucchi_pair(shared_data, tmp_path):
    """The em3d bundle's 3D training on VNC III -> z-pooled Lucchi++ (--data @data_vnc3_lucchi) for a few iterations,
    with the patch and the mask block given in nm and converted on the target's 50 x 5 x 5 nm grid."""
    from mtbio.networks.weights import read_weights

    root = copy_bundle("masktwins_em3d", tmp_path / "copies")
    kw = tiny("masktwins_em3d", tmp_path / "run", data="@data_vnc3_lucchi", dataset_dir=str(shared_data))
    for voxel_key in ("crop_size", "block_size"):  # derived from patch_nm / block_nm below, not given in voxels
        kw.pop(voxel_key)
    kw.update(patch_nm=[200, 160, 160], block_nm=[100, 80, 80], in_memory=True, iterations=2, batch_size=1)
    finished = run_workflow(root, "train", "training", strategies=["masktwins"], **kw)[0]
    record = read_weights(finished["masktwins"])
    assert record.voxel_size == [50.0, 5.0, 5.0] and record.crop == [4, 32, 32]  # 200 x 160 x 160 nm
    assert list(record.config["block_size"]) == [2, 16, 16]  # 100 x 80 x 80 nm
    resolved = json.loads((tmp_path / "run" / "masktwins" / "config.json").read_text())
    assert "vnc3_to_lucchi_pooled" in json.dumps(resolved) and "thick-section simulation" in json.dumps(resolved)


def test_network_for_context_builds_the_bundle_network_with_1_plus_2k_channels():
    """A one-channel get_network network_def gets 1 + 2k input channels; one that takes them is kept; a conflicting
    in_channels, or a one-channel network not built by get_network, is refused naming network_def's in_channels."""
    from mtbio.bundle.workflow import network_for_context
    from mtbio.networks import get_network
    from mtbio.networks.context import input_channels

    plain = get_network("small_unet", 2, channels=(4, 8, 16, 32))
    assert network_for_context(plain, 0) is plain
    wide = network_for_context(plain, 2)
    assert input_channels(wide.state_dict()) == 5
    assert [k for k in wide.state_dict()] == [k for k in plain.state_dict()]  # same network, same arguments
    given = get_network("small_unet", 2, in_channels=3)
    assert network_for_context(given, 1) is given
    with pytest.raises(ValueError, match=r"takes 5 input channel\(s\), context_sections 1 gives 3: .*in_channels"):
        network_for_context(get_network("small_unet", 2, in_channels=5), 1)
    with pytest.raises(ValueError, match="context_sections 0 gives 1"):
        network_for_context(given, 0)
    with pytest.raises(ValueError, match="context_sections 1 gives 3"):
        network_for_context(torch.nn.Conv2d(1, 2, 3), 1)


def test_a_25d_bundle_training_predicts_and_loads_without_trust(tmp_path, demo):
    """`--context_sections 1` on the demo bundle (its network_def a plain get_network call): the weights take 3
    channels and record k = 1; inference and load_bundle_network (no --trust-bundle) build the 3-channel network."""
    from mtbio.data.store import open_prediction_store
    from mtbio.inference.model_io import load_bundle_network
    from mtbio.networks.context import context_of, input_channels
    from mtbio.networks.weights import read_weights

    kw = tiny("masktwins_demo", None, context_sections=1, score_crops=2, score_crop_size=32, iterations=2)
    run_workflow(demo, "train", "training", strategies=["masktwins"], **kw)
    record = read_weights(demo / "models" / "model.pt")
    assert record.context_sections == 1 and input_channels(record.teacher) == 3
    stores = run_workflow(demo, "inference", "inference", strategies=["masktwins"], **kw)[0]
    assert open_prediction_store(stores["masktwins"]).spatial_shape == (8, 64, 64)
    net = load_bundle_network(demo)
    assert context_of(net) == 1 and input_channels(net.state_dict()) == 3


def test_em3d_refuses_context_sections(tmp_path):
    """`--context_sections 1` on the 3D bundle stops with the Recipe's "is for 2D networks" before any training."""
    root = copy_bundle("masktwins_em3d", tmp_path / "copies")
    with pytest.raises(Exception) as info:  # MONAI wraps the workflow's ValueError when it instantiates `training`
        run_workflow(root, "train", "training", **tiny("masktwins_em3d", None, context_sections=1))
    chain, err = [], info.value
    while err is not None:
        chain.append(str(err))
        err = err.__cause__ or err.__context__
    assert any("context_sections 1" in m and "is for 2D networks" in m for m in chain), chain
    assert not (root / "runs" / "masktwins").exists() and not (root / "models").exists()
