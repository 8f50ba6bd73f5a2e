"""Gemini adapter over `google-genai`: `system_instruction`, function declarations with a plain
JSON Schema (`parameters_json_schema`), inline image parts, function calls and responses.

Automatic function calling, automatic continuation and the SDK's retries are off. Gemini may send
function calls without ids: those get stable synthetic ids, which are not sent back to the API.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from coin_scale.llm.messages import (
    ChatRequest,
    ChatResponse,
    Message,
    ProviderError,
    ToolCall,
    ToolResult,
    Usage,
)
from coin_scale.llm.providers import NO_OPTIONS, CallOptions, apply_overrides
from coin_scale.llm.providers._errors import malformed, status_error, transport_error

PROVIDER = "gemini"

SYNTHETIC_ID_PREFIX = "gemini-synth-"
"""Ids this adapter made up for function calls that came without one."""

TOOL_IMAGES_NOTE = "Images returned by tool call {call_id} ({name}):"
"""Text before a tool result's images, which follow its function response as inline parts."""

REPLAY_THOUGHT_SIGNATURE = b"skip_thought_signature_validator"
"""Replayed function calls carry no real thought signature (the neutral types do not keep it);
Gemini documents this value for history that comes from elsewhere."""

_MALFORMED_PREFIX = re.compile(r"^\s*Malformed function call:\s*", re.IGNORECASE)
_CALL_WRAPPER = re.compile(r"^(?:print\()?(?:call:)?(?:default_api[.:])?")


def synthetic_id(response_id: str, index: int, name: str, args: Any) -> str:
    """A stable id for the `index`-th function call of a reply."""
    text = json.dumps([response_id, index, name, args], sort_keys=True, default=str)
    return SYNTHETIC_ID_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:16]


def _response_dict(r: ToolResult) -> dict[str, Any]:
    """A tool result's JSON text as the object Gemini wants (`output` / `error` keys otherwise)."""
    try:
        value: Any = json.loads(r.content)
    except ValueError:
        value = r.content
    if isinstance(value, dict):
        return value
    return {"error": value} if r.is_error else {"output": value}


def _real_id(call_id: str) -> str | None:
    return None if call_id.startswith(SYNTHETIC_ID_PREFIX) else call_id


def _user_parts(m: Message) -> list[types.Part]:
    parts = [
        types.Part(
            function_response=types.FunctionResponse(
                name=r.name, response=_response_dict(r), id=_real_id(r.call_id)
            )
        )
        for r in m.tool_results
    ]
    for r in m.tool_results:
        if r.images:
            parts.append(types.Part(text=TOOL_IMAGES_NOTE.format(call_id=r.call_id, name=r.name)))
            parts.extend(
                types.Part.from_bytes(data=i.data, mime_type=i.media_type) for i in r.images
            )
    if m.text:
        parts.append(types.Part(text=m.text))
    parts.extend(types.Part.from_bytes(data=i.data, mime_type=i.media_type) for i in m.images)
    return parts


def _model_parts(m: Message) -> list[types.Part]:
    parts = [types.Part(text=m.text)] if m.text else []
    parts.extend(
        types.Part(
            function_call=types.FunctionCall(
                name=c.name, args=c.arguments or {}, id=_real_id(c.id)
            ),
            thought_signature=REPLAY_THOUGHT_SIGNATURE,
        )
        for c in m.tool_calls
    )
    return parts


def to_gemini_contents(request: ChatRequest) -> list[types.Content]:
    """The request's turns as Gemini contents (`user` / `model`)."""
    return [
        types.Content(role="model", parts=_model_parts(m))
        if m.role == "assistant"
        else types.Content(role="user", parts=_user_parts(m))
        for m in request.messages
    ]


def to_gemini_config(
    request: ChatRequest, *, timeout: float, options: CallOptions = NO_OPTIONS
) -> types.GenerateContentConfig:
    """Generation settings, tools and the per-call timeout; nothing automatic. The overrides are
    `GenerateContentConfig` fields."""
    tools = (
        [
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name=t.name, description=t.description, parameters_json_schema=t.parameters
                    )
                    for t in request.tools
                ]
            )
        ]
        if request.tools
        else None
    )
    settings: dict[str, Any] = {
        "system_instruction": request.system or None,
        "tools": tools,
        "temperature": request.temperature,
        "max_output_tokens": request.max_tokens,
        "automatic_function_calling": types.AutomaticFunctionCallingConfig(disable=True),
        "automatic_continuation": False,
        "http_options": types.HttpOptions(timeout=max(1, round(timeout * 1000))),
    }
    # Gemini 2.5 caches a repeated prefix on its own (implicit caching): nothing to mark.
    return types.GenerateContentConfig(**apply_overrides(settings, options))


