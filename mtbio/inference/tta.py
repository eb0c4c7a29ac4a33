"""Test-time augmentation (TTA): a network that predicts each window from several in-plane views.

:class:`TTAWrapper` is a drop-in network (``(B, 1, *roi) -> (B, C, *roi)``, what MONAI's ``sliding_window_inference``
and :func:`mtbio.inference.predict_volume` call): for a batch of windows it runs the network on each transformed view,
transforms each output back, averages the views' **probabilities** and returns them as logits (``log`` of the mean
softmax probability), so that the softmax of its output is the mean probability and every later step (window
blending, the activation, the stored dtype) stays as it is. The mode is the ``tta`` field of
:class:`~mtbio.inference.settings.InferenceSettings`:

* ``none``: the network itself (:func:`with_tta` returns it unwrapped);
* ``flips``: 4 views: as it is, Y flipped, X flipped, both flipped;
* ``flips_rot90``: the 8 in-plane symmetries of a square (rotations by 0, 90, 180, 270 degrees, each also with X
  flipped); the window must be square in-plane (Y = X).

Only the in-plane axes (the last two: Y, X) are transformed, for 2D and 3D networks alike: the views and their cost
(4x / 8x forward passes) do not depend on the network, and EM volumes are mostly anisotropic (sections thicker than
the in-plane pixel), so z is not exchangeable with Y / X. Training flips z too for 3D networks
(:class:`mtbio.data.sampling.CropSampler`), so a z flip would be a valid further view; it is not offered.

Blending: the sliding-window blend averages the wrapper's outputs, i.e. the log of each window's mean probability,
with the importance map's weights, exactly as it averages the logits of a plain network; in both cases the blended
softmax is the weighted geometric mean of the windows' probabilities (renormalised). Views are averaged in
probability (the usual TTA ensemble), windows as without TTA. Blending probabilities instead would change what a
plain run computes (``mode none`` must stay the network's own output).

The views run one after the other with the run's batch of windows, so memory is that of a plain run and time grows
with the number of views. The rotations are written with ``transpose`` and ``flip`` (``torch.rot90`` has no ONNX
export), so a wrapped network exports to ONNX and TorchScript (``mtbio export --tta``).
"""

from __future__ import annotations

import torch

from mtbio.inference.settings import TTA, Activation, as_activation, as_tta

__all__ = ["TTAWrapper", "tta_views", "with_tta"]

#: one view: (quarter turns in the (Y, X) plane, axes flipped before turning)
View = tuple[int, tuple[int, ...]]

_VIEWS: dict[TTA, tuple[View, ...]] = {
    TTA.NONE: ((0, ()),),
    TTA.FLIPS: ((0, ()), (0, (-2,)), (0, (-1,)), (0, (-2, -1))),
    TTA.FLIPS_ROT90: tuple((k, f) for f in ((), (-1,)) for k in range(4)),
}


def tta_views(mode: TTA | str) -> tuple[View, ...]:
    """The views of ``mode``: ``(k, flip_axes)`` pairs; a view of ``x`` is ``rot90(flip(x, flip_axes), k)`` in the
    (Y, X) plane (the last two axes).

    Raises:
        ValueError: an unknown mode.
    """
    return _VIEWS[as_tta(mode)]


def _rot90(x: torch.Tensor, k: int) -> torch.Tensor:
    """``torch.rot90(x, k, dims=(-2, -1))`` from ``transpose`` and ``flip`` (both export to ONNX)."""
    k %= 4
    if k == 1:
        return x.flip(-1).transpose(-2, -1)
    if k == 2:
        return x.flip((-2, -1))
    if k == 3:
        return x.transpose(-2, -1).flip(-1)
    return x


def _forward_view(x: torch.Tensor, view: View) -> torch.Tensor:
    k, axes = view
    return _rot90(x.flip(axes) if axes else x, k)


def _inverse_view(y: torch.Tensor, view: View) -> torch.Tensor:
    k, axes = view
    y = _rot90(y, -k)
    return y.flip(axes) if axes else y


class TTAWrapper(torch.nn.Module):
    """``network`` with test-time augmentation (see the module docstring).

    Args:
        network: maps ``(B, 1, *spatial)`` to ``(B, C, *spatial)`` (2D or 3D; the last two axes are Y, X).
        mode: a :class:`~mtbio.inference.settings.TTA` value (``"none"``, ``"flips"``, ``"flips_rot90"``).
        activation: how the views are averaged: ``"softmax"`` (default; returns ``log(mean softmax)``),
            ``"sigmoid"`` (returns ``logit(mean sigmoid)``, per channel) or ``None`` (the mean of the raw outputs).

    The output is float32 (the views are averaged in float32 also under autocast). ``mode="none"`` returns
    ``network(x)`` unchanged.

    Raises:
        ValueError: an unknown mode / activation; in ``forward``, ``flips_rot90`` on a window that is not square
            in-plane.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        mode: TTA | str = TTA.FLIPS,
        activation: Activation | str | None = Activation.SOFTMAX,
    ) -> None:
        super().__init__()
        self.network = network
        self.mode = as_tta(mode)
        self.activation = as_activation(activation)
        self.views = tta_views(self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode.value}, activation={None if self.activation is None else self.activation.value}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is TTA.NONE:
            return self.network(x)
        if self.mode is TTA.FLIPS_ROT90 and x.shape[-1] != x.shape[-2]:
            raise ValueError(
                f"tta 'flips_rot90' needs windows that are square in-plane (Y = X), got {tuple(x.shape[2:])}; "
                "use tta 'flips' or a square roi_size"
            )
        total = None
        for view in self.views:
            out = _inverse_view(self.network(_forward_view(x, view)), view).float()
            if self.activation is Activation.SOFTMAX:
                out = torch.softmax(out, dim=1)
            elif self.activation is Activation.SIGMOID:
                out = torch.sigmoid(out)
            total = out if total is None else total + out
        assert total is not None
        mean = total / len(self.views)
        if self.activation is None:
            return mean
        tiny = torch.finfo(mean.dtype).tiny  # a view-averaged probability of exactly 0 stays finite
        if self.activation is Activation.SOFTMAX:
            return torch.log(mean.clamp_min(tiny))
        mean = mean.clamp(tiny, 1.0 - torch.finfo(mean.dtype).eps)
        return torch.log(mean) - torch.log1p(-mean)


def with_tta(
    network: torch.nn.Module, mode: TTA | str | None, activation: Activation | str | None = Activation.SOFTMAX
) -> torch.nn.Module:
    """``network`` itself for ``mode`` ``none`` / ``None``, else a :class:`TTAWrapper` around it."""
    tta = as_tta(mode)
    return network if tta is TTA.NONE else TTAWrapper(network, tta, activation)
