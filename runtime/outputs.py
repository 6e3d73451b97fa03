"""Where results go: tiled, compressed GeoTIFFs written whole blocks at a time, committed only when sound.

Each output is written to a hidden ``.NAME.partial`` beside its target. Rows are written only in whole
256-row block bands, so no block is ever written twice (no read-modify-write of compressed blocks, which
libtiff may rewrite in place: a kill during such a rewrite could damage rows already recorded as done).
Every GDAL error during writes, flushes and close is an error (GDAL reports a full disk at flush/close,
which a plain ``close()`` swallows). Before the rename the partial is re-read block by block, optionally
turned into a Cloud Optimized GeoTIFF, and fsynced with its folder; then it is renamed onto the target.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.windows import Window

from stars_edge.errors import OutputError

#: Class map value where no modality was valid (the project's ignore index).
CLASS_NODATA = 255
#: Output block size: 256 px tiles are the usual COG block.
BLOCK = 256


def partial_path(target: Path) -> Path:
    """The hidden in-progress file beside ``target``."""
    return target.with_name(f".{target.name}.partial")


def journal_path(target: Path) -> Path:
    """The resume journal beside the main output ``target``."""
    return target.with_name(f".{target.name}.journal.json")


def check_output_target(target: Path) -> Path:
    """Refuse targets that cannot be written before any work starts; creates nothing.

    A target (and its hidden partial) must be a regular file or a new path: a directory, device node, FIFO or
    socket is refused (the partial would be renamed over a device such as ``/dev/null``, and a FIFO blocks).
    A missing folder is fine when its nearest existing ancestor is a writable folder (it is created only
    once the inputs are valid, ``prepare_output_folder``).
    """
    target = Path(target)
    if target.is_dir():
        raise OutputError(f"{target} is a directory; pass a file path such as {target / 'prediction.tif'}")
    check_regular_or_new(target)
    check_regular_or_new(partial_path(target))
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{ancestor} exists and is not a directory; choose another output directory")
    if not os.access(ancestor, os.W_OK):
        raise OutputError(f"directory {ancestor} is not writable; choose another output location")
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputError(f"{target} exists and is not writable; remove it or choose another path")
    return target


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def check_regular_or_new(path: Path) -> Path:
    """Refuse an output path that exists as anything but a regular file (after links): writing it would
    replace a device node, block on a FIFO or fail on a directory or socket."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return path  # new (a folder on the way that is a file is refused with its own message)
    except OSError as exc:
        raise os_failure(path, "checking", exc) from exc
    if stat.S_ISREG(mode):
        return path
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    raise OutputError(f"output {path} is {kind}; outputs must be regular files or new paths, choose another")


