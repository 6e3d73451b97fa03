"""``whu-opt-sar``: ``{optical,sar,lbl}/*.tif`` (labels 0,10..70) or ``{train,val,test}/{opt,sar,lbl}``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stars_edge.data.loaders.core import DatasetFormat, SceneSource, image_files, make_spec, require_layout
from stars_edge.modalities import IGNORE_INDEX


def detect(root: Path) -> bool:
    """Whether ``root`` has this format's folder layout."""
    return (root / "sar").is_dir() or any((root / s / "opt").is_dir() for s in ("train", "val", "test"))


def _list_whu(root: Path) -> list[SceneSource]:
    sources = []
    if any((root / s / "opt").is_dir() for s in ("train", "val", "test")):
        for split in ("train", "val", "test"):
            folder = root / split
            for opt in image_files(folder / "opt"):
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
    require_layout(
        optical_dir.is_dir() and (root / "sar").is_dir(),
        root,
        "WHU-OPT-SAR",
        "optical/ (or opt/), sar/ and lbl/ folders, or train|val|test/{opt,sar,lbl}",
    )
    for index, opt in enumerate(image_files(optical_dir)):
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


FORMAT = DatasetFormat(
    name="whu-opt-sar",
    description="WHU-OPT-SAR GF-1 optical (4 bands) + GF-3 SAR, 7 classes + background",
    class_names=("background", "farmland", "city", "village", "water", "forest", "road", "others"),
    band_layouts={"optical": (("band1", "band2", "band3", "band4"),), "sar": (("sar",),)},
    nominal_specs={
        "optical": make_spec("optical", ("band1", "band2", "band3", "band4"), [100.0] * 4, [50.0] * 4, "dn"),
        "sar": make_spec("sar", ("sar",), (100.0,), (50.0,), "dn"),
    },
    list_scenes=_list_whu,
    decode_label=_decode_whu,
    scale={},
)
