"""``benchmarks/report.py`` on the training-speed, ``run-batch`` and runtime-memory results.

The payloads below have the exact shape ``benchmarks/train_speed.py``, ``benchmarks/batch.py`` and
``benchmarks/runtime_memory.py`` write (copied from files they wrote, with round numbers), so a change in
either the writers or the report that breaks the other shows up here. The files get names that say nothing
about their kind: the report must tell them apart by their keys.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks import report  # noqa: E402

MACHINE: dict[str, Any] = {
    "hostname": "vm",
    "os": "Linux 6.0",
    "python": "3.11.7",
    "cpu_model": "Test EPYC",
    "cpu_flags": ["avx2", "fma", "avx512f", "avx512_bf16"],
    "logical_cores": 2,
    "physical_cores": 2,
    "usable_cores": 2,
    "memory_gib": 23.5,
    "threads": 1,
    "load_average_1m": 1.24,
    "versions": {"numpy": "2.4.6", "torch": "2.13.0+cpu", "tensorrt": None},
}


def _speed_row(mode: str, threads: int, per_step: float | None, layout: str = "alone") -> dict[str, Any]:
    return {
        "mode": mode,
        "threads": threads,
        "seconds_per_step": per_step,
        "steps_per_s": None if per_step is None else round(1.0 / per_step, 3),
        "final_total_loss": 16.25,
        "layout": layout,
    }


def train_speed_result(quick: bool = False) -> dict[str, Any]:
    """What ``benchmarks/train_speed.py`` writes (schema ``stars-edge/train-speed/v1``)."""
    return {
        "schema": "stars-edge/train-speed/v1",
        "written": "2026-11-30T12:04:43Z",
        "command": "python benchmarks/train_speed.py --steps 30",
        "quick": quick,
        "settings": {
            "variant": "edge",
            "method": "stars",
            "batch_size": 8,
            "tile_size": 128,
            "scene_size": 256,
            "scenes": 2,
            "steps": 30,
            "warmup": 3,
        },
        "machine": MACHINE,
        "rows": [
            _speed_row("fp32", 1, 0.5),
            _speed_row("channels_last", 1, 0.625),
            _speed_row("bf16", 1, 0.4),
            _speed_row("channels_last+bf16", 1, None),  # the writer's None: noise exceeded the timed steps
            _speed_row("fp32", 2, 0.3333),
            _speed_row("fp32", 1, 0.5263, "side by side (1 of 2)"),
            _speed_row("fp32", 1, 0.5263, "side by side (2 of 2)"),
        ],
    }


def _batch_row(mode: str, workers: int, wall: float, cli: float, inproc: float, same: Any) -> dict[str, Any]:
    return {
        "mode": mode,
        "workers": workers,
        "wall_s_median": wall,
        "wall_s": [wall + 1.0, wall, wall - 0.5],
        "scenes_per_minute": round(60.0 * 8 / wall, 2),
        "mpx_per_s": round(33.554432 / wall, 3),
        "overhead_vs_sequential_cli": cli,
        "overhead_vs_sequential_inprocess": inproc,
        "class_maps_identical_to_sequential": same,
    }


def batch_result(quick: bool = False) -> dict[str, Any]:
    """What ``benchmarks/batch.py`` writes (schema ``stars-edge/batch/1``)."""
    subsets = ("optical+sar+dsm", "optical+sar", "sar", "optical+dsm", "sar+dsm", "optical", "dsm")
    return {
        "schema": "stars-edge/batch/1",
        "created": "2026-11-30T12:02:06+00:00",
        "command": "benchmarks/batch.py --engines demo_out/engines --scenes 8 --size 2048 --workers 1,2",
        "quick": quick,
        "engines": "demo_out/engines",
        "scenes": [{"id": f"s{i:02d}", "modalities": subsets[i % len(subsets)]} for i in range(8)],
        "scene_size": 2048,
        "pixels": 33554432,
        "tile": 512,
        "overlap": 64,
        "precision": "fp32",
        "backend": "onnxruntime",
        "repeats": 3,
        "machine": {**MACHINE, "threads": 0, "load_average_1m": 2.43},
        "rows": [
            _batch_row("sequential_cli", 1, 20.0, 0.0, 1.0, None),
            _batch_row("sequential_inprocess", 1, 10.0, -0.5, 0.0, None),
            _batch_row("batch_w1", 1, 16.0, -0.2, 0.6, False),
            _batch_row("batch_w2", 2, 12.0, -0.4, 0.2, True),
        ],
    }


def memory_result() -> dict[str, Any]:
    """What ``benchmarks/runtime_memory.py`` writes (no schema; ``benchmark`` names it)."""
    return {
        "benchmark": "runtime peak RSS vs scene size",
        "cpu_flags": "fma avx f16c avx2 avx512f avx512_vnni",
        "cores": 2,
        "gdal_cachemax_mb": 16,
        "parent_peak_rss_mib": 890.44140625,
        "wall_seconds": 164.1,
        "results": [
            {
                "height": 1024,
                "width": 2048,
                "peak_rss_mib": 360.0,
                "seconds": 1.84,
                "chunks": 1,
                "engine_runs": {"optical+sar": 15},
            },
            {
                "height": 1024,
                "width": 32768,
                "peak_rss_mib": 414.0,
                "seconds": 23.93,
                "chunks": 8,
                "engine_runs": {"optical+sar": 240},
            },
        ],
        "ratios": {"width 32768 / 2048": 1.15},
    }


def _write(folder: Path, name: str, payload: Any) -> Path:
    path = folder / name
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def _sections(text: str) -> dict[str, str]:
    """Report text split at its ``## `` headings: heading line -> the lines up to the next heading."""
    parts: dict[str, str] = {}
    for chunk in text.split("\n## ")[1:]:
        heading, _, body = chunk.partition("\n")
        parts[heading] = body
    return parts


