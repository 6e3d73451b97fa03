"""The synthetic scenes the end-to-end benchmark streams, written once and cached in ``--workdir``.

Scenes: ``full`` (every modality valid, one engine per tile), ``gaps`` (clouds and a missing SAR swath, so
tiles mix patterns per pixel), ``clouds`` (about 10 % cloud, flagged in the cloud mask) and ``s2like`` /
``s2like_clouds``: ``full`` / ``clouds`` stored the way Sentinel-2 products are, optical as uint16 digital
numbers with a 1e-4 scale, every raster DEFLATE-compressed with a predictor (horizontal differencing for
integers, floating-point for SAR and DSM) in 512 px internal tiles. Decoding then costs real CPU, which is
what the end-to-end target is about.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stars_edge.io import write_json_atomic

#: Synthetic end-to-end scenes: ``full`` has every modality valid everywhere (one engine per tile); ``gaps``
#: has clouds (flagged in ``cloud_mask.tif``) and a missing SAR swath, so tiles mix patterns per pixel;
#: ``clouds`` has about 10 % cloud; the ``s2like`` kinds re-store another kind (``S2LIKE_SOURCES``).
E2E_SCENES: dict[str, dict[str, Any]] = {
    "full": {},
    "gaps": {"cloud_cover": 0.15, "sar_gap": 0.2},
    "clouds": {"cloud_cover": 0.10},
    "s2like": {},
    "s2like_clouds": {},
}
#: Sentinel-2-like scenes and the synthetic scene each one re-stores.
S2LIKE_SOURCES: dict[str, str] = {"s2like": "full", "s2like_clouds": "clouds"}
#: Scenes that also run a cloudy variant at the largest size (issue 21's targets need both).
CLOUDY_VARIANTS: dict[str, str] = {"s2like": "s2like_clouds"}
#: Sentinel-2 L2A stores reflectance as uint16 digital numbers: reflectance = DN * 1e-4.
S2_SCALE = 1e-4


def scene_paths(workdir: Path, size: int, seed: int, kind: str = "full") -> dict[str, Path]:
    """Write (once, cached in ``workdir``) a three-modality synthetic mosaic scene of ``size`` px.

    Returns the optical, SAR and DSM rasters, plus the cloud mask for scenes that have clouds.
    """
    from stars_edge.data.synthetic import write_mosaic_scene

    folder = workdir / (f"scene_{size}_seed{seed}" + ("" if kind == "full" else f"_{kind}"))
    done = folder / "complete.json"
    if done.is_file():
        return {k: Path(v) for k, v in json.loads(done.read_text()).items()}
    if kind in S2LIKE_SOURCES:
        paths = {
            m: store_sentinel2_like(p, folder / p.name, m)
            for m, p in scene_paths(workdir, size, seed, S2LIKE_SOURCES[kind]).items()
        }
        write_json_atomic(done, {k: str(v) for k, v in paths.items()})
        return paths
    written = write_mosaic_scene(folder, size=size, block=min(1024, size), seed=seed, **E2E_SCENES[kind])
    keys = ("optical", "sar", "dsm", "cloud_mask") if kind != "full" else ("optical", "sar", "dsm")
    paths = {k: Path(getattr(written, k)) for k in keys if getattr(written, k) is not None}
    write_json_atomic(done, {k: str(v) for k, v in paths.items()})
    return paths


def store_sentinel2_like(source: Path, target: Path, modality: str) -> Path:
    """Rewrite one raster as Sentinel-2 products are stored (see the module docstring), block by block; a
    cloud mask stays uint8 (DEFLATE, horizontal predictor), as a product's mask does."""
    import numpy as np
    import rasterio

    target.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(source) as src:
        profile = src.profile.copy()
        integer = modality == "optical"
        mask = modality == "cloud_mask"
        profile.update(
            driver="GTiff",
            tiled=True,
            blockxsize=512,
            blockysize=512,
            compress="deflate",
            predictor=2 if integer or mask else 3,
            zlevel=6,
            dtype="uint16" if integer else ("uint8" if mask else "float32"),
            nodata=0 if integer else src.nodata,
            BIGTIFF="IF_SAFER",
        )
        with rasterio.open(target, "w", **profile) as dst:
            if integer:
                dst.scales = (S2_SCALE,) * src.count
            for _, window in src.block_windows(1):
                data = src.read(window=window)
                if integer:
                    valid = np.isfinite(data) & (data != src.nodata if src.nodata is not None else True)
                    counts = np.clip(np.round(np.nan_to_num(data) / S2_SCALE), 1, 65535).astype(np.uint16)
                    data = np.where(valid, counts, 0).astype(np.uint16)
                dst.write(data, window=window)
    return target
