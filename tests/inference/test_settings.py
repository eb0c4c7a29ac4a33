"""InferenceSettings is the one place of the inference options: the API, the CLI and the bundle workflow read it;
mtbio.data.normalize is the one z-score and the one 2D / 3D rule."""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import numpy as np
import pytest
import torch

from mtbio.data.normalize import (
    Normalization,
    default_normalization,
    image_stats,
    parse_normalization,
    resolve_normalization,
    volume_stats,
    zscore,
)
from mtbio.inference.settings import TOOL_DEFAULTS, UNSET, InferenceSettings
from tests.inference._nets import conv_net

torch.set_num_threads(2)

FIELDS = [f.name for f in dataclasses.fields(InferenceSettings)]
#: fields with a command-line flag (``context_sections`` has none: the weights record decides)
CLI_FIELDS = [f.name for f in dataclasses.fields(InferenceSettings) if f.metadata.get("cli", True)]


def _predict_parser() -> argparse.ArgumentParser:
    from mtbio.cli import predict as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser


def test_cli_defaults_are_the_tool_defaults_and_no_flag_restates_one() -> None:
    from mtbio.cli.predict import given_settings, settings_from_args

    args = _predict_parser().parse_args(["predict", "in.zarr", "out.zarr", "--network", "small_unet"])
    assert given_settings(args) == {}  # nothing given: every value comes from the dataclass
    assert settings_from_args(args) == TOOL_DEFAULTS
    # the tools differ from the library only where TOOL_DEFAULTS says so
    changed = {f for f in FIELDS if getattr(TOOL_DEFAULTS, f) != getattr(InferenceSettings(), f)}
    assert changed == {"activation", "dtype", "normalize", "tta", "planes"}


NON_DEFAULT = {
    "roi_size": (["--roi", "8", "16", "16"], (8, 16, 16)),
    "overlap": (["--overlap", "0.5"], 0.5),
    "mode": (["--mode", "constant"], "constant"),
    "sigma_scale": (["--sigma-scale", "0.25"], 0.25),
    "batch_size": (["--batch-size", "7"], 7),
    "device": (["--device", "cpu"], "cpu"),
    "amp": (["--amp"], True),
    "activation": (["--activation", "sigmoid"], "sigmoid"),
    "dtype": (["--dtype", "float16"], "float16"),
    "normalize": (["--normalize", "zscore"], "zscore"),
    "chunks": (["--chunks", "4", "32", "32"], (4, 32, 32)),
    "block_shape": (["--block-shape", "4", "64", "64"], (4, 64, 64)),
    "voxel_size": (["--voxel-size", "30", "5", "5"], (30.0, 5.0, 5.0)),
    "resample": (["--no-resample"], False),
    "tolerance": (["--tolerance", "0.2"], 0.2),
    "tta": (["--tta", "flips_rot90"], "flips_rot90"),
    "planes": (["--planes", "xyz"], "xyz"),
}


def test_every_settings_field_is_reachable_from_the_cli() -> None:
    from mtbio.cli.predict import settings_from_args

    assert sorted(NON_DEFAULT) == sorted(CLI_FIELDS)  # a new field needs a line here (and gets its flag for free)
    assert sorted(set(FIELDS) - set(CLI_FIELDS)) == ["context_sections"]
    parser = _predict_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "in.zarr", "out.zarr", "--network", "n", "--context-sections", "1"])
    for name, (flags, expected) in NON_DEFAULT.items():
        args = parser.parse_args(["predict", "in.zarr", "out.zarr", "--network", "n", *flags])
        got = getattr(settings_from_args(args), name)
        assert got == expected and got != getattr(TOOL_DEFAULTS, name), name
    # the old spellings still parse: --activation none with --dtype float32, --normalize none, --overlap per axis
    args = parser.parse_args(
        [
            "predict",
            "a",
            "b",
            "--activation",
            "none",
            "--dtype",
            "float32",
            "--normalize",
            "none",
            "--overlap",
            "0.1",
            "0.2",
        ]
    )
    s = settings_from_args(args)
    assert s.activation is None and s.normalize is None and s.overlap == (0.1, 0.2) and s.dtype == "float32"


def test_api_keywords_restate_no_default() -> None:
    from mtbio.bundle.workflow import predict as bundle_predict
    from mtbio.inference.distributed import predict_volume_dask
    from mtbio.inference.predict import predict_volume

    for fn in (predict_volume, predict_volume_dask, bundle_predict):
        params = inspect.signature(fn).parameters
        assert params["settings"].default is None
        for name in set(FIELDS) & set(params):
            assert params[name].default is UNSET, (fn.__name__, name)


