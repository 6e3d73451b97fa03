"""Options that ``stars-edge run`` and ``stars-edge run-batch`` share: one definition, one help text."""

from __future__ import annotations

import typer

from stars_edge.modalities import DEFAULT_MIN_VALID

ENGINES = typer.Option(..., "--engines", help="Folder with manifest.json and the engine files.")
TILE = typer.Option(
    None, "--tile", help="Tile size in pixels (a multiple of 32); default: the manifest's tile size."
)
OVERLAP = typer.Option(
    None, "--overlap", help="Pixels shared by neighbours (<= tile/2); default: tile/4, at most 64."
)
BATCH = typer.Option(
    None,
    "--batch",
    help="Tiles per engine call (tiles are batched per pattern). Default: 4 with OpenVINO (faster, the same "
    "class maps), 1 with the other backends.",
)
STREAMS = typer.Option(
    None,
    "--streams",
    min=1,
    help="Engine calls in flight at once while the last results are blended, with the same class maps "
    "(OpenVINO streams; ONNX Runtime on the CPU splits its threads among them). Default: 2 on both (at "
    "most --threads); 1 on TensorRT and ONNX Runtime's GPU providers.",
)
READERS = typer.Option(
    None,
    "--readers",
    min=1,
    help="Threads reading and preparing tiles, each on its own file handle and band of columns (two "
    "readers of optical, SAR and DSM split them by file instead: optical, SAR + DSM), with the same class "
    "maps. Default: 2 (decoding runs beside the engines).",
)
BACKEND = typer.Option(
    "auto",
    "--backend",
    help="auto (TensorRT engines built for this GPU, then ONNX Runtime on a GPU, then OpenVINO, then ONNX "
    "Runtime CPU), onnxruntime, openvino or tensorrt.",
)
PRECISION = typer.Option("fp32", "--precision", help="Engine precision: fp32, fp16 or int8.")
MIN_VALID = typer.Option(
    DEFAULT_MIN_VALID,
    "--min-valid",
    help="A modality is used in a tile from this valid fraction on (pixel by pixel where partly valid).",
)
COG = typer.Option(
    False, "--cog", help="Write Cloud Optimized GeoTIFFs (with overviews), built from the finished file."
)
ALLOW_FLAGGED = typer.Option(
    False, "--allow-flagged", help="Run engines the accuracy gate flagged at export (refused by default)."
)
ALLOW_OUT_OF_RANGE = typer.Option(
    False,
    "--allow-out-of-range",
    help="Only warn when an input fails the engines' input contract (wrong-looking units, band order or "
    "height reference: docs/RUNTIME.md); refused by default.",
)
BANDS = typer.Option(
    None,
    "--bands",
    help="Which file bands feed a modality, in the engines' order, by number or band description; repeat "
    "per modality: --bands optical=2,3,4,8 --bands sar=VV,VH. Default: all bands, reordered or selected by "
    "their descriptions where they name the engines' bands.",
)
PROBABILITIES_DTYPE = typer.Option(
    "uint8", "--probabilities-dtype", help="uint8 (round(p*255), compact) or float32 (NaN = nodata)."
)
OVERWRITE = typer.Option(
    False,
    "--overwrite",
    help="Start over when an interrupted run of the same outputs left a resume journal (its progress is "
    "discarded); without it such a rerun is refused, with --resume it continues.",
)
MASK_DILATION = typer.Option(
    None,
    "--mask-dilation",
    help="Grow a modality's holes by N px before use, e.g. optical=16 for thin cloud edges a cloud mask "
    "misses (repeat per modality; default: the manifest's, none unless export chose one).",
)
CONTEXT_MARGIN = typer.Option(
    None,
    "--context-margin",
    help="Pixels around a hole where that modality is not used (default: the manifest's, measured at "
    "export as the distance at which a fill changes a probability by 1e-3).",
)
