"""``potsdam``: ``4_Ortho_RGBIR`` (or ``2_Ortho_RGB``), ``1_DSM``, ``5_Labels_all[_noBoundary]`` (RGB).

ISPRS Potsdam; the classes, label colours and split rule are shared with Vaihingen (``isprs.py``).
"""

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


def detect(root: Path) -> bool:
    """Whether ``root`` has this format's folder layout."""
    return (root / "4_Ortho_RGBIR").is_dir() or (root / "2_Ortho_RGB").is_dir()


def _list_potsdam(root: Path) -> list[SceneSource]:
    optical_dir = next((root / d for d in ("4_Ortho_RGBIR", "2_Ortho_RGB") if (root / d).is_dir()), None)
    require_layout(
        optical_dir is not None,
        root,
        "ISPRS Potsdam",
        "4_Ortho_RGBIR/ (or 2_Ortho_RGB/), 1_DSM/, 5_Labels_all/",
    )
    assert optical_dir is not None
    label_dirs = [root / "5_Labels_all", root / "5_Labels_all_noBoundary", root / "5_Labels_for_participants"]
    sources = []
    for image in image_files(optical_dir, "top_potsdam_*"):
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
            hits = image_files(folder, f"top_potsdam_{key}_label*")
            if hits:
                label = hits[0]
                break
        sources.append(SceneSource(f"potsdam_{key}", isprs_split(key, POTSDAM_SPLITS), images, label))
    return sources


FORMAT = DatasetFormat(
    name="potsdam",
    description="ISPRS Potsdam RGBIR + DSM, 6 classes (RGB colour-coded labels)",
    class_names=ISPRS_CLASSES,
    band_layouts={
        "optical": (("red", "green", "blue", "nir"), ("red", "green", "blue")),  # RGBIR or RGB tiles
        "dsm": (("height",),),
    },
    nominal_specs={
        "optical": make_spec(
            "optical",
            ("red", "green", "blue", "nir"),
            (86.0, 92.0, 86.0, 98.0),
            (36.0, 35.0, 36.0, 36.0),
            "dn",
        ),
        "dsm": make_spec("dsm", ("height",), (45.0,), (10.0,), "m"),
    },
    list_scenes=_list_potsdam,
    decode_label=colour_decoder(ISPRS_COLOURS),
    scale={},
)