def test_bundle_predict_uses_the_tool_defaults(tmp_path, monkeypatch) -> None:
    import mtbio.inference.resampled as resampled
    from mtbio.bundle.workflow import predict as bundle_predict

    net = conv_net(2)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    seen = []
    monkeypatch.setattr(resampled, "predict_at_model_voxel_size", lambda *a, **kw: seen.append(kw) or _Result())
    bundle_predict(
        network=net,
        models_dir=tmp_path,
        strategies=["model"],
        image=np.zeros((2, 8, 8), np.float32),
        predictions_dir=tmp_path / "preds",
        roi_size=[8, 8],
    )
    assert seen[0]["settings"] == dataclasses.replace(TOOL_DEFAULTS, roi_size=(8, 8))
    bundle_predict(
        network=net,
        models_dir=tmp_path,
        strategies=["model"],
        image=np.zeros((2, 8, 8), np.float32),
        predictions_dir=tmp_path / "preds",
        settings=InferenceSettings(roi_size=(8, 8), batch_size=2),
        overlap=0.5,
    )
    assert seen[1]["settings"] == InferenceSettings(roi_size=(8, 8), batch_size=2, overlap=0.5)


class _Result:
    note = "stub"


def test_settings_object_and_keywords_give_the_same_store(tmp_path) -> None:
    from mtbio.data.store import open_prediction_store
    from mtbio.inference.predict import predict_volume

    vol = np.random.default_rng(0).random((6, 20, 18), dtype=np.float32)
    kw = dict(roi_size=(4, 8, 8), overlap=0.5, batch_size=3, device="cpu", normalize="zscore", chunks=(3, 10, 9))
    predict_volume(conv_net(3), vol, tmp_path / "a.zarr", **kw)
    predict_volume(conv_net(3), vol, tmp_path / "b.zarr", settings=InferenceSettings(**kw))
    # a keyword replaces that one field of the settings object
    predict_volume(conv_net(3), vol, tmp_path / "c.zarr", settings=InferenceSettings(**kw), overlap=0.25)
    a, b, c = (open_prediction_store(tmp_path / f"{n}.zarr") for n in "abc")
    assert np.array_equal(a.array[:], b.array[:]) and a.meta["config"] == b.meta["config"]
    assert c.meta["config"]["overlap"] == [0.25, 0.25, 0.25] and not np.array_equal(a.array[:], c.array[:])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=True), "batch_size"),
        (dict(overlap=1.0), "overlap"),
        (dict(overlap=(0.1, -0.1)), "overlap"),
        (dict(mode="median"), "mode"),
        (dict(activation="relu"), "activation"),
        (dict(dtype="int16"), "dtype"),
        (dict(dtype="uint8"), "needs activation"),
        (dict(normalize="minmax"), "normalize"),
        (dict(normalize=(0.0, 0.0)), "std > 0"),
        (dict(roi_size=64), "single int"),
        (dict(roi_size=(0, 8)), "roi_size"),
        (dict(chunks=(4, -1)), "chunks"),
        (dict(voxel_size=(5.0,)), "voxel_size"),
        (dict(sigma_scale=0), "sigma_scale"),
        (dict(tolerance=-1), "tolerance"),
    ],
)
def test_settings_validate_early(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        InferenceSettings(**kwargs)


def test_merged_rejects_unknown_fields_and_skips_unset() -> None:
    base = InferenceSettings(batch_size=2)
    assert InferenceSettings.merged(base, batch_size=UNSET, overlap=0.5) == InferenceSettings(batch_size=2, overlap=0.5)
    with pytest.raises(TypeError):
        InferenceSettings.merged(base, sw_batch_size=3)
    with pytest.raises(TypeError, match="InferenceSettings"):
        InferenceSettings.merged({"batch_size": 2})


def test_one_rule_and_one_name_per_normalisation() -> None:
    assert default_normalization(2) is Normalization.ZSCORE_SECTION
    assert default_normalization(3) is Normalization.ZSCORE
    assert parse_normalization("zscore_volume") is Normalization.ZSCORE  # old weights records still read
    assert parse_normalization("none") is None and parse_normalization(None) is None
    assert resolve_normalization("auto", 3) is Normalization.ZSCORE
    assert resolve_normalization("auto", 3, record="zscore_section") is Normalization.ZSCORE_SECTION
    assert resolve_normalization("auto", 2, record="none") is None
    assert resolve_normalization("zscore", 2, record="zscore_section") is Normalization.ZSCORE
    with pytest.raises(ValueError, match="spatial_dims"):
        default_normalization(1)


def test_zscore_is_the_arithmetic_every_caller_used() -> None:
    x = np.random.default_rng(1).normal(100, 20, (3, 5, 7)).astype(np.float32)
    mean, std = image_stats(x, 2)
    # inference (read_padded, predict_in_memory): float32 statistics, float32 arithmetic
    per = (-1, 1, 1)
    old = (x - mean.astype(np.float32).reshape(per)) / std.astype(np.float32).reshape(per)
    assert np.array_equal(zscore(x, mean.reshape(per), std.reshape(per)), old)
    m, s = volume_stats(x)
    assert np.array_equal(zscore(x, m, s), (x - np.float32(m)) / np.float32(s))
    # the training sampler: float64 arithmetic, cast at the end
    old64 = ((x[1] - mean[1]) / std[1]).astype(np.float32)
    assert np.array_equal(zscore(x[1], mean[1], std[1], precision=np.float64), old64)
    assert zscore(x, m, s).dtype == np.float32
    assert np.allclose(m, x.mean(dtype=np.float64)) and np.isclose(s, x.std(dtype=np.float64))
    assert volume_stats(np.full((2, 3), 4.0)) == (4.0, 1.0)  # a constant volume: std 1, z-score 0
