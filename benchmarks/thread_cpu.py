"""Where a scene's CPU goes, thread by thread (issue 21; Linux only).

``RunSummary.stage_cpu_seconds`` times the runtime's own stages; what it cannot see is the backend's own
threads (OpenVINO's and ONNX Runtime's worker pools have no Python object) and the runtime's threads outside
a stage. Here every OS thread of the process is sampled from ``/proc/self/task`` while ``predict_scene``
runs, and its CPU is put under one role:

- ``main``: the calling thread (blending, finishing rows, scheduling, handing bands to the writer);
- ``readers``: ``stars-edge-reader-*`` (reading and preparing tiles, and GDAL decoding unless
  ``GDAL_NUM_THREADS`` gives GDAL threads of its own);
- ``writer``: ``stars-edge-writer*`` (compressing and writing output bands, checkpoints);
- ``engine callers``: ``stars-edge-engine*`` (the Python threads that submit engine calls and wait);
- ``backend workers``: threads without a Python object, the backend's (and GDAL's) own pools, where the
  engines compute;
- ``other``: any other Python thread (the sampler itself, the kernels' loader).

Runs: the first ``predict_scene`` of the process (``cold``: engines load and compile, each call shape's first
call; what ``stars-edge run`` on one scene pays), then ``--warm`` more on the same ``Predictor``. Threads are
sampled every ``SAMPLE_SECONDS``; a thread that exits loses at most its last interval, and ``coverage``
(threads' sum / process CPU) says how much was seen.

    python benchmarks/thread_cpu.py --engines demo_out/engines --json out.json
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, scene_parser, scene_record
from benchmarks.latency_scenes import scene_paths
from stars_edge.io import write_json_atomic

#: Seconds between two samples of every thread's CPU.
SAMPLE_SECONDS = 0.02
#: Thread-name prefixes of the runtime's threads, and the role each stands for.
ROLE_PREFIXES = (
    ("stars-edge-reader", "readers"),
    ("stars-edge-writer", "writer"),
    ("stars-edge-engine", "engine callers"),
)
ROLES = ("main", "readers", "writer", "engine callers", "backend workers", "other")


def role_of(python_name: str | None, is_main: bool) -> str:
    """The role of a thread by its Python name (None: no Python object, a backend's own thread)."""
    if is_main:
        return "main"
    if python_name is None:
        return "backend workers"
    return next((role for prefix, role in ROLE_PREFIXES if python_name.startswith(prefix)), "other")


def thread_cpu_seconds() -> dict[int, float]:
    """CPU seconds (user + system) of every thread of this process, by native thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds: dict[int, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                text = stat.read()
        except OSError:  # the thread exited between listing and reading
            continue
        fields = text[text.rindex(")") + 2 :].split()
        seconds[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


class ThreadSampler:
    """Samples every thread's CPU on a thread of its own until ``stop``; keeps each thread's Python name."""

    def __init__(self) -> None:
        self._start = thread_cpu_seconds()
        self._last: dict[int, float] = dict(self._start)
        self._names: dict[int, str] = {}
        self._main = threading.main_thread().native_id
        self._stopping = threading.Event()
        self._sampler = threading.Thread(target=self._run, name="thread-cpu-sampler", daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        for thread in threading.enumerate():
            if thread.native_id is not None:
                self._names.setdefault(thread.native_id, thread.name)
        self._last.update(thread_cpu_seconds())

    def _run(self) -> None:
        while not self._stopping.wait(SAMPLE_SECONDS):
            self._sample()

    def stop(self) -> dict[str, Any]:
        """Stop sampling: CPU seconds per role and per thread since construction."""
        self._sample()
        self._stopping.set()
        self._sampler.join()
        threads: list[dict[str, Any]] = []
        roles = dict.fromkeys(ROLES, 0.0)
        for tid, seconds in self._last.items():
            used = seconds - self._start.get(tid, 0.0)
            if used <= 0:
                continue
            name = self._names.get(tid)
            role = role_of(name, tid == self._main)
            roles[role] += used
            threads.append({"tid": tid, "name": name, "role": role, "cpu_seconds": used})
        threads.sort(key=lambda row: -row["cpu_seconds"])
        return {"roles": roles, "threads": threads}


def run_scene(predictor: Any, paths: dict[str, Path], out: Path, tile: int, batch: int) -> dict[str, Any]:
    """One ``predict_scene``: wall, process CPU, CPU per role and per stage."""
    sampler = ThreadSampler()
    wall, cpu = time.perf_counter(), time.process_time()
    summary = predictor.predict_scene(
        optical=paths["optical"],
        sar=paths["sar"],
        dsm=paths["dsm"],
        cloud_mask=paths.get("cloud_mask"),
        out=out / "classes.tif",
        pattern_map=out / "patterns.tif",
        tile=tile,
        batch=batch,
        progress=False,
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sampled = sampler.stop()
    seen = sum(sampled["roles"].values())
    return {
        "wall_seconds": wall,
        "process_cpu_seconds": cpu,
        "coverage": seen / cpu if cpu else None,
        "stage_cpu_seconds": dict(summary.stage_cpu_seconds),
        **sampled,
    }


def measure(
    engines: Path, paths: dict[str, Path], backend: str, precision: str, tile: int, batch: int, warm: int
) -> list[dict[str, Any]]:
    """The cold run, then ``warm`` warm ones, on one ``Predictor``."""
    from runtime import Predictor

    runs: list[dict[str, Any]] = []
    with Predictor(engines, backend=backend, precision=precision) as predictor:
        for index in range(1 + warm):
            with tempfile.TemporaryDirectory() as folder:
                runs.append(
                    {
                        "run": "cold" if index == 0 else "warm",
                        **run_scene(predictor, paths, Path(folder), tile, batch),
                    }
                )
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = scene_parser(__doc__, Path("/tmp/stars_edge_thread_cpu"))
    parser.add_argument("--warm", type=int, default=2, help="warm runs after the cold one (default 2)")
    args = parser.parse_args(argv)
    if not Path("/proc/self/task").is_dir():
        parser.error("per-thread CPU is read from /proc/self/task: Linux only")
    paths = scene_paths(args.workdir, args.size, 0, args.scene)
    load_start = load_average()
    runs = measure(args.engines, paths, args.backend, args.precision, args.tile, args.batch, args.warm)
    for run in runs:
        roles = ", ".join(f"{role} {seconds:.2f}" for role, seconds in run["roles"].items())
        print(
            f"{run['run']}: wall {run['wall_seconds']:.2f} s, process CPU {run['process_cpu_seconds']:.2f} s "
            f"(seen {run['coverage']:.0%}): {roles}",
            flush=True,
        )
    if args.json:
        fields = {k: getattr(args, k) for k in ("backend", "precision", "scene", "size", "tile", "batch")}
        fields["gdal_num_threads"] = os.environ.get("GDAL_NUM_THREADS", "unset (GDAL's default: 1)")
        record = scene_record(args.engines, load_start, **fields)
        record["thread_cpu"] = {"sample_seconds": SAMPLE_SECONDS, "runs": runs}
        write_json_atomic(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
