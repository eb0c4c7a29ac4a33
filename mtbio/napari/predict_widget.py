"""Predict widget: run :func:`mtbio.inference.predict_volume` on an image layer in a worker thread.

The output is an on-disk prediction store (out of core: the image may be larger than memory, and the result
is read back lazily), shown as a probability image and a mask labels layer whose metadata names the model
(``metadata["mtbio_model"]``: network, path, spatial dims; the Compare widget scores it).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)

from mtbio.inference.settings import DEFAULT_ROI, TOOL_DEFAULTS, TTA, InferenceSettings, Planes
from mtbio.napari._layers import prediction_layers
from mtbio.napari._options import (
    DEFAULT_THRESHOLD,
    INCOMPLETE_SUFFIX,
    Device,
    available_devices,
)
from mtbio.napari._scoring import MODEL_KEY
from mtbio.napari._widget_common import (
    ProgressRelay,
    add_or_replace,
    full_resolution,
    layer_picker,
    report,
    report_error,
)

#: the network choice that loads a MONAI bundle folder instead of an mtbio network name + checkpoint
BUNDLE = "bundle"
#: the network choice that loads a bioimage.io model package (folder or rdf.yaml, e.g. from ``mtbio export``)
PACKAGE = "bioimageio"


def parse_roi(text: str) -> tuple[int, ...]:
    """``"32, 128, 128"`` -> ``(32, 128, 128)``; 2 or 3 positive integers.

    Raises:
        ValueError: anything else, quoting the text.
    """
    try:
        roi = tuple(int(v) for v in text.replace("x", ",").replace(" ", ",").split(",") if v)
    except ValueError as err:
        raise ValueError(f"ROI must be 2 or 3 integers such as '32, 128, 128', got {text!r}") from err
    if len(roi) not in (2, 3) or any(v < 1 for v in roi):
        raise ValueError(f"ROI must be 2 or 3 positive integers such as '32, 128, 128', got {text!r}")
    return roi


@dataclass(frozen=True)
class PredictJob:
    """One validated prediction request (what the worker thread runs).

    Attributes:
        source: the layer's full-resolution data, ``(Z, Y, X)`` or ``(Y, X)``.
        output: the prediction store.
        network: ``"bundle"``, ``"bioimageio"`` or an mtbio network name.
        model_path: the bundle / package folder or the checkpoint file.
        settings: the run's options (:data:`~mtbio.inference.settings.TOOL_DEFAULTS` with the widget's window,
            overlap, batch size, test-time augmentation, device, voxel size and resample values).
        resume: continue a stopped run into the same store.
        trust_bundle: let a bundle's config run code (see :mod:`mtbio.bundle.trust`).
    """

    source: Any
    output: Path
    network: str
    model_path: Path | None
    settings: InferenceSettings
    resume: bool
    trust_bundle: bool = False

    @property
    def roi(self) -> tuple[int, ...]:
        """The window (``settings.roi_size``)."""
        return self.settings.window()


def load_network(network: str, model_path: Path | None, spatial_dims: int, trust: bool = False) -> Any:
    """A torch network: a MONAI bundle folder (``network == "bundle"``) or ``network`` + a checkpoint file.

    A bundle whose ``network_def`` needs code (``$`` expressions, non-network ``_target_``) loads only with
    ``trust`` (:func:`mtbio.inference.model_io.load_bundle_network`).

    Raises:
        ValueError / FileNotFoundError: a missing or unusable model, naming the path.
    """
    from mtbio.inference.model_io import load_bundle_network, load_named_network

    if network == BUNDLE:
        if model_path is None:
            raise ValueError("choose a MONAI bundle folder (network = bundle)")
        return load_bundle_network(model_path, trust=trust)
    if network == PACKAGE:
        from mtbio.export.bioimageio import load_package

        if model_path is None:
            raise ValueError("choose a bioimage.io package folder or its rdf.yaml (network = bioimageio)")
        return load_package(model_path).network
    if model_path is not None and model_path.is_dir():
        raise ValueError(f"{model_path}: is a folder; choose a checkpoint file for network {network!r}, or 'bundle'")
    return load_named_network(network, spatial_dims, model_path)


def run_job(job: PredictJob, progress: Any, stop: Any) -> tuple[Path, bool]:
    """Load the network and predict into ``job.output``; returns ``(store path, complete)``.

    The run's settings are ``job.settings``: by default (:data:`~mtbio.inference.settings.TOOL_DEFAULTS`) the input
    is z-scored by the rule the weights record, else mtbio's (per section for 2D networks, per volume for 3D ones:
    :func:`mtbio.data.normalize.default_normalization`), and the store holds softmax probabilities as uint8; a
    finished store also gets its ``labels/mask``. With ``settings.resample`` the input is predicted at the voxel
    size the weights were trained at and the prediction resampled back onto the layer's grid when they differ by
    more than ``settings.tolerance`` (:mod:`mtbio.inference.resampled`; the layer's voxel size is its scale, or the
    file's).
    """
    from mtbio.inference import write_mask
    from mtbio.inference.resampled import predict_at_model_voxel_size, weights_settings

    network = load_network(job.network, job.model_path, len(job.roi), trust=job.trust_bundle)
    weights = job.model_path
    if weights is not None and job.network == BUNDLE:
        weights = weights / "models" / "model.pt"
    model_voxel, model_norm = weights_settings(weights)
    result = predict_at_model_voxel_size(
        network,
        job.source,
        job.output,
        model_voxel_size=model_voxel,
        model_normalization=model_norm,
        settings=job.settings,
        resume=job.resume,
        overwrite=not job.resume,
        progress=progress,
        stop=stop,
    )
    complete = result.complete
    if complete:
        write_mask(job.output, threshold=DEFAULT_THRESHOLD)
    return job.output, complete


class PredictWidget(Container):
    """Segment mitochondria in an image layer with a trained network (bundle or checkpoint).

    Attributes (sub-widgets tests and users set): ``image``, ``network``, ``model_path``, ``trust_bundle``, ``roi``,
    ``overlap``, ``batch_size``, ``tta``, ``device``, ``output``, ``resume``, ``resample``, ``run_button``,
    ``cancel_button``, ``progress``, ``status``; ``worker`` is the running (or last) thread worker and ``busy`` is
    true while it runs.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        from mtbio.networks import NETWORKS

        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = layer_picker(napari_viewer, napari.layers.Image, "image")
        self.network = ComboBox(label="network", choices=[BUNDLE, PACKAGE, *NETWORKS], value=BUNDLE)
        self.model_path = FileEdit(label="bundle / package / checkpoint", mode="d")
        self.trust_bundle = CheckBox(
            label="trust bundle",
            value=False,
            tooltip="let the bundle's config run code; only for bundles from a source you trust",
        )
        self.roi = LineEdit(label="ROI (z, y, x or y, x)", value="")
        self.overlap = FloatSpinBox(label="overlap", value=TOOL_DEFAULTS.overlap, min=0.0, max=0.9, step=0.05)
        self.batch_size = SpinBox(label="batch size", value=TOOL_DEFAULTS.batch_size, min=1, max=256)
        self.tta = ComboBox(
            label="TTA",
            choices=[t.value for t in TTA],
            value=TOOL_DEFAULTS.tta.value,
            tooltip="test-time augmentation: average each window's in-plane flips (flips: 4 views, 4x the time) and "
            "90 degree turns (flips_rot90: 8 views, 8x; needs a square ROI)",
        )
        self.planes = ComboBox(
            label="planes",
            choices=[p.value for p in Planes],
            value=TOOL_DEFAULTS.planes.value,
            tooltip="xy: section by section; xyz: ortho-plane consensus of a 2D network (xy, xz and yz images, 3x the "
            "time; isotropic volumes only); auto: xyz on isotropic volumes >= 32 sections deep (layer scale in nm)",
        )
        devices = available_devices()
        self.device = ComboBox(label="device", choices=devices, value=devices[0])
        self.output = FileEdit(label="output store", mode="w", filter="*.zarr")
        self.resume = CheckBox(label="resume", value=False, tooltip="continue a stopped run into the same store")
        self.resample = CheckBox(
            label="resample",
            value=TOOL_DEFAULTS.resample,
            tooltip="predict at the voxel size the model was trained at (layer scale in nm) and resample back",
        )
        self.run_button = PushButton(text="Predict")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.status = Label(label="", value="")
        self.extend(
            [
                self.image,
                self.network,
                self.model_path,
                self.trust_bundle,
                self.roi,
                self.overlap,
                self.batch_size,
                self.tta,
                self.planes,
                self.device,
                self.output,
                self.resume,
                self.resample,
                self.run_button,
                self.cancel_button,
                self.progress,
                self.status,
            ]
        )
        self.worker: Any = None
        self.busy = False
        self._stop_requested = False
        self._job: PredictJob | None = None
        self._relay = ProgressRelay()
        self._relay.progress.connect(self._on_progress)
        self.network.changed.connect(self._on_network)
        self.image.changed.connect(self._on_image)
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self._on_image(self.image.value)

    # --------------------------------------------------------------------------------------------- inputs

    def _on_network(self, value: str) -> None:
        self.model_path.mode = "d" if value in (BUNDLE, PACKAGE) else "r"

    def _on_image(self, layer: napari.layers.Image | None) -> None:
        if layer is None:
            return
        ndim = full_resolution(layer).ndim
        if not self.roi.value:
            self.roi.value = ", ".join(str(v) for v in DEFAULT_ROI[3 if ndim == 3 else 2])

    def job(self) -> PredictJob:
        """The request the current widget values describe.

        Raises:
            ValueError: no image, an RGB / 4D image, a bad ROI or a missing model, with what was given.
        """
        layer = self.image.value
        if layer is None:
            raise ValueError("choose an image layer")
        if layer.rgb:
            raise ValueError(f"layer {layer.name!r} is RGB; EM prediction needs a greyscale image")
        source = full_resolution(layer)
        if source.ndim not in (2, 3):
            raise ValueError(f"layer {layer.name!r} has {source.ndim} dimensions; expected (Y, X) or (Z, Y, X)")
        roi = parse_roi(self.roi.value)
        if len(roi) > source.ndim:
            raise ValueError(f"ROI {roi} has more axes than the {source.ndim}D image {layer.name!r}")
        model = Path(self.model_path.value) if str(self.model_path.value) not in ("", ".") else None
        if self.network.value == BUNDLE and (model is None or not model.is_dir()):
            raise ValueError(f"network 'bundle' needs a MONAI bundle folder, got {str(model or '') or 'nothing'!r}")
        if self.network.value == PACKAGE and model is None:
            raise ValueError("network 'bioimageio' needs a bioimage.io package folder or its rdf.yaml")
        if model is not None and not model.exists():
            raise FileNotFoundError(f"{model}: model does not exist")
        output = self._output_path(layer.name)
        scale = tuple(float(s) for s in layer.scale[-source.ndim :])
        voxel_size = None if all(s == 1.0 for s in scale) else scale
        return PredictJob(
            source=source,
            output=output,
            network=str(self.network.value),
            model_path=model,
            settings=self.settings(roi, voxel_size),
            resume=bool(self.resume.value),
            trust_bundle=bool(self.trust_bundle.value),
        )

    def settings(self, roi: tuple[int, ...], voxel_size: tuple[float, ...] | None) -> InferenceSettings:
        """:data:`~mtbio.inference.settings.TOOL_DEFAULTS` with the widget's values."""
        return InferenceSettings.merged(
            TOOL_DEFAULTS,
            roi_size=roi,
            overlap=float(self.overlap.value),
            batch_size=int(self.batch_size.value),
            device=Device(self.device.value).value,
            voxel_size=voxel_size,
            resample=bool(self.resample.value),
            tta=str(self.tta.value),
            planes=str(self.planes.value),
        )

    def _output_path(self, name: str) -> Path:
        value = str(self.output.value)
        if value not in ("", "."):
            return Path(value)
        folder = Path(tempfile.gettempdir()) / "mtbio-napari"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name.replace(' ', '_')}-{time.strftime('%Y%m%d-%H%M%S')}.zarr"
        self.output.value = path
        return path

    # ------------------------------------------------------------------------------------------------ run

    def start(self) -> Any:
        """Validate the inputs and start the prediction in a thread worker (returned, also ``self.worker``)."""
        from napari.qt.threading import create_worker

        try:
            job = self.job()
        except (ValueError, FileNotFoundError) as err:
            report(self.status, f"error: {err}")
            return None
        self._stop_requested = False
        self.busy = True
        self.progress.value = 0
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        report(self.status, f"predicting {self.image.value.name} -> {job.output}")
        self._job = job
        worker = create_worker(run_job, job, self._relay, self._should_stop, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._on_done)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running prediction to stop after the blocks in flight (the store stays resumable)."""
        self._stop_requested = True
        report(self.status, "stopping after the blocks in flight ...")

    def _should_stop(self) -> bool:
        return self._stop_requested

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = min(done, max(total, 1))

    def _on_done(self, result: tuple[Path, bool]) -> None:
        path, complete = result
        if not Path(path).exists():  # stopped while predicting on the model's grid: nothing on the input grid yet
            report(self.status, "stopped early: tick 'resume' and predict again to finish it")
            return
        layer = self.image.value
        job = self._job
        model = None
        if job is not None and job.model_path is not None:
            model = {"network": job.network, "path": str(job.model_path), "spatial_dims": len(job.roi)}
        for data, kwargs, kind in prediction_layers(path, name=layer.name if layer is not None else None):
            if layer is not None:  # overlay exactly on the input, whatever the store's voxel size says
                kwargs = kwargs | {"scale": tuple(layer.scale), "translate": tuple(layer.translate)}
            if model is not None:  # which model made it (the Compare widget's label-free score)
                kwargs = kwargs | {"metadata": {**kwargs.get("metadata", {}), MODEL_KEY: model}}
            stale = kwargs["name"][: -len(INCOMPLETE_SUFFIX)] if not complete else kwargs["name"] + INCOMPLETE_SUFFIX
            if stale in self.viewer.layers:  # the other state of the same store (a stopped or a resumed run)
                self.viewer.layers.remove(stale)
            add_or_replace(self.viewer, (data, kwargs, kind))
        if complete:
            report(self.status, f"done: {path}")
        else:
            report(self.status, f"stopped early: {path} is incomplete; tick 'resume' and predict again to finish it")

    def _on_error(self, err: BaseException) -> None:
        report_error(self.status, err)

    def _on_finished(self) -> None:
        self.busy = False
        self.run_button.enabled = True
        self.cancel_button.enabled = False
