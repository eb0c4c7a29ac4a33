"""The three widgets driven through a napari viewer under Xvfb: set values, run, check layers and contents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _wait(qtbot, widget, worker, timeout: int = 20_000) -> None:  # noqa: ANN001
    assert worker is not None, f"the widget refused to start: {widget.status.value}"
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def _oracle_probability(network, image: np.ndarray, roi: tuple[int, ...], overlap: float) -> np.ndarray:  # noqa: ANN001
    """MONAI sliding-window inference of the image z-scored per section (mtbio's rule for 2D networks), softmax
    channel 1 as uint8 (the store's encoding)."""
    import torch
    from monai.inferers import sliding_window_inference

    from mtbio.data.store import encode_probability

    x = image.astype(np.float64)
    x = ((x - x.mean(axis=(-2, -1), keepdims=True)) / x.std(axis=(-2, -1), keepdims=True)).astype(np.float32)
    sections = x[None] if x.ndim == 2 else x
    out = []
    with torch.no_grad():
        for s in sections:
            logits = sliding_window_inference(
                torch.from_numpy(s)[None, None], roi, 4, network, overlap, mode="gaussian"
            )
            out.append(torch.softmax(logits, 1)[0, 1].numpy())
    prob = np.stack(out)
    return encode_probability(prob[0] if image.ndim == 2 else prob, "uint8")


# ------------------------------------------------------------------------------------------------- predict


def test_predict_widget_checkpoint_2d(
    make_napari_viewer, qtbot, tmp_path: Path, checkpoint_2d: Path, bundle_2d: Path
) -> None:
    from mtbio.napari.predict_widget import PredictWidget
    from tests.napari.conftest import small_unet

    viewer = make_napari_viewer()
    image = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    viewer.add_image(image, name="em", scale=(5.0, 5.0))
    widget = PredictWidget(viewer)
    assert widget.image.value is viewer.layers["em"]
    assert widget.roi.value == "256, 256"  # the 2D default, filled in from the image
    widget.network.value = "small_unet"
    assert widget.model_path.mode.value == "r"
    widget.model_path.value = checkpoint_2d
    widget.roi.value = "32, 32"
    assert widget.tta.value == "flips"  # the tools' default; the oracle below is the plain network
    widget.tta.value = "none"
    widget.output.value = tmp_path / "pred.zarr"
    _wait(qtbot, widget, widget.start())
    assert widget.status.value.startswith("done"), widget.status.value
    expected = _oracle_probability(small_unet(2), image, (32, 32), 0.25)
    got = np.asarray(viewer.layers["em probability"].data)
    assert got.shape == (64, 64) and np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    model = {"network": "small_unet", "path": str(checkpoint_2d), "spatial_dims": 2}
    assert viewer.layers["em probability"].metadata["mtbio_model"] == model  # the Compare widget scores it
    # weights of another network: the error names the file, the widget is ready again
    widget.model_path.value = bundle_2d / "models" / "model.pt"
    _wait(qtbot, widget, widget.start())
    assert "does not fit the network" in widget.status.value and "model.pt" in widget.status.value
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_predict_widget_bundle_adds_lazy_layers(make_napari_viewer, qtbot, tmp_path: Path, bundle_2d: Path) -> None:
    import dask.array as da

    from mtbio.napari._options import PROBABILITY_STYLE
    from mtbio.napari.predict_widget import PredictWidget
    from tests.napari.conftest import tiny_unet

    viewer = make_napari_viewer()
    volume = np.random.default_rng(1).integers(0, 255, (3, 48, 40), dtype=np.uint8)
    viewer.add_image(volume, name="em", scale=(40.0, 8.0, 8.0))
    widget = PredictWidget(viewer)
    widget.network.value = "bundle"
    widget.model_path.value = bundle_2d
    widget.roi.value = "32, 32"  # 2D windows, section by section
    widget.overlap.value = 0.5
    widget.tta.value = "none"  # the oracle is the plain network
    widget.output.value = tmp_path / "pred.zarr"
    _wait(qtbot, widget, widget.start())
    assert widget.status.value.startswith("done"), widget.status.value
    prob_layer, mask_layer = viewer.layers["em probability"], viewer.layers["em mask"]
    assert isinstance(prob_layer.data, da.Array) and isinstance(mask_layer.data, da.Array)  # read back lazily
    assert prob_layer.colormap.name == PROBABILITY_STYLE.colormap and prob_layer.blending == "additive"
    np.testing.assert_allclose(prob_layer.scale, (40.0, 8.0, 8.0))
    expected = _oracle_probability(tiny_unet(2), volume, (32, 32), 0.5)
    got = np.asarray(prob_layer.data)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    np.testing.assert_array_equal(np.asarray(mask_layer.data), (got / 255.0 >= 0.5).astype(np.uint8))
    assert widget.progress.value == widget.progress.max  # progress reached the end
    # a second run (overwriting the store) replaces the layers instead of stacking copies
    _wait(qtbot, widget, widget.start())
    assert [layer.name for layer in viewer.layers].count("em probability") == 1


def test_predict_widget_cancel_leaves_incomplete_store(
    make_napari_viewer, qtbot, tmp_path: Path, bundle_2d: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time
    import warnings

    import mtbio.napari.predict_widget as pw
    from mtbio.data.store import open_prediction_store
    from mtbio.napari._layers import IncompletePredictionWarning
    from mtbio.napari._options import INCOMPLETE_SUFFIX

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(2).integers(0, 255, (32, 32, 32), dtype=np.uint8), name="em")
    widget = pw.PredictWidget(viewer)
    load = pw.load_network

    def load_after_cancel(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - the worker waits for the click
        deadline = time.monotonic() + 10
        while not widget._should_stop() and time.monotonic() < deadline:
            time.sleep(0.01)
        return load(*args, **kwargs)

    monkeypatch.setattr(pw, "load_network", load_after_cancel)
    widget.model_path.value = bundle_2d
    widget.roi.value = "32, 32"
    widget.output.value = tmp_path / "stopped.zarr"
    with warnings.catch_warnings(record=True) as caught:  # from the start: the worker's callbacks may run early
        warnings.simplefilter("always")
        worker = widget.start()
        widget.cancel_button.clicked()  # stop is polled before the first block: none runs
        _wait(qtbot, widget, worker)
        # the layers (and the warning) may arrive in a later turn of the event loop than the end of the worker
        qtbot.waitUntil(lambda: f"em probability{INCOMPLETE_SUFFIX}" in viewer.layers, timeout=10_000)
    assert any(issubclass(w.category, IncompletePredictionWarning) for w in caught), widget.status.value
    assert not open_prediction_store(tmp_path / "stopped.zarr", require_complete=False).complete
    assert f"em probability{INCOMPLETE_SUFFIX}" in viewer.layers
    assert "incomplete" in widget.status.value
    # resume finishes the same store
    monkeypatch.setattr(pw, "load_network", load)
    widget.resume.value = True
    _wait(qtbot, widget, widget.start())
    assert widget.status.value.startswith("done"), widget.status.value
    assert open_prediction_store(tmp_path / "stopped.zarr").complete
    assert "em probability" in viewer.layers and f"em probability{INCOMPLETE_SUFFIX}" not in viewer.layers


def test_predict_widget_on_lazy_reader_layer(make_napari_viewer, qtbot, tmp_path: Path, bundle_2d: Path) -> None:
    """An image opened lazily by the reader (dask over zarr chunks) is predicted block by block, never loaded
    whole by the widget: the source handed to predict_volume is the layer's dask array."""
    import dask.array as da
    import zarr

    from mtbio.napari.predict_widget import PredictWidget
    from tests.napari.conftest import tiny_unet

    volume = np.random.default_rng(7).integers(0, 255, (4, 40, 48), dtype=np.uint8)
    group = zarr.open_group(str(tmp_path / "em.zarr"), mode="w", zarr_format=3)
    group.create_array("raw", data=volume, chunks=(1, 40, 48))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "em.zarr"), plugin="mtbio")
    assert isinstance(layer.data, da.Array)
    widget = PredictWidget(viewer)
    widget.model_path.value = bundle_2d
    widget.roi.value = "32, 32"
    widget.tta.value = "none"  # the oracle is the plain network
    widget.output.value = tmp_path / "pred.zarr"
    job = widget.job()
    assert isinstance(job.source, da.Array) and job.source.chunksize == (1, 40, 48)
    _wait(qtbot, widget, widget.start())
    got = np.asarray(viewer.layers["em raw probability"].data)
    expected = _oracle_probability(tiny_unet(2), volume, (32, 32), 0.25)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_predict_widget_rejects_bad_roi(make_napari_viewer, bundle_2d: Path) -> None:
    from mtbio.napari.predict_widget import PredictWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.uint8), name="em")
    widget = PredictWidget(viewer)
    widget.model_path.value = bundle_2d
    widget.roi.value = "8, 8, 8"
    assert widget.start() is None
    assert "more axes" in widget.status.value
    widget.roi.value = "a, b"
    assert widget.start() is None and "'a, b'" in widget.status.value


