"""Batch inference over many microscopy stacks: discovery, one output per stack, skip / resume, a summary.

What counts as a stack (:func:`discover_stacks`):

* a file named ``*.h5``, ``*.hdf5``, ``*.hdf``, ``*.tif``, ``*.tiff``, ``*.nii``, ``*.nii.gz``, ``*.npy``,
  ``*.png``, ``*.jpg``, ``*.jpeg`` (the last three only when named directly: inside a folder they
  are sections);
* a zarr folder (a name ending in ``.zarr`` or a folder holding ``zarr.json`` / ``.zgroup`` / ``.zarray``) that
  is not an mtbio prediction store (so an output folder inside an input folder is never read back as input);
* a *section folder*: a folder whose files hold 2D images (PNG / JPEG / BMP, or TIFFs of one 2D page), sorted
  by name into the sections of one stack; it holds no volume file (3D TIFF, HDF5, NIfTI, zarr, ...).

Any other folder is a *container*: its direct entries that are stacks, in name order (no deeper search).
A glob (``*``, ``?``, ``[``) expands to its matches in name order, each then treated as a named path (a
matching file that is no stack, e.g. a README, is ignored; a matching container is searched). Hidden
entries are ignored; a stack reached twice is kept once.

Outputs are ``<out_dir>/<stem>.pred.zarr`` (:func:`output_path_for`); stacks whose stems collide (case
blind: ``a/x.tif`` and ``b/x.tif``) get ``<stem>-<8 hex of the input's absolute path>`` instead, the same name
on every rerun with the same inputs.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

VOLUME_SUFFIXES = (".h5", ".hdf5", ".hdf", ".tif", ".tiff", ".nii", ".nii.gz", ".npy")
SECTION_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
OUTPUT_SUFFIX = ".pred.zarr"
SUMMARY_NAME = "summary.json"
_STRIP_SUFFIXES = (".ome.zarr", ".ome.tiff", ".ome.tif", ".nii.gz", ".zarr", *VOLUME_SUFFIXES, ".png", ".jpg", ".jpeg")

Status = Literal["done", "skipped", "failed", "resumed"]
PredictFn = Callable[[Path, Path, bool], object]


@dataclass
class StackResult:
    """What happened to one stack.

    Attributes:
        input: the stack's path.
        output: its prediction store's path.
        status: ``done`` (predicted now), ``skipped`` (a complete store existed), ``resumed`` (an incomplete store
            was finished), ``failed`` (see ``error``).
        seconds: wall time spent on it.
        error: ``"<ExceptionType>: <message>"`` when it failed, else ``None``.
    """

    input: str
    output: str
    status: Status
    seconds: float
    error: str | None = None


def _name_ends(path: Path, suffixes: Sequence[str]) -> bool:
    return path.name.lower().endswith(tuple(suffixes))


def _is_zarr_dir(path: Path) -> bool:
    if not path.is_dir():
        return False
    return path.name.lower().endswith(".zarr") or any((path / n).exists() for n in ("zarr.json", ".zgroup", ".zarray"))


def _tiff_is_2d(path: Path) -> bool:
    """True for a TIFF of one 2D (Y, X) or (Y, X, RGB[A]) page; unreadable TIFFs count as volumes (and fail later).

    A truncated multi-page TIFF (one readable page left) is unreadable here, not 2D: it is listed as a stack and
    fails with the reader's error instead of vanishing from the batch as a stray section image."""
    try:
        import tifffile

        from mtbio.data._backends import check_tiff

        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) != 1:
                return False
            shape = check_tiff(tif, path).shape
    except Exception:  # noqa: BLE001 - an unreadable file is reported when it is predicted
        return False
    return len(shape) == 2 or (len(shape) == 3 and shape[-1] in (3, 4))


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def is_section_folder(folder: Path) -> bool:
    """A folder of 2D section images (one stack): no volume files or zarr folders, at least one 2D image."""
    if not folder.is_dir() or _is_zarr_dir(folder):
        return False
    files = [p for p in _visible(folder) if p.is_file()]
    if any(_is_zarr_dir(p) for p in _visible(folder)):
        return False
    sections = 0
    for f in files:
        if _name_ends(f, (".tif", ".tiff")):
            if not _tiff_is_2d(f):
                return False
            sections += 1
        elif _name_ends(f, SECTION_SUFFIXES):
            sections += 1
        elif _name_ends(f, VOLUME_SUFFIXES):
            return False
    return sections > 0


def _is_stack(path: Path, *, named: bool) -> bool:
    from mtbio.data.store import is_prediction_store

    if path.is_dir():
        if _is_zarr_dir(path):
            return not is_prediction_store(path)
        return is_section_folder(path)
    if _name_ends(path, VOLUME_SUFFIXES):
        return named or not _name_ends(path, (".tif", ".tiff")) or not _tiff_is_2d(path)
    return named and _name_ends(path, SECTION_SUFFIXES)


