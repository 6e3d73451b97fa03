"""`make gpu-check`: what the first machine with an NVIDIA GPU can tell this project, in one command.

    python benchmarks/gpu_check.py [--out benchmarks/results/gpu_check] [--work gpu_check_work]
                                   [--checkpoint demo_out/train/checkpoint.pt] [--budget 600]

Nothing here has run on a GPU yet (none was available while it was written); it is the script for the first
machine that has one. Such a machine may reach no network, so it installs and downloads nothing: it uses
what is installed and says what is missing. Steps, in order; the first that fails stops the run with what to
fix, exit code 1:

1. **inventory** (never stops the run, all at once, so one run learns everything): Python, nvidia-smi (GPUs,
   driver, CUDA version), PyTorch and its CUDA, ``tensorrt`` and whether every TensorRT name the project uses
   exists in it (``export/tensorrt_api``), cuda-python (device count, driver/runtime versions), ONNX Runtime
   and its execution providers, the other packages, the runtime's own view (``TensorRTBackend``,
   ``tensorrt_status``), free disk;
2. **requirements**: an NVIDIA GPU, a CUDA build of PyTorch, TensorRT >= 10 with every used name, cuda-python
   seeing the GPU (the first step that needs a GPU: on a CPU machine the run stops here);
3. **checkpoint**: ``--checkpoint`` (e.g. the demo's), else a ``tiny`` model trained a few steps on the GPU;
4. **build-engines**: the project's own ``stars-edge build-engines --backend tensorrt``: 7 patterns x
   fp32/fp16/int8 ONNX files (what ONNX Runtime's TensorRT and CUDA providers run) and TensorRT engines;
5. **pytest**: the ``gpu``/``tensorrt``-marked tests (all skipped counts as a failure);
6. **int8-gate**: the accuracy gate the build ran on every TensorRT engine itself (FP16, INT8) against its
   ONNX source's verdict;
7. **latency**: ``benchmarks/latency.py --quick`` on the full pattern: PyTorch CUDA eager, ONNX Runtime CUDA,
   ONNX Runtime TensorRT and native TensorRT rows must all be there.

Results: ``<out>/gpu_check.json`` and ``gpu_check.md`` (rewritten after every step, so a timeout still leaves
them), step logs in ``<out>/logs/``. Every step has a timeout, and the whole run a budget (``--budget``,
default 600 s), sized for one datacenter GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/gpu_check.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = PROJECT_ROOT / "benchmarks" / "results" / "gpu_check"
DEFAULT_WORK = PROJECT_ROOT / "gpu_check_work"
#: Engine and calibration sizes: small enough for 21 TensorRT builds in a few minutes, large enough to matter.
TILE = 128
TRAIN_STEPS = 60
#: Seconds per step (each also capped by what is left of --budget).
#: Estimates, not measurements (no GPU has run this yet): the build is 21 TensorRT builds of the tiny model.
TIMEOUTS = {"probe": 60, "checkpoint": 90, "build-engines": 330, "pytest": 150, "latency": 150}
#: (backend, device) rows latency.py must produce on a GPU machine.
LATENCY_ROWS = {
    ("pytorch", "cuda"): "PyTorch eager on CUDA",
    ("onnxruntime", "cuda"): "ONNX Runtime, CUDA provider",
    ("onnxruntime-tensorrt", "cuda"): "ONNX Runtime, TensorRT provider",
    ("tensorrt", "cuda"): "native TensorRT through the runtime's backend",
}


class StepFailed(Exception):
    """A step found something broken; ``fix`` says what to do about it."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


@dataclass
class Step:
    """One step's outcome as it goes into the results file."""

    name: str
    status: str = "not run"  # passed | failed | not run
    seconds: float = 0.0
    message: str = ""
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    """Where the run writes, what it was given, and its deadline."""

    out: Path
    work: Path
    checkpoint: Path | None
    deadline: float
    python: str = sys.executable
    inventory: dict[str, Any] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)

    def timeout(self, step: str) -> float:
        left = self.deadline - time.monotonic()
        if left < 5:
            raise StepFailed(
                f"the run's budget is spent before step {step}",
                "rerun with a larger --budget, or look at the slow step's log in the results folder",
            )
        return min(TIMEOUTS.get(step, 60), left)


