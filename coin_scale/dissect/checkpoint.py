"""Resume checkpoints of a dissection's probe pass: the merged state, written now and then, so a
rerun after a killed driver dispatches only the images not yet merged.

One file per dissection id (which hashes model, weights, layer, probe and settings, so another
dissection never loads it) under `_checkpoints/dissect/`, written atomically through
`WarehouseFS` (local or object store) and deleted once the final rows are stored.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from coin_scale.storage.fs import WarehouseFS

log = logging.getLogger(__name__)

FORMAT = 1
"""Bumped when the file's content changes; a checkpoint of another format is ignored."""


@dataclass(frozen=True)
class DissectCheckpoint:
    """Everything merged so far by one dissection's probe pass."""

    dissection_id: str
    n_images: int
    done: frozenset[int]
    """Probe image indices already merged (read, or found unreadable)."""
    failures: dict[int, str]
    """Unreadable images among `done`, with the reason."""
    accumulator: dict[str, np.ndarray]
    """`UnitAccumulator.state()`."""
    dense: np.ndarray | None = None
    """The (image, unit) float32 activations gathered so far (NaN: not yet), when kept."""


def checkpoint_rel(dissection_id: str) -> str:
    """The checkpoint's path relative to the warehouse root."""
    return f"_checkpoints/dissect/{dissection_id}.npz"


def encode(ckpt: DissectCheckpoint) -> bytes:
    """The checkpoint as one `.npz` file's bytes (no pickles)."""
    meta = {
        "format": FORMAT, "dissection_id": ckpt.dissection_id, "n_images": ckpt.n_images,
        "failures": {str(i): why for i, why in ckpt.failures.items()},
        "has_dense": ckpt.dense is not None,
    }  # fmt: skip
    arrays = {f"acc_{name}": value for name, value in ckpt.accumulator.items()}
    arrays["done"] = np.array(sorted(ckpt.done), dtype=np.int64)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    if ckpt.dense is not None:
        arrays["dense"] = ckpt.dense
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def decode(data: bytes) -> DissectCheckpoint:
    """The checkpoint `encode` wrote; ValueError if it is of another format."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        meta = json.loads(npz["meta"].tobytes().decode())
        if meta.get("format") != FORMAT:
            raise ValueError(f"checkpoint format {meta.get('format')}, expected {FORMAT}")
        accumulator = {k.removeprefix("acc_"): npz[k] for k in npz.files if k.startswith("acc_")}
        return DissectCheckpoint(
            dissection_id=meta["dissection_id"], n_images=int(meta["n_images"]),
            done=frozenset(int(i) for i in npz["done"]),
            failures={int(i): why for i, why in meta["failures"].items()},
            accumulator=accumulator, dense=npz["dense"] if meta["has_dense"] else None,
        )  # fmt: skip


def save_checkpoint(fs: WarehouseFS, ckpt: DissectCheckpoint) -> None:
    """Replace the dissection's checkpoint atomically (readers see the old one or the new one)."""
    fs.write_bytes(checkpoint_rel(ckpt.dissection_id), encode(ckpt))


def load_checkpoint(
    fs: WarehouseFS, dissection_id: str, *, n_images: int, need_dense: bool
) -> DissectCheckpoint | None:
    """The stored checkpoint of `dissection_id`, or None when there is none or it does not fit
    (another probe size, no dense activations while they are needed, unreadable)."""
    rel = checkpoint_rel(dissection_id)
    if not fs.exists(rel):
        return None
    try:
        ckpt = decode(fs.read_bytes(rel))
    except (OSError, ValueError, KeyError) as err:
        log.warning("ignoring the unreadable dissection checkpoint %s: %s", rel, err)
        return None
    if ckpt.dissection_id != dissection_id or ckpt.n_images != n_images:
        log.warning("ignoring the dissection checkpoint %s: it is of another probe set", rel)
        return None
    if need_dense and ckpt.dense is None:
        log.info("ignoring the dissection checkpoint %s: it kept no dense activations", rel)
        return None
    return ckpt


def delete_checkpoint(fs: WarehouseFS, dissection_id: str) -> None:
    """Remove the dissection's checkpoint (no error when there is none)."""
    fs.delete(checkpoint_rel(dissection_id))


@dataclass
class CheckpointClock:
    """When to write the next checkpoint: after `every` merged batches or `seconds` of wall time
    since the last one, whichever comes first, and only when something new was merged."""

    every: int
    """Batches between checkpoints; 0 disables checkpoints."""
    seconds: float
    last: float = field(default_factory=time.monotonic)
    pending: int = 0
    """Batches merged since the last checkpoint."""

    def merged(self) -> bool:
        """Count one merged batch; True when a checkpoint is due now."""
        self.pending += 1
        if self.every <= 0:
            return False
        return self.pending >= self.every or time.monotonic() - self.last >= self.seconds

    def written(self) -> None:
        self.pending = 0
        self.last = time.monotonic()