def _malformed_call(message: str, tool_names: tuple[str, ...], call_id: str) -> ToolCall | None:
    """A `MALFORMED_FUNCTION_CALL` finish whose message quotes the call (`print(default_api.NAME(
    ...))`) as a tool call with unparsed arguments, when NAME is an offered tool. (Gemini cannot
    send arguments that are not an object; google-genai 3.x drops the message, so this only
    applies where it keeps it.)"""
    raw = _MALFORMED_PREFIX.sub("", message, count=1)
    rest = _CALL_WRAPPER.sub("", raw, count=1)
    names = sorted((n for n in tool_names if n and rest.startswith(n)), key=len, reverse=True)
    if not names:
        return None
    return ToolCall(id=call_id, name=names[0], arguments=None, raw_arguments=raw)


def from_gemini(response: Any, tool_names: tuple[str, ...] = ()) -> ChatResponse:
    """A `GenerateContentResponse` as a `ChatResponse`; ValueError when required fields are
    missing."""
    candidates = getattr(response, "candidates", None)
    if not candidates:
        feedback = getattr(response, "prompt_feedback", None)
        reason = getattr(feedback, "block_reason", None)
        if reason is not None:
            raise LookupError(f"prompt blocked: {getattr(reason, 'value', reason)}")
        raise ValueError("the reply has no candidates")
    candidate = candidates[0]
    finish = getattr(candidate, "finish_reason", None)
    stop_reason = str(getattr(finish, "value", finish) or "")
    response_id = str(getattr(response, "response_id", "") or "")
    content = getattr(candidate, "content", None)
    parts = getattr(content, "parts", None) or []
    texts: list[str] = []
    calls: list[ToolCall] = []
    for part in parts:
        call = getattr(part, "function_call", None)
        if call is not None:
            name = call.name
            if not isinstance(name, str) or not name:
                raise ValueError("a function call has no name")
            args = call.args if call.args is not None else {}
            call_id = call.id or synthetic_id(response_id, len(calls), name, args)
            calls.append(
                ToolCall(
                    id=call_id,
                    name=name,
                    arguments=args if isinstance(args, dict) else None,
                    raw_arguments=json.dumps(args),
                )
            )
        elif getattr(part, "text", None) and not getattr(part, "thought", False):
            texts.append(part.text)
    if not calls and stop_reason == "MALFORMED_FUNCTION_CALL":
        message = str(getattr(candidate, "finish_message", "") or "")
        bad = _malformed_call(message, tool_names, synthetic_id(response_id, 0, "", message))
        if bad is not None:
            calls.append(bad)
    if content is None and not calls and stop_reason in {"", "STOP", "FINISH_REASON_UNSPECIFIED"}:
        raise ValueError(f"the candidate has no content (finish reason {stop_reason or 'none'})")
    usage = getattr(response, "usage_metadata", None)

    def count(name: str) -> int:
        return int(getattr(usage, name, 0) or 0)

    return ChatResponse(
        text="".join(texts),
        tool_calls=tuple(calls),
        usage=Usage(
            input_tokens=count("prompt_token_count") + count("tool_use_prompt_token_count"),
            output_tokens=count("candidates_token_count") + count("thoughts_token_count"),
            cached_input_tokens=count("cached_content_token_count"),
        ),
        stop_reason=stop_reason,
        model=str(getattr(response, "model_version", "") or ""),
    )


class GeminiGenAI:
    """`ChatClient` over `google.genai.Client(...).aio` (SDK retries off)."""

    provider = PROVIDER

    def __init__(self, api_key: str, base_url: str | None = None) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._client: genai.Client | None = None

    def _sdk(self) -> genai.Client:
        if self._client is None:
            options = types.HttpOptions(
                base_url=self._base_url, retry_options=types.HttpRetryOptions(attempts=1)
            )
            self._client = genai.Client(api_key=self._api_key, http_options=options)
        return self._client

    async def complete(
        self,
        request: ChatRequest,
        *,
        model: str,
        timeout: float,
        options: CallOptions = NO_OPTIONS,
    ) -> ChatResponse:
        try:
            contents = to_gemini_contents(request)
            config = to_gemini_config(request, timeout=timeout, options=options)
        except ValueError as err:  # pydantic validation of the request's own parts
            raise ProviderError("bad_request", str(err)[:500], provider=PROVIDER) from None
        try:
            async with asyncio.timeout(timeout):
                response = await self._sdk().aio.models.generate_content(
                    model=model,
                    contents=contents,  # type: ignore[arg-type]
                    config=config,
                )
        except genai_errors.APIError as err:
            headers = getattr(err.response, "headers", None)
            raise status_error(
                PROVIDER, int(err.code or 0), err.details, headers, api_key=self._api_key
            ) from None
        except Exception as err:  # noqa: BLE001 - nothing from the SDK may escape
            raise transport_error(PROVIDER, err, api_key=self._api_key) from None
        if not isinstance(response, types.GenerateContentResponse):
            detail = f"reply is not a GenerateContentResponse: {str(response)[:200]}"
            raise malformed(PROVIDER, detail, api_key=self._api_key)
        try:
            return from_gemini(response, tuple(t.name for t in request.tools))
        except LookupError as err:
            raise ProviderError("bad_request", str(err), provider=PROVIDER) from None
        except Exception as err:  # noqa: BLE001
            detail = f"{type(err).__name__}: {err}"
            raise malformed(PROVIDER, detail, api_key=self._api_key) from err
