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
(threads' sum / process CPU) says how much was seen. Each run also records the minor page faults per role
(fresh memory the kernel maps and zeroes on first touch) and the cores busy per tenth of the run with the
idle core-seconds: on 2 cores the middle of a scene keeps both busy, so what stands between a scene and its
floor is the CPU the runtime adds there plus the fill and the drain, where a core waits (session 13).

``--perf`` also attaches ``perf record`` to the process for the warm runs and attributes its samples to the
same roles by thread id: on what each role spends its CPU, by library and symbol
(``benchmarks/perf_samples.py``; session 14).

    python benchmarks/thread_cpu.py --engines demo_out/engines --json out.json
    python benchmarks/thread_cpu.py --engines demo_out/engines --warm 3 --perf --json out.json
"""

from __future__ import annotations

import itertools
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
from benchmarks.perf_samples import PerfRecording, by_role, format_by_role, parse_perf_script, perf_script
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


def thread_counters() -> dict[int, tuple[float, int]]:
    """CPU seconds (user + system) and minor page faults of every thread of this process, by native id.

    A minor fault is a page the kernel maps (and zeroes, for fresh memory) on first touch: ``perf`` put 12 %
    of a scene's CPU in the kernel's ``clear_page``, so the faults say which role pays for fresh buffers. One
    fault may map a 2 MiB huge page (numpy asks for them on arrays of 4 MiB and more), so the count is a lower
    bound on the pages touched, comparable between runs of the same code."""
    tick = os.sysconf("SC_CLK_TCK")
    counters: dict[int, tuple[float, int]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                text = stat.read()
        except OSError:  # the thread exited between listing and reading
            continue
        fields = text[text.rindex(")") + 2 :].split()
        counters[int(tid)] = ((int(fields[11]) + int(fields[12])) / tick, int(fields[7]))
    return counters


def utilisation(samples: list[tuple[float, float]], cores: int, parts: int = 10) -> dict[str, Any]:
    """Cores busy over a run from ``(wall, process CPU)`` samples: the mean per tenth of the run and the
    idle core-seconds (``cores`` x wall - CPU, per interval, never below 0). A pipeline bound by its CPU keeps
    every core busy; idle cores at the start and the end are its fill and drain (serial work)."""
    if len(samples) < 2:
        return {"cores": cores, "idle_core_seconds": None, "busy_cores_by_tenth": []}
    start, end = samples[0][0], samples[-1][0]
    span = (end - start) / parts
    wall = [0.0] * parts
    cpu = [0.0] * parts
    idle = 0.0
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        part = min(parts - 1, int((t0 - start) / span)) if span > 0 else 0
        wall[part] += t1 - t0
        cpu[part] += c1 - c0
        idle += max(0.0, cores * (t1 - t0) - (c1 - c0))
    return {
        "cores": cores,
        "idle_core_seconds": idle,
        "busy_cores_by_tenth": [c / w if w > 0 else None for c, w in zip(cpu, wall, strict=True)],
    }


class ThreadSampler:
    """Samples every thread's CPU and page faults on a thread of its own until ``stop``; keeps each thread's
    Python name, and the process's CPU over time (``utilisation``)."""

    def __init__(self) -> None:
        self._start = thread_counters()
        self._last: dict[int, tuple[float, int]] = dict(self._start)
        self._names: dict[int, str] = {}
        self._main = threading.main_thread().native_id
        self._timeline: list[tuple[float, float]] = [(time.perf_counter(), time.process_time())]
        self._stopping = threading.Event()
        self._sampler = threading.Thread(target=self._run, name="thread-cpu-sampler", daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        for thread in threading.enumerate():
            if thread.native_id is not None:
                self._names.setdefault(thread.native_id, thread.name)
        self._last.update(thread_counters())
        self._timeline.append((time.perf_counter(), time.process_time()))

    def _run(self) -> None:
        while not self._stopping.wait(SAMPLE_SECONDS):
            self._sample()

    def stop(self) -> dict[str, Any]:
        """Stop sampling: CPU seconds and minor faults per role and per thread since construction, and the
        cores busy over the time sampled."""
        self._stopping.set()
        self._sampler.join()
        self._sample()
        threads: list[dict[str, Any]] = []
        roles = dict.fromkeys(ROLES, 0.0)
        faults = dict.fromkeys(ROLES, 0)
        for tid, (seconds, minor) in self._last.items():
            before = self._start.get(tid, (0.0, 0))
            used, faulted = seconds - before[0], minor - before[1]
            if used <= 0 and faulted <= 0:
                continue
            name = self._names.get(tid)
            role = role_of(name, tid == self._main)
            roles[role] += used
            faults[role] += faulted
            threads.append(
                {"tid": tid, "name": name, "role": role, "cpu_seconds": used, "minor_faults": faulted}
            )
        threads.sort(key=lambda row: -row["cpu_seconds"])
        cores = len(os.sched_getaffinity(0))
        return {
            "roles": roles,
            "minor_faults": faults,
            "utilisation": utilisation(self._timeline, cores),
            "threads": threads,
        }


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
    engines: Path,
    paths: dict[str, Path],
    backend: str,
    precision: str,
    tile: int,
    batch: int,
    warm: int,
    perf_data: Path | None = None,
) -> list[dict[str, Any]]:
    """The cold run, then ``warm`` warm ones, on one ``Predictor``; with ``perf_data``, ``perf record`` runs
    through the warm ones into that file."""
    from runtime import Predictor

    runs: list[dict[str, Any]] = []
    recording: PerfRecording | None = None
    with Predictor(engines, backend=backend, precision=precision) as predictor:
        try:
            for index in range(1 + warm):
                if index == 1 and perf_data is not None:
                    recording = PerfRecording(os.getpid(), perf_data)
                with tempfile.TemporaryDirectory() as folder:
                    runs.append(
                        {
                            "run": "cold" if index == 0 else "warm",
                            **run_scene(predictor, paths, Path(folder), tile, batch),
                        }
                    )
        finally:
            if recording is not None:
                recording.stop()
    return runs


def perf_roles(runs: list[dict[str, Any]], perf_data: Path) -> dict[str, Any]:
    """The warm runs' ``perf`` samples by role (each thread's role as the sampler saw it)."""
    roles = {row["tid"]: row["role"] for run in runs if run["run"] == "warm" for row in run["threads"]}
    return by_role(parse_perf_script(perf_script(perf_data)), roles)


def main(argv: list[str] | None = None) -> int:
    parser = scene_parser(__doc__, Path("/tmp/stars_edge_thread_cpu"))
    parser.add_argument("--warm", type=int, default=2, help="warm runs after the cold one (default 2)")
    parser.add_argument(
        "--perf",
        action="store_true",
        help="attach `perf record` during the warm runs and report each role's CPU by library and symbol",
    )
    args = parser.parse_args(argv)
    if not Path("/proc/self/task").is_dir():
        parser.error("per-thread CPU is read from /proc/self/task: Linux only")
    if args.perf and args.warm < 1:
        parser.error("--perf samples the warm runs: give --warm 1 or more")
    paths = scene_paths(args.workdir, args.size, 0, args.scene)
    load_start = load_average()
    with tempfile.TemporaryDirectory() as scratch:
        perf_data = Path(scratch) / "perf.data" if args.perf else None
        runs = measure(
            args.engines, paths, args.backend, args.precision, args.tile, args.batch, args.warm, perf_data
        )
        sampled = perf_roles(runs, perf_data) if perf_data is not None else None
    for run in runs:
        roles = ", ".join(f"{role} {seconds:.2f}" for role, seconds in run["roles"].items())
        faults = ", ".join(f"{role} {count}" for role, count in run["minor_faults"].items() if count)
        busy = run["utilisation"]
        tenths = " ".join("-" if b is None else f"{b:.1f}" for b in busy["busy_cores_by_tenth"])
        idle = busy["idle_core_seconds"]
        print(
            f"{run['run']}: wall {run['wall_seconds']:.2f} s, process CPU {run['process_cpu_seconds']:.2f} s "
            f"(seen {run['coverage']:.0%}): {roles}\n"
            f"  minor page faults: {faults}\n"
            f"  cores busy by tenth of the run: {tenths}; idle core-seconds "
            f"{'n/a' if idle is None else f'{idle:.2f}'} of {busy['cores']} cores",
            flush=True,
        )
    if sampled is not None:
        print(format_by_role(sampled), flush=True)
    if args.json:
        fields = {k: getattr(args, k) for k in ("backend", "precision", "scene", "size", "tile", "batch")}
        fields["gdal_num_threads"] = os.environ.get("GDAL_NUM_THREADS", "unset (GDAL's default: 1)")
        record = scene_record(args.engines, load_start, **fields)
        record["thread_cpu"] = {"sample_seconds": SAMPLE_SECONDS, "runs": runs}
        if sampled is not None:
            record["perf_by_role"] = sampled
        write_json_atomic(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
