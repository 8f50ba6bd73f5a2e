"""How the fake servers bill a repeated prefix: each provider's prompt cache as it documents it.

A request is cut into segments in the order the provider reads them (tools, system prompt,
messages or blocks); each segment's tokens are counted the way the fake counts any input (text at
about 4 characters a token, each image at `TOKENS_PER_IMAGE`) and its cumulative digest names the
prefix that ends there.

- **automatic** (OpenAI, Gemini 2.5's implicit caching): the longest prefix of at least
  `min_tokens` seen before is read from the cache, in `granularity`-token steps (OpenAI: 128);
  every prefix is kept; writing costs nothing.
- **explicit** (Anthropic): only prefixes that end at a block marked `cache_control` are kept,
  and a write is billed for the tokens between the longest hit and the last breakpoint; a
  breakpoint looks back up to `lookback` blocks for an earlier hit.

A marker's own `cache_control` key never changes a segment's digest (as in the API, where a
breakpoint moved to a later block still hits the earlier prefix). Entries never expire here (the
providers keep them 5 minutes or more; a test or benchmark is shorter). Minimum lengths differ by
model (1,024 to 4,096 tokens); the fakes use `min_tokens` for every model.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from coin_scale.llm.messages import TOKENS_PER_IMAGE

Mode = Literal["automatic", "explicit"]

_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-"
_BASE64_MARKS = bytes(ord("a") if i in _BASE64_ALPHABET else ord(" ") for i in range(256))
"""Every base64 character (standard or URL-safe) to `a`, every other byte to a space."""
BASE64_RUN = 256
"""A run of this many base64 characters or more is an image's data, not text."""


def base64_run_bytes(raw: bytes) -> int:
    """Bytes of `raw` in runs of `BASE64_RUN` or more base64 characters. Each run is found with
    `bytes.find` on the body mapped to two symbols: a regular expression walked a 77 KB body at
    half a millisecond, a third of the fake server's time."""
    marks = raw.translate(_BASE64_MARKS)
    needle = b"a" * BASE64_RUN
    total = pos = 0
    while (start := marks.find(needle, pos)) >= 0:  # a run's first byte (pos is not in a run)
        end = marks.find(b" ", start)
        pos = len(marks) if end < 0 else end
        total += pos - start
    return total


_IMAGE_KEYS = ("image_url", "inline_data", "inlineData")


@dataclass(frozen=True, kw_only=True)
class Segment:
    """One piece of a request, in reading order."""

    tokens: int
    digest: str
    """Of the whole prefix up to and including this segment."""
    breakpoint: bool = False
    """Marked `cache_control` (explicit mode)."""


def count_images(value: Any) -> int:
    """Image parts in a JSON value, in any of the three APIs' shapes."""
    if isinstance(value, list):
        return sum(count_images(v) for v in value)
    if not isinstance(value, dict):
        return 0
    if value.get("type") == "image" or any(k in value for k in _IMAGE_KEYS):
        return 1
    return sum(count_images(v) for v in value.values())


def _strip_marks(value: Any) -> Any:
    if isinstance(value, list):
        return [_strip_marks(v) for v in value]
    if isinstance(value, dict):
        return {k: _strip_marks(v) for k, v in value.items() if k != "cache_control"}
    return value


def segments(pieces: Iterable[Any]) -> list[Segment]:
    """The segments of `pieces` (JSON values in reading order), with cumulative digests."""
    out: list[Segment] = []
    running = hashlib.sha256()
    for piece in pieces:
        marked = isinstance(piece, dict) and "cache_control" in piece
        text = json.dumps(_strip_marks(piece), sort_keys=True, separators=(",", ":"))
        running.update(text.encode())
        text_chars = len(text) - base64_run_bytes(text.encode())  # ASCII: ensure_ascii
        tokens = text_chars // 4 + count_images(piece) * TOKENS_PER_IMAGE
        out.append(Segment(tokens=tokens, digest=running.copy().hexdigest(), breakpoint=marked))
    return out


@dataclass(frozen=True, kw_only=True)
class CacheCharge:
    read: int = 0
    """Input tokens read from the cache."""
    written: int = 0
    """Input tokens written to it (billed; explicit mode only)."""


class PromptCache:
    """One server's prompt cache (per model), thread-safe, bounded (least recently used out)."""

    def __init__(
        self,
        mode: Mode,
        *,
        min_tokens: int = 1024,
        granularity: int = 1,
        lookback: int = 20,
        max_entries: int = 200_000,
    ) -> None:
        self.mode, self.min_tokens, self.granularity = mode, min_tokens, granularity
        self.lookback, self.max_entries = lookback, max_entries
        self._entries: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def _has(self, model: str, digest: str) -> bool:
        key = (model, digest)
        if key in self._entries:
            self._entries.move_to_end(key)
            return True
        return False

    def _keep(self, model: str, digest: str) -> None:
        self._entries[(model, digest)] = None
        self._entries.move_to_end((model, digest))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def charge(self, model: str, pieces: list[Segment]) -> CacheCharge:
        """What the cache does for one request's segments: tokens read and written."""
        ends = []
        total = 0
        for s in pieces:
            total += s.tokens
            ends.append(total)
        with self._lock:
            if self.mode == "automatic":
                return self._automatic(model, pieces, ends)
            return self._explicit(model, pieces, ends)

    def _automatic(self, model: str, pieces: list[Segment], ends: list[int]) -> CacheCharge:
        read = 0
        for i in reversed(range(len(pieces))):
            if ends[i] >= self.min_tokens and self._has(model, pieces[i].digest):
                read = ends[i] // self.granularity * self.granularity
                break
        for i, s in enumerate(pieces):
            if ends[i] >= self.min_tokens:
                self._keep(model, s.digest)
        return CacheCharge(read=read)

    def _explicit(self, model: str, pieces: list[Segment], ends: list[int]) -> CacheCharge:
        marks = [i for i, s in enumerate(pieces) if s.breakpoint]
        if not marks:
            return CacheCharge()
        read = 0
        for mark in reversed(marks):
            for i in range(mark, max(-1, mark - self.lookback), -1):
                if ends[i] >= self.min_tokens and self._has(model, pieces[i].digest):
                    read = max(read, ends[i])
                    break
        last = marks[-1]
        written = 0
        if ends[last] >= self.min_tokens and ends[last] > read:
            written = ends[last] - read
        for mark in marks:
            if ends[mark] >= self.min_tokens:
                self._keep(model, pieces[mark].digest)
        return CacheCharge(read=read, written=written)


@dataclass(frozen=True, kw_only=True)
class FakeUsage:
    """What a fake server bills one request; each wire module reports it in its API's fields."""

    input_tokens: int
    """Every input token, cache reads and writes included."""
    output_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0
