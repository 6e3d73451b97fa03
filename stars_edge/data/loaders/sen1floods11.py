"""``sen1floods11``: hand-labelled chips ``*_S1Hand.tif`` / ``*_S2Hand.tif`` / ``*_LabelHand.tif``.

The chips sit in S1Hand/, S2Hand/, LabelHand/ or one flat folder; splits come from
``flood_{train,valid,test}_data.csv``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from stars_edge.data.loaders.core import (
    DatasetFormat,
    SceneSource,
    hash_split,
    image_files,
    make_spec,
    require_layout,
)
from stars_edge.modalities import IGNORE_INDEX

S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")

SAR_DB = make_spec("sar", ("vv", "vh"), (-10.0, -17.0), (4.0, 4.0), "dB")


def _bases(root: Path) -> list[Path]:
    """Where the chip folders can be: the root itself or the v1.1 bucket layout under it."""
    return [
        root,
        root / "data" / "flood_events" / "HandLabeled",
        root / "v1.1" / "data" / "flood_events" / "HandLabeled",
    ]


def detect(root: Path) -> bool:
    """S1Hand/ or ``*_S1Hand.tif`` chips in one of the known places."""
    return any((b / "S1Hand").is_dir() or any(b.glob("*_S1Hand.tif")) for b in _bases(root))


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
    base = next((b for b in _bases(root) if (b / "S1Hand").is_dir() or list(b.glob("*_S1Hand.tif"))), None)
    require_layout(
        base is not None, root, "Sen1Floods11", "S1Hand/, S2Hand/, LabelHand/ folders or *_S1Hand.tif files"
    )
    assert base is not None

    def find(kind: str, chip: str) -> Path | None:
        for folder in (base / kind, base):
            path = folder / f"{chip}_{kind}.tif"
            if path.is_file():
                return path
        return None

    s1_files = image_files(base / "S1Hand", "*_S1Hand.tif") or image_files(base, "*_S1Hand.tif")
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
        chip_split: str | None = split_of.get(chip) if split_files else hash_split(chip)
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


FORMAT = DatasetFormat(
    name="sen1floods11",
    description="Sen1Floods11 hand-labelled chips (S1 VV/VH dB, S2 L1C 13 bands, water)",
    class_names=("not_water", "water"),
    band_layouts={"optical": (S2_BANDS,), "sar": (("vv", "vh"),)},
    nominal_specs={
        "optical": make_spec("optical", S2_BANDS, [0.15] * 13, [0.08] * 13, "reflectance"),
        "sar": SAR_DB,
    },
    list_scenes=_list_sen1floods11,
    decode_label=_decode_sen1floods11,
    scale={"optical": 1e-4},
)
