"""`WarehouseFS`: the only place that touches the warehouse's filesystem, through pyarrow.fs.

The root is a local path or a URI: any that pyarrow understands (`s3://bucket/wh?endpoint_override=
host:port&scheme=http`, `gs://...`, `file:///...`) and, when fsspec is installed, any fsspec one
(`memory://wh`). Callers use these few methods and never `os` or `open` on warehouse paths.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from coin_scale.cache import cache_root
from coin_scale.errors import UserError

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
        if is_uri(text):
            self.fs, base = open_filesystem(text)
            self.uri = text.split("?", 1)[0].rstrip("/")
            self.display = redact(text)
        else:
            base = str(Path(text).expanduser().resolve())
            self.fs = pafs.LocalFileSystem()
            self.uri = self.display = base
        self.base = base.rstrip("/") or "/"

    @property
    def local(self) -> bool:
        """Whether the files are on the local disk (so DuckDB and numpy can open them by path)."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, rel: str = "") -> str:
        """The filesystem path of `rel` (for pyarrow calls)."""
        return f"{self.base}/{rel}" if rel else self.base

    def url(self, rel: str = "") -> str:
        """The path (local) or URI (without its query or credentials) of `rel`, for people and DuckDB."""
        return redact(f"{self.uri}/{rel}" if rel else self.uri)

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

    def read_bytes(self, rel: str) -> bytes:
        """The whole content of file `rel` (FileNotFoundError if it does not exist)."""
        with self.fs.open_input_stream(self.path(rel)) as stream:
            return bytes(stream.read())

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write `data` to file `rel` atomically (see `write_atomic`)."""

        def write(tmp: str, filesystem: pafs.FileSystem) -> None:
            with filesystem.open_output_stream(tmp) as out:
                out.write(data)

        self.write_atomic(rel, write)

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
        """Rename file `src` to `dst`, replacing `dst`.

        Atomic on local filesystems; on object stores a server-side copy then a delete, and the
        copy appears whole or not at all."""
        self.fs.move(self.path(src), self.path(dst))

    def probe_writable(self) -> None:
        """Create the root if needed, then write and delete a small file; OSError if that fails.

        Starts with one lookup, so an unreachable object store fails after one request's retries.
        """
        if not self.is_dir():
            self.mkdir()
        probe = f".write-probe{TMP_MARK}{uuid.uuid4().hex}"
        with self.fs.open_output_stream(self.path(probe)) as out:
            out.write(b"ok")
        self.fs.delete_file(self.path(probe))


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(root: str | Path) -> bool:
    """Whether `root` is a URI (`scheme://...`) rather than a local path."""
    return bool(_SCHEME.match(str(root)))


def redact(uri: str) -> str:
    """`uri` without the `user:secret@` part, for messages and logs (query parameters are kept)."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@?]*@", r"\1", uri)


def open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, base path) for `uri`: pyarrow's own when it knows the scheme, else fsspec's.

    A URI neither knows, or one pyarrow refuses (an unknown query parameter), is a UserError
    naming it; S3 credentials come from the standard AWS sources (AWS_ACCESS_KEY_ID, ...).
    """
    try:
        return pafs.FileSystem.from_uri(uri)
    except pa.ArrowInvalid as err:
        if "Unrecognized filesystem type" not in str(err):
            raise UserError(f"warehouse {redact(uri)}: {err}") from None
    except OSError as err:
        raise UserError(f"warehouse {redact(uri)} cannot be opened: {err}") from None
    return _fsspec_filesystem(uri)


def _fsspec_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """An fsspec filesystem for `uri`, wrapped so pyarrow (and so DuckDB's views) can use it."""
    scheme = uri.split("://", 1)[0]
    try:
        import fsspec
    except ImportError:
        raise UserError(
            f"warehouse {redact(uri)}: pyarrow does not know the scheme {scheme}:// and fsspec "
            "is not installed; use a local directory or s3://, gs://, hdfs:// or file:// URIs"
        ) from None
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as err:
        raise UserError(
            f"warehouse {redact(uri)}: unknown filesystem {scheme}:// ({err})"
        ) from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), str(path)


def local_dir(root: str | Path, rel: str) -> Path:
    """`<root>/<rel>` for a local warehouse; for a URI, a node-local stand-in for it.

    For files that must be on the local disk (memory-mapped SAE shards, PNGs handed to PIL, the
    LLM request cache): `$COIN_SCALE_CACHE` (default ~/.cache/coin-scale)/remote/<hash of the
    URI>/<rel>, so every run against one warehouse finds the same directory on that node.
    """
    if not is_uri(root):
        return Path(str(root)).expanduser().resolve() / rel
    where = redact(str(root).split("?", 1)[0].rstrip("/"))
    return cache_root() / "remote" / hashlib.sha256(where.encode()).hexdigest()[:16] / rel
