"""GPU checks in one run: streaming inference against the network's raw forward pass (float32 and AMP), AMP's
effect on the stored probabilities, and the time of a UDA training step.

Usage::

    python benchmarks/gpu_check.py --out gpu-out                        # a CUDA machine (the default device)
    python benchmarks/gpu_check.py --device cpu --quick --out gpu-out   # the same checks, tiny, on a CPU (smoke run)

What it measures (settings pinned below, each overridable by a flag):

* **Raw forward throughput**: windows per second of ``network(x)`` on a ``(batch, 1, *roi)`` batch already on the
  device, float32 and under float16 autocast (AMP), after warm-up, synchronised.
* **Streaming throughput**: :func:`mtbio.inference.predict_volume` zarr -> zarr on a ``--shape`` uint8 volume
  (chunks ``(32, 256, 256)``, ``normalize=(128, 64)``, softmax, uint8 store, the same window and batch), float32 and
  AMP: windows run (counted) per wall-clock second, and that as a **fraction of the raw forward throughput** (the
  issue's target: at least 0.8). One warm-up run, then the best of ``--repeats``. Peak device memory of each run.
* **AMP vs float32 output**: largest difference in uint8 levels, and the fraction of voxels whose foreground
  decision (``p >= 0.5``) differs.
* **Training step**: seconds per iteration of MaskTwins and source-only through :func:`mtbio.uda.run.run_training`
  (2D ``unet``, crop 192, batch 4, on the built-in synthetic source / target; no label-free scoring), the mean over
  the iterations after warm-up (a first call trains the warm-up and stops, a second resumes and is timed).

Models: the tiny anchor (MONAI UNet 3D, channels (8, 16, 32), strides (2, 2), 1 residual unit) and mtbio's
``small_unet`` 3D, seeded, eval mode. Writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import mtbio_network, tiny_anchor, write_report  # noqa: E402  (the benchmark's pinned models)

FULL = {
    "shape": (192, 1024, 1024),
    "roi": (32, 96, 96),
    "batch": 8,
    "chunks": (32, 256, 256),
    "crop": 192,
    "block": 32,
    "train_iters": 30,
    "train_warmup": 5,
    "forward_passes": 50,
}
QUICK = {
    "shape": (24, 80, 80),
    "roi": (16, 48, 48),
    "batch": 2,
    "chunks": (16, 64, 64),
    "crop": 64,
    "block": 16,
    "train_iters": 4,
    "train_warmup": 1,
    "forward_passes": 3,
}


class CountingNetwork(torch.nn.Module):
    """Runs ``network`` and counts the windows it was given."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.net = network
        self.windows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows += int(x.shape[0])
        return self.net(x)


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_forward(network, device, roi, batch: int, passes: int, amp: bool) -> float:
    """Windows per second of the bare forward pass on a batch already on the device."""
    x = torch.randn((batch, 1, *roi), device=device)
    use_amp = amp and device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        for _ in range(3):
            network(x)
        synchronize(device)
        t = time.perf_counter()
        for _ in range(passes):
            network(x)
        synchronize(device)
    return batch * passes / (time.perf_counter() - t)


def streaming(counting: CountingNetwork, source, out: Path, device, roi, batch: int, chunks, amp: bool) -> dict:
    """One ``predict_volume`` run: windows per second, peak device memory, the stored array."""
    from mtbio.inference.predict import predict_volume

    counting.windows = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    arr = predict_volume(
        counting,
        source,
        out,
        roi_size=roi,
        overlap=0.25,
        batch_size=batch,
        device=device,
        activation="softmax",
        dtype="uint8",
        chunks=chunks,
        normalize=(128.0, 64.0),
        amp=amp,
    )
    synchronize(device)
    seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {
        "seconds": seconds,
        "windows": counting.windows,
        "windows_per_s": counting.windows / seconds,
        "peak_device_mb": peak,
        "array": arr,
    }


