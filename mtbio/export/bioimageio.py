"""Write an mtbio network as a bioimage.io model package (``rdf.yaml`` 0.5) and load such a package back.

The package folder holds::

    rdf.yaml            the model description (format_version 0.5.x), with config.mtbio: voxel size, normalisation,
                        test-time augmentation, source / target data, parent model, strategy, training config
    weights.pt          the teacher's plain state_dict (pytorch_state_dict weights; architecture: MONAI's class)
    model.onnx          the same network as ONNX (onnx weights, parent pytorch_state_dict)
    test_input.npy      (1, 1, *roi) float32 EM-like test image (raw intensities)
    test_output.npy     (1, 2, *roi) float32 softmax probabilities (channel 1 = mitochondrion)
    cover.png           test input | foreground probability
    README.md           documentation (with a Validation section)

Preprocessing is ``zero_mean_unit_variance`` per sample: over (y, x) for a 2D network (one section, mtbio's rule
for 2D networks), over (z, y, x) for a 3D one (mtbio's per-volume rule); postprocessing a softmax over the channel
axis (channel 1 is the mitochondrion probability mtbio stores).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtbio.data.normalize import resolve_normalization
from mtbio.export.source import NORM_EPS, Architecture, ExportSource, example_input, normalize_sample
from mtbio.inference.settings import TTA, Planes, as_planes, as_tta, check_tta_window

__all__ = [
    "PackageModel",
    "RDF_NAME",
    "export_bioimageio",
    "find_rdf",
    "load_package",
    "run_bioimageio_test",
]

RDF_NAME = "rdf.yaml"
CITATIONS = [
    {
        "text": "Wang et al., Dual-form Complementary Masking for Domain-Adaptive Image Segmentation (MaskTwins), "
        "ICML 2025",
        "doi": "10.48550/arXiv.2507.12008",
    },
    {
        "text": "Cardoso et al., MONAI: An open-source framework for deep learning in healthcare",
        "doi": "10.48550/arXiv.2211.02701",
    },
]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _axis_ids(spatial_dims: int) -> list[str]:
    return ["y", "x"] if spatial_dims == 2 else ["z", "y", "x"]


def _cover(image: np.ndarray, prob: np.ndarray, path: Path) -> None:
    """PNG: the test image (middle section of a volume) and the foreground probability side by side, 2:1."""
    from PIL import Image

    if image.ndim == 3:
        image, prob = image[image.shape[0] // 2], prob[prob.shape[0] // 2]
    lo, hi = float(image.min()), float(image.max())
    grey = ((image - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)
    magenta = np.stack([prob * 255, np.zeros_like(prob), prob * 255], axis=-1).astype(np.uint8)
    left = np.repeat(grey[..., None], 3, axis=-1)
    tile = np.concatenate([left, magenta], axis=1)
    h = 256
    w = 2 * h
    Image.fromarray(tile).resize((w, h), Image.Resampling.NEAREST).save(path)


def _voxel_unit(source: ExportSource) -> tuple[list[float] | None, str | None]:
    vs = source.record.voxel_size
    if vs is None or len(vs) != source.spatial_dims:
        return None, None
    return [float(v) for v in vs], "nanometer"


def _mtbio_config(
    source: ExportSource, roi: tuple[int, ...], tta: TTA | None = None, planes: Planes | None = None
) -> dict[str, Any]:
    import mtbio

    rec = source.record
    prov = dict(rec.provenance)
    return {
        "mtbio_version": mtbio.__version__,
        "network": rec.network,
        "network_class": rec.network_class or type(source.network).__name__,
        "network_kwargs": rec.network_kwargs,
        "spatial_dims": source.spatial_dims,
        "voxel_size": rec.voxel_size,
        "voxel_unit": "nm",
        "normalization": source.normalization,
        "roi_size": list(roi),
        "tta": None if tta is None else tta.value,
        "planes": None if planes is None else planes.value,
        "context_sections": source.context_sections,
        "step": list(source.step),
        "output": "softmax probabilities, channel 1 = mitochondrion (network output: logits)",
        "strategy": rec.strategy,
        "iteration": rec.iteration,
        "seed": rec.seed,
        "crop": rec.crop,
        "source": prov.pop("source", None),
        "target": prov.pop("target", None),
        "parent": prov.pop("parent", None),
        "provenance": prov,
        "config": rec.config,
        "weights_file": source.path.name,
    }


def _readme(name: str, source: ExportSource, cfg: dict[str, Any], roi: tuple[int, ...], formats: list[str]) -> str:
    axes = " x ".join(_axis_ids(source.spatial_dims))
    norm_rule = (
        "per 2D section (each sample's y, x): mtbio's rule for 2D networks"
        if source.spatial_dims == 2
        else "per volume (each sample's z, y, x): mtbio's rule for 3D networks"
    )
    vs = cfg["voxel_size"]
    k = source.context_sections
    channels_note = (
        "EM intensities, any dtype (cast to float32)"
        if not k
        else f"EM intensities, 2.5D: the section to predict (channel {k}) and {k} adjacent section(s) on each side "
        f"as channels {context_channel_names(k)} (the stack's end section repeated at its ends; each channel "
        "normalised on its own), any dtype (cast to float32)"
    )
    tta_use = (
        f", and test-time augmentation `{cfg['tta']}`: each window predicted from its in-plane flips"
        f"{' and 90 degree rotations' if cfg['tta'] == 'flips_rot90' else ''}, probabilities averaged; "
        "`--tta none` turns it off. The weights themselves are the plain network"
        if cfg.get("tta") not in (None, "none")
        else ""
    )
    if cfg.get("planes") not in (None, "xy"):
        tta_use += (
            f", and planes `{cfg['planes']}`: on an isotropic volume the 2D network also predicts its xz and yz images "
            "and the three planes' log-odds are averaged (ortho-plane consensus); `--planes xy` turns it off"
        )

    def value(v: Any) -> str:
        return "unknown" if v in (None, "", [], {}) else f"`{v}`"

    return f"""# {name}

