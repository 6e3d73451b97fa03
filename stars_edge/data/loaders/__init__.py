"""Dataset loaders: the synthetic benchmark folder and the real layouts users have, as lists of ``Scene``.

Why one registry: training, stats and evaluation all take ``--data DIR --format F``; every format turns its
own file layout and label encoding into the same ``Scene`` (physical units, uint8 label with 255 = ignore,
validity masks), with modalities warped onto the label's grid when CRS or resolution differ.

Formats (details and sources in docs/DATA.md):

- ``synthetic``: a folder written by ``stars-edge data synth`` (index.json + one folder per scene).
- ``sen1floods11``: hand-labelled chips ``*_S1Hand.tif`` / ``*_S2Hand.tif`` / ``*_LabelHand.tif`` (in
  S1Hand/, S2Hand/, LabelHand/ or one flat folder); splits from ``flood_{train,valid,test}_data.csv``.
- ``earthmiss``: ``<City>/images/{RGB,SAR}/*`` + ``<City>/masks/*``; split by city as in the EarthMiss code.
- ``whu-opt-sar``: ``{optical,sar,lbl}/*.tif`` (labels 0,10..70) or ``{train,val,test}/{opt,sar,lbl}``.
- ``potsdam``: ``4_Ortho_RGBIR`` (or ``2_Ortho_RGB``), ``1_DSM``, ``5_Labels_all[_noBoundary]`` (RGB colours).
- ``vaihingen``: ``top/``, ``dsm/`` and the ground-truth folder (RGB colours).

One module per format (``synthetic_folder``, ``sen1floods11``, ``earthmiss``, ``whu_opt_sar``, ``potsdam``,
``vaihingen``; ``isprs`` holds what the last two share), each with its ``detect`` check and its
``DatasetFormat``; ``core`` reads a scene for any of them. This package is the registry and the public API.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stars_edge.data.geotiff import Grid, RasterData
from stars_edge.data.loaders import earthmiss, potsdam, sen1floods11, synthetic_folder, vaihingen, whu_opt_sar
from stars_edge.data.loaders.core import (
    SPLITS,
    BandSelection,
    DatasetFormat,
    LazyScenes,
    SceneSource,
    load_scene,
)
from stars_edge.data.loaders.earthmiss import EARTHMISS_CITIES
from stars_edge.data.loaders.isprs import ISPRS_CLASSES, ISPRS_COLOURS
from stars_edge.data.loaders.potsdam import POTSDAM_SPLITS
from stars_edge.data.loaders.synthetic_folder import synthetic_format
from stars_edge.data.loaders.vaihingen import VAIHINGEN_SPLITS
from stars_edge.data.synthetic import Scene
from stars_edge.errors import DataError
from stars_edge.modalities import MODALITIES, ModalitySpec, specs_from_dicts

DATASET_FORMATS: dict[str, DatasetFormat] = {
    "synthetic": synthetic_format(),
    "sen1floods11": sen1floods11.FORMAT,
    "earthmiss": earthmiss.FORMAT,
    "whu-opt-sar": whu_opt_sar.FORMAT,
    "potsdam": potsdam.FORMAT,
    "vaihingen": vaihingen.FORMAT,
}

#: Layout checks in the order ``detect_format`` tries them (the first match wins).
_DETECTORS: tuple[tuple[str, Callable[[Path], bool]], ...] = (
    ("synthetic", synthetic_folder.detect),
    ("sen1floods11", sen1floods11.detect),
    ("potsdam", potsdam.detect),
    ("vaihingen", vaihingen.detect),
    ("whu-opt-sar", whu_opt_sar.detect),
    ("earthmiss", earthmiss.detect),
)


def detect_format(root: str | Path) -> str:
    """The format whose layout ``root`` has (``index.json``: synthetic, ``S1Hand/``: sen1floods11, ...)."""
    root = Path(root)
    for name, matches in _DETECTORS:
        if matches(root):
            return name
    raise DataError(
        f"cannot tell the dataset layout of {root} (no index.json, S1Hand/, 4_Ortho_RGBIR/, top/, sar/ or "
        f"<City>/images/); pass --format, one of: {', '.join(DATASET_FORMATS)}"
    )


def _resolve_format(root: Path, name: str) -> DatasetFormat:
    key = detect_format(root) if name.strip().lower() == "auto" else name
    fmt = get_format(key)
    return synthetic_format(root) if fmt.name == "synthetic" else fmt


def get_format(name: str) -> DatasetFormat:
    """The registered format called ``name``; DataError listing the valid names otherwise."""
    key = name.strip().lower().replace("_", "-")
    key = {"whuoptsar": "whu-opt-sar", "whu": "whu-opt-sar", "sen1floods": "sen1floods11"}.get(key, key)
    if key not in DATASET_FORMATS:
        raise DataError(f"unknown dataset format {name!r}; valid formats: {', '.join(DATASET_FORMATS)}")
    return DATASET_FORMATS[key]


def load_specs(stats: str | Path | Mapping[str, Any]) -> dict[str, ModalitySpec]:
    """Normalisation specs from a stats.json written by `stars-edge data stats` (or its parsed content)."""
    if isinstance(stats, Mapping):
        payload: Any = stats
        source = "stats mapping"
    else:
        path = Path(stats)
        source = str(path)
        if not path.is_file():
            raise DataError(
                f"{path} not found; compute it with `stars-edge data stats --data DIR --out {path}`"
            )
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path} is not valid JSON ({exc}); recompute it with `stars-edge data stats`"
            ) from exc
    items = payload.get("specs") if isinstance(payload, Mapping) else None
    if not isinstance(items, list) or not items:
        raise DataError(f"{source} has no 'specs' list; recompute it with `stars-edge data stats`")
    return specs_from_dicts(items)


def list_scene_sources(root: str | Path, split: str = "train", format: str = "auto") -> list[SceneSource]:
    """The scenes of one split of a dataset, without reading pixels."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset root {root} does not exist; check the path")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    fmt = _resolve_format(root, format)
    sources = fmt.list_scenes(root)
    selected = [s for s in sources if split == "all" or s.split == split]
    if not selected:
        present = sorted({s.split for s in sources})
        raise DataError(
            f"{root}: no {fmt.name} scenes in split {split!r} "
            f"(splits present: {', '.join(present) or 'none'})"
        )
    return selected