def inference_checks(args, device, workdir: Path) -> list[dict]:
    import zarr

    rng = np.random.default_rng(0)
    src_path = workdir / "input.zarr"
    src = zarr.create_array(str(src_path), shape=args.shape, chunks=args.chunks, dtype="uint8")
    for z in range(0, args.shape[0], args.chunks[0]):
        src[z : z + args.chunks[0]] = rng.integers(
            0, 256, (min(args.chunks[0], args.shape[0] - z), *args.shape[1:]), dtype=np.uint8
        )
    source = zarr.open_array(str(src_path), mode="r")
    rows = []
    for name, build in (("tiny anchor UNet (8,16,32)", tiny_anchor), ("mtbio small_unet 3D", mtbio_network)):
        net = build().to(device)
        row: dict = {"model": name}
        for amp in (False, True):
            tag = "amp" if amp else "fp32"
            if amp and device.type != "cuda":
                row[f"{tag}_note"] = "AMP autocasts on CUDA only; not measured on this device"
                continue
            row[f"raw_{tag}_windows_per_s"] = raw_forward(net, device, args.roi, args.batch, args.forward_passes, amp)
            counting = CountingNetwork(net)  # one per setting: predict_volume's shape probe runs in the warm-up
            streaming(
                counting,
                source,
                workdir / f"{len(rows)}-{tag}-warmup.zarr",
                device,
                args.roi,
                args.batch,
                args.chunks,
                amp,
            )
            runs = [
                streaming(
                    counting,
                    source,
                    workdir / f"{len(rows)}-{tag}-{k}.zarr",
                    device,
                    args.roi,
                    args.batch,
                    args.chunks,
                    amp,
                )
                for k in range(args.repeats)
            ]
            best = max(runs, key=lambda r: r["windows_per_s"])
            row[f"stream_{tag}_windows_per_s"] = best["windows_per_s"]
            row[f"stream_{tag}_seconds"] = best["seconds"]
            row[f"stream_{tag}_windows"] = best["windows"]
            row[f"stream_{tag}_peak_device_mb"] = best["peak_device_mb"]
            row[f"fraction_{tag}"] = best["windows_per_s"] / row[f"raw_{tag}_windows_per_s"]
            row[f"_{tag}_array"] = runs[0]["array"]
        if "_amp_array" in row:
            a = np.asarray(row["_fp32_array"][1]).astype(np.int16)
            b = np.asarray(row["_amp_array"][1]).astype(np.int16)
            row["amp_vs_fp32_max_uint8_levels"] = int(np.abs(a - b).max())
            row["amp_vs_fp32_decision_flips"] = float(np.mean((a >= 128) != (b >= 128)))
        for key in [k for k in row if k.startswith("_")]:
            del row[key]
        rows.append(row)
        print(json.dumps(row), flush=True)
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def training_checks(args, device, workdir: Path) -> list[dict]:
    """Seconds per training iteration through :func:`mtbio.uda.run.run_training` (the one path of every training):
    a first call trains the warm-up iterations and stops (``RunSpec.stop_after``), a second call resumes and times
    the rest, so warm-up (cuDNN autotuning, allocator growth) stays out of the figure."""
    from mtbio.data.labels import open_label_volume
    from mtbio.data.synthetic import generate_synthetic
    from mtbio.data.volumes import open_volume
    from mtbio.uda.config import UDAConfig
    from mtbio.uda.recipe import Recipe
    from mtbio.uda.run import RunSpec, run_training

    shape = (8, 2 * args.crop, 2 * args.crop)
    paths = generate_synthetic(workdir / "synth", seed=0, shape=shape, progress=False)
    src = np.asarray(open_volume(paths["source"], "raw")[:])
    src_lab = np.asarray(open_label_volume(paths["source"], "label")[:])
    tgt = np.asarray(open_volume(paths["target"], "raw")[:])
    recipe = Recipe(
        network="unet",
        iterations=args.train_iters,
        pretrain_iterations=0,
        crop_size=args.crop,
        batch_size=4,
        seed=0,
        checkpoint_interval=args.train_iters,
        score_crops=0,
    )
    rows = []
    for strategy in ("source_only", "masktwins"):
        spec = RunSpec(
            out=workdir / f"train_{strategy}",
            config=UDAConfig(strategy=strategy, block_size=args.block),
            recipe=recipe,
            source_image=src,
            source_label=src_lab,
            target_image=None if strategy == "source_only" else tgt,
            resample=False,
            device=str(device),
            in_memory=True,
            logger="mtbio.gpu_check",
            progress=False,
        )
        run_training(replace(spec, stop_after=args.train_warmup))  # warm-up, then a checkpoint
        synchronize(device)
        result = run_training(spec)  # resumes: the timed iterations
        timed = args.train_iters - args.train_warmup
        row = {"strategy": strategy, "sec_per_iter": float(result.sec_per_iter), "iterations": timed}
        rows.append(row)
        print(json.dumps(row), flush=True)
    by = {r["strategy"]: r["sec_per_iter"] for r in rows}
    rows.append({"strategy": "masktwins / source_only", "ratio": by["masktwins"] / by["source_only"]})
    return rows


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# GPU checks",
        "",
        f"Command: `{result['command']}`  ",
        f"Device: {result['device_name']}; torch {result['torch']}; volume {tuple(s['shape'])} uint8, window "
        f"{tuple(s['roi'])}, batch {s['batch']}, chunks {tuple(s['chunks'])}; best of {s['repeats']} streaming runs.",
        "",
        "| model | raw forward fp32 (win/s) | streaming fp32 (win/s) | fraction fp32 | raw forward AMP (win/s) | "
        "streaming AMP (win/s) | fraction AMP | AMP vs fp32 (max uint8 levels / decision flips) | peak device MB "
        "fp32 / AMP |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def f(r, k, fmt="{:.0f}"):
        return fmt.format(r[k]) if r.get(k) is not None else "-"

    for r in result["inference"]:
        flips = (
            f"{r['amp_vs_fp32_max_uint8_levels']} / {r['amp_vs_fp32_decision_flips']:.1e}"
            if "amp_vs_fp32_max_uint8_levels" in r
            else "-"
        )
        lines.append(
            f"| {r['model']} | {f(r, 'raw_fp32_windows_per_s')} | {f(r, 'stream_fp32_windows_per_s')} | "
            f"{f(r, 'fraction_fp32', '{:.2f}')} | {f(r, 'raw_amp_windows_per_s')} | {f(r, 'stream_amp_windows_per_s')} "
            f"| {f(r, 'fraction_amp', '{:.2f}')} | {flips} | {f(r, 'stream_fp32_peak_device_mb')} / "
            f"{f(r, 'stream_amp_peak_device_mb')} |"
        )
    lines += ["", f"Training step (2D unet, crop {s['crop']}, batch 4), mean s/iteration after warm-up:", ""]
    lines += ["| strategy | s / iteration |", "|---|---|"]
    for r in result["training"]:
        value = f"{r['sec_per_iter']:.4f}" if "sec_per_iter" in r else f"{r['ratio']:.2f}x"
        lines.append(f"| {r['strategy']} | {value} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every check (CPU tests)")
    parser.add_argument("--shape", type=int, nargs=3, help="volume (Z, Y, X)")
    parser.add_argument("--roi", type=int, nargs=3, help="window (z, y, x)")
    parser.add_argument("--batch", type=int, help="windows per forward pass")
    parser.add_argument("--repeats", type=int, default=3, help="streaming runs per setting (best kept)")
    parser.add_argument("--skip-training", action="store_true", help="only the inference checks")
    parser.add_argument("--out", type=Path, help="folder for gpu_check.json and gpu_check.md")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.shape, args.roi, args.chunks = tuple(args.shape), tuple(args.roi), tuple(args.chunks)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu --quick for a smoke run)")
    if device.type == "cpu":
        torch.set_num_threads(2)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    with tempfile.TemporaryDirectory(prefix="mtbio-gpu-") as tmp:
        inference = inference_checks(args, device, Path(tmp))
        training = [] if args.skip_training else training_checks(args, device, Path(tmp))
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else "gpu_check " + " ".join(argv),
        "device_name": name,
        "torch": torch.__version__,
        "settings": {k: getattr(args, k) for k in ("shape", "roi", "batch", "chunks", "repeats", "crop")},
        "inference": inference,
        "training": training,
    }
    write_report(args.out, "gpu_check", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
