"""Batch prediction over many stacks: discovery, outputs, skip / resume / fail, the summary file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from mtbio.data.store import (
    create_prediction_store,
    is_prediction_store,
    mark_complete,
    open_prediction_store,
)
from mtbio.inference.batch import (
    StackResult,
    discover_stacks,
    output_path_for,
    output_paths_for,
    predict_many,
    write_summary,
)


def _volume(seed: int, shape=(4, 12, 10)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=shape, dtype=np.uint8)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A folder of stacks of every kind, plus things that are no stacks."""
    d = tmp_path / "data"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", _volume(1))  # 3D tif
    with h5py.File(d / "b.h5", "w") as fh:
        fh["raw"] = _volume(2)
    z = zarr.create_array(str(d / "c.zarr"), shape=(4, 12, 10), dtype=np.uint8)
    z[...] = _volume(3)
    sections = d / "sections"
    sections.mkdir()
    for i, img in enumerate(_volume(4)):
        Image.fromarray(img).save(sections / f"{i:02d}.png")
    tifs2d = d / "tif_sections"
    tifs2d.mkdir()
    for i, img in enumerate(_volume(5)):
        tifffile.imwrite(tifs2d / f"{i:02d}.tif", img)
    (d / "README.txt").write_text("not a stack")
    (d / ".hidden.tif").write_bytes(b"")
    (d / "empty_folder").mkdir()
    old = create_prediction_store(d / "old.pred.zarr", (4, 12, 10))  # an output inside the input folder
    mark_complete(old.path)
    return d


def test_folder_discovery_rules(data_dir: Path) -> None:
    found = discover_stacks([str(data_dir)])
    assert [p.name for p in found] == ["a.tif", "b.h5", "c.zarr", "sections", "tif_sections"]
    # a section folder named directly is one stack, not a container of 2D stacks
    assert discover_stacks([data_dir / "sections"]) == [data_dir / "sections"]
    # a folder of 3D tifs is a container
    vols = data_dir.parent / "vols"
    vols.mkdir()
    tifffile.imwrite(vols / "x.tif", _volume(6))
    tifffile.imwrite(vols / "y.tif", _volume(7))
    assert [p.name for p in discover_stacks([vols])] == ["x.tif", "y.tif"]


def test_glob_discovery_and_dedup(data_dir: Path) -> None:
    found = discover_stacks([str(data_dir / "*.tif"), str(data_dir / "a.tif"), str(data_dir / "[bc].*")])
    assert [p.name for p in found] == ["a.tif", "b.h5", "c.zarr"]
    # a glob of folders: a section folder is one stack, a non-stack file is ignored
    found = discover_stacks([str(data_dir / "s*"), str(data_dir / "README*")])
    assert [p.name for p in found] == ["sections"]


