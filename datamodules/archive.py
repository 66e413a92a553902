"""Safe extraction of uploaded zip archives (e.g. a WFDB ``.hea`` + ``.dat`` pair).

Uploads are untrusted. :func:`safe_extract_zip` refuses, before writing anything:

* path traversal (absolute names, ``..`` components, drive letters);
* symbolic links (zip entries whose Unix mode is a link);
* decompression bombs: too many entries, too large in total, or a compression ratio above a bound;
* encrypted entries.
"""

from __future__ import annotations

import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from datamodules.errors import MedclipDataError


class ArchiveError(MedclipDataError):
    """An archive is unsafe or unreadable."""


@dataclass(frozen=True)
class ZipLimits:
    """Bounds for an uploaded archive.

    Attributes:
        max_files: most entries allowed.
        max_total_bytes: most uncompressed bytes in all.
        max_ratio: most uncompressed/compressed ratio for any entry larger than 1 MiB.
    """

    max_files: int = 64
    max_total_bytes: int = 256 * 1024 * 1024
    max_ratio: float = 200.0


def _check_name(archive: Path, name: str) -> PurePosixPath:
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if norm.startswith("/") or p.is_absolute() or (len(norm) > 1 and norm[1] == ":"):
        raise ArchiveError(archive, f"entry {name!r} has an absolute path")
    if any(part == ".." for part in p.parts):
        raise ArchiveError(archive, f"entry {name!r} escapes the extraction folder")
    return p


def safe_extract_zip(
    archive: str | Path, dest: str | Path, limits: ZipLimits | None = None
) -> list[Path]:
    """Validate every entry of ``archive``, then extract the regular files into ``dest``.

    Returns:
        The extracted file paths.

    Raises:
        ArchiveError: naming the archive and the offending entry.
    """
    archive = Path(archive)
    dest = Path(dest)
    limits = limits or ZipLimits()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(archive, f"not a readable zip archive ({exc})") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > limits.max_files:
            raise ArchiveError(
                archive, f"{len(infos)} entries exceed the limit of {limits.max_files}"
            )
        total = 0
        for info in infos:
            _check_name(archive, info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveError(archive, f"entry {info.filename!r} is a symbolic link")
            if info.flag_bits & 0x1:
                raise ArchiveError(archive, f"entry {info.filename!r} is encrypted")
            total += info.file_size
            if total > limits.max_total_bytes:
                raise ArchiveError(
                    archive,
                    f"uncompressed size exceeds {limits.max_total_bytes} bytes"
                    " (decompression bomb?)",
                )
            if info.file_size > 1 << 20 and info.file_size > limits.max_ratio * max(
                info.compress_size, 1
            ):
                raise ArchiveError(
                    archive,
                    f"entry {info.filename!r} compresses "
                    f"{info.file_size / max(info.compress_size, 1):.0f}:1 (decompression bomb?)",
                )
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        out: list[Path] = []
        for info in infos:
            target = (root / _check_name(archive, info.filename)).resolve()
            if os.path.commonpath([root, target]) != str(root):
                raise ArchiveError(
                    archive, f"entry {info.filename!r} escapes the extraction folder"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with zf.open(info) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 16):
                    written += len(chunk)
                    if written > info.file_size:  # header lied about the size
                        raise ArchiveError(
                            archive, f"entry {info.filename!r} is larger than declared"
                        )
                    dst.write(chunk)
            out.append(target)
        return out
