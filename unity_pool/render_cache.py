"""A shared cache of rendered scenes in front of any deterministic `Renderer`.

Agents explaining the units of one layer at once render many of the same scenes: each starts from
its exemplars' most common attributes and varies one at a time, so the same plain red circle is
drawn for many units. A renderer whose output depends only on the spec (the procedural renderer:
every random choice is seeded by the spec's `seed`) can hand back the bytes it made before.
`CachedRenderer` keys each scene by its value (the frozen `Scene`, defaults filled in), renders the
misses of a batch in one call to the renderer behind it (a scene repeated within the batch once),
and keeps the results in a least-recently-used store bounded in bytes. Thread-safe: the agents'
tools call it from many threads.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from unity_pool.client import RenderResult
from unity_pool.scene import Scene

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Encoded image bytes kept at most (about 4,000 PNGs of 224 x 224)."""


class _Renderer(Protocol):
    def render_many(self, scenes: Sequence[Scene | Mapping[str, Any]]) -> list[RenderResult]: ...


def scene_key(scene: Scene | Mapping[str, Any]) -> Scene:
    """The key of a scene spec: the validated `Scene` itself (frozen, equal and hashed by value,
    defaults filled in, so two specs of one scene are one key); raises `SceneError` for a bad
    spec."""
    return scene if isinstance(scene, Scene) else Scene.from_dict(scene)


class CachedRenderer:
    """`renderer` behind a bounded cache; only for renderers whose images depend on the spec
    alone. `hits` and `misses` count scenes."""

    def __init__(self, renderer: _Renderer, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes: expected >= 0; got {max_bytes!r}")
        self.renderer = renderer
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._store: OrderedDict[Scene, RenderResult] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._store)

    def render_many(self, scenes: Sequence[Scene | Mapping[str, Any]]) -> list[RenderResult]:
        keys = [scene_key(s) for s in scenes]
        found: dict[Scene, RenderResult] = {}
        with self._lock:
            for key in keys:
                hit = self._store.get(key)
                if hit is not None:
                    self._store.move_to_end(key)
                    found[key] = hit
        todo = list(dict.fromkeys(k for k in keys if k not in found))
        if todo:
            results = self.renderer.render_many(todo)  # the keys are the scenes
            if len(results) != len(todo):
                # The renderer broke its contract; let the caller's count check report it.
                return results
            found.update(zip(todo, results, strict=True))
            with self._lock:
                for key, result in zip(todo, results, strict=True):
                    self._put(key, result)
        with self._lock:
            self.misses += len(todo)
            self.hits += len(keys) - len(todo)
        # Each caller gets its own attributes (a tool may annotate them); the bytes are shared.
        return [_copy(found[k]) for k in keys]

    def _put(self, key: Scene, result: RenderResult) -> None:
        size = len(result.data)
        if size > self.max_bytes or key in self._store:
            return
        self._store[key] = result
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._store.popitem(last=False)
            self._bytes -= len(old.data)


def _copy(result: RenderResult) -> RenderResult:
    return RenderResult(
        data=result.data,
        format=result.format,
        width=result.width,
        height=result.height,
        attributes=_copy_attributes(result.attributes),
        render_ms=result.render_ms,
        pixels=result.pixels,
    )


_PLAIN = (str, int, float, bool, type(None))


def _copy_attributes(attributes: Any) -> Any:
    """A copy a caller may change: a flat dict of plain values (the procedural renderer's) is
    copied shallowly, anything else deeply."""
    if isinstance(attributes, dict) and all(isinstance(v, _PLAIN) for v in attributes.values()):
        return dict(attributes)
    return copy.deepcopy(attributes)
