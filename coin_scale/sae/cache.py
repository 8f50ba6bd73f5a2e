"""Activation cache on disk: fp16 token shards shuffled across images, streamed back in bounded
memory. A directory holds `shard-NNNNN.npy` files (token, d_in) and `manifest.json`, written last,
so a cache without a manifest is incomplete and never read."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coin_scale.models.sae import input_scale_for, tokens_from_conv
from coin_scale.storage.fs import TMP_MARK

MANIFEST = "manifest.json"
CACHE_FORMAT = "coin-scale-activation-cache"
CACHE_VERSION = 1
SHARD_BYTES = 64 * 2**20
"""Default shard size: 64 MiB of fp16 tokens (65536 tokens of width 512)."""


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` on a temporary sibling of `path`, then rename it over `path`: readers see
    the old file or the whole new one, and no temporary file survives an exception."""
    tmp = path.with_name(f"{path.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True, kw_only=True)
class CacheManifest:
    """What a complete cache holds."""

    d_in: int
    tokens: int
    shards: list[tuple[str, int]]
    """(file name, token count) of every shard, in write order."""
    dtype: str = "float16"
    model: str | None = None
    layer: str | None = None
    probe_id: str | None = None
    seed: int = 0
    """Seed of the writer's shuffle."""

    def to_dict(self) -> dict[str, Any]:
        return {"format": CACHE_FORMAT, "version": CACHE_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheManifest:
        body = {k: v for k, v in data.items() if k not in ("format", "version")}
        body["shards"] = [(str(name), int(n)) for name, n in body.get("shards", [])]
        return cls(**body)


class ActivationCacheWriter:
    """Collects activations batch by batch and writes them as shuffled fp16 shards.

    Tokens go into a buffer of `shuffle_shards` shards; each full buffer is permuted (seeded) and
    written out, so the tokens of one image spread over several shards and a shard mixes tokens
    of many images. Memory: the buffer, shuffle_shards x shard_tokens x d_in x 2 bytes. `root` is
    cleared of a previous unfinished cache (shards without a manifest); a finished one is only
    replaced with `overwrite=True`. One writer per cache: write from one process (the driver).
    """

    def __init__(
        self,
        root: str | Path,
        d_in: int,
        *,
        shard_tokens: int | None = None,
        shuffle_shards: int = 4,
        seed: int = 0,
        model: str | None = None,
        layer: str | None = None,
        probe_id: str | None = None,
        overwrite: bool = False,
    ) -> None:
        self.root = Path(root)
        self.d_in = d_in
        self.shard_tokens = shard_tokens or max(1024, SHARD_BYTES // (2 * d_in))
        if d_in < 1 or self.shard_tokens < 1 or shuffle_shards < 1:
            raise ValueError(
                f"d_in, shard_tokens and shuffle_shards must be >= 1, got {d_in}, "
                f"{self.shard_tokens}, {shuffle_shards}"
            )
        self._prepare_root(overwrite)
        self._rng = np.random.default_rng(seed)
        self._buffer = np.empty((shuffle_shards * self.shard_tokens, d_in), dtype=np.float16)
        self._filled = 0
        self._shards: list[tuple[str, int]] = []
        self._closed = False
        self._source = CacheManifest(
            d_in=d_in, tokens=0, shards=[], model=model, layer=layer, probe_id=probe_id, seed=seed
        )

    def _prepare_root(self, overwrite: bool) -> None:
        if (self.root / MANIFEST).exists() and not overwrite:
            raise ValueError(
                f"{self.root} already holds an activation cache; remove it or pass overwrite=True"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / MANIFEST).unlink(missing_ok=True)
        for stale in self.root.glob("shard-*.npy*"):
            stale.unlink()

    def add(self, acts: torch.Tensor) -> None:
        """Add a batch: a conv map (batch, channel, height, width) or tokens (token, channel)."""
        if self._closed:
            raise ValueError("the activation cache writer is closed")
        tokens = tokens_from_conv(acts) if acts.dim() == 4 else acts
        if tokens.dim() != 2 or tokens.shape[1] != self.d_in:
            raise ValueError(
                f"expected (batch, {self.d_in}, height, width) or (token, {self.d_in}) "
                f"activations, got {tuple(acts.shape)}"
            )
        half = tokens.detach().to("cpu", torch.float16).numpy()
        if not np.isfinite(half).all():
            peak = float(tokens.detach().abs().max())
            raise ValueError(f"activations are not finite in float16 (largest |value| {peak:.4g})")
        start = 0
        while start < len(half):
            take = min(len(half) - start, len(self._buffer) - self._filled)
            self._buffer[self._filled : self._filled + take] = half[start : start + take]
            self._filled += take
            start += take
            if self._filled == len(self._buffer):
                self._flush()

    def _flush(self) -> None:
        filled = self._buffer[: self._filled]
        self._rng.shuffle(filled)
        for start in range(0, self._filled, self.shard_tokens):
            self._write_shard(filled[start : start + self.shard_tokens])
        self._filled = 0

    def _write_shard(self, tokens: np.ndarray) -> None:
        name = f"shard-{len(self._shards):05d}.npy"

        def write(tmp: Path) -> None:
            with tmp.open("wb") as out:
                np.save(out, tokens)

        write_atomic(self.root / name, write)
        self._shards.append((name, len(tokens)))

    def close(self) -> CacheManifest:
        """Write what is buffered, then the manifest; the cache is complete from then on."""
        if not self._closed:
            self._flush()
            self._closed = True
            manifest = self._manifest()
            write_atomic(
                self.root / MANIFEST,
                lambda tmp: tmp.write_text(json.dumps(manifest.to_dict(), indent=1), "utf-8"),
            )
            del self._buffer
        return self._manifest()

    def _manifest(self) -> CacheManifest:
        tokens = sum(n for _, n in self._shards)
        return replace(self._source, tokens=tokens, shards=list(self._shards))

    def __enter__(self) -> ActivationCacheWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()


@dataclass(frozen=True)
class CacheStatistics:
    """Float64 statistics of every token of a cache."""

    tokens: int
    mean: torch.Tensor
    """float64 (d_in,): the mean token (the SAE's initial b_dec)."""
    mean_squared_norm: float
    """E||x||^2 over the tokens."""

    @property
    def input_scale(self) -> float:
        """The scalar s with E||s x||^2 = d_in (the SAE's input normalisation)."""
        return input_scale_for(self.mean_squared_norm, int(self.mean.shape[0]))


def _load_shard(path: Path, tokens: int, d_in: int) -> np.ndarray:
    """A whole shard in memory, checked against the manifest."""
    try:
        array = np.load(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read activation shard {path}: {err}") from err
    if array.shape != (tokens, d_in) or array.dtype != np.float16:
        raise ValueError(
            f"activation shard {path} holds {array.dtype} {array.shape}, the manifest says "
            f"float16 {(tokens, d_in)}; write the cache again"
        )
    return array


class ActivationCacheReader:
    """A complete cache, streamed as float32 batches (batch_tokens, d_in)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        empty = f"the activation cache at {self.root} holds no tokens; run the probe pass first"
        path = self.root / MANIFEST
        if not path.is_file():
            raise ValueError(f"{empty} (no {MANIFEST})")
        try:
            data = json.loads(path.read_text("utf-8"))
            if data.get("format") != CACHE_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, not {CACHE_FORMAT!r}")
            self.manifest = CacheManifest.from_dict(data)
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"{path} is not a coin-scale activation cache manifest: {err}"
            ) from err
        if self.manifest.tokens == 0:
            raise ValueError(empty)
        missing = [n for n, _ in self.manifest.shards if not (self.root / n).is_file()]
        if missing:
            raise ValueError(f"the activation cache at {self.root} lacks shards {missing[:5]}")

    @property
    def d_in(self) -> int:
        return self.manifest.d_in

    @property
    def tokens(self) -> int:
        return self.manifest.tokens

    def stream(
        self, batch_tokens: int, *, seed: int = 0, epochs: int | None = 1
    ) -> Iterator[torch.Tensor]:
        """Batches of every token once per epoch (`epochs=None`: forever), in a seeded order.

        Per epoch the shard order is permuted and each shard's tokens are shuffled; a batch may
        span two shards, and only the very last batch may be short. Memory: one shard plus one
        batch.
        """
        if batch_tokens < 1:
            raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
        leftover = np.empty((0, self.d_in), dtype=np.float16)
        for epoch in count() if epochs is None else range(epochs):
            rng = np.random.default_rng([seed, epoch])
            for index in rng.permutation(len(self.manifest.shards)):
                name, tokens = self.manifest.shards[index]
                shard = _load_shard(self.root / name, tokens, self.d_in)
                rng.shuffle(shard)
                start = 0
                if len(leftover):
                    start = min(batch_tokens - len(leftover), len(shard))
                    leftover = np.concatenate([leftover, shard[:start]])
                    if len(leftover) == batch_tokens:
                        yield torch.from_numpy(leftover).float()
                        leftover = np.empty((0, self.d_in), dtype=np.float16)
                full = (len(shard) - start) // batch_tokens
                for pos in range(start, start + full * batch_tokens, batch_tokens):
                    yield torch.from_numpy(shard[pos : pos + batch_tokens]).float()
                if start + full * batch_tokens < len(shard):
                    leftover = shard[start + full * batch_tokens :].copy()
                del shard
        if len(leftover):
            yield torch.from_numpy(leftover).float()

    def statistics(self, chunk_tokens: int = 65536) -> CacheStatistics:
        """Mean token and E||x||^2 in float64, one pass over the shards (memory: one chunk)."""
        total = np.zeros(self.d_in, dtype=np.float64)
        squared = 0.0
        for name, tokens in self.manifest.shards:
            shard = np.load(self.root / name, mmap_mode="r")
            if shard.shape != (tokens, self.d_in):
                raise ValueError(f"activation shard {self.root / name} does not match the manifest")
            for start in range(0, tokens, chunk_tokens):
                chunk = np.asarray(shard[start : start + chunk_tokens], dtype=np.float64)
                total += chunk.sum(axis=0)
                squared += float(np.einsum("ij,ij->", chunk, chunk))
            del shard
        n = self.manifest.tokens
        return CacheStatistics(n, torch.from_numpy(total / n), squared / n)
