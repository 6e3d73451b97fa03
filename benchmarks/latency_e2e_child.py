"""One end-to-end scene in a fresh child process, for its own peak RSS: the child's entry point
(``e2e_child_main``: one ``predict_scene`` call, its timings and peak RSS, then its CPU floor and arrays run
from ``benchmarks.latency_floor``) and the parent's side (``_run_e2e_child``: start it, sample its RSS as a
cross-check, read its one result line).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import BenchmarkError
from benchmarks.latency_plan import PROJECT_ROOT
from stars_edge.errors import StarsEdgeError


def _peak_rss_mib(ru_maxrss_mib: float) -> float:
    """This process's peak RSS: VmHWM of its own address space where Linux reports it.

    ``ru_maxrss`` is preserved across ``execve``, so a child started from a large parent inherits the
    parent's peak; VmHWM belongs to the new address space and is the child's own.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return ru_maxrss_mib


def e2e_child_main(spec_json: str) -> None:
    """Entry point of the child process: one ``predict_scene`` call, its timings and own peak RSS; then
    (``spec["floor"]``) the run's CPU floor and the arrays run (``benchmarks.latency_floor``)."""
    import resource

    spec = json.loads(spec_json)
    from runtime import Predictor

    def make_predictor() -> Predictor:
        # timing only: an engine the accuracy gate flagged is timed like the others (its verdict is in
        # the manifest and the engine rows), it is not what a user would ship
        return Predictor(
            spec["engines"],
            backend=spec["backend"],
            precision=spec["precision"],
            threads=spec["threads"],
            allow_flagged=True,
            streams=spec.get("streams"),
        )

    try:
        start = time.perf_counter()
        predictor = make_predictor()
        loaded = time.perf_counter()
        cpu = time.process_time()
        summary = predictor.predict_scene(
            out=spec["out"], pattern_map=spec["pattern_map"], **_scene_arguments(spec)
        )
        done = time.perf_counter()
        cpu_seconds = time.process_time() - cpu
        # the scene's own peak, before a second scene, the floor's measurements and the arrays run
        peak = _peak_rss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        if spec.get("scene_done_flag"):
            Path(spec["scene_done_flag"]).touch()
        warm = _warm_scene(predictor, spec)
        predictor.close()
        result: dict[str, Any] = {
            "load_s": loaded - start,
            "predict_s": done - loaded,
            "cpu_s": cpu_seconds,
            "maxrss_mib": peak,
            "summary": summary.to_dict(),
            **warm,
        }
        if spec.get("floor"):
            from benchmarks.latency_floor import measure_floor, scene_files

            result.update(
                measure_floor(
                    make_predictor,
                    predictor.manifest,
                    result["summary"],
                    scene_files(spec),
                    spec,
                    done - loaded,
                    warm["warm_predict_s"],
                )
            )
    except StarsEdgeError as exc:
        print("E2E_ERROR " + str(exc).replace("\n", " "), flush=True)
        return
    print("E2E_RESULT " + json.dumps(result, default=str), flush=True)


def _scene_arguments(spec: dict[str, Any]) -> dict[str, Any]:
    """``predict_scene``'s arguments for the spec's scene, all but the outputs."""
    return {
        "progress": True,
        "batch": spec["batch"],
        "optical": spec["optical"],
        "sar": spec["sar"],
        "dsm": spec["dsm"],
        "cloud_mask": spec.get("cloud_mask"),
        "tile": spec["tile"],
        "overlap": spec["overlap"],
        "allow_out_of_range": bool(spec.get("allow_out_of_range", False)),
    }


def _warm_scene(predictor: Any, spec: dict[str, Any]) -> dict[str, float]:
    """The same scene again on the same predictor, as a long-lived process (``run-batch`` workers, an
    on-board loop) runs its second scene: the backend imported, the engines loaded, every call shape seen.
    Written beside the first scene's outputs and removed; its wall and CPU seconds."""
    out = Path(spec["out"])
    targets = {"out": out.with_name(out.stem + "_warm.tif")}
    if spec.get("pattern_map"):
        pattern_map = Path(spec["pattern_map"])
        targets["pattern_map"] = pattern_map.with_name(pattern_map.stem + "_warm.tif")
    started, cpu = time.perf_counter(), time.process_time()
    predictor.predict_scene(**targets, **_scene_arguments(spec))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    for target in targets.values():
        target.unlink(missing_ok=True)
    return {"warm_predict_s": seconds, "warm_cpu_s": cpu_seconds}


def _run_e2e_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``e2e_child_main`` in a fresh interpreter; sample its RSS from here as a cross-check."""
    import psutil

    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from benchmarks.latency_e2e_child import e2e_child_main; e2e_child_main(sys.argv[2])"
    )
    command = [sys.executable, "-c", code, str(PROJECT_ROOT), json.dumps(spec)]
    env = {**os.environ, "GDAL_NUM_THREADS": str(spec.get("gdal_threads", "1"))}
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        # stdout carries the result line; stderr (the runtime's progress bar, any traceback) goes to ours.
        child = subprocess.Popen(command, stdout=log, stderr=None, text=True, env=env)
        watched = psutil.Process(child.pid)
        sampled_peak = 0
        # sampled until the scene is done: the floor's measurements and the arrays run come after it
        scene_done = Path(spec["scene_done_flag"]) if spec.get("scene_done_flag") else None
        while child.poll() is None:
            if scene_done is None or not scene_done.exists():
                try:
                    sampled_peak = max(sampled_peak, watched.memory_info().rss)
                except psutil.NoSuchProcess:
                    break
            time.sleep(0.05)
        wall = time.perf_counter() - started
        log.seek(0)
        output = log.read()
    errors = [
        line.removeprefix("E2E_ERROR ") for line in output.splitlines() if line.startswith("E2E_ERROR ")
    ]
    if errors:
        raise BenchmarkError(f"end-to-end run on {spec['optical']} failed: {errors[-1]}")
    marker = [line for line in output.splitlines() if line.startswith("E2E_RESULT ")]
    if child.returncode != 0 or not marker:
        raise BenchmarkError(
            f"end-to-end child process exited with {child.returncode} and no result; its traceback is above"
        )
    result: dict[str, Any] = json.loads(marker[-1].removeprefix("E2E_RESULT "))
    result["child_wall_s"] = wall
    result["sampled_peak_rss_mib"] = sampled_peak / 2**20
    return result
