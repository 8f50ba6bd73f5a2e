"""Provider adapters through the official SDKs against the fake provider servers (127.0.0.1 only):
replies, tool round trips with images, usage, and every error kind."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest

from coin_scale.llm.messages import (
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    ProviderError,
    ToolCall,
    ToolResult,
    ToolSpec,
)
from coin_scale.llm.providers import PROVIDERS, ChatClient, make_client
from coin_scale.llm.providers._errors import (
    classify_status,
    parse_retry_after,
    retry_delay_from_body,
    scrub,
)
from coin_scale.llm.providers.gemini_genai import SYNTHETIC_ID_PREFIX, synthetic_id
from coin_scale.testing.fakeserver import CallTool, FakeProviderServer, Faults, Reply, Scripted

KEY = "sk-test-0123456789abcdefSECRET"
IMAGE = ImagePart(data=b"\x89PNG\r\n\x1a\n not really a png", media_type="image/png")
TOOLS = (
    ToolSpec(
        name="render",
        description="Render scenes.",
        parameters={
            "type": "object",
            "properties": {"n": {"type": "integer"}, "colour": {"enum": ["red", "blue"]}},
            "required": ["n"],
        },
    ),
    ToolSpec(name="finish", description="Give the answer.", parameters={"type": "object"}),
)
FIRST = Message(role="user", text="What does unit 7 detect?", images=(IMAGE,))
ASK = ChatRequest(system="You explain neurons.", messages=(FIRST,), tools=TOOLS, max_tokens=200)

pytestmark = pytest.mark.timeout(60)


def call(
    provider: str,
    server: FakeProviderServer,
    request: ChatRequest = ASK,
    *,
    key: str = KEY,
    timeout: float = 5.0,
) -> ChatResponse:
    client = make_client(provider, api_key=key, base_url=server.base_url)
    return asyncio.run(client.complete(request, model="test-model", timeout=timeout))


def failure(provider: str, server: FakeProviderServer, **kwargs: Any) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        call(provider, server, **kwargs)
    err = info.value
    assert KEY not in str(err) and KEY[:-4] not in str(err)
    assert err.provider == provider
    return err


def key_absent(server: FakeProviderServer) -> None:
    assert KEY not in repr(server.log)
    assert KEY not in repr(vars(server))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_text_reply_and_usage(provider: str) -> None:
    with FakeProviderServer(
        provider, Scripted((Reply(text="It detects red squares."),)), api_key=KEY
    ) as server:
        response = call(provider, server)
    assert response.text == "It detects red squares."
    assert response.tool_calls == ()
    assert response.usage.input_tokens > 10 and response.usage.output_tokens >= 1
    assert response.stop_reason in {"stop", "end_turn", "STOP"}
    assert response.model == "test-model"
    (record,) = server.log
    assert (record.status, record.model, record.rounds, record.fault) == (
        200,
        "test-model",
        0,
        None,
    )
    assert record.view is not None
    assert record.view.system == "You explain neurons."
    assert record.view.user_texts == ("What does unit 7 detect?",)
    assert record.view.tools == ("render", "finish") and record.view.images == 1
    key_absent(server)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_call_round_trip_with_images(provider: str) -> None:
    policy = Scripted(
        (
            CallTool(name="render", arguments={"n": 2, "colour": "red"}),
            CallTool(name="finish", arguments={"label": "red things"}),
        )
    )
    with FakeProviderServer(provider, policy, api_key=KEY) as server:
        first = call(provider, server)
        (render,) = first.tool_calls
        assert render.name == "render" and render.arguments == {"n": 2, "colour": "red"}
        assert json.loads(render.raw_arguments) == {"n": 2, "colour": "red"}
        assert render.id
        result = ToolResult(
            call_id=render.id,
            name="render",
            content=json.dumps({"images": ["img-1", "img-2"], "activations": [1.5, 0.25]}),
            images=(IMAGE, IMAGE),
        )
        follow = ChatRequest(
            system=ASK.system,
            messages=(
                FIRST,
                Message(role="assistant", text=first.text, tool_calls=first.tool_calls),
                Message(role="user", tool_results=(result,), text="Here you are."),
            ),
            tools=TOOLS,
        )
        second = call(provider, server, follow)
    (finish,) = second.tool_calls
    assert finish.name == "finish" and finish.arguments == {"label": "red things"}
    assert second.stop_reason in {"tool_calls", "tool_use", "STOP"}
    assert [r.rounds for r in server.log] == [0, 1]
    view = server.log[1].view
    assert view is not None
    assert view.images == 3  # the user's image and the tool result's two
    (seen,) = view.tool_results
    assert seen.name == "render" and seen.images == 2 and not seen.is_error
    assert seen.json() == {"images": ["img-1", "img-2"], "activations": [1.5, 0.25]}
    assert "Here you are." in view.user_texts
    if provider == "gemini":
        assert render.id.startswith(SYNTHETIC_ID_PREFIX)  # the fake sends no ids, like Gemini
    key_absent(server)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_error_result_is_flagged(provider: str) -> None:
    call_ = ToolCall(id="call_1", name="render", arguments={"n": 1}, raw_arguments='{"n": 1}')
    request = ChatRequest(
        system="s",
        messages=(
            FIRST,
            Message(role="assistant", tool_calls=(call_,)),
            Message(
                role="user",
                tool_results=(
                    ToolResult(
                        call_id="call_1",
                        name="render",
                        content=json.dumps({"error": "n must be >= 2"}),
                        is_error=True,
                    ),
                ),
            ),
        ),
        tools=TOOLS,
    )
    with FakeProviderServer(provider, Scripted((Reply(text="ok"),))) as server:
        assert call(provider, server, request).text == "ok"
    view = server.log[0].view
    assert view is not None
    (seen,) = view.tool_results
    assert seen.is_error and seen.json() == {"error": "n must be >= 2"} and seen.name == "render"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_invalid_tool_arguments_are_kept_raw(provider: str) -> None:
    policy = Scripted((CallTool(name="finish", raw_arguments="{not json"),))
    with FakeProviderServer(provider, policy) as server:
        response = call(provider, server)
    if provider == "gemini":
        # Gemini cannot send arguments that are not an object: it finishes with
        # MALFORMED_FUNCTION_CALL, and google-genai drops the message that quotes the call.
        assert response.tool_calls == () and response.stop_reason == "MALFORMED_FUNCTION_CALL"
        return
    (bad,) = response.tool_calls
    assert bad.name == "finish" and bad.arguments is None and bad.raw_arguments == "{not json"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_replaying_an_invalid_call_is_accepted(provider: str) -> None:
    bad = ToolCall(id="call_9", name="finish", arguments=None, raw_arguments="{not json")
    request = ChatRequest(
        system="s",
        messages=(
            FIRST,
            Message(role="assistant", tool_calls=(bad,)),
            Message(
                role="user",
                tool_results=(
                    ToolResult(
                        call_id="call_9",
                        name="finish",
                        content='{"error": "not JSON"}',
                        is_error=True,
                    ),
                ),
            ),
        ),
        tools=TOOLS,
    )
    with FakeProviderServer(provider, Scripted((Reply(text="sorry"),))) as server:
        assert call(provider, server, request).text == "sorry"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rate_limit_carries_retry_after_and_is_not_retried_by_the_sdk(provider: str) -> None:
    faults = Faults(script=("rate_limit",), retry_after_s=2.5)
    with FakeProviderServer(
        provider, Scripted((Reply(text="x"),)), faults=faults, api_key=KEY
    ) as server:
        err = failure(provider, server)
        assert err.kind == "rate_limit" and err.retryable and err.status == 429
        assert err.retry_after == pytest.approx(2.5)
        assert len(server.log) == 1 and server.log[0].fault == "rate_limit"
        assert call(provider, server).text == "x"  # the script is over: the next one goes through
    key_absent(server)


@pytest.mark.parametrize(
    ("provider", "status"), [(p, 500) for p in PROVIDERS] + [("anthropic", 529)]
)
def test_server_error(provider: str, status: int) -> None:
    faults = Faults(script=("server_error",), server_error_status=status)
    with FakeProviderServer(provider, Scripted((Reply(text="x"),)), faults=faults) as server:
        err = failure(provider, server)
    assert err.kind == "server" and err.retryable and err.status == status
    assert len(server.log) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_body(provider: str) -> None:
    faults = Faults(script=("malformed",))
    with FakeProviderServer(provider, Scripted((Reply(text="x"),)), faults=faults) as server:
        err = failure(provider, server)
    assert err.kind == "malformed" and err.retryable
    assert len(server.log) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_wrong_key_is_auth(provider: str) -> None:
    with FakeProviderServer(
        provider, Scripted((Reply(text="x"),)), api_key="the-right-key-42"
    ) as server:
        err = failure(provider, server)
    assert err.kind == "auth" and not err.retryable and err.status == 401
    assert [(r.status, r.fault) for r in server.log] == [(401, "auth")]
    assert "the-right-key-42" not in repr(vars(server))
    key_absent(server)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_spend_limit_is_not_retryable(provider: str) -> None:
    faults = Faults(spend_limit=True)
    with FakeProviderServer(
        provider, Scripted((Reply(text="x"),)), faults=faults, api_key=KEY
    ) as server:
        err = failure(provider, server)
    assert err.kind == "spend_limit" and not err.retryable and err.status == 429
    assert len(server.log) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_timeout(provider: str) -> None:
    faults = Faults(latency_s=3.0)
    with FakeProviderServer(provider, Scripted((Reply(text="x"),)), faults=faults) as server:
        start = time.monotonic()
        err = failure(provider, server, timeout=0.4)
        elapsed = time.monotonic() - start
    assert err.kind == "timeout" and err.retryable
    assert elapsed < 2.0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_connection_refused(provider: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = {"openai": f"http://127.0.0.1:{port}/v1"}.get(provider, f"http://127.0.0.1:{port}")
    client: ChatClient = make_client(provider, api_key=KEY, base_url=base)
    with pytest.raises(ProviderError) as info:
        asyncio.run(client.complete(ASK, model="m", timeout=2.0))
    assert info.value.kind == "connection" and KEY not in str(info.value)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_client_serves_several_event_loops(provider: str) -> None:
    with FakeProviderServer(provider, Scripted((Reply(text="x"),))) as server:
        client = make_client(provider, api_key=KEY, base_url=server.base_url)
        for _ in range(2):
            assert asyncio.run(client.complete(ASK, model="m", timeout=5)).text == "x"


# -- pure pieces ---------------------------------------------------------------------------


def test_retry_after_parsing() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert (
        parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0)
        == 10.0
    )
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None
    body = {"error": {"details": [{"@type": "x.RetryInfo", "retryDelay": "37s"}]}}
    assert retry_delay_from_body(body) == 37.0


@pytest.mark.parametrize(
    ("status", "text", "code", "kind"),
    [
        (429, "Rate limit reached for requests per min", "rate_limit_exceeded", "rate_limit"),
        (
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "spend_limit",
        ),
        # Gemini says "check your plan and billing details" on every per-minute 429.
        (
            429,
            "You exceeded your current quota, please check your plan and billing details. "
            "Quota exceeded for metric: generate_requests_per_minute, limit: 15",
            None,
            "rate_limit",
        ),
        (
            429,
            "Quota exceeded for metric: ..._free_tier_requests, limit: 0, model: x",
            None,
            "spend_limit",
        ),
        (400, "Your credit balance is too low to access the Anthropic API.", None, "spend_limit"),
        (429, "You have reached your specified API usage limits.", None, "spend_limit"),
        (
            400,
            '{"error":{"message":"API key not valid.","details":[{"reason":"API_KEY_INVALID"}]}}',
            None,
            "auth",
        ),
        (400, "messages: field required", None, "bad_request"),
        (404, "model not found", None, "bad_request"),
        (422, "unprocessable", None, "bad_request"),
        (401, "", None, "auth"),
        (403, "", None, "auth"),
        (408, "", None, "timeout"),
        (500, "", None, "server"),
        (503, "", None, "server"),
        (529, "Overloaded", None, "server"),
    ],
)
def test_status_classification(status: int, text: str, code: str | None, kind: str) -> None:
    assert classify_status(status, text, code=code) == kind


def test_scrub_removes_the_key() -> None:
    assert scrub(f"bad key {KEY}!", KEY) == "bad key ***!"
    assert KEY[:-4] not in scrub(f"Incorrect API key provided: {KEY[:-4]}abcd", KEY)
    assert len(scrub("x" * 10_000, KEY)) <= 500


def test_synthetic_gemini_ids_are_stable() -> None:
    a = synthetic_id("resp-1", 0, "render", {"n": 2})
    assert a == synthetic_id("resp-1", 0, "render", {"n": 2})
    assert a != synthetic_id("resp-1", 1, "render", {"n": 2})
    assert a.startswith(SYNTHETIC_ID_PREFIX)
