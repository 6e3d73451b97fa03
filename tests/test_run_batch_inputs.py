"""``stars-edge run-batch`` inputs: scene lists (CSV, STAC), lists and options refused before any work, band
orders and a terrain model per scene, and real Sen1Floods11 chips, on real Dask.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from batch_scenes import (
    TRANSFORM,
    batch_on_cluster,
    local_cluster,
    main_exit_code,
    write_engines,
    write_reference,
    write_scenes,
)
from test_runtime_support import write_raster

from runtime.batch import parse_assets, read_scenes
from stars_edge.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_engines(tmp_path_factory.mktemp("engines"))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``scenes.csv`` (relative paths, empty cells) and its rasters: three modality subsets and a corrupt
    optical file."""
    return write_scenes(tmp_path_factory.mktemp("scenes"))


@pytest.fixture(scope="module")
def reference(engines: Path, scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The good scenes run one by one with ``Predictor.predict_scene``, under the batch's file names."""
    return write_reference(engines, scenes, tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """One local cluster (2 worker processes, 1 task thread each) shared by the Python-API tests."""
    with local_cluster() as local:
        yield local


def test_scene_lists_csv_and_stac(scenes: Path, tmp_path: Path) -> None:
    listed = read_scenes(scenes)
    assert [s.id for s in listed] == ["full", "sar_only", "broken", "optical_dsm"]
    assert listed[1].modalities == ("sar",) and listed[1].optical is None
    assert listed[3].cloud_mask == str(scenes.parent / "data" / "od_clouds.tif")

    import datetime

    items = []
    for scene in listed:
        item = pystac.Item(scene.id, None, None, datetime.datetime(2026, 1, 1), {})
        if scene.optical:
            item.add_asset("visual", pystac.Asset(os.path.relpath(scene.optical, tmp_path)))
        if scene.sar:
            item.add_asset("vv_vh", pystac.Asset(scene.sar))
        items.append(item)
    stac = tmp_path / "items.json"
    pystac.ItemCollection(items).save_object(dest_href=str(stac))
    mapped = read_scenes(stac, parse_assets(["optical=visual", "sar=vv_vh"]))
    assert [(s.id, s.optical, s.sar) for s in mapped] == [(s.id, s.optical, s.sar) for s in listed]
    with pytest.raises(ConfigError, match="--asset"):
        read_scenes(stac)  # no asset is named "optical" or "sar"
    with pytest.raises(ConfigError, match="KIND=ASSET_KEY"):
        parse_assets(["clouds=x"])
    (tmp_path / "item.json").write_text('{"type": "Feature", "id": "x"}')
    with pytest.raises(DataError, match="not a STAC ItemCollection"):
        read_scenes(tmp_path / "item.json")


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("id,optical,sar\na,x.tif,\na,y.tif,\n", ConfigError, "appears twice"),
        ("id,opitcal\na,x.tif\n", ConfigError, "header must be"),
        ("id,optical\n../up,x.tif\n", ConfigError, "safe file name"),
        ("id,optical,sar\na,,\n", ConfigError, "no optical, sar or dsm"),
        ("id,sar,cloud_mask\na,s.tif,c.tif\n", ConfigError, "cloud_mask but no optical"),
        ("id,optical\n", DataError, "lists no scene"),
    ],
)
def test_bad_scene_lists_fail_before_any_work(tmp_path: Path, text: str, error: type, match: str) -> None:
    (tmp_path / "s.csv").write_text(text)
    with pytest.raises(error, match=match):
        read_scenes(tmp_path / "s.csv")


def test_cli_refuses_workers_with_a_scheduler(
    engines: Path, scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run-batch", "--engines", str(engines), "--scenes", str(scenes), "--out-dir", str(tmp_path)]
    assert main_exit_code([*argv, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]) == 1
    assert "drop them with --scheduler" in capsys.readouterr().err
    assert main_exit_code([*argv, "--tile", "30"]) == 1
    assert "--tile must be a positive multiple of 32" in capsys.readouterr().err


def test_bands_and_a_terrain_model_reach_every_scene(
    engines: Path, scenes: Path, reference: Path, cluster: Any, tmp_path: Path
) -> None:
    """A ``dtm`` column and ``--bands``: optical stored in reverse band order, the DSM as altitude over
    a 300 m terrain; the batch gives the reference maps of the plain inputs."""
    data = scenes.parent / "data"
    with rasterio.open(data / "od_opt.tif") as dataset:
        reversed_optical = dataset.read()[::-1]
    with rasterio.open(data / "od_dsm.tif") as dataset:
        heights = dataset.read()
    write_raster(tmp_path / "opt_reversed.tif", reversed_optical, TRANSFORM)
    write_raster(tmp_path / "altitude.tif", heights + 300.0, TRANSFORM)
    write_raster(tmp_path / "dtm.tif", np.full_like(heights, 300.0), TRANSFORM)
    listing = tmp_path / "scenes.csv"
    listing.write_text(
        "id,optical,dsm,cloud_mask,dtm\n"
        f"optical_dsm,opt_reversed.tif,altitude.tif,{data / 'od_clouds.tif'},dtm.tif\n"
    )
    result = batch_on_cluster(
        engines, listing, tmp_path / "out", cluster, bands={"optical": ("4", "3", "2", "1")}
    )
    assert result.count("done") == 1, [r.error for r in result.scenes]
    for name in ("optical_dsm.tif", "optical_dsm.patterns.tif"):
        with rasterio.open(tmp_path / "out" / name) as got, rasterio.open(reference / name) as expected:
            assert np.array_equal(got.read(), expected.read())
    batch_on_cluster(engines, listing, tmp_path / "again", cluster)  # without --bands the bands stay reversed
    again, plain = tmp_path / "again" / "optical_dsm.tif", reference / "optical_dsm.tif"
    with rasterio.open(again) as got, rasterio.open(plain) as expected:
        assert not np.array_equal(got.read(), expected.read())


def test_real_chips_run_in_a_batch(engines: Path, shared_data: Path, cluster: Any, tmp_path: Path) -> None:
    """Sen1Floods11 S1 (VV,VH dB) alone, and with the S2 chip given its scale tag and --bands 2,3,4,8."""
    folder = shared_data / "sen1floods11_sample"
    s2, s1 = folder / "Spain_7370579_S2Hand.tif", folder / "Spain_7370579_S1Hand.tif"
    if not (s2.is_file() and s1.is_file()):
        pytest.skip(f"Sen1Floods11 chip not found in {folder}")
    with rasterio.open(s2) as dataset:
        profile, data = dataset.profile, dataset.read()
    with rasterio.open(tmp_path / "s2.tif", "w", **profile) as out:
        out.write(data)
        out.scales = (1e-4,) * data.shape[0]
    listing = tmp_path / "scenes.csv"
    listing.write_text(f"id,optical,sar\nsar_only,,{s1}\nboth,s2.tif,{s1}\n")
    result = batch_on_cluster(
        engines, listing, tmp_path / "out", cluster, bands={"optical": ("2", "3", "4", "8")}
    )
    assert result.count("done") == 2, [r.error for r in result.scenes]
