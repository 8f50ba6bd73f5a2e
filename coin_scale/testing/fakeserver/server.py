"""A real HTTP server on 127.0.0.1 that speaks one provider's API closely enough for its official
SDK, answers with a `Policy`, injects `Faults`, and logs every request.

Stdlib only (`ThreadingHTTPServer`, one daemon thread per connection). Connections are kept
alive (HTTP/1.1) as the providers' servers keep them, so a client pays its TCP connect once, not
per request; `stop()` closes the open ones too. The expected API key is kept as a SHA-256 digest
and never logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import parse_qsl

from coin_scale.llm.messages import TOKENS_PER_IMAGE
from coin_scale.testing.fakeserver import wire_anthropic, wire_gemini, wire_openai
from coin_scale.testing.fakeserver.faults import WINDOW_S, Decision, FaultInjector, Faults
from coin_scale.testing.fakeserver.prompt_cache import (
    FakeUsage,
    PromptCache,
    base64_run_bytes,
    segments,
)
from coin_scale.testing.policy import Action, CallTool, ConversationView, Policy

HOST = "127.0.0.1"


class Wire(Protocol):
    """One API's wire format (each `wire_*` module is one)."""

    PROVIDER: str

    def base_url(self, host: str, port: int) -> str: ...

    def route(self, path: str) -> str | None: ...

    def presented_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None: ...

    def parse(self, body: dict[str, Any], model: str) -> ConversationView: ...

    def prompt_cache(self) -> PromptCache: ...

    def cache_pieces(self, body: dict[str, Any]) -> list[Any]: ...

    def reply(
        self, action: Action, *, model: str, call_id: str, usage: FakeUsage
    ) -> dict[str, Any]: ...

    def error(
        self, kind: str, status: int, detail: str = "", *, retry_after_s: float | None = None
    ) -> dict[str, Any]: ...


WIRES: dict[str, Wire] = {
    "openai": wire_openai,
    "anthropic": wire_anthropic,
    "gemini": wire_gemini,
}

MALFORMED_BODY = b'{"id": "fake", "object": "chat.completion", "choices": [{"index": 0, "mess'
"""A 200 body cut short: not valid JSON in any API."""


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One request as the server saw it."""

    arrived_at: float
    """`time.monotonic()` when the request arrived."""
    status: int
    model: str
    rounds: int
    """Assistant turns in the conversation (0 when the request did not parse)."""
    fault: str | None
    """The fault injected (`rate_limit`, `rpm_limit`, `server_error`, `malformed`,
    `spend_limit`), `auth` for a wrong key, `policy` when the policy raised, or None."""
    view: ConversationView | None = None
    """The parsed request, when it parsed."""
    usage: FakeUsage | None = None
    """What the server billed (answered requests only)."""


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _input_tokens(raw: bytes, images: int) -> int:
    """Billed input tokens the way providers count them: text at about 4 characters per token,
    each image as a fixed count (`TOKENS_PER_IMAGE`), not as the length of its base64."""
    return max(1, (len(raw) - base64_run_bytes(raw)) // 4 + images * TOKENS_PER_IMAGE)


def max_in_window(records: tuple[RequestRecord, ...], window_s: float = WINDOW_S) -> int:
    """The most requests that arrived within any `window_s`-second sliding window."""
    times = sorted(r.arrived_at for r in records)
    best = start = 0
    for end, t in enumerate(times):
        while times[start] <= t - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


class _Server(ThreadingHTTPServer):
    """A client that drops its connection (an SDK closing an idle keep-alive one, a killed
    gateway actor) is routine, as for a provider's server: not a traceback on stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # reset, aborted, broken pipe
            return
        super().handle_error(request, client_address)