Mitochondria segmentation of electron-microscopy images, exported by mtbio {cfg["mtbio_version"]}
(`mtbio export`) from `{cfg["weights_file"]}`: a {source.spatial_dims}D {cfg["network_class"]} (MONAI,
`{cfg["network"] or "bundle network_def"}`) trained with the UDA strategy {value(cfg["strategy"])}
(MaskTwins unsupervised domain adaptation: labelled source data, unlabelled target data).

## Data

* input `raw`: (batch, channel={source.in_channels}, {axes}) {channels_note}; spatial sizes multiples of
  {list(source.step)} ({axes}); tested at {list(roi)}.
* voxel size: {value(vs)} nm ({axes}); apply it to data of about this voxel size (resample otherwise).
* preprocessing: zero mean, unit variance {norm_rule}: `(x - mean) / (std + 1e-6)`. mtbio itself floors std
  at 1e-6 instead of adding it and, for large data predicted window by window, takes the statistics of the whole
  section / volume: run the model on whole sections (2D) or whole volumes (3D) to match.
* output `probability`: softmax over the 2 channels, channel 0 = background, channel 1 = mitochondrion
  (the network itself outputs logits; the softmax is the package's postprocessing).

## Adaptation (provenance)

* source data (labelled): {value(cfg["source"])}
* target data (unlabelled): {value(cfg["target"])}
* adapted from (parent weights): {value(cfg["parent"])}
* strategy {value(cfg["strategy"])}, iterations {value(cfg["iteration"])}, seed {value(cfg["seed"])},
  training crop {value(cfg["crop"])}
* training config: {value(cfg["config"])}

The same values are in `rdf.yaml` under `config.mtbio`.

## Weights

{", ".join(formats)}: `weights.pt` is a plain PyTorch state_dict for
`monai.networks.nets.{source.architecture.callable if source.architecture else "?"}` with the kwargs in
`rdf.yaml` (needs `monai`); `model.onnx` needs only onnxruntime.

## Use

* bioimage.io: `bioimageio predict` / `bioimageio.core` with this folder's `rdf.yaml`.
* mtbio: `mtbio predict INPUT OUT.pred.zarr --model PACKAGE_DIR` (the pytorch_state_dict weights, mtbio's
  sliding-window inference and normalisation rule{tta_use}).

## Validation

`test_input.npy` -> `test_output.npy` is reproduced by `bioimageio test rdf.yaml` (both weight formats).
ONNX and PyTorch logits agree within 1e-4 on the test tensors (checked by `mtbio export`). Segmentation
quality depends on the data: evaluate on labelled sections of your own data (`mtbio evaluate PRED LABELS`,
per-section mAP / F1 / MCC / IoU) before relying on it.
"""


def export_bioimageio(
    source: ExportSource,
    out: str | os.PathLike,
    *,
    roi: tuple[int, ...],
    name: str | None = None,
    description: str | None = None,
    authors: list[str] | None = None,
    license: str = "CC-BY-4.0",
    onnx: bool = True,
    opset: int | None = None,
    overwrite: bool = False,
    zip_path: str | os.PathLike | None = None,
    test: bool = True,
    tta: TTA | str | None = None,
    planes: Planes | str | None = None,
) -> dict[str, Any]:
    """Write the package folder ``out`` (see the module docstring), validate it and optionally test and zip it.

    Args:
        source: the network to export (:func:`mtbio.export.source.load_source`).
        out: package folder (created; must be absent or empty unless ``overwrite``).
        roi: test tensor spatial size, a multiple of ``source.step`` per axis.
        name, description, authors, license: the description's fields (defaults describe the model).
        onnx: also write ONNX weights (checked against PyTorch under onnxruntime).
        opset: ONNX opset (default :data:`mtbio.export.onnx.DEFAULT_OPSET`).
        overwrite: replace an existing non-empty folder.
        zip_path: also write the package as a zip (``bioimageio.spec.save_bioimageio_package``).
        test: run ``bioimageio.core.test_model`` on the package (raises when it fails).
        tta: the test-time augmentation mtbio applies to this model (:mod:`mtbio.inference.tta`), recorded as
            ``config.mtbio.tta`` and used by ``mtbio predict --model`` (``None``: not recorded, the tools' default
            applies). Both weight formats stay the plain network
            (the pytorch_state_dict architecture is MONAI's class, which bioimage.io tools build; both must give
            ``test_output.npy``): bioimage.io tools predict without it.
        planes: the planes mtbio predicts a volume along with this 2D network (:mod:`mtbio.inference.planes`),
            recorded as ``config.mtbio.planes`` for ``mtbio predict --model`` (``None``: not recorded, the tools'
            default applies); the weights stay the 2D network.

    Returns:
        a JSON-able summary: paths, formats, onnx parity, bioimage.io test status.

    Raises:
        ImportError: the ``export`` extra (bioimageio.core, onnx, onnxruntime) is missing.
        ValueError: a roi the network cannot take, no architecture to describe, an invalid description or a
            failed bioimage.io test (with its summary).
        FileExistsError: ``out`` holds files and ``overwrite`` is false.
    """
    import yaml
    from bioimageio.spec.model.v0_5 import ModelDescr

    from mtbio.export.onnx import DEFAULT_OPSET, check_onnx, export_onnx

    dims = source.spatial_dims
    roi = tuple(int(r) for r in roi)
    _check_roi(roi, source)
    tta = None if tta is None else as_tta(tta)
    if tta is not None:
        check_tta_window(tta, roi)
    planes = None if planes is None else as_planes(planes)
    if planes is Planes.XYZ and dims != 2:
        raise ValueError(f"planes 'xyz' runs a 2D network along three planes; {source.path} holds a {dims}D network")
    if source.architecture is None:
        raise ValueError(
            f"{source.path}: the network is not an mtbio network (mtbio.networks.get_network), so the package cannot "
            "name its architecture; export --format onnx instead"
        )
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{out}: exists and is not an empty folder (pass --overwrite)")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True, exist_ok=True)
    network = source.network
    arch = source.architecture
    rebuilt = arch.build()
    rebuilt.load_state_dict(source.record.teacher, strict=True)  # the description builds exactly this network

    torch.save({k: v.contiguous() for k, v in network.state_dict().items()}, out / "weights.pt")
    c, k = source.in_channels, source.context_sections
    x = example_input(roi, channels=c)
    with torch.inference_mode():
        logits = network(normalize_sample(x))
        probs = torch.softmax(logits, dim=1)
    np.save(out / "test_input.npy", x.numpy().astype(np.float32))
    np.save(out / "test_output.npy", probs.numpy().astype(np.float32))
    _cover(x[0, k].numpy(), probs[0, 1].numpy(), out / "cover.png")

    formats = ["pytorch_state_dict"]
    summary: dict[str, Any] = {"format": "bioimageio", "path": str(out), "rdf": str(out / RDF_NAME)}
    opset = int(opset or DEFAULT_OPSET)
    if onnx:
        export_onnx(network, out / "model.onnx", normalize_sample(x), opset=opset)
        checks = [normalize_sample(x), normalize_sample(example_input(roi, seed=1, batch=2, channels=c))]
        summary["onnx_check"] = check_onnx(out / "model.onnx", network, checks)
        formats.append("onnx")

    cfg = _mtbio_config(source, roi, tta, planes)
    name = name or f"mtbio {cfg['strategy'] or 'trained'} {dims}D mitochondria EM {cfg['network'] or 'unet'}"
    (out / "README.md").write_text(_readme(name, source, cfg, roi, formats))
    rdf = _rdf(source, roi, cfg, name, description, authors, license, onnx, opset, out)
    with open(out / RDF_NAME, "w") as fh:
        yaml.safe_dump(rdf, fh, sort_keys=False)

    descr = _validate(out / RDF_NAME)
    summary.update(
        formats=formats,
        format_version=str(descr.format_version),
        roi=list(roi),
        tta=None if tta is None else tta.value,
        planes=None if planes is None else planes.value,
        files=sorted(p.name for p in out.iterdir()),
    )
    if test:
        summary["bioimageio_test"] = run_bioimageio_test(out / RDF_NAME)
    if zip_path is not None:
        from bioimageio.spec import save_bioimageio_package

        save_bioimageio_package(descr, output_path=Path(zip_path))
        summary["zip"] = str(zip_path)
    assert isinstance(descr, ModelDescr)
    return summary


def _check_roi(roi: tuple[int, ...], source: ExportSource) -> None:
    if len(roi) != source.spatial_dims:
        raise ValueError(f"--roi {list(roi)} needs {source.spatial_dims} values for a {source.spatial_dims}D network")
    bad = [r for r, s in zip(roi, source.step) if r < 1 or r % s]
    if bad:
        raise ValueError(f"--roi {list(roi)}: each size must be a positive multiple of {list(source.step)}")


def context_channel_names(k: int) -> list[str]:
    """The input's channel names: ``["raw"]``, or for a 2.5D network ``["z-k", ..., "z", ..., "z+k"]`` (the section
    to predict is ``"z"``, the middle channel)."""
    if not k:
        return ["raw"]
    return [f"z{d:+d}" if d else "z" for d in range(-k, k + 1)]


def _input_description(k: int) -> str:
    if not k:
        return "EM intensities"
    # at most 128 characters (bioimage.io); the README says more
    return f"EM sections z-{k}..z+{k} as channels (2.5D): channel {k} ('z') is predicted; stack ends repeated"


def _rdf(
    source: ExportSource,
    roi: tuple[int, ...],
    cfg: dict[str, Any],
    name: str,
    description: str | None,
    authors: list[str] | None,
    license: str,
    onnx: bool,
    opset: int,
    out: Path,
) -> dict[str, Any]:
    from bioimageio.spec.model.v0_5 import ModelDescr

    dims = source.spatial_dims
    ids = _axis_ids(dims)
    scale, unit = _voxel_unit(source)
    space_in, space_out = [], []
    for i, axis in enumerate(ids):
        extra: dict[str, Any] = {} if scale is None else {"unit": unit, "scale": scale[i]}
        step = int(source.step[i])
        space_in.append({"type": "space", "id": axis, "size": {"min": step, "step": step}, **extra})
        space_out.append({"type": "space", "id": axis, "size": {"tensor_id": "raw", "axis_id": axis}, **extra})
    arch = source.architecture
    assert arch is not None
    weights: dict[str, Any] = {
        "pytorch_state_dict": {
            "source": "weights.pt",
            "sha256": _sha256(out / "weights.pt"),
            "architecture": {"callable": arch.callable, "import_from": arch.import_from, "kwargs": arch.kwargs},
            "pytorch_version": torch.__version__.split("+")[0],
        }
    }
    if onnx:
        weights["onnx"] = {
            "source": "model.onnx",
            "sha256": _sha256(out / "model.onnx"),
            "opset_version": opset,
            "parent": "pytorch_state_dict",
        }
    desc = description or (
        f"{dims}D U-Net for mitochondria in electron microscopy, adapted with mtbio "
        f"({cfg['strategy'] or 'unknown strategy'}); outputs background / mitochondrion probabilities"
    )
    return {
        "format_version": ModelDescr.implemented_format_version,
        "type": "model",
        "name": name,
        "description": desc,
        "authors": [{"name": a} for a in (authors or ["mtbio developers"])],
        "cite": CITATIONS,
        "license": license,
        "tags": [
            "electron-microscopy",
            "mitochondria",
            "segmentation",
            "unet",
            f"{dims}d",
            "domain-adaptation",
            "pytorch",
            "onnx",
            "mtbio",
        ],
        "documentation": {"source": "README.md", "sha256": _sha256(out / "README.md")},
        "covers": [{"source": "cover.png", "sha256": _sha256(out / "cover.png")}],
        "inputs": [
            {
                "id": "raw",
                "description": _input_description(source.context_sections),
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": context_channel_names(source.context_sections)},
                    *space_in,
                ],
                "test_tensor": {"source": "test_input.npy", "sha256": _sha256(out / "test_input.npy")},
                "data": {"type": "float32"},
                "preprocessing": [
                    {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                    {"id": "zero_mean_unit_variance", "kwargs": {"axes": ids, "eps": NORM_EPS}},
                ],
            }
        ],
        "outputs": [
            {
                "id": "probability",
                "description": "softmax probabilities: channel 0 background, channel 1 mitochondrion",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["background", "mitochondrion"]},
                    *space_out,
                ],
                "test_tensor": {"source": "test_output.npy", "sha256": _sha256(out / "test_output.npy")},
                "data": {"type": "float32", "range": [0.0, 1.0]},
                "postprocessing": [{"id": "softmax", "kwargs": {"axis": "channel"}}],
            }
        ],
        "weights": weights,
        "config": {"mtbio": cfg},
    }


def _validate(rdf: Path) -> Any:
    """The loaded description of ``rdf``; ValueError with the validation summary when it is invalid."""
    from bioimageio.spec import InvalidDescr, load_description

    descr = load_description(rdf, format_version="latest")
    if isinstance(descr, InvalidDescr) or descr.validation_summary.status == "failed":
        raise ValueError(f"{rdf}: invalid bioimage.io description: {_failures(descr.validation_summary)}")
    return descr


def run_bioimageio_test(rdf: str | os.PathLike, devices: list[str] | None = None) -> str:
    """Run ``bioimageio.core.test_model`` on the package (every weight format; CPU by default).

    Returns:
        the test status (``"passed"`` or ``"valid-format"``).

    Raises:
        ValueError: the test failed, with the failing checks.
    """
    from bioimageio.core import test_model

    summary = test_model(Path(rdf), devices=devices or ["cpu"])
    if summary.status == "failed":
        raise ValueError(f"{rdf}: bioimageio.core test failed: {_failures(summary)}")
    return str(summary.status)


def _failures(summary: Any) -> str:
    """The failed checks of a bioimageio ``ValidationSummary``, one line each (location: message)."""
    lines = [
        f"{d.name}: " + "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in d.errors)
        for d in summary.details
        if d.status == "failed"
    ]
    return " | ".join(lines)[:4000] or str(summary.status)


def find_rdf(path: str | os.PathLike) -> Path:
    """The ``rdf.yaml`` of a package folder (or the file itself).

    Raises:
        FileNotFoundError: no such folder / file, or a folder without ``rdf.yaml`` / ``bioimageio.yaml``.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: bioimage.io package (folder or rdf.yaml) does not exist")
    for candidate in (RDF_NAME, "bioimageio.yaml"):
        if (path / candidate).is_file():
            return path / candidate
    raise FileNotFoundError(f"{path}: folder has no {RDF_NAME} (not a bioimage.io package)")


