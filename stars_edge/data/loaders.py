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
"""

from __future__ import annotations

import csv
import json
import re
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stars_edge.data.geotiff import Grid, RasterData, band_count, read_grid, read_raster
from stars_edge.data.synthetic import CLASS_NAMES, Scene
from stars_edge.errors import DataError
from stars_edge.modalities import IGNORE_INDEX, MODALITIES, ModalitySpec, specs_from_dicts

SPLITS = ("train", "val", "test", "all")
_IMAGE_SUFFIXES = (".tif", ".tiff", ".png")

BandSelection = Mapping[str, Sequence[str | int]]


@dataclass(frozen=True)
class SceneSource:
    """Where one scene's files are and how to decode them; loading happens in ``load_scene``."""

    name: str
    split: str
    images: Mapping[str, Path]
    label: Path | None
    cloud_mask: Path | None = None


@dataclass(frozen=True)
class DatasetFormat:
    """One supported layout: how to list its scenes, its classes, bands, label decoding and fallback specs."""

    name: str
    description: str
    class_names: tuple[str, ...]
    band_layouts: Mapping[str, tuple[tuple[str, ...], ...]]  # accepted band layouts per modality
    nominal_specs: Mapping[str, ModalitySpec]
    list_scenes: Callable[[Path], list[SceneSource]]
    decode_label: Callable[[np.ndarray], np.ndarray]
    scale: Mapping[str, float]


# ----------------------------------------------------------------------------------------------- scenes


def _select_bands(
    fmt: DatasetFormat, modality: str, raster_bands: int, path: Path, selection: BandSelection | None
) -> tuple[list[int] | None, tuple[str, ...]]:
    """1-based band indexes and names for a modality, from names or indexes the user gave.

    The file's band count must match one of the format's layouts for that modality (a wrong file, e.g. an
    RGB image where RGB+NIR is expected, is caught here rather than as a shape error during training).
    """
    layouts = fmt.band_layouts.get(modality, ())
    matching = [layout for layout in layouts if len(layout) == raster_bands]
    if layouts and not matching:
        expected = " or ".join(f"{len(layout)} ({', '.join(layout)})" for layout in layouts)
        raise DataError(
            f"{path} has {raster_bands} band(s) but {fmt.name} {modality} files have {expected}; "
            "check that the file belongs to this folder"
        )
    names = matching[0] if matching else tuple(f"band{i}" for i in range(1, raster_bands + 1))
    if not selection or modality not in selection:
        return None, names
    indexes: list[int] = []
    for item in selection[modality]:
        if isinstance(item, int) or (isinstance(item, str) and item.isdigit()):
            index = int(item)
        elif item in names:
            index = names.index(item) + 1
        else:
            raise DataError(f"{path}: no band named {item!r}; its bands are {', '.join(names)}")
        if not 1 <= index <= raster_bands:
            raise DataError(f"{path} has {raster_bands} band(s); band {index} (1-based) does not exist")
        indexes.append(index)
    return indexes, tuple(names[i - 1] for i in indexes)


