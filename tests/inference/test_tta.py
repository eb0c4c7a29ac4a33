"""Test-time augmentation (``InferenceSettings.tta``, :mod:`mtbio.inference.tta`): the wrapper's arithmetic, its
equivariance, the square-window rule, and the same TTA in the streaming path, in-memory validation and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtbio.inference.settings import TTA, TTA_VIEWS, InferenceSettings
from mtbio.inference.tta import TTAWrapper, tta_views, with_tta
from tests.inference._nets import conv_net, tiny_unet

torch.set_num_threads(2)


def _manual(net: torch.nn.Module, x: torch.Tensor, views: list) -> torch.Tensor:
    """Mean softmax probability of ``net`` over ``views`` (pairs of forward / inverse callables), by hand."""
    probs = [torch.softmax(inverse(net(forward(x))), dim=1) for forward, inverse in views]
    return torch.stack(probs).mean(0)


def _flip_views() -> list:
    out = []
    for axes in ((), (-2,), (-1,), (-2, -1)):
        out.append(((lambda t, a=axes: t.flip(a) if a else t), (lambda t, a=axes: t.flip(a) if a else t)))
    return out


def _dihedral_views() -> list:
    out = []
    for flip in (False, True):
        for k in range(4):

            def forward(t: torch.Tensor, k: int = k, flip: bool = flip) -> torch.Tensor:
                return torch.rot90(t.flip(-1) if flip else t, k, dims=(-2, -1))

            def inverse(t: torch.Tensor, k: int = k, flip: bool = flip) -> torch.Tensor:
                t = torch.rot90(t, -k, dims=(-2, -1))
                return t.flip(-1) if flip else t

            out.append((forward, inverse))
    return out


def test_none_is_the_plain_network() -> None:
    net = tiny_unet(2)
    assert with_tta(net, "none") is net and with_tta(net, None) is net
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(TTAWrapper(net, "none")(x), net(x))
    assert InferenceSettings().tta is TTA.NONE
    assert {m: len(tta_views(m)) for m in TTA} == TTA_VIEWS == {TTA.NONE: 1, TTA.FLIPS: 4, TTA.FLIPS_ROT90: 8}


@pytest.mark.parametrize(("mode", "views"), [("flips", _flip_views()), ("flips_rot90", _dihedral_views())])
def test_the_output_is_the_log_of_the_views_mean_probability(mode, views) -> None:
    """A random conv net (not equivariant): softmax(wrapper(x)) is the mean of the views' probabilities, each view
    transformed back (flips by torch.flip, turns by torch.rot90, computed here independently of the wrapper)."""
    net = conv_net(2, seed=3)
    x = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        out = TTAWrapper(net, mode)(x)
        expected = _manual(net, x, views)
        plain = torch.softmax(net(x), dim=1)
    assert out.shape == (3, 2, 12, 12) and out.dtype == torch.float32
    np.testing.assert_allclose(torch.softmax(out, 1).numpy(), expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(out.numpy(), torch.log(expected).numpy(), atol=1e-5)
    assert (torch.softmax(out, 1) - plain).abs().max() > 1e-3  # the views do change the prediction


def test_3d_networks_average_the_in_plane_views_only() -> None:
    net = conv_net(3, seed=4)
    x = torch.randn(2, 1, 6, 10, 10)
    with torch.no_grad():
        out = torch.softmax(TTAWrapper(net, "flips")(x), 1)
        expected = _manual(net, x, _flip_views())
        with_z = _manual(net, x, [(lambda t: t, lambda t: t), (lambda t: t.flip(-3), lambda t: t.flip(-3))])
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-6)
    assert not torch.allclose(out, with_z, atol=1e-4)  # z is not one of the views


@pytest.mark.parametrize("mode", ["flips", "flips_rot90"])
@pytest.mark.parametrize("dims", [2, 3])
def test_the_wrapper_is_equivariant_to_its_views(mode, dims) -> None:
    """The views form a group: predicting a flipped (turned) window gives the flipped (turned) prediction."""
    net = tiny_unet(dims, seed=1)
    x = torch.randn(2, 1, *((4,) if dims == 3 else ()), 16, 16)
    wrapper = TTAWrapper(net, mode)
    with torch.no_grad():
        out = wrapper(x)
        for forward, _ in _dihedral_views() if mode == "flips_rot90" else _flip_views():
            np.testing.assert_allclose(wrapper(forward(x)).numpy(), forward(out).numpy(), atol=1e-5)


def test_an_equivariant_network_is_unchanged_by_tta() -> None:
    """A 1x1 convolution commutes with every flip and turn: its TTA prediction is its own."""
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 1).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        plain = torch.softmax(net(x), 1)
        for mode in ("flips", "flips_rot90"):
            np.testing.assert_allclose(torch.softmax(TTAWrapper(net, mode)(x), 1).numpy(), plain.numpy(), atol=1e-6)


def test_sigmoid_and_raw_outputs_average_in_their_own_space() -> None:
    net = conv_net(2, seed=2)
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        views = [net(x), net(x.flip(-2)).flip(-2), net(x.flip(-1)).flip(-1), net(x.flip((-2, -1))).flip((-2, -1))]
        sig = TTAWrapper(net, "flips", "sigmoid")(x)
        raw = TTAWrapper(net, "flips", None)(x)
    np.testing.assert_allclose(torch.sigmoid(sig).numpy(), torch.stack(views).sigmoid().mean(0).numpy(), atol=1e-6)
    np.testing.assert_allclose(raw.numpy(), torch.stack(views).mean(0).numpy(), atol=1e-6)


def test_flips_rot90_needs_a_square_window() -> None:
    with pytest.raises(ValueError, match="square window"):
        InferenceSettings(roi_size=(32, 16), tta="flips_rot90")
    with pytest.raises(ValueError, match="square window"):
        InferenceSettings(roi_size=(8, 16, 32), tta="flips_rot90")
    InferenceSettings(roi_size=(8, 16, 16), tta="flips_rot90")  # square in-plane: z may differ
    with pytest.raises(ValueError, match="square window"):  # set later, e.g. a bundle's window
        InferenceSettings.merged(InferenceSettings(tta="flips_rot90"), roi_size=(16, 24))
    with pytest.raises(ValueError, match="square in-plane"), torch.no_grad():
        TTAWrapper(conv_net(2), "flips_rot90")(torch.zeros(1, 1, 8, 12))
    from mtbio.uda.evaluate import predict_in_memory

    with pytest.raises(ValueError, match="square window"):
        predict_in_memory(conv_net(2), np.zeros((2, 16, 16), np.float32), roi_size=(16, 8), tta="flips_rot90")


def test_an_unknown_tta_is_a_clear_error() -> None:
    for bad in ("mirror", "flip", 4):
        with pytest.raises(ValueError, match=r"tta must be one of \['none', 'flips', 'flips_rot90'\]"):
            InferenceSettings(tta=bad)
    with pytest.raises(ValueError, match="tta must be one of"):
        TTAWrapper(conv_net(2), "rot")
    assert InferenceSettings(tta="FLIPS").tta is TTA.FLIPS


@pytest.mark.parametrize(
    ("mode", "dims", "roi", "norm"),
    [("flips", 2, (16, 16), "zscore_section"), ("flips_rot90", 2, (16, 16), "zscore_section"),
     ("flips", 3, (2, 16, 16), "zscore")],
)  # fmt: skip
def test_predict_volume_with_tta_equals_predict_in_memory(tmp_path, mode, dims, roi, norm) -> None:
    """The streaming path and the in-memory validation apply the same TTA: a 2D network on a (Z, Y, X) stack (section
    by section) and a 3D network, against predict_in_memory (MONAI's sliding windows), within the blending
    tolerance."""
    from mtbio.data.store import open_prediction_store
    from mtbio.inference.predict import predict_volume
    from mtbio.uda.evaluate import predict_in_memory

    vol = np.random.default_rng(0).normal(size=(3, 24, 20)).astype(np.float32)
    net = tiny_unet(dims, seed=dims)
    out = tmp_path / "p.zarr"
    settings = InferenceSettings(roi_size=roi, activation="softmax", dtype="float32", normalize=norm, tta=mode)
    predict_volume(net, vol, out, settings=settings)
    store = open_prediction_store(out)
    ref = predict_in_memory(net, vol, roi_size=roi, tta=mode)
    np.testing.assert_allclose(np.asarray(store.array[1]), ref, atol=1e-5)
    assert np.abs(ref - predict_in_memory(net, vol, roi_size=roi)).max() > 1e-3
    assert store.meta["config"]["tta"] == mode


def test_resuming_with_another_tta_is_refused(tmp_path) -> None:
    from mtbio.inference.predict import predict_volume

    vol = np.random.default_rng(1).normal(size=(2, 16, 16)).astype(np.float32)
    out = tmp_path / "p.zarr"
    predict_volume(conv_net(2), vol, out, roi_size=(16, 16), tta="flips")
    with pytest.raises(ValueError, match="different config"):
        predict_volume(conv_net(2), vol, out, roi_size=(16, 16), resume=True)
    predict_volume(conv_net(2), vol, out, roi_size=(16, 16), tta="flips", resume=True)


def test_cli_tta_flag_and_its_errors(tmp_path, capsys, monkeypatch) -> None:
    """``mtbio predict --tta`` reaches predict_volume's settings; an unknown value is argparse's "invalid choice"
    (exit 2, the choices listed) and flips_rot90 with a window that is not square one clean error line."""
    import tifffile

    import mtbio.inference.predict as predict_module
    from mtbio.cli import main

    tifffile.imwrite(tmp_path / "s.tif", np.zeros((2, 16, 24), np.uint8))
    torch.save(conv_net(2).state_dict(), tmp_path / "w.pt")
    seen: list = []
    monkeypatch.setattr(predict_module, "predict_volume", lambda net, src, out, **kw: seen.append(kw["settings"]))
    monkeypatch.setattr("mtbio.inference.model_io.load_named_network", lambda *a, **k: conv_net(2))
    base = ["predict", str(tmp_path / "s.tif"), str(tmp_path / "o.zarr"), "--network", "small_unet"]
    net_args = [*base, "--checkpoint", str(tmp_path / "w.pt")]
    base = [*net_args, "--roi", "16", "16"]
    assert main([*base, "--tta", "none"]) == 0
    assert seen[-1].tta is TTA.NONE
    assert main(base) == 0 and seen[-1].tta is TTA.FLIPS  # the default (TOOL_DEFAULTS: the validated recipe)
    with pytest.raises(SystemExit) as exc:
        main([*base, "--tta", "mirror"])
    assert exc.value.code == 2
    assert "invalid choice: 'mirror'" in capsys.readouterr().err
    assert main([*net_args, "--roi", "16", "8", "--tta", "flips_rot90"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mtbio predict: error:") and "needs a square window" in err[0]


def test_a_bundle_states_its_tta(tmp_path, monkeypatch) -> None:
    """``tta`` of a bundle's inference.yaml reaches ``mtbio predict --bundle``; ``--tta`` wins."""
    import tifffile

    import mtbio.inference.predict as predict_module
    from mtbio.cli import main

    root = tmp_path / "bundle"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.yaml").write_text(
        "network_def:\n  _target_: torch.nn.Conv2d\n  in_channels: 1\n  out_channels: 2\n  kernel_size: 1\n"
        "roi_size: [16, 16]\ntta: flips_rot90\n"
    )
    torch.save(torch.nn.Conv2d(1, 2, 1).state_dict(), root / "models" / "model.pt")
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((2, 16, 16), np.uint8))
    seen: list = []
    monkeypatch.setattr(predict_module, "predict_volume", lambda net, src, out, **kw: seen.append(kw["settings"]))
    base = ["predict", str(tmp_path / "s.tif"), str(tmp_path / "o.zarr"), "--bundle", str(root)]
    assert main(base) == 0 and seen[-1].tta is TTA.FLIPS_ROT90
    assert main([*base, "--tta", "none"]) == 0 and seen[-1].tta is TTA.NONE