# ------------------------------------------------------------------------------------------------- helpers


def run_command(command: Sequence[str], timeout: float, log: Path, env: dict[str, str] | None = None) -> str:
    """Run ``command`` in its own process group with ``timeout``; its output goes to ``log`` and is returned.

    A timeout kills the whole group (pytest and build-engines start children) and raises StepFailed.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})}
    with log.open("w") as sink:
        sink.write("$ " + " ".join(command) + "\n")
        sink.flush()
        process = subprocess.Popen(
            list(command),
            cwd=PROJECT_ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise StepFailed(
                f"`{' '.join(command[:4])} ...` did not finish in {timeout:.0f} s (log: {log})",
                "see the log for the step it hung in; a first TensorRT build can be slow, raise --budget",
            ) from None
    output = log.read_text(errors="replace")
    if process.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise StepFailed(f"`{' '.join(command[:4])} ...` exited {process.returncode}:\n{tail}", f"see {log}")
    return output


def _probe(python: str, code: str, timeout: float) -> dict[str, Any]:
    """Run ``code`` in a child interpreter (an import may hang or crash) and read the JSON it prints last."""
    try:
        result = subprocess.run(
            [python, "-c", code],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"probe exited {result.returncode}: {tail}"}
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


_TORCH_PROBE = """
import json
try:
    import torch
except Exception as exc:
    print(json.dumps({"installed": False, "error": f"{type(exc).__name__}: {exc}"})); raise SystemExit
info = {"installed": True, "version": torch.__version__, "cuda_build": torch.version.cuda,
        "cuda_available": bool(torch.cuda.is_available())}
if info["cuda_available"]:
    info["device"] = torch.cuda.get_device_name(0)
    info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
print(json.dumps(info))
"""

_TENSORRT_PROBE = """
import json
try:
    import tensorrt as trt
except Exception as exc:
    print(json.dumps({"installed": False, "error": f"{type(exc).__name__}: {exc}"})); raise SystemExit
from pathlib import Path
from export.tensorrt_api.surface import collect_project, missing_installed_names, supported_names, union_index
uses = collect_project(Path("."), union_index(supported_names()))
print(json.dumps({"installed": True, "version": str(trt.__version__),
                  "names_used": len({u.name for u in uses if u.module == "tensorrt"}),
                  "missing_names": missing_installed_names(uses, "tensorrt")}))