# ------------------------------------------------------------------------------------------------- compare


def _compare_fixture(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = np.zeros((4, 40, 40), np.uint8)
    label[:, 10:30, 10:30] = 1
    noise_a = rng.random(label.shape).astype(np.float32)
    noise_b = rng.random(label.shape).astype(np.float32)
    prob_a = np.clip(0.45 * label + 0.55 * noise_a, 0, 1).astype(np.float32)  # source-only: noisy
    prob_b = np.clip(0.7 * label + 0.35 * noise_b, 0, 1).astype(np.float32)  # adapted: better
    prob_b[2] = np.clip(0.3 * noise_b[2], 0, 1)  # ... except one section B misses entirely
    return prob_a, prob_b, label * 255


def test_compare_widget_with_ground_truth(make_napari_viewer, qtbot) -> None:
    from sklearn.metrics import average_precision_score, jaccard_score

    from mtbio.napari._options import GAINED, LOST
    from mtbio.napari.compare_widget import CompareWidget

    prob_a, prob_b, label = _compare_fixture()
    viewer = make_napari_viewer()
    viewer.add_image(prob_a, name="source-only")
    viewer.add_image(prob_b, name="masktwins")
    viewer.add_labels(label, name="gt")
    widget = CompareWidget(viewer)
    widget.pred_a.value = viewer.layers["source-only"]
    widget.pred_b.value = viewer.layers["masktwins"]
    widget.ground_truth.value = viewer.layers["gt"]
    _wait(qtbot, widget, widget.start())
    diff = np.asarray(viewer.layers["difference B vs A"].data)
    a, b = prob_a >= 0.5, prob_b >= 0.5
    np.testing.assert_array_equal(diff == GAINED, b & ~a)
    np.testing.assert_array_equal(diff == LOST, a & ~b)
    result = widget.result
    assert result is not None and result.columns["section"] == [0, 1, 2, 3]
    for z in range(4):
        assert result.columns["A IoU"][z] == pytest.approx(jaccard_score(label[z].ravel() > 0, a[z].ravel()), abs=1e-4)
        assert result.columns["B IoU"][z] == pytest.approx(jaccard_score(label[z].ravel() > 0, b[z].ravel()), abs=1e-4)
        ap = average_precision_score(label[z].ravel() > 0, prob_b[z].ravel())
        assert result.columns["B mAP"][z] == pytest.approx(ap, abs=1e-4)
    assert result.worst[0] == 2  # the section B misses
    assert widget.table.shape[0] == 4 and "B IoU" in widget.table.column_headers
    assert widget.worst.value == 2
    viewer.dims.set_point(0, 0)
    widget.jump_button.clicked()
    assert viewer.dims.current_step[0] == 2


def test_compare_widget_without_ground_truth(make_napari_viewer, qtbot) -> None:
    from mtbio.data.store import encode_probability
    from mtbio.napari.compare_widget import CompareWidget

    prob_a, prob_b, _ = _compare_fixture(seed=4)
    viewer = make_napari_viewer()
    viewer.add_image(encode_probability(prob_a, "uint8"), name="A")  # store encoding p*255
    viewer.add_image(encode_probability(prob_b, "uint8"), name="B")
    widget = CompareWidget(viewer)
    widget.pred_a.value, widget.pred_b.value = viewer.layers["A"], viewer.layers["B"]
    assert widget.ground_truth.value is None
    _wait(qtbot, widget, widget.start())
    a = encode_probability(prob_a, "uint8") / 255.0 >= 0.5
    b = encode_probability(prob_b, "uint8") / 255.0 >= 0.5
    cols = widget.result.columns
    assert cols["gained"] == [int((b & ~a)[z].sum()) for z in range(4)]
    assert cols["lost"] == [int((a & ~b)[z].sum()) for z in range(4)]
    changed = [(a ^ b)[z].sum() for z in range(4)]
    assert widget.result.worst[0] == int(np.argmax(changed))


def test_compare_widget_shows_the_label_free_score_of_each_model(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    import torch

    from mtbio.napari.compare_widget import CompareWidget
    from mtbio.networks.weights import WeightsRecord, write_weights
    from mtbio.uda.recipe import Recipe
    from mtbio.uda.selection import score_network
    from tests.napari.conftest import TINY_UNET, tiny_unet

    prob_a, prob_b, _ = _compare_fixture(seed=5)
    target = np.random.default_rng(6).normal(100, 20, (4, 40, 40)).astype(np.float32)
    healthy, dead = tiny_unet(2), tiny_unet(2)
    with torch.no_grad():  # the last layer's bias: background everywhere
        last = [m for m in dead.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)][-1]
        last.bias.copy_(torch.tensor([50.0, -50.0]))
    paths = {}
    for name, net in (("a", healthy), ("b", dead)):
        record = WeightsRecord.from_network(net, network="small_unet", spatial_dims=2, network_kwargs=TINY_UNET)
        record.extra["source_foreground_fraction"] = 0.1
        paths[name] = write_weights(record, tmp_path / f"{name}.pt")
    viewer = make_napari_viewer()
    viewer.add_image(target, name="target")
    viewer.add_image(prob_a, name="A", metadata={"mtbio_model": {"network": "small_unet", "path": str(paths["a"])}})
    viewer.add_image(prob_b, name="B")
    widget = CompareWidget(viewer)
    viewer.window.add_dock_widget(widget)  # the viewer owns it (and closes it)
    widget.pred_a.value, widget.pred_b.value = viewer.layers["A"], viewer.layers["B"]
    assert Path(widget.weights_a.value) == paths["a"]  # filled in from the layer the Predict widget made
    _wait(qtbot, widget, widget.start())
    assert widget.result.scores == {}  # no target: no scores
    widget.target.value = viewer.layers["target"]
    _wait(qtbot, widget, widget.start())
    scores = widget.result.scores
    assert scores["A"] is not None and scores["B"] is None and "B B: no model known" in widget.scores.value
    # the 40 px target clips the score crop to 32; the sample of the Recipe's size
    expected = score_network(healthy, target, crop_size=(32, 32), n_crops=Recipe().score_crops, source_fraction=0.1)
    assert scores["A"]["score"] == pytest.approx(expected.score) and scores["A"]["crop_size"] == [32, 32]
    assert scores["A"]["collapsed"] == expected.collapsed
    widget.weights_b.value = paths["b"]
    _wait(qtbot, widget, widget.start())
    b = widget.result.scores["B"]
    assert b["collapsed"] and b["reasons"] == ["all background"]
    assert "B B: COLLAPSED score 0.000 (foreground 0.0 % vs source 10.0 %; all background)" in widget.scores.value
    widget.weights_b.value = tmp_path / "missing.pt"
    _wait(qtbot, widget, widget.start())
    assert "not scored" in widget.scores.value and "does not exist" in widget.scores.value


def test_compare_widget_shape_mismatch(make_napari_viewer) -> None:
    from mtbio.napari.compare_widget import CompareWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 8, 8), np.float32), name="A")
    viewer.add_image(np.zeros((2, 8, 9), np.float32), name="B")
    widget = CompareWidget(viewer)
    widget.pred_a.value, widget.pred_b.value = viewer.layers["A"], viewer.layers["B"]
    assert widget.start() is None
    assert "differ in shape" in widget.status.value


