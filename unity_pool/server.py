"""A render server for any backend: frames in, images and attributes out, on one TCP port.

A backend is anything with a `name` and `render(spec) -> Rendered` that raises `SceneError` (a
`ValueError`) for a bad spec. The server validates nothing itself; it frames, dispatches `ping`
and `render`, times each render, turns a bad spec into an `invalid_scene` result and any other
exception into an `internal` one, and never dies on what a client sends.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

from unity_pool import protocol
from unity_pool.scene import SceneError

log = logging.getLogger(__name__)

MAX_SCENES_PER_REQUEST = 4096
"""A render request with more scenes is answered `too_large`."""


@dataclass(frozen=True, kw_only=True)
class Rendered:
    """What a backend returns for one scene."""

    image: bytes
    """The encoded image."""
    format: str
    """Encoding of `image`, e.g. "png"."""
    width: int
    """Pixels."""
    height: int
    """Pixels."""
    attributes: dict[str, Any]
    """Resolved ground-truth attributes (`vocab.ATTRIBUTES` keys)."""


class Backend(Protocol):
    """A renderer the server can host."""

    name: str
    """Short name reported by `ping`, e.g. "procedural", "unity"."""

    def render(self, spec: Mapping[str, Any]) -> Rendered:
        """Render one scene spec (parsed JSON); raise `SceneError` if it is invalid."""
        ...


class RenderServer(socketserver.ThreadingTCPServer):
    """Serves `backend` on (host, port); port 0 picks a free one (see `port`). One thread per
    connection; renders are serialised by a lock unless `serialize=False`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, backend: Backend, host: str = "127.0.0.1", port: int = 0, *, serialize: bool = True
    ) -> None:
        super().__init__((host, port), _Handler)
        self.backend = backend
        self._lock: threading.Lock | None = threading.Lock() if serialize else None

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self.server_address[1])

    def handle_request_frame(self, frame: protocol.Frame) -> tuple[dict[str, Any], list[bytes]]:
        """The response (header, blobs) to one request frame. Never raises for bad input."""
        header = frame.header
        request_id = header.get("id")
        op = header.get("op")
        if op == "ping":
            info = {"backend": self.backend.name, "pid": os.getpid(), "formats": ["png"]}
            return {"protocol": protocol.PROTOCOL_VERSION, "ok": True, "id": request_id, **info}, []
        if op != "render":
            message = f"unknown op {op!r}; expected one of: ping, render"
            return protocol.error_response(protocol.BAD_REQUEST, message, request_id=request_id), []
        if "scenes" in header:
            scenes = header["scenes"]
        elif "scene" in header:
            scenes = [header["scene"]]
        else:
            scenes = None
        if not isinstance(scenes, list):
            message = "a render request needs `scene` (an object) or `scenes` (a list of objects)"
            return protocol.error_response(protocol.BAD_REQUEST, message, request_id=request_id), []
        if len(scenes) > MAX_SCENES_PER_REQUEST:
            message = (
                f"{len(scenes)} scenes in one request; expected at most {MAX_SCENES_PER_REQUEST}"
            )
            return protocol.error_response(protocol.TOO_LARGE, message, request_id=request_id), []
        results: list[dict[str, Any]] = []
        blobs: list[bytes] = []
        for spec in scenes:
            result, blob = self._render_one(spec)
            if blob is not None:
                result["blob"] = len(blobs)
                blobs.append(blob)
            results.append(result)
        response = {"protocol": protocol.PROTOCOL_VERSION, "ok": True, "id": request_id}
        return {**response, "results": results}, blobs

    def _render_one(self, spec: Any) -> tuple[dict[str, Any], bytes | None]:
        if not isinstance(spec, dict):
            message = f"a scene spec must be a JSON object; got {type(spec).__name__}"
            return protocol.error_response(protocol.INVALID_SCENE, message), None
        start = time.perf_counter()
        try:
            if self._lock is not None:
                with self._lock:
                    out = self.backend.render(spec)
            else:
                out = self.backend.render(spec)
        except SceneError as err:
            return protocol.error_response(protocol.INVALID_SCENE, str(err), path=err.path), None
        except Exception as err:  # a backend bug must not take the server down
            log.exception("backend %s failed on a scene", self.backend.name)
            message = f"{type(err).__name__}: {err}"
            return protocol.error_response(protocol.INTERNAL, message), None
        result = {
            "ok": True,
            "format": out.format,
            "width": out.width,
            "height": out.height,
            "attributes": out.attributes,
            "render_ms": round((time.perf_counter() - start) * 1000, 3),
        }
        return result, out.image


class _Handler(socketserver.BaseRequestHandler):
    server: RenderServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = self.client_address
        while True:
            try:
                frame = protocol.read_frame(sock)
            except protocol.ProtocolError as err:
                log.warning("bad frame from %s: %s", peer, err)
                self._send(sock, protocol.error_response(err.error_type, str(err)), [])
                if err.fatal:
                    return
                continue
            except (ConnectionError, OSError) as err:
                log.debug("connection from %s ended: %s", peer, err)
                return
            if frame is None:
                return
            try:
                header, blobs = self.server.handle_request_frame(frame)
            except Exception as err:  # defensive: answer, keep serving
                log.exception("failed to handle a request from %s", peer)
                header, blobs = protocol.error_response(protocol.INTERNAL, repr(err)), []
            if not self._send(sock, header, blobs):
                return

    @staticmethod
    def _send(sock: socket.socket, header: dict[str, Any], blobs: list[bytes]) -> bool:
        try:
            try:
                protocol.write_frame(sock, header, blobs)
            except protocol.ProtocolError as err:  # response too large to frame
                request_id = header.get("id")
                fallback = protocol.error_response(err.error_type, str(err), request_id=request_id)
                protocol.write_frame(sock, fallback)
        except OSError as err:
            log.debug("could not answer: %s", err)
            return False
        return True


def serve_until_stopped(
    make_server: Callable[[], RenderServer],
    *,
    host: str,
    port: int,
    description: str,
    announce: bool = True,
) -> int:
    """The backend-process contract shared by every server: bind (exit 3 with one line when it
    cannot), print `READY <port>` (unless `announce` is False), serve until SIGTERM or Ctrl-C,
    exit 0."""
    try:
        server = make_server()
    except OSError as err:
        print(f"error: cannot listen on {host}:{port}: {err.strerror or err}", file=sys.stderr)
        return 3

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    if announce:
        print(f"READY {server.port}", flush=True)
    log.info("%s listening on %s:%d", description, host, server.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
