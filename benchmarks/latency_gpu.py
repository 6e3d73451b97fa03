"""The GPU section: TensorRT engines through the runtime's backend, ONNX Runtime's CUDA and TensorRT
providers, PyTorch on CUDA; and, where there is no GPU, why not."""

from __future__ import annotations

import subprocess
from typing import Any

from benchmarks.latency_engines import _engine_rows, benchmark_onnxruntime, benchmark_pytorch
from benchmarks.latency_plan import BenchmarkPlan, Echo, FlopCache, checkpoint_modules, selected_entries
from stars_edge.manifest import Manifest


def gpu_info() -> dict[str, Any]:
    """Device name, driver and library availability; ``tensorrt_reason`` says why TensorRT cannot run."""
    info: dict[str, Any] = {"available": False, "devices": [], "tensorrt": None, "tensorrt_reason": None}
    try:
        completed = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,compute_cap",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        info["reason"] = (
            f"no NVIDIA GPU ({'nvidia-smi not found' if isinstance(exc, FileNotFoundError) else exc})"
        )
    else:
        if completed.returncode == 0 and completed.stdout.strip():
            for line in completed.stdout.strip().splitlines():
                name, driver, memory, capability = (part.strip() for part in line.split(",", 3))
                info["devices"].append(
                    {"name": name, "driver": driver, "memory": memory, "compute_capability": capability}
                )
            info["available"] = True
        else:
            info["reason"] = f"no NVIDIA GPU (nvidia-smi: {completed.stderr.strip() or 'no devices'})"
    from export.tensorrt_build import tensorrt_status
    from runtime.backends import TensorRTBackend

    info["tensorrt"] = TensorRTBackend.version()
    if not TensorRTBackend.is_available():
        _target, reason = tensorrt_status()
        info["tensorrt_reason"] = reason or "the runtime's TensorRT backend cannot start (cuda-python or GPU)"
    try:
        import onnxruntime

        info["onnxruntime_providers"] = list(onnxruntime.get_available_providers())
    except ImportError:
        info["onnxruntime_providers"] = []
    return info


def benchmark_gpu(
    manifest: Manifest,
    plan: BenchmarkPlan,
    flops_cache: FlopCache,
    info: dict[str, Any],
    echo: Echo = print,
    skipped: list[str] | None = None,
) -> list[dict[str, Any]]:
    """TensorRT engines through the runtime's TensorRT backend, ONNX files on ONNX Runtime's CUDA and
    TensorRT providers, and PyTorch eager on CUDA; every call is synchronised (the backend waits on its
    stream, torch uses ``cuda.synchronize``), so times are completion times including host<->device copies
    for engines."""
    from runtime.backends import TensorRTBackend, gpu_compute_capability

    rows: list[dict[str, Any]] = []
    if info["tensorrt_reason"] is None:
        capability = gpu_compute_capability()
        version = TensorRTBackend.version()
        for entry in selected_entries(manifest, plan, "tensorrt"):
            if entry.compute_capability != capability or entry.tensorrt_version != version:
                echo(
                    f"skip {entry.path}: built for sm{entry.compute_capability} / TensorRT "
                    f"{entry.tensorrt_version}, this is sm{capability} / TensorRT {version}"
                )
                continue
            # An engine's optimisation profile ends at the tile it was built for.
            tile = min(plan.tile, entry.tile_size)
            trt_backend = TensorRTBackend(manifest.engine_path(entry))
            try:
                rows += _engine_rows(
                    trt_backend,
                    manifest,
                    entry,
                    plan,
                    flops_cache,
                    backend_name="tensorrt",
                    device="cuda",
                    tile=tile,
                    threads=None,
                    matmul_gflops=None,
                    echo=echo,
                    skipped=skipped,
                )
            finally:
                trt_backend.close()
    else:
        echo(f"TensorRT not available: {info['tensorrt_reason']}")
    if "CUDAExecutionProvider" in info.get("onnxruntime_providers", []):
        rows += benchmark_onnxruntime(
            manifest, plan, None, flops_cache, echo, ("CUDAExecutionProvider",), "cuda", skipped
        )
    if "TensorrtExecutionProvider" in info.get("onnxruntime_providers", []):
        # The same ONNX files through ONNX Runtime's TensorRT provider (CUDA for what it does not take).
        rows += benchmark_onnxruntime(
            manifest,
            plan,
            None,
            flops_cache,
            echo,
            ("TensorrtExecutionProvider", "CUDAExecutionProvider"),
            "cuda",
            skipped,
            backend_name="onnxruntime-tensorrt",
        )
    if plan.checkpoint is not None:
        import torch

        if torch.cuda.is_available():
            patterns = plan.patterns or manifest.patterns
            rows += benchmark_pytorch(
                checkpoint_modules(plan.checkpoint),
                manifest,
                patterns,
                plan,
                None,
                flops_cache,
                device="cuda",
            )
    return rows
