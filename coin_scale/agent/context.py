"""What the model sees each round: the conversation, trimmed to a bounded size.

A request holds the system prompt, the first user message (task and exemplars), then, once there
are more than `keep_last_rounds` rounds, one text message summarising the older rounds (tool,
arguments in short, result summary; no images), then the last `keep_last_rounds` rounds verbatim.
So the request's size stays bounded however many rounds the agent runs, and its prefix (system +
first message) stays identical across rounds for providers' prompt caches.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, replace

from PIL import Image

from coin_scale.llm.messages import ChatRequest, ImagePart, Message, ToolResult, ToolSpec

SUMMARY_HEADER = "Summary of earlier rounds (their images are no longer shown):"
"""First line of the summary message."""


def downscale(image: Image.Image, size: int) -> ImagePart:
    """A PNG image part whose width and height are at most `size` pixels (aspect kept)."""
    rgb = image.convert("RGB")
    if max(rgb.size) > size:
        rgb.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG", compress_level=1)  # small images: speed over a few bytes
    return ImagePart(data=buf.getvalue(), media_type="image/png")


def downscale_bytes(data: bytes, size: int) -> ImagePart:
    """`downscale` of an encoded image; an RGB PNG already small enough goes as it is."""
    with Image.open(io.BytesIO(data)) as im:
        if im.format == "PNG" and im.mode == "RGB" and max(im.size) <= size:
            return ImagePart(data=data, media_type="image/png")
        return downscale(im, size)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's header chunk, without decoding; None when `data` is not a
    PNG. A tool's images are fitted twice (by the tool, then by the loop for its result) every
    round, and opening each with PIL only to read its size was most of that."""
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def fit(part: ImagePart, size: int) -> ImagePart:
    """`part` itself when both sides are at most `size` pixels, else a downscaled PNG copy."""
    dims = png_size(part.data)
    if dims is not None and max(dims) <= size:
        return part
    with Image.open(io.BytesIO(part.data)) as im:
        if max(im.size) <= size:
            return part
        return downscale(im, size)


def fit_result(result: ToolResult, size: int) -> ToolResult:
    """`result` with every image part fitted to `size` (whatever `image_size` the tools had)."""
    if not result.images:
        return result
    return replace(result, images=tuple(fit(p, size) for p in result.images))


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    """One finished round: the model's turn, what it was told back, and that in short."""

    round: int
    """Round index, from 0."""
    assistant: Message
    """The model's reply (text and tool calls)."""
    reply: Message
    """The user turn answering it: tool results and/or a nudge."""
    summary: tuple[str, ...]
    """One line per step (tool, short arguments, result summary), for the trimmed summary."""


def summary_message(records: Sequence[RoundRecord]) -> Message:
    """The text that stands in for rounds no longer sent verbatim."""
    lines = [SUMMARY_HEADER]
    for record in records:
        lines.extend(f"round {record.round}: {line}" for line in record.summary)
    return Message(role="user", text="\n".join(lines))


def build_request(
    *,
    system: str,
    first: Message,
    rounds: Sequence[RoundRecord],
    tools: Sequence[ToolSpec],
    keep_last_rounds: int,
    max_tokens: int,
    temperature: float,
    notice: str = "",
) -> ChatRequest:
    """The request for the next round. `notice`, when given, is appended to the text of the last
    user turn (e.g. "this is the last round")."""
    if keep_last_rounds < 1:
        raise ValueError(f"keep_last_rounds: expected at least 1; got {keep_last_rounds}")
    older, recent = rounds[:-keep_last_rounds], rounds[-keep_last_rounds:]
    messages: list[Message] = [first]
    if older:
        messages.append(summary_message(older))
    for record in recent:
        messages.extend((record.assistant, record.reply))
    if notice:
        last = messages[-1]
        messages[-1] = replace(last, text=f"{last.text}\n\n{notice}" if last.text else notice)
    return ChatRequest(
        system=system,
        messages=tuple(messages),
        tools=tuple(tools),
        max_tokens=max_tokens,
        temperature=temperature,
    )
