"""Physically plausible synthetic optical / SAR / DSM scenes with a land-cover label (numpy/scipy only).

Why it exists: the demo, most tests and the accuracy benchmark need multimodal data with known ground truth,
realistic shapes and a class imbalance, without downloading anything. Every scene is built from structured
random fields and objects (terrain, lakes and a river, a rotated street grid with building lots, main roads,
forests and single trees, parked and moving cars), then rendered per sensor:

- optical: class spectra x within-class texture x illumination (hillshade + cast shadows from the DSM),
  sensor noise, optional clouds (a cloud mask is produced) and cloud shadows;
- SAR: class backscatter (VV, VH) with terrain slope effects, double bounce at building walls facing the
  sensor, radar shadow, multiplicative gamma speckle, converted to dB; optional missing swath;
- DSM: terrain + object heights (buildings with flat or pitched roofs, tree crowns, cars), optional voids.

Each modality is informative but ambiguous in its own way: optical confuses dark roofs with asphalt and red
roofs with bare soil, SAR confuses vegetation types and bare soil with low vegetation, the DSM cannot tell
roads from bare soil. ``docs/DATA.md`` measures this with a per-pixel classifier.

This module never imports torch, so the runtime and the benchmarks can use it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
from affine import Affine
from tqdm import tqdm

from stars_edge.data.geotiff import LABEL_NODATA, NODATA, BlockWriter, write_geotiff
from stars_edge.errors import ConfigError
from stars_edge.io import ensure_writable_dir, write_json_atomic
from stars_edge.modalities import IGNORE_INDEX, MODALITIES, ModalitySpec

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
_SPECTRA = np.array(
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
_ROOFS = np.array(
    [
        [0.180, 0.190, 0.200, 0.220, 0.210, 0.250, 0.230, 0.170],  # concrete
        [0.080, 0.100, 0.190, 0.260, 0.230, 0.300, 0.250, 0.080],  # red tiles: close to bare soil
        [0.075, 0.085, 0.095, 0.120, 0.110, 0.150, 0.140, 0.075],  # dark bitumen: close to asphalt
    ],
    dtype=np.float32,
)
_PAINTS = np.array(
    [
        [0.350, 0.350, 0.350, 0.360, 0.350, 0.300, 0.280, 0.340],  # white
        [0.040, 0.040, 0.040, 0.050, 0.045, 0.050, 0.050, 0.040],  # black
        [0.060, 0.060, 0.250, 0.280, 0.270, 0.250, 0.200, 0.060],  # red
        [0.160, 0.090, 0.060, 0.220, 0.150, 0.150, 0.120, 0.150],  # blue
        [0.150, 0.150, 0.160, 0.180, 0.170, 0.170, 0.160, 0.150],  # grey
    ],
    dtype=np.float32,
)
_TEXTURE_AMPLITUDE = np.array([0.18, 0.14, 0.22, 0.05, 0.07, 0.05, 0.02], dtype=np.float32)
# Mean backscatter in dB (VV, VH) per class before slope effects, double bounce and speckle.
_BACKSCATTER_DB = np.array(
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
_BACKSCATTER_TEXTURE_DB = np.array([1.2, 1.5, 1.5, 0.5, 0.8, 2.0, 1.0], dtype=np.float32)
_CLOUD_REFLECTANCE = 0.55
_SAR_FLOOR_DB = -35.0
_SAR_INCIDENCE_DEG = 35.0


@dataclass
class SyntheticConfig:
    """Everything that shapes one synthetic scene; the same config (and seed) always gives the same scene.

    Fractions are targets for the whole scene; objects (buildings, cars, trees) come from densities.
    ``cloud_region`` limits clouds to a box given as fractions ``(row0, col0, row1, col1)`` of the scene.
    ``sar_gap`` is the fraction of the width lost as a (slightly slanted) missing SAR swath.
    """

    size: int = 512
    seed: int = 0
    optical_bands: int = 4
    pixel_size: float = 1.0
    crs: str = "EPSG:32631"
    origin: tuple[float, float] = (500000.0, 5000000.0)
    modalities: tuple[str, ...] = MODALITIES
    # land cover
    water_fraction: float = 0.07
    river_probability: float = 0.6
    vegetation_fraction: float = 0.35
    forest_fraction: float = 0.12
    urban_fraction: float = 0.35
    street_spacing_m: float = 60.0
    street_width_m: float = 9.0
    building_fill: float = 0.8
    main_roads_per_km: float = 3.0
    single_trees_per_ha: float = 12.0
    car_density: float = 0.3
    # optical
    sun_azimuth_deg: float = 135.0
    sun_elevation_deg: float = 45.0
    optical_noise: float = 0.004
    cloud_cover: float = 0.0
    cloud_scale_m: float = 120.0
    cloud_region: tuple[float, float, float, float] | None = None
    cloud_shadows: bool = True
    clouds_as_nodata: bool = False
    # SAR
    sar_looks: float = 4.0
    sar_gap: float = 0.0
    # DSM
    terrain_relief_m: float = 6.0
    dsm_voids: float = 0.0
    dsm_noise_m: float = 0.15

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ConfigError(f"synthetic size must be at least 8 pixels, got {self.size}")
        if not 1 <= self.optical_bands <= len(OPTICAL_BAND_CATALOGUE):
            raise ConfigError(
                f"optical_bands must be 1..{len(OPTICAL_BAND_CATALOGUE)} "
                f"({', '.join(OPTICAL_BAND_CATALOGUE)}), got {self.optical_bands}"
            )
        if self.pixel_size <= 0:
            raise ConfigError(f"pixel_size must be positive (metres), got {self.pixel_size}")
        self.modalities = tuple(m for m in MODALITIES if m in self.modalities)
        if not self.modalities:
            raise ConfigError("SyntheticConfig.modalities needs at least one of " + ", ".join(MODALITIES))
        for name in (
            "water_fraction",
            "vegetation_fraction",
            "forest_fraction",
            "urban_fraction",
            "building_fill",
            "car_density",
            "cloud_cover",
            "river_probability",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be within [0, 1], got {value}")
        for name in ("sar_gap", "dsm_voids"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be within [0, 1), got {value}")
        if self.sar_looks < 1:
            raise ConfigError(f"sar_looks must be >= 1, got {self.sar_looks}")
        if not 5.0 <= self.sun_elevation_deg <= 90.0:
            raise ConfigError(f"sun_elevation_deg must be within [5, 90], got {self.sun_elevation_deg}")
        if self.cloud_region is not None:
            r0, c0, r1, c1 = (float(v) for v in self.cloud_region)
            if not (0 <= r0 < r1 <= 1 and 0 <= c0 < c1 <= 1):
                raise ConfigError(
                    f"cloud_region must be (row0, col0, row1, col1) fractions with 0 <= start < end <= 1, "
                    f"got {self.cloud_region}"
                )
            self.cloud_region = (r0, c0, r1, c1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (tuples become lists), stored in index.json for reproducibility."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass
class Scene:
    """One co-registered multimodal scene: imagery in physical units, a label and per-modality validity.

    ``optical`` is float32 (bands, H, W) reflectance, ``sar`` (2, H, W) dB, ``dsm`` (1, H, W) metres; a
    modality the scene lacks is None and has no entry in ``valid``. ``label`` is uint8 (H, W), 255 = ignore.
    ``valid[m]`` is False where modality m is missing (nodata, swath gap, void, cloud for optical).
    """

    name: str
    label: np.ndarray
    optical: np.ndarray | None
    sar: np.ndarray | None
    dsm: np.ndarray | None
    valid: dict[str, np.ndarray]
    transform: Affine
    crs: str
    class_names: tuple[str, ...] = CLASS_NAMES
    specs: dict[str, ModalitySpec] = field(default_factory=dict)
    cloud_mask: np.ndarray | None = None
    ignore_index: int = IGNORE_INDEX
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this scene has, in canonical order."""
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.label.shape[0]), int(self.label.shape[1]))

    def image(self, modality: str) -> np.ndarray:
        """The (bands, H, W) array of one modality; KeyError when the scene does not have it."""
        array = getattr(self, modality, None) if modality in MODALITIES else None
        if array is None:
            raise KeyError(f"scene {self.name} has no {modality!r} (it has {', '.join(self.modalities)})")
        return array


