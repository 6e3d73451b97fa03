from pathlib import Path

import pytest

from stars_edge.errors import OutputError
from stars_edge.io import atomic_path, ensure_writable_dir, sha256_file, write_json_atomic


def test_atomic_path_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_json_and_hash(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "a" / "m.json", {"x": 1})
    assert path.read_text().strip().startswith("{")
    assert len(sha256_file(path)) == 64


def test_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    clash = tmp_path / "file"
    clash.write_text("x")
    with pytest.raises(OutputError, match="is not a directory"):
        ensure_writable_dir(clash)
