"""studies/int8_calibration.py: one row per pattern x method, the lowest calibration-tile error marked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from int8_models import save_untrained_checkpoint  # noqa: E402

from export.build import build_engines  # noqa: E402
from studies import int8_calibration  # noqa: E402


def test_compares_methods_on_an_fp32_build(tmp_path: Path) -> None:
    checkpoint = save_untrained_checkpoint(tmp_path / "tiny.pt")
    engines = tmp_path / "engines"
    build_engines(checkpoint=checkpoint, out=engines, patterns="sar", precisions=("fp32",), progress=False)
    out = tmp_path / "result"
    argv = ["--engines", str(engines), "--patterns", "sar", "--calib-tiles", "4", "--gate-tiles", "2"]
    assert int8_calibration.main([*argv, "--tile", "64", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    rows = result["rows"]
    assert [(r["pattern"], r["method"]) for r in rows] == [("sar", "minmax"), ("sar", "percentile")]
    assert all(r["calib_logit_error"] > 0 and 0 < r["gate_agreement"] <= 100 for r in rows)
    best = min(rows, key=lambda r: r["calib_logit_error"])
    table = out.with_suffix(".md").read_text()
    assert f"**{best['calib_logit_error']:.4f}**" in table
    assert f"{best['method']} 1" in table and result["machine"]["cpu_flags"] is not None
