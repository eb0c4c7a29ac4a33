"""The report of :func:`mtbio.uda.adapt.run_adapt`: ``OUT/report.md`` and its figures in ``OUT/figures``.

* ``scores.png``: the label-free score and the predicted foreground fraction of the EMA teacher (= the
  pseudo-labels' foreground) at every scored checkpoint of the pre-training and the adaptation, with the source's
  labelled fraction, the healthy band (1/5 to 5x of it; outside = collapsed), the source-only start's score and the
  chosen checkpoint;
* ``sections.png``: a few evenly spaced target sections with the source-only and the adapted model's masks
  (``p >= 0.5``; in-memory predictions of those sections only, :func:`mtbio.uda.evaluate.predict_in_memory`);
* ``volume_signal.png``: label-free signals along the delivered prediction store: the predicted foreground fraction
  of every section and the Dice between the masks of adjacent sections (low values flag sections to look at).

matplotlib is imported here only (Agg canvas, no pyplot state), so ``import mtbio.uda.adapt`` stays light.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtbio.uda.selection import COLLAPSE_FACTOR

__all__ = ["section_indices", "volume_signal", "write_report"]

#: the largest in-plane extent (voxels) of the sections the report shows (a centred window of larger sections)
FIGURE_WINDOW = 1024


def section_indices(depth: int, count: int) -> list[int]:
    """``count`` evenly spaced section indices of a volume of ``depth`` sections (centres of equal parts)."""
    count = max(1, min(int(count), int(depth)))
    return sorted({int((i + 0.5) * depth / count) for i in range(count)})


def volume_signal(store_path: str | os.PathLike) -> dict[str, list[float]]:
    """Per-section label-free signals of a prediction store, read slab by slab (out of core).

    Returns:
        ``{"foreground_fraction": [Z values], "adjacent_dice": [Z - 1 values]}``: the fraction of voxels with
        ``p >= 0.5`` per section, and the Dice of the masks of sections ``z`` and ``z + 1`` (1 when both are
        empty).
    """
    from mtbio.data.store import open_prediction_store

    store = open_prediction_store(store_path)
    shape = store.spatial_shape
    if len(shape) == 2:
        mask = store.probability() >= 0.5
        return {"foreground_fraction": [float(mask.mean())], "adjacent_dice": []}
    from mtbio.data.store import FOREGROUND_CHANNEL, decode_probability

    depth = max(1, int(store.array.chunks[1]) if hasattr(store.array, "chunks") else 8)
    fractions: list[float] = []
    dice: list[float] = []
    previous = None
    for z0 in range(0, shape[0], depth):  # one chunk row deep, in the stored dtype: decoded one section at a time
        slab = np.asarray(store.array[FOREGROUND_CHANNEL, z0 : min(z0 + depth, shape[0])])
        for raw in slab:
            section = decode_probability(raw) >= 0.5
            fractions.append(float(section.mean()))
            if previous is not None:
                total = int(previous.sum()) + int(section.sum())
                dice.append(1.0 if total == 0 else 2.0 * int((previous & section).sum()) / total)
            previous = section
    return {"foreground_fraction": fractions, "adjacent_dice": dice}


def write_report(
    spec: Any, selected: dict[str, Any], *, pre_rows: list[dict[str, Any]], rows: list[dict[str, Any]], store: Path
) -> Path:
    """Write ``OUT/figures/*.png`` and ``OUT/report.md`` (see the module docstring); returns the report's path.

    Args:
        spec: the :class:`~mtbio.uda.adapt.AdaptSpec`.
        selected: the ``selected.json`` content (the choice, scores, timings, settings).
        pre_rows: the pre-training's score rows (empty with a given source model).
        rows: the adaptation's score rows.
        store: the delivered prediction store.
    """
    from mtbio.uda.adapt import REPORT

    figures = spec.out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    offset = spec.recipe.pretrain_iterations if pre_rows else 0
    _scores_figure(figures / "scores.png", pre_rows, rows, offset, selected)
    zs = section_indices(int(spec.target_image.shape[0]), spec.figure_sections)
    _sections_figure(figures / "sections.png", spec, selected, zs)
    signal = volume_signal(store)
    _signal_figure(figures / "volume_signal.png", signal)
    path = spec.out / REPORT
    path.write_text(_markdown(spec, selected, signal, zs, offset))
    return path


# ---------------------------------------------------------------- figures


def _canvas(width: float, height: float, rows: int = 1, cols: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False, **kwargs)


def _scores_figure(
    path: Path, pre_rows: list[dict[str, Any]], rows: list[dict[str, Any]], offset: int, selected: dict[str, Any]
) -> None:
    fig, axes = _canvas(8, 6, 2, 1, sharex=True)
    score_ax, frac_ax = axes[0, 0], axes[1, 0]
    stages = (("source-only pre-training", pre_rows, 0, "0.45"), (selected["adapted_strategy"], rows, offset, "C0"))
    for label, stage_rows, shift, colour in stages:
        if not stage_rows:
            continue
        x = [shift + int(r["iteration"]) for r in stage_rows]
        score_ax.plot(x, [float(r["score"]) for r in stage_rows], "o-", color=colour, ms=3, label=label)
        frac_ax.plot(x, [float(r["foreground_fraction"]) for r in stage_rows], "o-", color=colour, ms=3, label=label)
        bad = [(xi, r) for xi, r in zip(x, stage_rows) if r["collapsed"]]
        if bad:
            score_ax.plot([b[0] for b in bad], [float(b[1]["score"]) for b in bad], "x", color="C3", ms=8)
            frac_ax.plot([b[0] for b in bad], [float(b[1]["foreground_fraction"]) for b in bad], "x", color="C3", ms=8)
    score_ax.axhline(selected["source_only_score"], color="0.3", ls="--", lw=1, label="source-only start")
    chosen = selected.get("adapted")
    if chosen is not None:
        score_ax.plot(offset + int(chosen["iteration"]), float(chosen["score"]), "*", color="C2", ms=14,
                      label=f"chosen (iteration {chosen['iteration']})")  # fmt: skip
    if any(r["collapsed"] for r in (*pre_rows, *rows)):
        score_ax.plot([], [], "x", color="C3", label="collapsed (never chosen)")
    score_ax.set_ylabel("label-free score (higher = better)")
    score_ax.legend(fontsize=8, loc="best")
    fraction = selected.get("source_fraction")
    if fraction:
        low, high = fraction / COLLAPSE_FACTOR, fraction * COLLAPSE_FACTOR
        frac_ax.axhspan(
            low, high, color="C2", alpha=0.12, label=f"healthy: 1/{COLLAPSE_FACTOR:g}x to {COLLAPSE_FACTOR:g}x"
        )
        frac_ax.axhline(fraction, color="C2", lw=1, label=f"source labels {fraction:.3f}")
    values = [float(r["foreground_fraction"]) for r in (*pre_rows, *rows)]
    if all(v > 0 for v in values) and values:
        frac_ax.set_yscale("log")
    if offset and rows:
        for ax in (score_ax, frac_ax):
            ax.axvline(offset, color="0.6", lw=0.8, ls=":")
    frac_ax.set_ylabel("predicted foreground fraction\n(teacher = pseudo-labels)")
    frac_ax.set_xlabel("iteration (pre-training, then adaptation)" if offset else "iteration")
    frac_ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=110)


def _sections_figure(path: Path, spec: Any, selected: dict[str, Any], zs: Sequence[int]) -> None:
    from mtbio.networks.weights import read_weights
    from mtbio.uda.adapt_choice import load_network

    adapted = selected.get("adapted")
    adapted_path = Path(adapted["checkpoint"]) if adapted else spec.strategy_dir / "final.pt"
    models = [("source-only start", Path(selected["source_only"]["checkpoint"]))]
    if adapted_path.is_file():
        label = f"adapted, iteration {adapted['iteration']}" if adapted else "adapted (last, collapsed)"
        models.append((label, adapted_path))
    window = _window(spec.target_image.shape[1:])
    images = [np.asarray(spec.target_image[(z, *window)], dtype=np.float32) for z in zs]
    probs: dict[str, list[np.ndarray]] = {}
    for label, weights in models:
        network = load_network(weights, spec)
        voxel = read_weights(weights).voxel_size
        probs[label] = [_section_probability(network, spec, z, voxel, window) for z in zs]
    fig, axes = _canvas(3.2 * (1 + len(models)), 3.2 * len(zs), len(zs), 1 + len(models))
    for i, z in enumerate(zs):
        image = images[i]
        lo, hi = np.percentile(image, (1, 99)) if image.size else (0, 1)
        axes[i, 0].imshow(image, cmap="gray", vmin=lo, vmax=hi)
        axes[i, 0].set_title(f"target section {z}", fontsize=9)
        for j, (label, _) in enumerate(models, start=1):
            mask = probs[label][i] >= 0.5
            axes[i, j].imshow(image, cmap="gray", vmin=lo, vmax=hi)
            overlay = np.zeros((*mask.shape, 4), dtype=np.float32)
            overlay[mask] = (1.0, 0.0, 1.0, 0.45)
            axes[i, j].imshow(overlay)
            axes[i, j].set_title(f"{label}: {mask.mean():.3f} fg", fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.savefig(path, dpi=90)


def _window(shape: Sequence[int]) -> tuple[slice, ...]:
    """The centred in-plane window of at most :data:`FIGURE_WINDOW` voxels per axis that the figure shows."""
    out = []
    for n in shape:
        size = min(int(n), FIGURE_WINDOW)
        start = (int(n) - size) // 2
        out.append(slice(start, start + size))
    return tuple(out)


def _section_probability(network: Any, spec: Any, z: int, model_voxel: Any, window: tuple[slice, ...]) -> np.ndarray:
    """Foreground probability of the in-plane ``window`` of target section ``z`` (2D networks: the section; 3D: the
    middle of a slab of the inference window's depth), predicted in memory at the model's voxel size and brought back
    to the section's grid."""
    from mtbio.data.resample import ResampledVolume
    from mtbio.uda.adapt_choice import on_model_grid
    from mtbio.uda.evaluate import predict_in_memory

    volume = spec.target_image
    dims = spec.recipe.spatial_dims
    roi = spec.inference.window(dims)
    depth = int(volume.shape[0])
    if dims == 2:
        z0, z1 = z, z + 1
    else:
        z0 = int(np.clip(z - roi[0] // 2, 0, max(0, depth - roi[0])))
        z1 = min(depth, z0 + roi[0])
    slab = np.asarray(volume[(slice(z0, z1), *window)], dtype=np.float32)
    view = on_model_grid(slab, model_voxel, spec)
    # section by section (xy) also when the store was predicted along three planes: a figure crop is no volume
    prob = predict_in_memory(network, view, roi_size=roi, device=spec.device, tta=spec.inference.tta, planes="xy")
    if view is not slab:
        prob = ResampledVolume(prob, tuple(a / b for a, b in zip(slab.shape, view.shape)), shape=slab.shape)[:]
    return np.asarray(prob[z - z0])


def _signal_figure(path: Path, signal: dict[str, list[float]]) -> None:
    fig, axes = _canvas(8, 4.5, 2, 1, sharex=True)
    fractions, dice = signal["foreground_fraction"], signal["adjacent_dice"]
    axes[0, 0].plot(range(len(fractions)), fractions, "-", color="C1", marker="." if len(fractions) < 80 else None)
    axes[0, 0].set_ylabel("predicted foreground\nfraction")
    if dice:
        axes[1, 0].plot(np.arange(len(dice)) + 0.5, dice, "-", color="C0", marker="." if len(dice) < 80 else None)
        axes[1, 0].set_ylim(-0.02, 1.02)
    else:
        axes[1, 0].text(
            0.5, 0.5, "one section: no neighbours", ha="center", va="center", transform=axes[1, 0].transAxes
        )
    axes[1, 0].set_ylabel("Dice of adjacent\nsections' masks")
    axes[1, 0].set_xlabel("section (z)")
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------- markdown


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _store_planes(path: Path) -> str | None:
    """The planes the prediction store at ``path`` was predicted along (its config; ``None``: no readable store)."""
    from mtbio.data.store import open_prediction_store

    try:
        meta = open_prediction_store(path, require_complete=False).meta
    except (FileNotFoundError, ValueError):
        return None
    return str((meta.get("config") or {}).get("planes", "xy"))


def _planes_text(asked: str, used: str | None) -> str:
    """``auto (xyz)`` when the store resolved an ``auto`` request, else the request."""
    return f"{asked} ({used})" if used is not None and used != asked else str(asked)


def _markdown(
    spec: Any, selected: dict[str, Any], signal: dict[str, list[float]], zs: Sequence[int], offset: int
) -> str:
    out = spec.out
    so, ad = selected["source_only"], selected.get("adapted")
    strategy = selected["adapted_strategy"]
    rel = os.path.relpath
    xyz = _store_planes(out / "prediction.zarr") == "xyz"
    lines = [
        f"# mtbio adapt: {spec.name}",
        "",
        f"**{selected['verdict']}**",
        "",
        f"Delivered: the **{selected['delivered'].replace('_', '-')}** model `{selected['checkpoint']}` "
        f"(iteration {selected['iteration']}); its prediction of the whole target is `{out / 'prediction.zarr'}`.",
        "",
        f"| | source-only start | adapted ({strategy}, chosen checkpoint) |",
        "|---|---|---|",
        f"| label-free score (higher = better) | {_fmt(so['score'])} | {_fmt(ad['score'] if ad else None)} |",
        f"| collapsed | {_fmt(so['collapsed'])} | {_fmt(ad['collapsed'] if ad else None)} |",
        f"| predicted foreground fraction (score sample) | {_fmt(so['foreground_fraction'], 4)} | "
        f"{_fmt(ad['foreground_fraction'] if ad else None, 4)} |",
        f"| iteration | {so['iteration']} | {ad['iteration'] if ad else '-'} |",
        f"| weights | `{so['checkpoint']}` | {('`' + ad['checkpoint'] + '`') if ad else '-'} |",
        "",
        f"Checkpoints of the adaptation scored: {selected['scored_checkpoints']}; source labels' foreground fraction: "
        f"{_fmt(selected.get('source_fraction'), 4)}.",
        "",
        "The label-free score needs no target labels: it is the agreement of the model's target predictions under "
        "flips, under the two complementary masked views and across adjacent sections, times a plausibility factor "
        "that falls when the predicted foreground fraction leaves 1/2x..2x of the source's. A model whose "
        f"predictions are all one class, or whose foreground fraction is below 1/{COLLAPSE_FACTOR:g} or above "
        f"{COLLAPSE_FACTOR:g}x the source's, counts as collapsed and is never chosen. The score ranks checkpoints and "
        "models on this target; it is not an accuracy: look at the predictions.",
        "",
        "## Figures",
        "",
        f"![score and foreground fraction over iterations]({rel(out / 'figures' / 'scores.png', out)})",
        "",
        "*Label-free score (top) and the EMA teacher's predicted foreground fraction (bottom; the pseudo-labels' "
        "foreground) at every scored checkpoint"
        + (f" of the pre-training (iterations 0-{offset}) and the adaptation (after the dotted line)" if offset else "")
        + "; red crosses: collapsed; green band: the healthy range around the source's labelled fraction.*",
        "",
        f"![source-only vs adapted on target sections]({rel(out / 'figures' / 'sections.png', out)})",
        "",
        f"*Target sections {', '.join(str(z) for z in zs)} with the masks (p >= 0.5) of the source-only start and "
        f"the adapted model (in-memory predictions of these sections, section by section; of a centred "
        f"{FIGURE_WINDOW} px window of larger ones"
        + ("; the delivered prediction also averages the xz and yz planes, so its masks differ a little" if xyz else "")
        + ").*",
        "",
        f"![per-section signal of the prediction]({rel(out / 'figures' / 'volume_signal.png', out)})",
        "",
        "*Along the delivered prediction: foreground fraction of every section and Dice between adjacent sections' "
        "masks (mitochondria continue across sections: dips flag sections to look at).*",
        "",
    ]
    fractions, dice = signal["foreground_fraction"], signal["adjacent_dice"]
    if fractions:
        lines.append(
            f"Prediction: {len(fractions)} sections, foreground fraction {min(fractions):.4f} to {max(fractions):.4f} "
            f"(mean {float(np.mean(fractions)):.4f})"
            + (
                f"; adjacent-section Dice median {float(np.median(dice)):.3f}, lowest {min(dice):.3f} between "
                f"sections {int(np.argmin(dice))} and {int(np.argmin(dice)) + 1}."
                if dice
                else "."
            )  # fmt: skip
        )
        lines.append("")
    lines += _look(spec, selected)
    lines += _settings(spec, selected)
    lines += _timings(selected)
    return "\n".join(lines) + "\n"


def _look(spec: Any, selected: dict[str, Any]) -> list[str]:
    store = spec.out / "prediction.zarr"
    path = getattr(spec.target_image, "path", None)
    key = getattr(spec.target_image, "key", None)
    target = str(path) if path is not None else "TARGET"
    score_key = f" --key {key}" if key else ""
    return [
        "## Look at the result",
        "",
        "```bash",
        f"napari {store}   # the mtbio plugin reads the store (pip install 'mtbio[napari]'); add {target} beside it",
        f"mtbio measure {store} {spec.out / 'objects.csv'}   # one row per mitochondrion (volume, surface, ...)",
        f"mtbio evaluate {store} LABELS   # if you have labels of some sections",
        f"mtbio score {target}{score_key} --checkpoint {selected['checkpoint']} --json   # the label-free score again",
        "```",
        "",
        "The store is OME-Zarr: the full resolution at `prediction.zarr/0`, axes (c, z, y, x), channel 1 = "
        "mitochondrion probability (uint8: p x 255 by default), the target's voxel size.",
        "",
    ]


def _settings(spec: Any, selected: dict[str, Any]) -> list[str]:
    from mtbio.uda.adapt_choice import strategy_block

    recipe, cfg = spec.recipe, spec.config
    inference = selected["prediction_identity"]["settings"]
    planes = _planes_text(inference.get("planes", "xy"), _store_planes(spec.out / "prediction.zarr"))
    source = (
        "given model " + str(spec.source_model)
        if spec.source_model
        else (f"{recipe.pretrain_iterations} source-only iterations")
    )
    rows = [
        ("target", spec.name),
        ("source", spec.source_description or "-"),
        ("source-only start", source),
        ("strategy", f"{cfg.strategy.value}, {recipe.iterations} iterations"),
        ("network", recipe.network if spec.network is None else type(spec.network).__name__),
        ("crop / batch / lr / seed", f"{list(recipe.crop)} / {recipe.batch_size} / {recipe.lr:g} / {recipe.seed}"),
        ("UDA", f"tau {cfg.tau}, mask block {strategy_block(spec)} voxels, lambda_pl {cfg.lambda_pl}, "
                f"lambda_cm {cfg.lambda_cm}"),
        ("label-free score", f"{recipe.score_crops} target crops (score crop size {recipe.score_crop_size})"),
        ("prediction", f"window {inference['roi_size']}, overlap {inference['overlap']}, "
                       f"normalize {inference['normalize']}, dtype {inference['dtype']}, tta {inference['tta']}, "
                       f"planes {planes}, "
                       f"device {inference['device']}"),
        ("device", str(spec.device)),
    ]  # fmt: skip
    return [
        "## Settings",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "Every value is in `selected.json` (`settings`) and in the runs' `config.json`.",
        "",
    ]


def _timings(selected: dict[str, Any]) -> list[str]:
    seconds, per_iter, trained = selected["seconds"], selected["sec_per_iter"], selected["iterations_trained"]
    rows = [
        ("source-only pre-training (and set-up)", seconds["pretrain"], trained["pretrain"], per_iter["pretrain"]),
        ("adaptation", seconds["strategy"], trained["strategy"], per_iter["strategy"]),
        ("source-only score", seconds["source_only_score"], None, None),
        ("prediction", seconds["prediction"], None, None),
    ]
    return [
        "## Timings",
        "",
        f"Wall-clock seconds over {selected['calls']} call(s) of this run (a resumed run adds up its calls; the "
        "report's own time is in `selected.json`).",
        "",
        "| stage | seconds | iterations trained | seconds / iteration |",
        "|---|---|---|---|",
        *[f"| {name} | {s:.1f} | {_fmt(n)} | {_fmt(p, 2)} |" for name, s, n, p in rows],
        "",
    ]
