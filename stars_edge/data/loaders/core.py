"""What every dataset format shares: ``SceneSource``, ``DatasetFormat``, reading one scene, lazy scene lists,
and the small helpers the format modules use to list files and decode labels."""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stars_edge.data.geotiff import band_count, read_grid, read_raster
from stars_edge.data.synthetic import Scene
from stars_edge.errors import DataError
from stars_edge.modalities import IGNORE_INDEX, MODALITIES, ModalitySpec

SPLITS = ("train", "val", "test", "all")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")

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


def image_files(directory: Path, pattern: str = "*") -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def hash_split(key: str, fractions: tuple[float, float] = (0.7, 0.85)) -> str:
    """A stable split for layouts without official split files (crc32 of the scene key)."""
    value = (zlib.crc32(key.encode()) % 10_000) / 10_000
    return "train" if value < fractions[0] else "val" if value < fractions[1] else "test"


def require_layout(condition: bool, root: Path, fmt: str, expected: str) -> None:
    if not condition:
        raise DataError(f"{root} does not match the {fmt} layout: expected {expected} (see docs/DATA.md)")


def colour_decoder(colours: Sequence[tuple[int, int, int]]) -> Callable[[np.ndarray], np.ndarray]:
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


def make_spec(
    modality: str, names: Sequence[str], mean: Sequence[float], std: Sequence[float], units: str
) -> ModalitySpec:
    return ModalitySpec(
        modality, tuple(names), tuple(float(v) for v in mean), tuple(float(v) for v in std), units
    )