class PackageModel:
    """A bioimage.io package loaded back for mtbio inference (its pytorch_state_dict weights).

    Attributes:
        rdf: the description file.
        network: the network with the package's weights, eval mode, CPU.
        spatial_dims: 2 or 3.
        normalize: the ``predict_volume`` normalisation (``"zscore_section"`` for 2D, ``"zscore"`` for 3D).
        roi: the test tensor's spatial size (a window size the network takes).
        voxel_size: nm per axis, or ``None``.
        tta: the test-time augmentation chosen at export (``config.mtbio.tta``: ``"flips"`` ...), or ``None`` (not
            stated: packages made elsewhere or before the field).
        planes: the planes chosen at export (``config.mtbio.planes``: ``"xy"``, ``"xyz"``, ``"auto"``), or ``None``.
        mtbio: the ``config.mtbio`` block (empty for packages made elsewhere).
    """

    def __init__(self, rdf: Path, network: torch.nn.Module, description: dict[str, Any]) -> None:
        self.rdf = rdf
        self.network = network
        self.description = description
        self.mtbio: dict[str, Any] = dict((description.get("config") or {}).get("mtbio") or {})
        inp = description["inputs"][0]
        space = [a for a in inp["axes"] if a.get("type") == "space"]
        self.spatial_dims = len(space)
        rule = resolve_normalization("auto", self.spatial_dims, self.mtbio.get("normalization"))
        self.normalize = None if rule is None else rule.value
        roi = self.mtbio.get("roi_size")
        if not roi:
            roi = list(np.load(rdf.parent / inp["test_tensor"]["source"], mmap_mode="r").shape[2:])
        self.roi = tuple(int(r) for r in roi)
        scales = [a.get("scale") for a in space if a.get("unit") == "nanometer"]
        self.voxel_size = tuple(float(s) for s in scales) if len(scales) == self.spatial_dims else None
        tta = self.mtbio.get("tta")
        try:
            self.tta = None if tta is None else as_tta(tta).value
        except ValueError as err:
            raise ValueError(f"{rdf}: config.mtbio.tta: {err}") from None
        planes = self.mtbio.get("planes")
        try:
            self.planes = None if planes is None else as_planes(planes).value
        except ValueError as err:
            raise ValueError(f"{rdf}: config.mtbio.planes: {err}") from None