@pytest.fixture
def rendered(tmp_path: Path) -> str:
    """The report of one file of each new kind, a quick batch run and a JSON file of no known kind."""
    results = tmp_path / "results"
    results.mkdir()
    paths = [
        _write(results, "a.json", train_speed_result()),
        _write(results, "b.json", batch_result(quick=True)),
        _write(results, "c.json", memory_result()),
        _write(results, "notes.json", {"hello": 1}),
    ]
    out = tmp_path / "REPORT.md"
    assert report.main([*map(str, paths), "--out", str(out), "--plots", str(results)]) == 0
    return out.read_text()


def test_new_kinds_are_classified_by_their_keys_not_their_names(tmp_path: Path) -> None:
    paths = [
        _write(tmp_path, "x1.json", train_speed_result()),
        _write(tmp_path, "x2.json", batch_result()),
        _write(tmp_path, "x3.json", memory_result()),
        _write(tmp_path, "train_speed.json", {"schema": "something/else", "rows": []}),
    ]
    found = report.collect(paths)
    assert [p.name for p, _ in found.train_speed] == ["x1.json"]
    assert [p.name for p, _ in found.batch] == ["x2.json"]
    assert [p.name for p, _ in found.memory] == ["x3.json"]
    assert not found.latency and not found.accuracy and not found.placement
    assert found.skipped == ["train_speed.json: not a known benchmark result"]


def test_unversioned_files_are_recognised_by_their_rows(tmp_path: Path) -> None:
    speed, batch, memory = train_speed_result(), batch_result(), memory_result()
    del speed["schema"], batch["schema"]
    memory["benchmark"] = "renamed"
    found = report.collect([_write(tmp_path, f"{i}.json", d) for i, d in enumerate((speed, batch, memory))])
    assert (len(found.train_speed), len(found.batch), len(found.memory)) == (1, 1, 1)


def test_train_speed_section_shows_rows_ratios_machine_and_command(rendered: str) -> None:
    section = _sections(rendered)["Training speed: `a.json` (2026-11-30T12:04:43Z)"]
    assert "- Command: `python benchmarks/train_speed.py --steps 30`." in section
    assert "variant `edge`, method `stars`, batch 8, 128 px tiles" in section
    assert "30 timed steps after 3 warm-up steps" in section
    assert "CPU flags avx2, fma, avx512f, avx512_bf16; 1-minute load average 1.24 at the start" in section
    assert "bf16 in hardware: yes (avx512_bf16)" in section
    assert "torch 2.13.0+cpu" in section and "tensorrt" not in section
    assert "| fp32 | 1 | alone | 0.5000 | 2.000 | 1.00x | 16.250 |" in section
    assert "| bf16 | 1 | alone | 0.4000 | 2.500 | 1.25x | 16.250 |" in section
    assert "| channels_last+bf16 | 1 | alone | n/a | n/a | n/a | 16.250 |" in section
    assert "| fp32 | 2 | alone | 0.3333 | 3.000 | 1.50x | 16.250 |" in section
    assert "side by side: 3.800 steps/s together (1.90x" in section
    assert "Quick smoke run" not in section


