"""Images cross Ray once per gateway actor: ref parts, the sender's compaction, the receiver's
bounded store; and a GatewayPool on the shared local Ray cluster against the fake OpenAI server
that sends an image's bytes once, and again after its actor restarted (`MissingImages`)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import pickle
import signal
import time
from dataclasses import dataclass

import pytest

from coin_scale.llm.image_store import (
    ImageStore,
    KnownDigests,
    MissingImages,
    compact_request,
    image_bytes,
    images,
    new_digests,
)
from coin_scale.llm.messages import ChatRequest, ImagePart, Message, ToolCall, ToolResult
from coin_scale.testing.policy import Action, ConversationView, Reply

KEY = "sk-test-image-store"


def _png(shade: int) -> ImagePart:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (shade, 255 - shade, 64)).save(buffer, format="PNG")
    return ImagePart(data=buffer.getvalue(), media_type="image/png")


A, B, C = _png(0), _png(100), _png(200)


def _request(*turns: str) -> ChatRequest:
    """A conversation of an agent: exemplars A and B up front, a tool that returned C, then one
    more user text per round."""
    messages = [
        Message(role="user", text="unit 3", images=(A, B)),
        Message(role="assistant", tool_calls=(ToolCall(id="c1", name="show", arguments={}),)),
        Message(
            role="user",
            tool_results=(ToolResult(call_id="c1", name="show", content="{}", images=(C,)),),
        ),
    ]
    for text in turns:
        messages += [Message(role="assistant", text="hm"), Message(role="user", text=text)]
    return ChatRequest(system="You explain units.", messages=tuple(messages))


def test_a_ref_part_names_its_bytes_by_digest_and_has_none() -> None:
    ref = A.as_ref()
    assert ref.is_ref and ref.data == b"" and ref.digest == A.sha256 == ref.sha256
    assert ref.media_type == A.media_type and ref.as_ref() is ref
    assert ImagePart.from_dict(ref.to_dict()) == ref
    assert ImagePart.from_dict(A.to_dict()) == A
    with pytest.raises(ValueError, match="no bytes"):
        ref.base64()  # never encoded for a provider
    with pytest.raises(ValueError, match="carries no data"):
        ImagePart(data=b"x", digest=A.sha256)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.digest = ""  # type: ignore[misc]


def test_base64_is_encoded_once_and_never_pickled() -> None:
    part = _png(7)
    assert part.base64() is part.base64()
    copy = pickle.loads(pickle.dumps(part))
    assert copy == part and "_base64" not in copy.__dict__
    assert copy.sha256 == part.sha256
    assert len(pickle.dumps(part)) < len(part.data) + 300  # the bytes once, not their base64 too


def test_compact_request_sends_the_known_images_as_refs_with_the_same_cache_key() -> None:
    request = _request("round 1")
    assert new_digests(request) == {A.sha256, B.sha256, C.sha256}
    assert compact_request(request, set()) == (request, 0)  # nothing known: the request itself

    compact, saved = compact_request(request, {A.sha256, C.sha256})
    assert saved == len(A.data) + len(C.data)
    assert [p.is_ref for p in images(compact)] == [True, False, True]
    assert image_bytes(compact) == len(B.data)
    assert new_digests(compact) == {B.sha256}
    assert compact.canonical() == request.canonical()
    assert compact.estimate_input_tokens() == request.estimate_input_tokens()
    assert compact.messages[1] is request.messages[1]  # a message without images is not copied


def test_expand_fills_refs_from_the_store_and_holds_the_full_parts() -> None:
    store = ImageStore()
    first = _request("round 1")
    assert store.expand(first) == first
    assert len(store) == 3 and store.nbytes == image_bytes(first)

    second = _request("round 1", "round 2")
    compact, _ = compact_request(second, {A.sha256, B.sha256, C.sha256})
    assert image_bytes(compact) == 0
    expanded = store.expand(compact)
    assert expanded == second
    assert not any(p.is_ref for p in images(expanded))
    # The stored instances themselves: their memoized base64 serves every round.
    assert expanded.messages[0].images[0] is store.get(A.sha256)
    fresh = ImagePart(data=A.data)
    assert store.put(fresh) is store.get(A.sha256) is not fresh


def test_expand_raises_missing_images_naming_every_ref_not_held() -> None:
    store = ImageStore()
    store.put(A)
    compact, _ = compact_request(_request(), {A.sha256, B.sha256, C.sha256})
    with pytest.raises(MissingImages) as caught:
        store.expand(compact)
    assert caught.value.digests == {B.sha256, C.sha256}
    again = pickle.loads(pickle.dumps(caught.value))  # as Ray sends it back to the pool
    assert isinstance(again, MissingImages) and again.digests == caught.value.digests
    assert str(again) == str(caught.value)


def test_the_store_evicts_the_least_recently_used_images_beyond_its_bytes() -> None:
    parts = [ImagePart(data=bytes([i]) * 4) for i in range(3)]
    store = ImageStore(capacity_bytes=10)
    store.put(parts[0])
    store.put(parts[1])
    store.get(parts[0].sha256)  # used again: parts[1] is now the oldest
    store.put(parts[2])
    assert parts[0].sha256 in store and parts[2].sha256 in store
    assert parts[1].sha256 not in store and store.nbytes == 8
    big = ImagePart(data=b"x" * 11)
    assert store.put(big) is big and big.sha256 not in store and len(store) == 2


def test_known_digests_are_bounded_and_forgotten_whole() -> None:
    known = KnownDigests(capacity_bytes=len(A.data) + len(B.data))
    known.acknowledge(ChatRequest(system="", messages=(Message(role="user", images=(A, B)),)))
    known.acknowledge(
        ChatRequest(system="", messages=(Message(role="user", images=(A.as_ref(),)),))
    )
    known.acknowledge(ChatRequest(system="", messages=(Message(role="user", images=(C,)),)))
    assert A.sha256 in known and C.sha256 in known and B.sha256 not in known
    assert set(known.digests()) == {A.sha256, C.sha256}
    known.forget()
    assert len(known) == 0 and known.nbytes == 0


@dataclass(frozen=True)
class CountImages:
    """Answers with the images it saw and the last user text."""

    def __call__(self, view: ConversationView) -> Action:
        return Reply(text=f"{view.images} images: {view.user_texts[-1]}")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_pool_sends_each_image_once_per_actor_and_again_after_a_restart(ray_cluster) -> None:
    from coin_scale.actors.llm_gateway import GatewayPool, GatewaySpec
    from coin_scale.llm.gateway import CallMeta, GatewayConfig
    from coin_scale.llm.ratelimit import RateLimits
    from coin_scale.llm.retry import RetryPolicy
    from coin_scale.testing.fakeserver import FakeProviderServer

    total = image_bytes(_request())
    meta = CallMeta(run_id="r", layer="l", unit=3, round=0)
    with FakeProviderServer("openai", CountImages(), api_key=KEY) as server:
        spec = GatewaySpec(
            config=GatewayConfig(
                provider="openai", model="fake-model", retry=RetryPolicy(max_attempts=2)
            ),
            limits=RateLimits(requests_per_minute=60000, tokens_per_minute=1e12),
            base_url=server.base_url,
        )
        pool = GatewayPool(spec, KEY, actors=1)
        try:
            first = asyncio.run(pool.complete(_request("round 1"), meta))
            sent_first = pool.image_bytes_sent
            second = asyncio.run(pool.complete(_request("round 1", "round 2"), meta))
            sent_second, saved_second = pool.image_bytes_sent, pool.image_bytes_saved

            victim = pool.pids()[0]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until Ray restarted it, its images gone
                try:
                    if pool.pids()[0] != victim:
                        break
                except Exception:  # lost or restarting: ask again
                    pass
                time.sleep(0.2)
            third = asyncio.run(pool.complete(_request("round 1", "round 2", "round 3"), meta))
        finally:
            pool.shutdown()
        views = [r.view for r in server.log]

    assert first.response.text == "3 images: round 1"
    assert second.response.text == "3 images: round 2"  # the provider still saw every image
    assert third.response.text == "3 images: round 3"
    assert sent_first == total
    assert sent_second == total and saved_second == total  # round 2: no image bytes sent
    # Round 3 went as refs to the restarted actor, which answered MissingImages: resent in full
    # on the same actor, not lost and resubmitted.
    assert pool.image_bytes_sent == 2 * total and pool.image_bytes_saved == total
    assert pool.resubmitted == 0
    assert [v.images for v in views if v] == [3, 3, 3]
