"""The one weights record: plain types (weights_only), every writer's layout read back, code never executed."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from mtbio.networks import get_network
from mtbio.networks.weights import (
    WEIGHTS_FORMAT,
    WEIGHTS_VERSION,
    WeightsError,
    WeightsRecord,
    read_weights,
    record_from_meta,
    write_weights,
)

torch.set_num_threads(2)


def _net(name: str = "small_unet", dims: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_network(name, dims)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_record_round_trip_is_plain_and_rebuilds_the_network(tmp_path: Path):
    net = _net()
    rec = WeightsRecord.from_network(
        net, network="small_unet", spatial_dims=2, iteration=7, strategy="masktwins", crop=(64, 64),
        voxel_size=(5, 5), normalization="zscore_section", provenance={"source": "vnc3", "parent": "so.pt"},
    )  # fmt: skip
    path = write_weights(rec, tmp_path / "w.pt")
    payload = torch.load(path, weights_only=True)  # plain types only
    assert payload["format"] == WEIGHTS_FORMAT and payload["version"] == WEIGHTS_VERSION
    back = read_weights(path)
    assert back.version == WEIGHTS_VERSION and back.iteration == 7 and back.crop == [64, 64]
    assert back.voxel_size == [5.0, 5.0] and back.normalization == "zscore_section"
    assert back.provenance["source"] == "vnc3" and back.provenance["mtbio_version"] and back.provenance["created"]
    rebuilt = back.build_network(path)
    assert _same(rebuilt.state_dict(), net.state_dict()) and not rebuilt.training
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(rebuilt(x), net.eval()(x))


def test_version_1_files_still_load(tmp_path: Path):
    """The layout ``save_weights`` wrote before the record (and the bundle's class-name ``network``)."""
    net = _net()
    meta = {"strategy": "source_only", "seed": 1, "network": "small_unet", "spatial_dims": 2, "crop": [64, 64],
            "config": {"tau": 0.9}, "git": "abc", "init_weights": "x.pt", "iterations": 3}  # fmt: skip
    torch.save({"teacher": net.state_dict(), "student": net.state_dict(), "iteration": 3, "meta": meta}, tmp_path / "a")
    rec = read_weights(tmp_path / "a")
    assert rec.version == 1 and rec.network == "small_unet" and rec.seed == 1 and rec.config == {"tau": 0.9}
    assert rec.provenance == {"git": "abc", "parent": "x.pt"} and rec.extra == {"iterations": 3}
    assert _same(rec.build_network().state_dict(), net.state_dict())
    torch.save({"teacher": net.state_dict(), "iteration": 3, "meta": {"network": "UNet", "spatial_dims": 2}},
               tmp_path / "b")  # fmt: skip
    bundle_written = read_weights(tmp_path / "b")
    assert bundle_written.network is None and bundle_written.network_class == "UNet"
    with pytest.raises(WeightsError, match="names no mtbio network"):
        bundle_written.build_network(tmp_path / "b")
    assert _same(bundle_written.load_into(_net()).state_dict(), net.state_dict())


def test_plain_state_dict_and_training_checkpoint(tmp_path: Path):
    net = _net()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    assert _same(read_weights(tmp_path / "model.pt").teacher, net.state_dict())
    teacher = {f"module.{k}": v for k, v in net.state_dict().items()} | {"_extra_state": {"num_updates": 4}}
    ckpt = {"student": net.state_dict(), "teacher": teacher, "optimizer": {}, "trainer": {"iteration": 4}}
    torch.save(ckpt, tmp_path / "checkpoint_iteration=4.pt")
    rec = read_weights(tmp_path / "checkpoint_iteration=4.pt")
    assert rec.iteration == 4 and _same(rec.teacher, net.state_dict())


def test_pickled_code_is_never_run(tmp_path: Path):
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"teacher": Payload()}, fh)
    with pytest.raises(WeightsError, match="never runs code|not a readable"):
        read_weights(tmp_path / "evil.pt")
    assert not marker.exists()


def test_bad_files_are_clear_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        read_weights(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("not a torch file")
    with pytest.raises(WeightsError, match="text.pt"):
        read_weights(tmp_path / "text.pt")
    torch.save({"teacher": {"a": 1}}, tmp_path / "empty.pt")
    with pytest.raises(WeightsError, match="no tensors"):
        read_weights(tmp_path / "empty.pt")
    torch.save({"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION + 1, "teacher": _net().state_dict()},
               tmp_path / "future.pt")  # fmt: skip
    with pytest.raises(WeightsError, match="newer"):
        read_weights(tmp_path / "future.pt")
    rec = record_from_meta(_net().state_dict(), None, 0, {"network": "small_unet", "spatial_dims": 2})
    write_weights(rec, tmp_path / "two_d.pt")
    with pytest.raises(WeightsError, match="two_d.pt.*do not fit"):
        read_weights(tmp_path / "two_d.pt").load_into(_net(dims=3), tmp_path / "two_d.pt")
    with pytest.raises(WeightsError, match="one value per spatial axis"):
        WeightsRecord(teacher=_net().state_dict(), spatial_dims=2, voxel_size=[40, 4, 4])
