"""How well the input contract tells wrong encodings from correct data: catch rate and false refusals.

Every case is a GeoTIFF written the way a product would be (float32 with nodata, or uint16 DN with or
without the scale tag), read back by the runtime's own ``RasterSource`` sampler and judged by the runtime's
own ``check_inputs`` against the contract ``build-engines`` records by default (synthetic calibration
scenes). Band descriptions are removed from the wrong-order cases, so only the statistics can catch them
(with descriptions the runtime reorders instead). Correct cases: held-out synthetic scenes (clear, and
cloudy with their cloud mask), and the real chips in ../shared/data with their correct encodings.

    python studies/input_contract.py --scenes 20 --out benchmarks/results/input_contract

``rewrite_geotiff`` (a GeoTIFF re-encoded) is also the runtime tests' fixture writer
(``tests/test_runtime_input_contract.py``); the Markdown comes from ``benchmarks/report_studies.py``,
which also renders the JSON into ``benchmarks/REPORT.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python studies/input_contract.py`: make `studies.` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.report_studies import CAUGHT, input_contract_lines  # noqa: E402
from export.tiles import SYNTHETIC, sample_physical  # noqa: E402
from runtime.sources import RasterSource  # noqa: E402
from runtime.validity import check_inputs  # noqa: E402
from stars_edge.contract import ModalityContract, contract_from_values  # noqa: E402
from stars_edge.data.synthetic import (  # noqa: E402
    SyntheticConfig,
    generate_scene,
    synthetic_specs,
    write_scene,
)
from stars_edge.errors import StarsEdgeError  # noqa: E402
from studies.common import PROJECT_ROOT, short_commit  # noqa: E402

#: Held-out seeds: far from training (small integers) and from the calibration/gate seed bases.
SEED_BASE = 5_500_000
Change = Callable[[np.ndarray], np.ndarray]


def rewrite_geotiff(
    source: Path,
    target: Path,
    change: Change = lambda a: a,
    descriptions: Sequence[str | None] | None = None,
    dtype: str | None = None,
    scale: float | None = None,
    offset: float | None = None,
) -> Path:
    """Copy a GeoTIFF with its valid pixels transformed by ``change``, and its band descriptions, dtype
    (nodata 0 for a new dtype) or GDAL scale/offset tags replaced: how a product with another encoding
    looks."""
    with rasterio.open(source) as dataset:
        data = dataset.read().astype(np.float64)
        profile = dataset.profile
        valid = dataset.read_masks(1) > 0
        names = dataset.descriptions
    changed = change(data)
    if dtype is not None:
        profile.update(dtype=dtype, nodata=0)
    data = np.where(valid[None], changed, profile["nodata"])
    profile.update(count=data.shape[0])
    with rasterio.open(target, "w", **profile) as out:
        out.write(data.astype(profile["dtype"]))
        wanted = descriptions if descriptions is not None else names
        for band, text in enumerate(wanted[: data.shape[0]], start=1):
            out.set_band_description(band, text or "")
        if scale is not None:
            out.scales = (scale,) * data.shape[0]
        if offset is not None:
            out.offsets = (offset,) * data.shape[0]
    return target


def _terrain(a: np.ndarray) -> np.ndarray:
    rows, cols = np.mgrid[0 : a.shape[1], 0 : a.shape[2]]
    return a + 200.0 + 400.0 * (rows + cols) / (a.shape[1] + a.shape[2])


UNDESCRIBED = {"optical": (None,) * 4, "sar": (None, None), "dsm": (None,)}
CLEAR_ONLY, MISSED = "clear scenes only", "not caught"
#: name -> (modality, change, what the design expects). Misses are what the contract cannot see: the
#: catch rate counts only the CAUGHT rows, the others are reported as they come out.
WRONG: dict[str, tuple[str, Change, str]] = {
    "sar linear power": ("sar", lambda a: 10 ** (a / 10), CAUGHT),
    "sar linear amplitude": ("sar", lambda a: 10 ** (a / 20), CAUGHT),
    "sar VH,VV": ("sar", lambda a: a[::-1], CAUGHT),
    "optical DN, no scale tag": ("optical", lambda a: a * 10000, CAUGHT),
    "optical R,G,B,NIR": ("optical", lambda a: a[[2, 1, 0, 3]], CLEAR_ONLY),
    "optical NIR,B,G,R": ("optical", lambda a: a[[3, 0, 1, 2]], CLEAR_ONLY),
    "optical G,B,R,NIR": ("optical", lambda a: a[[1, 0, 2, 3]], MISSED),
    "dsm altitude +10 m": ("dsm", lambda a: a + 10, MISSED),
    "dsm altitude +20 m": ("dsm", lambda a: a + 20, CAUGHT),
    "dsm altitude +50 m": ("dsm", lambda a: a + 50, CAUGHT),
    "dsm altitude +120 m": ("dsm", lambda a: a + 120, CAUGHT),
    "dsm altitude +300 m": ("dsm", lambda a: a + 300, CAUGHT),
    "dsm terrain 200-600 m": ("dsm", _terrain, CAUGHT),
    "dsm in feet": ("dsm", lambda a: a / 0.3048, CAUGHT),
}


def _verdict(paths: Mapping[str, Path], contracts: dict[str, ModalityContract], **kwargs: Any) -> str | None:
    """None when accepted, else the refusal (or the error that stopped the read)."""
    source = RasterSource(paths, synthetic_specs(), **kwargs)
    try:
        check_inputs(source.sample_values(), {m: contracts[m] for m in source.modalities}, allow=False)
    except StarsEdgeError as exc:
        return str(exc)
    finally:
        source.close()
    return None


def _real_cases(shared: Path, work: Path) -> list[tuple[str, Mapping[str, Path], dict[str, Any]]]:
    folder = shared / "sen1floods11_sample"
    s2, s1 = folder / "Spain_7370579_S2Hand.tif", folder / "Spain_7370579_S1Hand.tif"
    sar6 = shared / "spacenet6_solaris_sample" / "sar_masked.tif"
    cases: list[tuple[str, Mapping[str, Path], dict[str, Any]]] = []
    if s2.is_file() and s1.is_file():
        scaled = rewrite_geotiff(s2, work / "s2_scaled.tif", scale=1e-4)
        cases.append(("Sen1Floods11 S2 L1C (scale tag 1e-4), bands 2,3,4,8", {"optical": scaled}, {}))
        cases.append(("Sen1Floods11 S1 VV,VH dB", {"sar": s1}, {}))
    if sar6.is_file():
        cases.append(("SpaceNet 6 SAR dB, bands 4,3 (VV,VH)", {"sar": sar6}, {"bands": {"sar": ("4", "3")}}))
    for _, paths, options in cases:
        bands = options.setdefault("bands", {})
        if "optical" in paths:
            bands["optical"] = ("2", "3", "4", "8")
    return cases


def measure(scenes: int, size: int, shared: Path) -> dict[str, Any]:
    specs = synthetic_specs()
    values, source = sample_physical(SYNTHETIC, specs, 256)
    contracts = {m: contract_from_values(specs[m], values[m], source) for m in specs}
    correct: list[dict[str, Any]] = []
    wrong: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for index in range(scenes):
            seed = SEED_BASE + index
            cloud = 0.3 if index % 2 else 0.0
            scene = write_scene(
                generate_scene(SyntheticConfig(size=size, seed=seed, cloud_cover=cloud)), work / str(seed)
            )
            paths = {"optical": scene.optical, "sar": scene.sar, "dsm": scene.dsm}
            assert all(p is not None for p in paths.values())
            real = {m: Path(p) for m, p in paths.items() if p is not None}
            refusal = _verdict(real, contracts, cloud_mask=scene.cloud_mask)
            correct.append({"case": f"held-out scene {seed} (cloud cover {cloud})", "refused": refusal})
            if cloud > 0:
                refusal = _verdict(real, contracts)
                correct.append({"case": f"held-out scene {seed}, clouds unmasked", "refused": refusal})
            for name, (modality, change, expected) in WRONG.items():
                target = work / f"{seed}_{modality}.tif"
                path = rewrite_geotiff(real[modality], target, change, UNDESCRIBED[modality])
                mask = scene.cloud_mask if modality == "optical" else None
                refusal = _verdict({modality: path}, contracts, cloud_mask=mask)
                wrong.append({"case": name, "seed": seed, "expected": expected, "refused": refusal})
        for name, files, options in _real_cases(shared, work):
            correct.append({"case": name, "refused": _verdict(files, contracts, **options)})
    return {"contract_source": source, "correct": correct, "wrong": wrong}


def render(result: dict[str, Any]) -> str:
    title = "# Input contract: catch rate and false refusals (`studies/input_contract.py`)"
    return "\n".join([title, "", *input_contract_lines(result)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenes", type=int, default=20, help="held-out synthetic scenes")
    parser.add_argument("--size", type=int, default=256, help="scene size in pixels")
    parser.add_argument("--shared", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    result = measure(args.scenes, args.size, args.shared)
    result["commit"] = short_commit()
    text = render(result)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
