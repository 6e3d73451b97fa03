"""Small file-system helpers shared by every stage: outputs are written atomically."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stars_edge.errors import OutputError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    A crash or an exception leaves any previous ``target`` untouched and removes the partial file, so a
    file that exists under its final name is always complete. The file is fsynced before the rename and the
    folder after it, so the rename survives a power cut with the new content, not an empty file.
    """
    target = Path(target)
    ensure_writable_dir(target.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_current_umask())
        fsync(tmp)
        os.replace(tmp, target)
        fsync(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def fsync(path: str | os.PathLike[str]) -> None:
    """Flush a file's (or a folder's entries') data to the storage device; a no-op where folders cannot be
    opened for fsync."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    """The process umask (mkstemp creates 0600 files; finished outputs get the usual permissions)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` as a directory (with parents) or raise ``OutputError`` saying why it cannot be."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path} exists and is not a directory; choose another output directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create directory {path}: {exc.strerror}") from exc
    if not os.access(path, os.W_OK):
        raise OutputError(f"directory {path} is not writable; choose another output location")
    return path


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large engines do not load into memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