def open_dataset(
    root: str | Path,
    split: str = "train",
    format: str = "auto",
    stats: str | Path | Mapping[str, Any] | None = None,
    bands: BandSelection | None = None,
    modalities: Sequence[str] | None = None,
    lazy: bool = False,
) -> Sequence[Scene]:
    """Scenes of one split (``train``/``val``/``test``/``all``) of a dataset folder, as ``Scene`` objects.

    ``format`` is a name from ``DATASET_FORMATS`` or ``"auto"`` (the default) to detect it from the layout.

    Normalisation specs come from ``stats`` (a stats.json path or mapping), else ``root/stats.json`` when
    present, else the format's own (synthetic: exact; real formats: nominal, see docs/DATA.md). ``bands``
    selects bands per modality by name or 1-based index; ``modalities`` restricts what is read. ``lazy=True``
    returns a sequence that reads scenes on access (for datasets larger than memory).
    """
    root = Path(root)
    sources = list_scene_sources(root, split, format)
    fmt = _resolve_format(root, format)
    if stats is None and (root / "stats.json").is_file():
        stats = root / "stats.json"
    specs = (
        load_specs(stats)
        if stats is not None
        else (dict(fmt.nominal_specs) if fmt.name == "synthetic" else None)
    )
    if lazy:
        return LazyScenes(fmt, sources, specs, bands, modalities)
    return [load_scene(fmt, source, specs, bands, modalities) for source in sources]


def load_scene_folder(directory: str | Path, name: str | None = None) -> Scene:
    """A folder with optical/sar/dsm/label.tif (and cloud_mask.tif), as written by ``write_scene``."""
    directory = Path(directory)
    images = {m: directory / f"{m}.tif" for m in MODALITIES if (directory / f"{m}.tif").is_file()}
    if not images:
        raise DataError(f"{directory} has none of optical.tif, sar.tif, dsm.tif; is it a scene folder?")
    label = directory / "label.tif"
    cloud = directory / "cloud_mask.tif"
    source = SceneSource(
        name or directory.name,
        "all",
        images,
        label if label.is_file() else None,
        cloud if cloud.is_file() else None,
    )
    return load_scene(synthetic_format(), source)


__all__ = [
    "DATASET_FORMATS",
    "EARTHMISS_CITIES",
    "ISPRS_CLASSES",
    "ISPRS_COLOURS",
    "POTSDAM_SPLITS",
    "SPLITS",
    "VAIHINGEN_SPLITS",
    "BandSelection",
    "DatasetFormat",
    "Grid",
    "LazyScenes",
    "RasterData",
    "SceneSource",
    "detect_format",
    "get_format",
    "list_scene_sources",
    "load_scene",
    "load_scene_folder",
    "load_specs",
    "open_dataset",
]
