"""OpenAI Chat Completions on the wire: `POST /v1/chat/completions`, `Authorization: Bearer`.

A tool result's name is recovered from the assistant tool call with the same id; its images are
the image parts that follow an "Images returned by tool call <id>" note in a user message (how
`providers.openai_chat` sends them, since `tool` messages carry text only).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from coin_scale.testing.fakeserver.prompt_cache import FakeUsage, PromptCache
from coin_scale.testing.policy import Action, CallTool, ConversationView, SeenToolResult

PROVIDER = "openai"
PATHS = ("/v1/chat/completions", "/chat/completions")

_NOTE = re.compile(r"^Images returned by tool call (\S+)")


def base_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/v1"


def route(path: str) -> str | None:
    """The model named by the path ("" when the body names it), or None for an unknown path."""
    return "" if path.rstrip("/") in PATHS else None


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The key the request presents (`headers` has lower-case names)."""
    auth = headers.get("authorization") or ""
    return auth[7:] if auth.startswith("Bearer ") else None


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise ValueError("content must be a string or a list of parts")


def _is_error(content: str) -> bool:
    try:
        value = json.loads(content)
    except ValueError:
        return False
    return isinstance(value, dict) and "error" in value


def prompt_cache() -> PromptCache:
    """OpenAI caches every prompt of 1,024 tokens or more, and reuses its prefix in 128-token
    steps."""
    return PromptCache("automatic", min_tokens=1024, granularity=128)


_REASONING = re.compile(r"^(o\d|gpt-5)")


def cache_pieces(body: dict[str, Any]) -> list[Any]:
    """The request in the order OpenAI caches it: tools, then each message."""
    return [body.get("tools") or [], *body["messages"]]


def parse(body: dict[str, Any], model: str) -> ConversationView:
    """The request as a policy sees it."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    name = str(body.get("model") or model)
    temperature = body.get("temperature")
    if _REASONING.match(name) and temperature is not None and temperature != 1:
        # What api.openai.com answers a reasoning model sent another temperature.
        raise ValueError(
            f"Unsupported value: 'temperature' does not support {temperature} with this model. "
            "Only the default (1) value is supported."
        )
    system: list[str] = []
    user_texts: list[str] = []
    results: list[tuple[str, str, str]] = []  # call id, name, content
    result_images: dict[str, int] = {}
    call_names: dict[str, str] = {}
    images = rounds = 0
    for m in messages:
        if not isinstance(m, dict):
            raise ValueError("each message must be an object")
        role, content = m.get("role"), m.get("content")
        if role in ("system", "developer"):
            system.append(_text(content))
        elif role == "assistant":
            rounds += 1
            for call in m.get("tool_calls") or []:
                call_names[call["id"]] = call["function"]["name"]
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                raise ValueError("a tool message needs 'tool_call_id'")
            results.append((call_id, call_names.get(call_id, ""), _text(content)))
        elif role == "user":
            parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
            owner: str | None = None
            for part in parts:
                if part.get("type") == "text":
                    note = _NOTE.match(part.get("text") or "")
                    owner = note.group(1) if note else None
                    if not note:
                        user_texts.append(part.get("text") or "")
                elif part.get("type") == "image_url":
                    images += 1
                    if owner is not None:
                        result_images[owner] = result_images.get(owner, 0) + 1
        else:
            raise ValueError(f"unknown role {role!r}")
    tools = tuple(t["function"]["name"] for t in body.get("tools") or [])
    return ConversationView(
        provider=PROVIDER,
        model=str(body.get("model") or model),
        system="\n".join(system),
        user_texts=tuple(user_texts),
        tool_results=tuple(
            SeenToolResult(
                name=name, content=text, is_error=_is_error(text), images=result_images.get(cid, 0)
            )
            for cid, name, text in results
        ),
        rounds=rounds,
        tools=tools,
        images=images,
    )


def reply(action: Action, *, model: str, call_id: str, usage: FakeUsage) -> dict[str, Any]:
    """A `chat.completion` object for `action`."""
    message: dict[str, Any] = {"role": "assistant", "content": action.text or None, "refusal": None}
    finish = "stop"
    if isinstance(action, CallTool):
        arguments = (
            action.raw_arguments
            if action.raw_arguments is not None
            else json.dumps(action.arguments)
        )
        message["tool_calls"] = [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": action.name, "arguments": arguments},
            }
        ]
        finish = "tool_calls"
    return {
        "id": f"chatcmpl-{call_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "audio_tokens": 0},
        },
    }


_ERRORS: dict[str, tuple[str, str | None, str]] = {
    "rate_limit": (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM). Please try again later.",
    ),
    "spend_limit": (
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    "server_error": (
        "server_error",
        None,
        "The server had an error while processing your request.",
    ),
    "auth": ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    "bad_request": ("invalid_request_error", None, "Invalid request."),
    "not_found": ("invalid_request_error", "unknown_url", "Unknown request URL."),
}


def error(
    kind: str, status: int, detail: str = "", *, retry_after_s: float | None = None
) -> dict[str, Any]:
    """The API's error body for `kind` (a key of `_ERRORS`)."""
    err_type, code, message = _ERRORS[kind]
    return {
        "error": {
            "message": f"{message} {detail}".strip(),
            "type": err_type,
            "param": None,
            "code": code,
        }
    }
