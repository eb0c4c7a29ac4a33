"""``Recipe``: the training settings of a run besides the UDA step, with the values the real-data benchmark validated.

The defaults are those of ``benchmarks/uda_em2d.py`` (VNC III -> Lucchi++, docs/uda.md "source-pretrained start"):
MONAI's residual ``unet``, 800 source-only iterations first, then 3200 iterations of the strategy, 192 px crops,
batch 4, AdamW lr 1e-3. 3200 was chosen on the design split (EPFL volumes swapped, docs/uda.md "Quality levers"):
the MaskTwins teacher's mAP rose from 78.9 at 800 to 85.4 at 3200 iterations, and one adapted model takes about
29 minutes on an idle 2-core CPU (training and prediction), inside issue #16's 30-minute budget. Every entry point
(``mtbio train``, the bundle workflow, the benchmarks) takes its defaults from here; ``mtbio demo`` uses
:data:`DEMO_RECIPE` (synthetic data, minutes on a laptop CPU).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

from mtbio.inference.settings import Planes, as_planes

__all__ = ["DEMO_RECIPE", "PRETRAIN_SEED_OFFSET", "Recipe"]

#: the pre-training's crop / weight seed is ``seed + PRETRAIN_SEED_OFFSET`` (its own crop sequence)
PRETRAIN_SEED_OFFSET = 10_000


@dataclass
class Recipe:
    """How a network is trained (everything but the UDA step's :class:`~mtbio.uda.config.UDAConfig`).

    Attributes:
        network: mtbio.networks name (unet: MONAI UNet, 5 levels, 2 residual units; small_unet; basic_unet).
        network_kwargs: keyword arguments of the network's constructor (e.g. {"norm": "instance"}).
        iterations: training iterations of the strategy (after the pre-training).
        pretrain_iterations: source-only iterations first; the strategy starts from their EMA weights (student and
            teacher). 0 = start from a random initialisation (real data, docs/uda.md: at 800 iterations one seed
            collapsed to background; at 1600 none of 5, same mean IoU as 800 + 800, 6x the seed spread; at 4000 none
            of 5, within noise of 800 + 3200 (60.5 +- 1.3 vs 58.7 +- 3.1 IoU) at ~15 % more time per model).
        crop_size: crop size in voxels: one int = a square 2D crop, H,W (2D sections) or D,H,W (3D patches).
        batch_size: crops per iteration and domain (the global batch of a multi-process run).
        lr: AdamW learning rate (weight decay 1e-4).
        seed: seed of the initial weights, crops, masks and augmentation.
        checkpoint_interval: write a resumable checkpoint every N iterations; None = iterations // 10.
        log_interval: log the losses (console, TensorBoard) every N iterations.
        score_crops: crops of the fixed target sample on which every checkpoint's EMA teacher gets its label-free
            score and collapse check (mtbio.uda.guard: OUT/scores.jsonl, OUT/selected.pt); 0 = no scoring, no
            collapse guard. Needs a target image.
        score_crop_size: in-plane size of the score crops of a 2D network (a multiple of 32 for unet); a 3D
            network is scored on crops of its training crop size (D, H, W). Crops are clipped to the target.
        context_sections: 2.5D input of a 2D network: k adjacent sections on each side as further input channels
            (1 + 2k; the ends of a volume replicated); recorded in the weights, which every prediction reads it
            from. 0 = the section alone. 2D crops only.
        source_zoom: scale augmentation of the source crops (pre-training and strategy), 2D crops only: each shows
            its section zoomed in-plane by a factor log-uniform in ``[1 / source_zoom, source_zoom]``
            (:class:`~mtbio.data.sampling.CropSampler` ``zoom``), for a target whose voxel size is unknown and whose
            objects may look smaller or larger than the source's. 1 (default) = off: the validated recipe has a known
            voxel size; docs/uda.md "Robustness to object scale" has the measurement.
        target_planes: the planes the target crops of adaptation are drawn from, 2D crops only: xy (sections); xyz
            (xy, xz and yz planes alike: the images ortho-plane inference predicts, for an isotropic target); auto
            (xyz on a target whose voxel size is known and isotropic and that is at least 32 sections deep, as
            inference's planes auto). Source crops stay xy sections. xy (default): docs/uda.md "Target crops along
            three planes" has the measurement.
    """

    network: str = "unet"
    network_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"cli": False})
    iterations: int = 3200
    pretrain_iterations: int = 800
    crop_size: int | tuple[int, ...] = 192
    batch_size: int = 4
    lr: float = 1e-3
    seed: int = 0
    checkpoint_interval: int | None = None
    log_interval: int = 50
    score_crops: int = 16
    score_crop_size: int = 256
    context_sections: int = 0
    source_zoom: float = 1.0
    target_planes: Planes = Planes.XY

    #: earlier flag spellings kept working (field -> extra option strings)
    CLI_ALIASES: ClassVar[dict[str, tuple[str, ...]]] = {
        "iterations": ("--iters",),
        "pretrain_iterations": ("--pretrain",),
        "crop_size": ("--crop",),
        "batch_size": ("--batch",),
        "checkpoint_interval": ("--save-every",),
        "log_interval": ("--log-every",),
    }

    def __post_init__(self) -> None:
        if isinstance(self.crop_size, list):
            self.crop_size = tuple(self.crop_size)
        crop = self.crop
        if len(crop) not in (2, 3) or any(int(c) < 1 for c in crop):
            raise ValueError(f"crop_size must be one int, (H, W) or (D, H, W) of positive ints, got {self.crop_size}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.pretrain_iterations < 0:
            raise ValueError(f"pretrain_iterations must be >= 0, got {self.pretrain_iterations}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.checkpoint_interval is not None and self.checkpoint_interval < 1:
            raise ValueError(f"checkpoint_interval must be >= 1 or None, got {self.checkpoint_interval}")
        if self.log_interval < 1:
            raise ValueError(f"log_interval must be >= 1, got {self.log_interval}")
        if self.score_crops < 0:
            raise ValueError(f"score_crops must be >= 0 (0 = no scoring), got {self.score_crops}")
        if self.score_crop_size < 1:
            raise ValueError(f"score_crop_size must be >= 1, got {self.score_crop_size}")
        if isinstance(self.context_sections, bool) or not isinstance(self.context_sections, int):
            raise ValueError(f"context_sections must be an int >= 0, got {self.context_sections!r}")
        if self.context_sections < 0:
            raise ValueError(f"context_sections must be >= 0 (0 = the section alone), got {self.context_sections}")
        if not (math.isfinite(float(self.source_zoom)) and float(self.source_zoom) >= 1.0):
            raise ValueError(f"source_zoom must be a number >= 1 (1 = no scale augmentation), got {self.source_zoom}")
        if float(self.source_zoom) > 1.0 and len(crop) != 2:
            raise ValueError(f"source_zoom (in-plane scale augmentation) needs a 2D crop, got {self.crop_size}")
        self.target_planes = as_planes(self.target_planes)
        if self.target_planes is Planes.XYZ and (len(crop) != 2 or self.context_sections):
            raise ValueError(
                f"target_planes 'xyz' (target crops of xy, xz and yz planes) needs a 2D crop and no adjacent sections, "
                f"got the crop {tuple(crop)} and context_sections {self.context_sections}"
            )
        if self.context_sections and len(crop) != 2:
            raise ValueError(
                f"context_sections {self.context_sections} (adjacent sections as input channels) is for 2D networks; "
                f"the crop {tuple(crop)} is 3D"
            )
        self.network_kwargs = dict(self.network_kwargs or {})

    @property
    def crop(self) -> tuple[int, ...]:
        """The crop as one int per network axis: ``(H, W)`` or ``(D, H, W)``."""
        if isinstance(self.crop_size, int):
            return (int(self.crop_size),) * 2
        return tuple(int(c) for c in self.crop_size)

    @property
    def spatial_dims(self) -> int:
        return len(self.crop)

    def interval_for(self, iterations: int) -> int:
        """The checkpoint interval of a run of ``iterations`` (``checkpoint_interval`` or ``iterations // 10``)."""
        return int(self.checkpoint_interval or max(1, iterations // 10))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (the crop as a list, the planes as their name)."""
        d = asdict(self)
        d["crop_size"] = list(self.crop)
        d["target_planes"] = self.target_planes.value
        return d

    def replace(self, **changes: Any) -> Recipe:
        return replace(self, **changes)


#: ``mtbio demo``'s recipe: the synthetic domains are small and easy, so a small network trained from scratch for
#: 1000 iterations on 128 px crops adapts in minutes on a CPU (docs/uda.md "ramp-up"); the validated real-data
#: recipe (:class:`Recipe`'s defaults) takes about an hour per strategy there.
DEMO_RECIPE = Recipe(network="small_unet", iterations=1000, pretrain_iterations=0, crop_size=128)
