"""The agents' shared render cache (`unity_pool.render_cache`): a scene drawn before is handed back
as the same bytes, a batch's misses go to the renderer in one call, the store is bounded, and the
agents' tools give the same images with and without it."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from unity_pool import vocab
from unity_pool.client import RenderResult
from unity_pool.render_cache import CachedRenderer, scene_key
from unity_pool.scene import Scene, SceneError
from unity_pool.tools import LocalRenderer, RenderTools


def _spec(color: str = "red", shape: str = "circle", seed: int = 0) -> dict[str, Any]:
    return {
        "version": vocab.SPEC_VERSION,
        "objects": [{"shape": shape, "color": color, "size": 0.5}],
        "background": "plain",
        "width": 32,
        "height": 32,
        "seed": seed,
    }


class _Counting:
    """The local renderer, counting the scenes and calls it gets."""

    def __init__(self) -> None:
        self.inner = LocalRenderer()
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def render_many(self, scenes: Sequence[Scene | Mapping[str, Any]]) -> list[RenderResult]:
        with self.lock:
            self.calls.append(len(scenes))
        return self.inner.render_many(scenes)


def test_a_scene_drawn_before_comes_back_as_the_same_bytes_without_rendering() -> None:
    counting = _Counting()
    cache = CachedRenderer(counting)
    first = cache.render_many([_spec("red"), _spec("blue")])
    # the same scenes (one as a Scene, one with its defaults spelled out), and a new one
    spelled = Scene.from_dict(_spec("blue")).to_dict()
    again = cache.render_many([Scene.from_dict(_spec("red")), spelled, _spec("green")])
    assert counting.calls == [2, 1]  # only the green one was drawn
    assert [r.data for r in again[:2]] == [r.data for r in first]
    assert again[2].data == LocalRenderer().render_many([_spec("green")])[0].data
    assert (cache.hits, cache.misses) == (2, 3)


def test_a_scene_repeated_in_one_batch_is_drawn_once_and_results_keep_their_order() -> None:
    counting = _Counting()
    cache = CachedRenderer(counting)
    specs = [_spec("red"), _spec("blue"), _spec("red"), _spec("red", seed=1)]
    results = cache.render_many(specs)
    assert counting.calls == [3]
    assert results[0].data == results[2].data != results[1].data
    want = [r.data for r in LocalRenderer().render_many(specs)]
    assert [r.data for r in results] == want


def test_each_caller_gets_its_own_attributes_and_the_decoded_pixels() -> None:
    cache = CachedRenderer(LocalRenderer())
    a = cache.render_many([_spec()])[0]
    a.attributes["note"] = "changed by one agent"
    b = cache.render_many([_spec()])[0]
    assert "note" not in b.attributes
    np.testing.assert_array_equal(np.asarray(b.image()), np.asarray(a.image()))


def test_the_store_is_bounded_in_bytes_least_recently_used_first() -> None:
    one = len(LocalRenderer().render_many([_spec("red")])[0].data)
    counting = _Counting()
    cache = CachedRenderer(counting, max_bytes=int(2.5 * one))
    cache.render_many([_spec("red")])
    cache.render_many([_spec("blue")])
    cache.render_many([_spec("red")])  # red is now the most recent
    cache.render_many([_spec("green")])  # evicts blue
    assert len(cache) == 2
    counting.calls.clear()
    cache.render_many([_spec("red"), _spec("green")])
    assert counting.calls == []
    cache.render_many([_spec("blue")])
    assert counting.calls == [1]
    with pytest.raises(ValueError, match="max_bytes"):
        CachedRenderer(LocalRenderer(), max_bytes=-1)


def test_a_bad_spec_is_refused_before_anything_is_drawn() -> None:
    counting = _Counting()
    cache = CachedRenderer(counting)
    with pytest.raises(SceneError):
        cache.render_many([_spec(), {**_spec(), "objects": [{"shape": "hexagon"}]}])
    assert counting.calls == []
    with pytest.raises(SceneError):
        scene_key({"width": -3})


def test_agents_tools_on_one_cache_from_many_threads_store_the_same_images() -> None:
    cache = CachedRenderer(LocalRenderer())
    specs = [_spec(c, s) for c in ("red", "blue") for s in ("circle", "square")]
    stored: dict[int, list[bytes]] = {}

    def agent(a: int) -> None:
        tools = RenderTools(renderer=cache)
        refs = tools.render(specs[a % 2 :] + specs[: a % 2])
        stored[a] = [tools.store.get(r.id).data for r in refs]

    threads = [threading.Thread(target=agent, args=(a,)) for a in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    want = [r.data for r in LocalRenderer().render_many(specs)]
    for a in range(8):
        assert stored[a] == want[a % 2 :] + want[: a % 2]
    assert cache.hits + cache.misses == 32 and cache.misses >= 4
