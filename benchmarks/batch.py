"""Scenes per minute and Mpx/s of ``stars-edge run-batch`` (Dask) against running the scenes one by one.

    python benchmarks/batch.py --engines DIR [--scenes 8] [--size 2048] [--workers 1,2] [--repeats 3]
                               [--precision fp32] [--tile 512] [--overlap 64] [--json OUT.json] [--quick]

Writes ``--scenes`` synthetic scenes (``--size`` px, each with its own modality subset, so different
scenes run different engines), then times, on the same scenes and in turn (``--repeats`` rounds,
alternating the modes, median wall time):

- ``sequential_cli``: ``stars-edge run`` once per scene, one after another (a process, the engine
  manifest's verification and the engine loading per scene; what a shell loop does);
- ``sequential_inprocess``: one ``Predictor``, ``predict_scene`` per scene (the runtime's own speed, no
  process or loading per scene);
- ``batch_wN``: ``runtime.batch.run_batch`` on a fresh ``LocalCluster`` of N worker processes (cluster
  start, engine loading once per worker, scheduling and the summary all included in the wall time).

Overheads are wall-time ratios minus one against both sequential modes. The batch's class maps are checked
byte for byte against the sequential ones. Writes JSON plus a Markdown table beside it. The machine's
1-minute load average is sampled before the scenes are written (``machine.load_average_1m``: did other work
share the cores?) and again after the last run (``load_average_1m_end``: includes the benchmark's own
workers).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/batch.py`: make `benchmarks.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import BenchmarkError, load_average, machine_info
from stars_edge.errors import StarsEdgeError
from stars_edge.io import sha256_file, write_json_atomic, write_text_atomic
from stars_edge.modalities import Pattern

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
#: /2: ``machine.load_average_1m`` is sampled at the start (/1 sampled it after the runs); adds the end load.
RESULT_SCHEMA = "stars-edge/batch/2"
#: Modality subsets given to the scenes in turn: every pattern once, the full one first.
SUBSETS: tuple[str, ...] = (
    "optical+sar+dsm",
    "optical+sar",
    "sar",
    "optical+dsm",
    "sar+dsm",
    "optical",
    "dsm",
)


def write_scenes(workdir: Path, count: int, size: int) -> Path:
    """Write (once, cached in ``workdir``) ``count`` synthetic scenes and their ``scenes.csv``."""
    from stars_edge.data.synthetic import write_mosaic_scene

    listing = workdir / f"scenes_{count}x{size}.csv"
    if listing.is_file():
        return listing
    rows = ["id,optical,sar,dsm,cloud_mask"]
    for index in range(count):
        folder = workdir / f"scene_{size}_seed{index}"
        if not (folder / "dsm.tif").is_file():
            write_mosaic_scene(folder, size=size, block=min(1024, size), seed=index, progress=False)
        present = Pattern.parse(SUBSETS[index % len(SUBSETS)])
        cells = [str(folder / f"{m}.tif") if m in present else "" for m in ("optical", "sar", "dsm")]
        rows.append(",".join([f"s{index:02d}", *cells, ""]))
    write_text_atomic(listing, "\n".join(rows) + "\n")
    return listing


def sequential_cli(engines: Path, listing: Path, out: Path, plan: argparse.Namespace) -> float:
    """``stars-edge run`` per scene, one after another; returns the wall time."""
    from runtime.batch import read_scenes

    began = time.perf_counter()
    for scene in read_scenes(listing):
        command = [sys.executable, "-m", "stars_edge", "run", "--engines", str(engines)]
        for kind, path in scene.inputs.items():
            command += [f"--{kind.replace('_', '-')}", path]
        command += [
            "--out",
            str(out / f"{scene.id}.tif"),
            "--pattern-map",
            str(out / f"{scene.id}.patterns.tif"),
        ]
        command += ["--tile", str(plan.tile), "--overlap", str(plan.overlap), "--precision", plan.precision]
        command += ["--backend", plan.backend, "--no-progress"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchmarkError(f"stars-edge run on {scene.id} failed: {done.stderr.strip()[-300:]}")
    return time.perf_counter() - began


def sequential_inprocess(engines: Path, listing: Path, out: Path, plan: argparse.Namespace) -> float:
    """One ``Predictor``, ``predict_scene`` per scene; returns the wall time (engine loading included)."""
    from runtime import Predictor
    from runtime.batch import read_scenes

    began = time.perf_counter()
    with Predictor(engines, backend=plan.backend, precision=plan.precision) as predictor:
        for scene in read_scenes(listing):
            predictor.predict_scene(
                optical=scene.optical,
                sar=scene.sar,
                dsm=scene.dsm,
                out=out / f"{scene.id}.tif",
                pattern_map=out / f"{scene.id}.patterns.tif",
                tile=plan.tile,
                overlap=plan.overlap,
                progress=False,
            )
    return time.perf_counter() - began


def batch(engines: Path, listing: Path, out: Path, plan: argparse.Namespace, workers: int) -> float:
    """``run_batch`` on a fresh local cluster of ``workers`` processes; returns the wall time."""
    from runtime.batch import run_batch

    began = time.perf_counter()
    result = run_batch(
        engines,
        listing,
        out,
        workers=workers,
        threads_per_worker=1,
        tile=plan.tile,
        overlap=plan.overlap,
        precision=plan.precision,
        backend=plan.backend,
        progress=False,
        dashboard_address=None,
        log=None,
    )
    wall = time.perf_counter() - began
    if not result.ok:
        raise BenchmarkError(f"batch with {workers} workers failed: {result.format()}")
    return wall


def _same_maps(a: Path, b: Path, ids: Sequence[str]) -> bool:
    return all(sha256_file(a / f"{i}.tif") == sha256_file(b / f"{i}.tif") for i in ids)


def run_benchmark(plan: argparse.Namespace, echo: Any = print) -> dict[str, Any]:
    """Time every mode on the same scenes; the machine and its load are read before any work starts.

    Sampled after the runs, the load would count the benchmark's own workers and could not tell whether
    other work competed for the cores; the end load is kept too, labelled as such.
    """
    from runtime.batch import read_scenes

    start_load = load_average()
    machine = machine_info(threads=0)
    machine["load_average_1m"] = start_load
    plan.workdir.mkdir(parents=True, exist_ok=True)
    listing = write_scenes(plan.workdir, plan.scenes, plan.size)
    scenes = read_scenes(listing)
    ids = [s.id for s in scenes]
    pixels = plan.scenes * plan.size * plan.size
    modes: dict[str, Any] = {
        "sequential_cli": lambda out: sequential_cli(plan.engines, listing, out, plan),
        "sequential_inprocess": lambda out: sequential_inprocess(plan.engines, listing, out, plan),
    }
    for workers in plan.workers:
        modes[f"batch_w{workers}"] = lambda out, w=workers: batch(plan.engines, listing, out, plan, w)
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    identical: dict[str, bool] = {}
    for round_index in range(plan.repeats):
        for mode, call in modes.items():
            out = plan.workdir / "out" / mode
            out.mkdir(parents=True, exist_ok=True)
            for old in out.iterdir():  # a fresh start each round (no resume, no skipped scenes)
                if old.is_file():
                    old.unlink()
            wall = call(out)
            walls[mode].append(wall)
            echo(f"round {round_index + 1}/{plan.repeats} {mode}: {wall:.2f} s")
            if mode.startswith("batch"):
                identical[mode] = _same_maps(out, plan.workdir / "out" / "sequential_cli", ids)
    medians = {mode: statistics.median(values) for mode, values in walls.items()}
    rows = []
    for mode, wall in medians.items():
        rows.append(
            {
                "mode": mode,
                "workers": int(mode.removeprefix("batch_w")) if mode.startswith("batch") else 1,
                "wall_s_median": round(wall, 3),
                "wall_s": [round(v, 3) for v in walls[mode]],
                "scenes_per_minute": round(60.0 * plan.scenes / wall, 2),
                "mpx_per_s": round(pixels / 1e6 / wall, 3),
                "overhead_vs_sequential_cli": round(wall / medians["sequential_cli"] - 1.0, 4),
                "overhead_vs_sequential_inprocess": round(wall / medians["sequential_inprocess"] - 1.0, 4),
                "class_maps_identical_to_sequential": identical.get(mode),
            }
        )
    return {
        "schema": RESULT_SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/batch.py", *sys.argv[1:]]),
        "quick": plan.quick,
        "engines": str(plan.engines),
        "scenes": [{"id": s.id, "modalities": "+".join(s.modalities)} for s in scenes],
        "scene_size": plan.size,
        "pixels": pixels,
        "tile": plan.tile,
        "overlap": plan.overlap,
        "precision": plan.precision,
        "backend": plan.backend,
        "repeats": plan.repeats,
        "machine": machine,
        "load_average_1m_end": load_average(),
        "rows": rows,
    }


def render_markdown(result: dict[str, Any]) -> str:
    """The Markdown beside the JSON: the setup, the machine and its loads, then one row per mode."""
    machine = result["machine"]
    lines = [
        f"# run-batch throughput ({result['created']})",
        "",
        f"`{result['command']}`",
        "",
        f"{len(result['scenes'])} synthetic scenes of {result['scene_size']}² px (modality subsets: "
        f"{', '.join(s['modalities'] for s in result['scenes'])}), tile {result['tile']}, overlap "
        f"{result['overlap']}, {result['precision']}, median of {result['repeats']} rounds; "
        f"{machine['cpu_model']}, {machine['usable_cores']} usable cores, flags "
        f"{' '.join(machine['cpu_flags'])}, "
        f"1-minute load average {machine['load_average_1m']} at the start (before the scenes were "
        f"written), {result.get('load_average_1m_end')} at the end (counts the benchmark's own workers).",
        "",
        "| mode | workers | wall s | scenes/min | Mpx/s | vs `stars-edge run` loop | vs in-process loop "
        "| maps identical |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in result["rows"]:
        same = {None: "", True: "yes", False: "**no**"}[row["class_maps_identical_to_sequential"]]
        lines.append(
            f"| {row['mode']} | {row['workers']} | {row['wall_s_median']:.2f} | "
            f"{row['scenes_per_minute']:.1f} | "
            f"{row['mpx_per_s']:.2f} | {100 * row['overhead_vs_sequential_cli']:+.1f} % | "
            f"{100 * row['overhead_vs_sequential_inprocess']:+.1f} % | {same} |"
        )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--engines", type=Path, required=True, help="Engine folder with manifest.json.")
    parser.add_argument("--scenes", type=int, default=8, help="Number of synthetic scenes.")
    parser.add_argument("--size", type=int, default=2048, help="Scene size in px (square).")
    parser.add_argument("--workers", default="1,2", help="Comma-separated worker counts for the batch.")
    parser.add_argument("--repeats", type=int, default=3, help="Rounds; the median wall time is reported.")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stars_edge_batch_bench"))
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="Result file (default benchmarks/results/batch_cpu.json; with --quick: in --workdir).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="Smoke run: 256 px scenes, 1 round (numbers not measurements)."
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    plan = build_parser().parse_args(argv)
    try:
        plan.workers = tuple(int(w) for w in str(plan.workers).split(",") if w.strip())
    except ValueError:
        print(f"error: --workers must be comma-separated integers, got {plan.workers!r}", file=sys.stderr)
        return 1
    if plan.quick:
        plan.size, plan.repeats = min(plan.size, 256), 1
    if plan.json is None:
        plan.json = plan.workdir / "batch_quick.json" if plan.quick else RESULTS_DIR / "batch_cpu.json"
    if plan.scenes < 1 or plan.repeats < 1 or plan.size < 32 or not plan.workers or min(plan.workers) < 1:
        print("error: --scenes, --repeats, --workers must be >= 1 and --size >= 32", file=sys.stderr)
        return 1
    try:
        result = run_benchmark(plan)
    except StarsEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_json_atomic(plan.json, result)
    markdown = render_markdown(result)
    write_text_atomic(plan.json.with_suffix(".md"), markdown)
    print(markdown)
    print(f"wrote {plan.json} and {plan.json.with_suffix('.md').name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
