"""`WarehouseFS`: the only place that touches the warehouse's filesystem, through pyarrow.fs.

A local path today; any URI pyarrow understands (`s3://bucket/wh`, `gs://...`) later, so callers
use these few methods and never `os` or `open` on warehouse paths.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

TMP_MARK = ".tmp-"
"""Temporary files are named `<name>.tmp-<uuid>`: they never end in `.parquet`, so no glob reads them."""


@dataclass(frozen=True)
class FileEntry:
    """A file under the warehouse: its path relative to the root, and its modification time."""

    rel: str
    """Path relative to the warehouse root, '/'-separated."""
    mtime_ns: int
    """Modification time in nanoseconds since the epoch (0 when the filesystem has none)."""


class WarehouseFS:
    """A pyarrow filesystem rooted at the warehouse: relative '/'-separated paths in, files out."""

    def __init__(self, root: str | Path) -> None:
        text = str(root)
        if "://" in text:
            self.fs, base = pafs.FileSystem.from_uri(text)
            self.uri = text.rstrip("/")
        else:
            base = str(Path(text).expanduser().resolve())
            self.fs = pafs.LocalFileSystem()
            self.uri = base
        self.base = base.rstrip("/") or "/"

    def path(self, rel: str = "") -> str:
        """The filesystem path of `rel` (for pyarrow calls)."""
        return f"{self.base}/{rel}" if rel else self.base

    def url(self, rel: str = "") -> str:
        """The path or URI of `rel` as DuckDB should read it."""
        return f"{self.uri}/{rel}" if rel else self.uri

    def is_dir(self, rel: str = "") -> bool:
        """Whether `rel` is an existing directory."""
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.Directory

    def exists(self, rel: str) -> bool:
        """Whether `rel` exists (file or directory)."""
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def mkdir(self, rel: str = "") -> None:
        """Create directory `rel` and its parents (no error if it exists)."""
        self.fs.create_dir(self.path(rel), recursive=True)

    def list_dirs(self, rel: str = "") -> list[str]:
        """Names of the immediate subdirectories of `rel` (empty if it does not exist)."""
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True)
        return sorted(
            i.base_name for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.Directory
        )

    def walk_files(self, rel: str = "") -> Iterator[FileEntry]:
        """Every file under `rel`, recursively, sorted by path (nothing if it does not exist)."""
        sel = pafs.FileSelector(self.path(rel), recursive=True, allow_not_found=True)
        prefix = len(self.base) + 1
        infos = [i for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File]
        for info in sorted(infos, key=lambda i: i.path):
            yield FileEntry(rel=info.path[prefix:], mtime_ns=int(info.mtime_ns or 0))

    def delete(self, rel: str) -> None:
        """Delete file `rel`; no error if it is already gone."""
        with suppress(FileNotFoundError):
            self.fs.delete_file(self.path(rel))

    def write_atomic(self, rel: str, write: Callable[[str, pafs.FileSystem], None]) -> None:
        """Call `write(tmp_path, fs)` to fill a temporary sibling of `rel`, then rename it over `rel`.

        Readers see either the old file or the complete new one, never half of one; on any
        exception (including KeyboardInterrupt) the temporary file is removed and nothing changes.
        """
        tmp = f"{rel}{TMP_MARK}{uuid.uuid4().hex}"
        parent = rel.rpartition("/")[0]
        self.mkdir(parent)
        try:
            write(self.path(tmp), self.fs)
            self.rename(tmp, rel)
        except BaseException:
            self.delete(tmp)
            raise

    def rename(self, src: str, dst: str) -> None:
        """Rename file `src` to `dst`, replacing `dst` (atomic on local filesystems)."""
        self.fs.move(self.path(src), self.path(dst))

    def probe_writable(self) -> None:
        """Create the root if needed, then write and delete a small file; OSError if that fails."""
        self.mkdir()
        probe = f".write-probe{TMP_MARK}{uuid.uuid4().hex}"
        with self.fs.open_output_stream(self.path(probe)) as out:
            out.write(b"ok")
        self.fs.delete_file(self.path(probe))
