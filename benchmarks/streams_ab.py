"""One stream against several (calls in flight at once), or one reader thread against several, end to end,
in separate processes interleaved.

Issue 21: OpenVINO streams, and ONNX Runtime on the CPU with its threads split among calls in flight
(``--streams 1,2``, the default); reader threads preparing tiles, each on its own handle and band of columns
(``--readers 1,2``; the streams then stay at the runtime's default).

A process that compiles models with different stream settings slows the one-stream model (measured), and a
single run of each varies by up to 20 % on a shared VM, so each (case, streams) runs in a fresh child
process, the children alternate round by round, and each child times ``--calls`` runs after a warm-up.
Cases: the latency benchmark's Sentinel-2-like scene from in-memory arrays (``predict_arrays``) and from its
files (``predict_scene``), and its cloudy variant likewise. The runtime's defaults otherwise (tile,
batch); ``--backend`` and ``--precision`` choose the engines (default OpenVINO INT8). Prints per-case
medians and the ratio; the class maps must be the same bytes.

``--against DIR`` compares two versions of the code instead, each at the runtime's defaults: the children
alternate between this checkout ("current") and the checkout in DIR ("baseline", e.g. a ``git worktree`` of
the previous commit); ``--modes files`` keeps only the cases read from files.

    python benchmarks/streams_ab.py --engines demo_out/engines --json out.json
    git worktree add /tmp/base HEAD~1
    python benchmarks/streams_ab.py --engines demo_out/engines --against /tmp/base --modes files
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, machine_info
from benchmarks.latency_floor import load_scene_arrays
from benchmarks.latency_scenes import scene_paths
from runtime.cpus import usable_cores
from runtime.run_options import DEFAULT_READERS
from stars_edge.io import write_json_atomic

#: (label, latency benchmark scene, how it is handed over).
CASES: tuple[tuple[str, str, str], ...] = (
    ("clean, from arrays", "s2like", "arrays"),
    ("clean, from files", "s2like", "files"),
    ("10 % clouds, from arrays", "s2like_clouds", "arrays"),
    ("10 % clouds, from files", "s2like_clouds", "files"),
)


def child(
    engines: str,
    backend: str,
    precision: str,
    scene: str,
    mode: str,
    streams: int | None,
    size: int,
    workdir: Path,
    calls: int,
    readers: int = 1,
) -> dict:
    """Time ``calls`` runs of one case in this process (after a warm-up); wall, CPU, class map digest."""
    from runtime import Predictor

    paths = scene_paths(workdir, size, 0, scene)
    walls: list[float] = []
    cpus: list[float] = []
    with Predictor(
        engines, backend=backend, precision=precision, streams=streams, readers=readers
    ) as predictor:
        if mode == "arrays":
            inputs, valid, clouds = load_scene_arrays(paths)
            predictor.predict_arrays({m: a[:, :512, :512] for m, a in inputs.items()})
        with tempfile.TemporaryDirectory() as folder:
            for call in range(calls + (mode == "files")):  # files: the first run loads the engines
                wall, cpu = time.perf_counter(), time.process_time()
                if mode == "arrays":
                    classes, _ = predictor.predict_arrays(inputs, valid=valid, cloud_mask=clouds)
                    digest = hashlib.md5(classes.tobytes()).hexdigest()
                else:
                    out = Path(folder) / f"classes{call}.tif"
                    predictor.predict_scene(
                        optical=paths["optical"],
                        sar=paths["sar"],
                        dsm=paths["dsm"],
                        cloud_mask=paths.get("cloud_mask"),
                        out=out,
                        progress=False,
                    )
                    digest = hashlib.md5(out.read_bytes()).hexdigest()
                if mode == "arrays" or call > 0:
                    walls.append(time.perf_counter() - wall)
                    cpus.append(time.process_time() - cpu)
    return {"wall_seconds": walls, "cpu_seconds": cpus, "digest": digest}


def summarise(
    runs: list[dict[str, Any]], streams: tuple[Any, ...], setting: str = "streams"
) -> dict[str, dict[str, Any]]:
    """Per case: median and minimum wall and median CPU per value of ``setting`` (``streams``, ``readers``
    or ``code``; ``streams`` holds the values), the ratio of the first value's median wall to each other's,
    and whether every run gave the same class map."""
    table: dict[str, dict[str, Any]] = {}
    for label, _, _ in CASES:
        mine = [r for r in runs if r["case"] == label]
        if not mine:
            continue
        row: dict[str, Any] = {"same_class_maps": len({r["digest"] for r in mine}) == 1}
        for count in streams:
            walls = [w for r in mine if r[setting] == count for w in r["wall_seconds"]]
            cpus = [c for r in mine if r[setting] == count for c in r["cpu_seconds"]]
            row[f"{setting} {count}"] = {
                "median_wall_s": statistics.median(walls),
                "min_wall_s": min(walls),
                "median_cpu_s": statistics.median(cpus),
                "runs": len(walls),
            }
        base = row[f"{setting} {streams[0]}"]["median_wall_s"]
        row["speedup"] = {
            f"{setting} {c} over {streams[0]}": base / row[f"{setting} {c}"]["median_wall_s"]
            for c in streams[1:]
        }
        table[label] = row
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", required=True, help="engine folder with INT8 engines (build-engines)")
    parser.add_argument("--backend", default="openvino", choices=("openvino", "onnxruntime"))
    parser.add_argument("--precision", default="int8", help="engine precision (default int8)")
    parser.add_argument("--streams", default="1,2", help="stream counts compared, first is the base")
    parser.add_argument(
        "--readers",
        help="reader thread counts compared instead (first is the base), at the runtime's default streams",
    )
    parser.add_argument(
        "--against",
        type=Path,
        help="compare this checkout with the code in this folder (another checkout), both at the defaults",
    )
    parser.add_argument(
        "--modes", default="arrays,files", help="which cases run: arrays, files or both (default both)"
    )
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3, help="timed runs per child process")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stars_edge_streams_ab"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        scene, mode, setting, count = args.child.split(",")
        result = child(
            args.engines,
            args.backend,
            args.precision,
            scene,
            mode,
            int(count) if setting == "streams" else None,
            args.size,
            args.workdir,
            args.calls,
            readers=int(count) if setting == "readers" else 1,
        )
        print(json.dumps(result))
        return 0
    modes = set(args.modes.split(","))
    cases = [case for case in CASES if case[2] in modes]
    if args.against is not None:
        script = args.against / "benchmarks" / "streams_ab.py"
        if not script.is_file():
            raise SystemExit(f"--against {args.against}: no benchmarks/streams_ab.py there (not a checkout?)")
        setting = "code"
        values: tuple[Any, ...] = ("baseline", "current")
        scripts = {"baseline": script.resolve(), "current": Path(__file__).resolve()}
    else:
        setting = "readers" if args.readers else "streams"
        values = tuple(int(s) for s in (args.readers or args.streams).split(","))
        scripts = {}
    for _, scene, _ in cases:
        scene_paths(args.workdir, args.size, 0, scene)  # written once, before anything is timed
    load_start = load_average()
    runs: list[dict[str, Any]] = []
    for round_index in range(args.rounds):
        for count in values:
            for label, scene, mode in cases:
                command = [sys.executable, str(scripts.get(str(count), __file__)), "--engines", args.engines]
                command += ["--size", str(args.size), "--backend", args.backend]
                command += ["--precision", args.precision]
                command += ["--calls", str(args.calls), "--workdir", str(args.workdir)]
                if setting == "code":  # the runtime's defaults, told as a reader count both versions parse
                    command += ["--child", f"{scene},{mode},readers,{DEFAULT_READERS[mode]}"]
                else:
                    command += ["--child", f"{scene},{mode},{setting},{count}"]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{label}, {setting} {count}: the child failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                runs.append({"round": round_index, "case": label, setting: count, **result})
                walls = ", ".join(f"{w:.2f}" for w in result["wall_seconds"])
                print(f"round {round_index + 1}, {setting} {count}, {label}: {walls} s", flush=True)
    table = summarise(runs, values, setting)
    for label, row in table.items():
        cells = "; ".join(
            f"{k} median {v['median_wall_s']:.2f} s" for k, v in row.items() if k.startswith(setting)
        )
        ratios = "; ".join(f"{k} {v:.2f}x" for k, v in row["speedup"].items())
        print(f"{label}: {cells}; {ratios}; same class maps: {row['same_class_maps']}")
    if args.json:
        write_json_atomic(
            args.json,
            {
                "command": " ".join(sys.argv),
                "engines": args.engines,
                "backend": args.backend,
                "precision": args.precision,
                "size": args.size,
                "setting_compared": setting,
                "streams_compared": list(values),
                "against": None if args.against is None else str(args.against),
                "rounds": args.rounds,
                "calls": args.calls,
                "machine": {
                    **machine_info(usable_cores()),
                    "load_start": load_start,
                    "load_end": load_average(),
                },
                "streams_ab": table,
                "runs": runs,
            },
        )
    return 0 if all(row["same_class_maps"] for row in table.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