@dataclass(frozen=True)
class ScenePaths:
    """Files written for one scene (None for a modality the scene lacks)."""

    directory: Path
    label: Path
    optical: Path | None = None
    sar: Path | None = None
    dsm: Path | None = None
    cloud_mask: Path | None = None

    def as_dict(self) -> dict[str, str]:
        """File names relative to the scene directory (what index.json stores)."""
        out = {}
        for key in ("optical", "sar", "dsm", "label", "cloud_mask"):
            path = getattr(self, key)
            if path is not None:
                out[key] = path.name
        return out


# ----------------------------------------------------------------------------------------------- fields


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], scale_px: float, fractal: float = 0.0
) -> np.ndarray:
    """Zero-mean, unit-std random field with correlation length ``scale_px`` (FFT filtering of white noise).

    ``fractal > 0`` adds a power-law tail (k^-fractal) so terrain and clouds keep detail at small scales.
    """
    height, width = shape
    noise = rng.standard_normal(shape, dtype=np.float32)
    spectrum = scipy.fft.rfft2(noise, workers=1)
    ky = np.fft.fftfreq(height).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(width).astype(np.float32)[None, :]
    k2 = ky * ky + kx * kx
    # a correlation length beyond a quarter of the scene would leave (almost) only the removed mean: clamp it
    scale = min(max(float(scale_px), 0.5), max(max(shape) / 4.0, 0.5))
    gain = np.exp(-2.0 * (math.pi**2) * k2 * scale * scale)
    if fractal > 0:
        k0 = 1.0 / (4.0 * scale)
        gain = gain + 0.15 * (k0 * k0 / (k2 + k0 * k0)) ** (fractal / 2.0)
    spectrum *= gain
    out = scipy.fft.irfft2(spectrum, s=shape, workers=1).astype(np.float32)
    out -= out.mean()
    std = float(out.std())
    return out / std if std > 0 else out


