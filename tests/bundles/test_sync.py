"""``configs/`` is the one source of the bundles' shared pieces: ``scripts/sync_bundles.py`` writes its fragments
(and ``configs/uda.yaml``, generated from ``UDAConfig``) into every bundle, and every ``UDAConfig`` field reaches
every bundle's ``uda`` mapping as an overridable id."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.bundles._run import BUNDLES, REPO, config, copy_bundle

SYNC = "run python scripts/sync_bundles.py"


def _load_sync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_bundles_script", REPO / "scripts" / "sync_bundles.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


sync = _load_sync()


def _leaf_ids() -> dict[str, tuple[str, ...]]:
    """``{bundle id: path in the uda mapping}`` of every UDAConfig field but strategy (``augment_brightness`` ->
    ``("augment", "brightness")``)."""
    from mtbio.uda.config import UDAConfig

    out: dict[str, tuple[str, ...]] = {}
    for f in dataclasses.fields(UDAConfig):
        if f.name == "strategy":
            continue
        sub = f.default_factory if f.default is dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            out.update({f"{f.name}_{s.name}": (f.name, s.name) for s in dataclasses.fields(sub)})
        else:
            out[f.name] = (f.name,)
    return out


def _copy_repo(tmp_path: Path) -> Path:
    """``configs/`` and the bundles' configs copied to ``tmp_path`` (what the script reads and writes)."""
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    for bundle in BUNDLES:
        shutil.copytree(REPO / "bundles" / bundle / "configs", tmp_path / "bundles" / bundle / "configs")
    return tmp_path


def test_bundles_generated_regions_are_up_to_date():
    """Every bundle config holds, between the markers, exactly what the script generates now."""
    problems = sync.stale()
    assert not problems, "\n".join(problems) + "\n" + SYNC
    for bundle in BUNDLES:
        for file_name, names in sync.TARGETS.items():
            if file_name in sync.OPTIONAL and not config(bundle, file_name).is_file():
                continue
            assert set(names) <= set(sync.regions(config(bundle, file_name).read_text())), (bundle, file_name, SYNC)


def test_configs_uda_yaml_is_generated_from_udaconfig():
    """configs/uda.yaml is what UDAConfig's fields, defaults and docstring give now; every id has a comment."""
    text = (REPO / "configs" / "uda.yaml").read_text()
    assert text == sync.uda_fragment(), SYNC
    body = sync.fragment_body(text, "uda.yaml")
    ids = [key for key, lines in sync.entries(body) if key is not None]
    assert ids == [*_leaf_ids(), "uda"]
    for key, lines in sync.entries(body):
        if key is not None:
            assert lines[0].startswith("# "), f"{key} has no comment line"
    assert 'augment_brightness: "$mtbio.uda.config.StrongAugment.brightness"' in text
    assert "# pseudo-label confidence threshold tau (paper 0.968). Default: 0.968.\n" in text


def test_configs_folder_holds_the_fragments_and_its_readme():
    """The shared pieces live once, in configs/ (no hand-kept copies: the bundles' copies are generated)."""
    assert sorted(p.name for p in (REPO / "configs").iterdir()) == sorted(["README.md", *sync.fragment_names()])


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_udaconfig_field_is_an_overridable_key_of_the_uda_mapping(bundle):
    """The resolved `uda` of each bundle has every UDAConfig field (but strategy), each fed by a top-level id that
    mtbio.bundle.overrides accepts; the values are UDAConfig's defaults but for the ids the bundle sets itself."""
    from monai.bundle import ConfigParser

    from mtbio.bundle.overrides import check_override_keys, valid_override_keys
    from mtbio.uda.config import DEMO_UDA, UDAConfig

    parser = ConfigParser()
    parser.read_config(str(config(bundle, "train.yaml")))
    if bundle == "masktwins_em3d":  # b is block_nm on the data's voxel grid: MitoEM's grid without the MitoEM files
        parser["grid_voxel_size"] = [30, 8, 8]
    uda = parser.get_parsed_content("uda")
    names = {f.name for f in dataclasses.fields(UDAConfig)} - {"strategy"}
    assert set(uda) == names
    assert set(uda["augment"]) == {f.name for f in dataclasses.fields(UDAConfig().augment)}
    valid = valid_override_keys(config(bundle, "train.yaml").parent)
    assert set(_leaf_ids()) <= valid
    check_override_keys(
        ["pl_class_balance", "augment_brightness", "target_bn_stats", "uda#augment#gamma"],
        config(bundle, "train.yaml").parent,
    )
    own = {
        "masktwins_em3d": {"block_size": (4, 16, 16), "block_nm": (120.0, 128.0, 128.0)},
        "masktwins_demo": {"pl_class_balance": DEMO_UDA.pl_class_balance},  # the demo's own UDA step
    }.get(bundle, {})
    assert UDAConfig(**uda) == dataclasses.replace(UDAConfig(), **own)


