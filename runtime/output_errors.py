"""Output failures as one line each: GDAL errors signalled while writing (which a plain ``close()``
swallows), ``OSError``s of file operations, and failing fsyncs, with the likely cause (full disk, quota,
``ulimit -f``) and the fix."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import rasterio
import rasterio.errors

from stars_edge.errors import OutputError


def fsync_path(path: Path) -> None:
    """Flush a file's (or folder's) data to the storage device; a failing fsync (EIO) is an error."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputError(f"flushing {path} to disk failed ({exc.strerror}); check the device") from exc


class _GdalErrors(logging.Handler):
    """Collects the GDAL errors rasterio reports through its ``rasterio._env`` logger into the collector of
    the thread that logged them: GDAL reports an error in the thread that hit it, and reader threads decode
    inputs while writer threads (one per scene; ``run-batch`` may run several scenes in a process) write."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.collectors = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        messages: list[str] | None = getattr(self.collectors, "messages", None)
        if messages is None:
            return
        text = record.getMessage()
        if text.startswith("GDAL signalled an error") or record.levelno >= logging.ERROR:
            messages.append(text)


@dataclass
class _LoggerState:
    """Threads inside ``gdal_errors`` and the logger's settings before the first of them entered."""

    inside: int = 0
    level: int = logging.NOTSET
    propagate: bool = True


_HANDLER = _GdalErrors()
_LOCK = threading.Lock()
_STATE = _LoggerState()


def _attach() -> None:
    """The first thread in attaches the handler and sets the logger up; the others only count."""
    logger = logging.getLogger("rasterio._env")
    with _LOCK:
        if _STATE.inside == 0:
            _STATE.level, _STATE.propagate = logger.level, logger.propagate
            logger.addHandler(_HANDLER)
            logger.setLevel(logging.DEBUG)
            # DEBUG is only for our handler: an application's root handler must not print GDAL's chatter
            logger.propagate = False
        _STATE.inside += 1


def _detach() -> None:
    """The last thread out restores the logger as it found it."""
    logger = logging.getLogger("rasterio._env")
    with _LOCK:
        _STATE.inside -= 1
        if _STATE.inside == 0:
            logger.removeHandler(_HANDLER)
            logger.setLevel(_STATE.level)
            logger.propagate = _STATE.propagate


@contextlib.contextmanager
def gdal_errors(path: Path, action: str) -> Iterator[None]:
    """Turn any GDAL error signalled in the block by this thread (and any rasterio exception) into one
    ``OutputError``. Safe to use from several threads at once."""
    outer = getattr(_HANDLER.collectors, "messages", None)
    messages: list[str] = []
    _HANDLER.collectors.messages = messages
    _attach()
    try:
        with rasterio.Env():
            yield
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise OutputError(_failure(path, action, _innermost(exc))) from exc
    finally:
        _detach()
        _HANDLER.collectors.messages = outer
    if messages:
        raise OutputError(_failure(path, action, messages[0]))


def _innermost(exc: BaseException) -> str:
    """The root GDAL message of a chained rasterio error ("Write failed. See previous exception...")."""
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        text = str(cause) or text
        cause = cause.__cause__ or cause.__context__
    return text


def _failure(path: Path, action: str, message: str, error: int | None = None) -> str:
    """One line: the file, the system's or GDAL's message, the likely cause (disk full, file size limit)
    and the fix. ``error`` is the errno when known (EFBIG, ENOSPC, EDQUOT name the cause directly)."""
    line = message.strip().splitlines()[0] if message.strip() else "unknown GDAL error"
    line = line.removeprefix("GDAL signalled an error: ")
    causes = []
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if error == errno.ENOSPC:
        causes.append("no space left on device")
    elif error == errno.EDQUOT:
        causes.append("disk quota exceeded")
    elif error == errno.EFBIG and soft != resource.RLIM_INFINITY:
        causes.append(f"file size limit (ulimit -f) of {soft} bytes reached")
    elif error is None:
        with contextlib.suppress(OSError):
            stats = os.statvfs(path.parent)
            if stats.f_bavail * stats.f_frsize < 1 << 20:
                causes.append("no space left on device")
        if soft != resource.RLIM_INFINITY:
            with contextlib.suppress(OSError):
                if not path.exists() or path.stat().st_size + (1 << 20) >= soft:
                    causes.append(f"file size limit (ulimit -f) of {soft} bytes reached")
    cause = f": {'; '.join(causes)}" if causes else ""
    return f"{action} {path} failed ({line}{cause}); free disk space or fix the folder, then rerun"


def os_failure(path: Path, action: str, exc: OSError) -> OutputError:
    """An ``OSError`` of a file operation as one ``OutputError`` line naming the file and the cause."""
    return OutputError(_failure(Path(path), action, exc.strerror or str(exc), exc.errno))