def _quantile(array: np.ndarray, q: float) -> float:
    """Quantile from a strided subsample: exact enough for thresholds and far cheaper on big scenes."""
    flat = array.reshape(-1)
    sample = flat[:: max(1, flat.size // 250_000)]
    return float(np.quantile(sample, min(max(q, 0.0), 1.0)))


def _splitmix(seed: int, keys: Sequence[np.ndarray]) -> np.ndarray:
    """splitmix64-style mix of integer key arrays into uniform [0, 1) floats (broadcast over the keys)."""
    h = np.full(np.broadcast_shapes(*(k.shape for k in keys)), np.uint64(seed & 0xFFFFFFFF), dtype=np.uint64)
    multipliers = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93)
    with np.errstate(over="ignore"):
        for i, key in enumerate(keys):
            k = key.astype(np.int64).astype(np.uint64)
            h = h ^ (k * np.uint64(multipliers[i % 4]) + np.uint64(i + 1))
            h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _hash_uniform(seed: int, *keys: np.ndarray | int) -> np.ndarray:
    """Deterministic uniform [0, 1) per integer key tuple, for per-object random attributes.

    Why: object attributes (does this lot have a building, its height, is this parking slot taken) must be
    vectorised over pixels and identical for every pixel of one object, without a Python loop per object.
    Keys are object indices, so they take few distinct values: the hash is computed once per value
    combination (a small table) and gathered per pixel, which gives the same numbers far faster.
    """
    arrays = [np.asarray(k) for k in keys]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    total = math.prod(shape)
    varying = [i for i, a in enumerate(arrays) if a.size > 1]
    if varying and total > 4096:
        lows = [int(arrays[i].min()) for i in varying]
        sizes = [int(arrays[i].max()) - low + 1 for i, low in zip(varying, lows, strict=True)]
        if math.prod(sizes) * 4 <= total:
            axes = np.meshgrid(
                *(np.arange(low, low + n) for low, n in zip(lows, sizes, strict=True)),
                indexing="ij",
                sparse=True,
            )
            table_keys = list(arrays)
            for axis, i in zip(axes, varying, strict=True):
                table_keys[i] = axis
            table = _splitmix(seed, table_keys)
            index = tuple((arrays[i] - low).astype(np.intp) for i, low in zip(varying, lows, strict=True))
            return np.broadcast_to(table[index], shape)
    return _splitmix(seed, arrays)


def _shift(array: np.ndarray, drow: int, dcol: int, fill: float | bool) -> np.ndarray:
    """``out[r, c] = array[r + drow, c + dcol]``, with ``fill`` where that falls outside the array."""
    out = np.full_like(array, fill)
    height, width = array.shape
    if abs(drow) >= height or abs(dcol) >= width:
        return out
    src_r = slice(max(drow, 0), height + min(drow, 0))
    dst_r = slice(max(-drow, 0), height + min(-drow, 0))
    src_c = slice(max(dcol, 0), width + min(dcol, 0))
    dst_c = slice(max(-dcol, 0), width + min(-dcol, 0))
    out[dst_r, dst_c] = array[src_r, src_c]
    return out


def _cast_shadow(
    height: np.ndarray,
    toward_source: tuple[float, float],
    tan_elevation: float,
    pixel_size: float,
    max_px: int,
) -> np.ndarray:
    """Pixels hidden from a source (sun or radar) by taller surfaces along ``toward_source`` (row, col unit).

    A pixel is shadowed when a surface d pixels towards the source rises above the ray through it,
    i.e. ``h(p + d) - h(p) > d * pixel_size * tan(elevation)``; tested for d = 1..max_px.
    """
    shadow = np.zeros(height.shape, dtype=bool)
    drop_per_px = pixel_size * tan_elevation
    seen: set[tuple[int, int]] = set()
    for d in range(1, max_px + 1):
        offset = (round(d * toward_source[0]), round(d * toward_source[1]))
        if offset in seen or offset == (0, 0):
            continue
        seen.add(offset)
        distance = math.hypot(*offset)
        shifted = _shift(height, offset[0], offset[1], fill=-np.inf)
        shadow |= shifted - height > distance * drop_per_px
    return shadow


def _hillshade(
    surface: np.ndarray, pixel_size: float, azimuth_deg: float, elevation_deg: float
) -> np.ndarray:
    """cos(incidence) / cos(zenith) of sunlight on the surface (1 on flat ground, 0 facing away)."""
    grad_row, grad_col = np.gradient(surface, pixel_size)
    # north-up image: +row is south, +col is east
    azimuth = math.radians(azimuth_deg)
    zenith = math.radians(90.0 - elevation_deg)
    sun_east, sun_north = math.sin(azimuth) * math.sin(zenith), math.cos(azimuth) * math.sin(zenith)
    sun_up = math.cos(zenith)
    dz_east, dz_north = grad_col, -grad_row
    norm = np.sqrt(dz_east * dz_east + dz_north * dz_north + 1.0)
    cos_incidence = (-dz_east * sun_east - dz_north * sun_north + sun_up) / norm
    return np.clip(cos_incidence / sun_up, 0.0, 1.6).astype(np.float32)


# ----------------------------------------------------------------------------------------------- layout


@dataclass
class _Layout:
    """Intermediate land-cover state shared by the sensor renderers."""

    label: np.ndarray
    terrain: np.ndarray
    object_height: np.ndarray
    roof_type: np.ndarray  # index into _ROOFS for building pixels, -1 elsewhere
    paint: np.ndarray  # index into _PAINTS for car pixels, -1 elsewhere


def _layout(config: SyntheticConfig, rng: np.random.Generator) -> _Layout:
    """Land cover, terrain and object heights: the single ground truth every sensor renders."""
    n = config.size
    ps = config.pixel_size
    shape = (n, n)
    salt = int(rng.integers(0, 2**31 - 1))
    rows = np.arange(n, dtype=np.float32)[:, None] * ps
    cols = np.arange(n, dtype=np.float32)[None, :] * ps

    # terrain: fractal relief plus a gentle regional slope
    terrain = _smooth_field(rng, shape, 250.0 / ps, fractal=3.0) * config.terrain_relief_m
    slope = rng.normal(0.0, 0.01, size=2).astype(np.float32)
    terrain = terrain + 2.0 + slope[0] * (rows - n * ps / 2) + slope[1] * (cols - n * ps / 2)
    label = np.full(shape, BACKGROUND, dtype=np.uint8)
    object_height = np.zeros(shape, dtype=np.float32)

    # open land: moist low ground carries low vegetation, forests in patches with ragged edges
    moisture = _smooth_field(rng, shape, 60.0 / ps) - 0.4 * (terrain - terrain.mean()) / (
        terrain.std() + 1e-6
    )
    moisture += 0.35 * _smooth_field(rng, shape, 4.0 / ps)
    label[moisture > _quantile(moisture, 1.0 - config.vegetation_fraction)] = LOW_VEGETATION
    object_height[label == LOW_VEGETATION] = 0.3

    urban_field = _smooth_field(rng, shape, 180.0 / ps)
    urban = (
        urban_field > _quantile(urban_field, 1.0 - config.urban_fraction)
        if config.urban_fraction > 0
        else (np.zeros(shape, dtype=bool))
    )
    forest_field = _smooth_field(rng, shape, 90.0 / ps) + 0.3 * _smooth_field(rng, shape, 3.0 / ps)
    forest_field -= 2.0 * urban
    forest = (
        forest_field > _quantile(forest_field, 1.0 - config.forest_fraction)
        if config.forest_fraction > 0
        else (np.zeros(shape, dtype=bool))
    )
    canopy_field = _smooth_field(rng, shape, 30.0 / ps)
    at = np.nonzero(forest)
    crowns = _crowns(
        rows[at[0], 0], cols[0, at[1]], cell_m=6.0, radius_range=(2.0, 3.5), presence=1.0, seed=salt + 1
    )
    label[at] = TREE
    object_height[at] = (12.0 + 3.0 * canopy_field[at]) * (0.75 + 0.25 * crowns)

    single_cell_m = 100.0 / math.sqrt(max(config.single_trees_per_ha, 1e-3))
    single = _crowns(
        rows,
        cols,
        cell_m=single_cell_m,
        radius_range=(2.0, 4.5),
        presence=min(1.0, config.single_trees_per_ha * single_cell_m**2 / 1e4),
        seed=salt + 2,
    )
    tree_height = 6.0 + 8.0 * _hash_uniform(
        salt + 3, np.floor(rows / single_cell_m), np.floor(cols / single_cell_m)
    )
    is_single = (single > 0) & ~forest
    label[is_single] = TREE
    object_height[is_single] = (tree_height * single)[is_single]

    # water: a meandering river (sometimes) and lakes filling the lowest ground; surfaces are flat
    water = np.zeros(shape, dtype=bool)
    water_level = np.full(shape, np.nan, dtype=np.float32)
    if config.water_fraction > 0 and rng.random() < config.river_probability:
        along, across = (rows, cols) if rng.random() < 0.5 else (cols, rows)
        extent = n * ps
        centre = rng.uniform(0.2, 0.8) * extent
        wiggle = centre + sum(
            rng.uniform(0.03, 0.10)
            * extent
            * np.sin(2 * math.pi * along / (extent * rng.uniform(0.4, 1.5)) + rng.uniform(0, 2 * math.pi))
            for _ in range(2)
        )
        half_width = rng.uniform(5.0, 12.0) + 1.5 * _smooth_field(
            rng, (n, 1) if along is rows else (1, n), 30 / ps
        )
        river = np.abs(across - wiggle) < half_width
        water |= river
        water_level[river] = (terrain - 1.5)[river]
    remaining = config.water_fraction - water.mean()
    if remaining > 0:
        lake_level = _quantile(terrain, remaining)
        lakes = (terrain <= lake_level) & ~water
        water |= lakes
        water_level[lakes] = lake_level
    label[water] = WATER
    object_height[water] = 0.0
    terrain = np.where(water, np.nan_to_num(water_level, nan=0.0), terrain).astype(np.float32)

    roof_type = np.full(shape, -1, dtype=np.int8)
    paint = np.full(shape, -1, dtype=np.int8)
    _add_main_roads(config, rng, rows, cols, label, object_height, paint, salt)
    if urban.any():
        _add_urban(config, rng, rows, cols, urban, water, label, object_height, roof_type, paint, salt)
    return _Layout(label, terrain.astype(np.float32), object_height, roof_type, paint)


def _crowns(
    rows: np.ndarray,
    cols: np.ndarray,
    cell_m: float,
    radius_range: tuple[float, float],
    presence: float,
    seed: int,
) -> np.ndarray:
    """Dome profile (0..1) of tree crowns on a jittered grid: at most one crown per cell, none overlapping."""
    cell_r = np.floor(rows / cell_m)
    cell_c = np.floor(cols / cell_m)
    radius = radius_range[0] + (radius_range[1] - radius_range[0]) * _hash_uniform(seed, cell_r, cell_c, 0)
    radius = np.minimum(radius, 0.45 * cell_m)
    margin: np.ndarray = radius / cell_m
    centre_r = (cell_r + margin + (1 - 2 * margin) * _hash_uniform(seed, cell_r, cell_c, 1)) * cell_m
    centre_c = (cell_c + margin + (1 - 2 * margin) * _hash_uniform(seed, cell_r, cell_c, 2)) * cell_m
    present = _hash_uniform(seed, cell_r, cell_c, 3) < presence
    distance2 = ((rows - centre_r) ** 2 + (cols - centre_c) ** 2) / (radius * radius)
    dome = np.sqrt(np.clip(1.0 - distance2, 0.0, 1.0))
    return np.where(present, dome, 0.0).astype(np.float32)


def _add_main_roads(
    config: SyntheticConfig,
    rng: np.random.Generator,
    rows: np.ndarray,
    cols: np.ndarray,
    label: np.ndarray,
    object_height: np.ndarray,
    paint: np.ndarray,
    salt: int,
) -> None:
    """Gently curving main roads crossing the scene (bridges over water), with sparse moving cars."""
    extent = config.size * config.pixel_size
    count = rng.poisson(config.main_roads_per_km * extent / 1000.0)
    for index in range(int(count)):
        angle = rng.uniform(0, math.pi)
        r0, c0 = rng.uniform(0.1, 0.9, size=2) * extent
        amplitude, wavelength, phase = rng.uniform(5, 25), rng.uniform(300, 900), rng.uniform(0, 6.3)
        width = rng.uniform(7.0, 11.0)
        # only pixels near the straight centre line can be on the road: work on that band alone
        straight = (rows - r0) * math.cos(angle) - (cols - c0) * math.sin(angle)
        pick_r, pick_c = np.nonzero(np.abs(straight) < amplitude + width)
        y, x = rows[pick_r, 0], cols[0, pick_c]
        along = (y - r0) * math.sin(angle) + (x - c0) * math.cos(angle)
        across = straight[pick_r, pick_c] - amplitude * np.sin(2 * math.pi * along / wavelength + phase)
        road = np.abs(across) < width / 2
        label[pick_r[road], pick_c[road]] = ROAD
        object_height[pick_r[road], pick_c[road]] = 0.0
        # cars in the two lanes, 1.8 m wide, 4.5 m long, sparse on a main road
        lane = road & (np.abs(np.abs(across) - width / 4) < 0.9)
        slot = np.floor(along / 12.0)
        in_slot = np.mod(along, 12.0) < 4.5
        side = (across > 0).astype(np.int64)
        car = lane & in_slot & (_hash_uniform(salt + 10 + index, slot, side) < 0.4 * config.car_density)
        car_r, car_c = pick_r[car], pick_c[car]
        label[car_r, car_c] = CAR
        object_height[car_r, car_c] = 1.5
        colour = _hash_uniform(salt + 20 + index, slot[car], side[car], 1) * len(_PAINTS)
        paint[car_r, car_c] = colour.astype(np.int8)


def _add_urban(
    config: SyntheticConfig,
    rng: np.random.Generator,
    rows: np.ndarray,
    cols: np.ndarray,
    urban: np.ndarray,
    water: np.ndarray,
    label: np.ndarray,
    object_height: np.ndarray,
    roof_type: np.ndarray,
    paint: np.ndarray,
    salt: int,
) -> None:
    """A rotated street grid inside the urban zone: building lots between streets, parked cars along kerbs.

    Works on the urban pixels only (1-D arrays), which keeps large scenes fast and memory-light.
    """
    angle = rng.uniform(0, math.pi / 2)
    spacing = config.street_spacing_m * rng.uniform(0.8, 1.25, size=2)
    street = config.street_width_m
    offset = rng.uniform(0, 1000, size=2)
    pick_r, pick_c = np.nonzero(urban & ~water)
    y, x = rows[pick_r, 0], cols[0, pick_c]
    u = x * math.cos(angle) + y * math.sin(angle) + offset[0]
    v = -x * math.sin(angle) + y * math.cos(angle) + offset[1]
    cell_u, cell_v = np.floor(u / spacing[0]), np.floor(v / spacing[1])
    local_u, local_v = u - cell_u * spacing[0], v - cell_v * spacing[1]
    streets = (local_u < street) | (local_v < street)  # streets run along v and along u

    # building lots: the block interior split into 1-3 x 1-3 lots per block
    inner_u, inner_v = local_u - street, local_v - street
    block_u, block_v = spacing[0] - street, spacing[1] - street
    lots_u = 1 + np.floor(3 * _hash_uniform(salt + 30, cell_u, cell_v, 0))
    lots_v = 1 + np.floor(3 * _hash_uniform(salt + 30, cell_u, cell_v, 1))
    lot_w_u, lot_w_v = block_u / lots_u, block_v / lots_v
    lot_u, lot_v = np.floor(inner_u / lot_w_u), np.floor(inner_v / lot_w_v)
    pos_u, pos_v = inner_u - lot_u * lot_w_u, inner_v - lot_v * lot_w_v
    lot_key = (cell_u * 7 + lot_u, cell_v * 7 + lot_v)
    margin_u = 2.0 + 0.2 * lot_w_u * _hash_uniform(salt + 31, *lot_key, 0)
    margin_v = 2.0 + 0.2 * lot_w_v * _hash_uniform(salt + 31, *lot_key, 1)
    in_footprint = (
        (pos_u > margin_u) & (pos_u < lot_w_u - margin_u) & (pos_v > margin_v) & (pos_v < lot_w_v - margin_v)
    )
    has_building = _hash_uniform(salt + 32, *lot_key) < config.building_fill
    building = ~streets & in_footprint & has_building

    storeys = 1 + np.floor(6 * _hash_uniform(salt + 33, *lot_key) ** 2)
    height = 3.0 * storeys + 1.0
    kind = np.minimum(np.floor(len(_ROOFS) * _hash_uniform(salt + 34, *lot_key)), len(_ROOFS) - 1)
    # red-tile roofs are pitched (ridge along the longer side), the others flat
    along_u = (lot_w_u - 2 * margin_u) < (lot_w_v - 2 * margin_v)
    span = np.where(along_u, lot_w_u - 2 * margin_u, lot_w_v - 2 * margin_v)
    frac = np.where(along_u, (pos_u - margin_u), (pos_v - margin_v)) / np.maximum(span, 1e-3)
    ridge = np.where(kind == 1, 0.25 * span * (1.0 - np.abs(2.0 * frac - 1.0)), 0.0)
    at = (pick_r[building], pick_c[building])
    label[at] = BUILDING
    object_height[at] = (height + ridge)[building]
    roof_type[at] = kind[building].astype(np.int8)

    # open ground in town keeps its base cover (yards, gardens); streets are paved
    at = (pick_r[streets], pick_c[streets])
    label[at] = ROAD
    object_height[at] = 0.0

    # parked cars in 2 m kerb lanes on both sides of every street, 5.5 m slots
    for across, along, cell, key in ((local_u, v, cell_u, 0), (local_v, u, cell_v, 1)):
        kerb = ((across > 0.6) & (across < 2.4)) | ((across > street - 2.4) & (across < street - 0.6))
        slot = np.floor(along / 5.5)
        side = (across > street / 2).astype(np.int64)
        candidate = streets & kerb & (np.mod(along, 5.5) < 4.5) & (across < street)
        occupied = _hash_uniform(salt + 40 + key, cell[candidate], slot[candidate], side[candidate])
        car = np.flatnonzero(candidate)[occupied < config.car_density]
        at = (pick_r[car], pick_c[car])
        label[at] = CAR
        object_height[at] = 1.5
        colour = _hash_uniform(salt + 50 + key, cell[car], slot[car], side[car]) * len(_PAINTS)
        paint[at] = np.minimum(colour, len(_PAINTS) - 1).astype(np.int8)


# ----------------------------------------------------------------------------------------------- sensors


def _render_dsm(
    config: SyntheticConfig, rng: np.random.Generator, layout: _Layout
) -> tuple[np.ndarray, np.ndarray]:
    """Surface heights (terrain + objects + noise) and the valid mask after voids."""
    shape = layout.label.shape
    surface = layout.terrain + layout.object_height
    noise = rng.normal(0.0, config.dsm_noise_m, size=shape).astype(np.float32)
    dsm = (surface + noise).astype(np.float32)
    valid = np.ones(shape, dtype=bool)
    if config.dsm_voids > 0:
        voids = _smooth_field(rng, shape, 12.0 / config.pixel_size)
        valid &= voids <= _quantile(voids, 1.0 - config.dsm_voids)
    return dsm[None], valid


def _render_optical(
    config: SyntheticConfig, rng: np.random.Generator, layout: _Layout
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reflectance (bands, H, W), the cloud mask and the optical valid mask."""
    label = layout.label
    shape = label.shape
    ps = config.pixel_size
    bands = config.optical_bands
    spectra = _SPECTRA[:, :bands]
    reflectance = spectra[label].transpose(2, 0, 1).copy()  # (bands, H, W)
    building = layout.roof_type >= 0
    reflectance[:, building] = _ROOFS[layout.roof_type[building].astype(np.int64), :bands].T
    car = layout.paint >= 0
    reflectance[:, car] = _PAINTS[layout.paint[car].astype(np.int64), :bands].T

    texture = 0.6 * _smooth_field(rng, shape, 1.5 / ps) + 0.4 * _smooth_field(rng, shape, 15.0 / ps)
    reflectance *= 1.0 + _TEXTURE_AMPLITUDE[label] * texture
    band_jitter = 0.04 * _smooth_field(rng, shape, 8.0 / ps)
    reflectance[bands // 2 :] *= 1.0 + band_jitter

    surface = layout.terrain + layout.object_height
    illumination = _hillshade(surface, ps, config.sun_azimuth_deg, config.sun_elevation_deg)
    azimuth = math.radians(config.sun_azimuth_deg)
    toward_sun = (-math.cos(azimuth), math.sin(azimuth))  # (row, col): north is -row
    tan_elevation = math.tan(math.radians(config.sun_elevation_deg))
    max_px = int(min(40.0 / tan_elevation / ps, config.size))
    shadow = _cast_shadow(surface, toward_sun, tan_elevation, ps, max_px)
    direct = np.where(shadow, 0.0, illumination)
    reflectance *= (0.25 + 0.75 * direct)[None]

    cloud_mask = np.zeros(shape, dtype=bool)
    if config.cloud_cover > 0:
        density = _smooth_field(rng, shape, config.cloud_scale_m / ps, fractal=2.5)
        region = np.ones(shape, dtype=bool)
        if config.cloud_region is not None:
            r0, c0, r1, c1 = config.cloud_region
            n = config.size
            region[:] = False
            region[int(r0 * n) : math.ceil(r1 * n), int(c0 * n) : math.ceil(c1 * n)] = True
        threshold = _quantile(
            density[region] if region.any() else density,
            1.0 - config.cloud_cover / max(float(region.mean()), 1e-6),
        )
        thickness = np.clip((density - threshold) / 0.6 + 0.3, 0.0, 1.0) * (density > threshold - 0.18)
        thickness = np.where(region, thickness, 0.0).astype(np.float32)
        if config.cloud_shadows:
            drift = 1500.0 / tan_elevation / ps  # cloud base ~1.5 km: its shadow falls away from the sun
            offset = (round(-toward_sun[0] * drift), round(-toward_sun[1] * drift))
            shade = _shift(thickness, -offset[0], -offset[1], fill=0.0)
            reflectance *= (1.0 - 0.6 * shade * (thickness < 0.3))[None]
        reflectance = (1.0 - thickness)[None] * reflectance + thickness[None] * _CLOUD_REFLECTANCE
        cloud_mask = thickness >= 0.5

    reflectance += rng.normal(0.0, config.optical_noise, size=reflectance.shape).astype(np.float32)
    np.clip(reflectance, 1e-4, 1.5, out=reflectance)
    return reflectance.astype(np.float32), cloud_mask, ~cloud_mask


def _render_sar(
    config: SyntheticConfig, rng: np.random.Generator, layout: _Layout
) -> tuple[np.ndarray, np.ndarray]:
    """Backscatter in dB (VV, VH) with speckle, double bounce and radar shadow; valid mask after the gap."""
    label = layout.label
    shape = label.shape
    ps = config.pixel_size
    db = _BACKSCATTER_DB[label].transpose(2, 0, 1).copy()  # (2, H, W)
    db += (_BACKSCATTER_TEXTURE_DB[label] * _smooth_field(rng, shape, 6.0 / ps))[None]

    # the radar looks east from the west: slopes facing west (towards it) are brighter
    grad_col = np.gradient(layout.terrain, ps, axis=1)
    db += np.clip(-grad_col * 25.0, -6.0, 6.0)[None]

    building = label == BUILDING
    wall = building & ~_shift(building, 0, -2, fill=False)  # building pixel whose west neighbour is not roof
    db[0][wall] += 9.0
    db[1][wall] += 5.0
    tan_elevation = math.tan(math.radians(90.0 - _SAR_INCIDENCE_DEG))
    shadow = _cast_shadow(
        layout.terrain + layout.object_height,
        (0.0, -1.0),
        tan_elevation,
        ps,
        int(min(30.0 / tan_elevation / ps, config.size)),
    )
    db[:, shadow] = np.minimum(db[:, shadow], -24.0)

    linear = np.power(10.0, db / 10.0, dtype=np.float32)
    looks = float(config.sar_looks)
    linear *= rng.gamma(looks, 1.0 / looks, size=linear.shape).astype(np.float32)
    sar = 10.0 * np.log10(np.maximum(linear, 10.0 ** (_SAR_FLOOR_DB / 10.0)))

    valid = np.ones(shape, dtype=bool)
    if config.sar_gap > 0:
        n = config.size
        width = config.sar_gap * n
        start = rng.uniform(0.0, n - width)
        slant = (np.arange(n, dtype=np.float32)[:, None] - n / 2) * math.tan(math.radians(8.0))
        col = np.arange(n, dtype=np.float32)[None, :] - slant
        valid &= ~((col >= start) & (col < start + width))
    return sar.astype(np.float32), valid


# ----------------------------------------------------------------------------------------------- public API


# Per-band mean / std of the default generator, measured with `stars-edge data stats` on the train split of
# `stars-edge data synth --scenes 20 --size 384 --seed 0` (docs/DATA.md); rounded. Re-measure if the
# generator's physics change.
_MEASURED_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
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
    spectra = _SPECTRA.astype(np.float64)
    mean = weights @ spectra
    std = np.sqrt(weights @ (spectra - mean) ** 2 + (0.2 * mean) ** 2)
    measured_mean, measured_std = _MEASURED_STATS["optical"]
    means = [measured_mean[i] if i < len(measured_mean) else float(mean[i]) for i in range(optical_bands)]
    stds = [measured_std[i] if i < len(measured_std) else float(std[i]) for i in range(optical_bands)]
    optical = ModalitySpec(
        "optical", OPTICAL_BAND_CATALOGUE[:optical_bands], tuple(means), tuple(stds), units="reflectance"
    )
    sar = ModalitySpec("sar", ("vv", "vh"), *_MEASURED_STATS["sar"], units="dB")
    dsm = ModalitySpec("dsm", ("height",), *_MEASURED_STATS["dsm"], units="m")
    return {"optical": optical, "sar": sar, "dsm": dsm}


def generate_scene(config: SyntheticConfig | None = None, name: str | None = None) -> Scene:
    """Build one scene from its config; identical configs (seed included) give bit-identical scenes."""
    config = config or SyntheticConfig()
    root = np.random.SeedSequence([config.seed, 0x5CE1E])
    layout_seq, optical_seq, sar_seq, dsm_seq = root.spawn(4)
    layout = _layout(config, np.random.default_rng(layout_seq))
    valid: dict[str, np.ndarray] = {}
    optical = sar = dsm = cloud_mask = None
    if "optical" in config.modalities:
        optical, cloud_mask, valid["optical"] = _render_optical(
            config, np.random.default_rng(optical_seq), layout
        )
        if config.clouds_as_nodata:
            optical[:, cloud_mask] = NODATA
    if "sar" in config.modalities:
        sar, valid["sar"] = _render_sar(config, np.random.default_rng(sar_seq), layout)
        sar[:, ~valid["sar"]] = NODATA
    if "dsm" in config.modalities:
        dsm, valid["dsm"] = _render_dsm(config, np.random.default_rng(dsm_seq), layout)
        dsm[:, ~valid["dsm"]] = NODATA
    ox, oy = config.origin
    transform = Affine(config.pixel_size, 0.0, ox, 0.0, -config.pixel_size, oy)
    specs = {m: s for m, s in synthetic_specs(config.optical_bands).items() if m in config.modalities}
    return Scene(
        name=name or f"synthetic_{config.seed}",
        label=layout.label,
        optical=optical,
        sar=sar,
        dsm=dsm,
        valid=valid,
        transform=transform,
        crs=config.crs,
        class_names=CLASS_NAMES,
        specs=specs,
        cloud_mask=cloud_mask,
        metadata={"generator": "stars_edge.data.synthetic", "config": config.to_dict()},
    )


def _raster_tags(scene: Scene, modality: str) -> dict[str, str]:
    spec = scene.specs.get(modality)
    tags = {"STARS_MODALITY": modality, "STARS_SCENE": scene.name}
    if spec is not None:
        tags["STARS_UNITS"] = spec.units
        tags["STARS_SPEC"] = json.dumps(spec.to_dict())
    return tags


def label_tags(class_names: Sequence[str], ignore_index: int = IGNORE_INDEX) -> dict[str, str]:
    """GeoTIFF tags that carry the class names of a label raster (read back by the loaders)."""
    tags = {"CLASS_NAMES": json.dumps(list(class_names)), "IGNORE_INDEX": str(ignore_index)}
    tags.update({f"CLASS_{i}": name for i, name in enumerate(class_names)})
    return tags


def write_scene(scene: Scene, directory: str | Path) -> ScenePaths:
    """Write a scene as GeoTIFFs (float32 imagery with nodata, uint8 label/cloud mask), each atomically.

    Imagery pixels where ``valid`` is False carry ``NODATA`` (-9999) except optical cloud pixels, which keep
    the cloud's reflectance (as a real L1/L2 product does) and are flagged in ``cloud_mask.tif`` instead.
    """
    directory = ensure_writable_dir(directory)
    transform, crs = scene.transform, scene.crs
    written: dict[str, Path] = {}
    for modality in scene.modalities:
        array = scene.image(modality).astype(np.float32, copy=True)
        invalid = ~scene.valid[modality]
        if modality == "optical" and scene.cloud_mask is not None:
            invalid &= ~scene.cloud_mask
        array[:, invalid] = NODATA
        spec = scene.specs.get(modality)
        written[modality] = write_geotiff(
            directory / f"{modality}.tif",
            array,
            nodata=NODATA,
            band_names=spec.band_names if spec is not None else None,
            tags=_raster_tags(scene, modality),
            transform=transform,
            crs=crs,
        )
    written["label"] = write_geotiff(
        directory / "label.tif",
        scene.label.astype(np.uint8),
        nodata=LABEL_NODATA,
        band_names=("label",),
        tags=label_tags(scene.class_names, scene.ignore_index),
        transform=transform,
        crs=crs,
    )
    if scene.cloud_mask is not None:
        written["cloud_mask"] = write_geotiff(
            directory / "cloud_mask.tif",
            scene.cloud_mask.astype(np.uint8),
            nodata=None,
            band_names=("cloud",),
            tags={"STARS_MEANING": "1 = cloud (optical invalid), 0 = clear"},
            transform=transform,
            crs=crs,
        )
    return ScenePaths(directory=directory, **written)


def split_counts(
    scenes: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> tuple[int, int, int]:
    """How many scenes go to train / val / test; val and test get at least one scene once there are 3."""
    if scenes < 1:
        raise ConfigError(f"need at least one scene, got {scenes}")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ConfigError(f"split fractions must be three non-negative numbers, got {fractions}")
    total = sum(fractions)
    val = round(scenes * fractions[1] / total)
    test = round(scenes * fractions[2] / total)
    if scenes >= 3:
        val = max(val, 1) if fractions[1] > 0 else 0
        test = max(test, 1) if fractions[2] > 0 else 0
    while scenes - val - test < 1 and (val or test):
        if test >= val:
            test -= 1
        else:
            val -= 1
    return scenes - val - test, val, test


def scene_seed(base_seed: int, index: int) -> int:
    """Seed of scene ``index`` of a dataset: distinct per index, so splits are disjoint by construction."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0])


def generate_dataset(
    out_dir: str | Path,
    scenes: int,
    size: int,
    seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    progress: bool = True,
    **config_overrides: Any,
) -> Path:
    """Write ``scenes`` scenes (one folder each) and ``index.json`` listing them and their split.

    Scene i uses seed ``scene_seed(seed, i)``; the first scenes are train, then val, then test, so the split
    definition is a pure function of (scenes, seed, fractions). ``config_overrides`` are SyntheticConfig
    fields (e.g. ``cloud_cover=0.2``). Returns the path of index.json, written last (atomically).
    """
    out_dir = ensure_writable_dir(out_dir)
    fields = {f.name for f in dataclasses.fields(SyntheticConfig)} - {"size", "seed"}
    unknown = sorted(set(config_overrides) - fields)
    if unknown:
        raise ConfigError(
            f"unknown synthetic option(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}"
        )
    counts = split_counts(scenes, split_fractions)
    split_of = ["train"] * counts[0] + ["val"] * counts[1] + ["test"] * counts[2]
    entries = []
    config = SyntheticConfig(size=size, seed=seed, **config_overrides)
    for index in tqdm(range(scenes), desc="synth scenes", unit="scene", disable=not progress):
        # scenes sit side by side on the map (distinct georeferencing), one scene width plus a gap apart
        step = (size + 64) * config.pixel_size
        scene_config = dataclasses.replace(
            config, seed=scene_seed(seed, index), origin=(config.origin[0] + index * step, config.origin[1])
        )
        name = f"scene_{index:04d}"
        scene = generate_scene(scene_config, name=name)
        paths = write_scene(scene, out_dir / name)
        counts_per_class = np.bincount(scene.label.reshape(-1), minlength=len(CLASS_NAMES))[
            : len(CLASS_NAMES)
        ]
        entries.append(
            {
                "name": name,
                "split": split_of[index],
                "seed": scene_config.seed,
                "path": name,
                "files": paths.as_dict(),
                "size": [size, size],
                "class_pixels": [int(c) for c in counts_per_class],
            }
        )
    specs = synthetic_specs(config.optical_bands)
    index_payload = {
        "format": "stars-edge-synthetic",
        "version": 1,
        "class_names": list(CLASS_NAMES),
        "ignore_index": IGNORE_INDEX,
        "nodata": NODATA,
        "specs": [specs[m].to_dict() for m in config.modalities],
        "config": config.to_dict(),
        "splits": {s: [e["name"] for e in entries if e["split"] == s] for s in ("train", "val", "test")},
        "scenes": entries,
    }
    return write_json_atomic(out_dir / "index.json", index_payload)


def iter_mosaic_blocks(size: int, block: int) -> Iterator[tuple[int, int, int, int]]:
    """(row, col, height, width) of the blocks of a ``size`` x ``size`` mosaic, row-major."""
    for row in range(0, size, block):
        for col in range(0, size, block):
            yield row, col, min(block, size - row), min(block, size - col)


def write_mosaic_scene(
    out_dir: str | Path,
    size: int,
    block: int = 1024,
    seed: int = 0,
    progress: bool = True,
    **config_overrides: Any,
) -> ScenePaths:
    """Write a very large scene block by block with memory bounded by one block (for streaming benchmarks).

    Each block is an independent synthetic scene (its own seed, placed at its map position), so land cover
    is discontinuous at block seams; that is acceptable for throughput and memory benchmarks, not for
    accuracy. A ``sar_gap`` is one continuous swath across the whole mosaic; clouds are drawn per block.
    """
    if block < 32 or size < block:
        raise ConfigError(f"mosaic needs block >= 32 and size >= block, got size={size}, block={block}")
    out_dir = ensure_writable_dir(out_dir)
    sar_gap = float(config_overrides.pop("sar_gap", 0.0))
    base = SyntheticConfig(size=block, seed=seed, **config_overrides)
    ox, oy = base.origin
    ps = base.pixel_size
    transform = Affine(ps, 0.0, ox, 0.0, -ps, oy)
    specs = synthetic_specs(base.optical_bands)
    gap_rng = np.random.default_rng([seed, 0x6A9])
    gap_start = gap_rng.uniform(0.0, size * (1.0 - sar_gap))
    stub = Scene(
        name=f"mosaic_{seed}",
        label=np.zeros((1, 1), np.uint8),
        optical=None,
        sar=None,
        dsm=None,
        valid={},
        transform=transform,
        crs=base.crs,
        specs=specs,
    )
    writers: dict[str, BlockWriter] = {}
    for modality in base.modalities:
        spec = specs[modality]
        writers[modality] = BlockWriter(
            out_dir / f"{modality}.tif",
            count=spec.bands,
            dtype="float32",
            nodata=NODATA,
            band_names=spec.band_names,
            tags=_raster_tags(stub, modality),
            width=size,
            height=size,
            transform=transform,
            crs=base.crs,
        )
    writers["label"] = BlockWriter(
        out_dir / "label.tif",
        count=1,
        dtype="uint8",
        nodata=LABEL_NODATA,
        band_names=("label",),
        tags=label_tags(CLASS_NAMES),
        width=size,
        height=size,
        transform=transform,
        crs=base.crs,
    )
    has_clouds = "optical" in base.modalities
    if has_clouds:
        writers["cloud_mask"] = BlockWriter(
            out_dir / "cloud_mask.tif",
            count=1,
            dtype="uint8",
            nodata=None,
            band_names=("cloud",),
            width=size,
            height=size,
            transform=transform,
            crs=base.crs,
        )
    blocks = list(iter_mosaic_blocks(size, block))
    try:
        for row, col, height, width in tqdm(blocks, desc="mosaic blocks", unit="block", disable=not progress):
            block_config = dataclasses.replace(
                base,
                seed=scene_seed(seed, row // block * 100003 + col // block),
                origin=(ox + col * ps, oy - row * ps),
            )
            scene = generate_scene(block_config)
            window = (row, col, height, width)
            for modality in scene.modalities:
                array = scene.image(modality)[:, :height, :width].copy()
                invalid = ~scene.valid[modality][:height, :width]
                if modality == "optical" and scene.cloud_mask is not None:
                    invalid &= ~scene.cloud_mask[:height, :width]
                if modality == "sar" and sar_gap > 0:
                    columns = np.arange(col, col + width)[None, :] - (
                        np.arange(row, row + height)[:, None] - size / 2
                    ) * (math.tan(math.radians(8.0)))
                    invalid |= (columns >= gap_start) & (columns < gap_start + sar_gap * size)
                array[:, invalid] = NODATA
                writers[modality].write(array, window)
            writers["label"].write(scene.label[None, :height, :width], window)
            if has_clouds and scene.cloud_mask is not None:
                writers["cloud_mask"].write(scene.cloud_mask[None, :height, :width].astype(np.uint8), window)
        paths = {key: writer.commit() for key, writer in writers.items()}
    finally:
        for writer in writers.values():
            writer.abort()
    return ScenePaths(directory=out_dir, **paths)


def class_fractions(label: np.ndarray, classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """Fraction of labelled pixels per class (ignore index excluded)."""
    flat = label.reshape(-1)
    flat = flat[flat < classes]
    counts = np.bincount(flat, minlength=classes).astype(np.float64)
    return counts / max(counts.sum(), 1.0)