def test_batch_section_shows_overheads_and_flags_a_quick_run(rendered: str) -> None:
    section = _sections(rendered)[
        "Batch throughput (`run-batch`): `b.json` (2026-11-30T12:02:06+00:00, quick smoke run)"
    ]
    assert "**Quick smoke run**" in section and "not measurements" in section
    assert "- Command: `benchmarks/batch.py --engines demo_out/engines --scenes 8" in section
    assert "8 synthetic scenes of 2048x2048 px (33.55 Mpx in all" in section
    assert (
        "tile 512, overlap 64, fp32 on onnxruntime" in section and "median wall time of 3 rounds" in section
    )
    assert "1-minute load average 2.43 when the result was written" in section
    assert (
        "| sequential_cli | 1 | 20.00 | 21.00, 20.00, 19.50 | 24.0 | 1.68 | +0.0 % | +100.0 % |  |" in section
    )
    assert (
        "| batch_w1 | 1 | 16.00 | 17.00, 16.00, 15.50 | 30.0 | 2.10 | -20.0 % | +60.0 % | **no** |" in section
    )
    assert "| batch_w2 | 2 | 12.00 | 13.00, 12.00, 11.50 | 40.0 | 2.80 | -40.0 % | +20.0 % | yes |" in section


def test_memory_section_shows_peak_rss_ratios_and_settings(rendered: str) -> None:
    section = _sections(rendered)["Runtime peak memory: `c.json` (runtime peak RSS vs scene size)"]
    assert "`python benchmarks/runtime_memory.py --sizes 1024x2048,1024x32768 --gdal-cachemax 16`" in section
    assert "2 cores; CPU flags fma avx f16c avx2 avx512f avx512_vnni" in section
    assert "load average at the start not recorded" in section and "GDAL_CACHEMAX: 16 MB" in section
    assert "| 1024 x 2048 | 2.1 | 360.0 | 1.84 | 1 | optical+sar: 15 |" in section
    assert "| 1024 x 32768 | 33.6 | 414.0 | 23.93 | 8 | optical+sar: 240 |" in section
    assert "Peak RSS, larger scene / smaller: width 32768 / 2048: 1.150." in section
    assert "Quick smoke run" not in section


def test_new_kinds_are_no_longer_listed_as_not_rendered(rendered: str) -> None:
    not_rendered = [line for line in rendered.splitlines() if line.startswith("Files not rendered")]
    assert not_rendered == ["Files not rendered: notes.json: not a known benchmark result."]
    assert "## Accuracy vs speed" in rendered  # the existing sections still render around the new ones


def test_newer_batch_and_memory_results_say_when_the_load_was_sampled(tmp_path: Path) -> None:
    """batch/2 samples the load before its work (and again at the end); memory flags are a list now."""
    from benchmarks.report_training_runtime import batch_section, memory_section

    batch = {**batch_result(), "schema": "stars-edge/batch/2", "load_average_1m_end": 3.5}
    batch["machine"] = {**batch["machine"], "load_average_1m": 0.25}
    text = "\n".join(batch_section(tmp_path / "b.json", batch))
    assert "load average 0.25 at the start, before the scenes were written (3.5 at the end" in text
    memory = {**memory_result(), "cpu_flags": ["avx2", "fma"], "load_average_1m": 0.5}
    text = "\n".join(memory_section(tmp_path / "c.json", memory))
    assert "CPU flags avx2, fma; 1-minute load average at the start 0.5" in text


#: Study results that ``benchmarks/report.py`` renders with ``benchmarks/report_studies.py``, as checked in.
STUDY_RESULTS = PROJECT_ROOT / "benchmarks" / "results"


@pytest.mark.parametrize(
    ("name", "kind", "heading"),
    [
        ("input_contract", "input_contract", "Input contract: catch rate and false refusals"),
        ("int8_calibration", "int8_calibration", "INT8 calibration methods"),
        ("quantizers", "quantizers", "INT8 quantizers through the accuracy gate"),
    ],
)
def test_study_results_render_as_the_study_renders_them(
    tmp_path: Path, name: str, kind: str, heading: str
) -> None:
    """The three study kinds the report once listed as unknown: classified by their keys, and rendered with
    the same lines as the study's own Markdown (written by the study from the same renderer)."""
    copy = _write(tmp_path, "renamed.json", json.loads((STUDY_RESULTS / f"{name}.json").read_text()))
    found = report.collect([copy])
    assert [p.name for p, _ in getattr(found, kind)] == ["renamed.json"] and not found.skipped
    out = tmp_path / "REPORT.md"
    assert report.main([str(copy), "--out", str(out), "--plots", str(tmp_path)]) == 0
    section = _sections(out.read_text())[f"{heading}: `renamed.json`"]
    assert f"Written by `python studies/{name}.py` (studies/README.md)." in section
    study_md = (STUDY_RESULTS / f"{name}.md").read_text().split("\n", 2)[2]  # below the study's title
    assert study_md.replace("\n## ", "\n### ").strip() in section


