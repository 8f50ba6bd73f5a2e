"""A client for any render server that speaks `unity_pool.protocol`.

`RenderClient(host, port)` keeps one connection open and reconnects once when a kept connection
has gone stale. A dead or silent server raises `RendererUnavailable` (a `ConnectionError`) that
says where it looked and how to start one; an invalid spec raises `SceneError` (a `ValueError`)
with the server's message naming the field. Not thread-safe across threads sharing one instance
beyond an internal lock that serialises requests: use one client per thread for parallelism.
"""

from __future__ import annotations

import io
import itertools
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from unity_pool import protocol
from unity_pool.scene import Scene, SceneError


class RendererUnavailable(ConnectionError):
    """The render server cannot be reached, closed the connection, or did not answer in time."""


class RendererTimeout(RendererUnavailable, TimeoutError):
    """The render server did not answer within the client's timeout."""


class RenderFailed(RuntimeError):
    """The server answered with an error that is not about the spec (bad request, internal)."""


@dataclass(frozen=True, kw_only=True)
class RenderResult:
    """One rendered scene as returned by a server."""

    data: bytes
    """The encoded image."""
    format: str
    """Encoding of `data`, e.g. "png"."""
    width: int
    """Pixels."""
    height: int
    """Pixels."""
    attributes: dict[str, Any]
    """Resolved ground-truth attributes."""
    render_ms: float
    """Server-side time to render and encode, milliseconds."""
    pixels: Image.Image | None = field(default=None, repr=False, compare=False)
    """The RGB image `data` encodes, when it was made in this process (no decoding needed)."""

    def image(self) -> Image.Image:
        """The decoded image, RGB."""
        if self.pixels is not None:
            return self.pixels.copy()
        with Image.open(io.BytesIO(self.data)) as im:
            return im.convert("RGB")


@dataclass(frozen=True, kw_only=True)
class RenderFailure:
    """One scene of a batch that the server could not render."""

    index: int
    """Position of the scene in the request."""
    type: str
    """`protocol` error type: invalid_scene, internal, ..."""
    message: str
    """The server's explanation."""
    path: str = ""
    """For invalid_scene: the field at fault, e.g. `objects[0].color`."""


def _spec(scene: Scene | Mapping[str, Any]) -> Mapping[str, Any]:
    return scene.to_dict() if isinstance(scene, Scene) else scene


class RenderClient:
    """Talks to a render server at (host, port)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
    ) -> None:
        """`timeout`: seconds to wait for an answer; `connect_timeout`: seconds to connect."""
        self.host = host
        self.port = port
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def __enter__(self) -> RenderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        """host:port, for messages."""
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except TimeoutError as err:
            raise RendererTimeout(
                f"no renderer answered at {self.address} within {self.connect_timeout}s. "
                "Fix: check the host and port, or start one with "
                f"`python -m unity_pool.procedural --port {self.port}`."
            ) from err
        except OSError as err:
            raise RendererUnavailable(
                f"cannot connect to a renderer at {self.address} ({err.strerror or err}): is it "
                f"running? Fix: start one with `python -m unity_pool.procedural --port {self.port}`."
            ) from err
        sock.settimeout(self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _exchange(self, sock: socket.socket, payload: bytes) -> protocol.Frame | None:
        sock.sendall(payload)
        return protocol.read_frame(sock)

    def request(self, header: Mapping[str, Any], blobs: Sequence[bytes] = ()) -> protocol.Frame:
        """Send one request frame and return the response frame (low level; any op)."""
        full = {"protocol": protocol.PROTOCOL_VERSION, "id": next(self._ids), **header}
        payload = protocol.encode_frame(full, blobs)
        with self._lock:
            for attempt in range(2):
                reused = self._sock is not None
                if self._sock is None:
                    self._sock = self._connect()
                try:
                    frame = self._exchange(self._sock, payload)
                except TimeoutError as err:
                    self.close()  # the stream is out of sync now
                    raise RendererTimeout(
                        f"the renderer at {self.address} did not answer within {self.timeout}s. "
                        "Fix: raise the client timeout or send smaller batches."
                    ) from err
                except protocol.ProtocolError as err:
                    self.close()
                    raise RenderFailed(
                        f"the server at {self.address} sent a malformed frame ({err}); is it a "
                        "unity_pool renderer?"
                    ) from err
                except OSError as err:
                    self.close()
                    if reused and attempt == 0:
                        continue  # a kept connection went stale: try once on a fresh one
                    raise RendererUnavailable(
                        f"the renderer at {self.address} dropped the connection ({err}). "
                        "Fix: check that it is still running (its stderr says why it stopped)."
                    ) from err
                if frame is None:
                    self.close()
                    if reused and attempt == 0:
                        continue
                    raise RendererUnavailable(
                        f"the renderer at {self.address} closed the connection without answering"
                    )
                return frame
        raise AssertionError("unreachable")

    def ping(self) -> dict[str, Any]:
        """The server's self-description: backend name, pid, formats."""
        frame = self.request({"op": "ping"})
        self._raise_for_response(frame.header)
        return frame.header

    @staticmethod
    def _raise_for_response(header: Mapping[str, Any]) -> None:
        if not header.get("ok"):
            error = header.get("error") or {}
            raise RenderFailed(
                f"renderer refused the request ({error.get('type', '?')}): "
                f"{error.get('message', header)}"
            )

    def render_outcomes(
        self, scenes: Sequence[Scene | Mapping[str, Any]]
    ) -> list[RenderResult | RenderFailure]:
        """Render a batch in one request; each entry is a result or the reason it failed."""
        frame = self.request({"op": "render", "scenes": [_spec(s) for s in scenes]})
        self._raise_for_response(frame.header)
        results = frame.header.get("results")
        if not isinstance(results, list) or len(results) != len(scenes):
            raise RenderFailed(
                f"renderer at {self.address} answered {results!r:.200} for {len(scenes)} scenes"
            )
        out: list[RenderResult | RenderFailure] = []
        for index, result in enumerate(results):
            if result.get("ok"):
                out.append(
                    RenderResult(
                        data=frame.blobs[result["blob"]],
                        format=result["format"],
                        width=result["width"],
                        height=result["height"],
                        attributes=result["attributes"],
                        render_ms=float(result["render_ms"]),
                    )
                )
            else:
                error = result.get("error", {})
                out.append(
                    RenderFailure(
                        index=index,
                        type=str(error.get("type", protocol.INTERNAL)),
                        message=str(error.get("message", "")),
                        path=str(error.get("path") or ""),
                    )
                )
        return out

    def render_many(self, scenes: Sequence[Scene | Mapping[str, Any]]) -> list[RenderResult]:
        """Render a batch in one request. Raises `SceneError` if any spec is invalid (naming
        each bad scene's index and field) and `RenderFailed` for any other failure."""
        outcomes = self.render_outcomes(scenes)
        failures = [o for o in outcomes if isinstance(o, RenderFailure)]
        if failures:
            first = failures[0]
            detail = "; ".join(f"scene {f.index}: {f.message}" for f in failures[:3])
            more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
            if all(f.type == protocol.INVALID_SCENE for f in failures):
                raise SceneError(
                    f"{len(failures)} of {len(scenes)} scenes are invalid: {detail}{more}",
                    path=first.path,
                )
            raise RenderFailed(f"{len(failures)} of {len(scenes)} scenes failed: {detail}{more}")
        return [o for o in outcomes if isinstance(o, RenderResult)]

    def render(self, scene: Scene | Mapping[str, Any]) -> RenderResult:
        """Render one scene; raises `SceneError` for an invalid spec."""
        return self.render_many([scene])[0]
