"""Resume checkpoints of a run's explanations: each finished piece (a chunk of units, or one
unit's agent outcome) is saved as soon as it is done, so a rerun with the same run id explains
only the units that are missing.

Pieces live under `_checkpoints/explain/<run_id>/<scope>/` (the scope names what was explained:
the dissection, and the explainer), written atomically through `WarehouseFS`; a piece's JSON file
is written last, so its presence means the piece is complete. The run's checkpoints are deleted
once its final rows are stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from coin_scale.storage.fs import WarehouseFS
from coin_scale.storage.spec import check_safe_name

log = logging.getLogger(__name__)


def scope_name(kind: str, *parts: str) -> str:
    """A checkpoint scope: `kind-<hash of parts>` (parts: dissection id, explainer, model...)."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).hexdigest()
    return f"{kind}-{digest}"


@dataclass(frozen=True)
class ExplainCheckpoint:
    """The finished pieces of one run's explanations of one scope."""

    fs: WarehouseFS
    run_id: str
    scope: str

    def __post_init__(self) -> None:
        check_safe_name(self.run_id, "run id")

    @property
    def prefix(self) -> str:
        return f"_checkpoints/explain/{self.run_id}/{self.scope}"

    def put_json(self, name: str, value: Any) -> None:
        """Save piece `name` (JSON-able `value`), replacing it atomically."""
        self.fs.write_bytes(f"{self.prefix}/{name}.json", json.dumps(value, sort_keys=True).encode())

    def put_table(self, name: str, table: pa.Table) -> None:
        """Save an Arrow table beside the pieces (Parquet), replacing it atomically."""

        def write(tmp: str, filesystem: pafs.FileSystem) -> None:
            pq.write_table(table, tmp, filesystem=filesystem)

        self.fs.write_atomic(f"{self.prefix}/{name}.parquet", write)

    def get_table(self, name: str) -> pa.Table:
        return pq.read_table(self.fs.path(f"{self.prefix}/{name}.parquet"), filesystem=self.fs.fs)

    def pieces(self) -> dict[str, Any]:
        """Every complete piece, by name; an unreadable one is skipped (it is redone)."""
        found = {}
        for entry in self.fs.walk_files(self.prefix):
            base = entry.rel.rpartition("/")[2]
            if not base.endswith(".json"):
                continue
            try:
                found[base.removesuffix(".json")] = json.loads(self.fs.read_bytes(entry.rel))
            except (OSError, ValueError) as err:
                log.warning("ignoring the unreadable explanation checkpoint %s: %s", entry.rel, err)
        return found


def clear_run(fs: WarehouseFS, run_id: str) -> None:
    """Delete every explanation checkpoint of `run_id` (once its rows are stored)."""
    rel = f"_checkpoints/explain/{run_id}"
    for entry in list(fs.walk_files(rel)):
        fs.delete(entry.rel)
    if fs.is_dir(rel):
        fs.fs.delete_dir(fs.path(rel))
