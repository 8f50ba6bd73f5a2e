"""Images sent once per receiver: a bounded store of image parts keyed by their sha256, and the
sender's side, which sends the images a receiver already holds as ref parts.

Every agent round resends the whole conversation, its exemplar images included: through Ray, the
same bytes again each round. The sender (`actors.llm_gateway.GatewayPool`) remembers, per gateway
actor, the digests the actor acknowledged (`KnownDigests`) and sends those images as refs
(`compact_request`); the actor's `ImageStore.expand` puts the bytes back before a provider adapter
sees the request. A receiver that no longer holds them (restarted, or evicted them) raises
`MissingImages`, and the sender resends the full request. Pure: no Ray here.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet

from coin_scale.llm.messages import ChatRequest, ImagePart, Message

DEFAULT_CAPACITY_BYTES = 256 * 2**20
"""An actor's store: about 10,000 of the agents' 128 px PNGs, far more than the units in flight."""


class MissingImages(Exception):
    """The request named images by digest that the receiver does not hold: the sender must send
    their bytes (the full request) again."""

    def __init__(self, digests: Iterable[str]) -> None:
        self.digests: frozenset[str] = frozenset(digests)
        shown = ", ".join(sorted(d[:12] for d in self.digests)[:4])
        super().__init__(f"{len(self.digests)} image(s) not held (restarted or evicted): {shown}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Rebuilt from the digests, not from the message, when Ray pickles it back to the sender.
        return (MissingImages, (sorted(self.digests),))


def images(request: ChatRequest) -> Iterator[ImagePart]:
    """Every image part of the request, in its messages and in their tool results, in order."""
    for m in request.messages:
        yield from m.images
        for r in m.tool_results:
            yield from r.images


def image_bytes(request: ChatRequest) -> int:
    """Image bytes the request carries (ref parts carry none)."""
    return sum(len(part.data) for part in images(request))


def new_digests(request: ChatRequest) -> set[str]:
    """Digests of the images whose bytes the request carries: what its receiver holds anew once it
    has answered."""
    return {part.sha256 for part in images(request) if not part.is_ref}


def _map_images(request: ChatRequest, fn: Callable[[ImagePart], ImagePart]) -> ChatRequest:
    """`request` with each image part replaced by `fn(part)`; a message without images is kept
    as it is (the text of a long conversation is not copied)."""

    def message(m: Message) -> Message:
        if not m.images and not any(r.images for r in m.tool_results):
            return m
        results = tuple(
            dataclasses.replace(r, images=tuple(map(fn, r.images))) if r.images else r
            for r in m.tool_results
        )
        return dataclasses.replace(m, images=tuple(map(fn, m.images)), tool_results=results)

    return dataclasses.replace(request, messages=tuple(map(message, request.messages)))


def compact_request(request: ChatRequest, known: AbstractSet[str]) -> tuple[ChatRequest, int]:
    """`request` with the images whose digest is in `known` sent as ref parts, and the bytes that
    leaves out (the request itself when none is known). The cache key is unchanged: `canonical`
    names images by digest either way."""
    saved = 0

    def compact(part: ImagePart) -> ImagePart:
        nonlocal saved
        if part.is_ref or part.sha256 not in known:
            return part
        saved += len(part.data)
        return part.as_ref()

    compacted = _map_images(request, compact)
    return (compacted, saved) if saved else (request, 0)


class ImageStore:
    """The receiver's images by digest, least recently used first, bounded by their bytes.

    Expanding a request swaps each image for the stored part of that digest, so a part's memoized
    base64 (what the SDK adapters send) is computed once per process, not once per round."""

    def __init__(self, capacity_bytes: int = DEFAULT_CAPACITY_BYTES) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes: expected >= 0; got {capacity_bytes!r}")
        self.capacity_bytes = capacity_bytes
        self.nbytes = 0
        """Bytes of the images held."""
        self._parts: OrderedDict[str, ImagePart] = OrderedDict()

    def __len__(self) -> int:
        return len(self._parts)

    def __contains__(self, digest: object) -> bool:
        return digest in self._parts

    def get(self, digest: str) -> ImagePart | None:
        """The stored part (now the most recently used), or None."""
        part = self._parts.get(digest)
        if part is not None:
            self._parts.move_to_end(digest)
        return part

    def put(self, part: ImagePart) -> ImagePart:
        """Hold a full part; returns the part held under its digest (an earlier one of the same
        bytes and media type, whose base64 may be encoded already), or `part` itself."""
        if part.is_ref:
            raise ValueError("ImageStore.put: a ref part has no bytes to hold")
        held = self.get(part.sha256)
        if held is not None:
            return held if held.media_type == part.media_type else part
        if len(part.data) > self.capacity_bytes:
            return part
        self._parts[part.sha256] = part
        self.nbytes += len(part.data)
        while self.nbytes > self.capacity_bytes:
            _, evicted = self._parts.popitem(last=False)
            self.nbytes -= len(evicted.data)
        return part

    def expand(self, request: ChatRequest) -> ChatRequest:
        """`request` with every ref part filled from the store, and its full parts held (for the
        next round's refs); raises `MissingImages` naming every ref not held, so no ref part ever
        reaches a provider adapter."""
        refs = {part.digest for part in images(request) if part.is_ref}
        held = {digest: self.get(digest) for digest in refs}  # before any put can evict them
        missing = {digest for digest, part in held.items() if part is None}
        if missing:
            raise MissingImages(missing)

        def fill(part: ImagePart) -> ImagePart:
            if not part.is_ref:
                return self.put(part)
            stored = held[part.digest]
            assert stored is not None
            if stored.media_type == part.media_type:
                return stored
            return ImagePart(data=stored.data, media_type=part.media_type)

        return _map_images(request, fill)


class KnownDigests:
    """The sender's memory of what one receiver holds: the digests it acknowledged, least
    recently sent first, bounded by their bytes like the receiver's store (at half its capacity,
    so the sender rarely names an image the receiver has evicted; forgetting is always safe, the
    bytes are just sent again)."""

    def __init__(self, capacity_bytes: int = DEFAULT_CAPACITY_BYTES // 2) -> None:
        self.capacity_bytes = capacity_bytes
        self.nbytes = 0
        self._sizes: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sizes)

    def __contains__(self, digest: object) -> bool:
        return digest in self._sizes

    def digests(self) -> AbstractSet[str]:
        """A live view of the digests (for `compact_request`)."""
        return self._sizes.keys()

    def acknowledge(self, sent: ChatRequest) -> None:
        """The receiver answered `sent`: it holds the images whose bytes `sent` carried, and its
        refs were used again (a ref no longer remembered stays forgotten: its size is unknown)."""
        for part in images(sent):
            digest = part.sha256
            if part.is_ref:
                if digest in self._sizes:
                    self._sizes.move_to_end(digest)
                continue
            if digest not in self._sizes:
                self._sizes[digest] = len(part.data)
                self.nbytes += len(part.data)
            self._sizes.move_to_end(digest)
        while self.nbytes > self.capacity_bytes:
            _, size = self._sizes.popitem(last=False)
            self.nbytes -= size

    def forget(self) -> None:
        """The receiver lost its images (restarted, or evicted some): assume it holds none."""
        self._sizes.clear()
        self.nbytes = 0
