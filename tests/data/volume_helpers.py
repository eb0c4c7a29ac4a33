"""Writers for small on-disk volumes in the layouts mtbio reads (used by the volume, label and source tests)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def ramp_volume(shape: Sequence[int], dtype: str | np.dtype = "uint8", *, seed: int = 0) -> np.ndarray:
    """Random data whose section ``z`` is recognisable (every value differs between sections)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    high = 250 if dt == np.uint8 else 60000
    data = rng.integers(0, high, size=tuple(shape)).astype(dt)
    return data


def write_png_sections(folder: Path, data: np.ndarray, names: Sequence[str] | None = None) -> list[Path]:
    """One PNG per section of ``data`` ``(Z, Y, X)``; ``names`` default to ``0.png, 1.png, ...``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"{i}.png" for i in range(len(data))]
    paths = []
    for name, section in zip(names, data):
        path = folder / name
        Image.fromarray(section).save(path)
        paths.append(path)
    return paths


def labelled_section(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A bool ``(Y, X)`` mask with a few filled discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, bool)
    for _ in range(3):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= (min(shape) // 5) ** 2
    return mask


def save_label_png(path: Path, mask: np.ndarray, mode: str) -> None:
    """Save a bool mask as a PNG in PIL ``mode`` "1", "L" (0/255 with anti-aliased edges) or "RGBA" (alpha 255)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "1":
        Image.fromarray(mask).convert("1").save(path)
    elif mode == "L":
        grey = np.where(mask, 255, 0).astype(np.uint8)
        edge = mask & ~np.roll(mask, 1, axis=1)  # left edge pixels: anti-aliased, still foreground
        grey[edge] = 200
        outside = ~mask & np.roll(mask, -1, axis=1)  # pixels just left of the edge: faint, background
        grey[outside] = 40
        Image.fromarray(grey, mode="L").save(path)
    elif mode == "RGBA":
        grey = np.where(mask, 255, 0).astype(np.uint8)
        rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)
        Image.fromarray(rgba, mode="RGBA").save(path)
    else:
        raise ValueError(mode)
