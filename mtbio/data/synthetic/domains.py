"""Domain styles: how one EM source images the same kind of tissue.

A :class:`DomainStyle` bundles everything that differs between two EM sources while the biology stays the
same: the voxel size (in-plane pixel size and section thickness), the stain (how dark each structure is),
the point-spread function, the tone curve and the noise. The tissue statistics (organelle sizes and
densities) are fields as well, so a style can also model a different tissue, but the presets share them.

Presets:

* :data:`SOURCE`: serial-section TEM like Drosophila VNC III: thick 40 nm sections integrated over their
  thickness at 8 nm pixels (5x anisotropic), strong membranes, light Gaussian noise and a
  per-section brightness / contrast jitter.
* :data:`TARGET`: FIB-SEM like EPFL hippocampus (Lucchi): isotropic 10 nm voxels (organelles 1.25x smaller in
  pixels than in the source), a gamma-compressed tone curve (dark tones lifted), more blur, wider and darker
  cell membranes but a fainter mitochondrial envelope and cristae, dense bodies as dark as mitochondria, a
  coarser grainy cytoplasm, shot noise and vertical curtaining.
* :data:`TARGET_HARD`: :data:`TARGET` with more blur, more noise and an inverted-ish (partly negative)
  tone curve, for stress tests.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["DomainStyle", "SOURCE", "TARGET", "TARGET_HARD", "PRESETS"]


def _check_range(name: str, pair: tuple[float, float], low: float = 0.0, high: float = math.inf) -> None:
    if len(pair) != 2 or not (low <= pair[0] <= pair[1] <= high):
        raise ValueError(f"{name} must be a (min, max) pair with {low} <= min <= max <= {high}, got {pair}")


@dataclass(frozen=True)
class DomainStyle:
    """The imaging style of one EM domain (all lengths in nanometres).

    Geometry is generated in physical units and sampled at :attr:`voxel_size_nm`, so one generator makes
    every domain. Intensities are built as an electron *density* in [0, 1] (0 = empty resin, 1 = heavy
    stain), integrated over the section thickness, blurred, tone-mapped to brightness (dense = dark, as in
    TEM and in inverted FIB-SEM), made noisy and quantised to uint8.

    Attributes:
        name: a short label for reports.
        voxel_size_nm: (z, y, x) voxel size; z is the section thickness.
        section_samples: sub-slices per section integrated into one image (thick-section projection of
            ssTEM); 1 for FIB-SEM, where a slice is as thin as the pixel.
        psf_sigma_nm: (z, y, x) Gaussian point-spread function sigma applied after integration.
        cytoplasm_density: base stain of cytoplasm.
        membrane_density: extra stain on cell membranes (a Voronoi tessellation's boundaries).
        membrane_width_nm: Gaussian sigma of a cell membrane's profile.
        mito_matrix_density: stain of the mitochondrial matrix (inside the inner membrane).
        mito_membrane_density: stain of the double (outer + inner) envelope.
        cristae_contrast: amplitude of the cristae stripes inside mitochondria (lighter lumens).
        vesicle_rim_density: stain of vesicle membranes (small round distractors with a light lumen).
        dense_body_density: stain of dense round bodies (lysosome-like distractors without cristae).
        synapse_density: stain of synapse-like densities on cell membranes.
        texture_amplitude: amplitude of the smooth cytoplasm texture (density units).
        texture_scale_nm: spatial scale (Gaussian sigma) of that texture.
        speck_density: stain of ribosome-like specks (fine dark grain), 0 for none.
        brightness: brightness of empty resin after tone mapping, in [0, 1].
        contrast: gain from density to darkness.
        gamma: gamma applied to the brightness (< 1 lifts dark tones, > 1 deepens them).
        invert_mix: 0 = normal TEM-like tones, 1 = fully inverted (dense = bright); in between = washed out.
        gaussian_noise: standard deviation of additive Gaussian noise (fraction of full scale).
        photons: expected photon count at full brightness for Poisson shot noise; 0 disables it.
        section_jitter: std of the per-section brightness / contrast factors (ssTEM section variation).
        curtain_amplitude: amplitude of vertical stripes constant along y (FIB-SEM curtaining).
        mito_fraction: (min, max) foreground volume fraction of mitochondria.
        mito_radius_nm: (min, max) radius of mitochondrial tubes.
        mito_length_nm: (min, max) centre-line length of a mitochondrial tube.
        branch_probability: chance that a tube grows a side branch.
        ellipsoid_probability: chance that a mitochondrion is an ellipsoid instead of a tube.
        cristae_period_nm: (min, max) spacing of the cristae stripes.
        cell_size_nm: mean in-plane spacing of the cell (Voronoi) seeds.
        cell_elongation: cells are this many times longer along z than across (neurites cross sections).
        vesicle_per_um3: small vesicles (radius 18-30 nm) per cubic micrometre, in clusters.
        large_vesicle_per_um3: larger vesicles (radius 40-110 nm, light lumen) per cubic micrometre.
        dense_body_per_um3: dense round bodies (radius 60-170 nm) per cubic micrometre.
        synapse_per_um3: synapse-like membrane densities per cubic micrometre.
    """

    name: str
    voxel_size_nm: tuple[float, float, float]
    section_samples: int = 1
    psf_sigma_nm: tuple[float, float, float] = (0.0, 6.0, 6.0)
    # stain
    cytoplasm_density: float = 0.22
    membrane_density: float = 0.55
    membrane_width_nm: float = 5.0
    mito_matrix_density: float = 0.5
    mito_membrane_density: float = 0.75
    cristae_contrast: float = 0.2
    vesicle_rim_density: float = 0.55
    dense_body_density: float = 0.55
    synapse_density: float = 0.7
    texture_amplitude: float = 0.05
    texture_scale_nm: float = 25.0
    speck_density: float = 0.15
    # tone curve
    brightness: float = 0.85
    contrast: float = 0.9
    gamma: float = 1.0
    invert_mix: float = 0.0
    # noise
    gaussian_noise: float = 0.03
    photons: float = 0.0
    section_jitter: float = 0.0
    curtain_amplitude: float = 0.0
    # tissue
    mito_fraction: tuple[float, float] = (0.05, 0.10)
    mito_radius_nm: tuple[float, float] = (90.0, 190.0)
    mito_length_nm: tuple[float, float] = (500.0, 2200.0)
    branch_probability: float = 0.3
    ellipsoid_probability: float = 0.3
    cristae_period_nm: tuple[float, float] = (45.0, 70.0)
    cell_size_nm: float = 700.0
    cell_elongation: float = 3.0
    vesicle_per_um3: float = 60.0
    large_vesicle_per_um3: float = 6.0
    dense_body_per_um3: float = 3.0
    synapse_per_um3: float = 1.5

    def __post_init__(self) -> None:
        vs = tuple(float(v) for v in self.voxel_size_nm)
        if len(vs) != 3 or min(vs) <= 0:
            raise ValueError(f"voxel_size_nm must be three positive (z, y, x) sizes in nm, got {self.voxel_size_nm}")
        object.__setattr__(self, "voxel_size_nm", vs)
        psf = tuple(float(v) for v in self.psf_sigma_nm)
        if len(psf) != 3 or min(psf) < 0:
            raise ValueError(f"psf_sigma_nm must be three non-negative (z, y, x) sigmas, got {self.psf_sigma_nm}")
        object.__setattr__(self, "psf_sigma_nm", psf)
        if not isinstance(self.section_samples, int) or not 1 <= self.section_samples <= 8:
            raise ValueError(f"section_samples must be an int in 1..8, got {self.section_samples!r}")
        for name in (
            "cytoplasm_density",
            "membrane_density",
            "mito_matrix_density",
            "mito_membrane_density",
            "cristae_contrast",
            "vesicle_rim_density",
            "dense_body_density",
            "synapse_density",
            "texture_amplitude",
            "speck_density",
            "brightness",
            "invert_mix",
            "branch_probability",
            "ellipsoid_probability",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        for name in ("membrane_width_nm", "texture_scale_nm", "cell_size_nm", "contrast", "gamma"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.cell_elongation < 1:
            raise ValueError(f"cell_elongation must be >= 1, got {self.cell_elongation}")
        for name in (
            "gaussian_noise",
            "photons",
            "section_jitter",
            "curtain_amplitude",
            "vesicle_per_um3",
            "large_vesicle_per_um3",
            "dense_body_per_um3",
            "synapse_per_um3",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        _check_range("mito_fraction", self.mito_fraction, 0.0, 0.5)
        _check_range("mito_radius_nm", self.mito_radius_nm, 1.0)
        _check_range("mito_length_nm", self.mito_length_nm, 1.0)
        _check_range("cristae_period_nm", self.cristae_period_nm, 1.0)
        for name in ("mito_fraction", "mito_radius_nm", "mito_length_nm", "cristae_period_nm"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))

    @property
    def anisotropy(self) -> float:
        """Section thickness over the in-plane pixel size."""
        return self.voxel_size_nm[0] / self.voxel_size_nm[2]

    def replace(self, **changes: object) -> DomainStyle:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        """The fields as plain JSON-ready values."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> DomainStyle:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown DomainStyle fields {unknown}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)  # type: ignore[arg-type]


#: serial-section TEM (VNC III-like): 40 nm sections, 8 nm pixels (5x anisotropic), crisp membranes
SOURCE = DomainStyle(
    name="source-ssTEM",
    voxel_size_nm=(40.0, 8.0, 8.0),
    section_samples=3,
    psf_sigma_nm=(0.0, 5.0, 5.0),
    cytoplasm_density=0.2,
    membrane_density=0.6,
    membrane_width_nm=5.0,
    mito_matrix_density=0.55,
    mito_membrane_density=0.8,
    cristae_contrast=0.22,
    vesicle_rim_density=0.6,
    dense_body_density=0.45,
    synapse_density=0.75,
    texture_amplitude=0.04,
    texture_scale_nm=20.0,
    speck_density=0.1,
    brightness=0.88,
    contrast=0.95,
    gamma=1.0,
    gaussian_noise=0.035,
    section_jitter=0.05,
)

#: FIB-SEM (Lucchi-like): isotropic 10 nm voxels, lifted dark tones, dark wide membranes, faint envelopes, grain
TARGET = DomainStyle(
    name="target-FIBSEM",
    voxel_size_nm=(10.0, 10.0, 10.0),
    section_samples=1,
    psf_sigma_nm=(7.0, 8.0, 8.0),
    cytoplasm_density=0.28,
    membrane_density=0.7,
    membrane_width_nm=9.0,
    mito_matrix_density=0.55,
    mito_membrane_density=0.5,
    cristae_contrast=0.12,
    vesicle_rim_density=0.5,
    dense_body_density=0.65,
    synapse_density=0.6,
    texture_amplitude=0.08,
    texture_scale_nm=40.0,
    speck_density=0.2,
    brightness=0.85,
    contrast=1.0,
    gamma=0.8,
    invert_mix=0.1,
    gaussian_noise=0.02,
    photons=600.0,
    curtain_amplitude=0.02,
)

#: a harder target: more blur and noise, a half-inverted tone curve
TARGET_HARD = TARGET.replace(
    name="target-hard",
    psf_sigma_nm=(12.0, 14.0, 14.0),
    gaussian_noise=0.06,
    photons=120.0,
    invert_mix=0.3,
    curtain_amplitude=0.06,
)

PRESETS: dict[str, DomainStyle] = {"source": SOURCE, "target": TARGET, "target_hard": TARGET_HARD}
