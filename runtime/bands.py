"""Which bands of a file feed which engine input: band descriptions read, ``--bands`` selections honoured.

Why: the engines see band *positions*. A SAR file written VH,VV or an optical file written R,G,B,NIR gives a
confident, wrong map. When a file describes its bands (GDAL band descriptions, as Sentinel-2/-1 tools and
``stars-edge data synth`` write them), the descriptions decide: bands named as the manifest's in another
order are reordered (and the summary says so); bands named as something else are refused. Multi-band
products (13-band Sentinel-2 stacks) are cut down by description or by ``--bands optical=2,3,4,8``.
Alpha bands (``ColorInterp.alpha``) are never data: they are the mask (``RasterSource`` applies them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stars_edge.errors import ConfigError, DataError
from stars_edge.modalities import MODALITIES, ModalitySpec

#: Spellings of each band name in descriptions and --bands (lower case, whole description or one token).
BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "coastal": ("coastal", "aerosol", "b1", "b01"),
    "blue": ("blue", "b2", "b02"),
    "green": ("green", "b3", "b03"),
    "red": ("red", "b4", "b04"),
    "red_edge": ("red_edge", "rededge", "re1", "b5", "b05"),
    "red_edge2": ("red_edge2", "re2", "b6", "b06"),
    "red_edge3": ("red_edge3", "re3", "b7", "b07"),
    "nir": ("nir", "b8", "b08", "near infrared", "near-infrared"),
    "nir_narrow": ("nir_narrow", "b8a", "narrow nir", "re4"),
    "water_vapour": ("water_vapour", "water vapour", "water vapor", "b9", "b09"),
    "cirrus": ("cirrus", "b10"),
    "swir1": ("swir1", "swir_1", "swir16", "b11"),
    "swir2": ("swir2", "swir_2", "swir22", "b12"),
    "pan": ("pan", "panchromatic"),
    "vv": ("vv", "sigma0_vv", "gamma0_vv", "beta0_vv"),
    "vh": ("vh", "sigma0_vh", "gamma0_vh", "beta0_vh"),
    "hh": ("hh", "sigma0_hh", "gamma0_hh", "beta0_hh"),
    "hv": ("hv", "sigma0_hv", "gamma0_hv", "beta0_hv"),
    "height": ("height", "ndsm", "normalised dsm", "normalized dsm", "height above ground"),
    "dtm": ("dtm", "terrain", "dem", "elevation", "altitude"),
}
_ALIAS_TO_NAME = {alias: name for name, aliases in BAND_ALIASES.items() for alias in aliases}
#: Descriptions GDAL or tools write that say nothing about the band.
_GENERIC = re.compile(r"^((band|layer)[ _-]*)?\d*$")


def canonical_band(text: str | None) -> str | None:
    """The band a description (or a band name) names, or None when it names none or is ambiguous.

    The whole text is tried first (``"near infrared"``), then each token (``"Sigma0_VV_db"`` -> ``vv``,
    ``"B04 - Red"`` -> ``red``); tokens naming different bands make it ambiguous.
    """
    if text is None:
        return None
    cleaned = re.sub(r"\(.*?\)", " ", text).strip().lower()
    if not cleaned or _GENERIC.match(cleaned):
        return None
    if cleaned in _ALIAS_TO_NAME:
        return _ALIAS_TO_NAME[cleaned]
    tokens = [t for t in re.split(r"[^a-z0-9]+", cleaned) if t]
    joined = ["_".join(tokens[i : i + 2]) for i in range(len(tokens) - 1)]
    found = {_ALIAS_TO_NAME[t] for t in (*joined, *tokens) if t in _ALIAS_TO_NAME}
    return found.pop() if len(found) == 1 else None


def _spec_names(spec: ModalitySpec) -> list[str]:
    """The manifest's band names as canonical names where they have one (else themselves, lower case)."""
    return [canonical_band(name) or name.lower() for name in spec.band_names]


@dataclass(frozen=True)
class BandPlan:
    """The 1-based file bands that feed a modality's engine inputs, in the manifest's order."""

    indexes: tuple[int, ...]
    alpha: int | None = None
    note: str | None = None


def parse_band_selection(items: Sequence[str] | None) -> dict[str, tuple[str, ...]]:
    """``["optical=2,3,4,8", "sar=VV,VH"]`` -> ``{"optical": ("2", "3", "4", "8"), "sar": ("VV", "VH")}``."""
    selection: dict[str, tuple[str, ...]] = {}
    for item in items or ():
        name, sep, bands = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in MODALITIES:
            raise ConfigError(
                f"--bands {item!r}: expected MODALITY=BANDS with MODALITY one of {', '.join(MODALITIES)}, "
                "e.g. --bands optical=2,3,4,8 or --bands sar=VV,VH"
            )
        values = tuple(b.strip() for b in bands.split(",") if b.strip())
        if not values:
            raise ConfigError(f"--bands {item!r}: no band given after '='")
        if name in selection:
            raise ConfigError(f"--bands names {name} twice; give its bands once")
        selection[name] = values
    return selection