def load_scene(
    fmt: DatasetFormat,
    source: SceneSource,
    specs: Mapping[str, ModalitySpec] | None = None,
    bands: BandSelection | None = None,
    modalities: Sequence[str] | None = None,
) -> Scene:
    """Read one scene: modalities onto the label's grid (warped if needed), label decoded, masks built."""
    wanted = [m for m in MODALITIES if m in source.images and (modalities is None or m in modalities)]
    if not wanted:
        raise DataError(f"scene {source.name} has none of the requested modalities {modalities}")
    reference_path = source.label if source.label is not None else source.images[wanted[0]]
    grid = read_grid(reference_path)
    images: dict[str, np.ndarray] = {}
    valid: dict[str, np.ndarray] = {}
    scene_specs: dict[str, ModalitySpec] = {}
    for modality in wanted:
        path = source.images[modality]
        count = band_count(path)
        indexes, names = _select_bands(fmt, modality, count, path, bands)
        raster = read_raster(path, bands=indexes, grid=grid, resampling="bilinear")
        array = raster.array * np.float32(fmt.scale.get(modality, 1.0))
        images[modality] = array.astype(np.float32, copy=False)
        valid[modality] = raster.valid
        spec = (specs or {}).get(modality) or _nominal_spec(fmt, modality, names)
        if spec.bands != array.shape[0]:
            raise DataError(
                f"{path}: {array.shape[0]} band(s) read but the normalisation spec has {spec.bands} "
                f"({', '.join(spec.band_names)}); select matching bands or recompute `stars-edge data stats`"
            )
        scene_specs[modality] = spec
    if source.label is not None:
        label_raster = read_raster(source.label, grid=grid, resampling="nearest", dtype=np.int64)
        label = fmt.decode_label(label_raster.array)
        label[~label_raster.valid] = IGNORE_INDEX
    else:
        label = np.full((grid.height, grid.width), IGNORE_INDEX, dtype=np.uint8)
    cloud_mask = None
    if source.cloud_mask is not None and "optical" in images:
        cloud_mask = read_raster(source.cloud_mask, grid=grid, resampling="nearest").array[0] > 0
        valid["optical"] = valid["optical"] & ~cloud_mask
    return Scene(
        name=source.name,
        label=label.astype(np.uint8),
        optical=images.get("optical"),
        sar=images.get("sar"),
        dsm=images.get("dsm"),
        valid=valid,
        transform=grid.transform,
        crs=grid.crs,
        class_names=fmt.class_names,
        specs=scene_specs,
        cloud_mask=cloud_mask,
        metadata={
            "format": fmt.name,
            "split": source.split,
            "files": {k: str(v) for k, v in source.images.items()},
        },
    )


def _nominal_spec(fmt: DatasetFormat, modality: str, names: tuple[str, ...]) -> ModalitySpec:
    """The format's fallback spec restricted to the selected bands (run `data stats` for real statistics)."""
    nominal = fmt.nominal_specs[modality]
    if nominal.band_names == names:
        return nominal
    lookup = dict(zip(nominal.band_names, zip(nominal.mean, nominal.std, strict=True), strict=True))
    default = (float(np.mean(nominal.mean)), float(np.mean(nominal.std)))
    pairs = [lookup.get(n, default) for n in names]
    return ModalitySpec(
        modality, names, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), nominal.units
    )


class LazyScenes(Sequence[Scene]):
    """Scenes read on access, the last ``cache`` kept in memory: for datasets too large to hold at once."""

    def __init__(
        self,
        fmt: DatasetFormat,
        sources: Sequence[SceneSource],
        specs: Mapping[str, ModalitySpec] | None,
        bands: BandSelection | None,
        modalities: Sequence[str] | None,
        cache: int = 4,
    ) -> None:
        self.format = fmt
        self.sources = list(sources)
        self._args = (specs, bands, modalities)
        self._cache: OrderedDict[int, Scene] = OrderedDict()
        self._size = max(1, cache)

    def __len__(self) -> int:
        return len(self.sources)

    def shapes(self) -> list[tuple[int, int]]:
        """(height, width) of every scene from file headers, without reading pixels."""
        out = []
        for source in self.sources:
            grid = read_grid(source.label if source.label is not None else next(iter(source.images.values())))
            out.append((grid.height, grid.width))
        return out

    def __getitem__(self, index: int) -> Scene:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"scene index {index} out of range for {len(self)} scenes")
        index %= len(self)
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        scene = load_scene(self.format, self.sources[index], *self._args)
        self._cache[index] = scene
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return scene

    def __iter__(self) -> Iterator[Scene]:
        for index in range(len(self)):
            yield self[index]


# ----------------------------------------------------------------------------------------------- helpers


def _files(directory: Path, pattern: str = "*") -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(pattern) if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())


