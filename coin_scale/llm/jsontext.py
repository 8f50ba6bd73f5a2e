"""JSON encoding with pieces already encoded: a request's tool schemas and images are the same
in every round of a unit, so their JSON text is made once and spliced into each request's body
and cache key instead of being encoded again (`RawJSON`, `dumps`)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RawJSON:
    """JSON text that `dumps` puts in place as it is (it must be one valid JSON value)."""

    text: str


def encode(value: Any, *, sort_keys: bool = False, default: Any = None) -> str:
    """Compact JSON as the providers' SDKs send it (non-ASCII kept, no NaN)."""
    return json.dumps(
        value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
        default=default,
    )  # fmt: skip


def dumps(value: Any, *, sort_keys: bool = False) -> str:
    """`encode(value)`, with every `RawJSON` inside it replaced by its text: the same text as
    encoding the values those texts encode (with the same `sort_keys`), at the cost of the rest.

    Each `RawJSON` is encoded as a placeholder string that carries a random nonce, so no string
    of the value itself can be taken for one; the placeholders are then replaced, in order."""
    pieces: list[str] = []
    mark = f"\x00{secrets.token_hex(8)}\x00"

    def default(obj: Any) -> Any:
        if isinstance(obj, RawJSON):
            pieces.append(obj.text)
            return mark
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    text = encode(value, sort_keys=sort_keys, default=default)
    if not pieces:
        return text
    parts = text.split(json.dumps(mark))
    if len(parts) != len(pieces) + 1:  # cannot happen: the nonce is in no other string
        raise AssertionError(f"jsontext.dumps: {len(parts) - 1} placeholders for {len(pieces)}")
    out = [parts[0]]
    for piece, after in zip(pieces, parts[1:], strict=True):
        out.append(piece)
        out.append(after)
    return "".join(out)
