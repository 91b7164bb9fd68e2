"""Imaging models of the phantom benchmark: tissue map -> CT-like or MR-like image.

Each domain has a frozen dataclass of contrast parameters with defaults (:class:`CTContrast`,
:class:`MRContrast`). The tissue contrast relations differ between them, which is what makes
adaptation necessary, while the anatomy comes from one distribution:

======================  ====================  ==========================
tissue                  CT (HU)               MR, bSSFP-like (a.u.)
======================  ====================  ==========================
contrast-enhanced blood bright (+300)         bright (900)
myocardium              +100 (above muscle)   dark (180, below muscle)
soft tissue / muscle    +50                   280
fat                     -100 (dark)           bright (780)
lung / air              -820 / -1000          40 / 0
bone                    +700 (brightest)      dark (90)
======================  ====================  ==========================

:func:`render_image` draws per-subject intensity jitter, blurs the piecewise-constant image
(partial volume), multiplies by a smooth bias field (MR) and adds Gaussian (CT) or Rician (MR)
noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
from scipy import ndimage

from tcsa_uda.data.phantom_anatomy import Tissue, smooth_random_field
from tcsa_uda.errors import ConfigError

NoiseModel = Literal["gaussian", "rician"]
NOISE_MODELS: tuple[str, ...] = ("gaussian", "rician")


@dataclass(frozen=True)
class TissueIntensities:
    """Mean intensity of every :class:`~tcsa_uda.data.phantom_anatomy.Tissue` in one domain."""

    air: float
    soft_tissue: float
    fat: float
    lung: float
    bone: float
    liver: float
    myocardium: float
    blood: float
    right_blood: float

    def lookup(self) -> np.ndarray:
        """Intensities indexed by tissue value, shape ``(len(Tissue),)``."""
        table = np.zeros(len(Tissue), dtype=np.float64)
        for t in Tissue:
            table[t] = getattr(self, t.name.lower())
        return table


@dataclass(frozen=True)
class ContrastModel:
    """Contrast, noise, bias and blur of one imaging domain.

    Attributes:
        intensities: mean intensity per tissue.
        tissue_jitter: std of a per-subject additive shift of each tissue mean (except air).
        blood_jitter: std of a per-subject additive shift of the blood means (contrast
            enhancement or inflow varies between subjects).
        gain_jitter: std of a per-subject multiplicative gain (scanner scaling), relative.
        noise: ``"gaussian"`` (additive) or ``"rician"`` (magnitude of complex Gaussian noise).
        noise_std: std of the noise (of each complex channel for Rician noise).
        bias_std: std of the log of the multiplicative bias field; 0 disables it.
        bias_spacing_mm: control-point spacing of the bias field (larger is smoother).
        blur_sigma_vox: Gaussian blur std along the array axes (X, Y, Z), in voxels.
    """

    intensities: TissueIntensities
    tissue_jitter: float = 0.0
    blood_jitter: float = 0.0
    gain_jitter: float = 0.0
    noise: NoiseModel = "gaussian"
    noise_std: float = 0.0
    bias_std: float = 0.0
    bias_spacing_mm: float = 150.0
    blur_sigma_vox: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.noise not in NOISE_MODELS:
            raise ConfigError(f"contrast.noise: expected one of {list(NOISE_MODELS)}, found {self.noise!r}")
        for name in ("tissue_jitter", "blood_jitter", "gain_jitter", "noise_std", "bias_std"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"contrast.{name}: expected a finite number >= 0, found {value!r}")
        if not self.bias_spacing_mm > 0:
            raise ConfigError(f"contrast.bias_spacing_mm: expected a number > 0, found {self.bias_spacing_mm!r}")
        if len(self.blur_sigma_vox) != 3 or any(not s >= 0 for s in self.blur_sigma_vox):
            raise ConfigError(
                f"contrast.blur_sigma_vox: expected three numbers >= 0 (X, Y, Z), found {self.blur_sigma_vox!r}"
            )


@dataclass(frozen=True)
class CTContrast(ContrastModel):
    """Contrast-enhanced CT: Hounsfield-like units, Gaussian noise, mild blur, no bias field."""

    intensities: TissueIntensities = field(
        default_factory=lambda: TissueIntensities(
            air=-1000.0,
            soft_tissue=50.0,
            fat=-100.0,
            lung=-820.0,
            bone=700.0,
            liver=65.0,
            myocardium=100.0,
            blood=300.0,
            right_blood=220.0,
        )
    )
    tissue_jitter: float = 10.0
    blood_jitter: float = 40.0
    gain_jitter: float = 0.0
    noise: NoiseModel = "gaussian"
    noise_std: float = 25.0
    bias_std: float = 0.0
    blur_sigma_vox: tuple[float, float, float] = (0.6, 0.6, 0.6)


@dataclass(frozen=True)
class MRContrast(ContrastModel):
    """Balanced SSFP cardiac MR: bright blood and fat, dark myocardium, lung and bone.

    Arbitrary units (blood about 900); smooth multiplicative coil bias field; Rician noise.
    """

    intensities: TissueIntensities = field(
        default_factory=lambda: TissueIntensities(
            air=0.0,
            soft_tissue=280.0,
            fat=780.0,
            lung=40.0,
            bone=90.0,
            liver=240.0,
            myocardium=180.0,
            blood=900.0,
            right_blood=880.0,
        )
    )
    tissue_jitter: float = 15.0
    blood_jitter: float = 40.0
    gain_jitter: float = 0.1
    noise: NoiseModel = "rician"
    noise_std: float = 25.0
    bias_std: float = 0.2
    bias_spacing_mm: float = 150.0
    blur_sigma_vox: tuple[float, float, float] = (0.5, 0.5, 0.5)


def sample_intensities(contrast: ContrastModel, rng: np.random.Generator) -> np.ndarray:
    """Per-subject tissue means (lookup table indexed by tissue), with jitter and gain applied."""
    table = contrast.intensities.lookup()
    jitter = rng.standard_normal(len(Tissue))
    blood = rng.standard_normal()  # one enhancement level shared by all blood pools
    gain = 1.0 + contrast.gain_jitter * rng.standard_normal()
    for t in Tissue:
        if t == Tissue.AIR:
            continue
        if t in (Tissue.BLOOD, Tissue.RIGHT_BLOOD):
            table[t] += contrast.blood_jitter * blood
        else:
            table[t] += contrast.tissue_jitter * jitter[t]
    # Gain scales the signal above air, so air stays at its value (0 for MR).
    air = table[Tissue.AIR]
    return air + gain * (table - air)


def render_image(
    tissue: np.ndarray, contrast: ContrastModel, rng: np.random.Generator, points: np.ndarray
) -> np.ndarray:
    """Simulate one acquisition of a tissue map.

    Args:
        tissue: :class:`Tissue` values, shape ``(X, Y, Z)``.
        contrast: the domain's contrast model.
        rng: per-case appearance stream (jitter, bias field and noise are drawn from it in order).
        points: world coordinates of the voxels (mm), shape ``(3, X, Y, Z)``; the bias field is
            defined in world space.

    Returns:
        The image, ``float32`` of shape ``(X, Y, Z)``.
    """
    image = sample_intensities(contrast, rng)[tissue]
    if any(s > 0 for s in contrast.blur_sigma_vox):
        image = ndimage.gaussian_filter(image, sigma=contrast.blur_sigma_vox, mode="nearest")
    if contrast.bias_std > 0:
        image = image * np.exp(contrast.bias_std * smooth_random_field(rng, 1, contrast.bias_spacing_mm, points)[0])
    if contrast.noise_std > 0:
        if contrast.noise == "rician":
            real = image + contrast.noise_std * rng.standard_normal(image.shape)
            imag = contrast.noise_std * rng.standard_normal(image.shape)
            image = np.sqrt(real**2 + imag**2)
        else:
            image = image + contrast.noise_std * rng.standard_normal(image.shape)
    return image.astype(np.float32)


def contrast_to_dict(contrast: ContrastModel) -> dict[str, object]:
    """A JSON-serialisable record of ``contrast`` (class name and every field)."""
    out: dict[str, object] = {"model": type(contrast).__name__}
    for f in fields(contrast):
        value = getattr(contrast, f.name)
        if isinstance(value, TissueIntensities):
            value = {g.name: getattr(value, g.name) for g in fields(value)}
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out
