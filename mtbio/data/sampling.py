"""Random crop samplers for training: 2D section crops and 3D patches from (Z, Y, X) volumes.

A sampler is a deterministic function of ``(seed, stream, iteration)``: ``sampler(i)`` always returns the same
batch for the same iteration ``i``, whatever was sampled before. That makes training resumable bit for bit
(the trainer asks for batch ``i`` after a restart) and keeps the *source* crop sequence identical across UDA
strategies for a seed (source and target samplers use different ``stream`` ids, so drawing target crops never
shifts the source stream).

Intensity normalisation is :func:`mtbio.data.normalize.zscore` with :func:`~mtbio.data.normalize.image_stats`, where the
"image" is one 2D section for 2D crops and the whole volume for 3D patches (mtbio's one rule,
:func:`~mtbio.data.normalize.default_normalization`); the statistics are computed once at construction, and
:func:`mtbio.uda.evaluate.predict_in_memory` and ``mtbio.inference.predict_volume(normalize="zscore_section")``
use the same rule at inference.

2.5D input (``context_sections = k > 0``, 2D crops only): each crop holds the drawn section and its ``k`` neighbours
on each side as channels (``(B, 1 + 2k, H, W)``, the same (Y, X) window, the drawn section in the middle channel),
replicated at the volume's ends and each z-scored with its own section's statistics (:mod:`mtbio.data.context`).
Flips and rot90 apply to every channel alike; the order of the channels is never reversed (no z-flip), so channel
``c`` always is section ``z - k + c``. The label is the drawn section's.

Crops along three planes (``planes="xyz"``, 2D crops only, for isotropic volumes): each crop is drawn, with equal
probability, from an xy section, an xz plane (Z x X at one y) or a yz plane (Z x Y at one x): the images
:class:`mtbio.inference.planes.OrthoPlanes` predicts at inference. Every row of an xz / yz crop is z-scored with the
statistics of its own xy section (the inference rule ``zscore_section``); a volume shallower than the crop's first
side is mirrored at its last section (``numpy.pad`` ``reflect``) up to the crop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from mtbio.data.context import check_context, context_indices
from mtbio.data.normalize import image_stats, zscore
from mtbio.data.resample import ResampledVolume

__all__ = ["SAMPLER_PLANES", "CropSampler", "MinForeground", "image_stats", "stream_rng"]

#: stream ids, so that source and target draws never share a random sequence
SOURCE_STREAM = 0
TARGET_STREAM = 1
#: ``planes`` of :class:`CropSampler`: xy sections only, or xy / xz / yz planes drawn with equal probability
SAMPLER_PLANES = ("xy", "xyz")


def stream_rng(seed: int, stream: int, iteration: int) -> np.random.Generator:
    """The numpy generator for one draw: a function of ``(seed, stream, iteration)`` only."""
    if seed < 0 or stream < 0 or iteration < 0:
        raise ValueError(f"seed, stream and iteration must be >= 0, got {seed}, {stream}, {iteration}")
    return np.random.default_rng([int(seed), int(stream), int(iteration)])


class MinForeground:
    """Acceptance rule for foreground-rejection sampling: a crop passes when its foreground fraction is at least
    ``fraction``. A plain callable ``(label_crop: bool ndarray) -> bool``."""

    def __init__(self, fraction: float = 0.01) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        self.fraction = float(fraction)

    def __call__(self, label_crop: np.ndarray) -> bool:
        return bool(label_crop.mean() >= self.fraction)


class CropSampler:
    """Batches of random crops from one or more (Z, Y, X) volumes, deterministic per ``(seed, stream, i)``.

    Args:
        images: one volume or a sequence of volumes, each (Z, Y, X), numpy arrays or lazy ``Volume`` objects.
        labels: matching binary label volumes (bool, or 0 / non-zero), or ``None`` for unlabelled data.
        crop_size: (H, W) for 2D section crops or (D, H, W) for 3D patches.
        batch_size: crops per batch.
        seed: experiment seed.
        stream: stream id (use different ids for source and target; see :data:`SOURCE_STREAM`).
        augment: random flips along every spatial axis and, for square in-plane crops, rot90 in the (Y, X) plane.
        accept: optional foreground-rejection rule ``(label_crop) -> bool`` (e.g. :class:`MinForeground`);
            needs labels.
        max_retries: draws per crop before the last candidate is kept even if ``accept`` rejects it.
        in_memory: read every volume into memory once (fast for small data); otherwise crops are sliced lazily.
        context_sections: 2D crops only: ``k`` adjacent sections on each side as further channels (module
            docstring); 0 = the section alone.
        zoom: scale augmentation, 2D crops only: each crop shows its section zoomed in-plane by a factor drawn
            log-uniformly from ``[1 / zoom, zoom]`` (a window of ``crop / factor`` px, clipped to the smallest
            section, resampled to the crop by :class:`~mtbio.data.resample.ResampledVolume`: linear after a
            Gaussian pre-filter when shrinking, the label thresholded at 0.5), so objects appear at sizes from
            ``1 / zoom`` to ``zoom`` times their own; 1 = off (no extra random draw: crop sequences are unchanged).
        planes: ``"xy"`` (crops of xy sections) or ``"xyz"`` (2D crops of xy, xz and yz planes alike, module
            docstring; for isotropic volumes, at least 2 sections deep); ``"xy"`` draws no extra random number, so
            its crop sequences are unchanged.

    Calling ``sampler(i)`` returns ``{"image": float32 (B, 1 + 2k, *crop_size), "label": int64 (B, 1, *crop_size)}``
    (``"label"`` only with labels), on the CPU.

    Raises:
        ValueError: bad arguments, volumes smaller than the crop, ``context_sections > 0`` with 3D crops, or
            ``planes="xyz"`` with 3D crops, adjacent sections or zoom.
    """

    def __init__(
        self,
        images: Any,
        labels: Any = None,
        *,
        crop_size: Sequence[int],
        batch_size: int,
        seed: int = 0,
        stream: int = SOURCE_STREAM,
        augment: bool = True,
        accept: Callable[[np.ndarray], bool] | None = None,
        max_retries: int = 10,
        in_memory: bool = False,
        context_sections: int = 0,
        zoom: float = 1.0,
        planes: str = "xy",
    ) -> None:
        imgs = [images] if hasattr(images, "shape") else list(images)
        if not imgs:
            raise ValueError("CropSampler needs at least one image volume")
        labs = None
        if labels is not None:
            labs = [labels] if hasattr(labels, "shape") else list(labels)
            if len(labs) != len(imgs):
                raise ValueError(f"got {len(imgs)} image volumes but {len(labs)} label volumes")
        self.crop_size = tuple(int(c) for c in crop_size)
        if len(self.crop_size) not in (2, 3) or any(c < 1 for c in self.crop_size):
            raise ValueError(f"crop_size must be (H, W) or (D, H, W) of positive ints, got {crop_size}")
        self.spatial_dims = len(self.crop_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_retries < 1:
            raise ValueError(f"max_retries must be >= 1, got {max_retries}")
        self.context = check_context(context_sections)
        if self.context and self.spatial_dims != 2:
            raise ValueError(
                f"context_sections {self.context} (adjacent sections as channels) needs 2D crops (H, W), got the 3D "
                f"crop {self.crop_size}"
            )
        self.zoom = float(zoom)
        if not (math.isfinite(self.zoom) and self.zoom >= 1.0):
            raise ValueError(f"zoom must be a finite number >= 1 (1 = no scale augmentation), got {zoom}")
        if self.zoom > 1.0 and self.spatial_dims != 2:
            raise ValueError(f"zoom (in-plane scale augmentation) needs 2D crops (H, W), got {self.crop_size}")
        if planes not in SAMPLER_PLANES:
            raise ValueError(f"planes must be one of {SAMPLER_PLANES}, got {planes!r}")
        self.planes = str(planes)
        if self.planes == "xyz" and (self.spatial_dims != 2 or self.context or self.zoom > 1.0):
            raise ValueError(
                "planes 'xyz' (crops of xy, xz and yz planes) needs plain 2D crops: no 3D crop, adjacent sections "
                f"or zoom (crop {self.crop_size}, context_sections {self.context}, zoom {self.zoom})"
            )
        if accept is not None and labs is None:
            raise ValueError("foreground rejection (accept=...) needs label volumes")
        for k, img in enumerate(imgs):
            if len(img.shape) != 3:
                raise ValueError(f"image volume {k} must be (Z, Y, X), got shape {tuple(img.shape)}")
            if labs is not None and tuple(labs[k].shape) != tuple(img.shape):
                raise ValueError(f"label volume {k} shape {tuple(labs[k].shape)} != image shape {tuple(img.shape)}")
            need = self.crop_size if self.spatial_dims == 3 else (1, *self.crop_size)
            if any(s < c for s, c in zip(img.shape, need)):
                raise ValueError(f"image volume {k} of shape {tuple(img.shape)} is smaller than the crop {need}")
            if self.planes == "xyz" and (img.shape[0] < 2 or min(img.shape[1:]) < self.crop_size[1]):
                raise ValueError(
                    f"image volume {k} of shape {tuple(img.shape)}: crops of xz / yz planes need at least 2 sections "
                    f"and sections at least {self.crop_size[1]} px on each side"
                )
        if in_memory:
            imgs = [np.asarray(v[:]) for v in imgs]
            labs = None if labs is None else [np.asarray(v[:]) for v in labs]
        self.images = imgs
        self.labels = labs
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.stream = int(stream)
        self.augment = bool(augment)
        self.accept = accept
        self.max_retries = int(max_retries)
        self.stats = [image_stats(v, self.spatial_dims) for v in imgs]
        self._plane = tuple(min(int(v.shape[axis]) for v in imgs) for axis in (1, 2))  # the smallest section
        # volumes drawn with probability proportional to their number of voxels
        sizes = np.array([float(np.prod(v.shape)) for v in imgs])
        self._volume_p = sizes / sizes.sum()

    def _window(self, rng: np.random.Generator) -> tuple[int, ...]:
        """The extent read for one crop: the crop itself, or ``crop / factor`` with scale augmentation."""
        if self.zoom == 1.0:
            return self.crop_size
        factor = math.exp(rng.uniform(-math.log(self.zoom), math.log(self.zoom)))
        return tuple(max(1, min(int(round(c / factor)), p)) for c, p in zip(self.crop_size, self._plane))

    def _draw(self, rng: np.random.Generator, window: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        v = int(rng.choice(len(self.images), p=self._volume_p))
        shape = self.images[v].shape
        if self.spatial_dims == 2:
            z = int(rng.integers(0, shape[0]))
            origin = (z, *(int(rng.integers(0, s - c + 1)) for s, c in zip(shape[1:], window)))
        else:
            origin = tuple(int(rng.integers(0, s - c + 1)) for s, c in zip(shape, window))
        return v, origin

    def _slices(self, origin: tuple[int, ...], window: tuple[int, ...]) -> tuple[Any, ...]:
        if self.spatial_dims == 2:
            z, y, x = origin
            return (z, slice(y, y + window[0]), slice(x, x + window[1]))
        return tuple(slice(o, o + c) for o, c in zip(origin, window))

    def _one(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        if self.planes == "xyz":
            axis = int(rng.integers(0, 3))  # the axis the crop's plane is normal to: 0 = xy, 1 = xz, 2 = yz
            if axis:
                image, label = self._plane_crop(rng, axis)
                return self._geometric(rng, image, label) if self.augment else (image, label)
        label = None
        window = self._window(rng)
        for _ in range(self.max_retries):
            v, origin = self._draw(rng, window)
            sl = self._slices(origin, window)
            if self.labels is not None:
                label = np.asarray(self.labels[v][sl]) > 0
                if self.accept is not None and not self.accept(label):
                    continue
            break
        mean, std = self.stats[v]
        k = origin[0] if self.spatial_dims == 2 else 0
        if self.context:
            volume, rest = self.images[v], sl[1:]
            sections = context_indices(origin[0], self.context, volume.shape[0])
            image = np.stack([zscore(volume[(int(z), *rest)], mean[z], std[z], precision=np.float64) for z in sections])
        else:
            image = zscore(self.images[v][sl], mean[k], std[k], precision=np.float64)
        if window != self.crop_size:
            image, label = _resize(image, label, self.crop_size)
        if self.augment:
            image, label = self._geometric(rng, image, label)
        return image, label

    def _plane_crop(self, rng: np.random.Generator, axis: int) -> tuple[np.ndarray, np.ndarray | None]:
        """One crop of an xz (``axis`` 1) or yz (``axis`` 2) plane: rows are sections, each z-scored with its own
        section's statistics; mirrored at the last section up to the crop's first side."""
        label = None
        for _ in range(self.max_retries):
            v = int(rng.choice(len(self.images), p=self._volume_p))
            shape = self.images[v].shape
            depth = min(self.crop_size[0], int(shape[0]))
            z = int(rng.integers(0, shape[0] - depth + 1))
            at = int(rng.integers(0, shape[axis]))
            along = 3 - axis  # the in-plane axis the crop spans besides z
            o = int(rng.integers(0, shape[along] - self.crop_size[1] + 1))
            sl: list[Any] = [slice(z, z + depth), None, None]
            sl[axis], sl[along] = at, slice(o, o + self.crop_size[1])
            if self.labels is not None:
                label = np.asarray(self.labels[v][tuple(sl)]) > 0
                if self.accept is not None and not self.accept(_mirror_rows(label, self.crop_size[0])):
                    continue
            break
        mean, std = self.stats[v]
        image = zscore(
            self.images[v][tuple(sl)], mean[z : z + depth, None], std[z : z + depth, None], precision=np.float64
        )
        label = None if label is None else _mirror_rows(label, self.crop_size[0])
        return _mirror_rows(image, self.crop_size[0]), label

    def _geometric(
        self, rng: np.random.Generator, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        dims = self.spatial_dims  # a context crop's leading channel axis is never flipped
        flips = rng.random(dims) < 0.5
        axes = tuple(int(a) - dims for a in np.nonzero(flips)[0])
        k = int(rng.integers(0, 4)) if image.shape[-1] == image.shape[-2] else 0
        if axes:
            image = np.flip(image, axis=axes)
            label = None if label is None else np.flip(label, axis=axes)
        if k:
            image = np.rot90(image, k, axes=(-2, -1))
            label = None if label is None else np.rot90(label, k, axes=(-2, -1))
        return image, label

    def __call__(self, iteration: int) -> dict[str, torch.Tensor]:
        rng = stream_rng(self.seed, self.stream, iteration)
        pairs = [self._one(rng) for _ in range(self.batch_size)]
        images = np.stack([p[0] for p in pairs])
        out = {"image": torch.from_numpy((images if self.context else images[:, None]).copy())}
        if self.labels is not None:
            out["label"] = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None].astype(np.int64))
        return out


def _mirror_rows(plane: np.ndarray, rows: int) -> np.ndarray:
    """``plane`` (r, w) mirrored at its last row (``numpy.pad`` ``reflect``) to ``rows`` rows (unchanged when r >=
    rows); a plane of one row is repeated."""
    missing = rows - plane.shape[0]
    if missing <= 0:
        return plane
    return np.pad(plane, ((0, missing), (0, 0)), mode="reflect" if plane.shape[0] > 1 else "edge")


def _resize(image: np.ndarray, label: np.ndarray | None, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` (..., h, w) and ``label`` (h, w) resampled in-plane to ``size`` (scale augmentation of
    :class:`CropSampler`) by :class:`mtbio.data.resample.ResampledVolume`: linear, Gaussian anti-aliasing on
    shrinking axes; the label interpolated the same way and thresholded at 0.5, as the training grid does."""
    factors = tuple(t / s for t, s in zip(size, image.shape[-2:]))
    out = ResampledVolume(image, factors, shape=size)[...]
    lab = None if label is None else ResampledVolume(label, factors, shape=size, label=True)[...]
    return out.astype(image.dtype, copy=False), lab
