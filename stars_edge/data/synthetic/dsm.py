"""DSM rendering: terrain + object heights (buildings, tree crowns, cars) + noise, optional voids."""

from __future__ import annotations

import numpy as np

from stars_edge.data.synthetic.config import SyntheticConfig
from stars_edge.data.synthetic.layout import Layout
from stars_edge.data.synthetic.masks import dsm_void_valid


def render_dsm(
    config: SyntheticConfig, rng: np.random.Generator, layout: Layout
) -> tuple[np.ndarray, np.ndarray]:
    """Surface heights (terrain + objects + noise) and the valid mask after voids."""
    shape = layout.label.shape
    surface = layout.terrain + layout.object_height
    noise = rng.normal(0.0, config.dsm_noise_m, size=shape).astype(np.float32)
    dsm = (surface + noise).astype(np.float32)
    valid = dsm_void_valid(config, rng, shape)
    return dsm[None], valid
