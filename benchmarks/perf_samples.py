"""``perf record`` samples of this process, attributed to the runtime's thread roles (issue 21).

``benchmarks/thread_cpu.py --perf`` says how much CPU each role spends (main, readers, backend workers, ...);
these samples say on what: the library and symbol each sample of a role landed in (libdeflate and libtiff
are decoding, ``[unknown]`` in ``/tmp/perf-PID.map`` is OpenVINO's JIT kernels, ``clear_page_erms`` in the
kernel is fresh pages being zeroed). Linux with ``perf`` only; the process must be allowed to attach to
itself (``/proc/sys/kernel/perf_event_paranoid`` <= 2 for user-space samples, root for the kernel's).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

#: Samples per second per thread (a prime, so sampling does not lock onto a periodic task).
PERF_HZ = 999
#: Seconds ``perf`` gets to attach before the measured work starts.
ATTACH_SECONDS = 1.0
_OFFSET = re.compile(r"\+0x[0-9a-f]+$")


class PerfError(RuntimeError):
    """``perf`` is missing, cannot attach, or failed."""


def perf_binary() -> str:
    """The ``perf`` executable on PATH (``PerfError`` with the fix where there is none)."""
    perf = shutil.which("perf")
    if perf is None:
        raise PerfError("perf is not installed (linux-tools / linux-perf); run without --perf")
    return perf


class PerfRecording:
    """``perf record`` attached to process ``pid`` from construction to ``stop``, written to ``output``."""

    def __init__(self, pid: int, output: Path) -> None:
        self._output = output
        self._process = subprocess.Popen(
            [perf_binary(), "record", "-F", str(PERF_HZ), "-p", str(pid), "-o", str(output)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(ATTACH_SECONDS)
        if self._process.poll() is not None:
            raise PerfError(f"perf record could not attach to process {pid}: {self._stderr()}")

    def stop(self) -> Path:
        """Stop recording (SIGINT, as Ctrl-C would) and return the data file."""
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired as exc:
            self._process.kill()
            raise PerfError("perf record did not stop within 60 s") from exc
        if not self._output.is_file():
            raise PerfError(f"perf record wrote no {self._output}: {self._stderr()}")
        return self._output

    def _stderr(self) -> str:
        text = self._process.stderr.read() if self._process.stderr is not None else ""
        return " ".join(text.split())[-300:] or f"exit status {self._process.returncode}"


def perf_script(data: Path) -> str:
    """``perf script`` of ``data``: one line per sample, ``tid ip symbol (library)``."""
    done = subprocess.run(
        [perf_binary(), "script", "-F", "tid,ip,sym,dso", "-i", str(data)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise PerfError(f"perf script failed on {data}: {' '.join(done.stderr.split())[-300:]}")
    return done.stdout


def parse_perf_script(text: str) -> Iterator[tuple[int, str, str]]:
    """``(tid, symbol, library)`` per sample line of ``perf script -F tid,ip,sym,dso``; the symbol without its
    ``+0x`` offset, the library as its file name (``[kernel.kallsyms]``, ``libdeflate-...so.0``)."""
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        rest = parts[2].strip()
        symbol, library = rest, "?"
        if rest.endswith(")") and " (" in rest:
            symbol, _, library = rest[:-1].rpartition(" (")
            library = Path(library).name or library
        yield int(parts[0]), _OFFSET.sub("", symbol.strip()) or "?", library


def by_role(
    samples: Iterable[tuple[int, str, str]], roles: Mapping[int, str], top: int = 12
) -> dict[str, Any]:
    """Samples per role (threads not in ``roles``: ``unknown``), each role's share of all samples, and its
    ``top`` symbols and libraries by share of all samples."""
    per_role: Counter[str] = Counter()
    symbols: dict[str, Counter[tuple[str, str]]] = {}
    libraries: dict[str, Counter[str]] = {}
    for tid, symbol, library in samples:
        role = roles.get(tid, "unknown")
        per_role[role] += 1
        symbols.setdefault(role, Counter())[(symbol, library)] += 1
        libraries.setdefault(role, Counter())[library] += 1
    total = sum(per_role.values())
    result: dict[str, Any] = {"samples": total, "hz": PERF_HZ, "roles": {}}
    for role, count in per_role.most_common():
        result["roles"][role] = {
            "samples": count,
            "share": count / total,
            "libraries": [
                {"library": name, "share": n / total} for name, n in libraries[role].most_common(top)
            ],
            "symbols": [
                {"symbol": symbol, "library": library, "share": n / total}
                for (symbol, library), n in symbols[role].most_common(top)
            ],
        }
    return result


def format_by_role(result: Mapping[str, Any], lines: int = 6) -> str:
    """The top libraries and symbols of each role, as text (shares of all samples)."""
    out = [f"perf: {result['samples']} samples at {result['hz']} Hz per thread"]
    for role, entry in result["roles"].items():
        out.append(f"  {role}: {entry['share']:.1%}")
        for item in entry["libraries"][:lines]:
            out.append(f"    {item['share']:6.1%}  {item['library']}")
        for item in entry["symbols"][:lines]:
            out.append(f"    {item['share']:6.1%}  {item['symbol']} ({item['library']})")
    return "\n".join(out)
