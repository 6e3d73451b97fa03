"""Land cover, terrain and object heights: the single ground truth every sensor renders."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stars_edge.data.synthetic.config import SyntheticConfig
from stars_edge.data.synthetic.fields import hash_uniform, quantile, smooth_field
from stars_edge.data.synthetic.tables import (
    BACKGROUND,
    BUILDING,
    CAR,
    LOW_VEGETATION,
    PAINTS,
    ROAD,
    ROOFS,
    TREE,
    WATER,
)


@dataclass
class Layout:
    """Intermediate land-cover state shared by the sensor renderers."""

    label: np.ndarray
    terrain: np.ndarray
    object_height: np.ndarray
    roof_type: np.ndarray  # index into ROOFS for building pixels, -1 elsewhere
    paint: np.ndarray  # index into PAINTS for car pixels, -1 elsewhere


def build_layout(config: SyntheticConfig, rng: np.random.Generator) -> Layout:
    """Land cover, terrain and object heights: the single ground truth every sensor renders."""
    n = config.size
    ps = config.pixel_size
    shape = (n, n)
    salt = int(rng.integers(0, 2**31 - 1))
    rows = np.arange(n, dtype=np.float32)[:, None] * ps
    cols = np.arange(n, dtype=np.float32)[None, :] * ps

    # terrain: fractal relief plus a gentle regional slope
    terrain = smooth_field(rng, shape, 250.0 / ps, fractal=3.0) * config.terrain_relief_m
    slope = rng.normal(0.0, 0.01, size=2).astype(np.float32)
    terrain = terrain + 2.0 + slope[0] * (rows - n * ps / 2) + slope[1] * (cols - n * ps / 2)
    label = np.full(shape, BACKGROUND, dtype=np.uint8)
    object_height = np.zeros(shape, dtype=np.float32)

    # open land: moist low ground carries low vegetation, forests in patches with ragged edges
    moisture = smooth_field(rng, shape, 60.0 / ps) - 0.4 * (terrain - terrain.mean()) / (terrain.std() + 1e-6)
    moisture += 0.35 * smooth_field(rng, shape, 4.0 / ps)
    label[moisture > quantile(moisture, 1.0 - config.vegetation_fraction)] = LOW_VEGETATION
    object_height[label == LOW_VEGETATION] = 0.3

    urban_field = smooth_field(rng, shape, 180.0 / ps)
    urban = (
        urban_field > quantile(urban_field, 1.0 - config.urban_fraction)
        if config.urban_fraction > 0
        else (np.zeros(shape, dtype=bool))
    )
    forest_field = smooth_field(rng, shape, 90.0 / ps) + 0.3 * smooth_field(rng, shape, 3.0 / ps)
    forest_field -= 2.0 * urban
    forest = (
        forest_field > quantile(forest_field, 1.0 - config.forest_fraction)
        if config.forest_fraction > 0
        else (np.zeros(shape, dtype=bool))
    )
    canopy_field = smooth_field(rng, shape, 30.0 / ps)
    at = np.nonzero(forest)
    crowns = tree_crowns(
        rows[at[0], 0], cols[0, at[1]], cell_m=6.0, radius_range=(2.0, 3.5), presence=1.0, seed=salt + 1
    )
    label[at] = TREE
    object_height[at] = (12.0 + 3.0 * canopy_field[at]) * (0.75 + 0.25 * crowns)

    single_cell_m = 100.0 / math.sqrt(max(config.single_trees_per_ha, 1e-3))
    single = tree_crowns(
        rows,
        cols,
        cell_m=single_cell_m,
        radius_range=(2.0, 4.5),
        presence=min(1.0, config.single_trees_per_ha * single_cell_m**2 / 1e4),
        seed=salt + 2,
    )
    tree_height = 6.0 + 8.0 * hash_uniform(
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
        half_width = rng.uniform(5.0, 12.0) + 1.5 * smooth_field(
            rng, (n, 1) if along is rows else (1, n), 30 / ps
        )
        river = np.abs(across - wiggle) < half_width
        water |= river
        water_level[river] = (terrain - 1.5)[river]
    remaining = config.water_fraction - water.mean()
    if remaining > 0:
        lake_level = quantile(terrain, remaining)
        lakes = (terrain <= lake_level) & ~water
        water |= lakes
        water_level[lakes] = lake_level
    label[water] = WATER
    object_height[water] = 0.0
    terrain = np.where(water, np.nan_to_num(water_level, nan=0.0), terrain).astype(np.float32)

    roof_type = np.full(shape, -1, dtype=np.int8)
    paint = np.full(shape, -1, dtype=np.int8)
    add_main_roads(config, rng, rows, cols, label, object_height, paint, salt)
    if urban.any():
        add_urban(config, rng, rows, cols, urban, water, label, object_height, roof_type, paint, salt)
    return Layout(label, terrain.astype(np.float32), object_height, roof_type, paint)


def tree_crowns(
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
    radius = radius_range[0] + (radius_range[1] - radius_range[0]) * hash_uniform(seed, cell_r, cell_c, 0)
    radius = np.minimum(radius, 0.45 * cell_m)
    margin: np.ndarray = radius / cell_m
    centre_r = (cell_r + margin + (1 - 2 * margin) * hash_uniform(seed, cell_r, cell_c, 1)) * cell_m
    centre_c = (cell_c + margin + (1 - 2 * margin) * hash_uniform(seed, cell_r, cell_c, 2)) * cell_m
    present = hash_uniform(seed, cell_r, cell_c, 3) < presence
    distance2 = ((rows - centre_r) ** 2 + (cols - centre_c) ** 2) / (radius * radius)
    dome = np.sqrt(np.clip(1.0 - distance2, 0.0, 1.0))
    return np.where(present, dome, 0.0).astype(np.float32)


def add_main_roads(
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
        car = lane & in_slot & (hash_uniform(salt + 10 + index, slot, side) < 0.4 * config.car_density)
        car_r, car_c = pick_r[car], pick_c[car]
        label[car_r, car_c] = CAR
        object_height[car_r, car_c] = 1.5
        colour = hash_uniform(salt + 20 + index, slot[car], side[car], 1) * len(PAINTS)
        paint[car_r, car_c] = colour.astype(np.int8)


def add_urban(
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
    lots_u = 1 + np.floor(3 * hash_uniform(salt + 30, cell_u, cell_v, 0))
    lots_v = 1 + np.floor(3 * hash_uniform(salt + 30, cell_u, cell_v, 1))
    lot_w_u, lot_w_v = block_u / lots_u, block_v / lots_v
    lot_u, lot_v = np.floor(inner_u / lot_w_u), np.floor(inner_v / lot_w_v)
    pos_u, pos_v = inner_u - lot_u * lot_w_u, inner_v - lot_v * lot_w_v
    lot_key = (cell_u * 7 + lot_u, cell_v * 7 + lot_v)
    margin_u = 2.0 + 0.2 * lot_w_u * hash_uniform(salt + 31, *lot_key, 0)
    margin_v = 2.0 + 0.2 * lot_w_v * hash_uniform(salt + 31, *lot_key, 1)
    in_footprint = (
        (pos_u > margin_u) & (pos_u < lot_w_u - margin_u) & (pos_v > margin_v) & (pos_v < lot_w_v - margin_v)
    )
    has_building = hash_uniform(salt + 32, *lot_key) < config.building_fill
    building = ~streets & in_footprint & has_building

    storeys = 1 + np.floor(6 * hash_uniform(salt + 33, *lot_key) ** 2)
    height = 3.0 * storeys + 1.0
    kind = np.minimum(np.floor(len(ROOFS) * hash_uniform(salt + 34, *lot_key)), len(ROOFS) - 1)
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
        occupied = hash_uniform(salt + 40 + key, cell[candidate], slot[candidate], side[candidate])
        car = np.flatnonzero(candidate)[occupied < config.car_density]
        at = (pick_r[car], pick_c[car])
        label[at] = CAR
        object_height[at] = 1.5
        colour = hash_uniform(salt + 50 + key, cell[car], slot[car], side[car]) * len(PAINTS)
        paint[at] = np.minimum(colour, len(PAINTS) - 1).astype(np.int8)
