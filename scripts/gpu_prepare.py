"""Prepare a lent GPU machine's run HERE (a machine with the internet and the data): the wheels the device image
lacks in ``.whl/`` and the real data packed into ``data/gpu/`` so that, with the working tree, it fits the device
tool's transfer limit (64 MiB). Then one device call runs ``scripts/gpu_session.sh`` (docs/paper_protocol.md)::

    .venv/bin/python scripts/gpu_prepare.py --data ../shared/data
    # device tool: run(command="bash scripts/gpu_session.sh", carry=[".whl", "data/gpu"], timeout_s=600)

Wheels: the pinned (``constraints.txt``) cp312 manylinux builds of the packages mtbio's training, evaluation and
streaming inference import that the device image does not hold (``DEVICE_WHEELS``; the image's ``python3`` has
torch, numpy, scipy, scikit-learn, scikit-image, tifffile, pillow, h5py, tqdm, tensorboard).

Data (lossless; the release layouts, so ``mtbio.data.sources.load_split`` reads them): VNC III ``stack1`` (all
sections; raw sections re-encoded as PNG, labels copied byte for byte), the Lucchi++ test sections ``Train_*`` (all;
images re-encoded as optimised PNG, labels copied) and every ``k``-th section of the target training volume
``Test_*`` with the smallest ``k`` that fits what is left of the limit. ``data/gpu/PACK.json`` records what is there
(sections, stride, bytes, the git commit); every packed volume is read back through ``load_split`` and compared with
the original.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: packages the device image lacks (KINDS.md's package list), with the versions pinned in constraints.txt
DEVICE_WHEELS = ("monai", "pytorch-ignite", "zarr", "numcodecs", "donfig", "google-crc32c")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
MIB = 2**20


def pinned(names: tuple[str, ...], constraints: Path) -> list[str]:
    """``name==version`` of each name from the constraints file (names compared case- and ``-_``-insensitively)."""
    norm = {re.sub(r"[-_.]+", "-", n).lower(): n for n in names}
    found = {}
    for line in constraints.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if m and re.sub(r"[-_.]+", "-", m.group(1)).lower() in norm:
            found[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = f"{m.group(1)}=={m.group(2)}"
    missing = [norm[k] for k in norm if k not in found]
    if missing:
        raise SystemExit(f"{constraints}: no pin for {', '.join(missing)}")
    return [found[k] for k in norm]


def download_wheels(dest: Path, specs: list[str]) -> None:
    """``pip download`` the cp312 x86-64 wheels of ``specs`` (no dependencies) into ``dest``, replacing other
    versions of the same packages (two versions of one package stop the install there)."""
    dest.mkdir(exist_ok=True)
    for spec in specs:
        name, version = spec.split("==")
        stem = re.sub(r"[-_.]+", "_", name).lower()
        for old in dest.glob("*.whl"):
            parts = old.name.split("-")
            if re.sub(r"[-_.]+", "_", parts[0]).lower() == stem and parts[1] != version:
                old.unlink()
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run(cmd + specs, check=True)


def travelling_bytes(repo: Path) -> int:
    """Bytes of the files a device call sends besides the carried paths: tracked and untracked-not-ignored files."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo, capture_output=True, check=True,
    ).stdout  # fmt: skip
    return sum((repo / f).stat().st_size for f in out.decode().split("\0") if f and (repo / f).is_file())


