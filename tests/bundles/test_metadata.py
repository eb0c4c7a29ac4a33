"""Model-zoo checks of every bundle: the layout, ``verify_metadata`` against the pinned schema (offline) and
``verify_net_in_out`` (network_data_format matches network_def)."""

from __future__ import annotations

import json

import pytest

from tests.bundles._run import BUNDLES, REPO, SCHEMA, config, config_files, copy_bundle

FILES = ("metadata.json", "train.yaml", "inference.yaml", "evaluate.yaml", "multi_gpu_train.yaml", "logging.conf")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_model_zoo_layout(bundle):
    root = REPO / "bundles" / bundle
    for name in FILES:
        assert (root / "configs" / name).is_file(), name
    assert (root / "docs" / "README.md").is_file()
    assert (root / "large_files.yml").is_file()
    assert not (root / "scripts").exists(), "code is reached through _target_: mtbio..., not bundle scripts"
    meta = json.loads(config(bundle, "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    out = meta["network_data_format"]["outputs"]["pred"]
    assert out["num_channels"] == 2 and out["channel_def"] == {"0": "background", "1": "mitochondrion"}


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_metadata(bundle, tmp_path):
    if not SCHEMA.is_file():
        pytest.skip(f"{SCHEMA} is absent (verify_metadata would download it)")
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(config(bundle, "metadata.json")), filepath=str(SCHEMA))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_net_in_out(bundle, monkeypatch, tmp_path):
    """On a copy of the bundle, from another working directory, with inference.yaml merged over train.yaml."""
    from monai.bundle import verify_net_in_out

    root = copy_bundle(bundle, tmp_path)
    monkeypatch.chdir(tmp_path)
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(root / "configs" / "metadata.json"),
        config_file=config_files(root, "inference"),
        bundle_root=str(root),
        device="cpu",
        n=2,
    )


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_hyperparameter_is_commented(bundle):
    """Every top-level id of train.yaml that sets a value (not a reference or include) has a comment above it."""
    lines = config(bundle, "train.yaml").read_text().splitlines()
    for k, line in enumerate(lines):
        if not line or line[0] in " #-" or ":" not in line:
            continue
        key, value = line.split(":", 1)
        value = value.strip()
        if not value or value.startswith('"%') or key in {"imports", "device", "initialize", "training"}:
            continue
        assert lines[k - 1].startswith("#"), f"{bundle}/train.yaml: {key} has no comment"


def test_weights_are_git_ignored():
    import subprocess

    for bundle in BUNDLES:
        for path in (f"bundles/{bundle}/models/model.pt", f"bundles/{bundle}/runs/x/checkpoint_iteration=1.pt"):
            res = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
            assert res.returncode == 0, f"{path} is not ignored by git"
