"""Drive the agent loop in process with a scripted `Policy` instead of an LLM.

`view_from_request` shows a policy a `ChatRequest` the way a fake provider server shows it the
request it parsed off the wire; `policy_chat` wraps a policy as the loop's `chat` callable, with
token usage estimated from the request and optional prices, so budgets can be exercised too.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from coin_scale.agent.loop import CallContext, ChatResult
from coin_scale.llm.messages import CHARS_PER_TOKEN, ChatRequest, ChatResponse, ToolCall, Usage
from coin_scale.testing.policy import (
    CallTool,
    ConversationView,
    Policy,
    SeenToolResult,
)


def view_from_request(
    request: ChatRequest, *, provider: str = "local", model: str = "scripted"
) -> ConversationView:
    """What a policy sees of a request: user texts, tool results, assistant turns, tools."""
    user_texts = tuple(m.text for m in request.messages if m.role == "user" and m.text)
    results = tuple(
        SeenToolResult(name=r.name, content=r.content, is_error=r.is_error, images=len(r.images))
        for m in request.messages
        for r in m.tool_results
    )
    images = sum(
        len(m.images) + sum(len(r.images) for r in m.tool_results) for m in request.messages
    )
    return ConversationView(
        provider=provider,
        model=model,
        system=request.system,
        user_texts=user_texts,
        tool_results=results,
        rounds=sum(1 for m in request.messages if m.role == "assistant"),
        tools=tuple(t.name for t in request.tools),
        images=images,
    )


def _tool_call(action: CallTool, call_id: str) -> ToolCall:
    if action.raw_arguments is None:
        return ToolCall(
            id=call_id,
            name=action.name,
            arguments=dict(action.arguments),
            raw_arguments=json.dumps(action.arguments),
        )
    try:
        parsed = json.loads(action.raw_arguments)
    except ValueError:
        parsed = None
    return ToolCall(
        id=call_id,
        name=action.name,
        arguments=parsed if isinstance(parsed, dict) else None,
        raw_arguments=action.raw_arguments,
    )


def policy_chat(
    policy: Policy,
    *,
    provider: str = "local",
    model: str = "scripted",
    usd_per_million_input: float = 0.0,
    usd_per_million_output: float = 0.0,
) -> Callable[[ChatRequest, CallContext], Awaitable[ChatResult]]:
    """A `chat` callable answering with the policy's action. Tool call ids are
    `call-<unit>-<round>`; usage is estimated (`ChatRequest.estimate_input_tokens`, output by
    characters) and priced per million tokens."""

    async def chat(request: ChatRequest, context: CallContext) -> ChatResult:
        action = policy(view_from_request(request, provider=provider, model=model))
        calls: tuple[ToolCall, ...] = ()
        if isinstance(action, CallTool):
            calls = (_tool_call(action, f"call-{context.unit}-{context.round}"),)
        text = action.text
        output = len(text) + sum(len(c.raw_arguments) for c in calls)
        usage = Usage(
            input_tokens=request.estimate_input_tokens(),
            output_tokens=max(1, output // CHARS_PER_TOKEN),
        )
        cost = (
            usage.input_tokens * usd_per_million_input
            + usage.output_tokens * usd_per_million_output
        ) / 1e6
        response = ChatResponse(
            text=text,
            tool_calls=calls,
            usage=usage,
            stop_reason="tool_calls" if calls else "stop",
            model=model,
        )
        return ChatResult(response=response, cost_usd=cost)

    return chat