def test_the_low_label_study_is_rendered_not_skipped(tmp_path: Path) -> None:
    """``accuracy_low_label.json`` (``benchmarks/accuracy.py``): known by its schema, its tables shown."""
    entry = {
        "line": "zero_fill_dropout", "label": "zero_fill_dropout", "labelled_scenes": 1,
        "mean_missing": 41.5, "mean_missing_std": 0.5, "mean_missing_seeds": [0, 1],
        "full": 60.0, "full_std": None, "full_seeds": [0],
    }  # fmt: skip
    data = {
        "schema": "stars-edge/accuracy-low-label/v1",
        "settings": {"train_scenes": 16},
        "rows": [],
        "summary": [entry],
    }
    path = _write(tmp_path, "accuracy_low_label.json", data)
    found = report.collect([path])
    assert [p.name for p, _ in found.low_label] == ["accuracy_low_label.json"] and not found.skipped
    out = tmp_path / "REPORT.md"
    assert report.main([str(path), "--out", str(out), "--plots", str(tmp_path)]) == 0
    assert "| zero_fill_dropout | 41.50 ± 0.50 (n=2) |" in out.read_text()


def _hole_run(
    clean: dict[str, float], cloudy: float, selection: Any, fixed: Any, best: Any
) -> dict[str, Any]:
    """One run of ``studies/hole_training.py``: clean-test mIoU per pattern, cloudy scenes, the edge study."""
    return {
        "options": {},
        "clean": clean,
        "clean_mean": sum(clean.values()) / len(clean),
        "cloudy_pytorch": {
            "hole_fraction": 0.25,
            "composite/all": cloudy,
            "composite/holes": cloudy - 10.0,
            "composite/clear": cloudy + 5.0,
            "full_pattern_zero_filled/all": cloudy - 8.0,
            "full_pattern_zero_filled/holes": cloudy - 30.0,
            "full_pattern_zero_filled/clear": cloudy + 5.0,
        },
        "cloudy_runtime": {
            "engines": "/tmp/hole_training/x/engines",
            "method": "stars",
            "checkpoint_sha256": "0" * 64,
            "held_out": {"scenes": 8, "size": 512, "seed_base": 9600000},
            "measured_margin": [60, 60.5],
            "best_fixed_margin": fixed,
            "selection": selection,
            "best_in_hindsight": best,
            "selection_minus_best_fixed": round(selection[1] - fixed[1], 3),
            "validation_scores": [{"context_margin": 0, "optical_dilation": 0, "miou": 70.0}],
            "held_out_scores": [{"context_margin": 0, "optical_dilation": 0, "miou": 70.0}],
        },
    }


def hole_training_result() -> dict[str, Any]:
    """What ``studies/hole_training.py`` writes, two patterns, round numbers."""
    holes = _hole_run(
        {"optical+sar": 74.5, "sar": 61.25}, 72.0, [[0, 0], 74.25], [[0, 0], 74.25], [[0, 0], 74.25]
    )
    holes["options"] = {"synthetic_train_cloud_cover": 0.15, "synthetic_train_sar_gap": 0.2}
    return {
        "commit": "abc1234",
        "settings": {"out": "x.json", "steps": "800", "train_scenes": "8", "scenes": "4", "seed": "0"},
        "clean": _hole_run(
            {"optical+sar": 75.0, "sar": 61.0}, 67.5, [[8, 16], 72.375], [[16, 0], 72.25], [[0, 16], 72.75]
        ),
        "holes": holes,
    }


