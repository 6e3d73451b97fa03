"""``Scene`` and ``generate_scene`` (layout, then one renderer per sensor), ``write_scene`` to GeoTIFFs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from stars_edge.data.geotiff import LABEL_NODATA, NODATA, write_geotiff
from stars_edge.data.synthetic.config import SyntheticConfig
from stars_edge.data.synthetic.dsm import render_dsm
from stars_edge.data.synthetic.layout import build_layout
from stars_edge.data.synthetic.optical import render_optical
from stars_edge.data.synthetic.sar import render_sar
from stars_edge.data.synthetic.tables import CLASS_NAMES, synthetic_specs
from stars_edge.io import ensure_writable_dir
from stars_edge.modalities import IGNORE_INDEX, MODALITIES, ModalitySpec


@dataclass
class Scene:
    """One co-registered multimodal scene: imagery in physical units, a label and per-modality validity.

    ``optical`` is float32 (bands, H, W) reflectance, ``sar`` (2, H, W) dB, ``dsm`` (1, H, W) metres; a
    modality the scene lacks is None and has no entry in ``valid``. ``label`` is uint8 (H, W), 255 = ignore.
    ``valid[m]`` is False where modality m is missing (nodata, swath gap, void, cloud for optical).
    """

    name: str
    label: np.ndarray
    optical: np.ndarray | None
    sar: np.ndarray | None
    dsm: np.ndarray | None
    valid: dict[str, np.ndarray]
    transform: Affine
    crs: str
    class_names: tuple[str, ...] = CLASS_NAMES
    specs: dict[str, ModalitySpec] = field(default_factory=dict)
    cloud_mask: np.ndarray | None = None
    ignore_index: int = IGNORE_INDEX
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this scene has, in canonical order."""
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.label.shape[0]), int(self.label.shape[1]))

    def image(self, modality: str) -> np.ndarray:
        """The (bands, H, W) array of one modality; KeyError when the scene does not have it."""
        array = getattr(self, modality, None) if modality in MODALITIES else None
        if array is None:
            raise KeyError(f"scene {self.name} has no {modality!r} (it has {', '.join(self.modalities)})")
        return array


@dataclass(frozen=True)
class ScenePaths:
    """Files written for one scene (None for a modality the scene lacks)."""

    directory: Path
    label: Path
    optical: Path | None = None
    sar: Path | None = None
    dsm: Path | None = None
    cloud_mask: Path | None = None

    def as_dict(self) -> dict[str, str]:
        """File names relative to the scene directory (what index.json stores)."""
        out = {}
        for key in ("optical", "sar", "dsm", "label", "cloud_mask"):
            path = getattr(self, key)
            if path is not None:
                out[key] = path.name
        return out


def generate_scene(config: SyntheticConfig | None = None, name: str | None = None) -> Scene:
    """Build one scene from its config; identical configs (seed included) give bit-identical scenes."""
    config = config or SyntheticConfig()
    root = np.random.SeedSequence([config.seed, 0x5CE1E])
    layout_seq, optical_seq, sar_seq, dsm_seq = root.spawn(4)
    layout = build_layout(config, np.random.default_rng(layout_seq))
    valid: dict[str, np.ndarray] = {}
    optical = sar = dsm = cloud_mask = None
    if "optical" in config.modalities:
        optical, cloud_mask, valid["optical"] = render_optical(
            config, np.random.default_rng(optical_seq), layout
        )
        if config.clouds_as_nodata:
            optical[:, cloud_mask] = NODATA
    if "sar" in config.modalities:
        sar, valid["sar"] = render_sar(config, np.random.default_rng(sar_seq), layout)
        sar[:, ~valid["sar"]] = NODATA
    if "dsm" in config.modalities:
        dsm, valid["dsm"] = render_dsm(config, np.random.default_rng(dsm_seq), layout)
        dsm[:, ~valid["dsm"]] = NODATA
    ox, oy = config.origin
    transform = Affine(config.pixel_size, 0.0, ox, 0.0, -config.pixel_size, oy)
    specs = {m: s for m, s in synthetic_specs(config.optical_bands).items() if m in config.modalities}
    return Scene(
        name=name or f"synthetic_{config.seed}",
        label=layout.label,
        optical=optical,
        sar=sar,
        dsm=dsm,
        valid=valid,
        transform=transform,
        crs=config.crs,
        class_names=CLASS_NAMES,
        specs=specs,
        cloud_mask=cloud_mask,
        metadata={"generator": "stars_edge.data.synthetic", "config": config.to_dict()},
    )


def raster_tags(scene: Scene, modality: str) -> dict[str, str]:
    spec = scene.specs.get(modality)
    tags = {"STARS_MODALITY": modality, "STARS_SCENE": scene.name}
    if spec is not None:
        tags["STARS_UNITS"] = spec.units
        tags["STARS_SPEC"] = json.dumps(spec.to_dict())
    return tags


def label_tags(class_names: Sequence[str], ignore_index: int = IGNORE_INDEX) -> dict[str, str]:
    """GeoTIFF tags that carry the class names of a label raster (read back by the loaders)."""
    tags = {"CLASS_NAMES": json.dumps(list(class_names)), "IGNORE_INDEX": str(ignore_index)}
    tags.update({f"CLASS_{i}": name for i, name in enumerate(class_names)})
    return tags


def write_scene(scene: Scene, directory: str | Path) -> ScenePaths:
    """Write a scene as GeoTIFFs (float32 imagery with nodata, uint8 label/cloud mask), each atomically.

    Imagery pixels where ``valid`` is False carry ``NODATA`` (-9999) except optical cloud pixels, which keep
    the cloud's reflectance (as a real L1/L2 product does) and are flagged in ``cloud_mask.tif`` instead.
    """
    directory = ensure_writable_dir(directory)
    transform, crs = scene.transform, scene.crs
    written: dict[str, Path] = {}
    for modality in scene.modalities:
        array = scene.image(modality).astype(np.float32, copy=True)
        invalid = ~scene.valid[modality]
        if modality == "optical" and scene.cloud_mask is not None:
            invalid &= ~scene.cloud_mask
        array[:, invalid] = NODATA
        spec = scene.specs.get(modality)
        written[modality] = write_geotiff(
            directory / f"{modality}.tif",
            array,
            nodata=NODATA,
            band_names=spec.band_names if spec is not None else None,
            tags=raster_tags(scene, modality),
            transform=transform,
            crs=crs,
        )
    written["label"] = write_geotiff(
        directory / "label.tif",
        scene.label.astype(np.uint8),
        nodata=LABEL_NODATA,
        band_names=("label",),
        tags=label_tags(scene.class_names, scene.ignore_index),
        transform=transform,
        crs=crs,
    )
    if scene.cloud_mask is not None:
        written["cloud_mask"] = write_geotiff(
            directory / "cloud_mask.tif",
            scene.cloud_mask.astype(np.uint8),
            nodata=None,
            band_names=("cloud",),
            tags={"STARS_MEANING": "1 = cloud (optical invalid), 0 = clear"},
            transform=transform,
            crs=crs,
        )
    return ScenePaths(directory=directory, **written)
