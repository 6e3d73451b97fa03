"""What a build measures for the manifest as a whole, once every engine exists.

- ``context_margin``: how far a fill value's influence reaches, the largest over the FP32 engines whichever
  checkpoint each came from (``export/context_margin.py``, docs/RUNTIME.md);
- ``input_contract``: units and training quantiles per band (``stars_edge.contract``), from the calibration
  source;
- ``choose_edges`` (``--edge-selection``): the context margin and optical mask dilation chosen by measured
  mIoU on synthetic scenes with clouds and SAR gaps, run through the runtime itself (``runtime/edges.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from export.build_options import BuildOptions
from export.tiles import EDGE_SEED_BASE, SYNTHETIC, hole_scenes, sample_physical
from stars_edge.contract import ModalityContract, contract_disagrees, contract_from_values
from stars_edge.manifest import Manifest, save_manifest
from stars_edge.modalities import ModalitySpec, Pattern, all_patterns

__all__ = ["choose_edges", "input_contract"]


def input_contract(
    calib_data: str, specs: dict[str, ModalitySpec], tile: int, log: Callable[[str], None]
) -> dict[str, ModalityContract]:
    """Units and training quantiles per band (``stars_edge.contract``), from the calibration source.

    A source whose medians sit far from the checkpoint's normalisation is not the training
    distribution (e.g. the synthetic default for a model trained on real data): then the runtime
    falls back to the normalisation, and the log says so.
    """
    values, source = sample_physical(calib_data, specs, tile)
    contracts: dict[str, ModalityContract] = {}
    for modality, spec in specs.items():
        contract = contract_from_values(spec, values[modality], source, minimum=1)
        off = contract_disagrees(contract, spec)
        if off is not None:
            log(
                f"input contract: {modality} of {source} does not look like the training data "
                f"({off}); the runtime checks {modality} against the normalisation only"
            )
            continue
        contracts[modality] = contract
    return contracts


def choose_edges(
    manifest: Manifest,
    out: Path,
    options: BuildOptions,
    patterns: Sequence[Pattern],
    specs: dict[str, ModalitySpec],
    tile: int,
    log: Callable[[str], None],
) -> None:
    """Context margin and optical mask dilation by measured mIoU on synthetic validation scenes with
    clouds and SAR gaps, run through the runtime itself (``runtime/edges.py``); recorded in ``manifest``
    and saved to ``out``. Without edge selection, or where it cannot run, the log says why."""
    measured = manifest.context_margin or 0
    bands = tuple(specs)
    reason = None
    if not options.edge_selection:
        reason = "off (--no-edge-selection)"
    elif str(options.gate_data) != SYNTHETIC:
        source = options.gate_data
        reason = f"needs labelled scenes with holes; only the synthetic source has them, not {source}"
    elif set(patterns) != set(all_patterns(bands)):
        reason = "needs an FP32 engine for every pattern (--patterns all)"
    elif "optical" not in bands or len(bands) < 2:
        reason = "needs optical and a second modality"
    if reason is not None:
        log(f"cloud edges: measured margin {measured} px kept, no dilation; edge selection {reason}")
        return
    from runtime.edges import HoleScene
    from runtime.edges import choose_edges as choose

    scenes = [HoleScene(i, c, lab) for i, c, lab in hole_scenes(specs, size=max(512, tile))]
    choice = choose(
        out,
        scenes,
        measured,
        f"{len(scenes)} synthetic scenes with clouds and SAR gaps (seeds from {EDGE_SEED_BASE})",
        tile=tile,
        log=log,
    )
    manifest.context_margin = choice.context_margin
    manifest.mask_dilation = dict(choice.mask_dilation)
    manifest.edge_choice = choice.to_dict()
    save_manifest(manifest, out)
