"""The render wire protocol: length-prefixed frames of a JSON header plus binary parts.

Backend-agnostic: the procedural renderer, a Unity player and a diffusion server all speak it.
A frame is

    u32 big-endian N | N bytes: header, a UTF-8 JSON object | blob 0 | blob 1 | ...

where `header["blobs"]` lists the byte length of each binary part, in order (absent or [] when
there are none). Requests and responses are frames; see docs/render-protocol.md for the messages.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
"""Carried as `header["protocol"]` in every message."""

MAX_HEADER_BYTES = 16 * 2**20
"""Largest header accepted (a batch of a few thousand specs fits easily)."""

MAX_BLOB_BYTES = 1 * 2**30
"""Largest total of binary parts accepted in one frame."""

_LENGTH = struct.Struct(">I")

# Error types carried in `error.type` of a response.
INVALID_SCENE = "invalid_scene"
"""The spec breaks the schema; the message names the field. Fix the spec; do not retry."""
BAD_REQUEST = "bad_request"
"""The frame or header is malformed (unknown op, missing field, not JSON)."""
TOO_LARGE = "too_large"
"""The frame exceeds a limit; the server closes the connection after answering."""
INTERNAL = "internal"
"""The backend failed on a valid spec; the server keeps serving. Retrying may help."""


class ProtocolError(ValueError):
    """A frame that cannot be decoded: says which part is wrong."""

    def __init__(self, message: str, *, error_type: str = BAD_REQUEST, fatal: bool = False) -> None:
        super().__init__(message)
        self.error_type = error_type
        """One of the error types above, for the answer to the peer."""
        self.fatal = fatal
        """True when the stream is out of sync and the connection must be closed."""


@dataclass(frozen=True, kw_only=True)
class Frame:
    """One decoded message."""

    header: dict[str, Any]
    """The JSON header (including `blobs`, the lengths of the binary parts)."""
    blobs: tuple[bytes, ...] = field(default=())
    """The binary parts, in order."""


def encode_frame(header: Mapping[str, Any], blobs: Sequence[bytes] = ()) -> bytes:
    """The bytes of one frame; sets `header["blobs"]` from `blobs` (a copy; the input is kept)."""
    full = dict(header)
    full["blobs"] = [len(b) for b in blobs]
    head = json.dumps(full, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(head) > MAX_HEADER_BYTES:
        raise ProtocolError(
            f"header is {len(head)} bytes; expected at most {MAX_HEADER_BYTES}. "
            "Fix: send fewer scenes per request.",
            error_type=TOO_LARGE,
        )
    return b"".join((_LENGTH.pack(len(head)), head, *blobs))


def _recv_exactly(sock: socket.socket, n: int, *, at_boundary: bool = False) -> bytes | None:
    """n bytes from the socket; None on a clean EOF before the first byte when `at_boundary`."""
    chunks: list[bytes] = []
    remaining = n
    while remaining:
        chunk = sock.recv(min(remaining, 4 * 2**20))
        if not chunk:
            if at_boundary and remaining == n:
                return None
            raise ConnectionError(
                f"peer closed the connection {n - remaining}/{n} bytes into a frame"
            )
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket) -> Frame | None:
    """The next frame from `sock`, or None if the peer closed the connection between frames.

    Raises `ProtocolError` for a malformed frame (`fatal` when the stream cannot be resynced) and
    `ConnectionError` for an EOF inside a frame; socket timeouts propagate.
    """
    prefix = _recv_exactly(sock, _LENGTH.size, at_boundary=True)
    if prefix is None:
        return None
    (n,) = _LENGTH.unpack(prefix)
    if n > MAX_HEADER_BYTES:
        raise ProtocolError(
            f"header length {n} exceeds {MAX_HEADER_BYTES} bytes (or the peer does not speak "
            "this protocol: a frame starts with a 4-byte big-endian header length)",
            error_type=TOO_LARGE,
            fatal=True,
        )
    raw = _recv_exactly(sock, n)
    assert raw is not None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        # the lengths were consistent, so the stream is still in sync, but blob sizes are unknown
        raise ProtocolError(f"header is not UTF-8 JSON: {err}", fatal=True) from err
    if not isinstance(header, dict):
        raise ProtocolError(
            f"header must be a JSON object; got {type(header).__name__}", fatal=True
        )
    sizes = header.get("blobs", [])
    if not isinstance(sizes, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in sizes
    ):
        raise ProtocolError(
            f"header.blobs must be a list of byte lengths; got {sizes!r}", fatal=True
        )
    if sum(sizes) > MAX_BLOB_BYTES:
        raise ProtocolError(
            f"binary parts total {sum(sizes)} bytes; expected at most {MAX_BLOB_BYTES}",
            error_type=TOO_LARGE,
            fatal=True,
        )
    blobs = []
    for size in sizes:
        blob = _recv_exactly(sock, size)
        assert blob is not None
        blobs.append(blob)
    return Frame(header=header, blobs=tuple(blobs))


def write_frame(
    sock: socket.socket, header: Mapping[str, Any], blobs: Sequence[bytes] = ()
) -> None:
    """Send one frame."""
    sock.sendall(encode_frame(header, blobs))


def error_response(
    error_type: str, message: str, *, request_id: Any = None, path: str | None = None
) -> dict[str, Any]:
    """The header of a failed response (`ok: false`) or of one failed result in a batch."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if path is not None:
        error["path"] = path
    out: dict[str, Any] = {"protocol": PROTOCOL_VERSION, "ok": False, "error": error}
    if request_id is not None:
        out["id"] = request_id
    return out