def load_package(path: str | os.PathLike) -> PackageModel:
    """Load a bioimage.io model package (folder or ``rdf.yaml``) through its pytorch_state_dict weights.

    Reads the description with PyYAML (no bioimageio install needed), checks the weights' sha256, builds the
    architecture (only from :data:`mtbio.export.source.ALLOWED_IMPORTS`: no code from the package runs) and
    loads the weights with :func:`mtbio.networks.weights.read_weights` (``weights_only``).

    Raises:
        FileNotFoundError: no package / rdf / weights file.
        ValueError: not a model description, no pytorch_state_dict weights, a checksum mismatch, an architecture
            mtbio does not build, or an input mtbio cannot feed (not one single-channel 2D / 3D image).
    """
    import yaml

    from mtbio.networks.weights import read_weights

    rdf = find_rdf(path)
    try:
        description = yaml.safe_load(rdf.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{rdf}: not a readable YAML description ({err})") from err
    if not isinstance(description, dict) or description.get("type") != "model":
        raise ValueError(
            f"{rdf}: not a bioimage.io model description (type {description.get('type')!r})"
            if isinstance(description, dict)
            else f"{rdf}: not a bioimage.io model description"
        )
    entry = (description.get("weights") or {}).get("pytorch_state_dict")
    if not isinstance(entry, dict) or not isinstance(entry.get("architecture"), dict):
        raise ValueError(f"{rdf}: no pytorch_state_dict weights with an architecture (mtbio loads only those)")
    spec = entry["architecture"]
    if "import_from" not in spec:
        raise ValueError(
            f"{rdf}: the architecture is a source file; mtbio builds only classes of monai.networks.nets (import_from)"
        )
    inputs = description.get("inputs") or []
    if len(inputs) != 1:
        raise ValueError(f"{rdf}: mtbio feeds one input tensor, the description has {len(inputs)}")
    weights_file = rdf.parent / str(entry["source"])
    if not weights_file.is_file():
        raise FileNotFoundError(f"{weights_file}: weights file of {rdf} does not exist")
    if entry.get("sha256") and _sha256(weights_file) != entry["sha256"]:
        raise ValueError(f"{weights_file}: sha256 differs from the one in {rdf} (a changed or damaged file)")
    arch = Architecture(str(spec["import_from"]), str(spec["callable"]), dict(spec.get("kwargs") or {}))
    try:
        network = arch.build()
    except TypeError as err:
        raise ValueError(f"{rdf}: cannot build {arch.import_from}.{arch.callable} ({err})") from err
    record = read_weights(weights_file)
    record.load_into(network, weights_file)
    model = PackageModel(rdf, network.eval(), description)
    from mtbio.networks.context import with_context

    k = model.mtbio.get("context_sections") or 0  # a 2.5D package: its mtbio config states the context
    with_context(model.network, int(k))
    if model.spatial_dims not in (2, 3):
        raise ValueError(f"{rdf}: input has {model.spatial_dims} space axes; mtbio predicts 2D or 3D images")
    return model
