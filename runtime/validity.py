"""Reading and validity: which modality each pixel may use, and what the engine sees where one is invalid.

The rule (see docs/RUNTIME.md): a pixel uses a modality only if no invalid pixel of that modality lies within
the engines' measured **context margin** (``Manifest.context_margin``), so its class never depends on what
was put into invalid pixels. **Speckle** (invalid pixels not part of any fully invalid 3x3 square: dead
pixels, single NaNs, thin scan-line dropouts) is filled with the mean of its valid 8-neighbours and then
counted as valid: it costs no extra engine run and the filled value is a function of valid data only.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType

import numpy as np

from runtime.kernels import compiled, rows_contiguous
from runtime.sources import RawTile
from runtime.tile_source import NO_MASK
from stars_edge.contract import ModalityContract, check_values, describe_sample
from stars_edge.errors import DataError
from stars_edge.modalities import MODALITIES, ModalitySpec, Pattern

#: Bit of each modality in a per-pixel pattern code (optical 1, sar 2, dsm 4).
MODALITY_BITS: dict[str, int] = {m: 1 << i for i, m in enumerate(MODALITIES)}
#: Pattern of each 3-bit code (None for 0), and its ``Pattern.index`` (0 for none).
CODE_PATTERNS: tuple[Pattern | None, ...] = tuple(
    Pattern(tuple(m for m in MODALITIES if code & MODALITY_BITS[m])) if code else None for code in range(8)
)
CODE_TO_INDEX = np.array([p.index if p is not None else 0 for p in CODE_PATTERNS], dtype=np.uint8)
#: Context margin used when a manifest does not record one (engines exported before it was measured).
DEFAULT_CONTEXT_MARGIN = 32


def box_any(mask: np.ndarray, radius: int) -> np.ndarray:
    """True where ``mask`` has a True pixel within ``radius`` (Chebyshev distance): a square dilation.

    Separable; along each axis a window of ``2 * radius + 1`` is the OR of two overlapping runs of width
    ``2**k``, each built by doubling (``run |= run shifted by width``): ``log2(radius)`` byte-wide ORs per
    axis, about ten times faster than the running sums over ``int32`` cumulative sums it replaced (the same
    result on 300 random masks; tested against the definition in ``tests/test_runtime_rules.py``). Each axis
    is worked on in place, not moved to the front: a transposed copy of a boolean mask costs more than the
    ORs (544 px masks, quiet: 3x faster at radius 1, 1.3x at 16, the same at 64; session 14).
    """
    if radius <= 0 or not mask.any():
        return mask.copy()
    out = np.asarray(mask, dtype=bool)
    length = 2 * radius + 1
    for axis in (0, 1):  # a 2-D mask (``_along``)
        size = out.shape[axis]
        shape = list(out.shape)
        shape[axis] += 2 * radius
        run = np.zeros(shape, dtype=bool)
        run[_along(axis, radius, radius + size)] = out
        width = 1
        while 2 * width <= length:  # run[i] = any(padded[i : i + 2 * width]) along the axis
            run[_along(axis, 0, shape[axis] - width)] |= run[_along(axis, width, shape[axis])]
            width *= 2
        out = run[_along(axis, 0, size)] | run[_along(axis, length - width, length - width + size)]
    return out


def _along(axis: int, start: int, stop: int) -> tuple[slice, ...]:
    """The index of ``[start, stop)`` along ``axis`` of a 2-D array (all of the other axis)."""
    return (slice(start, stop), slice(None)) if axis == 0 else (slice(None), slice(start, stop))


def speckle_mask(valid: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Invalid pixels inside the raster not covered by any 3x3 square without a valid pixel; each of them
    has a valid 8-neighbour (padding and the area beyond the tile count as invalid)."""
    invalid = ~valid & inside
    if not invalid.any():
        return invalid
    core = ~box_any(valid, 1)  # centres of 3x3 squares with no valid pixel
    return invalid & ~box_any(core, 1)


