"""How large is the synthetic domain shift? Train a small 2D U-Net on the source and on the target labels.

Both models are evaluated on the held-out ``target_test`` volume with the per-section protocol: for each z
section, the foreground IoU of ``p >= 0.5`` (a section where prediction and label are both empty counts as
1), then the mean over sections. The gap "target-trained minus source-trained" is the shift that UDA
should close. Also reports each model on its own domain (source model on a held-out source volume) so an
unlearnable source would show.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/synth_shift.py --data /tmp/synth --iters 350
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _zscore(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float32)
    return (img - img.mean()) / max(float(img.std()), 1e-6)


def _batches(raw: np.ndarray, label: np.ndarray, crop: int, batch: int, rng: np.random.Generator):
    z, y, x = raw.shape
    while True:
        xs, ys = [], []
        for _ in range(batch):
            k, i, j = rng.integers(0, z), rng.integers(0, y - crop + 1), rng.integers(0, x - crop + 1)
            img, lab = raw[k, i : i + crop, j : j + crop], label[k, i : i + crop, j : j + crop] > 127
            rot = int(rng.integers(0, 4))
            img, lab = np.rot90(img, rot), np.rot90(lab, rot)
            if rng.random() < 0.5:
                img, lab = img[:, ::-1], lab[:, ::-1]
            xs.append(_zscore(img))
            ys.append(lab.astype(np.float32))
        yield np.stack(xs)[:, None], np.stack(ys)[:, None]


def train(raw: np.ndarray, label: np.ndarray, iters: int, crop: int, batch: int, seed: int):
    import torch
    from monai.networks.nets import BasicUNet

    torch.manual_seed(seed)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(8, 16, 32, 64, 128, 16))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    gen = _batches(raw, label, crop, batch, np.random.default_rng(seed))
    net.train()
    for _ in range(iters):
        x, y = next(gen)
        opt.zero_grad()
        loss = loss_fn(net(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
    return net


def per_section_iou(net, raw: np.ndarray, label: np.ndarray) -> float:
    import torch

    net.eval()
    ious = []
    with torch.no_grad():
        for k in range(raw.shape[0]):
            x = torch.from_numpy(_zscore(raw[k])[None, None])
            pred = torch.sigmoid(net(x))[0, 0].numpy() >= 0.5
            gt = label[k] > 127
            union = np.logical_or(pred, gt).sum()
            ious.append(1.0 if union == 0 else np.logical_and(pred, gt).sum() / union)
    return float(np.mean(ious))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="synthetic folder (generated when absent)")
    parser.add_argument("--seed", type=int, default=0, help="data seed when generating")
    parser.add_argument("--iters", type=int, default=350)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--train-seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    import zarr

    from mtbio.data.synthetic import SOURCE, generate_synthetic, synthesize

    torch.set_num_threads(2)
    generate_synthetic(args.data, seed=args.seed, progress=False)
    src = zarr.open_group(str(args.data / "source.zarr"), mode="r")
    s_raw, s_lab = src["raw"][...], src["label"][...]
    t_raw = zarr.open_group(str(args.data / "target.zarr"), mode="r")["raw"][...]
    t_lab = zarr.open_group(str(args.data / "target_labels.zarr"), mode="r")["label"][...]
    tt_raw = zarr.open_group(str(args.data / "target_test.zarr"), mode="r")["raw"][...]
    tt_lab = zarr.open_group(str(args.data / "target_test_labels.zarr"), mode="r")["label"][...]
    st_raw, st_lab = synthesize(SOURCE, s_raw.shape, args.seed + 7)  # a held-out source volume

    rows = {}
    for name, (raw, lab) in {"source-only": (s_raw, s_lab), "target-oracle": (t_raw, t_lab)}.items():
        t0 = time.perf_counter()
        net = train(raw, lab, args.iters, args.crop, args.batch, args.train_seed)
        rows[name] = (
            per_section_iou(net, tt_raw, tt_lab),
            per_section_iou(net, st_raw, st_lab),
            time.perf_counter() - t0,
        )
    print(f"{'model':15s} {'IoU target_test':>16s} {'IoU source_test':>16s} {'time s':>8s}")
    for name, (t_iou, s_iou, dt) in rows.items():
        print(f"{name:15s} {t_iou:16.3f} {s_iou:16.3f} {dt:8.1f}")
    print(f"gap (target-oracle - source-only) on target_test: {rows['target-oracle'][0] - rows['source-only'][0]:.3f}")


if __name__ == "__main__":
    main()