def test_override_of_a_newly_reachable_field_reaches_the_workflow(tmp_path, monkeypatch):
    """`--pl_class_balance equal --augment_brightness 0.05 --target_bn_stats False` on the bundle reach the `uda`
    the training workflow builds its UDAConfig from."""
    from monai.bundle import ConfigWorkflow

    import mtbio.bundle.workflow
    from mtbio.uda.config import ClassBalance, UDAConfig

    seen: dict = {}
    monkeypatch.setattr(mtbio.bundle.workflow, "train", lambda **kw: seen.update(kw))
    root = copy_bundle("masktwins_demo", tmp_path)
    workflow = ConfigWorkflow(
        config_file=str(root / "configs" / "train.yaml"),
        logging_file=False,
        workflow_type=None,
        run_id="training",
        bundle_root=str(root),
        pl_class_balance="equal",
        augment_brightness=0.05,
        target_bn_stats=False,
        num_threads=2,
        data_shape=[8, 64, 64],
    )
    workflow.initialize()
    workflow.run()
    built = UDAConfig(strategy="masktwins", **seen["uda"])
    assert built.pl_class_balance is ClassBalance.EQUAL
    assert built.augment.brightness == 0.05 and built.augment.contrast == UDAConfig().augment.contrast
    assert built.target_bn_stats is False and built.ema_buffers is True
    assert not (root / "models").exists()  # the stand-in trained nothing


def test_check_lists_an_edited_region_and_a_write_restores_it(tmp_path, capsys):
    repo = _copy_repo(tmp_path)
    train = repo / "bundles" / "masktwins_demo" / "configs" / "train.yaml"
    evaluate = repo / "bundles" / "masktwins_em3d" / "configs" / "evaluate.yaml"
    good_train, good_evaluate = train.read_text(), evaluate.read_text()
    train.write_text(good_train.replace('lambda_cm: "$mtbio.uda.config.UDAConfig.lambda_cm"', "lambda_cm: 0.5"))
    end = sync.END.format(name="evaluate_shared.yaml")
    evaluate.write_text(good_evaluate[: good_evaluate.index(sync.BEGIN.format(name="evaluate_shared.yaml"))])
    assert sync.main(["--check", "--repo", str(repo)]) == 1
    out = capsys.readouterr().out
    assert "bundles/masktwins_demo/configs/train.yaml: region of configs/uda.yaml out of date" in out
    assert "bundles/masktwins_em3d/configs/evaluate.yaml: region of configs/evaluate_shared.yaml missing" in out
    assert out.rstrip().endswith(SYNC)
    assert sync.main(["--repo", str(repo)]) == 0
    assert train.read_text() == good_train
    assert evaluate.read_text().rstrip().endswith(end) and sync.stale(repo) == []
    assert sync.main(["--check", "--repo", str(repo)]) == 0


def test_a_fragment_edit_reaches_every_bundle_and_uda_yaml_follows_udaconfig(tmp_path):
    repo = _copy_repo(tmp_path)
    shared = repo / "configs" / "evaluate_shared.yaml"
    shared.write_text(shared.read_text().replace('  title: "@title"\n', '  title: "@title"\n  extra: 1\n'))
    (repo / "configs" / "uda.yaml").write_text("# stale\n\ntau: 1\n")
    problems = sync.stale(repo)
    assert "configs/uda.yaml: out of date with mtbio.uda.config.UDAConfig" in problems
    assert {
        f"bundles/{b}/configs/evaluate.yaml: region of configs/evaluate_shared.yaml out of date" for b in BUNDLES
    } <= set(problems)
    sync.main(["--repo", str(repo)])
    assert (repo / "configs" / "uda.yaml").read_text() == sync.uda_fragment()
    for bundle in BUNDLES:
        content = yaml.safe_load((repo / "bundles" / bundle / "configs" / "evaluate.yaml").read_text())
        assert content["evaluate"]["extra"] == 1


def test_an_id_the_bundle_sets_itself_is_left_out_of_its_region(tmp_path):
    """A bundle's own value (em3d's block_size; here also tau) is kept, and the id is not generated again."""
    repo = _copy_repo(tmp_path)
    train = repo / "bundles" / "masktwins_demo" / "configs" / "train.yaml"
    train.write_text(
        train.read_text().replace("pretrain_iterations: 0\n", "pretrain_iterations: 0\n# own tau\ntau: 0.9\n")
    )
    sync.main(["--repo", str(repo)])
    text = train.read_text()
    assert [line for line in text.splitlines() if line.startswith("tau:")] == ["tau: 0.9"]
    assert '  tau: "@tau"' in sync.regions(text)["uda.yaml"]
    assert "confidence threshold tau" not in sync.regions(text)["uda.yaml"]
    em3d = (REPO / "bundles" / "masktwins_em3d" / "configs" / "train.yaml").read_text()
    assert [line for line in em3d.splitlines() if line.startswith("block_size:")] == [
        'block_size: "$mtbio.bundle.data.block_in_voxels(@block_nm, @grid_voxel_size)"'
    ]


