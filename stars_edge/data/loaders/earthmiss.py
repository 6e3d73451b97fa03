"""``earthmiss``: ``<City>/images/{RGB,SAR}/*`` + ``<City>/masks/*``; split by city as in EarthMiss's code."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stars_edge.data.loaders.core import DatasetFormat, SceneSource, image_files, make_spec, require_layout
from stars_edge.modalities import IGNORE_INDEX

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


def detect(root: Path) -> bool:
    """Whether ``root`` has this format's folder layout."""
    return root.is_dir() and any((c / "images").is_dir() for c in root.iterdir())


def _list_earthmiss(root: Path) -> list[SceneSource]:
    cities = sorted(p for p in root.iterdir() if (p / "images").is_dir()) if root.is_dir() else []
    require_layout(
        bool(cities), root, "EarthMiss", "<City>/images/RGB, <City>/images/SAR and <City>/masks folders"
    )
    split_of = {city: split for split, names in EARTHMISS_CITIES.items() for city in names}
    sources = []
    for city in cities:
        sar = {p.stem.replace("_SAR", ""): p for p in image_files(city / "images" / "SAR")}
        masks = {p.stem.replace("_mask", ""): p for p in image_files(city / "masks")}
        for rgb in image_files(city / "images" / "RGB"):
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


FORMAT = DatasetFormat(
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
        "optical": make_spec(
            "optical", ("red", "green", "blue"), (111.97, 118.42, 115.03), (72.97, 72.99, 81.92), "dn"
        ),
        "sar": make_spec("sar", ("sar",), (63.30,), (68.20,), "dn"),
    },
    list_scenes=_list_earthmiss,
    decode_label=_decode_earthmiss,
    scale={},
)
