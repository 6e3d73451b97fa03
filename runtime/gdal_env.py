"""How GDAL sees a run: paths as GDAL must read them (``/vsi`` archives, URLs), the local file behind one,
and the block cache sized for the run's layout."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError

#: GDAL block cache for a run, unless GDAL_CACHEMAX is set: enough for every block a column chunk's tile
#: row touches and the next tile row reuses (``tile_cache_bytes``), between these bounds. Independent of
#: the scene's height; bounded in width by the column chunk, so memory stays flat as scenes grow.
GDAL_CACHE_MB = 32
GDAL_CACHE_MAX_MB = 512


def tile_cache_bytes(
    paths: Sequence[str | os.PathLike[str]], tile: int, chunk_width: int | None = None
) -> int:
    """Bytes of decoded blocks one tile row of a column chunk touches and the next tile row reuses.

    A tile row reads ``tile`` rows that straddle up to two block rows; the next tile row starts ``stride``
    lower and reads the same blocks again. Keeping ``tile + 2 x block`` rows by ``chunk + tile + block``
    columns decodes each block about once (measured on a 4096 px Sentinel-2-like scene, 512 px deflate
    blocks: reader CPU 5.6 s at a 34 MB cache, 2.2 s at 96 MB; decoding every block once costs 1.3 s).
    Unreadable files count 0: their error comes later, with a proper message, from ``RasterSource``.
    """
    total = 0
    for path in paths:
        try:
            with rasterio.open(gdal_path(path)) as dataset:
                block_rows, block_cols = dataset.block_shapes[0] if dataset.block_shapes else (1, 1)
                itemsize = max(np.dtype(dtype).itemsize for dtype in dataset.dtypes)
                width = dataset.width if chunk_width is None else min(dataset.width, chunk_width + tile)
                rows = min(dataset.height, tile + 2 * block_rows)
                total += rows * (width + block_cols) * dataset.count * itemsize
        except (RasterioError, OSError):
            continue
    return total


@contextlib.contextmanager
def gdal_cache_limit(wanted_bytes: int = 0) -> Iterator[None]:
    """Size GDAL's block cache for a run: ``wanted_bytes`` (``tile_cache_bytes``), between ``GDAL_CACHE_MB``
    and ``GDAL_CACHE_MAX_MB``. GDAL's own default (5 % of RAM) ignores the layout."""
    wanted = -(-wanted_bytes // (1024 * 1024))
    megabytes = min(max(GDAL_CACHE_MB, wanted), GDAL_CACHE_MAX_MB)
    options = {} if "GDAL_CACHEMAX" in os.environ else {"GDAL_CACHEMAX": megabytes * 1024 * 1024}
    with rasterio.Env(**options):
        yield


#: GDAL virtual file systems whose next path component is a local archive or file (``/vsizip//a/b.zip/x``).
_ARCHIVE_PREFIXES = ("/vsizip/", "/vsitar/", "/vsigzip/", "/vsi7z/", "/vsirar/")


def gdal_path(path: str | os.PathLike[str]) -> str:
    """The path as GDAL must see it. ``pathlib`` folds the double slash of ``/vsizip//abs/a.zip/x.tif``
    (and of ``/vsicurl/https://``), which turns an absolute archive path into a relative one; restore it."""
    text = os.fspath(path)
    for prefix in _ARCHIVE_PREFIXES:
        if text.startswith(prefix) and not text.startswith(prefix + "/"):
            rest = text[len(prefix) :]
            parts = rest.split("/")
            for end in range(1, len(parts) + 1):
                candidate = "/" + "/".join(parts[:end])
                if os.path.isfile(candidate):
                    return prefix + candidate + rest[len(candidate) - 1 :]
    for scheme in ("https:/", "http:/", "s3:/", "gs:/"):
        marker = "/" + scheme
        if marker in text and marker + "/" not in text:
            return text.replace(marker, marker + "/", 1)
    return text


def local_file(path: str | os.PathLike[str]) -> Path | None:
    """The local file behind a path: itself, the archive of a ``/vsizip/``-style path, None for remote or
    in-memory ``/vsi`` paths (a resumed run compares its size and mtime)."""
    text = gdal_path(path)
    for prefix in _ARCHIVE_PREFIXES:
        if text.startswith(prefix + "/"):
            parts = text[len(prefix) :].split("/")
            for end in range(2, len(parts) + 1):
                candidate = Path("/".join(parts[:end]))
                if candidate.is_file():
                    return candidate
            return None
    return None if text.startswith("/vsi") else Path(text)
