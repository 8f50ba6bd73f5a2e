"""Anthropic Messages adapter: `system=`, `tool_use` / `tool_result` blocks, base64 image blocks.

A tool result carries its images inside its own `tool_result` block, next to its text.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic

from coin_scale.llm.messages import (
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    ToolCall,
    Usage,
)
from coin_scale.llm.providers import NO_OPTIONS, CallOptions, apply_overrides
from coin_scale.llm.providers._errors import malformed, sdk_error

PROVIDER = "anthropic"


def _image(image: ImagePart) -> dict[str, Any]:
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": image.media_type, "data": image.base64()},
    }


def _user_content(m: Message) -> list[dict[str, Any]]:
    """Tool results first (the API wants them right after the `tool_use` turn), then text and
    images."""
    blocks: list[dict[str, Any]] = []
    for r in m.tool_results:
        content: list[dict[str, Any]] = [{"type": "text", "text": r.content}]
        content.extend(_image(i) for i in r.images)
        blocks.append(
            {
                "type": "tool_result",
                "tool_use_id": r.call_id,
                "content": content,
                "is_error": r.is_error,
            }
        )
    if m.text:
        blocks.append({"type": "text", "text": m.text})
    blocks.extend(_image(i) for i in m.images)
    return blocks


def _assistant_content(m: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if m.text:
        blocks.append({"type": "text", "text": m.text})
    for c in m.tool_calls:
        # The API only takes an object as input: a call whose arguments did not parse is
        # replayed with none (the tool result that follows says what was wrong).
        blocks.append({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments or {}})
    return blocks


def to_anthropic_messages(request: ChatRequest) -> list[dict[str, Any]]:
    """The request's turns as Messages API messages (the system prompt goes apart)."""
    return [
        {
            "role": m.role,
            "content": _assistant_content(m) if m.role == "assistant" else _user_content(m),
        }
        for m in request.messages
    ]


def to_anthropic_tools(request: ChatRequest) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "description": t.description, "input_schema": t.parameters}
        for t in request.tools
    ]


CACHE_CONTROL = {"type": "ephemeral"}
"""Anthropic's cache breakpoint (five minutes, refreshed by each hit)."""
MAX_BREAKPOINTS = 4
"""The API takes at most four `cache_control` blocks per request."""


def _mark_last(blocks: list[dict[str, Any]]) -> bool:
    if not blocks:
        return False
    blocks[-1] = {**blocks[-1], "cache_control": CACHE_CONTROL}
    return True


def mark_cache_breakpoints(params: dict[str, Any]) -> int:
    """Mark the prefix for Anthropic's prompt cache, which caches only up to marked blocks (tools,
    then system, then messages, in that order): the last tool, the system prompt, the first
    message (task and exemplars, the same every round) and the last message (so the next round
    reads the whole conversation so far from the cache). Returns the breakpoints set."""
    marked = 0
    if params.get("tools"):
        marked += _mark_last(params["tools"])
    if params.get("system"):
        params["system"] = [
            {"type": "text", "text": params["system"], "cache_control": CACHE_CONTROL}
        ]
        marked += 1
    messages = params["messages"]
    for index in dict.fromkeys((0, len(messages) - 1)):  # first, then last (once if the same)
        if marked < MAX_BREAKPOINTS and 0 <= index < len(messages):
            marked += _mark_last(messages[index]["content"])
    return marked


def _tool_call(block: Any) -> ToolCall:
    value = getattr(block, "input", None)
    if isinstance(value, dict):
        arguments: dict[str, Any] | None = value
        raw = json.dumps(value)
    else:
        arguments = None
        raw = value if isinstance(value, str) else json.dumps(value)
    if not isinstance(block.id, str) or not isinstance(block.name, str):
        raise ValueError("a tool_use block lacks its id or name")
    return ToolCall(id=block.id, name=block.name, arguments=arguments, raw_arguments=raw)


def from_anthropic(message: Any) -> ChatResponse:
    """A Messages API `Message` as a `ChatResponse`; ValueError when required fields are missing."""
    content = getattr(message, "content", None)
    if not isinstance(content, list):
        raise ValueError("the reply has no content list")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in content:
        kind = getattr(block, "type", None)
        if kind == "text":
            texts.append(str(block.text))
        elif kind == "tool_use":
            calls.append(_tool_call(block))
    usage = getattr(message, "usage", None)

    def count(name: str) -> int:
        return int(getattr(usage, name, 0) or 0)

    # `input_tokens` is only what follows the last cache breakpoint; the cache's reads and
    # writes come apart.
    read, written = count("cache_read_input_tokens"), count("cache_creation_input_tokens")
    return ChatResponse(
        text="".join(texts),
        tool_calls=tuple(calls),
        usage=Usage(
            input_tokens=count("input_tokens") + read + written,
            output_tokens=count("output_tokens"),
            cached_input_tokens=read,
            cache_write_tokens=written,
        ),
        stop_reason=str(getattr(message, "stop_reason", "") or ""),
        model=str(getattr(message, "model", "") or ""),
    )


class AnthropicMessages:
    """`ChatClient` over `anthropic.AsyncAnthropic` (SDK retries off)."""

    provider = PROVIDER

    def __init__(self, api_key: str, base_url: str | None = None) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._client: anthropic.AsyncAnthropic | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _sdk(self) -> anthropic.AsyncAnthropic:
        """One SDK client per event loop (its connection pool belongs to the loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = anthropic.AsyncAnthropic(
                api_key=self._api_key,
                base_url=self._base_url,
                max_retries=0,
                open_telemetry=False,
            )
            self._loop = loop
        return self._client

    async def complete(
        self,
        request: ChatRequest,
        *,
        model: str,
        timeout: float,
        options: CallOptions = NO_OPTIONS,
    ) -> ChatResponse:
        params: dict[str, Any] = {
            "model": model,
            "messages": to_anthropic_messages(request),
            "max_tokens": request.max_tokens,
        }
        # No `temperature`: anthropic 2.x's `messages.create` no longer takes sampling settings.
        if request.system:
            params["system"] = request.system
        if request.tools:
            params["tools"] = to_anthropic_tools(request)
        if options.prompt_caching:
            mark_cache_breakpoints(params)
        apply_overrides(params, options)
        try:
            async with asyncio.timeout(timeout):
                message = await self._sdk().messages.create(**params, timeout=timeout)
        except Exception as err:  # noqa: BLE001 - nothing from the SDK may escape
            raise sdk_error(PROVIDER, anthropic, err, api_key=self._api_key) from None
        if not isinstance(message, anthropic.types.Message):
            detail = f"reply is not a message: {str(message)[:200]}"
            raise malformed(PROVIDER, detail, api_key=self._api_key)
        try:
            return from_anthropic(message)
        except Exception as err:  # noqa: BLE001
            detail = f"{type(err).__name__}: {err}"
            raise malformed(PROVIDER, detail, api_key=self._api_key) from err