def check_not_inputs(outputs: Mapping[str, Path], inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse any output (or its partial / journal) that is, or resolves to, an input file (same inode)."""
    sources = [Path(p) for p in inputs]
    for kind, target in outputs.items():
        for candidate in (target, partial_path(target), journal_path(target)):
            for source in sources:
                same = candidate.resolve() == source.resolve()
                if not same and candidate.exists() and source.exists():
                    same = os.path.samefile(candidate, source)
                if same:
                    raise OutputError(
                        f"{kind} output {target} is the input {source}; writing it would destroy the input, "
                        "choose another --out path"
                    )


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
    """Collects the GDAL errors rasterio reports through its ``rasterio._env`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("GDAL signalled an error") or record.levelno >= logging.ERROR:
            self.messages.append(text)


@contextlib.contextmanager
def gdal_errors(path: Path, action: str) -> Iterator[None]:
    """Turn any GDAL error signalled in the block (and any rasterio exception) into one ``OutputError``."""
    handler = _GdalErrors()
    logger = logging.getLogger("rasterio._env")
    previous, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    # DEBUG is only for our handler: an application's root handler must not print GDAL's chatter
    logger.propagate = False
    try:
        with rasterio.Env():
            yield
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise OutputError(_failure(path, action, _innermost(exc))) from exc
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        logger.propagate = propagate
    if handler.messages:
        raise OutputError(_failure(path, action, handler.messages[0]))


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


@dataclass
class RasterGrid:
    """Georeferencing shared by every output (the reference raster's)."""

    height: int
    width: int
    crs: Any = None
    transform: Any = None


@dataclass
class OutputSpec:
    """One output raster: its target, band count, dtype, nodata, tags and band descriptions."""

    kind: str
    target: Path
    count: int
    dtype: str
    nodata: float | None
    tags: dict[str, str] = field(default_factory=dict)
    descriptions: tuple[str, ...] = ()


def block_rows(grid: RasterGrid) -> int:
    """Rows per output block band: ``BLOCK`` for tiled outputs, the whole height for tiny striped ones."""
    return BLOCK if grid.height >= 16 and grid.width >= 16 else grid.height


class GeoTiffSink:
    """Writes finished block bands into the partial GeoTIFFs of every requested output."""

    def __init__(self, grid: RasterGrid, outputs: list[OutputSpec], resume: bool) -> None:
        self.grid = grid
        self.outputs = outputs
        #: A write, flush or close failed: what the partials hold past the last checkpoint is not durable.
        self.broken = False
        self._datasets: dict[str, Any] = {}
        try:
            for spec in outputs:
                path = partial_path(spec.target)
                with gdal_errors(path, "creating" if not resume else "reopening"):
                    if resume:
                        self._datasets[spec.kind] = rasterio.open(path, "r+")
                    else:
                        dataset = rasterio.open(path, "w", **self._profile(spec))
                        self._datasets[spec.kind] = dataset
                        dataset.update_tags(**spec.tags)
                        for band, text in enumerate(spec.descriptions, start=1):
                            dataset.set_band_description(band, text)
        except BaseException:
            self.abandon()
            raise

    def _profile(self, spec: OutputSpec) -> dict[str, Any]:
        height, width = self.grid.height, self.grid.width
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "count": spec.count,
            "dtype": spec.dtype,
            "nodata": spec.nodata,
            "crs": self.grid.crs,
            "transform": self.grid.transform,
            "compress": "deflate",
            "predictor": 3 if spec.dtype == "float32" else 2,
            "interleave": "band" if spec.count > 1 else "pixel",
            "BIGTIFF": "IF_SAFER",
        }
        if block_rows(self.grid) == BLOCK:
            profile.update(tiled=True, blockxsize=BLOCK, blockysize=BLOCK)
        return profile

    def write(self, row_start: int, col_start: int, bands: Mapping[str, np.ndarray]) -> None:
        """Write ``(count, rows, cols)`` arrays for each output kind at ``(row_start, col_start)``."""
        for spec in self.outputs:
            data = bands[spec.kind]
            dataset = self._datasets[spec.kind]
            window = Window(col_start, row_start, data.shape[-1], data.shape[-2])
            try:
                with gdal_errors(partial_path(spec.target), f"writing rows {row_start}.. of"):
                    dataset.write(data, window=window)
            except OutputError:
                self.broken = True
                raise

    def flush(self) -> None:
        """Close every partial (GDAL writes its directory), fsync it, and reopen it for more blocks."""
        self.close()
        for spec in self.outputs:
            path = partial_path(spec.target)
            with gdal_errors(path, "reopening"):
                self._datasets[spec.kind] = rasterio.open(path, "r+")

    def close(self) -> None:
        """Close and fsync every partial; a GDAL error at close (a full disk) raises ``OutputError``."""
        datasets, self._datasets = self._datasets, {}
        failure: OutputError | None = None
        for dataset in datasets.values():
            path = Path(dataset.name)
            try:
                with gdal_errors(path, "closing"):
                    dataset.close()
                fsync_path(path)
            except OutputError as exc:
                failure = failure or exc
        if failure is not None:
            self.broken = True
            raise failure

    def abandon(self) -> None:
        """Close every partial while another error unwinds, keeping that error."""
        with contextlib.suppress(OutputError):
            self.close()


def build_overviews(outputs: list[OutputSpec]) -> None:
    """Add internal overviews (nearest for labels, average for probabilities) to the finished partials."""
    for spec in outputs:
        path = partial_path(spec.target)
        with gdal_errors(path, "adding overviews to"), rasterio.open(path, "r+") as dataset:
            factors = [f for f in (2, 4, 8, 16, 32) if min(dataset.height, dataset.width) // f >= BLOCK // 2]
            if factors:
                dataset.build_overviews(factors, _resampling(spec))


def _resampling(spec: OutputSpec) -> Resampling:
    return Resampling.average if spec.kind == "probabilities" else Resampling.nearest


def validate_partial(spec: OutputSpec, grid: RasterGrid) -> None:
    """Re-read every block of a finished partial: a truncated or unreadable file never gets renamed."""
    path = partial_path(spec.target)
    if not path.is_file() or path.stat().st_size == 0:
        raise OutputError(f"{path} is missing or empty after writing; free disk space and rerun")
    with gdal_errors(path, "validating"), rasterio.open(path) as dataset:
        if (dataset.height, dataset.width, dataset.count) != (grid.height, grid.width, spec.count):
            raise OutputError(f"{path} has the wrong shape after writing; delete it and rerun")
        for _, window in dataset.block_windows(1):
            dataset.read(window=window)


def make_cog(spec: OutputSpec) -> None:
    """Rewrite a finished partial as a Cloud Optimized GeoTIFF (internal overviews, 256 px blocks).

    Idempotent, so an interrupted finalisation can simply run again: the COG is written beside the partial
    and renamed onto it only when complete, and a partial that already is a COG gives the same COG.
    """
    path = partial_path(spec.target)
    cog = path.with_name(path.name + ".cog")
    cog.unlink(missing_ok=True)  # what a killed conversion left behind
    try:
        with gdal_errors(cog, "writing the COG"):
            rasterio.shutil.copy(
                path,
                cog,
                driver="COG",
                COMPRESS="DEFLATE",
                BLOCKSIZE=BLOCK,
                OVERVIEWS="AUTO",
                RESAMPLING=_resampling(spec).name.upper(),
                BIGTIFF="IF_SAFER",
            )
        os.replace(cog, path)
    except OSError as exc:
        raise os_failure(path, "replacing with its COG", exc) from exc
    finally:
        cog.unlink(missing_ok=True)


def commit(outputs: list[OutputSpec], grid: RasterGrid, cog: bool = False) -> None:
    """Validate, (COG,) fsync and rename every partial onto its target, the main class map last.

    Safe to interrupt anywhere and run again on the outputs still pending (``pending``): each step either
    leaves the partial as it was or replaces it atomically by an equivalent one.
    """
    ordered = sorted(outputs, key=lambda s: s.kind == "classes")
    for spec in ordered:
        if cog:
            make_cog(spec)
        validate_partial(spec, grid)
        fsync_path(partial_path(spec.target))
    for spec in ordered:
        check_regular_or_new(spec.target)  # it may have been replaced while the scene ran
        try:
            os.replace(partial_path(spec.target), spec.target)
            fsync_path(spec.target.parent)
        except OSError as exc:
            raise OutputError(
                f"renaming onto {spec.target} failed ({exc.strerror}); check the folder"
            ) from exc


def pending(outputs: list[OutputSpec]) -> list[OutputSpec]:
    """The outputs an interrupted finalisation has not renamed yet: those whose partial still exists."""
    return [spec for spec in outputs if partial_path(spec.target).exists()]


def committed(spec: OutputSpec) -> bool:
    """Whether an interrupted finalisation already renamed this output: its partial gone, its target there."""
    return not partial_path(spec.target).exists() and spec.target.is_file()


def discard(outputs: list[OutputSpec], journal: Path | None = None) -> None:
    """Remove partial files (and the journal) so no half-written output survives."""
    for spec in outputs:
        partial_path(spec.target).unlink(missing_ok=True)
        partial_path(spec.target).with_name(partial_path(spec.target).name + ".cog").unlink(missing_ok=True)
    if journal is not None:
        journal.unlink(missing_ok=True)