def _hash_split(key: str, fractions: tuple[float, float] = (0.7, 0.85)) -> str:
    """A stable split for layouts without official split files (crc32 of the scene key)."""
    value = (zlib.crc32(key.encode()) % 10_000) / 10_000
    return "train" if value < fractions[0] else "val" if value < fractions[1] else "test"


def _need(condition: bool, root: Path, fmt: str, expected: str) -> None:
    if not condition:
        raise DataError(f"{root} does not match the {fmt} layout: expected {expected} (see docs/DATA.md)")


def _colour_decoder(colours: Sequence[tuple[int, int, int]]) -> Callable[[np.ndarray], np.ndarray]:
    """Decode RGB colour-coded labels (3, H, W) to class indices; unknown colours (boundaries) -> 255."""
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colours], dtype=np.int64)

    def decode(array: np.ndarray) -> np.ndarray:
        if array.shape[0] < 3:
            if array.shape[0] == 1 and int(array.max(initial=0)) < len(colours):
                return array[0].astype(np.uint8)  # already index-coded
            raise DataError(f"colour-coded label needs 3 bands (RGB), got {array.shape[0]}")
        packed = (
            (array[0].astype(np.int64) << 16) | (array[1].astype(np.int64) << 8) | array[2].astype(np.int64)
        )
        out = np.full(packed.shape, IGNORE_INDEX, dtype=np.uint8)
        for index, key in enumerate(keys):
            out[packed == key] = index
        return out

    return decode


def _spec(
    modality: str, names: Sequence[str], mean: Sequence[float], std: Sequence[float], units: str
) -> ModalitySpec:
    return ModalitySpec(
        modality, tuple(names), tuple(float(v) for v in mean), tuple(float(v) for v in std), units
    )


# ----------------------------------------------------------------------------------------------- synthetic


def _read_index(root: Path) -> dict[str, Any]:
    index_path = root / "index.json"
    if not index_path.is_file():
        raise DataError(
            f"{index_path} not found; create the dataset with `stars-edge data synth --out {root}` "
            "or pass --format for a real dataset layout"
        )
    try:
        payload = json.loads(index_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{index_path} is not valid JSON ({exc}); regenerate it with `stars-edge data synth`"
        ) from exc
    if not isinstance(payload, dict) or "scenes" not in payload:
        raise DataError(f"{index_path} has no 'scenes' list; regenerate it with `stars-edge data synth`")
    return payload


def _list_synthetic(root: Path) -> list[SceneSource]:
    payload = _read_index(root)
    sources = []
    for entry in payload["scenes"]:
        directory = root / entry.get("path", entry["name"])
        files = entry.get("files", {})
        images = {m: directory / files[m] for m in MODALITIES if m in files}
        label = directory / files["label"] if "label" in files else None
        cloud = directory / files["cloud_mask"] if "cloud_mask" in files else None
        sources.append(SceneSource(entry["name"], entry.get("split", "train"), images, label, cloud))
    return sources


def _synthetic_format(root: Path | None = None) -> DatasetFormat:
    specs: dict[str, ModalitySpec] = {}
    class_names = CLASS_NAMES
    if root is not None and (root / "index.json").is_file():
        payload = _read_index(root)
        specs = specs_from_dicts(payload.get("specs", []))
        class_names = tuple(payload.get("class_names", CLASS_NAMES))
    if not specs:
        from stars_edge.data.synthetic import synthetic_specs

        specs = synthetic_specs()
    return DatasetFormat(
        name="synthetic",
        description="stars-edge synthetic benchmark (index.json + scene folders)",
        class_names=class_names,
        band_layouts={m: (s.band_names,) for m, s in specs.items()},
        nominal_specs=specs,
        list_scenes=_list_synthetic,
        decode_label=lambda a: a[0].astype(np.uint8),
        scale={},
    )


# ----------------------------------------------------------------------------------------------- Sen1Floods11

_S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")


