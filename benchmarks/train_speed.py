"""Training speed on this CPU: steps/s of the accuracy study's recipe under each speed option.

Measures, each in a fresh process: fp32 (the bit-stable default), channels-last, bf16 autocast, both, with
one thread; fp32 with two threads; and two one-thread fp32 runs side by side (how the study runs with
``--jobs 2``), whose steps/s add up. A measurement times ``train()`` itself: after a warm-up run,
(time of a 1+N-step run - time of a 1-step run) / N, so setup, data and checkpoint writing cancel out. The
CPU flags that decide bf16 (``avx512_bf16``, ``amx_bf16``) are recorded with the results.

    python benchmarks/train_speed.py                       # edge, batch 8, 128 px tiles, 20 timed steps
    python benchmarks/train_speed.py --quick               # smoke test (tiny variant, 2 steps)

Run it on a quiet machine: every other process competes for the same cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
SCHEMA = "stars-edge/train-speed/v1"
#: Mode name -> TrainConfig speed fields.
MODES: dict[str, dict[str, Any]] = {
    "fp32": {"channels_last": False, "autocast": "none"},
    "channels_last": {"channels_last": True, "autocast": "none"},
    "bf16": {"channels_last": False, "autocast": "bf16"},
    "channels_last+bf16": {"channels_last": True, "autocast": "bf16"},
}


@dataclasses.dataclass
class SpeedSettings:
    """The recipe timed (the accuracy study's defaults) and how many steps are timed."""

    variant: str = "edge"
    method: str = "stars"
    batch_size: int = 8
    tile_size: int = 128
    scene_size: int = 256
    scenes: int = 2
    steps: int = 20
    warmup: int = 3


def measure(settings: SpeedSettings, mode: str, threads: int, work: Path) -> dict[str, Any]:
    """Seconds per step of ``train()`` under ``mode`` (run inside a worker process)."""
    import torch

    from training.config import TrainConfig
    from training.data import build_training_data
    from training.loop import train

    torch.set_num_threads(threads)
    base = dict(
        variant=settings.variant,
        method=settings.method,
        batch_size=settings.batch_size,
        tile_size=settings.tile_size,
        synthetic_size=settings.scene_size,
        synthetic_train_scenes=settings.scenes,
        synthetic_val_scenes=0,
        threads=threads,
        device="cpu",
        diagnostics=False,
        val_every=10**9,
        checkpoint_every=10**9,
        log_every=10**9,
        output_dir=work,
        **MODES[mode],
    )
    data = dataclasses.replace(build_training_data(TrainConfig(**base)), val=None)

    def timed(steps: int) -> tuple[float, dict[str, float]]:
        start = time.perf_counter()
        result = train(TrainConfig(**{**base, "steps": steps}), progress=False, data=data)
        return time.perf_counter() - start, result.last_losses

    timed(settings.warmup)
    short, _ = timed(1)
    long, losses = timed(1 + settings.steps)
    per_step = (long - short) / settings.steps if long > short else None  # None: noise exceeded N steps
    return {
        "mode": mode,
        "threads": threads,
        "seconds_per_step": None if per_step is None else round(per_step, 4),
        "steps_per_s": None if per_step is None else round(1.0 / per_step, 3),
        "final_total_loss": losses.get("total"),
    }


def _launch(settings: SpeedSettings, mode: str, threads: int, work: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [
        sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--threads", str(threads),
        "--settings", json.dumps(dataclasses.asdict(settings)), "--work-dir", str(work),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _collect(process: subprocess.Popen[str]) -> dict[str, Any]:
    from benchmarks.common import BenchmarkError

    out, err = process.communicate()
    if process.returncode != 0:
        raise BenchmarkError(f"train_speed worker failed (exit {process.returncode}): {err.strip()[-400:]}")
    return dict(json.loads(out.strip().splitlines()[-1]))


def run_all(settings: SpeedSettings, modes: Sequence[str], work: Path) -> list[dict[str, Any]]:
    """Each mode alone on one thread, fp32 on two threads, then two one-thread fp32 runs side by side."""
    rows = []
    for mode in modes:
        row = _collect(_launch(settings, mode, 1, work / f"{mode}-1"))
        rows.append({**row, "layout": "alone"})
        print(f"  {mode:<20} 1 thread   {_cell(row['steps_per_s'])} steps/s", flush=True)
    row = _collect(_launch(settings, "fp32", 2, work / "fp32-2"))
    rows.append({**row, "layout": "alone"})
    print(f"  {'fp32':<20} 2 threads  {_cell(row['steps_per_s'])} steps/s", flush=True)
    pair = [_launch(settings, "fp32", 1, work / f"fp32-pair{i}") for i in range(2)]
    both = [_collect(p) for p in pair]
    for i, row in enumerate(both):
        rows.append({**row, "layout": f"side by side ({i + 1} of 2)"})
    total = sum(r["steps_per_s"] or 0.0 for r in both)
    print(f"  2 x fp32 side by side  {total:7.3f} steps/s together", flush=True)
    return rows


def _cell(value: float | None, width: int = 7) -> str:
    return "n/a".rjust(width) if value is None else f"{value:{width}.3f}"


def render(payload: dict[str, Any]) -> str:
    """Markdown table of the measurements, with speed-ups against one-thread fp32."""
    rows = payload["rows"]
    base = next((r["steps_per_s"] for r in rows if r["mode"] == "fp32" and r["threads"] == 1), None)
    s = payload["settings"]
    flags = payload["machine"].get("cpu_flags", [])
    lines = [
        "# Training speed (steps/s)",
        "",
        f"`python benchmarks/train_speed.py`: variant `{s['variant']}`, method `{s['method']}`, batch "
        f"{s['batch_size']}, {s['tile_size']} px tiles, {s['steps']} timed steps; CPU "
        f"{payload['machine'].get('cpu_model')}, flags {', '.join(flags)}; load average at start "
        f"{payload['machine'].get('load_average_1m')}; written {payload['written']}.",
        "",
        "| mode | threads | layout | s / step | steps/s | x fp32 1 thread |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = f"{r['steps_per_s'] / base:.2f}" if base and r["steps_per_s"] else "n/a"
        lines.append(
            f"| {r['mode']} | {r['threads']} | {r['layout']} | {_cell(r['seconds_per_step'], 0)} | "
            f"{_cell(r['steps_per_s'], 0)} | {ratio} |"
        )
    pair = [r["steps_per_s"] or 0.0 for r in rows if r["layout"].startswith("side by side")]
    if pair and base:
        lines += [
            "",
            f"Two one-thread runs side by side: {sum(pair):.3f} steps/s together ({sum(pair) / base:.2f}x).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", default=SpeedSettings.variant)
    parser.add_argument("--method", default=SpeedSettings.method)
    parser.add_argument("--batch-size", type=int, default=SpeedSettings.batch_size)
    parser.add_argument("--tile-size", type=int, default=SpeedSettings.tile_size)
    parser.add_argument("--steps", type=int, default=SpeedSettings.steps, help="timed steps per measurement")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    parser.add_argument("--quick", action="store_true", help="tiny variant, 4 steps (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for train_speed.{json,md}")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/stars_edge_train_speed"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        settings = SpeedSettings(**json.loads(args.settings))
        print(json.dumps(measure(settings, args.worker, args.threads, args.work_dir)))
        return 0

    from benchmarks.common import BenchmarkError, machine_info
    from stars_edge.io import write_json_atomic, write_text_atomic

    settings = SpeedSettings(args.variant, args.method, args.batch_size, args.tile_size, steps=args.steps)
    if args.quick:
        settings = dataclasses.replace(
            settings, variant="tiny", tile_size=64, scene_size=128, steps=4, warmup=1
        )
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; valid: {', '.join(MODES)}")
    machine = machine_info(1)
    try:
        rows = run_all(settings, modes, args.work_dir)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    payload = {
        "schema": SCHEMA,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(
            ["python benchmarks/train_speed.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "quick": args.quick,
        "settings": dataclasses.asdict(settings),
        "machine": machine,
        "rows": rows,
    }
    name = "train_speed_quick" if args.quick else "train_speed"
    for path in (
        write_json_atomic(args.out / f"{name}.json", payload),
        write_text_atomic(args.out / f"{name}.md", render(payload)),
    ):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
