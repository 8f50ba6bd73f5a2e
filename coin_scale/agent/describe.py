"""The agents' `describe(images)` and `summarize(images)` tools (MAIA's `describe_images` and
`summarize_images`): one vision-language call each, through gateways of their own.

`GatewayDescriber` builds the request (the images, 256 px at most, and a short instruction),
sends it through a `complete(request, meta)` coroutine (in production the describe model's
gateway actors: its own model, rate limiter, request cache and ledger rows) and parses the
reply: one numbered line per image for `describe`, free text for `summarize`. The tools run in
worker threads, so each call runs its coroutine on a loop of its own. A reply that does not
give one caption per image is a `DescribeFailed`, which the agent reads as a tool error.
"""

from __future__ import annotations

import asyncio
import io
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from PIL import Image

from coin_scale.agent.context import fit
from coin_scale.llm.messages import ChatRequest, ImagePart, Message

DESCRIBE_SIZE = 256
"""Longest side of an image sent to the describe model (pixels)."""

MAX_CAPTION_CHARS = 300
"""A caption longer than this is cut (the agent reads many)."""

DESCRIBE_SYSTEM = (
    "You describe images for a scientist studying a neuron of a vision model. Be concrete: "
    "objects, their parts, colours, textures, the scene and its layout. No speculation about "
    "the neuron."
)

DESCRIBE_TEXT = (
    "Describe each of the {n} images above in one short sentence. Answer with exactly {n} lines, "
    "numbered in order: '1: ...', '2: ...'."
)

SUMMARIZE_TEXT = (
    "What do the {n} images above have in common? Answer in one or two sentences, naming the "
    "shared objects, parts, colours, textures or scenes."
)

Complete = Callable[[ChatRequest, Any], Awaitable[Any]]
"""`complete(request, meta)` -> a reply with `.response.text` (a `Gateways.complete`)."""

_NUMBERED = re.compile(r"^\s*(?:image\s*)?(\d+)\s*[:.)-]\s*(.+?)\s*$", re.IGNORECASE)


class DescribeFailed(RuntimeError):
    """The describe model's reply could not be read as one caption per image."""


def _part(image: Image.Image) -> ImagePart:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return fit(ImagePart(data=buffer.getvalue(), media_type="image/png"), DESCRIBE_SIZE)


def describe_request(images: Sequence[Image.Image], *, summarize: bool = False) -> ChatRequest:
    """The request for `describe` (or `summarize`) of `images`."""
    text = (SUMMARIZE_TEXT if summarize else DESCRIBE_TEXT).format(n=len(images))
    message = Message(role="user", text=text, images=tuple(_part(im) for im in images))
    return ChatRequest(system=DESCRIBE_SYSTEM, messages=(message,), max_tokens=60 * len(images) + 100)


def parse_captions(text: str, n: int) -> list[str]:
    """One caption per image from a numbered reply; `DescribeFailed` unless all n are there."""
    found: dict[int, str] = {}
    for line in text.splitlines():
        match = _NUMBERED.match(line)
        if match and 1 <= int(match.group(1)) <= n and int(match.group(1)) not in found:
            found[int(match.group(1))] = match.group(2)[:MAX_CAPTION_CHARS]
    if len(found) != n:
        missing = [i for i in range(1, n + 1) if i not in found]
        raise DescribeFailed(
            f"the describe model's reply has no caption for image(s) {missing} of {n} "
            f"(reply: {text[:200]!r})"
        )
    return [found[i] for i in range(1, n + 1)]


class GatewayDescriber:
    """The agent's `Describer` on the describe model's gateways; `meta` tags each call's ledger
    row (the run, layer and unit)."""

    def __init__(self, complete: Complete, meta: Any, *, model: str) -> None:
        self.complete = complete
        self.meta = meta
        self.model = model
        """The describe model, named in the tool list."""
        self._spent = (0, 0.0)
        self._lock = threading.Lock()

    def take_spend(self) -> tuple[int, float]:
        """Tokens and dollars of the calls since the last take: the agent loop charges them to
        the unit's and the sweep's budgets (a call answered from the request cache costs 0)."""
        with self._lock:
            spent, self._spent = self._spent, (0, 0.0)
        return spent

    def _ask(self, request: ChatRequest) -> str:
        from coin_scale.llm.gateway import GatewayFailed

        try:
            reply = asyncio.run(self._call(request))
        except (GatewayFailed, RuntimeError) as err:  # failed for good, or its actors lost
            raise DescribeFailed(f"the describe model's call failed: {err}") from None
        if not getattr(reply, "cached", False):
            usage = getattr(reply.response, "usage", None)
            tokens = int(getattr(usage, "total", 0) or 0)
            with self._lock:
                usd = float(getattr(reply, "cost_usd", 0.0) or 0.0)
                self._spent = (self._spent[0] + tokens, self._spent[1] + usd)
        return str(reply.response.text or "").strip()

    async def _call(self, request: ChatRequest) -> Any:
        return await self.complete(request, self.meta)

    def describe(self, images: Sequence[Image.Image]) -> list[str]:
        """One short caption per image, in order."""
        return parse_captions(self._ask(describe_request(images)), len(images))

    def summarize(self, images: Sequence[Image.Image]) -> str:
        """What the images have in common, in a sentence or two."""
        text = self._ask(describe_request(images, summarize=True))
        if not text:
            raise DescribeFailed("the describe model answered the summary with no text")
        return text[: 2 * MAX_CAPTION_CHARS]