def _sen1floods11_split_files(root: Path) -> dict[str, Path]:
    names = {"train": "flood_train_data.csv", "val": "flood_valid_data.csv", "test": "flood_test_data.csv"}
    found: dict[str, Path] = {}
    candidates = [root, root / "splits" / "flood_handlabeled", root / "v1.1" / "splits" / "flood_handlabeled"]
    candidates += [parent / "splits" / "flood_handlabeled" for parent in root.parents[:4]]
    for split, file_name in names.items():
        for folder in candidates:
            if (folder / file_name).is_file():
                found[split] = folder / file_name
                break
    return found


def _list_sen1floods11(root: Path) -> list[SceneSource]:
    bases = [
        root,
        root / "data" / "flood_events" / "HandLabeled",
        root / "v1.1" / "data" / "flood_events" / "HandLabeled",
    ]
    base = next((b for b in bases if (b / "S1Hand").is_dir() or list(b.glob("*_S1Hand.tif"))), None)
    _need(
        base is not None, root, "Sen1Floods11", "S1Hand/, S2Hand/, LabelHand/ folders or *_S1Hand.tif files"
    )
    assert base is not None

    def find(kind: str, chip: str) -> Path | None:
        for folder in (base / kind, base):
            path = folder / f"{chip}_{kind}.tif"
            if path.is_file():
                return path
        return None

    s1_files = _files(base / "S1Hand", "*_S1Hand.tif") or _files(base, "*_S1Hand.tif")
    chips = [p.name[: -len("_S1Hand.tif")] for p in s1_files]
    split_files = _sen1floods11_split_files(root)
    split_of: dict[str, str] = {}
    for split, csv_path in split_files.items():
        with csv_path.open(newline="") as handle:
            for row in csv.reader(handle):
                if row and row[0].strip():
                    split_of[row[0].strip().replace("_S1Hand.tif", "")] = split
    sources = []
    for chip in chips:
        images = {"sar": find("S1Hand", chip)}
        s2 = find("S2Hand", chip)
        if s2 is not None:
            images["optical"] = s2
        chip_split: str | None = split_of.get(chip) if split_files else _hash_split(chip)
        if chip_split is None:
            continue  # listed in no split file: not part of the hand-labelled benchmark
        sources.append(
            SceneSource(
                chip, chip_split, {k: v for k, v in images.items() if v is not None}, find("LabelHand", chip)
            )
        )
    return sources


def _decode_sen1floods11(array: np.ndarray) -> np.ndarray:
    label = array[0]
    out = np.full(label.shape, IGNORE_INDEX, dtype=np.uint8)
    out[label == 0] = 0
    out[label == 1] = 1
    return out


# ----------------------------------------------------------------------------------------------- EarthMiss

EARTHMISS_CITIES = {
    "train": (
        "America-Eugene",
        "America-Louisville",
        "French-Paris",
        "Morocco-Casablanca",
        "Nanjing",
        "Netherlands-Rotterdam",
        "Singapore",
    ),
    "val": ("Australia-PortHedland", "America-Pake", "Russian-Engels"),
    "test": ("America-NewYork", "Japan-Hakodate", "Peru-Callao"),
}


def _list_earthmiss(root: Path) -> list[SceneSource]:
    cities = sorted(p for p in root.iterdir() if (p / "images").is_dir()) if root.is_dir() else []
    _need(bool(cities), root, "EarthMiss", "<City>/images/RGB, <City>/images/SAR and <City>/masks folders")
    split_of = {city: split for split, names in EARTHMISS_CITIES.items() for city in names}
    sources = []
    for city in cities:
        sar = {p.stem.replace("_SAR", ""): p for p in _files(city / "images" / "SAR")}
        masks = {p.stem.replace("_mask", ""): p for p in _files(city / "masks")}
        for rgb in _files(city / "images" / "RGB"):
            images = {"optical": rgb}
            if rgb.stem in sar:
                images["sar"] = sar[rgb.stem]
            sources.append(
                SceneSource(
                    f"{city.name}/{rgb.stem}", split_of.get(city.name, "extra"), images, masks.get(rgb.stem)
                )
            )
    return sources


