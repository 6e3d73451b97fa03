"""What each sensor misses: cloud thickness (optical), the missing SAR swath, DSM voids.

Each function draws from the renderer's own generator at the point the renderer calls it, so a scene
depends only on its config and seed.
"""

from __future__ import annotations

import math

import numpy as np

from stars_edge.data.synthetic.config import SyntheticConfig
from stars_edge.data.synthetic.fields import quantile, smooth_field


def cloud_thickness(config: SyntheticConfig, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Cloud optical thickness (0 = clear .. 1 = opaque) covering ``cloud_cover`` of ``cloud_region``."""
    ps = config.pixel_size
    density = smooth_field(rng, shape, config.cloud_scale_m / ps, fractal=2.5)
    region = np.ones(shape, dtype=bool)
    if config.cloud_region is not None:
        r0, c0, r1, c1 = config.cloud_region
        n = config.size
        region[:] = False
        region[int(r0 * n) : math.ceil(r1 * n), int(c0 * n) : math.ceil(c1 * n)] = True
    threshold = quantile(
        density[region] if region.any() else density,
        1.0 - config.cloud_cover / max(float(region.mean()), 1e-6),
    )
    thickness = np.clip((density - threshold) / 0.6 + 0.3, 0.0, 1.0) * (density > threshold - 0.18)
    return np.where(region, thickness, 0.0).astype(np.float32)


def sar_swath_valid(config: SyntheticConfig, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """SAR valid mask: False inside a (slightly slanted) missing swath ``sar_gap`` of the width wide."""
    valid = np.ones(shape, dtype=bool)
    if config.sar_gap > 0:
        n = config.size
        width = config.sar_gap * n
        start = rng.uniform(0.0, n - width)
        slant = (np.arange(n, dtype=np.float32)[:, None] - n / 2) * math.tan(math.radians(8.0))
        col = np.arange(n, dtype=np.float32)[None, :] - slant
        valid &= ~((col >= start) & (col < start + width))
    return valid


def dsm_void_valid(config: SyntheticConfig, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """DSM valid mask: False in blob-shaped voids covering ``dsm_voids`` of the scene."""
    valid = np.ones(shape, dtype=bool)
    if config.dsm_voids > 0:
        voids = smooth_field(rng, shape, 12.0 / config.pixel_size)
        valid &= voids <= quantile(voids, 1.0 - config.dsm_voids)
    return valid
