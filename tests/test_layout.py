"""The studies live in their own wing: ``studies/`` may import from ``benchmarks/``, never the reverse.

Read from the source (AST, module-level and function-level imports alike), so a lazy import inside a
function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_benchmarks_never_import_studies() -> None:
    offenders = {}
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        studies = sorted(n for n in _imported_modules(path) if n.split(".")[0] == "studies")
        if studies:
            offenders[str(path.relative_to(ROOT))] = studies
    assert offenders == {}


def test_every_study_is_listed_in_the_studies_readme() -> None:
    readme = (ROOT / "studies" / "README.md").read_text()
    helpers = ("__init__", "common")
    scripts = [p.name for p in sorted((ROOT / "studies").glob("*.py")) if p.stem not in helpers]
    assert scripts, "no study scripts found"
    assert [s for s in scripts if f"`{s}`" not in readme] == []