def _decode_earthmiss(array: np.ndarray) -> np.ndarray:
    """EarthMiss masks store class+1 (0 = unlabelled), as its loader's ``mask - 1`` shows."""
    label = array[0]
    out = np.full(label.shape, IGNORE_INDEX, dtype=np.uint8)
    known = (label >= 1) & (label <= 8)
    out[known] = (label[known] - 1).astype(np.uint8)
    return out


# ----------------------------------------------------------------------------------------------- WHU-OPT-SAR


def _list_whu(root: Path) -> list[SceneSource]:
    sources = []
    if any((root / s / "opt").is_dir() for s in ("train", "val", "test")):
        for split in ("train", "val", "test"):
            folder = root / split
            for opt in _files(folder / "opt"):
                sources.append(
                    SceneSource(
                        f"{split}/{opt.stem}",
                        split,
                        {"optical": opt, "sar": folder / "sar" / opt.name},
                        folder / "lbl" / opt.name,
                    )
                )
        return sources
    optical_dir = root / "optical" if (root / "optical").is_dir() else root / "opt"
    _need(
        optical_dir.is_dir() and (root / "sar").is_dir(),
        root,
        "WHU-OPT-SAR",
        "optical/ (or opt/), sar/ and lbl/ folders, or train|val|test/{opt,sar,lbl}",
    )
    for index, opt in enumerate(_files(optical_dir)):
        split = ("train", "train", "train", "val", "test")[index % 5]
        label = root / "lbl" / opt.name
        sources.append(
            SceneSource(
                opt.stem,
                split,
                {"optical": opt, "sar": root / "sar" / opt.name},
                label if label.exists() else None,
            )
        )
    return sources


def _decode_whu(array: np.ndarray) -> np.ndarray:
    """WHU-OPT-SAR labels are 0,10,...,70 in the original release and 0..7 after the common conversion."""
    label = array[0]
    out = np.full(label.shape, IGNORE_INDEX, dtype=np.uint8)
    if int(label.max(initial=0)) > 7:
        for index in range(8):
            out[label == index * 10] = index
    else:
        known = (label >= 0) & (label <= 7)
        out[known] = label[known].astype(np.uint8)
    return out


# ----------------------------------------------------------------------------------------------- ISPRS

ISPRS_CLASSES = ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")
ISPRS_COLOURS = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
POTSDAM_SPLITS = {
    "train": (
        "2_10",
        "2_11",
        "2_12",
        "3_10",
        "3_11",
        "3_12",
        "4_10",
        "4_11",
        "4_12",
        "5_10",
        "5_11",
        "5_12",
        "6_10",
        "6_11",
        "6_12",
        "6_7",
        "6_8",
        "6_9",
        "7_10",
        "7_11",
        "7_12",
        "7_7",
        "7_8",
        "7_9",
    ),
    "test": (
        "5_15",
        "6_15",
        "6_13",
        "3_13",
        "4_14",
        "6_14",
        "5_14",
        "2_13",
        "4_15",
        "2_14",
        "5_13",
        "4_13",
        "3_14",
        "7_13",
    ),
}
VAIHINGEN_SPLITS = {
    "train": (1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37),
    "test": (2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38),
}


def _isprs_split(key: str, splits: Mapping[str, Sequence[Any]]) -> str:
    for split, keys in splits.items():
        if key in {str(k) for k in keys}:
            return split
    return "extra"


