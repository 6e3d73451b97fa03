"""The accuracy study's results log: one JSON line per finished run, tagged with the code that produced it.

A study takes many CPU-hours and may span sessions, so every (method, seed, lambda_tr) run appends its record
as soon as it finishes, under an exclusive file lock (two runs side by side never interleave a line). A record
carries the git commit and a **code fingerprint**: the sha256 of every source file that defines the model,
the data, the training and the evaluation (``FINGERPRINT_GLOBS``). Re-running the study skips the runs whose
key is already logged for the same fingerprint and settings; the renderer refuses to put runs of different
fingerprints in one table unless asked to (``--allow-mixed``), and then labels the table as mixed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import BenchmarkError

ROOT = Path(__file__).resolve().parents[1]

#: Source files whose content decides a run's numbers (model, data, training, evaluation, export, harness).
FINGERPRINT_GLOBS: tuple[str, ...] = (
    "stars_edge/models/**/*.py",
    "stars_edge/data/**/*.py",
    "stars_edge/modalities.py",
    "stars_edge/metrics.py",
    "stars_edge/checkpoint.py",
    "training/**/*.py",
    "export/onnx_export.py",
    "benchmarks/accuracy_runs.py",
    "benchmarks/accuracy_plan.py",
    "benchmarks/accuracy_sen1floods11.py",
)


class MixedFingerprintsError(BenchmarkError):
    """The selected runs come from different code versions (or settings) and were not allowed to mix."""


def fingerprint_files(root: Path = ROOT) -> list[Path]:
    """The files ``code_fingerprint`` hashes, sorted by their path relative to ``root``."""
    found = {path for pattern in FINGERPRINT_GLOBS for path in root.glob(pattern) if path.is_file()}
    return sorted(
        (p for p in found if "__pycache__" not in p.parts), key=lambda p: p.relative_to(root).as_posix()
    )


def code_fingerprint(root: Path = ROOT) -> str:
    """sha256 over (path, content hash) of every fingerprinted file: changes when any of them does."""
    digest = hashlib.sha256()
    for path in fingerprint_files(root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode())
        digest.update(b"\n")
    return digest.hexdigest()


def git_commit(root: Path = ROOT) -> dict[str, Any]:
    """The HEAD commit and whether fingerprinted files differ from it (uncommitted edits)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD") or None
    # ``:(glob)`` so that ``training/**/*.py`` also matches ``training/loop.py`` (git's default pathspec
    # needs a further directory for ``**/``)
    pathspecs = [f":(glob){pattern}" for pattern in FINGERPRINT_GLOBS]
    dirty = git("status", "--porcelain", "--", *pathspecs) if commit else ""
    return {"commit": commit, "dirty": bool(dirty)}


#: Settings that choose which runs a study has, not what a run computes: left out of the settings id, so
#: adding a seed or a method later extends the same study.
PLAN_SETTINGS: tuple[str, ...] = ("methods", "seeds", "sweep_seeds", "sweep_lambdas", "flop_steps")


