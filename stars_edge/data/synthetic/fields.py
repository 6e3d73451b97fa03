"""Random fields and raster helpers shared by the layout and the sensor renderers (numpy/scipy only)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.fft


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], scale_px: float, fractal: float = 0.0
) -> np.ndarray:
    """Zero-mean, unit-std random field with correlation length ``scale_px`` (FFT filtering of white noise).

    ``fractal > 0`` adds a power-law tail (k^-fractal) so terrain and clouds keep detail at small scales.
    """
    height, width = shape
    noise = rng.standard_normal(shape, dtype=np.float32)
    spectrum = scipy.fft.rfft2(noise, workers=1)
    ky = np.fft.fftfreq(height).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(width).astype(np.float32)[None, :]
    k2 = ky * ky + kx * kx
    # a correlation length beyond a quarter of the scene would leave (almost) only the removed mean: clamp it
    scale = min(max(float(scale_px), 0.5), max(max(shape) / 4.0, 0.5))
    gain = np.exp(-2.0 * (math.pi**2) * k2 * scale * scale)
    if fractal > 0:
        k0 = 1.0 / (4.0 * scale)
        gain = gain + 0.15 * (k0 * k0 / (k2 + k0 * k0)) ** (fractal / 2.0)
    spectrum *= gain
    out = scipy.fft.irfft2(spectrum, s=shape, workers=1).astype(np.float32)
    out -= out.mean()
    std = float(out.std())
    return out / std if std > 0 else out


def quantile(array: np.ndarray, q: float) -> float:
    """Quantile from a strided subsample: exact enough for thresholds and far cheaper on big scenes."""
    flat = array.reshape(-1)
    sample = flat[:: max(1, flat.size // 250_000)]
    return float(np.quantile(sample, min(max(q, 0.0), 1.0)))


def splitmix(seed: int, keys: Sequence[np.ndarray]) -> np.ndarray:
    """splitmix64-style mix of integer key arrays into uniform [0, 1) floats (broadcast over the keys)."""
    h = np.full(np.broadcast_shapes(*(k.shape for k in keys)), np.uint64(seed & 0xFFFFFFFF), dtype=np.uint64)
    multipliers = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD6E8FEB86659FD93)
    with np.errstate(over="ignore"):
        for i, key in enumerate(keys):
            k = key.astype(np.int64).astype(np.uint64)
            h = h ^ (k * np.uint64(multipliers[i % 4]) + np.uint64(i + 1))
            h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def hash_uniform(seed: int, *keys: np.ndarray | int) -> np.ndarray:
    """Deterministic uniform [0, 1) per integer key tuple, for per-object random attributes.

    Why: object attributes (does this lot have a building, its height, is this parking slot taken) must be
    vectorised over pixels and identical for every pixel of one object, without a Python loop per object.
    Keys are object indices, so they take few distinct values: the hash is computed once per value
    combination (a small table) and gathered per pixel, which gives the same numbers far faster.
    """
    arrays = [np.asarray(k) for k in keys]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    total = math.prod(shape)
    varying = [i for i, a in enumerate(arrays) if a.size > 1]
    if varying and total > 4096:
        lows = [int(arrays[i].min()) for i in varying]
        sizes = [int(arrays[i].max()) - low + 1 for i, low in zip(varying, lows, strict=True)]
        if math.prod(sizes) * 4 <= total:
            axes = np.meshgrid(
                *(np.arange(low, low + n) for low, n in zip(lows, sizes, strict=True)),
                indexing="ij",
                sparse=True,
            )
            table_keys = list(arrays)
            for axis, i in zip(axes, varying, strict=True):
                table_keys[i] = axis
            table = splitmix(seed, table_keys)
            index = tuple((arrays[i] - low).astype(np.intp) for i, low in zip(varying, lows, strict=True))
            return np.broadcast_to(table[index], shape)
    return splitmix(seed, arrays)


def shift(array: np.ndarray, drow: int, dcol: int, fill: float | bool) -> np.ndarray:
    """``out[r, c] = array[r + drow, c + dcol]``, with ``fill`` where that falls outside the array."""
    out = np.full_like(array, fill)
    height, width = array.shape
    if abs(drow) >= height or abs(dcol) >= width:
        return out
    src_r = slice(max(drow, 0), height + min(drow, 0))
    dst_r = slice(max(-drow, 0), height + min(-drow, 0))
    src_c = slice(max(dcol, 0), width + min(dcol, 0))
    dst_c = slice(max(-dcol, 0), width + min(-dcol, 0))
    out[dst_r, dst_c] = array[src_r, src_c]
    return out


def cast_shadow(
    height: np.ndarray,
    toward_source: tuple[float, float],
    tan_elevation: float,
    pixel_size: float,
    max_px: int,
) -> np.ndarray:
    """Pixels hidden from a source (sun or radar) by taller surfaces along ``toward_source`` (row, col unit).

    A pixel is shadowed when a surface d pixels towards the source rises above the ray through it,
    i.e. ``h(p + d) - h(p) > d * pixel_size * tan(elevation)``; tested for d = 1..max_px.
    """
    shadow = np.zeros(height.shape, dtype=bool)
    drop_per_px = pixel_size * tan_elevation
    seen: set[tuple[int, int]] = set()
    for d in range(1, max_px + 1):
        offset = (round(d * toward_source[0]), round(d * toward_source[1]))
        if offset in seen or offset == (0, 0):
            continue
        seen.add(offset)
        distance = math.hypot(*offset)
        shifted = shift(height, offset[0], offset[1], fill=-np.inf)
        shadow |= shifted - height > distance * drop_per_px
    return shadow


def hillshade(surface: np.ndarray, pixel_size: float, azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """cos(incidence) / cos(zenith) of sunlight on the surface (1 on flat ground, 0 facing away)."""
    grad_row, grad_col = np.gradient(surface, pixel_size)
    # north-up image: +row is south, +col is east
    azimuth = math.radians(azimuth_deg)
    zenith = math.radians(90.0 - elevation_deg)
    sun_east, sun_north = math.sin(azimuth) * math.sin(zenith), math.cos(azimuth) * math.sin(zenith)
    sun_up = math.cos(zenith)
    dz_east, dz_north = grad_col, -grad_row
    norm = np.sqrt(dz_east * dz_east + dz_north * dz_north + 1.0)
    cos_incidence = (-dz_east * sun_east - dz_north * sun_north + sun_up) / norm
    return np.clip(cos_incidence / sun_up, 0.0, 1.6).astype(np.float32)
