"""``vaihingen``: ``top/``, ``dsm/`` and the ground-truth folder (RGB colours)."""

from __future__ import annotations

import re
from pathlib import Path

from stars_edge.data.loaders.core import (
    DatasetFormat,
    SceneSource,
    colour_decoder,
    image_files,
    make_spec,
    require_layout,
)
from stars_edge.data.loaders.isprs import ISPRS_CLASSES, ISPRS_COLOURS, isprs_split

VAIHINGEN_SPLITS = {
    "train": (1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37),
    "test": (2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38),
}


def detect(root: Path) -> bool:
    """Whether ``root`` has this format's folder layout."""
    return (root / "top").is_dir() and any((root / "top").glob("top_mosaic_09cm_area*"))


def _list_vaihingen(root: Path) -> list[SceneSource]:
    require_layout((root / "top").is_dir(), root, "ISPRS Vaihingen", "top/, dsm/ and a ground-truth folder")
    label_dirs = [
        root / "gts_for_participants",
        root / "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE",
        root / "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE",
        root / "gts",
    ]
    sources = []
    for image in image_files(root / "top", "top_mosaic_09cm_area*"):
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
            SceneSource(f"vaihingen_area{area}", isprs_split(area, VAIHINGEN_SPLITS), images, label)
        )
    return sources


FORMAT = DatasetFormat(
    name="vaihingen",
    description="ISPRS Vaihingen IRRG + DSM, 6 classes (RGB colour-coded labels)",
    class_names=ISPRS_CLASSES,
    band_layouts={"optical": (("nir", "red", "green"),), "dsm": (("height",),)},
    nominal_specs={
        "optical": make_spec(
            "optical", ("nir", "red", "green"), (120.0, 82.0, 81.0), (55.0, 39.0, 38.0), "dn"
        ),
        "dsm": make_spec("dsm", ("height",), (285.0,), (6.0,), "m"),
    },
    list_scenes=_list_vaihingen,
    decode_label=colour_decoder(ISPRS_COLOURS),
    scale={},
)
