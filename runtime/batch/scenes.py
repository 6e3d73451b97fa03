"""Scene lists for ``run-batch``: a CSV (``id,optical,sar,dsm,cloud_mask``) or a STAC ItemCollection.

Structural problems (unknown column, duplicate or unsafe id, a scene without any modality) fail the whole
list at once, before a cluster starts; problems with a scene's files (missing, unreadable, no overlap) are
that scene's own failure, recorded in the summary while the others go on.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stars_edge.errors import ConfigError, DataError
from stars_edge.modalities import MODALITIES

#: Columns of a scene CSV: the id, the three modalities, the optical cloud mask and the terrain model
#: subtracted from the DSM (``--dtm`` of ``stars-edge run``).
INPUT_KINDS: tuple[str, ...] = (*MODALITIES, "cloud_mask", "dtm")
COLUMNS: tuple[str, ...] = ("id", *INPUT_KINDS)
#: Scene ids become file names (``OUT/<id>.tif``): letters, digits, ``.``, ``_`` and ``-`` only.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class Scene:
    """One scene of a batch: its id and the inputs it has (``None`` = modality absent)."""

    id: str
    optical: str | None = None
    sar: str | None = None
    dsm: str | None = None
    cloud_mask: str | None = None
    dtm: str | None = None

    @property
    def inputs(self) -> dict[str, str]:
        """The given inputs, by kind (``optical``, ``sar``, ``dsm``, ``cloud_mask``, ``dtm``)."""
        return {k: v for k in INPUT_KINDS if (v := getattr(self, k)) is not None}

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)


def read_scenes(path: str | os.PathLike[str], assets: Mapping[str, str] | None = None) -> list[Scene]:
    """Read a scene list: a CSV, or a STAC ItemCollection (``.json``/``.geojson``, or JSON content).

    ``assets`` maps input kinds to STAC asset keys (``{"optical": "visual"}``); kinds not mapped use the
    asset of their own name. Relative paths are relative to the list's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"scene list {path} does not exist; pass a CSV or a STAC ItemCollection JSON")
    try:
        head = path.read_text(encoding="utf-8-sig")[:4096].lstrip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read scene list {path}: {exc}; pass a UTF-8 CSV or JSON file") from exc
    if path.suffix.lower() in (".json", ".geojson") or head.startswith("{"):
        scenes = _read_stac(path, dict(assets or {}))
    else:
        if assets:
            raise ConfigError(f"--asset applies to STAC ItemCollections, but {path} is a CSV; drop --asset")
        scenes = _read_csv(path)
    return check_scenes(scenes, str(path))


def check_scenes(scenes: Sequence[Scene], where: str = "scene list") -> list[Scene]:
    """Refuse an empty list, unsafe or duplicate ids and scenes without any modality."""
    if not scenes:
        raise DataError(f"{where} lists no scene; add one row (or item) per scene")
    seen: set[str] = set()
    for scene in scenes:
        if not _ID.match(scene.id) or ".." in scene.id:
            raise ConfigError(
                f"{where}: scene id {scene.id!r} is not a safe file name; use letters, digits, '.', '_', '-'"
            )
        if scene.id in seen:
            raise ConfigError(f"{where}: scene id {scene.id!r} appears twice; ids must be unique")
        seen.add(scene.id)
        if not scene.modalities:
            raise ConfigError(
                f"{where}: scene {scene.id!r} has no optical, sar or dsm input; give at least one"
            )
        if scene.cloud_mask is not None and scene.optical is None:
            raise ConfigError(f"{where}: scene {scene.id!r} has a cloud_mask but no optical input")
        if scene.dtm is not None and scene.dsm is None:
            raise ConfigError(f"{where}: scene {scene.id!r} has a dtm but no dsm input to subtract it from")
    return list(scenes)


def _resolve(value: str, base: Path) -> str:
    """Paths relative to the list's folder; URLs and GDAL virtual paths (``/vsi...``) as given."""
    if _URL.match(value) or value.startswith("/vsi"):
        return value
    candidate = Path(value).expanduser()
    return os.path.normpath(candidate if candidate.is_absolute() else base / candidate)


def _read_csv(path: Path) -> list[Scene]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip().lower() for name in reader.fieldnames or []]
        unknown = [name for name in header if name not in COLUMNS]
        if "id" not in header or unknown:
            raise ConfigError(
                f"{path}: the header must be id,{','.join(INPUT_KINDS)} (any order, unused columns may be "
                f"left out); found {','.join(header) or 'nothing'}"
            )
        reader.fieldnames = header
        scenes = []
        for row in reader:
            cells = {k: (v or "").strip() for k, v in row.items() if k is not None}
            if not any(cells.values()):
                continue
            inputs = {k: _resolve(cells[k], path.parent) for k in INPUT_KINDS if cells.get(k)}
            scenes.append(Scene(id=cells.get("id", ""), **inputs))
    return scenes


def parse_assets(pairs: Sequence[str]) -> dict[str, str]:
    """``["optical=visual", "sar=vv_vh"]`` -> ``{"optical": "visual", "sar": "vv_vh"}``."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        kind, sep, key = pair.partition("=")
        kind, key = kind.strip().lower(), key.strip()
        if not sep or not key or kind not in INPUT_KINDS:
            raise ConfigError(
                f"--asset {pair!r}: use KIND=ASSET_KEY with KIND one of {', '.join(INPUT_KINDS)}"
            )
        mapping[kind] = key
    return mapping


def _read_stac(path: Path, assets: dict[str, str]) -> list[Scene]:
    """Items of a STAC ItemCollection; each input kind is read from its mapped asset (absent if missing)."""
    import pystac

    try:
        json.loads(path.read_text(encoding="utf-8-sig"))
        collection = pystac.ItemCollection.from_file(str(path))
    except (ValueError, KeyError, TypeError, AttributeError, pystac.STACError, pystac.STACTypeError) as exc:
        raise DataError(
            f"{path} is not a STAC ItemCollection ({type(exc).__name__}: {exc}); pass a FeatureCollection "
            "of STAC Items or a CSV"
        ) from exc
    keys = {kind: assets.get(kind, kind) for kind in INPUT_KINDS}
    available: set[str] = set()
    scenes = []
    for item in collection:
        available.update(item.assets)
        inputs = {}
        for kind, key in keys.items():
            asset = item.assets.get(key)
            if asset is not None and asset.href:
                inputs[kind] = _resolve(asset.href, path.parent)
        scenes.append(Scene(id=item.id, **inputs))
    if collection.items and not any(scene.modalities for scene in scenes):
        mapped = ", ".join(f"{k}={v}" for k, v in keys.items() if k in MODALITIES)
        raise ConfigError(
            f"{path}: no item has an asset for {mapped}; map the asset keys with --asset "
            f"(keys found: {', '.join(sorted(available)) or 'none'})"
        )
    return scenes