# ---------------------------------------------------------------------------------------------------- mask


def test_mask_widget_2d_matches_complementary_masks(make_napari_viewer) -> None:
    import torch

    from mtbio.data.normalize import zscore_image as zscore
    from mtbio.masking import complementary_masks
    from mtbio.napari.mask_widget import PAIR_LAYER, VIEW_C_LAYER, VIEW_M_LAYER, MaskPreviewWidget

    viewer = make_napari_viewer()
    image = np.random.default_rng(5).integers(0, 255, (64, 96), dtype=np.uint8)
    viewer.add_image(image, name="em")
    widget = MaskPreviewWidget(viewer)
    widget.block_size.value = 16
    widget.ratio.value = 0.5
    widget.seed.value = 7
    preview = widget.update_preview()
    assert preview is not None
    m_ref, c_ref = complementary_masks((1, 1, 64, 96), 16, 0.5, torch.Generator().manual_seed(7))
    np.testing.assert_array_equal(viewer.layers[PAIR_LAYER].data, np.where(m_ref[0, 0].numpy() > 0, 1, 2))
    np.testing.assert_allclose(viewer.layers[VIEW_M_LAYER].data, zscore(image) * m_ref[0, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(viewer.layers[VIEW_C_LAYER].data, zscore(image) * c_ref[0, 0].numpy(), atol=1e-6)
    assert (viewer.layers[PAIR_LAYER].data == 1).mean() == pytest.approx(0.5)  # 24 blocks, 12 hidden
    # live: changing the ratio redraws
    widget.ratio.value = 0.75
    assert (viewer.layers[PAIR_LAYER].data == 1).mean() == pytest.approx(0.25)
    # the student views sit beside the image, not over it
    assert viewer.layers[VIEW_M_LAYER].translate[-1] > 96 and viewer.layers[VIEW_C_LAYER].translate[-1] > 2 * 96


def test_mask_widget_3d_blocks_and_current_section(make_napari_viewer) -> None:
    from mtbio.napari._options import MaskView
    from mtbio.napari.mask_widget import PAIR_LAYER, MaskPreviewWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(6).random((24, 32, 32)).astype(np.float32), name="em", scale=(2, 1, 1))
    widget = MaskPreviewWidget(viewer)
    widget.block_size.value = 8
    viewer.dims.set_point(0, 10.0)  # world z 10 = section 5 with scale 2
    widget.view.value = MaskView.PLANE
    widget.update_preview()
    pair = viewer.layers[PAIR_LAYER]
    assert pair.data.shape == (1, 32, 32) and widget.preview.offset[0] == 5
    np.testing.assert_allclose(pair.translate, (10.0, 0, 0))
    viewer.dims.set_point(0, 20.0)  # live: follows the section slider
    assert widget.preview.offset[0] == 10
    widget.view.value = MaskView.VOLUME
    data = viewer.layers[PAIR_LAYER].data
    assert data.shape == (24, 32, 32)
    blocks = data.reshape(3, 8, 4, 8, 4, 8)
    assert (blocks == blocks[:, :1, :, :1, :, :1]).all()  # constant over each 8^3 block
    assert (data == 1).mean() == pytest.approx(0.5)


def test_predict_widget_needs_trust_for_a_bundle_that_runs_code(
    make_napari_viewer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 'trust bundle' box reaches the loader: unticked, a bundle whose network_def is an expression is refused
    before anything of it runs; ticked, it loads."""
    import torch
    import yaml

    import mtbio.napari.predict_widget as pw
    from mtbio.bundle.trust import UntrustedBundleError

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "evil"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    touch = "__import__('pathlib').Path('MARKER').touch()"
    (root / "configs" / "inference.yaml").write_text(
        yaml.safe_dump({"network_def": f"$({touch}, torch.nn.Conv2d(1, 2, 1))[1]"})
    )
    torch.save(torch.nn.Conv2d(1, 2, 1).state_dict(), root / "models" / "model.pt")
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), dtype=np.uint8), name="em")
    widget = pw.PredictWidget(viewer)
    widget.model_path.value = root
    widget.roi.value = "16, 16"
    job = widget.job()
    assert job.trust_bundle is False
    with pytest.raises(UntrustedBundleError, match="trust bundle"):
        pw.load_network(job.network, job.model_path, 2, trust=job.trust_bundle)
    assert not (tmp_path / "MARKER").exists()
    widget.trust_bundle.value = True
    job = widget.job()
    assert isinstance(pw.load_network(job.network, job.model_path, 2, trust=job.trust_bundle), torch.nn.Conv2d)
    assert (tmp_path / "MARKER").exists()
