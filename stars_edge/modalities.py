"""Modalities, availability patterns and per-band normalisation (torch-free).

A *pattern* is a non-empty subset of the modalities. It has exactly one spelling everywhere (file names,
manifest, logs, CLI): the present modalities in canonical order joined by ``+``, e.g. ``optical+sar+dsm``,
``optical+dsm``, ``sar``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stars_edge.errors import ConfigError

#: Label value of unlabelled pixels (losses, metrics and label GeoTIFFs ignore it).
IGNORE_INDEX = 255

#: A modality is used in a tile from this valid-pixel fraction on, pixel by pixel where partly valid.
#: Measured on the demo scene (clouds + a SAR swath gap, tile 256): mIoU 60.9 at 0.95, 62.8 at 0.5 and
#: 64.9 at 0.05 (docs/RUNTIME.md): a partly valid modality is worth using for the pixels it covers.
DEFAULT_MIN_VALID = 0.05

#: Canonical modality order. Input tensors, ONNX inputs and pattern names always follow it.
MODALITIES: tuple[str, ...] = ("optical", "sar", "dsm")


@dataclass(frozen=True, order=False)
class Pattern:
    """A modality-availability pattern: the modalities present, in canonical order."""

    modalities: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ConfigError(
                "a pattern needs at least one modality; valid modalities: " + ", ".join(MODALITIES)
            )
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown:
            raise ConfigError(f"unknown modality {unknown[0]!r}; valid modalities: {', '.join(MODALITIES)}")
        if len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"pattern lists a modality twice: {'+'.join(self.modalities)}")
        ordered = tuple(m for m in MODALITIES if m in self.modalities)
        object.__setattr__(self, "modalities", ordered)

    @classmethod
    def parse(cls, text: str) -> Pattern:
        """Parse ``"sar+optical"`` (any order, any case, ``+`` or ``,`` separated) into a Pattern."""
        parts = [p.strip().lower() for p in text.replace(",", "+").split("+") if p.strip()]
        return cls(tuple(parts))

    @classmethod
    def full(cls, modalities: Iterable[str] = MODALITIES) -> Pattern:
        return cls(tuple(modalities))

    @property
    def name(self) -> str:
        return "+".join(self.modalities)

    @property
    def index(self) -> int:
        """1-based position in ``ALL_PATTERNS`` (0 is reserved for 'no modality valid' in pattern maps)."""
        return ALL_PATTERNS.index(self) + 1

    def __contains__(self, modality: object) -> bool:
        return modality in self.modalities

    def __iter__(self) -> Iterator[str]:
        return iter(self.modalities)

    def __len__(self) -> int:
        return len(self.modalities)

    def __str__(self) -> str:
        return self.name

    def without(self, modality: str) -> Pattern | None:
        """This pattern minus one modality, or None when nothing would remain."""
        rest = tuple(m for m in self.modalities if m != modality)
        return Pattern(rest) if rest else None

    def missing(self, universe: Sequence[str] = MODALITIES) -> tuple[str, ...]:
        return tuple(m for m in universe if m not in self.modalities)


def all_patterns(modalities: Sequence[str] = MODALITIES) -> tuple[Pattern, ...]:
    """Every non-empty subset, largest first, then in canonical order (the manifest's order)."""
    ordered = tuple(m for m in MODALITIES if m in modalities)
    subsets: list[Pattern] = []
    for size in range(len(ordered), 0, -1):
        subsets.extend(Pattern(combo) for combo in itertools.combinations(ordered, size))
    return tuple(subsets)


#: The 7 patterns of the three modalities; ``Pattern.index`` numbers them 1..7 in this order.
ALL_PATTERNS: tuple[Pattern, ...] = all_patterns()


def parse_patterns(text: str | Sequence[str], available: Sequence[str] = MODALITIES) -> tuple[Pattern, ...]:
    """Parse ``"all"`` or a comma/space separated list of patterns (``"optical+sar sar"``)."""
    items = [text] if isinstance(text, str) else list(text)
    tokens = [t for item in items for t in item.replace(",", " ").split()]
    if not tokens or tokens == ["all"]:
        return all_patterns(available)
    patterns = []
    for token in tokens:
        pattern = Pattern.parse(token)
        missing = [m for m in pattern if m not in available]
        if missing:
            raise ConfigError(
                f"pattern {pattern} needs {', '.join(missing)}, which this model was not trained with "
                f"(its modalities: {', '.join(available)})"
            )
        if pattern not in patterns:
            patterns.append(pattern)
    return tuple(patterns)


@dataclass(frozen=True)
class ModalitySpec:
    """Band layout and per-band normalisation of one modality.

    Band counts and statistics are data-driven: a Sentinel-2 model has more optical bands than an aerial one.
    ``normalize`` maps physical values to roughly zero-mean, unit-variance inputs.
    """

    name: str
    band_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    units: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in MODALITIES:
            raise ConfigError(f"unknown modality {self.name!r}; valid modalities: {', '.join(MODALITIES)}")
        n = len(self.band_names)
        if n == 0 or len(self.mean) != n or len(self.std) != n:
            raise ConfigError(
                f"{self.name}: band_names ({n}), mean ({len(self.mean)}) and std ({len(self.std)}) "
                "must have the same non-zero length"
            )
        if any(s <= 0 or not np.isfinite(s) for s in self.std):
            raise ConfigError(f"{self.name}: every std must be a positive finite number, got {self.std}")

    @property
    def bands(self) -> int:
        return len(self.band_names)

    def normalize(self, array: np.ndarray) -> np.ndarray:
        """Normalise ``(..., bands, H, W)`` physical values to float32 model inputs."""
        if array.ndim < 3 or array.shape[-3] != self.bands:
            raise ConfigError(
                f"{self.name}: expected {self.bands} bands ({', '.join(self.band_names)}), "
                f"got array of shape {tuple(array.shape)}"
            )
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return ((array.astype(np.float32, copy=False) - mean) / std).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "band_names": list(self.band_names),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "units": self.units,
            **({"extra": dict(self.extra)} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModalitySpec:
        try:
            return cls(
                name=str(data["name"]),
                band_names=tuple(str(b) for b in data["band_names"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                units=str(data.get("units", "")),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid modality spec {dict(data)!r}: {exc}") from exc


#: Defaults for the embedded synthetic data (physical units); real datasets compute their own statistics.
DEFAULT_SPECS: dict[str, ModalitySpec] = {
    "optical": ModalitySpec(
        "optical",
        ("blue", "green", "red", "nir"),
        (0.08, 0.10, 0.10, 0.25),
        (0.05, 0.05, 0.06, 0.12),
        units="reflectance",
    ),
    "sar": ModalitySpec("sar", ("vv", "vh"), (-10.0, -17.0), (4.0, 4.0), units="dB"),
    "dsm": ModalitySpec("dsm", ("height",), (5.0,), (8.0,), units="m"),
}


def specs_from_dicts(items: Iterable[Mapping[str, Any]]) -> dict[str, ModalitySpec]:
    """Rebuild ``{name: ModalitySpec}`` in canonical order from serialised specs."""
    specs = {s.name: s for s in (ModalitySpec.from_dict(d) for d in items)}
    return {m: specs[m] for m in MODALITIES if m in specs}