def _list_potsdam(root: Path) -> list[SceneSource]:
    optical_dir = next((root / d for d in ("4_Ortho_RGBIR", "2_Ortho_RGB") if (root / d).is_dir()), None)
    _need(
        optical_dir is not None,
        root,
        "ISPRS Potsdam",
        "4_Ortho_RGBIR/ (or 2_Ortho_RGB/), 1_DSM/, 5_Labels_all/",
    )
    assert optical_dir is not None
    label_dirs = [root / "5_Labels_all", root / "5_Labels_all_noBoundary", root / "5_Labels_for_participants"]
    sources = []
    for image in _files(optical_dir, "top_potsdam_*"):
        match = re.match(r"top_potsdam_(\d+)_(\d+)_", image.name)
        if match is None:
            continue
        row, col = match.groups()
        key = f"{row}_{col}"
        images = {"optical": image}
        dsm = root / "1_DSM" / f"dsm_potsdam_{int(row):02d}_{int(col):02d}.tif"
        if dsm.is_file():
            images["dsm"] = dsm
        label = None
        for folder in label_dirs:
            hits = _files(folder, f"top_potsdam_{key}_label*")
            if hits:
                label = hits[0]
                break
        sources.append(SceneSource(f"potsdam_{key}", _isprs_split(key, POTSDAM_SPLITS), images, label))
    return sources


def _list_vaihingen(root: Path) -> list[SceneSource]:
    _need((root / "top").is_dir(), root, "ISPRS Vaihingen", "top/, dsm/ and a ground-truth folder")
    label_dirs = [
        root / "gts_for_participants",
        root / "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE",
        root / "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE",
        root / "gts",
    ]
    sources = []
    for image in _files(root / "top", "top_mosaic_09cm_area*"):
        match = re.match(r"top_mosaic_09cm_area(\d+)", image.stem)
        if match is None:
            continue
        area = match.group(1)
        images = {"optical": image}
        dsm = root / "dsm" / f"dsm_09cm_matching_area{area}.tif"
        if dsm.is_file():
            images["dsm"] = dsm
        label = None
        for folder in label_dirs:
            for candidate in (folder / image.name, folder / f"{image.stem}_noBoundary{image.suffix}"):
                if candidate.is_file():
                    label = candidate
                    break
            if label is not None:
                break
        sources.append(
            SceneSource(f"vaihingen_area{area}", _isprs_split(area, VAIHINGEN_SPLITS), images, label)
        )
    return sources


# ----------------------------------------------------------------------------------------------- registry

_SAR_DB = _spec("sar", ("vv", "vh"), (-10.0, -17.0), (4.0, 4.0), "dB")

