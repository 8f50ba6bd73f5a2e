"""A request cache keyed by a hash of the request, so a resumed sweep never pays twice.

The key covers everything that changes the reply (provider, model, messages, tools, sampling
parameters) and nothing secret: API keys never enter it."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from coin_scale.llm import jsontext

SECRET_FIELDS = frozenset({"api_key", "authorization", "headers"})


def canonical_json(request: dict[str, Any]) -> str:
    """The request as the key hashes it: keys sorted, compact, secrets refused (`RawJSON`
    pieces, encoded with sorted keys, spliced in)."""
    leaked = SECRET_FIELDS & {k.lower() for k in request}
    if leaked:
        raise ValueError(f"request_key: the request must not carry {sorted(leaked)}")
    return jsontext.dumps(request, sort_keys=True)


def request_key(provider: str, model: str, request: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the request (keys sorted, secrets refused)."""
    return key_of_json(provider, model, canonical_json(request))


def key_of_json(provider: str, model: str, request_json: str) -> str:
    """`request_key` of a request already in `canonical_json` form: the same digest as the JSON
    of {"model", "provider", "request"} with sorted keys, without encoding the request twice."""
    head = json.dumps({"model": model, "provider": provider}, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))  # fmt: skip
    text = f'{head[:-1]},"request":{request_json}}}'
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class RequestCache:
    """Replies stored as one JSON file per key under `root/<key[:2]>/<key>.json`, written atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored reply, or None (a missing or unreadable entry is a miss)."""
        try:
            return json.loads(self._path(key).read_text("utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, key: str, reply: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_text(json.dumps(reply, sort_keys=True), "utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