def test_entries_keep_comments_with_their_id():
    body = "# --- section ---\n# about a\na: 1\n# about b\nb:\n  - x\n  - y\n\nc: 2\n"
    assert sync.entries(body) == [
        (None, ["# --- section ---"]),
        ("a", ["# about a", "a: 1"]),
        ("b", ["# about b", "b:", "  - x", "  - y"]),
        (None, [""]),
        ("c", ["c: 2"]),
    ]
    assert sync.region_text(body, {"b"}) == "# --- section ---\n# about a\na: 1\n\nc: 2\n"
    with pytest.raises(ValueError, match="comment header"):
        sync.fragment_body("a: 1\n", "x.yaml")


def test_the_bundles_tta_is_the_tools_default_and_a_bundle_may_set_its_own(tmp_path, monkeypatch):
    """configs/inference_shared.yaml states InferenceSettings' tta as TOOL_DEFAULTS has it (the script writes the
    value; --check lists a stale one); a bundle's own `tta` is kept and reaches the inference workflow."""
    import dataclasses

    from monai.bundle import ConfigWorkflow

    import mtbio.bundle.workflow
    from mtbio.inference.settings import TOOL_DEFAULTS

    own = {"masktwins_demo": "none"}  # the demo keeps the plain network its README table was measured with
    own_planes = {"masktwins_demo": "xy"}  # and its section-by-section prediction
    for bundle in BUNDLES:
        content = yaml.safe_load(config(bundle, "inference.yaml").read_text())
        assert content["tta"] == own.get(bundle, TOOL_DEFAULTS.tta.value) and content["inference"]["tta"] == "@tta"
        assert content["planes"] == own_planes.get(bundle, TOOL_DEFAULTS.planes.value)
        assert content["inference"]["planes"] == "@planes"
    assert TOOL_DEFAULTS.tta.value == "flips"  # the validated recipe (docs/uda.md "Quality levers")
    assert TOOL_DEFAULTS.planes.value == "auto"  # docs/uda.md "Ortho-plane consensus"
    repo = _copy_repo(tmp_path)
    shared = repo / "configs" / "inference_shared.yaml"
    shared.write_text(shared.read_text().replace("\ntta: flips\n", "\ntta: none\n"))
    assert "configs/inference_shared.yaml: out of date with mtbio.inference.settings.TOOL_DEFAULTS" in sync.stale(repo)
    monkeypatch.setattr(sync, "TOOL_DEFAULTS", dataclasses.replace(TOOL_DEFAULTS, tta="flips_rot90"))
    assert sync.with_tool_defaults("# h\n\ntta: none\nplanes: xy\ninference:\n  tta: '@tta'\n").endswith(
        "tta: flips_rot90\nplanes: auto\ninference:\n  tta: '@tta'\n"
    )
    with pytest.raises(ValueError, match="no top-level id 'tta'"):
        sync.with_tool_defaults("# h\n\ninference: {}\n")
    monkeypatch.undo()
    demo = repo / "bundles" / "masktwins_demo" / "configs" / "inference.yaml"
    assert demo.read_text().count("\ntta: none\n") == 1
    demo.write_text(demo.read_text().replace("\ntta: none\n", "\ntta: flips_rot90\n"))
    sync.main(["--repo", str(repo)])
    text = demo.read_text()
    assert [line for line in text.splitlines() if line.startswith("tta:")] == ["tta: flips_rot90"]
    assert sync.stale(repo) == []

    seen: dict = {}
    monkeypatch.setattr(mtbio.bundle.workflow, "predict", lambda **kw: seen.update(kw))
    root = copy_bundle("masktwins_demo", tmp_path / "copy")
    (root / "configs" / "inference.yaml").write_text(text)
    workflow = ConfigWorkflow(
        config_file=[str(root / "configs" / "train.yaml"), str(root / "configs" / "inference.yaml")],
        logging_file=False,
        workflow_type=None,
        run_id="inference",
        bundle_root=str(root),
    )
    workflow.initialize()
    workflow.run()
    assert seen["tta"] == "flips_rot90" and seen["planes"] == "xy"


# --- the Recipe ids of configs/recipe.yaml (score_crops, score_crop_size, context_sections) ---