def plan_bands(
    path: str,
    spec: ModalitySpec,
    count: int,
    descriptions: Sequence[str | None],
    alpha: int | None,
    selection: Sequence[str] | None = None,
) -> BandPlan:
    """Decide which bands of a ``count``-band file (``alpha`` = its alpha band, if any) feed ``spec``."""
    data = [b for b in range(1, count + 1) if b != alpha]
    named = {b: canonical_band(descriptions[b - 1]) for b in data}
    wanted = _spec_names(spec)
    expected = f"{spec.bands} {spec.name} band(s) ({', '.join(spec.band_names)})"
    if selection is not None:
        indexes = tuple(_select(path, spec, data, descriptions, named, selection, alpha))
        _check_described(path, spec, indexes, descriptions, named, wanted, chosen_by_user=True)
        return BandPlan(indexes, alpha, f"bands {','.join(map(str, indexes))} of {count} (--bands)")
    described = {b: n for b, n in named.items() if n is not None}
    if len(data) == spec.bands:
        if len(described) == len(data) and sorted(described.values()) == sorted(wanted):
            indexes = tuple(next(b for b, n in described.items() if n == name) for name in wanted)
            note = None
            if indexes != tuple(data):
                note = f"bands {','.join(map(str, indexes))} reordered by their descriptions"
            return BandPlan(indexes, alpha, note)
        _check_described(path, spec, tuple(data), descriptions, named, wanted, chosen_by_user=False)
        return BandPlan(tuple(data), alpha)
    if len(data) > spec.bands:
        matches = [[b for b, n in described.items() if n == name] for name in wanted]
        if all(len(m) == 1 for m in matches):
            indexes = tuple(m[0] for m in matches)
            note = f"bands {','.join(map(str, indexes))} of {count} selected by their descriptions"
            return BandPlan(indexes, alpha, note)
        raise DataError(
            f"{path} has {len(data)} bands but the engines expect {expected}; pick them with "
            f"--bands {spec.name}=N,N,... (band numbers, or descriptions such as "
            f"{','.join(spec.band_names)})"
        )
    alpha_hint = (
        f"; band {alpha} is flagged alpha (a mask, not data): if it holds data, clear the flag with "
        f"gdal_edit.py -colorinterp_{alpha} undefined"
        if alpha is not None
        else ""
    )
    raise DataError(
        f"{path} has {len(data)} data band(s) but the engines expect {expected}; pass data with those "
        f"bands{alpha_hint}"
    )


def _select(
    path: str,
    spec: ModalitySpec,
    data: list[int],
    descriptions: Sequence[str | None],
    named: Mapping[int, str | None],
    selection: Sequence[str],
    alpha: int | None,
) -> list[int]:
    if len(selection) != spec.bands:
        raise ConfigError(
            f"--bands {spec.name}={','.join(selection)} picks {len(selection)} band(s); the engines expect "
            f"{spec.bands} ({', '.join(spec.band_names)})"
        )
    indexes = []
    for item in selection:
        if item.isdigit():
            band = int(item)
            if band not in data:
                what = "the alpha band" if band == alpha else f"not a band of this {len(named)}-band file"
                raise ConfigError(f"--bands {spec.name}: band {band} of {path} is {what}")
        else:
            target = canonical_band(item) or item.lower()
            found = [
                b
                for b in data
                if named[b] == target or (descriptions[b - 1] or "").strip().lower() == item.lower()
            ]
            if len(found) != 1:
                listed = ", ".join(f"{b}={descriptions[b - 1] or '?'}" for b in data)
                raise ConfigError(
                    f"--bands {spec.name}: {item!r} matches {len(found)} band(s) of {path} ({listed}); "
                    "give band numbers instead"
                )
            band = found[0]
        indexes.append(band)
    if len(set(indexes)) != len(indexes):
        raise ConfigError(f"--bands {spec.name}={','.join(selection)} uses a band twice")
    return indexes


def _check_described(
    path: str,
    spec: ModalitySpec,
    indexes: Sequence[int],
    descriptions: Sequence[str | None],
    named: Mapping[int, str | None],
    wanted: Sequence[str],
    chosen_by_user: bool,
) -> None:
    """Refuse a band whose description names another band than the engine input it would feed."""
    for position, band in enumerate(indexes):
        name = named[band]
        if name is None or name == wanted[position]:
            continue
        how = "you chose it" if chosen_by_user else "it is in that position"
        fix = (
            f"--bands {spec.name}={','.join(spec.band_names)} selects them by description"
            if all(name in named.values() for name in wanted)
            else f"pass the {spec.band_names[position]} band (choose bands with --bands {spec.name}=N,N,...)"
        )
        raise DataError(
            f"{path}: band {band} is described as {descriptions[band - 1]!r} but would feed the engines' "
            f"{spec.band_names[position]} input ({how}); {fix}"
        )