def neighbour_mean(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean of the valid 8-neighbours (and self) of every pixel, ``(bands, H, W)``; 0 where none is valid."""
    weights = valid.astype(np.float64)
    sums = np.empty(values.shape, dtype=np.float64)
    counts = _box_sum(weights)
    for band in range(values.shape[0]):
        sums[band] = _box_sum(np.where(valid, values[band], 0.0))
    return (sums / np.maximum(counts, 1.0)).astype(np.float32)


def _box_sum(array: np.ndarray) -> np.ndarray:
    padded = np.pad(array, 1)
    height, width = array.shape
    return sum(padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3))  # type: ignore[return-value]


def clean_tile(raw: RawTile) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Physical values with speckle filled from valid neighbours, and validity with speckle counted valid."""
    values: dict[str, np.ndarray] = {}
    valid: dict[str, np.ndarray] = {}
    for name, data in raw.values.items():
        ok = raw.valid[name]
        speckle = speckle_mask(ok, raw.inside)
        if speckle.any():
            filled = neighbour_mean(data, ok)
            data = np.where(speckle[None], filled, data)
            ok = ok | speckle
        values[name], valid[name] = data, ok
    return values, valid


def pixel_codes(
    valid: Mapping[str, np.ndarray], inside: np.ndarray, min_valid: float, margin: int
) -> np.ndarray:
    """Per-pixel 3-bit pattern codes of a tile (0 = no prediction).

    A modality is *present* when its valid fraction over the tile's inside pixels reaches ``min_valid``.
    A pixel takes the present modalities that have no invalid pixel within ``margin``; if none, any such
    modality; if still none (every valid modality has a gap within the margin), the modalities valid at the
    pixel: nothing else can predict it, and only those pixels see fill values through the receptive field.
    """
    codes = np.zeros(inside.shape, dtype=np.uint8)
    inside_count = int(np.count_nonzero(inside))
    if inside_count == 0:
        return codes
    whole = inside_count == inside.size
    if whole and all(ok.all() for ok in valid.values()):
        # every modality valid everywhere (most tiles of a clear scene): each pixel takes all of them
        codes.fill(np.uint8(sum(MODALITY_BITS[m] for m in valid)))
        return codes
    fractions = {
        m: float(np.count_nonzero(v if whole else v & inside)) / inside_count for m, v in valid.items()
    }
    present = [m for m, f in fractions.items() if f >= min_valid] or [
        m for m, f in fractions.items() if f > 0
    ]
    clean_any = np.zeros_like(codes)
    valid_any = np.zeros_like(codes)
    for name, ok in valid.items():
        bit = np.uint8(MODALITY_BITS[name])
        # margin 0 (the shipped default): a valid pixel is clean, ok & ~(~ok & inside) == ok
        clean = ok if margin <= 0 else ok & ~box_any(~ok & inside, margin)
        np.bitwise_or(clean_any, bit, out=clean_any, where=clean)
        np.bitwise_or(valid_any, bit, out=valid_any, where=ok)
        if name in present:
            np.bitwise_or(codes, bit, out=codes, where=clean)
    np.copyto(codes, clean_any, where=codes == 0)
    np.copyto(codes, valid_any, where=codes == 0)
    if not whole:
        codes[~inside] = 0
    return codes


def prepare_inputs(
    values: Mapping[str, np.ndarray],
    valid: Mapping[str, np.ndarray],
    inside: np.ndarray,
    specs: Mapping[str, ModalitySpec],
    fill: float = 0.0,
    out: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Normalised ``float32 (bands, T, T)`` inputs: ``fill`` (0 = the band mean) where a modality is invalid
    inside the raster, 0 in the padding outside it. No used output depends on ``fill`` (``pixel_codes``).
    Into ``out``'s arrays (per modality, ``GroupBuffers`` slots) where given."""
    prepared: dict[str, np.ndarray] = {}
    kernels = compiled()
    outside = not inside.all()
    edge = np.ascontiguousarray(inside) if outside and kernels is not None else None
    for name, data in values.items():
        holes = ~valid[name] & inside
        slot = None if out is None else out.get(name)
        fused = _normalised_filled(kernels, specs[name], data, holes, edge, fill, slot)
        if fused is not None:
            prepared[name] = fused
            continue
        normalised = normalize_owned(specs[name], data, slot)
        if holes.any():
            np.copyto(normalised, np.float32(fill), where=holes[None])
        if outside:
            np.copyto(normalised, np.float32(0.0), where=~inside[None])
        prepared[name] = normalised
    return prepared


def _normalised_filled(
    kernels: ModuleType | None,
    spec: ModalitySpec,
    data: np.ndarray,
    holes: np.ndarray,
    edge: np.ndarray | None,
    fill: float,
    slot: np.ndarray | None,
) -> np.ndarray | None:
    """``prepare_inputs``' normalisation, fill and padding of one modality in one compiled pass
    (``normalise_filled``: the same bits as the numpy passes), into ``slot`` or ``data``'s own buffer (a new
    one where ``data`` is not a contiguous tile it may overwrite); ``edge``: the C-contiguous ``inside``
    mask, None where the whole tile is inside. None where the kernels are not loaded or ``data`` is not a
    float32 ``(bands, T, T)`` tile the compiled loops read (``kernels.rows_contiguous``): the numpy path."""
    if kernels is None or data.dtype != np.float32 or data.ndim != 3 or data.shape[0] != spec.bands:
        return None
    if not rows_contiguous(data):
        return None
    if slot is not None and slot.shape == data.shape and slot.flags.c_contiguous:
        target = slot
    elif data.flags.c_contiguous and data.flags.writeable:
        target = data
    else:
        target = np.empty(data.shape, dtype=np.float32)
    masks = (holes if holes.any() else NO_MASK, NO_MASK if edge is None else edge)
    stats = (np.asarray(v, dtype=np.float32) for v in (spec.mean, spec.std))
    kernels.normalise_filled(data, *stats, *masks, np.float32(fill), target)
    return target


def normalize_owned(spec: ModalitySpec, data: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``spec.normalize(data)`` computed in ``data``'s own buffer, or into ``out`` (a ``GroupBuffers`` slot
    of ``data``'s shape): the same float32 subtraction and division (the same bits) without two tile-sized
    temporaries. Sources hand out tiles the caller owns (``TileSource.read``; a dilated read's crop is a view
    of one); anything else (another dtype, a read-only array) goes through ``normalize``. The backends make a
    view contiguous where they need it. Into a slot, the two numpy passes write it directly (the compiled
    kernel, the same bits, works in place only: it would need a copy into the slot first)."""
    owned = data.dtype == np.float32 and data.flags.writeable
    if not owned or data.ndim != 3 or data.shape[0] != spec.bands:
        return spec.normalize(data)
    target = out if out is not None and out.shape == data.shape else data
    # in place only, and on a view numba cannot vectorise
    kernels = compiled() if target is data and data.flags.c_contiguous else None
    if kernels is not None:
        kernels.normalise_in_place(data, *(np.asarray(v, dtype=np.float32) for v in (spec.mean, spec.std)))
        return data
    np.subtract(data, np.asarray(spec.mean, dtype=np.float32)[:, None, None], out=target)
    np.divide(target, np.asarray(spec.std, dtype=np.float32)[:, None, None], out=target)
    return target


def check_inputs(
    samples: Mapping[str, tuple[np.ndarray, str]],
    contracts: Mapping[str, ModalityContract],
    allow: bool,
) -> list[str]:
    """Test each modality's sampled values against the engines' input contract (``stars_edge.contract``).

    ``samples`` maps a modality to ``(valid physical values (bands, N), file name)``. A mismatch is a
    ``DataError`` naming the file, what the data looks like and the fix; with ``allow`` it is returned as
    a warning line instead (the caller prints it).
    """
    warnings: list[str] = []
    for name, (data, where) in samples.items():
        contract = contracts[name]
        verdict = check_values(data, contract)
        if verdict.problem is None:
            continue
        fix = verdict.explanation.fix if verdict.explanation is not None else "check its units and band order"
        message = f"{where}: {name} {verdict.problem} ({describe_sample(data, contract)}); {fix}" + (
            "" if allow else "; or pass --allow-out-of-range if the data is right"
        )
        if not allow:
            raise DataError(message)
        warnings.append(message)
    return warnings
