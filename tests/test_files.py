"""Atomic writes: text or bytes, parent folders created, an old file replaced whole, no temporary left."""

from pathlib import Path

import pytest

from aloop.files import write_atomic


@pytest.mark.parametrize("data, expected", [("Fe₂O₃", "Fe₂O₃".encode()), (b"\x00\x01", b"\x00\x01")])
def test_writes_text_as_utf8_and_bytes_as_is(tmp_path: Path, data, expected):
    path = tmp_path / "new" / "folder" / "file.json"
    write_atomic(path, data)
    assert path.read_bytes() == expected


def test_replaces_an_existing_file_and_leaves_no_temporary(tmp_path: Path):
    path = tmp_path / "file.json"
    path.write_text("old")
    write_atomic(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]
