"""The inventory step of ``benchmarks/gpu_check.py``: everything installed that the later steps need,
collected without stopping at the first gap (each import probed in a child interpreter, which may hang or
crash), and its one-line-per-component summary."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from typing import Any

from benchmarks.gpu_check_base import PROJECT_ROOT, TIMEOUTS, Check


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
