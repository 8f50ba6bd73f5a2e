"""Gemini `generateContent` on the wire: `POST /{version}/models/{model}:generateContent`
(google-genai 3.x sends `v1`; `v1beta` and `v1alpha` are accepted too), `x-goog-api-key`.

Field names are accepted in camelCase and snake_case, as the API does (the SDK mixes them).
Function calls are sent without ids, as Gemini often does. Arguments that are not a JSON object
cannot travel as a `functionCall`; Gemini reports such a call as a `MALFORMED_FUNCTION_CALL`
finish whose message quotes it, and so does this server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from coin_scale.testing.fakeserver.prompt_cache import FakeUsage, PromptCache
from coin_scale.testing.policy import Action, CallTool, ConversationView, SeenToolResult

PROVIDER = "gemini"

_PATH = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+):generateContent$")
_NOTE = re.compile(r"^Images returned by tool call (\S+) \(([^)]*)\)")


def base_url(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def route(path: str) -> str | None:
    """The model named by the path, or None for an unknown path."""
    match = _PATH.match(path)
    return match.group(2) if match else None


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The key the request presents (`headers` has lower-case names)."""
    return headers.get("x-goog-api-key") or query.get("key")


def _get(d: dict[str, Any], camel: str) -> Any:
    """`d[camel]`, or its snake_case spelling."""
    if camel in d:
        return d[camel]
    return d.get(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel))


def _result_text(response: Any) -> str:
    if isinstance(response, dict) and set(response) == {"output"}:
        output = response["output"]
        return output if isinstance(output, str) else json.dumps(output)
    return json.dumps(response)


def prompt_cache() -> PromptCache:
    """Gemini 2.5's implicit caching: a repeated prefix of 1,024 tokens or more is a hit."""
    return PromptCache("automatic", min_tokens=1024)


def cache_pieces(body: dict[str, Any]) -> list[Any]:
    """The request in the order Gemini reads it: system instruction, tools, then each content."""
    config = _get(body, "generationConfig") or {}
    return [
        _get(body, "systemInstruction") or {},
        _get(body, "tools") or _get(config, "tools") or [],
        *body["contents"],
    ]


def parse(body: dict[str, Any], model: str) -> ConversationView:
    """The request as a policy sees it."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise ValueError("'contents' must be a non-empty list")
    system = _get(body, "systemInstruction") or ""
    if isinstance(system, dict):
        system = "".join(p.get("text", "") for p in system.get("parts") or [])
    user_texts: list[str] = []
    results: list[dict[str, Any]] = []
    images = rounds = 0
    for content in contents:
        role = content.get("role", "user")
        if role == "model":
            rounds += 1
            continue
        if role not in ("user", "function"):  # "function": older clients' function responses
            raise ValueError(f"unknown role {role!r}")
        owner: dict[str, Any] | None = None
        for part in content.get("parts") or []:
            response = _get(part, "functionResponse")
            if response is not None:
                result = response.get("response") or {}
                results.append(
                    {
                        "id": response.get("id"),
                        "name": response.get("name", ""),
                        "content": _result_text(result),
                        "is_error": isinstance(result, dict) and "error" in result,
                        "images": 0,
                    }
                )
            elif _get(part, "inlineData") is not None:
                images += 1
                if owner is not None:
                    owner["images"] += 1
            elif "text" in part:
                note = _NOTE.match(part["text"] or "")
                owner = None
                if note:
                    by_id = [r for r in results if r["id"] == note.group(1)]
                    by_name = [r for r in results if r["name"] == note.group(2)]
                    matches = by_id or by_name
                    owner = matches[-1] if matches else None
                else:
                    user_texts.append(part["text"] or "")
    tools = tuple(
        d["name"]
        for tool in body.get("tools") or []
        for d in _get(tool, "functionDeclarations") or []
    )
    return ConversationView(
        provider=PROVIDER,
        model=model,
        system=str(system),
        user_texts=tuple(user_texts),
        tool_results=tuple(
            SeenToolResult(
                name=r["name"], content=r["content"], is_error=r["is_error"], images=r["images"]
            )
            for r in results
        ),
        rounds=rounds,
        tools=tools,
        images=images,
    )


def _object_or_none(raw: str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def reply(action: Action, *, model: str, call_id: str, usage: FakeUsage) -> dict[str, Any]:
    """A `GenerateContentResponse` for `action`."""
    parts: list[dict[str, Any]] = [{"text": action.text}] if action.text else []
    candidate: dict[str, Any] = {"index": 0, "finishReason": "STOP"}
    if isinstance(action, CallTool):
        args = (
            action.arguments
            if action.raw_arguments is None
            else _object_or_none(action.raw_arguments)
        )
        if args is None:
            candidate["finishReason"] = "MALFORMED_FUNCTION_CALL"
            candidate["finishMessage"] = (
                f"Malformed function call: print(default_api.{action.name}({action.raw_arguments}))"
            )
        else:
            parts.append({"functionCall": {"name": action.name, "args": args}})
    if parts:
        candidate["content"] = {"role": "model", "parts": parts}
    return {
        "candidates": [candidate],
        "usageMetadata": {
            "promptTokenCount": usage.input_tokens,
            "cachedContentTokenCount": usage.cached_tokens,
            "candidatesTokenCount": usage.output_tokens,
            "totalTokenCount": usage.input_tokens + usage.output_tokens,
        },
        "modelVersion": model,
        "responseId": call_id,
    }


_ERRORS: dict[str, tuple[str, str]] = {
    "rate_limit": ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    "spend_limit": (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. Quota "
        "exceeded for metric: "
        "generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 0",
    ),
    "server_error": ("INTERNAL", "An internal error has occurred. Please retry."),
    "auth": ("UNAUTHENTICATED", "API key not valid. Please pass a valid API key."),
    "bad_request": ("INVALID_ARGUMENT", "Invalid request."),
    "not_found": ("NOT_FOUND", "Not found."),
}


def error(
    kind: str, status: int, detail: str = "", *, retry_after_s: float | None = None
) -> dict[str, Any]:
    """The API's error body (`google.rpc.Status`) for `kind`."""
    code, message = _ERRORS[kind]
    body: dict[str, Any] = {
        "code": status,
        "message": f"{message} {detail}".strip(),
        "status": code,
    }
    details: list[dict[str, Any]] = []
    if kind == "auth":
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
        )
    if kind == "rate_limit" and retry_after_s is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{retry_after_s:g}s",
            }
        )
    if details:
        body["details"] = details
    return {"error": body}