def discover_stacks(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand paths, globs and folders into the list of stacks (rules in the module docstring).

    Raises:
        FileNotFoundError: a path does not exist or a glob matches nothing (named in the message).
        ValueError: no inputs, a named file is not a stack, or nothing at all was found.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise ValueError("no inputs given: pass stack paths, globs or folders")
    found: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        if any(ch in text for ch in "*?["):
            matches = [Path(m) for m in sorted(globlib.glob(os.path.expanduser(text)))]
            if not matches:
                raise FileNotFoundError(f"{text}: the pattern matches no file or folder")
            found.extend(_expand_containers(matches))
            continue
        path = Path(text).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        if path.is_file() and not _is_stack(path, named=True):
            raise ValueError(f"{path}: not a stack (expected one of {', '.join(VOLUME_SUFFIXES)} or an image)")
        found.extend(_expand_containers([path]))
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    if not unique:
        raise ValueError(f"no stacks found in {[os.fspath(i) for i in inputs]}")
    return list(unique.values())


def _expand_containers(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if _is_stack(p, named=True):
            out.append(p)
        elif p.is_dir():
            out.extend(c for c in _visible(p) if _is_stack(c, named=False))
    return out


def _stem(path: Path) -> str:
    name = path.name.rstrip("/")
    lower = name.lower()
    for suffix in _STRIP_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def output_path_for(input: Path, out_dir: Path, *, disambiguate: bool = False) -> Path:
    """``out_dir / "<stem>.pred.zarr"``; with ``disambiguate``, ``"<stem>-<8 hex of abs path>.pred.zarr"``."""
    stem = _stem(Path(input))
    if disambiguate:
        digest = hashlib.sha1(str(Path(input).resolve()).encode()).hexdigest()[:8]
        stem = f"{stem}-{digest}"
    return Path(out_dir) / f"{stem}{OUTPUT_SUFFIX}"


def output_paths_for(stacks: Sequence[Path], out_dir: Path) -> list[Path]:
    """One output per stack; stems that collide (case blind) are disambiguated by :func:`output_path_for`."""
    counts: dict[str, int] = {}
    for s in stacks:
        counts[_stem(s).lower()] = counts.get(_stem(s).lower(), 0) + 1
    return [output_path_for(s, out_dir, disambiguate=counts[_stem(s).lower()] > 1) for s in stacks]


def _format_error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _run_one(stack: Path, output: Path, predict_fn: PredictFn, overwrite: bool) -> tuple[Status, str | None]:
    import shutil

    from mtbio.data.store import IncompletePredictionError, is_prediction_store, open_prediction_store

    resume = False
    if output.exists():
        if not is_prediction_store(output):
            return "failed", f"{output} exists and is not a prediction store; move it away (it is left untouched)"
        if overwrite:
            shutil.rmtree(output)
        else:
            try:
                open_prediction_store(output)
                return "skipped", None
            except IncompletePredictionError:
                resume = True
    predict_fn(stack, output, resume)
    try:
        open_prediction_store(output)
    except (IncompletePredictionError, FileNotFoundError, ValueError) as err:
        return "failed", f"the prediction did not finish: {_format_error(err)}"
    return ("resumed" if resume else "done"), None


def predict_many(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    predict_fn: PredictFn,
    overwrite: bool = False,
    progress: bool = True,
) -> list[StackResult]:
    """Predict every stack of ``inputs`` into ``out_dir``; one failing stack never stops the others.

    A complete prediction store at a stack's output is skipped (``overwrite`` replaces it), an incomplete one
    is resumed (``predict_fn(..., resume=True)``); an existing path that is no prediction store fails that stack
    and is left untouched. ``<out_dir>/summary.json`` is rewritten after every stack, so it is current even when
    the run is interrupted (Ctrl-C marks the running stack failed, writes the summary and re-raises).

    Args:
        inputs: stack paths, globs or folders (:func:`discover_stacks`).
        out_dir: output folder (created).
        predict_fn: ``predict_fn(input_path, output_path, resume)`` predicts one stack into a prediction store
            and marks it complete (the CLI passes a closure over ``predict_volume``).
        overwrite: recompute stacks whose output is already complete.
        progress: print one line per stack and the final table to stderr.

    Returns:
        one :class:`StackResult` per stack, in discovery order.
    """
    stacks = discover_stacks(inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = output_paths_for(stacks, out_dir)
    results: list[StackResult] = []
    for i, (stack, output) in enumerate(zip(stacks, outputs), 1):
        start = time.perf_counter()
        try:
            status, error = _run_one(stack, output, predict_fn, overwrite)
        except KeyboardInterrupt:
            results.append(StackResult(str(stack), str(output), "failed", time.perf_counter() - start, "interrupted"))
            write_summary(results, out_dir, print_table=False)
            raise
        except Exception as err:  # noqa: BLE001 - one bad stack must not stop the others
            status, error = "failed", _format_error(err)
        result = StackResult(str(stack), str(output), status, round(time.perf_counter() - start, 3), error)
        results.append(result)
        write_summary(results, out_dir, print_table=False)
        if progress:
            tail = f": {error}" if error else ""
            line = f"[{i}/{len(stacks)}] {stack} -> {output.name}: {status} ({result.seconds:.1f} s){tail}"
            print(line, file=sys.stderr)
    if progress:
        print(format_table(results), file=sys.stderr)
    return results


def format_table(results: Sequence[StackResult]) -> str:
    """A plain-text table of the results and the count per status."""
    rows = [("status", "seconds", "input", "output / error")]
    for r in results:
        rows.append((r.status, f"{r.seconds:.1f}", r.input, r.error or Path(r.output).name))
    widths = [max(len(row[k]) for row in rows) for k in range(3)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    counts = _counts(results)
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) + f" ({len(results)} stacks)")
    return "\n".join(lines)


def _counts(results: Sequence[StackResult]) -> dict[str, int]:
    return {s: sum(r.status == s for r in results) for s in ("done", "resumed", "skipped", "failed")}


def write_summary(results: Sequence[StackResult], out_dir: str | os.PathLike, *, print_table: bool = True) -> Path:
    """Write ``<out_dir>/summary.json`` atomically (temporary file + ``os.replace``) and print the table.

    The file holds ``{"mtbio_version", "written", "counts": {status: n}, "stacks": [StackResult as dict]}``.
    """
    from mtbio import __version__

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "mtbio_version": __version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "counts": _counts(results),
        "stacks": [asdict(r) for r in results],
    }
    path = out_dir / SUMMARY_NAME
    tmp = out_dir / f".{SUMMARY_NAME}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    if print_table:
        print(format_table(results))
    return path
