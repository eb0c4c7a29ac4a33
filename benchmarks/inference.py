"""Benchmark: out-of-core zarr -> zarr ``predict_volume`` against MONAI, and its memory as the volume grows.

Usage::

    python benchmarks/inference.py --out bench-out                  # synthetic volume, settings below
    python benchmarks/inference.py --data stack.h5 --key raw --out bench-out   # a real (Z, Y, X) stack

Pinned settings (CPU, ``torch.set_num_threads(2)``):

* volume ``64 x 256 x 256`` float32 (uniform noise, or the first 64 sections of ``--data`` cropped to 256 x 256
  and z-scored), stored as zarr with chunks ``(32, 256, 256)``;
* window ``32 x 96 x 96``, overlap 0.25, batch 4, Gaussian blending for mtbio and in-memory MONAI;
* models: the tiny anchor (MONAI UNet 3D, channels (8, 16, 32), strides (2, 2), 1 residual unit) and a real mtbio
  network (``mtbio.networks.get_network("small_unet", 3)``), seeded, eval mode;
* timings (each the best of ``REPEATS`` = 5, methods interleaved, since the CPU may be shared; the median of the
  per-repeat ratios is reported too):
  (a) MONAI ``sliding_window_inference`` on the volume in memory (input already a tensor, output left
  in memory: the network work alone); (a') the same job done in memory from and to zarr: read the whole input
  array, (a), write the result into a new zarr array with the store's chunks and codec;
  (b) mtbio ``predict_volume`` zarr -> zarr (float32 store, activation None, chunks (32, 256, 256));
  (c) the same with ``carry=False`` (shared windows recomputed; tiny model only); (d) MONAI ``PatchInferer`` with
  ``SlidingWindowSplitter`` and ``ZarrAvgMerger`` (own output / value / count stores in a temporary folder,
  MONAI's default chunking and averaging), in-memory input; (e) the product's default output, softmax
  probabilities stored as uint8, against (a) followed by the same softmax and rounding in memory, and against
  (a') with that post-processing before the write;
* memory: tiny model on ``16*k x 256 x 256`` zarr volumes (k = 1, 4, 16, 64; chunks ``(16, 256, 256)``), each run in
  a fresh subprocess: its own peak RSS (``VmHWM``; ``ru_maxrss`` is inherited from the parent across exec) minus
  the RSS after imports, network construction and opening the input.

Writes ``inference.json`` and ``inference.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (64, 256, 256)
ROI = (32, 96, 96)
OVERLAP = 0.25
BATCH = 4
CHUNKS = (32, 256, 256)
MEMORY_FACTORS = (1, 4, 16, 64)
MEMORY_BASE_Z = 16
MEMORY_CHUNKS = (16, 256, 256)
REPEATS = 5
THREADS = 2


def tiny_anchor():
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(3, 1, 2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1).eval()


def mtbio_network():
    import torch

    from mtbio.networks import get_network

    torch.manual_seed(0)
    return get_network("small_unet", 3).eval()


def make_volume(data: str | None, key: str | None) -> np.ndarray:
    if data is None:
        return np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    from mtbio.data.volumes import open_volume

    vol = open_volume(data, key=key)
    if vol.ndim != 3 or any(s < t for s, t in zip(vol.shape, SHAPE)):
        raise SystemExit(f"{data}: need a (Z, Y, X) stack of at least {SHAPE}, got {vol.shape}")
    x = np.asarray(vol[: SHAPE[0], : SHAPE[1], : SHAPE[2]], dtype=np.float32)
    return (x - x.mean()) / (x.std() or 1.0)


def write_zarr(path: Path, array_or_shape, chunks=CHUNKS, seed: int = 0) -> None:
    import zarr

    if isinstance(array_or_shape, np.ndarray):
        zarr.create_array(str(path), data=array_or_shape, chunks=chunks)
        return
    shape = tuple(array_or_shape)
    arr = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="float32")
    rng = np.random.default_rng(seed)
    for z in range(0, shape[0], chunks[0]):
        arr[z : z + chunks[0]] = rng.random((min(chunks[0], shape[0] - z), *shape[1:]), dtype=np.float32)


def cpu_s() -> float:
    """User + system CPU seconds of this process (all its threads): robust to other jobs on a shared machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def in_memory_job(source, net, out_path: Path, uint8: bool):
    """(a'): the whole zarr input into memory, MONAI's sliding window, the result into a new zarr array with the
    prediction store's chunks (one channel per chunk) and zarr's default codec, every chunk written once."""
    import torch
    import zarr

    values = swi(torch.from_numpy(np.asarray(source[:], dtype=np.float32))[None, None], net, uint8)[0].numpy()
    arr = zarr.create_array(str(out_path), shape=values.shape, chunks=(1, *CHUNKS), dtype=values.dtype)
    arr.with_config({"write_empty_chunks": True})[:] = values
    return values


