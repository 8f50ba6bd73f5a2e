"""The render protocol and server: framing, the procedural server as a real subprocess, the client."""

from __future__ import annotations

import io
import select
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unity_pool import protocol
from unity_pool.client import RenderClient, RendererTimeout, RendererUnavailable, RenderFailure
from unity_pool.procedural import render_array
from unity_pool.procedural.backend import ProceduralBackend
from unity_pool.scene import Scene, SceneError, SceneObject
from unity_pool.server import RenderServer


def _scene(color: str = "red", seed: int = 1) -> Scene:
    obj = SceneObject(shape="star", color=color, texture="fur", size=0.5)
    return Scene(objects=(obj,), background="sky", width=48, height=40, seed=seed)


# --- framing ---------------------------------------------------------------------------------


def test_frames_round_trip_with_blobs() -> None:
    a, b = socket.socketpair()
    with a, b:
        protocol.write_frame(a, {"op": "x", "n": [1, 2]}, [b"\x00\x01", b"", b"png" * 1000])
        protocol.write_frame(a, {"op": "y"})
        first = protocol.read_frame(b)
        second = protocol.read_frame(b)
        a.close()
        assert protocol.read_frame(b) is None  # clean EOF between frames
    assert first is not None and second is not None
    assert first.header == {"op": "x", "n": [1, 2], "blobs": [2, 0, 3000]}
    assert first.blobs == (b"\x00\x01", b"", b"png" * 1000)
    assert second.header == {"op": "y", "blobs": []} and second.blobs == ()


def test_frame_layout_is_length_prefixed_json() -> None:
    data = protocol.encode_frame({"op": "ping"}, [b"abc"])
    (n,) = struct.unpack(">I", data[:4])
    assert data[4 : 4 + n] == b'{"op":"ping","blobs":[3]}'
    assert data[4 + n :] == b"abc"


def test_malformed_frames_are_reported() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack(">I", protocol.MAX_HEADER_BYTES + 1))
        with pytest.raises(protocol.ProtocolError) as info:
            protocol.read_frame(b)
        assert info.value.fatal and info.value.error_type == protocol.TOO_LARGE
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack(">I", 5) + b"nope!")
        with pytest.raises(protocol.ProtocolError, match="not UTF-8 JSON"):
            protocol.read_frame(b)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(struct.pack(">I", 10) + b"{}")
        a.close()
        with pytest.raises(ConnectionError, match="into a frame"):
            protocol.read_frame(b)


# --- server logic, in process ----------------------------------------------------------------


class _Broken:
    name = "broken"

    def render(self, spec):  # noqa: ANN001, ANN201 - test double
        if spec.get("boom"):
            raise RuntimeError("backend bug")
        raise SceneError("bad field", path="objects[0].shape")


def test_server_answers_bad_requests_without_raising() -> None:
    server = RenderServer(ProceduralBackend(), port=0)
    try:

        def ask(header: dict) -> dict:
            return server.handle_request_frame(protocol.Frame(header=header))[0]

        assert ask({"op": "dance"})["error"]["type"] == protocol.BAD_REQUEST
        assert ask({"op": "render"})["error"]["type"] == protocol.BAD_REQUEST
        assert ask({"op": "render", "scenes": "x"})["error"]["type"] == protocol.BAD_REQUEST
        many = {"op": "render", "scenes": [{}] * 5000}
        assert ask(many)["error"]["type"] == protocol.TOO_LARGE
        result = ask({"op": "render", "scenes": [42]})["results"][0]
        assert result["error"]["type"] == protocol.INVALID_SCENE
        header, blobs = server.handle_request_frame(
            protocol.Frame(header={"op": "render", "id": 7, "scene": _scene().to_dict()})
        )
        assert header["id"] == 7 and header["results"][0]["blob"] == 0 and len(blobs) == 1
    finally:
        server.server_close()
    broken = RenderServer(_Broken(), port=0)
    try:
        header, _ = broken.handle_request_frame(
            protocol.Frame(header={"op": "render", "scenes": [{"boom": 1}, {}]})
        )
        assert [r["error"]["type"] for r in header["results"]] == ["internal", "invalid_scene"]
        assert header["results"][1]["error"]["path"] == "objects[0].shape"
    finally:
        broken.server_close()


