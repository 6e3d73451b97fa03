"""The CLI edge: help texts, version, and domain errors as one line with exit code 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = ["demo", "build-engines", "run", "eval", "data"]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stars_edge", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_top_level_help_lists_every_command() -> None:
    result = _cli("--help")
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_its_options(command: str) -> None:
    result = _cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_demo_help_documents_every_option() -> None:
    text = _cli("demo", "--help").stdout
    for option in ["--out", "--seed", "--quick", "--steps", "--threads"]:
        assert option in text


def test_version() -> None:
    result = _cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("stars-edge ")


def test_out_pointing_at_a_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    clash = tmp_path / "not_a_dir"
    clash.write_text("x")
    result = _cli("demo", "--out", str(clash), "--quick")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(clash) in lines[0]


def test_usage_error_exits_2_without_traceback() -> None:
    result = _cli("demo", "--steps", "zero")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
