"""Declarative tables of the synthetic generator: classes, optical bands, spectra, backscatter, statistics."""

from __future__ import annotations

import numpy as np

from stars_edge.modalities import ModalitySpec

#: Default land-cover classes of the synthetic benchmark (label value = position).
CLASS_NAMES: tuple[str, ...] = (
    "background",
    "low_vegetation",
    "tree",
    "water",
    "road",
    "building",
    "car",
)
BACKGROUND, LOW_VEGETATION, TREE, WATER, ROAD, BUILDING, CAR = range(7)

#: Optical bands the generator can render, in the order they are taken (``optical_bands=n`` -> first n).
OPTICAL_BAND_CATALOGUE: tuple[str, ...] = (
    "blue",
    "green",
    "red",
    "nir",
    "red_edge",
    "swir1",
    "swir2",
    "coastal",
)

# Surface reflectance per class for every catalogue band (blue, green, red, nir, red_edge, swir1, swir2,
# coastal). Building and car rows are replaced per object by the roof / paint tables below.
SPECTRA = np.array(
    [
        [0.100, 0.130, 0.170, 0.240, 0.210, 0.320, 0.270, 0.090],  # background: bare soil
        [0.045, 0.085, 0.055, 0.360, 0.160, 0.220, 0.120, 0.045],  # low vegetation
        [0.035, 0.070, 0.045, 0.330, 0.130, 0.170, 0.085, 0.035],  # tree: like grass, taller
        [0.070, 0.070, 0.045, 0.020, 0.030, 0.010, 0.005, 0.080],  # water
        [0.090, 0.100, 0.110, 0.130, 0.120, 0.160, 0.150, 0.090],  # road: asphalt
        [0.180, 0.190, 0.200, 0.220, 0.210, 0.250, 0.230, 0.170],  # building: concrete (default roof)
        [0.300, 0.300, 0.300, 0.300, 0.300, 0.300, 0.300, 0.300],  # car: white (default paint)
    ],
    dtype=np.float32,
)
ROOFS = np.array(
    [
        [0.180, 0.190, 0.200, 0.220, 0.210, 0.250, 0.230, 0.170],  # concrete
        [0.080, 0.100, 0.190, 0.260, 0.230, 0.300, 0.250, 0.080],  # red tiles: close to bare soil
        [0.075, 0.085, 0.095, 0.120, 0.110, 0.150, 0.140, 0.075],  # dark bitumen: close to asphalt
    ],
    dtype=np.float32,
)
PAINTS = np.array(
    [
        [0.350, 0.350, 0.350, 0.360, 0.350, 0.300, 0.280, 0.340],  # white
        [0.040, 0.040, 0.040, 0.050, 0.045, 0.050, 0.050, 0.040],  # black
        [0.060, 0.060, 0.250, 0.280, 0.270, 0.250, 0.200, 0.060],  # red
        [0.160, 0.090, 0.060, 0.220, 0.150, 0.150, 0.120, 0.150],  # blue
        [0.150, 0.150, 0.160, 0.180, 0.170, 0.170, 0.160, 0.150],  # grey
    ],
    dtype=np.float32,
)
TEXTURE_AMPLITUDE = np.array([0.18, 0.14, 0.22, 0.05, 0.07, 0.05, 0.02], dtype=np.float32)
# Mean backscatter in dB (VV, VH) per class before slope effects, double bounce and speckle.
BACKSCATTER_DB = np.array(
    [
        [-13.0, -21.0],
        [-11.5, -18.5],
        [-9.5, -16.0],
        [-25.0, -32.0],
        [-17.0, -25.0],
        [-4.0, -10.0],
        [-3.0, -12.0],
    ],
    dtype=np.float32,
)
BACKSCATTER_TEXTURE_DB = np.array([1.2, 1.5, 1.5, 0.5, 0.8, 2.0, 1.0], dtype=np.float32)
CLOUD_REFLECTANCE = 0.55
SAR_FLOOR_DB = -35.0
SAR_INCIDENCE_DEG = 35.0


# Per-band mean / std of the default generator, measured with `stars-edge data stats` on the train split of
# `stars-edge data synth --scenes 20 --size 384 --seed 0` (docs/DATA.md); rounded. Re-measure if the
# generator's physics change.
MEASURED_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "optical": ((0.067, 0.090, 0.098, 0.209), (0.040, 0.044, 0.065, 0.116)),
    "sar": ((-14.2, -20.9), (6.6, 5.9)),
    "dsm": ((4.1,), (7.4,)),
}


def synthetic_specs(optical_bands: int = 4) -> dict[str, ModalitySpec]:
    """Band layout and normalisation of synthetic scenes (shared by every scene, so models stay comparable).

    Blue, green, red, NIR, SAR and DSM use statistics measured on the default benchmark; further optical
    bands (red edge, SWIR, coastal) get mean/std from the class spectra weighted by typical class fractions.
    """
    weights = np.array([0.41, 0.21, 0.13, 0.07, 0.09, 0.08, 0.01], dtype=np.float64)
    spectra = SPECTRA.astype(np.float64)
    mean = weights @ spectra
    std = np.sqrt(weights @ (spectra - mean) ** 2 + (0.2 * mean) ** 2)
    measured_mean, measured_std = MEASURED_STATS["optical"]
    means = [measured_mean[i] if i < len(measured_mean) else float(mean[i]) for i in range(optical_bands)]
    stds = [measured_std[i] if i < len(measured_std) else float(std[i]) for i in range(optical_bands)]
    optical = ModalitySpec(
        "optical", OPTICAL_BAND_CATALOGUE[:optical_bands], tuple(means), tuple(stds), units="reflectance"
    )
    sar = ModalitySpec("sar", ("vv", "vh"), *MEASURED_STATS["sar"], units="dB")
    dsm = ModalitySpec("dsm", ("height",), *MEASURED_STATS["dsm"], units="m")
    return {"optical": optical, "sar": sar, "dsm": dsm}