class FakeProviderServer:
    """`provider`'s API on 127.0.0.1, answering with `policy`; a context manager."""

    def __init__(
        self,
        provider: str,
        policy: Policy,
        *,
        faults: Faults | None = None,
        api_key: str | None = None,
        port: int = 0,
        prompt_caching: bool = True,
    ) -> None:
        """`prompt_caching`: bill repeated prefixes as the provider's prompt cache does
        (`prompt_cache`); False bills every input token at full price."""
        if provider not in WIRES:
            raise ValueError(f"unknown provider {provider!r}; expected one of {', '.join(WIRES)}")
        self.provider = provider
        self.policy = policy
        self.faults = faults or Faults()
        self.wire = WIRES[provider]
        self._key_digest = _digest(api_key) if api_key is not None else None
        self._port = port
        self._injector = FaultInjector(self.faults)
        self.prompt_caching = prompt_caching
        self._cache = self.wire.prompt_cache()
        self._lock = threading.Lock()
        self._policy_lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._served = 0
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length

            def setup(self) -> None:
                super().setup()
                with owner._lock:
                    owner._connections.add(self.connection)

            def finish(self) -> None:
                with owner._lock:
                    owner._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                owner._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                owner._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # quiet, and headers (with the key) are never written anywhere

        httpd = _Server((HOST, self._port), Handler, bind_and_activate=False)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        httpd.request_queue_size = 256
        httpd.allow_reuse_address = True
        httpd.server_bind()
        httpd.server_activate()
        self._httpd = httpd
        self._stopping.clear()
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"fake-{self.provider}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes handlers sleeping out their latency
        httpd.shutdown()
        httpd.server_close()
        with self._lock:  # kept-alive connections would otherwise still be answered
            open_connections, self._connections = list(self._connections), set()
        for conn in open_connections:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """What to pass as `base_url` to this provider's adapter or SDK."""
        return self.wire.base_url(HOST, self.port)

    @property
    def log(self) -> tuple[RequestRecord, ...]:
        """Every request so far, in the order they were answered."""
        with self._lock:
            return tuple(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # -- one request -----------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        arrived = time.monotonic()
        path, _, query_text = h.path.partition("?")
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length > 0 else b""
        decision = self._injector.decide(arrived)
        answer, record = self._answer(h, path, dict(parse_qsl(query_text)), raw, decision, arrived)
        if decision.delay_s > 0:
            self._stopping.wait(decision.delay_s)
        with self._lock:
            self._log.append(record)
        try:
            h.send_response(answer.status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers:
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout)

    def _answer(
        self,
        h: BaseHTTPRequestHandler,
        path: str,
        query: dict[str, str],
        raw: bytes,
        decision: Decision,
        arrived: float,
    ) -> tuple[_Answer, RequestRecord]:
        """The answer to one request and its log record (pure but for the policy)."""
        wire = self.wire
        route = wire.route(path) if h.command == "POST" else None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        body = parsed if isinstance(parsed, dict) else None
        model = route or (str(body.get("model") or "") if body else "")
        reply = _Reply(wire, arrived, model, decision.retry_after_s)

        if route is None:
            return reply.error("not_found", 404, None, detail=f"{h.command} {path}")
        if self._key_digest is not None:
            headers = {k.lower(): v for k, v in h.headers.items()}
            presented = wire.presented_key(headers, query)
            if presented is None or not hmac.compare_digest(_digest(presented), self._key_digest):
                return reply.error("auth", 401, "auth")
        if body is None:
            return reply.error("bad_request", 400, None, detail="the body is not a JSON object")
        try:
            view = wire.parse(body, model)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            return reply.error("bad_request", 400, None, detail=f"{type(err).__name__}: {err}")
        fault = decision.fault
        if fault in ("rate_limit", "rpm_limit"):
            return reply.error("rate_limit", 429, fault, view)
        if fault == "spend_limit":
            return reply.error("spend_limit", 429, fault, view)
        if fault == "server_error":
            return reply.error("server_error", self.faults.server_error_status, fault, view)
        if fault == "malformed":
            return _Answer(200, MALFORMED_BODY), reply.record(200, fault, view)
        try:
            with self._policy_lock:
                action = self.policy(view)
        except Exception as err:  # noqa: BLE001 - a broken policy is a 500, not a dead thread
            detail = f"policy failed: {type(err).__name__}"
            return reply.error("server_error", 500, "policy", view, detail=detail)
        with self._lock:
            self._served += 1
            call_id = f"{self.provider[:2]}{self._served:06d}"
        out_text = action.text
        if isinstance(action, CallTool):
            out_text += action.name + (action.raw_arguments or json.dumps(action.arguments))
        usage = self._usage(body, raw, view, out_text)
        payload = wire.reply(action, model=view.model, call_id=call_id, usage=usage)
        return _Answer(200, _json(payload)), replace(reply.record(200, None, view), usage=usage)

    def _usage(
        self, body: dict[str, Any], raw: bytes, view: ConversationView, out_text: str
    ) -> FakeUsage:
        """The tokens billed: input as providers count it, the share the provider's prompt
        cache read or wrote (`prompt_cache`), output from the reply's text."""
        total = _input_tokens(raw, view.images)
        output = max(1, len(out_text) // 4)
        if not self.prompt_caching:
            return FakeUsage(input_tokens=total, output_tokens=output)
        charge = self._cache.charge(view.model, segments(self.wire.cache_pieces(body)))
        read = min(charge.read, total)
        return FakeUsage(
            input_tokens=total,
            output_tokens=output,
            cached_tokens=read,
            cache_write_tokens=min(charge.written, total - read),
        )


@dataclass(frozen=True)
class _Reply:
    """Builds the records and error answers of one request."""

    wire: Wire
    arrived: float
    model: str
    retry_after_s: float

    def record(
        self, status: int, fault: str | None, view: ConversationView | None
    ) -> RequestRecord:
        return RequestRecord(
            arrived_at=self.arrived,
            status=status,
            model=self.model,
            rounds=view.rounds if view else 0,
            fault=fault,
            view=view,
        )

    def error(
        self,
        kind: str,
        status: int,
        fault: str | None,
        view: ConversationView | None = None,
        *,
        detail: str = "",
    ) -> tuple[_Answer, RequestRecord]:
        """An error answer in the API's format; a 429 `rate_limit` says when to come back in
        both `retry-after` (whole seconds) and `retry-after-ms`, as the real APIs do."""
        headers: tuple[tuple[str, str], ...] = ()
        retry = None
        if kind == "rate_limit":
            retry = self.retry_after_s
            headers = (
                ("retry-after", str(math.ceil(retry))),
                ("retry-after-ms", str(round(retry * 1000))),
            )
        payload = self.wire.error(kind, status, detail, retry_after_s=retry)
        return _Answer(status, _json(payload), headers), self.record(status, fault, view)
