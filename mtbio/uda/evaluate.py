"""Whole-volume prediction and target validation (literature metrics via :func:`mtbio.metrics.em_metrics`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from mtbio.data.context import context_indices
from mtbio.data.normalize import image_stats, zscore
from mtbio.inference.planes import OrthoPlanes, check_planes_tta, plane_window, resolve_planes
from mtbio.inference.settings import TTA, InferenceSettings, Planes, as_tta, check_tta_window
from mtbio.inference.tta import with_tta
from mtbio.networks.context import context_of

#: the window options' defaults are the inference settings' (one place)
_DEFAULTS = InferenceSettings()

__all__ = ["TargetValidation", "evaluate_network", "predict_in_memory"]


@torch.no_grad()
def predict_in_memory(
    net: nn.Module,
    volume: Any,
    *,
    roi_size: Sequence[int],
    batch_size: int = _DEFAULTS.batch_size,
    overlap: float = _DEFAULTS.overlap,
    device: torch.device | str = "cpu",
    amp: bool = False,
    sections_per_batch: int = 4,
    tta: TTA | str = _DEFAULTS.tta,
    planes: Planes | str = _DEFAULTS.planes,
    voxel_size: Sequence[float] | None = None,
) -> np.ndarray:
    """Foreground probability of a (Z, Y, X) volume by in-memory sliding-window inference (MONAI), for validation
    during training and benchmarks. Volumes larger than memory go through :func:`mtbio.inference.predict_volume`.

    The network runs in eval mode (restored afterwards). Intensities are z-scored by mtbio's rule
    (:func:`mtbio.data.normalize.default_normalization`: per section for a 2D ``roi_size`` (H, W), per volume for a
    3D one (D, H, W)) with training's statistics (:func:`~mtbio.data.normalize.image_stats`), as
    :class:`~mtbio.data.sampling.CropSampler` does.

    A 2D network marked with ``k`` context sections (:func:`mtbio.networks.context.context_of`, from its weights
    record) sees each section with its ``k`` neighbours on each side as channels, replicated at the volume's ends and
    each z-scored with its own section's statistics (:mod:`mtbio.data.context`).

    Args:
        net: (B, 1 + 2k, *spatial) -> (B, 2, *spatial) logits (``k = 0``: one channel).
        volume: array-like (Z, Y, X) (numpy array or lazy ``Volume``).
        roi_size: sliding-window size, 2D or 3D.
        batch_size: windows per forward pass.
        overlap: window overlap fraction (Gaussian blending).
        device: inference device.
        amp: autocast to float16 on CUDA.
        sections_per_batch: 2D only: sections passed to one sliding-window call.
        tta: test-time augmentation (``"none"``, ``"flips"``, ``"flips_rot90"``): each window is predicted through
            :class:`mtbio.inference.tta.TTAWrapper` (views' softmax probabilities averaged, 4x / 8x forward passes),
            as :func:`mtbio.inference.predict_volume` does with the same setting.
        planes: ``"xy"`` (section by section), ``"xyz"`` (ortho-plane consensus of a 2D network:
            :class:`mtbio.inference.planes.OrthoPlanes` on 3D windows of :func:`~mtbio.inference.planes.plane_window`,
            the whole volume in one sliding-window call, z-scored per xy section as ``predict_volume`` does) or
            ``"auto"`` (:func:`~mtbio.inference.planes.resolve_planes` with ``voxel_size``).
        voxel_size: nm per (z, y, x) for ``planes="auto"`` (``None``: the volume's ``voxel_size`` attribute, if any).

    Returns:
        float32 (Z, Y, X) probability of channel 1 (mitochondrion), in [0, 1].

    Raises:
        ValueError: a ``roi_size`` that is not 2D / 3D, a volume that is not 3D, an unknown ``tta`` or
            ``flips_rot90`` with a window that is not square in-plane.
    """
    from monai.inferers import sliding_window_inference

    roi = tuple(int(r) for r in roi_size)
    if len(roi) not in (2, 3):
        raise ValueError(f"roi_size must be 2D or 3D, got {roi_size}")
    if len(volume.shape) != 3:
        raise ValueError(f"volume must be (Z, Y, X), got shape {tuple(volume.shape)}")
    mode = as_tta(tta)
    check_tta_window(mode, roi)
    run_net = with_tta(net, mode, "softmax")
    dims = len(roi)
    k = context_of(net)
    if k and dims != 2:
        raise ValueError(f"the network takes {k} context sections on each side (a 2D network); roi_size {roi} is 3D")
    vs = getattr(volume, "voxel_size", None) if voxel_size is None else voxel_size
    resolved = resolve_planes(planes, shape=volume.shape, roi_dims=dims, voxel_size=vs, where="volume")
    check_planes_tta(resolved, mode, "volume")
    ortho = resolved is Planes.XYZ
    if ortho and k:
        raise ValueError(f"planes 'xyz' takes a network without context sections; this one takes {k} on each side")
    mean, std = image_stats(volume, dims)
    device = torch.device(device)
    was_training = net.training
    net.eval()
    use_amp = amp and device.type == "cuda"
    out = np.zeros(tuple(volume.shape), dtype=np.float32)
    try:
        if ortho:
            arr = np.asarray(volume[:], dtype=np.float32)
            x = torch.from_numpy(zscore(arr, mean[:, None, None], std[:, None, None]))[None, None]
            window = plane_window(roi, volume.shape[0])
            ortho_net = OrthoPlanes(run_net, "softmax", image_batch=batch_size)
            with torch.autocast(device_type=device.type, enabled=use_amp):
                logits = sliding_window_inference(x.to(device), window, 1, ortho_net, overlap=overlap, mode="gaussian")
            out[:] = torch.softmax(logits.float(), dim=1)[0, 1].cpu().numpy()
            return out
        chunks = (
            [(z, min(z + sections_per_batch, volume.shape[0])) for z in range(0, volume.shape[0], sections_per_batch)]
            if dims == 2
            else [(0, volume.shape[0])]
        )
        for z0, z1 in chunks:
            if dims == 2 and k:
                x = torch.from_numpy(_context_sections(volume, z0, z1, k, mean, std))
            elif dims == 2:
                arr = np.asarray(volume[z0:z1], dtype=np.float32)
                x = torch.from_numpy(zscore(arr, mean[z0:z1, None, None], std[z0:z1, None, None]))[:, None]
            else:
                arr = np.asarray(volume[z0:z1], dtype=np.float32)
                x = torch.from_numpy(zscore(arr, mean[0], std[0]))[None, None]
            with torch.autocast(device_type=device.type, enabled=use_amp):
                logits = sliding_window_inference(
                    x.to(device), roi, batch_size, run_net, overlap=overlap, mode="gaussian"
                )
            prob = torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy()
            out[z0:z1] = prob if dims == 2 else prob[0]
    finally:
        net.train(was_training)
    return out


def _context_sections(volume: Any, z0: int, z1: int, k: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Sections ``z0 .. z1 - 1`` with ``k`` neighbours on each side as channels, z-scored per section:
    ``(S, 1 + 2k, Y, X)``."""
    idx = context_indices(np.arange(z0, z1), k, int(volume.shape[0]))
    lo, hi = int(idx.min()), int(idx.max()) + 1
    arr = np.asarray(volume[lo:hi], dtype=np.float32)
    arr = zscore(arr, mean[lo:hi, None, None], std[lo:hi, None, None])
    return np.ascontiguousarray(arr[idx - lo])


def evaluate_network(net: nn.Module, image: Any, label: Any, *, roi_size: Sequence[int], **kwargs: Any) -> dict:
    """``em_metrics`` (per-section mAP, F1, MCC, IoU) of a network's prediction on a labelled (Z, Y, X) volume.

    Args:
        net: the network (e.g. ``teacher.module``).
        image: (Z, Y, X) image volume.
        label: (Z, Y, X) binary label volume (bool or 0 / non-zero).
        roi_size: sliding-window size; see :func:`predict_in_memory` (also ``**kwargs``: ``batch_size``,
            ``overlap``, ``device``, ``amp``, ``sections_per_batch``, ``tta``).

    Returns:
        ``{"mAP", "F1", "MCC", "IoU", "foreground", "foreground_label"}`` as floats: the protocol's metrics and the
        fractions of voxels predicted (``p >= 0.5``) and labelled foreground
        (:meth:`mtbio.metrics.Evaluation.foreground`).
    """
    from mtbio.metrics import evaluate

    if tuple(image.shape) != tuple(label.shape):
        raise ValueError(f"image shape {tuple(image.shape)} != label shape {tuple(label.shape)}")
    prob = predict_in_memory(net, image, roi_size=roi_size, **kwargs)
    scored = evaluate(prob, np.asarray(label[:]) > 0)
    return {k: float(v) for k, v in {**scored.mean(), **scored.foreground()}.items()}


class TargetValidation:
    """An ignite handler that evaluates the teacher on a labelled target split every ``interval`` iterations
    and at the end of training.

    Results (:func:`evaluate_network`'s keys) go to ``engine.state.metrics`` as ``target_mAP``, ``target_F1``,
    ``target_MCC``, ``target_IoU``, ``target_foreground``, ``target_foreground_label`` and are appended to
    :attr:`history` (``{"iteration", "mAP", ...}``). Nothing selects a checkpoint on them.

    Args:
        image: (Z, Y, X) target image volume.
        label: (Z, Y, X) binary target labels.
        roi_size: sliding-window size (2D or 3D).
        interval: evaluate every ``interval`` iterations (0 = only at the end).
        use_teacher: evaluate the EMA teacher (default) or the student.
        **predict_kwargs: passed to :func:`predict_in_memory`.
    """

    def __init__(
        self,
        image: Any,
        label: Any,
        *,
        roi_size: Sequence[int],
        interval: int = 0,
        use_teacher: bool = True,
        **predict_kwargs: Any,
    ) -> None:
        if interval < 0:
            raise ValueError(f"interval must be >= 0, got {interval}")
        if tuple(image.shape) != tuple(label.shape):
            raise ValueError(f"image shape {tuple(image.shape)} != label shape {tuple(label.shape)}")
        self.image = image
        self.label = np.asarray(label[:]) > 0
        self.roi_size = tuple(roi_size)
        self.interval = int(interval)
        self.use_teacher = bool(use_teacher)
        self.predict_kwargs = predict_kwargs
        self.history: list[dict[str, float]] = []
        self._last_iteration = -1

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        if self.interval:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        it = int(engine.state.iteration)
        if it == self._last_iteration:
            return
        self._last_iteration = it
        net = engine.teacher.module if self.use_teacher else engine.student
        kw = dict(device=engine.device, amp=engine.amp)
        kw.update(self.predict_kwargs)
        metrics = evaluate_network(net, self.image, self.label, roi_size=self.roi_size, **kw)
        engine.state.metrics.update({f"target_{k}": v for k, v in metrics.items()})
        self.history.append({"iteration": it, **metrics})