def png_bytes(section: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(section).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _files(folder: Path) -> list[Path]:
    from mtbio.data.volumes import IMAGE_SUFFIXES, natural_sort_key

    files = [f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda f: natural_sort_key(f.name))


def _read_one(path: Path) -> np.ndarray:
    from mtbio.data._backends import read_image_file

    section = np.asarray(read_image_file(path))
    if section.ndim != 2 or section.dtype != np.uint8:
        raise SystemExit(f"{path}: expected a greyscale uint8 section, got {section.dtype} {section.shape}")
    return section


def encode_folder(src: Path, picks: list[int]) -> list[tuple[str, bytes]]:
    """(name.png, PNG bytes) of the picked sections of an image folder (names kept, suffix .png)."""
    files = _files(src)
    return [(files[i].with_suffix(".png").name, png_bytes(_read_one(files[i]))) for i in picks]


def copy_picked(src: Path, dst: Path, picks: list[int]) -> int:
    """Copy the picked files of a folder byte for byte (labels: the label rule decides on the original bytes)."""
    dst.mkdir(parents=True, exist_ok=True)
    files = _files(src)
    for i in picks:
        shutil.copyfile(files[i], dst / files[i].name)
    return sum((dst / files[i].name).stat().st_size for i in picks)


def write(dst: Path, encoded: list[tuple[str, bytes]]) -> int:
    dst.mkdir(parents=True, exist_ok=True)
    for name, data in encoded:
        (dst / name).write_bytes(data)
    return sum(len(d) for _, d in encoded)


def verify(data: Path, packed: Path, target_picks: list[int]) -> None:
    """Every packed split equals the original's sections (images and labels, as ``load_split`` reads them)."""
    from mtbio.data.sources import load_split

    pairs = [("vnc3", "all", None), ("lucchi_pp", "epfl_test", None), ("lucchi_pp", "epfl_train", target_picks)]
    for source, split, picks in pairs:
        a, b = load_split(source, data / source, split), load_split(source, packed / source, split)
        for what in ("image", "label"):
            x, y = np.asarray(getattr(a, what)[:]), np.asarray(getattr(b, what)[:])
            x = x if picks is None else x[picks]
            if x.shape != y.shape or not np.array_equal(x, y):
                raise SystemExit(f"packed {source}/{split} {what} differs from the original")


def pack(data: Path, out: Path, limit: int) -> dict:
    """Pack ``data`` into ``out`` within ``limit`` bytes; the PACK.json record."""
    shutil.rmtree(out, ignore_errors=True)
    vnc, lpp = data / "vnc3" / "stack1", data / "lucchi_pp"
    n_vnc, n_test, n_target = (len(_files(p)) for p in (vnc / "raw", lpp / "Train_In", lpp / "Test_In"))
    used = write(out / "vnc3" / "stack1" / "raw", encode_folder(vnc / "raw", list(range(n_vnc))))
    used += copy_picked(vnc / "mitochondria", out / "vnc3" / "stack1" / "mitochondria", list(range(n_vnc)))
    used += write(out / "lucchi_pp" / "Train_In", encode_folder(lpp / "Train_In", list(range(n_test))))
    used += copy_picked(lpp / "Train_Out", out / "lucchi_pp" / "Train_Out", list(range(n_test)))
    target = encode_folder(lpp / "Test_In", list(range(n_target)))
    labels = [f.stat().st_size for f in _files(lpp / "Test_Out")]
    left = limit - used
    for stride in range(1, n_target + 1):
        picks = list(range(0, n_target, stride))
        if sum(len(target[i][1]) + labels[i] for i in picks) <= left:
            break
    else:
        raise SystemExit(
            f"not one target section fits: {used / MIB:.1f} MiB of source and test data, limit {limit / MIB:.1f}"
        )
    used += write(out / "lucchi_pp" / "Test_In", [target[i] for i in picks])
    used += copy_picked(lpp / "Test_Out", out / "lucchi_pp" / "Test_Out", picks)
    verify(data, out, picks)
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    record = {
        "from": str(data),
        "source": {"vnc3_sections": n_vnc},
        "target_train": {"sections": picks, "stride": stride, "of": n_target},
        "test": {"sections": n_test},
        "bytes": used,
        "limit_bytes": limit,
        "git": git or None,
        "lossless": "images re-encoded as PNG (verified equal), labels copied byte for byte",
    }
    (out / "PACK.json").write_text(json.dumps(record, indent=2))
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="folder with vnc3/, lucchi_pp/")
    p.add_argument("--out", type=Path, default=REPO / "data" / "gpu", help="the packed data (git-ignored data/)")
    p.add_argument("--wheels", type=Path, default=REPO / ".whl", help="the wheels folder (git-ignored .whl/)")
    p.add_argument("--no-wheels", action="store_true", help="keep the wheels folder as it is (no download)")
    p.add_argument("--limit-mib", type=float, default=64.0, help="the device tool's transfer limit")
    p.add_argument("--margin-mib", type=float, default=1.5, help="kept free under the limit")
    args = p.parse_args(argv)
    for folder in ("vnc3/stack1/raw", "lucchi_pp/Train_In", "lucchi_pp/Test_In"):
        if not (args.data / folder).is_dir():
            p.error(f"--data {args.data}: no {folder} (the folder holding vnc3/ and lucchi_pp/ in the release layouts)")
    if not args.no_wheels:
        download_wheels(args.wheels, pinned(DEVICE_WHEELS, REPO / "constraints.txt"))
    wheels = sum(f.stat().st_size for f in args.wheels.glob("*.whl")) if args.wheels.is_dir() else 0
    tree = travelling_bytes(REPO)
    limit = int((args.limit_mib - args.margin_mib) * MIB) - tree - wheels
    print(f"working tree {tree / MIB:.1f} MiB, wheels {wheels / MIB:.1f} MiB: {limit / MIB:.1f} MiB for the data")
    record = pack(args.data, args.out, limit)
    t = record["target_train"]
    print(
        f"{args.out}: {record['bytes'] / MIB:.1f} MiB; VNC III {record['source']['vnc3_sections']} sections, test "
        f"{record['test']['sections']}, target training {len(t['sections'])} of {t['of']} (every {t['stride']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
