"""Optical rendering: class spectra x texture x illumination (hillshade, cast shadows), clouds, noise."""

from __future__ import annotations

import math

import numpy as np

from stars_edge.data.synthetic.config import SyntheticConfig
from stars_edge.data.synthetic.fields import cast_shadow, hillshade, shift, smooth_field
from stars_edge.data.synthetic.layout import Layout
from stars_edge.data.synthetic.masks import cloud_thickness
from stars_edge.data.synthetic.tables import CLOUD_REFLECTANCE, PAINTS, ROOFS, SPECTRA, TEXTURE_AMPLITUDE


def render_optical(
    config: SyntheticConfig, rng: np.random.Generator, layout: Layout
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reflectance (bands, H, W), the cloud mask and the optical valid mask."""
    label = layout.label
    shape = label.shape
    ps = config.pixel_size
    bands = config.optical_bands
    spectra = SPECTRA[:, :bands]
    reflectance = spectra[label].transpose(2, 0, 1).copy()  # (bands, H, W)
    building = layout.roof_type >= 0
    reflectance[:, building] = ROOFS[layout.roof_type[building].astype(np.int64), :bands].T
    car = layout.paint >= 0
    reflectance[:, car] = PAINTS[layout.paint[car].astype(np.int64), :bands].T

    texture = 0.6 * smooth_field(rng, shape, 1.5 / ps) + 0.4 * smooth_field(rng, shape, 15.0 / ps)
    reflectance *= 1.0 + TEXTURE_AMPLITUDE[label] * texture
    band_jitter = 0.04 * smooth_field(rng, shape, 8.0 / ps)
    reflectance[bands // 2 :] *= 1.0 + band_jitter

    surface = layout.terrain + layout.object_height
    illumination = hillshade(surface, ps, config.sun_azimuth_deg, config.sun_elevation_deg)
    azimuth = math.radians(config.sun_azimuth_deg)
    toward_sun = (-math.cos(azimuth), math.sin(azimuth))  # (row, col): north is -row
    tan_elevation = math.tan(math.radians(config.sun_elevation_deg))
    max_px = int(min(40.0 / tan_elevation / ps, config.size))
    shadow = cast_shadow(surface, toward_sun, tan_elevation, ps, max_px)
    direct = np.where(shadow, 0.0, illumination)
    reflectance *= (0.25 + 0.75 * direct)[None]

    cloud_mask = np.zeros(shape, dtype=bool)
    if config.cloud_cover > 0:
        thickness = cloud_thickness(config, rng, shape)
        if config.cloud_shadows:
            drift = 1500.0 / tan_elevation / ps  # cloud base ~1.5 km: its shadow falls away from the sun
            offset = (round(-toward_sun[0] * drift), round(-toward_sun[1] * drift))
            shade = shift(thickness, -offset[0], -offset[1], fill=0.0)
            reflectance *= (1.0 - 0.6 * shade * (thickness < 0.3))[None]
        reflectance = (1.0 - thickness)[None] * reflectance + thickness[None] * CLOUD_REFLECTANCE
        cloud_mask = thickness >= 0.5

    reflectance += rng.normal(0.0, config.optical_noise, size=reflectance.shape).astype(np.float32)
    np.clip(reflectance, 1e-4, 1.5, out=reflectance)
    return reflectance.astype(np.float32), cloud_mask, ~cloud_mask
