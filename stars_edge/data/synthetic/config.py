"""``SyntheticConfig``: every knob of one synthetic scene, validated."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from stars_edge.data.synthetic.tables import OPTICAL_BAND_CATALOGUE
from stars_edge.errors import ConfigError
from stars_edge.modalities import MODALITIES


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
