"""Anthropic Messages on the wire: `POST /v1/messages`, key in `x-api-key` or (as anthropic 2.x
sends it) `Authorization: Bearer`.

Tool results are `tool_result` blocks (text and image blocks, `is_error`); their names come from
the `tool_use` blocks with the same id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coin_scale.testing.fakeserver.prompt_cache import FakeUsage, PromptCache
from coin_scale.testing.policy import Action, CallTool, ConversationView, SeenToolResult

PROVIDER = "anthropic"
PATHS = ("/v1/messages",)


def base_url(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def route(path: str) -> str | None:
    """The model named by the path ("" when the body names it), or None for an unknown path."""
    return "" if path.rstrip("/") in PATHS else None


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The key the request presents (`headers` has lower-case names)."""
    bearer = headers.get("authorization") or ""
    return headers.get("x-api-key") or (bearer[7:] if bearer.startswith("Bearer ") else None)


def prompt_cache() -> PromptCache:
    """Anthropic caches only up to blocks marked `cache_control` (at least 1,024 tokens; writes are
    billed)."""
    return PromptCache("explicit", min_tokens=1024)


def cache_pieces(body: dict[str, Any]) -> list[Any]:
    """The request in the order Anthropic caches it: each tool, the system prompt's blocks, then
    each message's blocks."""
    system = body.get("system") or []
    pieces: list[Any] = list(body.get("tools") or [])
    pieces.extend(_blocks(system) if system else [])
    for m in body["messages"]:
        pieces.extend({"role": m.get("role"), **b} for b in _blocks(m.get("content")))
    return pieces


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(isinstance(b, dict) for b in content):
        return content
    raise ValueError("content must be a string or a list of blocks")


def parse(body: dict[str, Any], model: str) -> ConversationView:
    """The request as a policy sees it."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    system = body.get("system") or ""
    if isinstance(system, list):
        system = "".join(b.get("text", "") for b in system)
    user_texts: list[str] = []
    results: list[SeenToolResult] = []
    names: dict[str, str] = {}
    images = rounds = 0
    for m in messages:
        role = m.get("role")
        if role == "assistant":
            rounds += 1
            for block in _blocks(m.get("content")):
                if block.get("type") == "tool_use":
                    names[block["id"]] = block["name"]
        elif role == "user":
            for block in _blocks(m.get("content")):
                kind = block.get("type")
                if kind == "text":
                    user_texts.append(block.get("text") or "")
                elif kind == "image":
                    images += 1
                elif kind == "tool_result":
                    inner = _blocks(block.get("content") or [])
                    n_images = sum(1 for b in inner if b.get("type") == "image")
                    images += n_images
                    results.append(
                        SeenToolResult(
                            name=names.get(block.get("tool_use_id", ""), ""),
                            content="".join(
                                b.get("text", "") for b in inner if b.get("type") == "text"
                            ),
                            is_error=bool(block.get("is_error")),
                            images=n_images,
                        )
                    )
        else:
            raise ValueError(f"unknown role {role!r}")
    return ConversationView(
        provider=PROVIDER,
        model=str(body.get("model") or model),
        system=str(system),
        user_texts=tuple(user_texts),
        tool_results=tuple(results),
        rounds=rounds,
        tools=tuple(t["name"] for t in body.get("tools") or []),
        images=images,
    )


def reply(action: Action, *, model: str, call_id: str, usage: FakeUsage) -> dict[str, Any]:
    """A `message` object for `action` (raw arguments are sent as a JSON string `input`)."""
    content: list[dict[str, Any]] = []
    if action.text:
        content.append({"type": "text", "text": action.text})
    stop = "end_turn"
    if isinstance(action, CallTool):
        tool_input: Any = action.arguments if action.raw_arguments is None else action.raw_arguments
        content.append(
            {"type": "tool_use", "id": f"toolu_{call_id}", "name": action.name, "input": tool_input}
        )
        stop = "tool_use"
    return {
        "id": f"msg_{call_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            # Anthropic's input_tokens is what follows the last breakpoint only.
            "input_tokens": usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cached_tokens,
            "output_tokens": usage.output_tokens,
        },
    }


_ERRORS: dict[str, tuple[str, str]] = {
    "rate_limit": (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization. Please try again later.",
    ),
    "spend_limit": (
        "rate_limit_error",
        "You have reached your specified API usage limits. You will regain access at the start "
        "of next month.",
    ),
    "server_error": ("api_error", "Internal server error"),
    "overloaded": ("overloaded_error", "Overloaded"),
    "auth": ("authentication_error", "invalid x-api-key"),
    "bad_request": ("invalid_request_error", "Invalid request."),
    "not_found": ("not_found_error", "Not found."),
}


def error(
    kind: str, status: int, detail: str = "", *, retry_after_s: float | None = None
) -> dict[str, Any]:
    """The API's error body for `kind` (529 is `overloaded_error`)."""
    err_type, message = _ERRORS["overloaded" if status == 529 else kind]
    return {"type": "error", "error": {"type": err_type, "message": f"{message} {detail}".strip()}}