def settings_id(settings: Mapping[str, Any]) -> str:
    """A short stable hash of the study settings that change a run's numbers (``PLAN_SETTINGS`` excluded)."""
    relevant = {k: v for k, v in settings.items() if k not in PLAN_SETTINGS}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ResultsLog:
    """Append-only JSONL of run records; safe for several processes appending at once (``flock``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        """Every complete run record (a truncated last line from a killed writer is skipped), with runs of
        code carried over to newer code by a verified alias filed under the newer fingerprint
        (``benchmarks/accuracy_compat.py``)."""
        if not self.path.is_file():
            return []
        records = []
        aliases: dict[str, list[dict[str, Any]]] = {}
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                print(f"{self.path}:{number}: skipping an incomplete line (a run killed while writing)")
                continue
            if isinstance(record, dict) and "key" in record:
                records.append(record)
            elif isinstance(record, dict) and record.get("carried") and "alias" in record:
                aliases.setdefault(str(record["alias"]["from"]), []).append(record)
        return resolve_aliases(records, aliases)

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record as one line, flushed to disk before the lock is released."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True) + "\n"
        with self.path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def done_keys(self, fingerprint: str, settings: str) -> set[str]:
        """Keys of runs already logged for this code fingerprint and these settings."""
        return {
            r["key"]
            for r in self.read()
            if r.get("fingerprint") == fingerprint and r.get("settings_id") == settings
        }


def resolve_aliases(
    records: list[dict[str, Any]], aliases: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """Records with fingerprints carried over to the newest code they were verified for (chains followed).

    ``aliases`` lists, per old fingerprint, its aliases in log order; the latest that carries a record wins.
    One without ``runs`` carries every run of its fingerprint; one with ``runs`` (a recipe change) carries
    only the runs it lists, under their new key and spec. A carried record keeps ``fingerprint_logged``
    (the code it ran with), ``carried_by`` (each alias: commits and the date the probe matched) and, when
    renamed, ``key_logged``.
    """
    resolved = []
    for record in records:
        fingerprint = str(record.get("fingerprint"))
        seen = {fingerprint}
        carried_by: list[str] = []
        current = record
        while True:
            step = next(
                (
                    (alias, moved)
                    for alias in reversed(aliases.get(fingerprint, ()))
                    if (moved := _carried(current, alias)) is not None
                ),
                None,
            )
            if step is None:
                break
            alias, current = step
            fingerprint = str(alias["alias"]["to"])
            carried_by.append(
                f"{str(alias['old_commit'])[:12]}->{str(alias['new_commit'])[:12]} on {alias['verified']}"
            )
            if fingerprint in seen:
                break
            seen.add(fingerprint)
        if carried_by:
            current = {
                **current,
                "fingerprint": fingerprint,
                "fingerprint_logged": record.get("fingerprint"),
                "carried_by": carried_by,
            }
            if current["key"] != record["key"]:
                current["key_logged"] = record["key"]
        resolved.append(current)
    return resolved


def _carried(record: Mapping[str, Any], alias: Mapping[str, Any]) -> dict[str, Any] | None:
    """``record`` as ``alias`` carries it (renamed by a recipe change), or ``None`` where it does not."""
    if "runs" not in alias:
        return dict(record)
    for run in alias["runs"]:
        if run["from"] == record.get("key"):
            return {**record, "key": run["to"], "spec": run["spec"]}
    return None


@dataclass
class Selection:
    """The records a table is rendered from, and whether they mix code versions."""

    records: list[dict[str, Any]]
    fingerprints: list[str]
    ignored: int
    mixed: bool


def select_records(
    records: Iterable[Mapping[str, Any]],
    settings: str,
    fingerprint: str | None = None,
    allow_mixed: bool = False,
    current: str | None = None,
) -> Selection:
    """The records of one study (``settings`` id), from one code fingerprint unless ``allow_mixed``.

    ``fingerprint`` picks one code version ("current" = ``current``); without it every fingerprint present
    is used, and more than one is a ``MixedFingerprintsError`` unless ``allow_mixed``. A key logged twice
    (a run repeated on the same code) keeps its last record.
    """
    same_study = [dict(r) for r in records if r.get("settings_id") == settings]
    ignored = 0
    if fingerprint is not None:
        wanted = current if fingerprint == "current" else fingerprint
        kept = [r for r in same_study if str(r.get("fingerprint", "")).startswith(str(wanted))]
        ignored = len(same_study) - len(kept)
        same_study = kept
    counts = Counter(str(r.get("fingerprint")) for r in same_study)
    if len(counts) > 1 and not allow_mixed:
        listed = ", ".join(
            f"{fp[:12]} ({n} runs{', current code' if fp == current else ''})" for fp, n in counts.items()
        )
        raise MixedFingerprintsError(
            f"the results log mixes runs of {len(counts)} code versions: {listed}; render one with "
            "--fingerprint current (or a prefix above), or label a mixed table with --allow-mixed"
        )
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for record in same_study:
        latest[(str(record.get("fingerprint")), record["key"])] = record
    chosen = list(latest.values())
    if len(counts) > 1:
        # --allow-mixed: one record per run key, the most recently finished
        by_key: dict[str, dict[str, Any]] = {}
        for record in sorted(chosen, key=lambda r: str(r.get("finished", ""))):
            by_key[record["key"]] = record
        chosen = list(by_key.values())
    return Selection(chosen, sorted(counts), ignored, len(counts) > 1)


def settings_ids(records: Sequence[Mapping[str, Any]]) -> Counter[str]:
    """How many records each settings id has (to tell a user which studies a log holds)."""
    return Counter(str(r.get("settings_id")) for r in records)
