"""The fake provider servers on their own: fault scripts, seeded faults, the RPM limit, error
formats, the key check, the policy registry and the `python -m` entry point (127.0.0.1 only)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from coin_scale.testing.fakeserver import (
    POLICIES,
    CallTool,
    ConversationView,
    FakeProviderServer,
    Faults,
    FinishPolicy,
    Reply,
    RequestRecord,
    Scripted,
    max_in_window,
)
from coin_scale.testing.fakeserver.faults import FaultInjector
from coin_scale.testing.fakeserver.prompt_cache import base64_run_bytes

ROOT = Path(__file__).resolve().parents[1]
KEY = "fake-key-for-tests-0123456789"

pytestmark = pytest.mark.timeout(60)

BODIES: dict[str, dict[str, Any]] = {
    "openai": {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "finish", "parameters": {}}}],
    },
    "anthropic": {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "finish", "input_schema": {"type": "object"}}],
    },
    "gemini": {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "tools": [{"functionDeclarations": [{"name": "finish"}]}],
    },
}
PATHS = {
    "openai": "/chat/completions",
    "anthropic": "/v1/messages",
    "gemini": "/v1beta/models/m:generateContent",
}
KEY_HEADERS = {
    "openai": ("Authorization", f"Bearer {KEY}"),
    "anthropic": ("x-api-key", KEY),
    "gemini": ("x-goog-api-key", KEY),
}


def post(
    server: FakeProviderServer, body: Any = None, *, path: str | None = None, key: bool = True
) -> tuple[int, dict[str, str], bytes]:
    """One raw request: status, headers (lower-case names), body."""
    provider = server.provider
    url = server.base_url + (path or PATHS[provider])
    data = json.dumps(BODIES[provider] if body is None else body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    if key:
        request.add_header(*KEY_HEADERS[provider])
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def replies() -> Scripted:
    return Scripted((Reply(text="ok"),))


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_script_plays_in_order_then_probabilities_apply(provider: str) -> None:
    faults = Faults(
        script=("rate_limit", "server_error", None, "malformed", "spend_limit"), retry_after_s=0.25
    )
    with FakeProviderServer(provider, replies(), faults=faults) as server:
        answers = [post(server) for _ in range(6)]
    assert [a[0] for a in answers] == [429, 500, 200, 200, 429, 200]
    assert [r.fault for r in server.log] == [
        "rate_limit",
        "server_error",
        None,
        "malformed",
        "spend_limit",
        None,
    ]
    status, headers, _ = answers[0]
    assert headers["retry-after"] == "1" and headers["retry-after-ms"] == "250"
    with pytest.raises(ValueError):
        json.loads(answers[3][2])
    json.loads(answers[2][2])
    assert "retry-after-ms" not in answers[4][1]


def test_error_bodies_follow_each_api() -> None:
    faults = Faults(script=("rate_limit", "spend_limit", "server_error"))
    with FakeProviderServer("openai", replies(), faults=faults) as server:
        bodies = [json.loads(post(server)[2]) for _ in range(3)]
    assert bodies[0]["error"]["code"] == "rate_limit_exceeded"
    assert bodies[1]["error"]["code"] == "insufficient_quota"
    assert bodies[2]["error"]["type"] == "server_error"
    with FakeProviderServer(
        "anthropic", replies(), faults=Faults(script=("server_error",), server_error_status=529)
    ) as server:
        status, _, body = post(server)
    assert status == 529 and json.loads(body) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    with FakeProviderServer(
        "gemini", replies(), faults=Faults(script=("rate_limit", "spend_limit"), retry_after_s=3)
    ) as server:
        limited, spent = (json.loads(post(server)[2])["error"] for _ in range(2))
    assert limited["status"] == "RESOURCE_EXHAUSTED" and limited["details"][0]["retryDelay"] == "3s"
    assert "limit: 0" in spent["message"]


def test_seeded_faults_are_deterministic() -> None:
    faults = Faults(p_rate_limit=0.2, p_server_error=0.2, p_malformed=0.2, jitter_s=0.5, seed=7)
    first, second = FaultInjector(faults), FaultInjector(faults)
    a = [first.decide(float(i)) for i in range(200)]
    assert a == [second.decide(float(i)) for i in range(200)]
    counts = {n: sum(d.fault == n for d in a) for n in ("rate_limit", "server_error", "malformed")}
    assert all(20 <= n <= 60 for n in counts.values()), counts
    assert all(0.0 <= d.delay_s <= 0.5 for d in a)
    other = FaultInjector(Faults(p_rate_limit=0.2, p_server_error=0.2, p_malformed=0.2, seed=8))
    assert [other.decide(float(i)).fault for i in range(200)] != [d.fault for d in a]


def test_faults_are_validated() -> None:
    with pytest.raises(ValueError, match="p_rate_limit"):
        Faults(p_rate_limit=1.5)
    with pytest.raises(ValueError, match="unknown faults"):
        Faults(script=("meteor",))
    with pytest.raises(ValueError, match="rpm_limit"):
        Faults(rpm_limit=0)


def test_rpm_limit_answers_429_past_the_limit() -> None:
    with FakeProviderServer("openai", replies(), faults=Faults(rpm_limit=3)) as server:
        answers = [post(server) for _ in range(5)]
    assert [a[0] for a in answers] == [200, 200, 200, 429, 429]
    assert [r.fault for r in server.log][3:] == ["rpm_limit", "rpm_limit"]
    retry_after = float(answers[3][1]["retry-after-ms"]) / 1000
    assert 55.0 < retry_after <= 60.0  # when the first request leaves the window
    assert max_in_window(server.log) == 5
    ok = tuple(r for r in server.log if r.status == 200)
    assert max_in_window(ok) == 3


def test_injector_window_slides() -> None:
    injector = FaultInjector(Faults(rpm_limit=2))
    # Every arrival counts, refused ones too: at 61.5 the window (1.5, 61.5] holds 2, 61, 61.5.
    decisions = [injector.decide(t) for t in (0.0, 1.0, 2.0, 61.0, 61.5, 200.0)]
    assert [d.fault for d in decisions] == [None, None, "rpm_limit", None, "rpm_limit", None]
    # Come back at 61: (1, 61] holds 2 and the retry. At 121: (61, 121] holds 61.5 and the retry.
    assert decisions[2].retry_after_s == pytest.approx(59.0)
    assert decisions[4].retry_after_s == pytest.approx(59.5)


def test_max_in_window() -> None:
    def rec(t: float) -> RequestRecord:
        return RequestRecord(arrived_at=t, status=200, model="m", rounds=0, fault=None)

    records = tuple(rec(t) for t in (0.0, 10.0, 59.0, 60.0, 61.0, 130.0))
    assert max_in_window(records) == 4  # 10, 59, 60, 61
    assert max_in_window(records, window_s=2.0) == 2  # windows are (t - 2, t]
    assert max_in_window(()) == 0


def test_image_data_is_told_from_text_as_runs_of_base64() -> None:
    rng = random.Random(0)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-"
    pieces = []
    for _ in range(300):
        n = rng.choice([0, 1, 5, 255, 256, 257, 900])
        pieces.append("".join(rng.choice(alphabet) for _ in range(n)))
        pieces.append(rng.choice([" ", '","', ":", "\n", "é", ".", '"data:image/png;base64,']))
    raw = "".join(pieces).encode()
    runs = re.findall(rb"[A-Za-z0-9+/=_-]{256,}", raw)  # the definition
    assert base64_run_bytes(raw) == sum(map(len, runs)) > 0
    assert base64_run_bytes(b"a" * 256) == 256 and base64_run_bytes(b"a" * 255 + b" ") == 0


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_key_check_and_unknown_paths(provider: str) -> None:
    with FakeProviderServer(provider, replies(), api_key=KEY) as server:
        assert post(server)[0] == 200
        status, _, body = post(server, key=False)
        assert status == 401 and "error" in json.loads(body)
        assert post(server, path="/v1/nothing")[0] == 404
        assert post(server, body=["not", "an", "object"])[0] == 400
        assert post(server, body={"model": "m"})[0] == 400
    assert [(r.status, r.fault) for r in server.log] == [
        (200, None),
        (401, "auth"),
        (404, None),
        (400, None),
        (400, None),
    ]
    assert KEY not in repr(server.log) and KEY not in repr(vars(server))


def test_policy_registry() -> None:
    assert {"finish", "reply"} <= set(POLICIES)
    view = ConversationView(
        provider="openai",
        model="m",
        system="",
        user_texts=(),
        tool_results=(),
        rounds=0,
        tools=("finish",),
    )
    action = POLICIES["finish"]()(view)
    assert isinstance(action, CallTool) and action.name == "finish"
    assert set(action.arguments) == {"label", "description", "confidence", "evidence"}
    assert action.arguments["confidence"] == 0.5 and action.arguments["evidence"] == []
    no_tools = ConversationView(
        provider="openai", model="m", system="", user_texts=(), tool_results=(), rounds=0, tools=()
    )
    assert isinstance(FinishPolicy()(no_tools), Reply)


def test_a_failing_policy_is_a_500() -> None:
    def broken(view: ConversationView) -> Reply:
        raise RuntimeError("boom")

    with FakeProviderServer("anthropic", broken) as server:
        assert post(server)[0] == 500
        assert server.log[0].fault == "policy"


def test_stop_is_prompt_with_a_sleeping_request() -> None:
    import threading
    import time

    server = FakeProviderServer("openai", replies(), faults=Faults(latency_s=30.0)).start()
    worker = threading.Thread(target=lambda: post(server), daemon=True)
    worker.start()
    time.sleep(0.3)
    start = time.monotonic()
    server.stop()
    worker.join(timeout=5)
    assert time.monotonic() - start < 3.0 and not worker.is_alive()


def test_connections_are_kept_alive_and_closed_by_stop() -> None:
    """HTTP/1.1 keep-alive, as the providers' servers: many requests over one connection, and a
    stopped server answers none of them any more."""
    import http.client

    server = FakeProviderServer("openai", replies(), api_key=KEY).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Content-Type": "application/json", KEY_HEADERS["openai"][0]: KEY_HEADERS["openai"][1]}
    body = json.dumps(BODIES["openai"])
    for _ in range(3):
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["choices"]
        assert response.getheader("Connection", "keep-alive").lower() != "close"
    sock = conn.sock
    conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
    conn.getresponse().read()
    assert conn.sock is sock  # still the first connection
    server.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        conn.getresponse()
    conn.close()


def test_a_client_resetting_its_connection_is_not_a_traceback(capfd) -> None:
    """A client that drops its connection mid-request (an SDK closing an idle one, a killed
    gateway actor) is routine: the server prints nothing and goes on answering."""
    import socket
    import struct

    with FakeProviderServer("openai", replies(), api_key=KEY) as server:
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # half a request
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # linger 0: a reset, not a clean close
        status, _, _ = post(server)
    assert status == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err


def test_main_prints_ready_and_serves() -> None:
    env = dict(os.environ, FAKE_KEY=KEY, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coin_scale.testing.fakeserver",
            "--provider",
            "openai",
            "--port",
            "0",
            "--latency",
            "0.01",
            "--policy",
            "finish",
            "--api-key-env",
            "FAKE_KEY",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:") and line.endswith("/v1"), line
        base_url = line.split()[1]
        request = urllib.request.Request(
            base_url + "/chat/completions",
            data=json.dumps(BODIES["openai"]).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            reply = json.loads(response.read())
        (tool_call,) = reply["choices"][0]["message"]["tool_calls"]
        assert tool_call["function"]["name"] == "finish"
        assert json.loads(tool_call["function"]["arguments"])["label"] == "fake label"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert KEY not in out and KEY not in err