DATASET_FORMATS: dict[str, DatasetFormat] = {
    "synthetic": _synthetic_format(),
    "sen1floods11": DatasetFormat(
        name="sen1floods11",
        description="Sen1Floods11 hand-labelled chips (S1 VV/VH dB, S2 L1C 13 bands, water)",
        class_names=("not_water", "water"),
        band_layouts={"optical": (_S2_BANDS,), "sar": (("vv", "vh"),)},
        nominal_specs={
            "optical": _spec("optical", _S2_BANDS, [0.15] * 13, [0.08] * 13, "reflectance"),
            "sar": _SAR_DB,
        },
        list_scenes=_list_sen1floods11,
        decode_label=_decode_sen1floods11,
        scale={"optical": 1e-4},
    ),
    "earthmiss": DatasetFormat(
        name="earthmiss",
        description="EarthMiss optical RGB + SAR, 8 land-cover classes, 13 cities",
        class_names=(
            "background",
            "building",
            "road",
            "water",
            "barren",
            "forest",
            "agricultural",
            "playground",
        ),
        band_layouts={"optical": (("red", "green", "blue"),), "sar": (("sar",),)},
        nominal_specs={
            "optical": _spec(
                "optical", ("red", "green", "blue"), (111.97, 118.42, 115.03), (72.97, 72.99, 81.92), "dn"
            ),
            "sar": _spec("sar", ("sar",), (63.30,), (68.20,), "dn"),
        },
        list_scenes=_list_earthmiss,
        decode_label=_decode_earthmiss,
        scale={},
    ),
    "whu-opt-sar": DatasetFormat(
        name="whu-opt-sar",
        description="WHU-OPT-SAR GF-1 optical (4 bands) + GF-3 SAR, 7 classes + background",
        class_names=("background", "farmland", "city", "village", "water", "forest", "road", "others"),
        band_layouts={"optical": (("band1", "band2", "band3", "band4"),), "sar": (("sar",),)},
        nominal_specs={
            "optical": _spec("optical", ("band1", "band2", "band3", "band4"), [100.0] * 4, [50.0] * 4, "dn"),
            "sar": _spec("sar", ("sar",), (100.0,), (50.0,), "dn"),
        },
        list_scenes=_list_whu,
        decode_label=_decode_whu,
        scale={},
    ),
    "potsdam": DatasetFormat(
        name="potsdam",
        description="ISPRS Potsdam RGBIR + DSM, 6 classes (RGB colour-coded labels)",
        class_names=ISPRS_CLASSES,
        band_layouts={
            "optical": (("red", "green", "blue", "nir"), ("red", "green", "blue")),  # RGBIR or RGB tiles
            "dsm": (("height",),),
        },
        nominal_specs={
            "optical": _spec(
                "optical",
                ("red", "green", "blue", "nir"),
                (86.0, 92.0, 86.0, 98.0),
                (36.0, 35.0, 36.0, 36.0),
                "dn",
            ),
            "dsm": _spec("dsm", ("height",), (45.0,), (10.0,), "m"),
        },
        list_scenes=_list_potsdam,
        decode_label=_colour_decoder(ISPRS_COLOURS),
        scale={},
    ),
    "vaihingen": DatasetFormat(
        name="vaihingen",
        description="ISPRS Vaihingen IRRG + DSM, 6 classes (RGB colour-coded labels)",
        class_names=ISPRS_CLASSES,
        band_layouts={"optical": (("nir", "red", "green"),), "dsm": (("height",),)},
        nominal_specs={
            "optical": _spec(
                "optical", ("nir", "red", "green"), (120.0, 82.0, 81.0), (55.0, 39.0, 38.0), "dn"
            ),
            "dsm": _spec("dsm", ("height",), (285.0,), (6.0,), "m"),
        },
        list_scenes=_list_vaihingen,
        decode_label=_colour_decoder(ISPRS_COLOURS),
        scale={},
    ),
}


def detect_format(root: str | Path) -> str:
    """The format whose layout ``root`` has (``index.json``: synthetic, ``S1Hand/``: sen1floods11, ...)."""
    root = Path(root)
    checks = (
        ("synthetic", lambda r: (r / "index.json").is_file()),
        (
            "sen1floods11",
            lambda r: any(
                (b / "S1Hand").is_dir() or any(b.glob("*_S1Hand.tif"))
                for b in (
                    r,
                    r / "data" / "flood_events" / "HandLabeled",
                    r / "v1.1" / "data" / "flood_events" / "HandLabeled",
                )
            ),
        ),
        ("potsdam", lambda r: (r / "4_Ortho_RGBIR").is_dir() or (r / "2_Ortho_RGB").is_dir()),
        ("vaihingen", lambda r: (r / "top").is_dir() and any((r / "top").glob("top_mosaic_09cm_area*"))),
        (
            "whu-opt-sar",
            lambda r: (r / "sar").is_dir() or any((r / s / "opt").is_dir() for s in ("train", "val", "test")),
        ),
        ("earthmiss", lambda r: r.is_dir() and any((c / "images").is_dir() for c in r.iterdir())),
    )
    for name, matches in checks:
        if matches(root):
            return name
    raise DataError(
        f"cannot tell the dataset layout of {root} (no index.json, S1Hand/, 4_Ortho_RGBIR/, top/, sar/ or "
        f"<City>/images/); pass --format, one of: {', '.join(DATASET_FORMATS)}"
    )


def _resolve_format(root: Path, name: str) -> DatasetFormat:
    key = detect_format(root) if name.strip().lower() == "auto" else name
    fmt = get_format(key)
    return _synthetic_format(root) if fmt.name == "synthetic" else fmt


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
    return load_scene(_synthetic_format(), source)


__all__ = [
    "DATASET_FORMATS",
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
