"""A scene from GeoTIFFs, end to end: open and check the inputs, load the engines, stream the tiles through
``SceneRun`` (reader threads, engines, blending, the writer thread, checkpoints) and commit the outputs, so
that each is either complete and sound or not there at all. ``Predictor.predict_scene`` is this function.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from runtime.gdal_env import gdal_cache_limit, tile_cache_bytes
from runtime.journal import CHECKPOINT_ROWS, CHECKPOINT_SECONDS, CheckpointPolicy, Journal
from runtime.kernels import kernels_choice
from runtime.output_paths import check_output_targets, journal_path
from runtime.outputs import RasterGrid, build_overviews, commit, discard
from runtime.raster_source import RasterSource
from runtime.run_identity import output_tags, run_fingerprint
from runtime.run_options import check_scene_options, default_batch
from runtime.scheduling import reader_count
from runtime.signals import terminate_as_interrupt
from runtime.summary import RunSummary, count_names, output_specs
from runtime.tiling import TileGrid
from runtime.writing import SceneRun
from stars_edge.errors import DataError
from stars_edge.io import ensure_writable_dir
from stars_edge.modalities import DEFAULT_MIN_VALID, all_patterns

if TYPE_CHECKING:
    from runtime.predictor import Predictor

#: Final pixels per column chunk: the carry and pending rows span this, not the scene's width.
CHUNK_WIDTH = 4096


def predict_scene(
    predictor: Predictor,
    optical: str | os.PathLike[str] | None = None,
    sar: str | os.PathLike[str] | None = None,
    dsm: str | os.PathLike[str] | None = None,
    cloud_mask: str | os.PathLike[str] | None = None,
    *,
    out: str | os.PathLike[str],
    pattern_map: str | os.PathLike[str] | None = None,
    probabilities: str | os.PathLike[str] | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int | None = None,
    min_valid: float = DEFAULT_MIN_VALID,
    resume: bool = False,
    progress: bool = True,
    probabilities_dtype: str = "uint8",
    overviews: bool = False,
    on_row_done: Callable[[int], None] | None = None,
    cog: bool = False,
    allow_out_of_range: bool = False,
    bands: Mapping[str, Sequence[str]] | None = None,
    dtm: str | os.PathLike[str] | None = None,
    chunk_width: int | None = CHUNK_WIDTH,
    checkpoint_rows: int | None = None,
    checkpoint_seconds: float | None = None,
    overwrite: bool = False,
) -> RunSummary:
    """Predict a scene from GeoTIFFs and write ``out`` (and the optional pattern map / probabilities).

    The first given raster (optical, SAR, DSM order) is the reference grid. ``tile`` defaults to the
    manifest's tile size. ``on_row_done(row)`` is called after each tile row is blended (an exception
    there interrupts the run, which ``resume=True`` then continues). ``cog`` writes Cloud Optimized
    GeoTIFFs. Inputs that fail the engines' input contract (``stars_edge.contract``: wrong units, band
    order or height reference) are refused unless ``allow_out_of_range`` (then they are warnings).
    ``bands`` picks file bands per modality (``{"optical": ("2", "3", "4", "8")}``, numbers or band
    descriptions); ``dtm`` is a terrain model subtracted from ``dsm`` (altitude -> height above ground).
    Where an interrupted run left a journal for ``out``, ``resume`` continues it and ``overwrite``
    discards it; with neither the run is refused (``OutputError``), so no progress is lost silently.
    """
    began = time.perf_counter()
    tile, overlap = predictor._tiling(tile, overlap)
    chunk_width = check_scene_options(
        tile, overlap, 1 if batch is None else batch, min_valid, probabilities_dtype, chunk_width
    )
    targets = {"classes": out, "patterns": pattern_map, "probabilities": probabilities}
    paths = {"optical": optical, "sar": sar, "dsm": dsm}
    given = [p for p in (optical, sar, dsm, cloud_mask, dtm) if p is not None]
    chosen = check_output_targets(targets, given)
    policy = CheckpointPolicy(checkpoint_rows or CHECKPOINT_ROWS, checkpoint_seconds or CHECKPOINT_SECONDS)
    with terminate_as_interrupt(), gdal_cache_limit(tile_cache_bytes(given, tile, chunk_width)):
        source = RasterSource(
            {k: v for k, v in paths.items() if v is not None},
            predictor.manifest.modalities,
            cloud_mask,
            bands=bands,
            dtm=dtm,
        )
        try:
            settings = predictor._settings(min_valid, "files")
            # the sample opens no handle the reader threads will not use
            accepted = predictor._check_contract(source.sample_values(settings.readers), allow_out_of_range)
            input_notes = source.notes + [f"accepted with --allow-out-of-range: {m}" for m in accepted]
            patterns = all_patterns(source.modalities)
            engines = predictor._engine_set(patterns, tile)
            batch = default_batch(engines.backend) if batch is None else batch
            grid = TileGrid(source.height, source.width, tile, overlap)
            for target in chosen.values():
                ensure_writable_dir(target.parent)
            edges = (predictor.context_margin, predictor.mask_dilation)
            common = output_tags(
                predictor.manifest,
                predictor.precision,
                engines.backend,
                tile,
                overlap,
                min_valid,
                *edges,
                source,
            )
            outputs = output_specs(
                chosen, common, predictor.classes, predictor.class_names, probabilities_dtype
            )
            fingerprint = run_fingerprint(
                predictor.manifest,
                engines,
                patterns,
                predictor.precision,
                source,
                tile,
                overlap,
                min_valid,
                *edges,
                chunk_width,
                outputs,
            )
            journal = Journal.open(
                journal_path(chosen["classes"]), fingerprint, outputs, resume=resume, overwrite=overwrite
            )
            raster = RasterGrid(grid.height, grid.width, source.crs, source.transform)
            run = SceneRun(
                predictor.classes, source, grid, engines, raster, outputs, journal, policy, batch, on_row_done
            )
            chunks = predictor._chunks(grid, chunk_width)
            run.execute(
                chunks,
                settings,
                probabilities_dtype if "probabilities" in chosen else None,
                progress,
            )
            if run.counts[1:].sum() == 0:
                discard(outputs, journal.path)
                raise DataError(
                    f"no valid pixel in {', '.join(str(p) for p in source.paths.values())} (all "
                    "nodata, masked, NaN or clouded); check the inputs and their nodata values"
                )
            if overviews and not cog:
                build_overviews(run.pending)
            commit(run.pending, raster, cog=cog)
            journal.remove()
        finally:
            source.close()
    return RunSummary(
        height=grid.height,
        width=grid.width,
        tiles=len(grid),
        engine_runs=dict(run.use.runs),
        engine_pixels=dict(run.use.pixels),
        engine_shapes=run.use.shape_counts(),
        pattern_pixels=count_names(run.counts),
        stage_seconds=dict(run.timer.seconds),
        stage_cpu_seconds=dict(run.timer.cpu_seconds),
        wall_seconds=time.perf_counter() - began,
        backend=engines.backend,
        device=engines.device,
        precision=predictor.precision,
        engine_streams=engines.concurrency,
        kernels=kernels_choice(),
        reader_threads=max(
            reader_count(source, settings.readers, chunk.last_col - chunk.first_col + 1) for chunk in chunks
        ),
        outputs={spec.kind: str(spec.target) for spec in outputs},
        resumed=run.resumed,
        resumed_from_row=run.resumed_row,
        tile_rows=grid.rows,
        chunks=run.chunks,
        resumed_chunk=run.resumed_chunk,
        processed_pixels=run.pixels,
        input_notes=input_notes,
    )