"""

_CUDA_PROBE = """
import json
from importlib import metadata
info = {}
for dist in ("cuda-python", "cuda-bindings"):
    try:
        info[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
        info[dist] = None
from runtime.backends import TensorRTBackend, cuda_status
info["devices"], info["reason"] = cuda_status()
try:
    from cuda.bindings import runtime as cudart
    err, driver = cudart.cudaDriverGetVersion()
    info["driver_cuda"] = f"{driver // 1000}.{driver % 1000 // 10}" if int(err) == 0 and driver else None
    err, runtime = cudart.cudaRuntimeGetVersion()
    info["runtime_cuda"] = f"{runtime // 1000}.{runtime % 1000 // 10}" if int(err) == 0 else None
except Exception as exc:
    info["driver_cuda"] = info["runtime_cuda"] = None
    info["version_error"] = f"{type(exc).__name__}: {exc}"
info["tensorrt_backend"] = TensorRTBackend.unavailable_reason() or "usable"
from export.tensorrt_build import tensorrt_status
target, reason = tensorrt_status()
info["tensorrt_build"] = target.tag if target else reason
print(json.dumps(info))
"""

_PACKAGES_PROBE = """
import json
from importlib import metadata
names = ("onnxruntime", "onnxruntime-gpu", "onnx", "onnxslim", "onnxscript", "openvino", "numpy", "tensorrt",
         "tensorrt-cu12", "tensorrt-cu13", "stars-edge")
versions = {}
for name in names:
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        versions[name] = None
try:
    import onnxruntime
    providers = list(onnxruntime.get_available_providers())
except Exception as exc:
    providers = [f"error: {type(exc).__name__}: {exc}"]
print(json.dumps({"versions": versions, "onnxruntime_providers": providers}))
"""


def nvidia_smi() -> dict[str, Any]:
    """GPUs, driver and the CUDA version the driver supports, from nvidia-smi (absent: says so)."""
    path = shutil.which("nvidia-smi")
    if path is None:
        return {
            "found": False,
            "error": "nvidia-smi not found (no NVIDIA driver on this machine)",
            "gpus": [],
        }
    query = "--query-gpu=name,driver_version,memory.total,compute_cap"
    try:
        listing = subprocess.run(
            [path, query, "--format=csv,noheader"], capture_output=True, text=True, timeout=30, check=False
        )
        banner = subprocess.run([path], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return {"found": True, "error": "nvidia-smi did not answer in 30 s", "gpus": []}
    if listing.returncode != 0:
        error = (listing.stderr or listing.stdout).strip() or f"exit {listing.returncode}"
        return {"found": True, "error": f"nvidia-smi failed: {error}", "gpus": []}
    gpus = []
    for line in listing.stdout.strip().splitlines():
        name, driver, memory, capability = (part.strip() for part in line.split(",", 3))
        gpus.append({"name": name, "driver": driver, "memory": memory, "compute_capability": capability})
    match = re.search(r"CUDA Version:\s*([\d.]+)", banner.stdout)
    return {"found": True, "gpus": gpus, "driver_cuda": match.group(1) if match else None}


def inventory(check: Check) -> dict[str, Any]:
    """Everything installed that the later steps need, collected without stopping at the first gap."""
    timeout = TIMEOUTS["probe"]
    usage = shutil.disk_usage(check.work if check.work.exists() else PROJECT_ROOT)
    return {
        "python": {"version": platform.python_version(), "executable": check.python},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "disk_free_gb": usage.free / 1e9,
        },
        "nvidia_smi": nvidia_smi(),
        "torch": _probe(check.python, _TORCH_PROBE, timeout),
        "tensorrt": _probe(check.python, _TENSORRT_PROBE, timeout),
        "cuda_python": _probe(check.python, _CUDA_PROBE, timeout),
        "packages": _probe(check.python, _PACKAGES_PROBE, timeout),
        "tensorrt_name_lists": _name_lists(),
    }


def _name_lists() -> list[str]:
    from export.tensorrt_api import SUPPORTED_VERSIONS

    return list(SUPPORTED_VERSIONS)


def _smi_line(smi: dict[str, Any]) -> str:
    if smi.get("error"):
        return str(smi["error"])
    if not smi.get("gpus"):
        return "lists no GPU"
    gpus = "; ".join(f"{g['name']} (sm {g['compute_capability']}, {g['memory']})" for g in smi["gpus"])
    return f"{gpus}; driver {smi['gpus'][0]['driver']}, CUDA {smi.get('driver_cuda')}"


def _torch_line(torch: dict[str, Any]) -> str:
    if not torch.get("installed"):
        return str(torch.get("error"))
    line = f"{torch['version']} (CUDA build {torch['cuda_build']}), cuda available: {torch['cuda_available']}"
    return line + (f", {torch['device']} sm {torch['capability']}" if torch.get("device") else "")


def _tensorrt_line(trt: dict[str, Any]) -> str:
    if not trt.get("installed"):
        return str(trt.get("error"))
    return f"{trt['version']}; {trt['names_used']} names used, missing: {trt['missing_names'] or 'none'}"


def _cuda_line(cuda: dict[str, Any]) -> str:
    if cuda.get("error"):
        return str(cuda["error"])
    line = (
        f"{cuda.get('cuda-python')} (bindings {cuda.get('cuda-bindings')}), runtime CUDA "
        f"{cuda.get('runtime_cuda')}, driver CUDA {cuda.get('driver_cuda')}, devices {cuda.get('devices')}"
    )
    return line + (f": {cuda['reason']}" if cuda.get("reason") else "")


def _onnxruntime_line(packages: dict[str, Any]) -> str:
    if packages.get("error"):
        return str(packages["error"])
    versions = packages["versions"]
    return (
        f"onnxruntime {versions.get('onnxruntime')}, onnxruntime-gpu {versions.get('onnxruntime-gpu')}; "
        f"providers {', '.join(packages.get('onnxruntime_providers', []))}"
    )


def inventory_lines(info: dict[str, Any]) -> list[str]:
    """The inventory as aligned ``component  status`` lines, printed before any step runs."""
    cuda, packages, machine = info["cuda_python"], info["packages"], info["machine"]
    others = {
        name: version
        for name, version in packages.get("versions", {}).items()
        if version and not name.startswith(("onnxruntime", "tensorrt"))
    }
    rows = [
        ("python", f"{info['python']['version']} ({info['python']['executable']})"),
        ("machine", f"{machine['platform']}, {machine['cpus']} CPUs, {machine['disk_free_gb']:.0f} GB free"),
        ("nvidia-smi", _smi_line(info["nvidia_smi"])),
        ("torch", _torch_line(info["torch"])),
        ("tensorrt", _tensorrt_line(info["tensorrt"])),
        ("cuda-python", _cuda_line(cuda)),
        ("runtime TensorRT", str(cuda.get("tensorrt_backend", cuda.get("error", "")))),
        ("build TensorRT", str(cuda.get("tensorrt_build", cuda.get("error", "")))),
        ("onnxruntime", _onnxruntime_line(packages)),
        ("packages", ", ".join(f"{name} {version}" for name, version in others.items())),
        ("TensorRT name lists", ", ".join(info["tensorrt_name_lists"])),
    ]
    width = max(len(name) for name, _ in rows)
    return [f"  {name:<{width}}  {value}" for name, value in rows]


# --------------------------------------------------------------------------------------------------- steps


def step_requirements(check: Check) -> dict[str, Any]:
    """Everything the later steps need from the machine, all reported at once."""
    info = check.inventory
    problems: list[str] = []
    fixes: list[str] = []
    smi, cuda = info["nvidia_smi"], info["cuda_python"]
    if not smi.get("gpus") and not cuda.get("devices"):  # Jetsons may lack nvidia-smi; CUDA still counts
        problems.append(f"no NVIDIA GPU: {smi.get('error', 'nvidia-smi lists none')}")
        fixes.append("run `make gpu-check` on a machine with an NVIDIA GPU and its driver")
    torch = info["torch"]
    if not torch.get("installed"):
        problems.append(f"PyTorch is not importable ({torch.get('error')})")
        fixes.append("install a CUDA build of torch (pip install torch)")
    elif not torch.get("cuda_available"):
        build = torch.get("cuda_build")
        problems.append(f"torch {torch.get('version')} cannot use CUDA (CUDA build: {build})")
        fixes.append("install a CUDA build of torch" if build is None else "check the driver (nvidia-smi)")
    trt = info["tensorrt"]
    if not trt.get("installed"):
        problems.append(f"tensorrt is not importable ({trt.get('error')})")
        fixes.append("pip install 'stars-edge[tensorrt]' (TensorRT >= 10 with its libraries)")
    elif int(str(trt["version"]).split(".")[0]) < 10:
        problems.append(f"TensorRT {trt['version']} is older than 10")
        fixes.append("install TensorRT 10 or 11")
    elif trt.get("missing_names"):
        problems.append("the project uses names this TensorRT lacks: " + "; ".join(trt["missing_names"]))
        fixes.append("port those calls (docs/EXPORT.md, TensorRT section) and add the release's name list")
    if cuda.get("error") or not cuda.get("devices"):
        problems.append(f"cuda-python sees no GPU: {cuda.get('error') or cuda.get('reason')}")
        driver, runtime = cuda.get("driver_cuda"), cuda.get("runtime_cuda")
        if driver and runtime and int(driver.split(".")[0]) < int(runtime.split(".")[0]):
            fixes.append(f"the driver supports CUDA {driver} but cuda-python is built for {runtime}: "
                         f"pip install 'cuda-python<{runtime.split('.')[0]}'")  # fmt: skip
        else:
            fixes.append("pip install cuda-python (a major version the driver supports)")
    if problems:
        raise StepFailed(
            f"{len(problems)} requirement(s) missing:\n- " + "\n- ".join(problems),
            "\n- " + "\n- ".join(dict.fromkeys(fixes)),
        )
    return {"gpus": [g["name"] for g in smi.get("gpus", [])], "tensorrt": trt["version"]}


def step_checkpoint(check: Check) -> dict[str, Any]:
    """The given checkpoint, or a tiny model trained for a few steps on the GPU."""
    if check.checkpoint is not None:
        if not check.checkpoint.is_file():
            raise StepFailed(f"--checkpoint {check.checkpoint} does not exist", "give a training checkpoint")
        return {"checkpoint": str(check.checkpoint), "trained": False}
    out = check.work / "train"
    steps = str(TRAIN_STEPS)
    run_command(
        [check.python, "-m", "training.train", "--variant", "tiny", "--steps", steps, "--device", "cuda",
         "--synthetic-size", "128", "--synthetic-train-scenes", "4", "--synthetic-val-scenes", "1",
         "--tile-size", "64", "--batch-size", "8", "--val-every", steps, "--checkpoint-every", steps,
         "--output-dir", str(out), "--quiet"],
        check.timeout("checkpoint"),
        check.out / "logs" / "checkpoint.log",
    )  # fmt: skip
    check.checkpoint = out / "checkpoint.pt"
    if not check.checkpoint.is_file():
        raise StepFailed(
            f"training wrote no {check.checkpoint}", f"see {check.out / 'logs' / 'checkpoint.log'}"
        )
    return {"checkpoint": str(check.checkpoint), "trained": True, "steps": TRAIN_STEPS}


def step_build_engines(check: Check) -> dict[str, Any]:
    """The project's own build: ONNX per pattern x precision and a TensorRT engine for each."""
    from stars_edge.manifest import load_manifest
    from stars_edge.modalities import ALL_PATTERNS

    engines = check.work / "engines"
    run_command(
        [check.python, "-m", "stars_edge", "build-engines", "--checkpoint", str(check.checkpoint),
         "--out", str(engines), "--precision", "fp32,fp16,int8", "--backend", "tensorrt", "--tile", str(TILE),
         "--calib-tiles", "16", "--gate-tiles", "16", "--control-tiles", "0", "--no-progress"],
        check.timeout("build-engines"),
        check.out / "logs" / "build-engines.log",
    )  # fmt: skip
    manifest = load_manifest(engines)
    built = {(e.pattern, e.precision, e.backend) for e in manifest.engines}
    missing = [
        f"{pattern} {precision}/{backend}"
        for pattern in ALL_PATTERNS
        for precision in ("fp32", "fp16", "int8")
        for backend in ("onnxruntime", "tensorrt")
        if (pattern, precision, backend) not in built
    ]
    if missing:
        raise StepFailed(f"build-engines did not produce {', '.join(missing)}", "see logs/build-engines.log")
    tensorrt = [e for e in manifest.engines if e.backend == "tensorrt"]
    return {
        "engines": str(engines),
        "tensorrt_engines": len(tensorrt),
        "onnx_files": len(manifest.engines) - len(tensorrt),
        "tensorrt_version": tensorrt[0].tensorrt_version,
        "compute_capability": tensorrt[0].compute_capability,
    }


def step_pytest(check: Check) -> dict[str, Any]:
    """The gpu/tensorrt-marked tests; all of them skipping means the machine is not what they need."""
    log = check.out / "logs" / "pytest.log"
    command = [check.python, "-m", "pytest", "-m", "gpu or tensorrt", "-q", "-rs", "-p", "no:cacheprovider"]
    output = run_command(command, check.timeout("pytest"), log)
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", output)}
    if not counts.get("passed"):
        raise StepFailed(f"no GPU test ran: {counts or 'nothing collected'}", f"see {log} for skip reasons")
    return counts


def step_int8_gate(check: Check) -> dict[str, Any]:
    """Each TensorRT engine's own gate verdict, next to its ONNX source's (measured on ONNX Runtime)."""
    from stars_edge.manifest import load_manifest

    manifest = load_manifest(check.work / "engines")
    rows, problems = [], []
    for entry in manifest.engines:
        if entry.backend != "tensorrt" or entry.precision == "fp32":
            continue
        source = manifest.select(entry.pattern, entry.precision, "onnxruntime")
        accuracy, reference = dict(entry.accuracy or {}), dict(source.accuracy or {})
        row = {
            "engine": entry.path,
            "gate": accuracy.get("gate"),
            "miou_drop": accuracy.get("miou_drop"),
            "agreement_with_fp32": accuracy.get("agreement_with_fp32"),
            "onnx_gate": reference.get("gate"),
            "onnx_miou_drop": reference.get("miou_drop"),
        }
        rows.append(row)
        if "measured_on" in accuracy or accuracy.get("gate") not in ("pass", "flagged"):
            problems.append(f"{entry.path} was not measured on the GPU ({accuracy.get('measured_on')})")
        elif accuracy.get("gate") == "flagged" and reference.get("gate") == "pass":
            problems.append(
                f"{entry.path} is flagged (mIoU drop {accuracy.get('miou_drop')}) where its ONNX source "
                f"passes ({reference.get('miou_drop')}): TensorRT's {entry.precision} loses accuracy that "
                "ONNX Runtime does not"
            )
    if problems:
        raise StepFailed("; ".join(problems), "see the engines' accuracy in the manifest and docs/EXPORT.md")
    return {"engines": rows}


def step_latency(check: Check) -> dict[str, Any]:
    """latency.py on the full pattern; every GPU configuration must produce rows."""
    from stars_edge.modalities import ALL_PATTERNS

    providers = check.inventory["packages"].get("onnxruntime_providers", [])
    absent = [p for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") if p not in providers]
    if absent:
        raise StepFailed(
            f"this onnxruntime has no {', '.join(absent)} (providers: {', '.join(providers)})",
            "pip uninstall onnxruntime && pip install onnxruntime-gpu (both provide the onnxruntime module)",
        )
    result = check.out / "latency_gpu.json"
    run_command(
        [check.python, "benchmarks/latency.py", "--engines", str(check.work / "engines"), "--checkpoint",
         str(check.checkpoint), "--quick", "--tile", str(TILE), "--batch", "1", "--patterns",
         str(ALL_PATTERNS[0]), "--e2e-size", "0", "--backends", "onnxruntime", "--torch-modes", "eager",
         "--json", str(result)],
        check.timeout("latency"),
        check.out / "logs" / "latency.log",
    )  # fmt: skip
    data = json.loads(result.read_text())
    found = {(r["backend"], r["device"]) for r in data["rows"]}
    missing = [label for key, label in LATENCY_ROWS.items() if key not in found]
    if missing:
        raise StepFailed(
            f"latency.py measured no {'; no '.join(missing)} (skipped: {data.get('skipped')})",
            "see logs/latency.log",
        )
    return {
        "json": str(result),
        "ms_median": {
            f"{r['backend']} {r['precision']}": r["ms_median"] for r in data["rows"] if r["device"] == "cuda"
        },
    }


STEPS: list[tuple[str, Callable[[Check], dict[str, Any]]]] = [
    ("requirements", step_requirements),
    ("checkpoint", step_checkpoint),
    ("build-engines", step_build_engines),
    ("pytest", step_pytest),
    ("int8-gate", step_int8_gate),
    ("latency", step_latency),
]


# ------------------------------------------------------------------------------------------------- results


def write_results(check: Check) -> None:
    """``gpu_check.json`` and a short ``gpu_check.md``, replaced atomically."""
    from stars_edge.io import write_json_atomic, write_text_atomic

    failed = next((s for s in check.steps if s.status == "failed"), None)
    verdict = "passed" if all(s.status == "passed" for s in check.steps) else "failed"
    data = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "verdict": verdict,
        "failed_step": failed.name if failed else None,
        "inventory": check.inventory,
        "steps": [asdict(s) for s in check.steps],
    }
    check.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(check.out / "gpu_check.json", data)
    lines = [
        "# gpu-check",
        "",
        f"{data['created']}: **{verdict}**" + (f" at step `{failed.name}`" if failed else ""),
        "",
        "## Inventory",
        "",
        "```",
        *inventory_lines(check.inventory),
        "```",
        "",
        "## Steps",
        "",
        "| step | status | seconds | message |",
        "| --- | --- | ---: | --- |",
    ]
    for step in check.steps:
        message = step.message.splitlines()[0] if step.message else ""
        lines.append(f"| {step.name} | {step.status} | {step.seconds:.1f} | {message.replace('|', '/')} |")
    if failed:
        lines += ["", "```", failed.message, "```", "", f"**What to fix**: {failed.fix}"]
    write_text_atomic(check.out / "gpu_check.md", "\n".join(lines) + "\n")


def run(check: Check, echo: Callable[[str], None] = print) -> int:
    """Inventory, then each step until one fails; returns the exit code (0 all passed, 1 a step failed)."""
    check.steps = [Step("inventory")] + [Step(name) for name, _ in STEPS]
    start = time.monotonic()
    check.inventory = inventory(check)
    check.steps[0].status, check.steps[0].seconds = "passed", time.monotonic() - start
    echo("gpu-check inventory:")
    for line in inventory_lines(check.inventory):
        echo(line)
    write_results(check)
    for step, (name, function) in zip(check.steps[1:], STEPS, strict=True):
        echo(f"gpu-check step {name} ...")
        start = time.monotonic()
        try:
            step.details = function(check)
            step.status = "passed"
        except StepFailed as exc:
            step.status, step.message, step.fix = "failed", str(exc), exc.fix
        except Exception as exc:  # a bug or an unexpected state: still a clear stop with the results written
            step.status, step.message = "failed", f"{type(exc).__name__}: {exc}"
            step.fix = "unexpected: the traceback is under this step's details in gpu_check.json"
            step.details = {"traceback": traceback.format_exc()}
        step.seconds = time.monotonic() - start
        write_results(check)
        if step.status == "failed":
            echo(f"gpu-check FAILED at step {name}: {step.message}")
            echo(f"what to fix: {step.fix}")
            echo(f"  results: {check.out / 'gpu_check.json'}, {check.out / 'gpu_check.md'}")
            return 1
        echo(f"gpu-check step {name} passed in {step.seconds:.0f} s")
    echo(f"gpu-check passed; results: {check.out / 'gpu_check.json'}, {check.out / 'gpu_check.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the check; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python benchmarks/gpu_check.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder (JSON, Markdown, logs)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="checkpoint and engines go here")
    parser.add_argument("--checkpoint", type=Path, default=None, help="use this checkpoint (else train tiny)")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds for the whole run")
    args = parser.parse_args(argv)
    check = Check(
        out=args.out.resolve(),
        work=args.work.resolve(),
        checkpoint=args.checkpoint.resolve() if args.checkpoint else None,
        deadline=time.monotonic() + args.budget,
    )
    return run(check, lambda line: print(line, flush=True))


if __name__ == "__main__":
    raise SystemExit(main())
