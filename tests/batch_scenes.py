"""What the ``run-batch`` tests share: tiny real engines, four scenes with different modality subsets (one of
them corrupt), the reference outputs of single-scene runs, a local Dask cluster, and ways to run and compare.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import distributed
import numpy as np
import pytest
import rasterio
from affine import Affine
from test_runtime_support import build_engines, make_physical, random_weights, write_raster

from runtime import Predictor
from runtime.batch import Scene, read_scenes, run_batch
from stars_edge.cli import main
from stars_edge.io import sha256_file

TRANSFORM = Affine(5.0, 0.0, 300000.0, 0.0, -5.0, 4600000.0)
TILE, OVERLAP = 32, 8
GOOD = ("full", "sar_only", "optical_dsm")
#: ``full`` spans more than one 256-row output block, so an interruption late in it leaves durable rows.
FULL_SHAPE = (320, 70)
FULL_PIXELS = FULL_SHAPE[0] * FULL_SHAPE[1]
#: Tile rows of ``full``: ceil((320 - 8) / 24) = 13; stopping after row 11 is past the first output block.
STOP_AFTER_ROW = 11
OUTPUTS = ("{}.tif", "{}.patterns.tif")


def write_engines(folder: Path) -> Path:
    """Tiny real engines (4 classes) for every pattern."""
    return build_engines(folder, random_weights(classes=4), classes=4)


def write_scenes(folder: Path) -> Path:
    """``scenes.csv`` (relative paths, empty cells) and its rasters: three modality subsets and a corrupt
    optical file."""
    (folder / "data").mkdir()
    full = make_physical(FULL_SHAPE, seed=1)
    full["sar"][:, 30:60, 10:40] = np.nan
    write_raster(folder / "data" / "full_opt.tif", full["optical"], TRANSFORM)
    write_raster(folder / "data" / "full_sar.tif", full["sar"], TRANSFORM)
    write_raster(folder / "data" / "full_dsm.tif", full["dsm"], TRANSFORM)
    sar = make_physical((40, 50), seed=2)["sar"]
    write_raster(folder / "data" / "sar_only.tif", sar, TRANSFORM)
    opt_dsm = make_physical((48, 64), seed=3)
    clouds = np.zeros((1, 48, 64), dtype=np.uint8)
    clouds[0, :20, :30] = 1
    write_raster(folder / "data" / "od_opt.tif", opt_dsm["optical"], TRANSFORM)
    write_raster(folder / "data" / "od_dsm.tif", opt_dsm["dsm"], TRANSFORM)
    write_raster(folder / "data" / "od_clouds.tif", clouds, TRANSFORM)
    (folder / "data" / "broken.tif").write_bytes(b"II*\x00" + b"\x17" * 200)  # a TIFF header, then junk
    (folder / "scenes.csv").write_text(
        "id,optical,sar,dsm,cloud_mask\n"
        "full,data/full_opt.tif,data/full_sar.tif,data/full_dsm.tif,\n"
        "sar_only,,data/sar_only.tif,,\n"
        "broken,data/broken.tif,,,\n"
        "optical_dsm,data/od_opt.tif,,data/od_dsm.tif,data/od_clouds.tif\n"
    )
    return folder / "scenes.csv"


def write_reference(engines: Path, scenes: Path, out: Path) -> Path:
    """The good scenes run one by one with ``Predictor.predict_scene``, under the batch's file names."""
    with Predictor(engines, backend="onnxruntime", threads=1) as predictor:
        for scene in read_scenes(scenes):
            if scene.id in GOOD:
                predictor.predict_scene(
                    optical=scene.optical,
                    sar=scene.sar,
                    dsm=scene.dsm,
                    cloud_mask=scene.cloud_mask,
                    out=out / f"{scene.id}.tif",
                    pattern_map=out / f"{scene.id}.patterns.tif",
                    tile=TILE,
                    overlap=OVERLAP,
                    progress=False,
                )
    return out


def local_cluster() -> distributed.LocalCluster:
    """A local cluster of 2 worker processes, 1 task thread each (use it in a ``with`` block)."""
    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
    )


def main_exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return int(exit_info.value.code or 0)


def batch_on_cluster(
    engines: Path, scenes: Path | list[Scene], out: Path, cluster: Any, **kwargs: Any
) -> Any:
    return run_batch(
        engines,
        scenes,
        out,
        scheduler=cluster.scheduler_address,
        backend="onnxruntime",
        tile=TILE,
        overlap=OVERLAP,
        progress=False,
        log=None,
        **kwargs,
    )


def assert_same_outputs(
    out: Path, reference: Path, ids: tuple[str, ...] = GOOD, resumed: tuple[str, ...] = ()
) -> None:
    """Same pixels, grid and tags; the same bytes too, except for scenes resumed in a partial GeoTIFF
    (GDAL lays out a file reopened for update differently; the runtime promises equal arrays there)."""
    for scene_id in ids:
        for pattern in OUTPUTS:
            name = pattern.format(scene_id)
            with rasterio.open(out / name) as got, rasterio.open(reference / name) as want:
                np.testing.assert_array_equal(got.read(), want.read())
                assert got.transform == want.transform and got.crs == want.crs
                assert got.tags() == want.tags()
            if scene_id not in resumed:
                assert sha256_file(out / name) == sha256_file(reference / name), name


def statuses(result: Any) -> dict[str, str]:
    return {scene.id: scene.status for scene in result.scenes}