def test_configs_recipe_yaml_is_generated_from_recipe():
    """configs/recipe.yaml holds one commented id per RECIPE_IDS field, valued from the installed Recipe."""
    text = (REPO / "configs" / "recipe.yaml").read_text()
    assert text == sync.recipe_fragment(), SYNC
    body = sync.fragment_body(text, "recipe.yaml")
    assert [key for key, _ in sync.entries(body) if key is not None] == list(sync.RECIPE_IDS)
    for key, lines in sync.entries(body):
        if key is not None:
            assert lines[0].startswith("# ") and lines[-1] == f'{key}: "$mtbio.uda.recipe.Recipe.{key}"'


@pytest.mark.parametrize("bundle", BUNDLES)
def test_recipe_ids_are_overridable_and_reach_training_and_adapt(bundle):
    """Every bundle's training (and adapt) run id passes score_crops / score_crop_size / context_sections on; the
    override checker accepts them and names the close match of a typo; the values are Recipe's but em3d's
    context_sections (0: 2D only)."""
    from monai.bundle import ConfigParser

    from mtbio.bundle.overrides import check_override_keys
    from mtbio.uda.recipe import Recipe

    folder = config(bundle, "train.yaml").parent
    parser = ConfigParser()
    parser.read_config([str(p) for p in (folder / "train.yaml", folder / "adapt.yaml") if p.is_file()])
    for run_id in ("training", "adapt") if (folder / "adapt.yaml").is_file() else ("training",):
        for name in sync.RECIPE_IDS:
            assert parser.get(f"{run_id}#{name}") == f"@{name}", (run_id, name)
    for name in sync.RECIPE_IDS:
        assert parser.get_parsed_content(name) == getattr(Recipe(), name)
    if bundle == "masktwins_em3d":
        assert "context_sections" in sync.own_ids(config(bundle, "train.yaml").read_text())
    check_override_keys(list(sync.RECIPE_IDS), folder)
    for typo, meant in (("score_crop", "score_crops"), ("context_section", "context_sections")):
        with pytest.raises(ValueError, match=rf"--{typo} \(did you mean .*--{meant}\b"):
            check_override_keys([typo], folder)


def test_recipe_id_overrides_reach_the_training_workflow(tmp_path, monkeypatch):
    """`--score_crops 0 --score_crop_size 64 --context_sections 1` on the demo bundle reach the training workflow."""
    import mtbio.bundle.workflow
    from tests.bundles._run import run_workflow

    seen: dict = {}
    monkeypatch.setattr(mtbio.bundle.workflow, "train", lambda **kw: seen.update(kw))
    root = copy_bundle("masktwins_demo", tmp_path)
    run_workflow(root, "train", "training", score_crops=0, score_crop_size=64, context_sections=1, num_threads=2)
    assert (seen["score_crops"], seen["score_crop_size"], seen["context_sections"]) == (0, 64, 1)
    assert not (root / "models").exists()  # the stand-in trained nothing


def test_recipe_id_overrides_reach_the_adapt_workflow(tmp_path, monkeypatch):
    """`--score_crops 8 --context_sections 1` on the em2d bundle's adapt reach the adapt workflow."""
    import mtbio.bundle.workflow
    from tests.bundles._run import SYNTHETIC, run_workflow

    seen: dict = {}
    monkeypatch.setattr(mtbio.bundle.workflow, "adapt", lambda **kw: seen.update(kw))
    root = copy_bundle("masktwins_em2d_vnc3_lucchi", tmp_path)
    data = dict(data=SYNTHETIC, data_seed=0, data_shape=[4, 32, 32], num_threads=2)
    run_workflow(root, "adapt", "adapt", score_crops=8, context_sections=1, **data)
    assert (seen["score_crops"], seen["context_sections"]) == (8, 1)
    assert seen["score_crop_size"] == 256  # not overridden: Recipe's


def test_the_vnc3_lucchi_bundle_states_the_validated_recipe():
    """The em2d real-data bundle writes its schedule itself (iterations, pre-training, crop, batch, lr, seed, network):
    every value equals :class:`~mtbio.uda.recipe.Recipe`'s default, so ``mtbio train`` / ``mtbio adapt``, the
    benchmark and the bundle train the same validated recipe."""
    from monai.bundle import ConfigParser

    from mtbio.uda.recipe import Recipe

    parser = ConfigParser()
    parser.read_config(str(config("masktwins_em2d_vnc3_lucchi", "train.yaml")))
    r = Recipe()
    assert parser.get("iterations") == r.iterations
    assert parser.get("pretrain_iterations") == r.pretrain_iterations
    assert tuple(parser.get("crop_size")) == r.crop
    assert (parser.get("batch_size"), parser.get("lr"), parser.get("seed")) == (r.batch_size, r.lr, r.seed)
    assert parser.get("network_def")["name"] == r.network
