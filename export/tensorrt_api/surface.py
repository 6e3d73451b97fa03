"""Which ``tensorrt`` and cuda-python runtime names the project uses, and which a release lacks.

A removed TensorRT call (``execute_async_v2``, ``build_engine``, ``EXPLICIT_BATCH``, the INT8 calibrators)
fails only on a GPU machine with that release installed, which this project's machines are not. So every
``.py`` file of the project is parsed and each attribute reached from the ``tensorrt`` module or from
cuda-python's runtime module is collected (``analyzer.py``: what the AST walk follows and what it does not),
then looked up in the names each supported release binds (``names/tensorrt-<version>.txt``) or, for
cuda-python, in the installed package.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from export.tensorrt_api import SUPPORTED_VERSIONS, names_file
from export.tensorrt_api.analyzer import TRACKED_MODULES, Names, Use, collect_source

__all__ = [
    "INSTALLED_MODULE",
    "SKIPPED_DIRS",
    "TRACKED_MODULES",
    "Names",
    "Use",
    "collect_project",
    "collect_source",
    "load_names",
    "missing_installed_names",
    "missing_tensorrt_names",
    "project_files",
    "supported_names",
    "union_index",
]

#: The module each checked name is looked up in when the check uses an installed package.
INSTALLED_MODULE = {"tensorrt": "tensorrt", "cudart": "cuda.bindings.runtime"}
#: Folders of the project that are not its code.
SKIPPED_DIRS = {".venv", "venv", "build", "dist", "demo_out", "node_modules", "__pycache__"}


def load_names(version: str, path: Path | None = None) -> dict[str, tuple[str, str | None]]:
    """``{name: (kind, returned class or None)}`` from one checked-in list."""
    names: dict[str, tuple[str, str | None]] = {}
    for line in (path or names_file(version)).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        head, _, returned = line.partition(" -> ")
        name, kind = head.split()
        names[name] = (kind, returned.strip() or None)
    return names


def supported_names() -> dict[str, dict[str, tuple[str, str | None]]]:
    """Every supported release's list, keyed by version."""
    return {version: load_names(version) for version in SUPPORTED_VERSIONS}


def union_index(names: Mapping[str, Names]) -> dict[str, tuple[str, str | None]]:
    """One name -> (kind, returned class) map over several releases (the newest release's entry wins)."""
    index: dict[str, tuple[str, str | None]] = {}
    for version in sorted(names, key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit())):
        index.update(names[version])
    return index


def project_files(root: Path) -> list[Path]:
    """The project's Python files: everything under ``root`` except virtualenvs, builds and hidden folders."""
    files = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts[:-1]
        if any(part in SKIPPED_DIRS or part.startswith(".") for part in parts):
            continue
        files.append(path)
    return files


def collect_project(root: Path, index: Names) -> list[Use]:
    """Every checked-module attribute used in the project's Python files."""
    uses: list[Use] = []
    for path in project_files(root):
        uses += collect_source(path.read_text(), str(path.relative_to(root)), index)
    return uses


def missing_tensorrt_names(uses: Iterable[Use], names: Mapping[str, Names]) -> list[str]:
    """One line per ``tensorrt`` use that a release does not bind, naming the attribute and the releases."""
    problems = []
    for use in uses:
        if use.module != "tensorrt":
            continue
        lacking = [version for version, bound in names.items() if use.name not in bound]
        if lacking:
            problems.append(
                f"{use.where()}: tensorrt.{use.name} is not bound by TensorRT {', '.join(lacking)}"
            )
    return problems


def _resolve(module: ModuleType, dotted: str) -> Any:
    value: Any = module
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def missing_installed_names(uses: Iterable[Use], module: str) -> list[str]:
    """One line per use of ``module`` ("cudart" or "tensorrt") that the installed package does not have."""
    installed = importlib.import_module(INSTALLED_MODULE[module])
    version = getattr(installed, "__version__", None) or _package_version(INSTALLED_MODULE[module])
    problems = []
    for use in uses:
        if use.module != module:
            continue
        try:
            _resolve(installed, use.name)
        except AttributeError:
            problems.append(f"{use.where()}: {installed.__name__}.{use.name} does not exist in {version}")
    return problems


def _package_version(module: str) -> str:
    from importlib import metadata

    top = module.split(".")[0]
    for distribution in (f"{top}-bindings", f"{top}-python", top):
        try:
            return f"{distribution} {metadata.version(distribution)}"
        except metadata.PackageNotFoundError:
            continue
    return module
