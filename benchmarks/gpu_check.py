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

The script is the run loop and the results files; the parts live beside it: ``gpu_check_base.py`` (sizes,
timeouts, ``Check``/``Step``/``StepFailed``, ``run_command``), ``gpu_check_inventory.py`` (the inventory) and
``gpu_check_steps.py`` (the steps after it).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/gpu_check.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_check_base import (
    LATENCY_ROWS,
    PROJECT_ROOT,
    TILE,
    TIMEOUTS,
    TRAIN_STEPS,
    Check,
    Step,
    StepFailed,
    run_command,
)
from benchmarks.gpu_check_inventory import inventory, inventory_lines, nvidia_smi
from benchmarks.gpu_check_steps import (
    STEPS,
    step_build_engines,
    step_checkpoint,
    step_int8_gate,
    step_latency,
    step_pytest,
    step_requirements,
)

__all__ = [
    "DEFAULT_OUT",
    "DEFAULT_WORK",
    "LATENCY_ROWS",
    "PROJECT_ROOT",
    "STEPS",
    "TILE",
    "TIMEOUTS",
    "TRAIN_STEPS",
    "Check",
    "Step",
    "StepFailed",
    "inventory",
    "inventory_lines",
    "main",
    "nvidia_smi",
    "run",
    "run_command",
    "step_build_engines",
    "step_checkpoint",
    "step_int8_gate",
    "step_latency",
    "step_pytest",
    "step_requirements",
    "write_results",
]

DEFAULT_OUT = PROJECT_ROOT / "benchmarks" / "results" / "gpu_check"
DEFAULT_WORK = PROJECT_ROOT / "gpu_check_work"


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