def test_client_against_an_in_process_server() -> None:
    server = RenderServer(ProceduralBackend(), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with RenderClient("127.0.0.1", server.port, timeout=10) as client:
            assert client.ping()["backend"] == "procedural"
            assert client.render(_scene()).attributes["shape"] == "star"
    finally:
        server.shutdown()
        server.server_close()


def test_client_reconnects_once_when_a_kept_connection_went_stale() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def one_answer_per_connection() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                frame = protocol.read_frame(conn)
                assert frame is not None
                protocol.write_frame(conn, {"ok": True, "id": frame.header["id"], "backend": "t"})

    thread = threading.Thread(target=one_answer_per_connection, daemon=True)
    thread.start()
    with listener, RenderClient("127.0.0.1", port, timeout=5) as client:
        assert client.ping()["backend"] == "t"
        thread.join(0.5)  # the server has closed the first connection by now
        assert client.ping()["backend"] == "t"  # stale connection noticed, one fresh retry
    thread.join(5)
    assert not thread.is_alive()


def test_client_times_out_on_a_silent_server() -> None:
    silent = socket.create_server(("127.0.0.1", 0))
    with silent:
        port = silent.getsockname()[1]
        client = RenderClient("127.0.0.1", port, timeout=0.3)
        with pytest.raises(RendererTimeout, match="did not answer within 0.3s"):
            client.ping()


def test_client_says_when_nothing_listens() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(RendererUnavailable, match=rf"127\.0\.0\.1:{port}.*is it running"):
        RenderClient("127.0.0.1", port, connect_timeout=2).ping()


# --- the real server process -----------------------------------------------------------------


@pytest.fixture(scope="module")
def server_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    log_path = Path(tmp_path_factory.mktemp("server")) / "stderr.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "unity_pool.procedural", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("READY "), f"server did not start: {line!r} {log_path.read_text()}"
        yield int(line.split()[1])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_subprocess_server_renders_like_in_process(server_port: int) -> None:
    with RenderClient("127.0.0.1", server_port, timeout=30) as client:
        info = client.ping()
        assert info["ok"] and info["backend"] == "procedural" and info["protocol"] == 1
        result = client.render(_scene())
    assert result.format == "png" and (result.width, result.height) == (48, 40)
    assert result.render_ms > 0
    assert result.attributes["shape"] == "star" and result.attributes["background"] == "sky"
    assert np.array_equal(np.asarray(result.image()), render_array(_scene()))
    with Image.open(io.BytesIO(result.data)) as im:
        assert im.format == "PNG"


def test_subprocess_server_renders_a_batch(server_port: int) -> None:
    scenes = [_scene(color=c, seed=i) for i, c in enumerate(("red", "blue", "white", "black"))]
    with RenderClient("127.0.0.1", server_port) as client:
        results = client.render_many(scenes)
    assert [r.attributes["color"] for r in results] == ["red", "blue", "white", "black"]
    assert len({r.data for r in results}) == 4


def test_bad_spec_is_an_error_and_the_server_keeps_serving(server_port: int) -> None:
    bad = _scene().to_dict()
    bad["objects"][0]["color"] = "mauve"
    with RenderClient("127.0.0.1", server_port) as client:
        with pytest.raises(SceneError, match=r"scene 1: .*objects\[0\]\.color.*mauve"):
            client.render_many([_scene(), bad])
        outcomes = client.render_outcomes([_scene(), bad, {"nonsense": True}])
        assert not isinstance(outcomes[0], RenderFailure)
        assert isinstance(outcomes[1], RenderFailure) and outcomes[1].path == "objects[0].color"
        assert isinstance(outcomes[2], RenderFailure) and outcomes[2].type == "invalid_scene"
        assert client.render(_scene()).attributes["color"] == "red"  # same connection still works


def test_garbage_bytes_get_an_answer_and_the_server_survives(server_port: int) -> None:
    with socket.create_connection(("127.0.0.1", server_port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        answer = protocol.read_frame(sock)
        assert answer is not None and answer.header["ok"] is False
        assert answer.header["error"]["type"] == protocol.TOO_LARGE
    with socket.create_connection(("127.0.0.1", server_port), timeout=10) as sock:
        sock.sendall(struct.pack(">I", 3) + b"{]!")
        answer = protocol.read_frame(sock)
        assert answer is not None and answer.header["error"]["type"] == protocol.BAD_REQUEST
    with RenderClient("127.0.0.1", server_port) as client:
        assert client.ping()["ok"]
