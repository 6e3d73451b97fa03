"""``runtime.output_errors.gdal_errors``: GDAL errors become one ``OutputError``, attributed to the thread
that hit them (the reader threads decode inputs while the writer thread writes outputs)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from runtime.output_errors import gdal_errors
from stars_edge.errors import OutputError


def _gdal_error(message: str) -> None:
    """What rasterio's GDAL error handler does with an error: a record on the ``rasterio._env`` logger."""
    logging.getLogger("rasterio._env").error(message)


def test_an_error_signalled_in_this_thread_is_the_writes_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="TIFFAppendToStrip"), gdal_errors(tmp_path / "o.tif", "writing"):
        _gdal_error("TIFFAppendToStrip: Write error at scanline 0")


def test_an_error_another_thread_hits_meanwhile_is_not(tmp_path: Path) -> None:
    with gdal_errors(tmp_path / "o.tif", "writing"):
        reader = threading.Thread(target=_gdal_error, args=("input.tif: IReadBlock failed",))
        reader.start()
        reader.join()
