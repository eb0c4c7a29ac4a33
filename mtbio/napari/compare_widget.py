"""Compare widget: two predictions (e.g. source-only vs MaskTwins), optionally against ground truth.

It adds a difference labels layer (voxels B gains over A, voxels B loses) computed lazily, fills a
per-section table (the literature metrics of :func:`mtbio.metrics.em_metrics_per_section` with ground truth;
gained / lost counts and A-B agreement without) and lists the worst sections to jump to. With an unlabelled target
image layer and the models behind A and B known (recorded by the Predict widget, or weights files picked), it also
shows each model's label-free score and collapse flag (:mod:`mtbio.napari._scoring`), computed in the worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, PushButton, Table

from mtbio.napari._options import (
    DEFAULT_THRESHOLD,
    DIFFERENCE_COLORS,
    DIFFERENCE_STYLE,
    GAINED,
    LOST,
    Metric,
    stored_threshold,
)
from mtbio.napari._scoring import ModelRef, describe, score_model
from mtbio.napari._widget_common import (
    add_or_replace,
    direct_colormap,
    full_resolution,
    jump_to_section,
    layer_picker,
    report,
    start_worker,
)

#: how many sections the worst-section list offers
N_WORST = 10


def foreground(prob: Any, *, threshold: float) -> Any:
    """Lazy ``prob >= threshold`` of a probability array stored as uint8 (p·255) or float in [0, 1]."""
    return prob >= stored_threshold(prob.dtype, threshold=threshold)


def difference(prob_a: Any, prob_b: Any, *, threshold: float) -> Any:
    """Lazy uint8 difference map of two probability arrays of one shape: ``GAINED`` (1) where only B is
    foreground, ``LOST`` (2) where only A is, 0 elsewhere."""
    a = foreground(prob_a, threshold=threshold)
    b = foreground(prob_b, threshold=threshold)
    return (b & ~a).astype(np.uint8) * np.uint8(GAINED) + (a & ~b).astype(np.uint8) * np.uint8(LOST)


def _as_sections(x: Any) -> Any:
    return x[None] if x.ndim == 2 else x


@dataclass
class Comparison:
    """The per-section table and the section order from worst to best.

    Attributes:
        columns: column name -> one value per section.
        worst: section indices, worst first.
        score: what ``worst`` is sorted by, e.g. ``"B IoU"`` or ``"changed voxels"``.
        scores: ``"A"`` / ``"B"`` -> the model's label-free score on the target (:func:`~mtbio.napari._scoring.
            score_model`'s dict), ``None`` when its model is unknown; empty without a target.
    """

    columns: dict[str, list[float | int]]
    worst: list[int]
    score: str
    scores: dict[str, dict[str, Any] | None] = field(default_factory=dict)


def compare(prob_a: Any, prob_b: Any, label: Any | None, *, threshold: float, metric: Metric) -> Comparison:
    """Per-section comparison of two probability maps (Z, Y, X) or (Y, X), optionally against labels.

    With ``label`` (nonzero = mitochondrion): each map's ``em_metrics_per_section`` row per section, and the
    gain ``B - A`` of ``metric``; sections are ranked by B's ``metric``, lowest first. Without: foreground
    fractions, gained / lost voxel counts and the A-B IoU per section; ranked by changed voxels, most first.
    """
    import dask.array as da

    from mtbio.metrics import em_metrics_per_section

    a, b = _as_sections(da.asarray(prob_a)), _as_sections(da.asarray(prob_b))
    if a.shape != b.shape:
        raise ValueError(f"prediction shapes differ: A {tuple(prob_a.shape)} vs B {tuple(prob_b.shape)}")
    fa, fb = foreground(a, threshold=threshold), foreground(b, threshold=threshold)
    gained = (fb & ~fa).sum(axis=(1, 2))
    lost = (fa & ~fb).sum(axis=(1, 2))
    columns: dict[str, list[float | int]] = {"section": list(range(a.shape[0]))}
    if label is None:
        inter = (fa & fb).sum(axis=(1, 2))
        union = (fa | fb).sum(axis=(1, 2))
        n = float(np.prod(a.shape[1:]))
        g, l_, i, u, sa, sb = da.compute(gained, lost, inter, union, fa.sum(axis=(1, 2)), fb.sum(axis=(1, 2)))
        columns |= {
            "A fg %": list(np.round(100 * sa / n, 2)),
            "B fg %": list(np.round(100 * sb / n, 2)),
            "gained": [int(v) for v in g],
            "lost": [int(v) for v in l_],
            "A-B IoU": [round(float(x / y), 4) if y else 1.0 for x, y in zip(i, u)],
        }
        changed = np.asarray(g) + np.asarray(l_)
        return Comparison(columns, [int(s) for s in np.argsort(-changed, kind="stable")], "changed voxels")
    lab = _as_sections(da.asarray(label))
    if lab.shape != a.shape:
        raise ValueError(f"ground truth shape {tuple(label.shape)} differs from the predictions' {tuple(prob_a.shape)}")
    lab = (lab > 0).astype(np.uint8)
    rows_a = em_metrics_per_section(a, lab, threshold=threshold, name="A", label_name="ground truth")
    rows_b = em_metrics_per_section(b, lab, threshold=threshold, name="B", label_name="ground truth")
    g, l_ = da.compute(gained, lost)
    m = metric.value
    for name in (Metric.IOU.value, Metric.F1.value, Metric.MCC.value, Metric.MAP.value):
        columns[f"A {name}"] = [round(float(r[name]), 4) for r in rows_a]
        columns[f"B {name}"] = [round(float(r[name]), 4) for r in rows_b]
    columns[f"Δ {m}"] = [round(float(rb[m]) - float(ra[m]), 4) for ra, rb in zip(rows_a, rows_b)]
    columns["gained"] = [int(v) for v in g]
    columns["lost"] = [int(v) for v in l_]
    score = np.asarray([float(r[m]) for r in rows_b])
    return Comparison(columns, [int(s) for s in np.argsort(score, kind="stable")], f"B {m}")


def compare_and_score(
    prob_a: Any,
    prob_b: Any,
    label: Any | None,
    *,
    threshold: float,
    metric: Metric,
    target: Any | None = None,
    models: dict[str, ModelRef | None] | None = None,
) -> Comparison:
    """:func:`compare`, and with a ``target`` volume the label-free score of each known model in ``models``."""
    result = compare(prob_a, prob_b, label, threshold=threshold, metric=metric)
    if target is not None:
        result.scores = {k: None if ref is None else score_model(ref, target) for k, ref in (models or {}).items()}
    return result


class CompareWidget(Container):
    """Compare two prediction layers (A = e.g. source-only, B = e.g. MaskTwins), optionally with ground truth.

    Attributes (sub-widgets): ``pred_a``, ``pred_b``, ``ground_truth`` (optional labels layer), ``target`` (optional
    unlabelled target image for the label-free score), ``weights_a`` / ``weights_b`` (the models behind A and B,
    filled in from a layer the Predict widget made), ``threshold``, ``metric``, ``run_button``, ``table``,
    ``scores`` (the label-free scores), ``worst`` (pick a section to jump to), ``jump_button``, ``status``;
    ``result`` is the last :class:`Comparison`, ``worker`` the last thread worker, ``busy`` true while it runs.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.pred_a = layer_picker(napari_viewer, napari.layers.Image, "A (e.g. source-only)")
        self.pred_b = layer_picker(napari_viewer, napari.layers.Image, "B (e.g. MaskTwins)")
        self.ground_truth = layer_picker(napari_viewer, napari.layers.Labels, "ground truth", nullable=True)
        self.target = layer_picker(napari_viewer, napari.layers.Image, "target (label-free score)", nullable=True)
        self.weights_a = FileEdit(label="A weights", mode="r", tooltip="the model that predicted A (for its score)")
        self.weights_b = FileEdit(label="B weights", mode="r", tooltip="the model that predicted B (for its score)")
        self.threshold = FloatSpinBox(label="threshold", value=DEFAULT_THRESHOLD, min=0.0, max=1.0, step=0.05)
        self.metric = ComboBox(label="rank by", choices=list(Metric), value=Metric.IOU)
        self.run_button = PushButton(text="Compare")
        self.table = Table(label="per section")
        self.scores = Label(label="label-free score", value="")
        self.worst = ComboBox(label="worst sections", choices=[])
        self.jump_button = PushButton(text="Jump to worst")
        self.status = Label(label="", value="")
        self.extend(
            [
                self.pred_a,
                self.pred_b,
                self.ground_truth,
                self.target,
                self.weights_a,
                self.weights_b,
                self.threshold,
                self.metric,
                self.run_button,
                self.table,
                self.scores,
                self.worst,
                self.jump_button,
                self.status,
            ]
        )
        self.result: Comparison | None = None
        self.worker: Any = None
        self.busy = False
        self.run_button.clicked.connect(self.start)
        self.pred_a.changed.connect(lambda layer: self._fill_weights(layer, self.weights_a))
        self.pred_b.changed.connect(lambda layer: self._fill_weights(layer, self.weights_b))
        self._fill_weights(self.pred_a.value, self.weights_a)
        self._fill_weights(self.pred_b.value, self.weights_b)
        self.worst.changed.connect(self._on_worst)
        self.jump_button.clicked.connect(self.jump_to_worst)

    def _inputs(self) -> tuple[Any, Any, Any | None]:
        a, b, gt = self.pred_a.value, self.pred_b.value, self.ground_truth.value
        if a is None or b is None:
            raise ValueError("choose two prediction layers A and B")
        if a is b:
            raise ValueError(f"A and B are the same layer {a.name!r}")
        prob_a, prob_b = full_resolution(a), full_resolution(b)
        if prob_a.shape != prob_b.shape:
            raise ValueError(f"A {a.name!r} {prob_a.shape} and B {b.name!r} {prob_b.shape} differ in shape")
        label = None if gt is None else full_resolution(gt)
        if label is not None and label.shape != prob_a.shape:
            raise ValueError(f"ground truth {gt.name!r} {label.shape} differs from the predictions {prob_a.shape}")
        return prob_a, prob_b, label

    @staticmethod
    def _fill_weights(layer: Any, edit: FileEdit) -> None:
        ref = ModelRef.from_layer(layer)
        if ref is not None:
            edit.value = ref.path

    @staticmethod
    def _model(layer: Any, edit: FileEdit) -> ModelRef | None:
        """The model behind ``layer``: the picked weights (with the network the layer's metadata records for them)."""
        value = str(edit.value)
        if value in ("", "."):
            return None
        ref = ModelRef.from_layer(layer)
        return ref if ref is not None and ref.path == Path(value) else ModelRef(Path(value))

    def start(self) -> Any:
        """Add the difference layer and start the per-section comparison (and the label-free scores of the models,
        with a target image) in a thread worker."""
        try:
            prob_a, prob_b, label = self._inputs()
        except ValueError as err:
            report(self.status, f"error: {err}")
            return None
        target = None if self.target.value is None else full_resolution(self.target.value)
        models = {
            "A": self._model(self.pred_a.value, self.weights_a),
            "B": self._model(self.pred_b.value, self.weights_b),
        }
        threshold = float(self.threshold.value)
        b_layer = self.pred_b.value
        add_or_replace(
            self.viewer,
            (
                difference(prob_a, prob_b, threshold=threshold),
                {
                    "name": "difference B vs A",
                    "scale": tuple(b_layer.scale),
                    "translate": tuple(b_layer.translate),
                    "colormap": direct_colormap(DIFFERENCE_COLORS),
                    "metadata": {"values": {"gained (B only)": GAINED, "lost (A only)": LOST}},
                }
                | DIFFERENCE_STYLE.kwargs(),
                "labels",
            ),
        )
        report(self.status, "comparing ...")
        return start_worker(
            self,
            compare_and_score,
            prob_a,
            prob_b,
            label,
            threshold=threshold,
            metric=Metric(self.metric.value),
            target=target,
            models=models,
            on_done=self._on_done,
        )

    def _on_done(self, result: Comparison) -> None:
        self.result = result
        self.table.value = result.columns
        key = result.score if result.score in result.columns else None
        choices = []
        for s in result.worst[:N_WORST]:
            text = f"section {s}"
            if key is not None:
                text += f"  ({key} = {result.columns[key][s]})"
            choices.append((text, s))
        self.worst.choices = choices
        names = {"A": self.pred_a.value, "B": self.pred_b.value}
        self.scores.value = "\n".join(
            describe(f"{k} {getattr(names[k], 'name', '')}".strip(), v) for k, v in result.scores.items()
        )
        worst = result.worst[0]
        report(self.status, f"{len(result.worst)} section(s); worst by {result.score}: section {worst}")

    def _on_worst(self, section: int | None) -> None:
        if section is not None and self.pred_b.value is not None:
            jump_to_section(self.viewer, self.pred_b.value, int(section))

    def jump_to_worst(self) -> None:
        """Move the viewer to the worst section of the last comparison."""
        if self.result is None or self.pred_b.value is None:
            report(self.status, "run Compare first")
            return
        jump_to_section(self.viewer, self.pred_b.value, self.result.worst[0])
