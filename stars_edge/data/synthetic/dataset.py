"""Synthetic dataset folders (``index.json`` + one folder per scene) and block-wise mosaics."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from tqdm import tqdm

from stars_edge.data.geotiff import LABEL_NODATA, NODATA, BlockWriter
from stars_edge.data.synthetic.config import SyntheticConfig
from stars_edge.data.synthetic.scene import (
    Scene,
    ScenePaths,
    generate_scene,
    label_tags,
    raster_tags,
    write_scene,
)
from stars_edge.data.synthetic.tables import CLASS_NAMES, synthetic_specs
from stars_edge.errors import ConfigError
from stars_edge.io import ensure_writable_dir, write_json_atomic
from stars_edge.modalities import IGNORE_INDEX


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
            tags=raster_tags(stub, modality),
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
