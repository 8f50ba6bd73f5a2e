"""OpenAI Chat Completions adapter (also any OpenAI-compatible server: vLLM, Ollama, ...).

Images go as native `image_url` parts with data URLs. OpenAI `tool` messages carry text only, so a
tool result's images follow in a user message that names the call they belong to.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import openai

from coin_scale.llm import jsontext
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
from coin_scale.llm.providers._prefix import prefix_key

PROVIDER = "openai"

TOOL_IMAGES_NOTE = "Images returned by tool call {call_id} ({name}):"
"""Text before a tool result's images in the user message that carries them."""


def parse_arguments(raw: str) -> dict[str, Any] | None:
    """Tool-call arguments as a dict, or None when `raw` is not a JSON object (never evaluated)."""
    try:
        value = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


@functools.lru_cache(maxsize=16)
def _data_url_head(media_type: str) -> str:
    """The JSON text that opens a data URL of `media_type`, up to its base64."""
    return jsontext.encode(f"data:{media_type};base64,")[:-1]


def _image(image: ImagePart) -> dict[str, Any]:
    # The data URL as JSON text: its base64 is encoded once per part (`ImagePart.base64`) and
    # spliced into the body as it is (`jsontext`), not scanned again by the JSON encoder.
    url = _data_url_head(image.media_type) + image.base64() + '"'
    return {"type": "image_url", "image_url": {"url": jsontext.RawJSON(url)}}


def _user_messages(m: Message) -> list[dict[str, Any]]:
    """A neutral user turn: its tool results as `tool` messages, then one user message with the
    results' images (each group introduced by `TOOL_IMAGES_NOTE`), its text and its images."""
    out: list[dict[str, Any]] = [
        {"role": "tool", "tool_call_id": r.call_id, "content": r.content} for r in m.tool_results
    ]
    parts: list[dict[str, Any]] = []
    for r in m.tool_results:
        if r.images:
            note = TOOL_IMAGES_NOTE.format(call_id=r.call_id, name=r.name)
            parts.append({"type": "text", "text": note})
            parts.extend(_image(i) for i in r.images)
    if m.text:
        parts.append({"type": "text", "text": m.text})
    parts.extend(_image(i) for i in m.images)
    if len(parts) == 1 and parts[0]["type"] == "text":
        out.append({"role": "user", "content": parts[0]["text"]})
    elif parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant_message(m: Message) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": m.text or None}
    if m.tool_calls:
        msg["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {
                    "name": c.name,
                    "arguments": c.raw_arguments or json.dumps(c.arguments or {}),
                },
            }
            for c in m.tool_calls
        ]
    elif not m.text:
        msg["content"] = ""
    return msg


def to_openai_messages(request: ChatRequest) -> list[dict[str, Any]]:
    """The request's system prompt and turns as Chat Completions messages, for `jsontext.dumps`
    (image URLs as `RawJSON`)."""
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    for m in request.messages:
        if m.role == "assistant":
            out.append(_assistant_message(m))
        else:
            out.extend(_user_messages(m))
    return out


def to_openai_tools(request: ChatRequest) -> list[dict[str, Any]]:
    """The request's tools as Chat Completions function tools (schemas as `RawJSON`)."""
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": jsontext.RawJSON(t.parameters_json),
            },
        }
        for t in request.tools
    ]


def from_openai(completion: Any) -> ChatResponse:
    """A `ChatCompletion` as a `ChatResponse`; ValueError when required fields are missing."""
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise ValueError("the reply has no choices")
    choice = choices[0]
    message = getattr(choice, "message", None)
    if message is None:
        raise ValueError("the first choice has no message")
    text = getattr(message, "content", None) or ""
    if not isinstance(text, str):
        raise ValueError("message content is not a string")
    calls: list[ToolCall] = []
    for call in getattr(message, "tool_calls", None) or []:
        function = getattr(call, "function", None) or getattr(call, "custom", None)
        name = getattr(function, "name", None)
        raw = getattr(function, "arguments", None)
        if raw is None:
            raw = getattr(function, "input", "")
        if not isinstance(name, str) or not isinstance(call.id, str):
            raise ValueError("a tool call lacks its id or name")
        raw_text = raw if isinstance(raw, str) else json.dumps(raw)
        calls.append(
            ToolCall(
                id=call.id, name=name, arguments=parse_arguments(raw_text), raw_arguments=raw_text
            )
        )
    usage = getattr(completion, "usage", None)
    details = getattr(usage, "prompt_tokens_details", None)
    return ChatResponse(
        text=text,
        tool_calls=tuple(calls),
        usage=Usage(
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            cached_input_tokens=int(getattr(details, "cached_tokens", 0) or 0),
        ),
        stop_reason=str(getattr(choice, "finish_reason", "") or ""),
        model=str(getattr(completion, "model", "") or ""),
    )


def _is_official(base_url: str | None) -> bool:
    return base_url is None or "api.openai.com" in base_url


class OpenAIChat:
    """`ChatClient` over `openai.AsyncOpenAI` (SDK retries off)."""

    provider = PROVIDER

    def __init__(self, api_key: str, base_url: str | None = None) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._client: openai.AsyncOpenAI | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _sdk(self) -> openai.AsyncOpenAI:
        """One SDK client per event loop (its connection pool belongs to the loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = openai.AsyncOpenAI(
                api_key=self._api_key, base_url=self._base_url, max_retries=0
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
            "messages": to_openai_messages(request),
            "temperature": request.temperature,
        }
        official = _is_official(self._base_url)
        # api.openai.com's newer models reject `max_tokens`; compatible servers know only it.
        params["max_completion_tokens" if official else "max_tokens"] = request.max_tokens
        if request.tools:
            params["tools"] = to_openai_tools(request)
        if official and options.prompt_caching:
            # OpenAI caches prefixes of 1,024 tokens or more on its own; the key routes a unit's
            # rounds (same tools, system prompt and exemplars) to the same cache. Compatible
            # servers may reject the field, so it goes to api.openai.com only.
            params["prompt_cache_key"] = prefix_key(request)
        apply_overrides(params, options)
        # The JSON the SDK would send (compact, non-ASCII kept), with the schemas and images
        # spliced in: they were half the encoding time of every request.
        body = jsontext.dumps(params).encode()
        try:
            async with asyncio.timeout(timeout):
                # The SDK's own POST (auth, headers, timeout, status errors, reply model) without
                # `create`'s walk of every message part through the parameter TypedDicts: these
                # params are plain JSON already, and that walk cost a quarter of a gateway's CPU.
                completion = await self._sdk().post(
                    "/chat/completions",
                    content=body,
                    cast_to=openai.types.chat.ChatCompletion,
                    options={"timeout": timeout},
                )
        except Exception as err:  # noqa: BLE001 - nothing from the SDK may escape
            raise sdk_error(PROVIDER, openai, err, api_key=self._api_key) from None
        if not isinstance(completion, openai.types.chat.ChatCompletion):
            detail = f"reply is not a chat completion: {str(completion)[:200]}"
            raise malformed(PROVIDER, detail, api_key=self._api_key)
        try:
            return from_openai(completion)
        except Exception as err:  # noqa: BLE001
            detail = f"{type(err).__name__}: {err}"
            raise malformed(PROVIDER, detail, api_key=self._api_key) from err
