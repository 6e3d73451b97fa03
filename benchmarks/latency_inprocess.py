"""Engine-only timing in this process: ONNX Runtime engines through the runtime's own backend class (any
execution provider), PyTorch modules in eager mode (CPU or CUDA), and the loop that times one loaded engine
at every batch size. GPU engines are timed this way (``benchmarks.latency_gpu``); the fair CPU comparison
runs each configuration in its own worker process instead (``benchmarks.latency_engines``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks.common import TimingStats, time_callable
from benchmarks.latency_plan import (
    BenchmarkPlan,
    Echo,
    FlopCache,
    TimingPlan,
    flops_for,
    make_inputs,
    make_row,
    selected_entries,
    timing_kwargs,
)
from stars_edge.errors import StarsEdgeError
from stars_edge.manifest import EngineEntry, Manifest
from stars_edge.modalities import Pattern


def benchmark_onnxruntime(
    manifest: Manifest,
    plan: BenchmarkPlan,
    matmul_gflops: float | None,
    flops_cache: FlopCache,
    echo: Echo = print,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    device: str = "cpu",
    skipped: list[str] | None = None,
    backend_name: str = "onnxruntime",
) -> list[dict[str, Any]]:
    """Time every ONNX Runtime engine of the manifest through the runtime's own backend class.

    An engine that cannot load or run is recorded in ``skipped`` with the reason and the others go on.
    ``backend_name`` labels the rows (``onnxruntime-tensorrt`` for the TensorRT provider, so its rows are not
    mistaken for the CUDA provider's).
    """
    from tqdm import tqdm

    from runtime.backends import OnnxRuntimeBackend

    entries = selected_entries(manifest, plan, "onnxruntime")
    rows: list[dict[str, Any]] = []
    progress = tqdm(total=len(entries) * len(plan.batches), desc=f"{backend_name} {device}", unit="config")
    for entry in entries:
        try:
            backend = OnnxRuntimeBackend(
                manifest.engine_path(entry), threads=plan.threads, providers=providers
            )
        except StarsEdgeError as exc:
            _skip(skipped, f"{entry.describe()} ({device}): {exc}", echo)
            progress.update(len(plan.batches))
            continue
        if providers[0] not in backend.providers:  # ONNX Runtime falls back silently when a provider fails
            _skip(
                skipped,
                f"{entry.describe()} ({backend_name} {device}): onnxruntime did not enable {providers[0]} "
                f"(active: {', '.join(backend.providers)})",
                echo,
            )
            backend.close()
            progress.update(len(plan.batches))
            continue
        try:
            rows += _engine_rows(
                backend,
                manifest,
                entry,
                plan,
                flops_cache,
                backend_name=backend_name,
                device=device,
                tile=plan.tile,
                threads=plan.threads,
                matmul_gflops=matmul_gflops if device == "cpu" else None,
                echo=echo,
                skipped=skipped,
                on_batch=lambda: progress.update(1),
            )
        finally:
            backend.close()
    progress.close()
    return rows


def _engine_rows(
    backend: Any,
    manifest: Manifest,
    entry: EngineEntry,
    plan: BenchmarkPlan,
    flops_cache: FlopCache,
    *,
    backend_name: str,
    device: str,
    tile: int,
    threads: int | None,
    matmul_gflops: float | None,
    echo: Echo,
    skipped: list[str] | None,
    on_batch: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Time one loaded engine at every batch size of the plan; a failing batch is skipped with its reason."""
    flops = flops_for(manifest, entry, tile, flops_cache)
    rows: list[dict[str, Any]] = []
    for batch in plan.batches:
        inputs = make_inputs(manifest, entry.pattern, batch, tile, plan.seed)
        if on_batch is not None:
            on_batch()
        try:
            stats = _time_backend(backend, inputs, plan.timing)
        except StarsEdgeError as exc:
            _skip(skipped, f"{entry.describe()} ({device}) batch {batch}: {exc}", echo)
            continue
        rows.append(
            make_row(
                pattern=entry.pattern,
                precision=entry.precision,
                backend=backend_name,
                device=device,
                tile=tile,
                batch=batch,
                threads=threads,
                stats=stats,
                flops_per_tile=flops,
                matmul_gflops=matmul_gflops,
                engine=entry.path,
                gate=entry.gate,
            )
        )
    return rows


def benchmark_pytorch(
    module_for: Callable[[Pattern], Any],
    manifest: Manifest,
    patterns: Sequence[Pattern],
    plan: BenchmarkPlan,
    matmul_gflops: float | None,
    flops_cache: FlopCache,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Time ``module_for(pattern)`` (a torch module taking the pattern's inputs positionally) in eager mode.

    Same inputs, tile, batches and thread count as the engines; ``torch.inference_mode``. On CUDA the
    timing is closed by a device synchronisation so kernels are timed to completion.
    """
    import torch
    from tqdm import tqdm

    torch.set_num_threads(plan.threads)
    rows: list[dict[str, Any]] = []
    progress = tqdm(total=len(patterns) * len(plan.batches), desc=f"pytorch {device}", unit="config")
    synchronize = torch.cuda.synchronize if device == "cuda" else None
    for pattern in patterns:
        module = module_for(pattern).eval().to(device)
        fp32 = manifest.find(pattern, "fp32")
        flops = flops_for(manifest, fp32[0], plan.tile, flops_cache) if fp32 else None
        for batch in plan.batches:
            arrays = make_inputs(manifest, pattern, batch, plan.tile, plan.seed)
            tensors = [torch.from_numpy(arrays[name]).to(device) for name in pattern]

            def forward(tensors: list[Any] = tensors, module: Any = module) -> None:
                with torch.inference_mode():
                    module(*tensors)

            stats = time_callable(forward, synchronize=synchronize, **timing_kwargs(plan.timing))
            rows.append(
                make_row(
                    pattern=pattern,
                    precision="fp32",
                    backend="pytorch",
                    device=device,
                    tile=plan.tile,
                    batch=batch,
                    threads=plan.threads,
                    stats=stats,
                    flops_per_tile=flops,
                    matmul_gflops=matmul_gflops if device == "cpu" else None,
                    engine=f"eager:{plan.checkpoint.name if plan.checkpoint else 'module'}",
                )
            )
            progress.update(1)
    progress.close()
    return rows


def _skip(skipped: list[str] | None, reason: str, echo: Echo) -> None:
    echo(f"skipped {reason}")
    if skipped is not None:
        skipped.append(reason)


def _time_backend(backend: Any, inputs: Mapping[str, np.ndarray], timing: TimingPlan) -> TimingStats:
    """Time ``backend.run(inputs)`` under ``timing`` (runtime backends return when results are ready)."""
    return time_callable(lambda: backend.run(inputs), **timing_kwargs(timing))
