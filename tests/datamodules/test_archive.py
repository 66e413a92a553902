"""Zip uploads: traversal, symlinks and decompression bombs are refused before extraction."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from datamodules.archive import ArchiveError, ZipLimits, safe_extract_zip


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_extracts_regular_files(tmp_path: Path) -> None:
    z = _zip(tmp_path / "ok.zip", {"rec/a.hea": b"a 1 100 10\n", "rec/a.dat": b"\0" * 20})
    files = safe_extract_zip(z, tmp_path / "out")
    assert sorted(p.name for p in files) == ["a.dat", "a.hea"]
    assert (tmp_path / "out" / "rec" / "a.dat").read_bytes() == b"\0" * 20


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/etc/evil", "C:/evil"])
def test_path_traversal_refused(tmp_path: Path, name: str) -> None:
    z = _zip(tmp_path / "bad.zip", {name: b"x"})
    with pytest.raises(ArchiveError, match="bad.zip"):
        safe_extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out").exists()


def test_symlink_refused(tmp_path: Path) -> None:
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link"):
        safe_extract_zip(path, tmp_path / "out")


def test_bomb_refused(tmp_path: Path) -> None:
    z = _zip(tmp_path / "bomb.zip", {"zeros.bin": b"\0" * (20 << 20)})
    with pytest.raises(ArchiveError, match="decompression bomb"):
        safe_extract_zip(z, tmp_path / "out")
    small = ZipLimits(max_total_bytes=1000)
    z2 = _zip(tmp_path / "big.zip", {"a": b"1" * 800, "b": b"2" * 800})
    with pytest.raises(ArchiveError, match="exceeds"):
        safe_extract_zip(z2, tmp_path / "out2", small)


def test_too_many_entries_and_garbage(tmp_path: Path) -> None:
    z = _zip(tmp_path / "many.zip", {f"f{i}": b"x" for i in range(5)})
    with pytest.raises(ArchiveError, match="5 entries"):
        safe_extract_zip(z, tmp_path / "o", ZipLimits(max_files=4))
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ArchiveError, match="junk.zip: not a readable zip"):
        safe_extract_zip(junk, tmp_path / "o2")
