"""Where outputs and their bookkeeping live (the hidden partial, the resume journal), and the checks that
refuse an output path before any work starts (directories, devices, FIFOs, inputs, unwritable folders)."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from runtime.output_errors import os_failure
from stars_edge.errors import OutputError


def partial_path(target: Path) -> Path:
    """The hidden in-progress file beside ``target``."""
    return target.with_name(f".{target.name}.partial")


def journal_path(target: Path) -> Path:
    """The resume journal beside the main output ``target``."""
    return target.with_name(f".{target.name}.journal.json")


def check_output_target(target: Path) -> Path:
    """Refuse targets that cannot be written before any work starts; creates nothing.

    A target (and its hidden partial) must be a regular file or a new path: a directory, device node, FIFO or
    socket is refused (the partial would be renamed over a device such as ``/dev/null``, and a FIFO blocks).
    A missing folder is fine when its nearest existing ancestor is a writable folder (it is created only
    once the inputs are valid, ``prepare_output_folder``).
    """
    target = Path(target)
    if target.is_dir():
        raise OutputError(f"{target} is a directory; pass a file path such as {target / 'prediction.tif'}")
    check_regular_or_new(target)
    check_regular_or_new(partial_path(target))
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{ancestor} exists and is not a directory; choose another output directory")
    if not os.access(ancestor, os.W_OK):
        raise OutputError(f"directory {ancestor} is not writable; choose another output location")
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputError(f"{target} exists and is not writable; remove it or choose another path")
    return target


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def check_regular_or_new(path: Path) -> Path:
    """Refuse an output path that exists as anything but a regular file (after links): writing it would
    replace a device node, block on a FIFO or fail on a directory or socket."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return path  # new (a folder on the way that is a file is refused with its own message)
    except OSError as exc:
        raise os_failure(path, "checking", exc) from exc
    if stat.S_ISREG(mode):
        return path
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    raise OutputError(f"output {path} is {kind}; outputs must be regular files or new paths, choose another")


def check_not_inputs(outputs: Mapping[str, Path], inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse any output (or its partial / journal) that is, or resolves to, an input file (same inode)."""
    sources = [Path(p) for p in inputs]
    for kind, target in outputs.items():
        for candidate in (target, partial_path(target), journal_path(target)):
            for source in sources:
                same = candidate.resolve() == source.resolve()
                if not same and candidate.exists() and source.exists():
                    same = os.path.samefile(candidate, source)
                if same:
                    raise OutputError(
                        f"{kind} output {target} is the input {source}; writing it would destroy the input, "
                        "choose another --out path"
                    )


def check_output_targets(
    targets: Mapping[str, str | os.PathLike[str] | None], inputs: Sequence[str | os.PathLike[str]]
) -> dict[str, Path]:
    """The given targets per output kind, each checked (``check_output_target``), distinct, and none of
    them (or their partials / journals) an input."""
    chosen = {k: check_output_target(Path(v)) for k, v in targets.items() if v is not None}
    resolved = [p.resolve() for p in chosen.values()]
    if len(set(resolved)) != len(resolved):
        raise OutputError("--out, --pattern-map and --probabilities must be different files")
    check_not_inputs(chosen, inputs)
    return chosen
