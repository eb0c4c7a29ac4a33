"""Write the synthetic source / target layout as zarr (format 3) groups, atomically.

Layout of ``OUT``::

    source.zarr              arrays "raw" (uint8), "label" (uint8 {0, 255})   labelled source
    target.zarr              array  "raw"                                     unlabelled adaptation volume
    target_labels.zarr       array  "label"                                   for evaluation only
    target_test.zarr         array  "raw"             held-out target volume (another seed)
    target_test_labels.zarr  array  "label"
    synth.json               seed, shape, both styles, mtbio version (written last: marks OUT complete)

Every array has ``attrs["voxel_size"] = [z, y, x]`` in nm. Everything is built in a hidden ``OUT/.tmp-*``
folder and moved into place only when finished, then ``synth.json`` is written; a folder without
``synth.json`` is incomplete and is rebuilt on the next call.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtbio.data.synthetic.domains import SOURCE, TARGET, DomainStyle
from mtbio.data.synthetic.render import synthesize, validate_shape

__all__ = ["generate_synthetic", "read_manifest", "MANIFEST", "LAYOUT", "TEST_SEED_OFFSET"]

MANIFEST = "synth.json"
#: the members of a complete folder, in the order they are written
LAYOUT = ("source.zarr", "target.zarr", "target_labels.zarr", "target_test.zarr", "target_test_labels.zarr")
#: the held-out target volume uses seed + this offset (and the adaptation volume seed + 1)
TEST_SEED_OFFSET = 1_000_003


def _write_group(path: Path, arrays: dict[str, np.ndarray], voxel_size: Sequence[float], chunk_z: int) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs["voxel_size"] = [float(v) for v in voxel_size]
    for name, data in arrays.items():
        chunks = (min(chunk_z, data.shape[0]), min(256, data.shape[1]), min(256, data.shape[2]))
        arr = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks)
        arr[...] = data
        arr.attrs["voxel_size"] = [float(v) for v in voxel_size]
        arr.attrs["axes"] = ["z", "y", "x"]
        if name == "label":
            arr.attrs["values"] = {"background": 0, "mitochondrion": 255}


def read_manifest(out_dir: str | os.PathLike[str]) -> dict | None:
    """The parsed ``synth.json`` of a complete folder, or None when the folder is absent or incomplete."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable synthetic-data manifest ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: manifest is not a JSON object")
    return data


def generate_synthetic(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    shape: Sequence[int] = (32, 256, 256),
    source: DomainStyle = SOURCE,
    target: DomainStyle = TARGET,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Generate the labelled source, the unlabelled target and a held-out target volume.

    Args:
        out_dir: output folder (created; must not hold other files unless ``overwrite``).
        seed: base seed. The source uses ``seed``, the target ``seed + 1``, the held-out target
            ``seed + TEST_SEED_OFFSET``, so every volume is a different scene.
        shape: (Z, Y, X) shape of every volume, in voxels of its own domain.
        source: style of the labelled source domain.
        target: style of the target domain.
        overwrite: replace an existing complete folder made with other arguments.
        progress: show a tqdm progress bar on stderr.

    Returns:
        name -> path for ``source``, ``target``, ``target_labels``, ``target_test``, ``target_test_labels``
        and ``manifest``.

    Raises:
        FileExistsError: ``out_dir`` holds a complete folder made with other arguments (or other files)
            and ``overwrite`` is false.
        ValueError: bad seed, shape or styles.
    """
    zyx = validate_shape(shape)
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    for name, style in (("source", source), ("target", target)):
        if not isinstance(style, DomainStyle):
            raise ValueError(f"{name} must be a DomainStyle, got {type(style).__name__}")
    from mtbio import __version__

    out = Path(out_dir)
    paths = {name.removesuffix(".zarr"): out / name for name in LAYOUT}
    paths["manifest"] = out / MANIFEST
    manifest = {
        "seed": int(seed),
        "shape": list(zyx),
        "seeds": {"source": int(seed), "target": int(seed) + 1, "target_test": int(seed) + TEST_SEED_OFFSET},
        "source": source.to_dict(),
        "target": target.to_dict(),
        "mtbio_version": __version__,
    }
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    existing = read_manifest(out)
    if existing is not None:
        same = {k: existing.get(k) for k in ("seed", "shape", "source", "target")} == {
            k: manifest[k] for k in ("seed", "shape", "source", "target")
        }
        if same and not overwrite and all(p.exists() for p in paths.values()):
            return paths  # idempotent: already generated with these arguments
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds synthetic data made with other arguments (seed {existing.get('seed')}, "
                f"shape {existing.get('shape')}); pass overwrite=True (--overwrite) to replace it"
            )
    elif out.is_dir() and not overwrite:
        foreign = [p.name for p in out.iterdir() if p.name not in LAYOUT and not p.name.startswith(".tmp-")]
        if foreign:
            raise FileExistsError(f"{out} is not empty (holds {sorted(foreign)[:3]}); pass overwrite=True")

    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # from here on the folder reads as incomplete
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out))
    try:
        jobs = [
            ("source", source, manifest["seeds"]["source"], ("source.zarr", "source.zarr")),
            ("target", target, manifest["seeds"]["target"], ("target.zarr", "target_labels.zarr")),
            ("target_test", target, manifest["seeds"]["target_test"], ("target_test.zarr", "target_test_labels.zarr")),
        ]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(jobs), desc="mtbio synth", unit="volume")
        for _, style, job_seed, (raw_name, label_name) in jobs:
            raw, label = synthesize(style, zyx, job_seed)
            chunk_z = max(1, min(zyx[0], 16))
            if raw_name == label_name:
                _write_group(tmp / raw_name, {"raw": raw, "label": label}, style.voxel_size_nm, chunk_z)
            else:
                _write_group(tmp / raw_name, {"raw": raw}, style.voxel_size_nm, chunk_z)
                _write_group(tmp / label_name, {"label": label}, style.voxel_size_nm, chunk_z)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        for name in LAYOUT:
            final = out / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp / name, final)
        part = out / (MANIFEST + ".part")
        part.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(part, out / MANIFEST)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths
