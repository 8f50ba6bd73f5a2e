"""Where coin-scale keeps what it builds once and reuses: `$COIN_SCALE_CACHE`, else
`~/.cache/coin-scale` (trained probe CNNs, rendered probe sets, node-local stand-ins for object
store warehouses, request caches)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$COIN_SCALE_CACHE`, else `~/.cache/coin-scale`."""
    env = os.environ.get("COIN_SCALE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "coin-scale"