def test_discovery_errors(data_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        discover_stacks([str(data_dir / "missing.tif")])
    with pytest.raises(FileNotFoundError, match="matches no"):
        discover_stacks([str(data_dir / "*.nii.gz")])
    with pytest.raises(ValueError, match="README.txt: not a stack"):
        discover_stacks([str(data_dir / "README.txt")])
    with pytest.raises(ValueError, match="no stacks found"):
        discover_stacks([str(data_dir / "empty_folder")])
    with pytest.raises(ValueError, match="no inputs"):
        discover_stacks([])


def test_output_names_and_collisions(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert output_path_for(Path("/x/vol.nii.gz"), out) == out / "vol.pred.zarr"
    assert output_path_for(Path("/x/raw.ome.zarr"), out) == out / "raw.pred.zarr"
    assert output_path_for(Path("/x/sections"), out) == out / "sections.pred.zarr"
    stacks = [Path("/p/a/x.tif"), Path("/p/b/x.tif"), Path("/p/a/X.h5"), Path("/p/a/y.tif")]
    names = output_paths_for(stacks, out)
    assert len(set(names)) == 4
    assert names[3] == out / "y.pred.zarr"
    assert all(n.name.startswith(("x-", "X-")) and n.name.endswith(".pred.zarr") for n in names[:3])
    assert output_paths_for(stacks, out) == names  # the same on a rerun


class FakePredictor:
    """Writes a small real prediction store; raises for ``bad`` stacks, stops early for ``stop`` stacks."""

    def __init__(self, bad: set[str] = frozenset(), stop: set[str] = frozenset()) -> None:
        self.bad, self.stop = set(bad), set(stop)
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, stack: Path, output: Path, resume: bool) -> None:
        self.calls.append((stack.name, resume))
        if stack.name in self.bad:
            raise ValueError(f"{stack}: cannot read this stack")
        if resume:
            assert is_prediction_store(output)
        else:
            create_prediction_store(output, (4, 12, 10), chunks=(2, 12, 10))
        if stack.name not in self.stop:
            mark_complete(output)


def _by_name(results: list[StackResult]) -> dict[str, StackResult]:
    return {Path(r.input).name: r for r in results}


def test_predict_many_statuses_summary_and_rerun(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    fake = FakePredictor(bad={"b.h5"}, stop={"c.zarr"})
    first = _by_name(predict_many([str(data_dir)], out, predict_fn=fake))
    assert {k: r.status for k, r in first.items()} == {
        "a.tif": "done",
        "b.h5": "failed",
        "c.zarr": "failed",  # the store was left incomplete
        "sections": "done",
        "tif_sections": "done",
    }
    assert "ValueError" in first["b.h5"].error and "b.h5" in first["b.h5"].error
    assert "did not finish" in first["c.zarr"].error
    assert first["a.tif"].error is None and first["a.tif"].seconds >= 0
    assert open_prediction_store(first["a.tif"].output).complete
    assert "2 failed" in capsys.readouterr().err  # the final table

    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 3, "resumed": 0, "skipped": 0, "failed": 2}
    assert [s["status"] for s in summary["stacks"]] == [first[Path(s["input"]).name].status for s in summary["stacks"]]
    assert {s["input"] for s in summary["stacks"]} == {r.input for r in first.values()}
    assert not list(out.glob(".summary.json*"))  # no temporary file left

    # rerun: finished stacks are skipped, the incomplete one is resumed, the bad one fails again
    fake2 = FakePredictor(bad={"b.h5"})
    second = _by_name(predict_many([str(data_dir)], out, predict_fn=fake2, progress=False))
    assert {k: r.status for k, r in second.items()} == {
        "a.tif": "skipped",
        "b.h5": "failed",
        "c.zarr": "resumed",
        "sections": "skipped",
        "tif_sections": "skipped",
    }
    assert sorted(fake2.calls) == [("b.h5", False), ("c.zarr", True)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 0, "resumed": 1, "skipped": 3, "failed": 1}

    # the output folder, now full of prediction stores, is not read back as input
    third = predict_many([str(data_dir), str(out)], out, predict_fn=FakePredictor(), overwrite=True, progress=False)
    assert len(third) == 5 and {r.status for r in third} == {"done"}


def test_existing_non_store_output_is_left_alone(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    blocker = out / "a.pred.zarr"
    blocker.mkdir(parents=True)
    (blocker / "precious.txt").write_text("keep me")
    results = predict_many([data_dir / "a.tif"], out, predict_fn=FakePredictor(), overwrite=True, progress=False)
    assert results[0].status == "failed" and "not a prediction store" in results[0].error
    assert (blocker / "precious.txt").read_text() == "keep me"


def test_progress_output_and_table(data_dir: Path, tmp_path: Path, capsys) -> None:
    predict_many([data_dir / "a.tif", data_dir / "b.h5"], tmp_path / "o", predict_fn=FakePredictor(bad={"b.h5"}))
    err = capsys.readouterr().err
    assert "[1/2]" in err and "[2/2]" in err and "1 done" in err and "1 failed" in err and "cannot read" in err
    results = [StackResult("in.tif", "out/in.pred.zarr", "done", 1.5)]
    path = write_summary(results, tmp_path / "s")
    assert json.loads(path.read_text())["stacks"][0] == {
        "input": "in.tif",
        "output": "out/in.pred.zarr",
        "status": "done",
        "seconds": 1.5,
        "error": None,
    }
    assert "in.pred.zarr" in capsys.readouterr().out


def test_with_real_predict_volume(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    predict_mod = pytest.importorskip("mtbio.inference.predict")
    d = tmp_path / "stacks"
    d.mkdir()
    for i in range(2):
        z = zarr.create_array(str(d / f"s{i}.zarr"), shape=(6, 20, 18), chunks=(3, 20, 18), dtype=np.float32)
        z[...] = np.random.default_rng(i).random((6, 20, 18), dtype=np.float32)
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, kernel_size=1)
    stop_after_one = {"s1.zarr"}

    def run(stack: Path, output: Path, resume: bool) -> None:
        done = {"n": 0}

        def stop() -> bool:
            done["n"] += 1
            return stack.name in stop_after_one and done["n"] > 1

        predict_mod.predict_volume(
            net, str(stack), output, roi_size=(4, 8, 8), activation="softmax", chunks=(3, 20, 18),
            device="cpu", resume=resume, stop=stop,
        )  # fmt: skip

    first = _by_name(predict_many([d], tmp_path / "out", predict_fn=run, progress=False))
    assert first["s0.zarr"].status == "done"
    assert first["s1.zarr"].status == "failed" and "did not finish" in first["s1.zarr"].error
    stop_after_one.clear()
    second = _by_name(predict_many([d], tmp_path / "out", predict_fn=run, progress=False))
    assert second["s0.zarr"].status == "skipped" and second["s1.zarr"].status == "resumed"
    # the resumed store equals a straight run
    ref = tmp_path / "ref.pred.zarr"
    predict_mod.predict_volume(
        net, str(d / "s1.zarr"), ref, roi_size=(4, 8, 8), activation="softmax", chunks=(3, 20, 18), device="cpu"
    )
    np.testing.assert_array_equal(open_prediction_store(second["s1.zarr"].output).array[...], zarr.open(ref)["0"][...])


def test_stacks_whose_read_fails_are_failed_never_done(tmp_path: Path) -> None:
    """A truncated TIF (which tifffile alone reads as one 2D page), a TIF whose page fails to decode mid-run and a
    zarr with a corrupt chunk are each listed failed with the file named; the good stack is done."""
    torch = pytest.importorskip("torch")
    predict_mod = pytest.importorskip("mtbio.inference.predict")
    d = tmp_path / "stacks"
    d.mkdir()
    data = np.random.default_rng(0).random((6, 20, 18), dtype=np.float32)
    zarr.create_array(str(d / "good.zarr"), shape=data.shape, chunks=(3, 20, 18), dtype=np.float32)[...] = data
    tifffile.imwrite(d / "cut.tif", (data * 255).astype(np.uint8), imagej=True)
    with tifffile.TiffFile(d / "cut.tif") as tif:
        page = tif.pages[0]
        end = page.dataoffsets[0] + page.databytecounts[0]
    (d / "cut.tif").write_bytes((d / "cut.tif").read_bytes()[:end])
    tifffile.imwrite(d / "badpage.tif", (data * 255).astype(np.uint8), compression="zlib")
    with tifffile.TiffFile(d / "badpage.tif") as tif:
        offset, count = tif.pages[4].dataoffsets[0], tif.pages[4].databytecounts[0]
    raw = bytearray((d / "badpage.tif").read_bytes())
    raw[offset + 10 : offset + count] = b"\0" * (count - 10)
    (d / "badpage.tif").write_bytes(bytes(raw))
    bad = zarr.create_array(str(d / "badchunk.zarr"), shape=data.shape, chunks=(3, 20, 18), dtype=np.float32)
    bad[...] = data
    (d / "badchunk.zarr" / "c" / "1" / "0" / "0").write_bytes(b"garbage")
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, kernel_size=1)

    def run(stack: Path, output: Path, resume: bool) -> None:
        predict_mod.predict_volume(
            net, str(stack), output, roi_size=(2, 8, 8), activation="softmax", chunks=(2, 20, 18), device="cpu",
            resume=resume,
        )  # fmt: skip

    results = _by_name(predict_many([d], tmp_path / "out", predict_fn=run, progress=False))
    assert set(results) == {"good.zarr", "cut.tif", "badpage.tif", "badchunk.zarr"}
    assert results["good.zarr"].status == "done"
    expected = {
        "cut.tif": r"VolumeError: .*cut\.tif: TIF is truncated",
        "badpage.tif": r"VolumeError: .*badpage\.tif: cannot read region",
        "badchunk.zarr": r"VolumeError: .*badchunk\.zarr: cannot read region",
    }
    for name, pattern in expected.items():
        assert results[name].status == "failed", (name, results[name])
        assert re.search(pattern, results[name].error), results[name].error
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"] == {"done": 1, "resumed": 0, "skipped": 0, "failed": 3}
    again = _by_name(predict_many([d], tmp_path / "out", predict_fn=run, progress=False))
    assert [again[n].status for n in expected] == ["failed"] * 3  # a rerun never turns them into skipped / done