def test_the_int8_default_tile_result_is_rendered_not_skipped(tmp_path: Path) -> None:
    """``benchmarks/int8_default_tile.py``'s JSON: known by its keys, its medians and speed-ups shown."""
    data = {
        "command": "benchmarks/int8_default_tile.py --engines E",
        "engines": "E",
        "settings": {"tile": 256, "batches": [1, 4], "rounds": 12, "calls": 15},
        "machine": {**MACHINE, "load_start": 0.38, "load_end": 0.48},
        "ms_per_tile": {"openvino int8 batch 1": 3.057, "onnxruntime fp32 batch 1": 4.339},
        "int8_speedup_over_ort_fp32": {"batch 1": 1.419, "best of each": 1.419},
    }
    path = _write(tmp_path, "timing.json", data)
    found = report.collect([path])
    assert [p.name for p, _ in found.int8_default_tile] == ["timing.json"] and not found.skipped
    out = tmp_path / "REPORT.md"
    assert report.main([str(path), "--out", str(out), "--plots", str(tmp_path)]) == 0
    text = out.read_text()
    assert "| openvino int8 batch 1 | 3.057 |" in text and "best of each 1.42x" in text


def test_the_arrays_profile_is_rendered_not_skipped(tmp_path: Path) -> None:
    """``benchmarks/arrays_profile.py``'s JSON: known by its keys, its stages shown with their shares."""
    data = {
        "command": "benchmarks/arrays_profile.py --engines E",
        "scene": "s2like",
        "size": 4096,
        "backend": "openvino",
        "precision": "int8",
        "stage_seconds": {"engine calls": 1.5, "cutting tiles": 0.5},
        "serial_profiled_seconds": 2.1,
        "threaded_seconds": 2.0,
        "same_class_map": True,
        "machine": {**MACHINE, "load_start": 0.39},
    }
    path = _write(tmp_path, "where.json", data)
    found = report.collect([path])
    assert [p.name for p, _ in found.arrays_profile] == ["where.json"] and not found.skipped
    out = tmp_path / "REPORT.md"
    assert report.main([str(path), "--out", str(out), "--plots", str(tmp_path)]) == 0
    assert "| engine calls | 1.500 | 75.0 % |" in out.read_text()


def test_the_hole_training_pilot_is_rendered_run_against_run(tmp_path: Path) -> None:
    """``studies/hole_training.py``'s record: known by its keys; per pattern, cloudy, runtime, run by run."""
    path = _write(tmp_path, "renamed.json", hole_training_result())
    found = report.collect([path])
    assert [p.name for p, _ in found.hole_training] == ["renamed.json"] and not found.skipped
    out = tmp_path / "REPORT.md"
    assert report.main([str(path), "--out", str(out), "--plots", str(tmp_path)]) == 0
    section = _sections(out.read_text())["Training on scenes with holes (pilot): `renamed.json`"]
    assert "Written by `python studies/hole_training.py` (studies/README.md)." in section
    assert "**Pilot: one seed** (seed 0), 800 steps, 8 training scenes" in section
    assert "commit abc1234" in section and "`synthetic_train_cloud_cover` 0.15" in section
    assert "| `optical+sar` | 75.00 | 74.50 | -0.50 |" in section
    assert "| `sar` | 61.00 | 61.25 | +0.25 |" in section
    assert "| mean | 68.00 | 67.88 | -0.12 |" in section
    assert "(25.0% of the pixels)" in section
    assert "| composite | all | 67.50 | 72.00 | +4.50 |" in section
    assert "| composite | holes | 57.50 | 62.00 | +4.50 |" in section
    assert "| composite | clear | 72.50 | 77.00 | +4.50 |" in section
    assert "8 held-out cloudy scenes of 512 px" in section
    assert "| clean-trained | 8/16: 72.38 | 16/0: 72.25 | 0/16: 72.75 | 60 px: 60.50 |" in section
    assert "| hole-trained | 0/0: 74.25 | 0/0: 74.25 | 0/0: 74.25 | 60 px: 60.50 |" in section
    assert "Hole-trained selection - clean-trained selection: +1.88 mIoU." in section


def test_every_checked_in_result_is_rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real run over ``benchmarks/results/*.json`` (plots stubbed: slow, and not what is checked) lists no
    file as not rendered; the hole-training pilot, once listed so, has its section."""
    for name in ("plot_latency", "plot_accuracy", "plot_speed_accuracy"):
        monkeypatch.setattr(report, name, lambda *args: None)
    out = report.render_report(sorted(STUDY_RESULTS.glob("*.json")), tmp_path / "REPORT.md", tmp_path)
    text = out.read_text()
    assert not [line for line in text.splitlines() if line.startswith("Files not rendered")]
    assert "## Training on scenes with holes (pilot): `hole_training_pilot.json`" in text