def swi(x, net, uint8: bool):
    """(a): MONAI's sliding window on the in-memory tensor; with ``uint8`` followed by softmax and rounding."""
    import torch
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        out = sliding_window_inference(x, ROI, BATCH, net, overlap=OVERLAP, mode="gaussian")
        return torch.round(torch.softmax(out, dim=1) * 255).to(torch.uint8) if uint8 else out


def merge(inferer, x, net):
    """(d): MONAI's ``PatchInferer`` (splitter + ``ZarrAvgMerger``) on the in-memory tensor."""
    import torch

    with torch.inference_mode():
        return inferer(x, net)


def timed(times: dict[str, list[float]], key: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; its wall-clock and CPU seconds are appended to ``times[key + "_s"]`` and
    ``times[key + "_cpu_s"]``."""
    t, c = time.perf_counter(), cpu_s()
    result = fn(*args, **kwargs)
    times.setdefault(f"{key}_s", []).append(time.perf_counter() - t)
    times.setdefault(f"{key}_cpu_s", []).append(cpu_s() - c)
    return result


def time_models(vol: np.ndarray, workdir: Path, repeats: int = REPEATS) -> list[dict]:
    import torch
    import zarr
    from monai.inferers import PatchInferer, SlidingWindowSplitter, ZarrAvgMerger

    from mtbio.inference.predict import predict_volume

    src = workdir / "input.zarr"
    write_zarr(src, vol)
    source = zarr.open_array(str(src), mode="r")
    x = torch.from_numpy(vol)[None, None]
    rows = []
    for name, build in (("tiny anchor UNet (8,16,32)", tiny_anchor), ("mtbio small_unet 3D", mtbio_network)):
        net = build()
        with torch.inference_mode():
            net(torch.zeros((1, 1, *ROI)))  # warm-up
        times: dict[str, list[float]] = {}
        tag = len(rows)
        kw = dict(roi_size=ROI, overlap=OVERLAP, batch_size=BATCH, chunks=CHUNKS, device="cpu")
        for rep in range(repeats):
            ref = timed(times, "in_memory", swi, x, net, uint8=False)
            job = timed(times, "in_memory_job", in_memory_job, source, net, workdir / f"{tag}-{rep}-job.zarr", False)
            out = timed(times, "mtbio", predict_volume, net, source, workdir / f"{tag}-{rep}.zarr", **kw)
            if build is tiny_anchor:
                no_carry = workdir / f"{tag}-{rep}-nocarry.zarr"
                timed(times, "mtbio_no_carry", predict_volume, net, source, no_carry, carry=False, **kw)
            # the product's default output: softmax probabilities stored as uint8 = round(p * 255), against the
            # same post-processing of the in-memory result
            ref_u8 = timed(times, "in_memory_uint8", swi, x, net, uint8=True)
            job_u8 = timed(
                times, "in_memory_job_uint8", in_memory_job, source, net, workdir / f"{tag}-{rep}-job-u8.zarr", True
            )
            out_u8 = timed(
                times,
                "mtbio_uint8",
                predict_volume,
                net,
                source,
                workdir / f"{tag}-{rep}-u8.zarr",
                activation="softmax",
                **kw,
            )
            stores = workdir / f"merger-{tag}-{rep}"
            stores.mkdir()
            inferer = PatchInferer(
                splitter=SlidingWindowSplitter(ROI, overlap=OVERLAP),
                merger_cls=ZarrAvgMerger,
                batch_size=BATCH,
                store=str(stores / "out.zarr"),
                value_store=str(stores / "values.zarr"),
                count_store=str(stores / "counts.zarr"),
            )
            timed(times, "patchinferer_zarravgmerger", merge, inferer, x, net)
        if not (np.array_equal(job, ref[0].numpy()) and np.array_equal(job_u8, ref_u8[0].numpy())):
            raise SystemExit("internal error: the in-memory job's result differs from the in-memory call's")
        err = float(np.abs(np.asarray(out[:]) - ref[0].numpy()).max())
        err_u8 = int(np.abs(np.asarray(out_u8[:]).astype(np.int16) - ref_u8[0].numpy().astype(np.int16)).max())
        row: dict = {
            "model": name,
            "max_abs_diff_vs_monai": err,
            "max_uint8_levels_diff_vs_monai": err_u8,
            "all_runs_s": times,
        }
        row.update({k: min(v) for k, v in times.items()})
        row["mtbio_uint8_vs_in_memory"] = row["in_memory_uint8_s"] / row["mtbio_uint8_s"]
        row["mtbio_vs_in_memory_job"] = row["in_memory_job_s"] / row["mtbio_s"]
        row["mtbio_uint8_vs_in_memory_job"] = row["in_memory_job_uint8_s"] / row["mtbio_uint8_s"]
        for name, (base, ours) in {
            "mtbio_vs_in_memory": ("in_memory_s", "mtbio_s"),
            "mtbio_vs_in_memory_job": ("in_memory_job_s", "mtbio_s"),
            "mtbio_uint8_vs_in_memory": ("in_memory_uint8_s", "mtbio_uint8_s"),
            "mtbio_uint8_vs_in_memory_job": ("in_memory_job_uint8_s", "mtbio_uint8_s"),
        }.items():  # the ratio within each repeat (both runs back to back), median over repeats
            row[f"median_paired_{name}"] = float(np.median(np.asarray(times[base]) / np.asarray(times[ours])))
        row["cpu_mtbio_uint8_vs_in_memory"] = row["in_memory_uint8_cpu_s"] / row["mtbio_uint8_cpu_s"]
        row["mtbio_vs_in_memory"] = row["in_memory_s"] / row["mtbio_s"]
        row["mtbio_vs_zarravgmerger"] = row["patchinferer_zarravgmerger_s"] / row["mtbio_s"]
        row["cpu_mtbio_vs_in_memory"] = row["in_memory_cpu_s"] / row["mtbio_cpu_s"]
        row["cpu_mtbio_vs_zarravgmerger"] = row["patchinferer_zarravgmerger_cpu_s"] / row["mtbio_cpu_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


CHILD = """
import json, os, sys, time
import torch
torch.set_num_threads({threads})
sys.path.insert(0, {bench!r})
import zarr
from inference import tiny_anchor
from mtbio.inference.predict import predict_volume

def rss_kb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024

net = tiny_anchor()
source = zarr.open_array({src!r}, mode="r")
with torch.inference_mode():
    net(torch.zeros((1, 1, *{roi!r})))
base = rss_kb()
t = time.perf_counter()
predict_volume(net, source, {out!r}, roi_size={roi!r}, overlap={overlap}, batch_size={batch}, chunks={chunks!r},
               device="cpu")
seconds = time.perf_counter() - t
# this process's own peak: VmHWM belongs to the address space made by exec (ru_maxrss would carry over the
# parent's peak across fork + exec, so a big parent would hide the child's growth)
with open("/proc/self/status") as fh:
    peak = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
print(json.dumps({{"baseline_mb": base / 1024, "peak_mb": peak / 1024, "growth_mb": (peak - base) / 1024,
                  "seconds": seconds}}))
"""


def memory_runs(workdir: Path, factors: tuple[int, ...] = MEMORY_FACTORS) -> list[dict]:
    rows = []
    for k in factors:
        shape = (MEMORY_BASE_Z * k, SHAPE[1], SHAPE[2])
        src = workdir / f"mem-{k}.zarr"
        write_zarr(src, shape, seed=k)
        code = CHILD.format(
            threads=THREADS,
            bench=str(Path(__file__).parent),
            src=str(src),
            out=str(workdir / f"mem-{k}-out.zarr"),
            roi=ROI,
            overlap=OVERLAP,
            batch=BATCH,
            chunks=CHUNKS,
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"memory run k={k} failed:\n{proc.stderr[-2000:]}")
        row = {"factor": k, "shape": list(shape), "input_mb": float(np.prod(shape)) * 4 / 2**20}
        row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        rows.append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(src)
    return rows


def markdown(result: dict) -> str:
    lines = [
        "# Inference benchmark",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}, torch threads {THREADS}; volume {SHAPE}, window {ROI}, overlap {OVERLAP}, "
        f"batch {BATCH}, store chunks {CHUNKS}; best of {result['repeats']} interleaved runs per method "
        "(in brackets: the median over repeats of the ratio within each repeat).",
        "",
        "float32 logits (activation None). In-memory SWI: the network work alone (input already a tensor, output "
        "left in memory). In-memory job: the same job from and to zarr (read all, SWI, write all).",
        "",
        "| model | in-memory SWI (s) | in-memory job (s) | mtbio zarr->zarr (s) | no carry (s) | "
        "PatchInferer+ZarrAvgMerger (s) | mtbio vs in-memory SWI | mtbio vs in-memory job | mtbio vs ZarrAvgMerger | "
        "max abs diff vs SWI |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["throughput"]:
        no_carry = f"{r['mtbio_no_carry_s']:.2f}" if "mtbio_no_carry_s" in r else "-"
        lines.append(
            f"| {r['model']} | {r['in_memory_s']:.2f} | {r['in_memory_job_s']:.2f} | {r['mtbio_s']:.2f} | {no_carry} | "
            f"{r['patchinferer_zarravgmerger_s']:.2f} | {r['mtbio_vs_in_memory']:.2f}x "
            f"({r['median_paired_mtbio_vs_in_memory']:.2f}x) | {r['mtbio_vs_in_memory_job']:.2f}x "
            f"({r['median_paired_mtbio_vs_in_memory_job']:.2f}x) | "
            f"{r['mtbio_vs_zarravgmerger']:.2f}x | {r['max_abs_diff_vs_monai']:.1e} |"
        )
    lines += [
        "",
        "CPU time (user + system seconds of the process, all threads; the load-robust comparison on a shared "
        "machine), best of the same runs:",
        "",
        "| model | in-memory SWI (CPU s) | mtbio (CPU s) | PatchInferer+ZarrAvgMerger (CPU s) | mtbio vs in-memory | "
        "mtbio vs ZarrAvgMerger |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["throughput"]:
        lines.append(
            f"| {r['model']} | {r['in_memory_cpu_s']:.2f} | {r['mtbio_cpu_s']:.2f} | "
            f"{r['patchinferer_zarravgmerger_cpu_s']:.2f} | {r['cpu_mtbio_vs_in_memory']:.2f}x | "
            f"{r['cpu_mtbio_vs_zarravgmerger']:.2f}x |"
        )
    lines += [
        "",
        "The product's default output (softmax, probabilities stored as uint8 = round(p * 255)) against the same "
        "post-processing of the in-memory result:",
        "",
        "| model | in-memory SWI + softmax + uint8 (s) | in-memory job, uint8 (s) | mtbio zarr->zarr uint8 (s) | "
        "mtbio vs in-memory SWI | mtbio vs in-memory job | CPU-time ratio vs SWI | max diff (uint8 levels) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["throughput"]:
        lines.append(
            f"| {r['model']} | {r['in_memory_uint8_s']:.2f} | {r['in_memory_job_uint8_s']:.2f} | "
            f"{r['mtbio_uint8_s']:.2f} | {r['mtbio_uint8_vs_in_memory']:.2f}x "
            f"({r['median_paired_mtbio_uint8_vs_in_memory']:.2f}x) | {r['mtbio_uint8_vs_in_memory_job']:.2f}x "
            f"({r['median_paired_mtbio_uint8_vs_in_memory_job']:.2f}x) | {r['cpu_mtbio_uint8_vs_in_memory']:.2f}x | "
            f"{r['max_uint8_levels_diff_vs_monai']} |"
        )
    lines += ["", f"Memory: tiny model, chunks {MEMORY_CHUNKS}, each volume in a fresh subprocess.", ""]
    lines += ["| volume (z, y, x) | input (MB) | RSS growth above baseline (MB) | seconds |", "|---|---|---|---|"]
    for r in result["memory"]:
        lines.append(f"| {tuple(r['shape'])} | {r['input_mb']:.0f} | {r['growth_mb']:.0f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="a (Z, Y, X) stack to crop the benchmark volume from (default: noise)")
    parser.add_argument("--key", help="dataset inside --data (h5 / zarr)")
    parser.add_argument("--out", type=Path, help="folder for inference.json and inference.md")
    parser.add_argument("--skip-memory", action="store_true", help="only the throughput comparison")
    parser.add_argument("--skip-throughput", action="store_true", help="only the memory runs")
    parser.add_argument(
        "--memory-factors",
        type=int,
        nargs="+",
        default=list(MEMORY_FACTORS),
        help=f"memory runs on volumes of k x {MEMORY_BASE_Z} sections (default {' '.join(map(str, MEMORY_FACTORS))})",
    )
    parser.add_argument("--repeats", type=int, default=REPEATS, help="interleaved runs per method (best is kept)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(THREADS)
    vol = make_volume(args.data, args.key)
    with tempfile.TemporaryDirectory(prefix="mtbio-bench-") as tmp:
        throughput = [] if args.skip_throughput else time_models(vol, Path(tmp), args.repeats)
        memory = [] if args.skip_memory else memory_runs(Path(tmp), tuple(args.memory_factors))
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "settings": {"shape": SHAPE, "roi": ROI, "overlap": OVERLAP, "batch": BATCH, "chunks": CHUNKS},
        "repeats": args.repeats,
        "throughput": throughput,
        "memory": memory,
        "parent_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    write_report(args.out, "inference", result, markdown(result))
    return 0


def write_report(out: Path | None, stem: str, result: dict, text: str) -> None:
    """Print the markdown report and, with ``out``, write ``<stem>.json`` and ``<stem>.md`` there."""
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
        (out / f"{stem}.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
