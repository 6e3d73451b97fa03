"""The steps of ``benchmarks/gpu_check.py`` after the inventory, in order (``STEPS``): requirements,
checkpoint, build-engines, pytest, int8-gate, latency. Each returns its details for the results file or
raises ``StepFailed`` with what to fix."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from benchmarks.gpu_check_base import LATENCY_ROWS, TILE, TRAIN_STEPS, Check, StepFailed, run_command


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
