"""SAR rendering: class backscatter (VV, VH), slope effects, double bounce, radar shadow, speckle, in dB."""

from __future__ import annotations

import math

import numpy as np

from stars_edge.data.synthetic.config import SyntheticConfig
from stars_edge.data.synthetic.fields import cast_shadow, shift, smooth_field
from stars_edge.data.synthetic.layout import Layout
from stars_edge.data.synthetic.masks import sar_swath_valid
from stars_edge.data.synthetic.tables import (
    BACKSCATTER_DB,
    BACKSCATTER_TEXTURE_DB,
    BUILDING,
    SAR_FLOOR_DB,
    SAR_INCIDENCE_DEG,
)


def render_sar(
    config: SyntheticConfig, rng: np.random.Generator, layout: Layout
) -> tuple[np.ndarray, np.ndarray]:
    """Backscatter in dB (VV, VH) with speckle, double bounce and radar shadow; valid mask after the gap."""
    label = layout.label
    shape = label.shape
    ps = config.pixel_size
    db = BACKSCATTER_DB[label].transpose(2, 0, 1).copy()  # (2, H, W)
    db += (BACKSCATTER_TEXTURE_DB[label] * smooth_field(rng, shape, 6.0 / ps))[None]

    # the radar looks east from the west: slopes facing west (towards it) are brighter
    grad_col = np.gradient(layout.terrain, ps, axis=1)
    db += np.clip(-grad_col * 25.0, -6.0, 6.0)[None]

    building = label == BUILDING
    wall = building & ~shift(building, 0, -2, fill=False)  # building pixel whose west neighbour is not roof
    db[0][wall] += 9.0
    db[1][wall] += 5.0
    tan_elevation = math.tan(math.radians(90.0 - SAR_INCIDENCE_DEG))
    shadow = cast_shadow(
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
    sar = 10.0 * np.log10(np.maximum(linear, 10.0 ** (SAR_FLOOR_DB / 10.0)))

    valid = sar_swath_valid(config, rng, shape)
    return sar.astype(np.float32), valid
