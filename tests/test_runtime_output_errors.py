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


def test_scenes_writing_at_once_leave_the_logger_as_they_found_it(tmp_path: Path) -> None:
    """Two threads inside ``gdal_errors``, the first leaving while the second is still in (run-batch's
    scenes in one process): the logger ends with its own level and propagation, and each thread's error
    is its own."""
    logger = logging.getLogger("rasterio._env")
    before = (logger.level, logger.propagate, list(logger.handlers))
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    errors: dict[str, str] = {}

    def first() -> None:
        with gdal_errors(tmp_path / "a.tif", "writing"):
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        try:
            with gdal_errors(tmp_path / "b.tif", "writing"):
                second_in.set()
                first_out.wait(5)
                _gdal_error("b.tif: write failed")
        except OutputError as exc:
            errors["second"] = str(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert "b.tif: write failed" in errors["second"]
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
