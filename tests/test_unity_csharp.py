"""The C# side of the Unity backend: the UnityEngine-free protocol code stays free of UnityEngine,
agrees with the Python vocabulary, and — compiled with Mono's `mcs` into the console stand-in
(`unity_pool/unity/standin/`) — speaks the render protocol like the Python servers.

The compiled tests need `mcs` and `mono` (Debian: `apt-get install -y --no-install-recommends
mono-mcs`) and are skipped without them.
"""

from __future__ import annotations

import io
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from unity_pool import protocol, vocab
from unity_pool.attributes import scene_attributes
from unity_pool.client import RenderClient, RenderFailure, RenderResult
from unity_pool.sampling import sample_scenes
from unity_pool.scene import Camera, Lighting, Scene, SceneError, SceneObject
from unity_pool.unity import UnityPlayer, UnityPlayerConfig

UNITY = Path(__file__).resolve().parents[1] / "unity_pool" / "unity"
ASSETS = UNITY / "UnityProject" / "Assets" / "CoinScale"
PROTOCOL_DIR = ASSETS / "Protocol"
STANDIN_SOURCE = UNITY / "standin" / "Program.cs"


# --- source checks (no compiler needed) ------------------------------------------------------


def test_protocol_folder_has_no_unity_engine() -> None:
    sources = sorted(PROTOCOL_DIR.glob("*.cs")) + [STANDIN_SOURCE]
    assert len(sources) >= 8
    for path in sources:
        text = path.read_text("utf-8")
        assert not re.search(r"^\s*using\s+(static\s+)?Unity(Engine|Editor)\b", text, re.M), path
        assert "UnityEngine." not in text and "UnityEditor." not in text, path
    asmdef = (PROTOCOL_DIR / "CoinScale.Protocol.asmdef").read_text("utf-8")
    assert re.search(r'"noEngineReferences"\s*:\s*true', asmdef)
    # and the Unity side really is where the engine calls are
    assert "using UnityEngine;" in (ASSETS / "Rendering" / "SceneBuilder.cs").read_text("utf-8")
    assert "EncodeToPNG" in (ASSETS / "Rendering" / "SceneBuilder.cs").read_text("utf-8")


def _cs_strings(source: str, name: str) -> tuple[str, ...]:
    body = re.search(rf"\b{name}\s*=\s*\{{(.*?)\}};", source, re.S)
    assert body, name
    return tuple(re.findall(r'"([^"]*)"', body.group(1)))


def test_csharp_vocabulary_matches_python() -> None:
    source = (PROTOCOL_DIR / "Vocab.cs").read_text("utf-8")
    assert _cs_strings(source, "Shapes") == vocab.SHAPES
    assert _cs_strings(source, "Colors") == vocab.COLORS
    assert _cs_strings(source, "Textures") == vocab.TEXTURES
    assert _cs_strings(source, "Backgrounds") == vocab.BACKGROUNDS
    assert _cs_strings(source, "Attributes") == tuple(vocab.ATTRIBUTES)
    rgb = re.findall(r"new byte\[\] \{ (\d+), (\d+), (\d+) \}", source)
    assert [tuple(map(int, c)) for c in rgb] == list(vocab.COLOR_RGB.values())
    ranges = dict(re.findall(r'\{ "([a-z_.]+)", new\[\] \{ ([^}]*) \} \}', source))
    for key, (low, high) in vocab.RANGES.items():
        values = ranges[key].replace("L", "").replace("long.MaxValue", str(2**63 - 1))
        assert [float(v) for v in values.split(",")] == [float(low), float(high)], key
    assert _cs_strings(source, "SizeLabels") == tuple(label for label, _ in vocab.SIZE_BINS)
    assert _cs_strings(source, "LightLabels") == tuple(label for label, _ in vocab.LIGHT_BINS)
    for name, bins in (("SizeUpper", vocab.SIZE_BINS), ("LightUpper", vocab.LIGHT_BINS)):
        body = re.search(rf"{name} = \{{ ([^}}]*) \}}", source)
        assert body, name
        numbers = [float(v) for v in body.group(1).split(",")[:-1]]
        assert numbers == [upper for _, upper in bins[:-1]], name


def test_unity_side_compiles_against_api_stubs(tmp_path: Path) -> None:
    """Syntax and types of Rendering/, Server/ and Editor/ (the engine calls are only checked
    against the signatures in devstubs/UnityApiStubs.cs, not against Unity)."""
    mcs = shutil.which("mcs")
    if mcs is None:
        pytest.skip("no C# compiler: apt-get install -y --no-install-recommends mono-mcs")
    sources = sorted(ASSETS.rglob("*.cs")) + [UNITY / "devstubs" / "UnityApiStubs.cs"]
    build = subprocess.run(
        [mcs, "-target:library", "-warnaserror", "-nologo", f"-out:{tmp_path / 'a.dll'}"]
        + [str(p) for p in sources],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stdout + build.stderr


# --- the compiled stand-in -------------------------------------------------------------------


@pytest.fixture(scope="module")
def csharp_player(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The console stand-in compiled from Protocol/*.cs + standin/Program.cs, behind an
    executable wrapper as the launcher expects a player binary."""
    mcs, mono = shutil.which("mcs"), shutil.which("mono")
    if mcs is None or mono is None:
        pytest.skip("no C# compiler: apt-get install -y --no-install-recommends mono-mcs")
    out = tmp_path_factory.mktemp("csharp")
    exe = out / "standin.exe"
    sources = [str(STANDIN_SOURCE), *map(str, sorted(PROTOCOL_DIR.glob("*.cs")))]
    build = subprocess.run(
        [mcs, "-warnaserror", "-nologo", f"-out:{exe}", *sources],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    wrapper = out / "CoinScalePlayer.x86_64"
    wrapper.write_text(f'#!/bin/sh\nexec {mono} {exe} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture(scope="module")
def cs_port(csharp_player: Path) -> Iterator[int]:
    config = UnityPlayerConfig(player=str(csharp_player), startup_timeout=60, source="test")
    with UnityPlayer(config) as unity:
        assert unity.ping()["backend"] == "unity-standin-cs"
        yield unity.port


def _ask(port: int, header: dict[str, Any]) -> protocol.Frame:
    with RenderClient("127.0.0.1", port, timeout=30) as client:
        return client.request(header)


def test_ping_and_a_single_render(cs_port: int) -> None:
    with RenderClient("127.0.0.1", cs_port, timeout=30) as client:
        info = client.ping()
        assert info["ok"] and info["protocol"] == 1 and info["formats"] == ["png"]
        assert isinstance(info["pid"], int) and info["blobs"] == []
        scene = Scene(objects=(SceneObject(shape="star", color="cyan"),), width=33, height=17)
        result = client.render(scene)
    assert (result.format, result.width, result.height) == ("png", 33, 17)
    assert result.attributes == scene_attributes(scene)
    assert list(result.attributes) == list(vocab.ATTRIBUTES)
    assert result.render_ms >= 0
    with Image.open(io.BytesIO(result.data)) as im:
        im.verify()  # chunk CRCs and zlib stream are valid
    image = np.asarray(result.image())
    assert image.shape == (17, 33, 3) and (image == vocab.COLOR_RGB["cyan"]).all()


def _random_scenes(n: int, seed: int) -> list[Scene]:
    rng = np.random.default_rng(seed)
    scenes = []
    for i in range(n):
        objects = tuple(
            SceneObject(
                shape=str(rng.choice(vocab.SHAPES)),
                color=str(rng.choice(vocab.COLORS)),
                texture=str(rng.choice(vocab.TEXTURES)),
                size=float(rng.uniform(0.02, 1.5)),
                x=float(rng.choice([0.0, 1 / 3, 2 / 3, 1.0, rng.uniform()])),
                y=float(rng.choice([0.0, 1 / 3, 2 / 3, 1.0, rng.uniform()])),
                rotation=float(rng.uniform(-360, 360)),
            )
            for _ in range(int(rng.integers(1, 4)))
        )
        scenes.append(
            Scene(
                objects=objects,
                background=str(rng.choice(vocab.BACKGROUNDS)),
                lighting=Lighting(intensity=float(rng.choice([0.7, 1.15, rng.uniform(0.1, 2)]))),
                camera=Camera(
                    zoom=float(rng.choice([1.0, rng.uniform(0.25, 4)])),
                    offset_x=float(rng.uniform(-1, 1)) if i % 2 else 0.0,
                    offset_y=float(rng.uniform(-1, 1)) if i % 3 else 0.0,
                ),
                width=8 + i % 5,
                height=8 + i % 7,
                seed=i,
            )
        )
    return scenes


def test_attributes_match_python_for_many_scenes(cs_port: int) -> None:
    scenes = sample_scenes(120, seed=5, width=8, height=8) + _random_scenes(200, seed=11)
    with RenderClient("127.0.0.1", cs_port, timeout=60) as client:
        results = client.render_many(scenes)
    for scene, result in zip(scenes, results, strict=True):
        assert result.attributes == scene_attributes(scene), scene
        assert (result.width, result.height) == (scene.width, scene.height)


def _base() -> dict[str, Any]:
    return {"version": 1, "objects": [{"shape": "star", "color": "red"}]}


def _bad_specs() -> list[Any]:
    def edit(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
        spec = _base()
        target: Any = spec
        for key in path[:-1]:
            target = target.setdefault(key, {}) if isinstance(key, str) else target[key]
        target[path[-1]] = value
        return spec

    specs: list[Any] = [
        edit(("objects", 0, "color"), "mauve"),
        edit(("objects", 0, "shape"), 3),
        edit(("objects", 0, "texture"), "wood"),
        edit(("objects", 0, "size"), 3),
        edit(("objects", 0, "x"), -0.1),
        edit(("objects", 0, "rotation"), True),
        edit(("objects", 0, "sparkle"), 1),
        edit(("background",), "moon"),
        edit(("lighting", "intensity"), 2.5),
        edit(("lighting", "temperature"), "warm"),
        edit(("camera", "zoom"), 0.1),
        edit(("camera", "tilt"), 0.0),
        edit(("width",), 224.0),
        edit(("height",), 4),
        edit(("seed",), -1),
        edit(("seed",), True),
        edit(("version",), 2),
        edit(("objects",), []),
        edit(("objects",), [{"shape": "star", "color": "red"}] * 17),
        edit(("objects",), "star"),
        edit(("lighting",), [1.0]),
        {"objects": [{"shape": "star", "color": "red"}]},
        {"version": 1, "objects": [{"shape": "star"}]},
        {**_base(), "extra": 1},
    ]
    two = _base()
    two["objects"].append(5)
    specs.append(two)
    return specs


def test_invalid_specs_name_the_same_field_as_python(cs_port: int) -> None:
    specs = _bad_specs()
    batch: list[Any] = [*specs, 42, _base()]
    with RenderClient("127.0.0.1", cs_port, timeout=30) as client:
        outcomes = client.render_outcomes(batch)
    for spec, outcome in zip(specs, outcomes, strict=False):
        with pytest.raises(SceneError) as expected:
            Scene.from_dict(spec)
        assert isinstance(outcome, RenderFailure), spec
        assert outcome.type == "invalid_scene", spec
        assert outcome.path == expected.value.path, (spec, outcome.message)
        assert outcome.message.startswith("invalid scene spec at "), outcome.message
    not_an_object = outcomes[len(specs)]
    assert isinstance(not_an_object, RenderFailure) and not_an_object.type == "invalid_scene"
    assert "must be a JSON object; got int" in not_an_object.message
    assert isinstance(outcomes[-1], RenderResult)  # a bad scene does not fail the batch
    mauve = outcomes[0]
    assert isinstance(mauve, RenderFailure)
    assert "expected one of red, orange" in mauve.message and "got 'mauve'" in mauve.message


def test_batches_blob_indices_and_determinism(cs_port: int) -> None:
    good = {**_base(), "width": 9, "height": 9}
    frame = _ask(cs_port, {"op": "render", "scenes": [good, {"version": 7}, good]})
    results = frame.header["results"]
    assert [r["ok"] for r in results] == [True, False, True]
    assert [r.get("blob") for r in results] == [0, None, 1]
    assert frame.header["blobs"] == [len(b) for b in frame.blobs] and len(frame.blobs) == 2
    assert frame.blobs[0] == frame.blobs[1]  # same spec, same bytes
    single = _ask(cs_port, {"op": "render", "scene": good})
    assert single.header["results"][0]["blob"] == 0 and single.blobs[0] == frame.blobs[0]


def test_request_errors_are_values_and_ids_echo(cs_port: int) -> None:
    odd_ids = (
        'é☃\n"quoted"',
        "\ud800 lone surrogate",
        {"nested": [1, 2.5, None, True]},
        2**62,
        0.25,
    )
    for odd_id in odd_ids:
        header = _ask(cs_port, {"op": "ping", "id": odd_id}).header
        assert header["id"] == odd_id
    header = _ask(cs_port, {"op": "dance", "id": 9}).header
    assert header["ok"] is False and header["id"] == 9
    assert header["error"]["type"] == "bad_request" and "'dance'" in header["error"]["message"]
    assert _ask(cs_port, {"op": "render"}).header["error"]["type"] == "bad_request"
    assert _ask(cs_port, {"op": "render", "scenes": "x"}).header["error"]["type"] == "bad_request"
    many = _ask(cs_port, {"op": "render", "scenes": [{}] * 4097}).header
    assert many["error"]["type"] == "too_large"


def test_framing_bytes_and_garbage(cs_port: int) -> None:
    with socket.create_connection(("127.0.0.1", cs_port), timeout=10) as sock:
        sock.sendall(bytes.fromhex("00000018") + b'{"op":"ping","blobs":[]}')
        answer = protocol.read_frame(sock)
        assert answer is not None and answer.header["ok"] is True
        sock.sendall(struct.pack(">I", 2) + b"{}")  # no op: bad_request, connection stays open
        answer = protocol.read_frame(sock)
        assert answer is not None and answer.header["error"]["type"] == "bad_request"
        sock.sendall(protocol.encode_frame({"op": "ping", "id": 3}, [b"ignored", b""]))
        answer = protocol.read_frame(sock)
        assert answer is not None and answer.header["id"] == 3
    with socket.create_connection(("127.0.0.1", cs_port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        answer = protocol.read_frame(sock)
        assert answer is not None and answer.header["error"]["type"] == "too_large"
        assert protocol.read_frame(sock) is None  # closed after answering
    with socket.create_connection(("127.0.0.1", cs_port), timeout=10) as sock:
        sock.sendall(struct.pack(">I", 3) + b"{]!")
        answer = protocol.read_frame(sock)
        assert answer is not None and answer.header["error"]["type"] == "bad_request"
    with socket.create_connection(("127.0.0.1", cs_port), timeout=10) as sock:
        bad_blobs = b'{"blobs":[-1,"x"]}'
        sock.sendall(struct.pack(">I", len(bad_blobs)) + bad_blobs)
        answer = protocol.read_frame(sock)
        assert answer is not None and answer.header["error"]["type"] == "bad_request"
    with RenderClient("127.0.0.1", cs_port) as client:
        assert client.ping()["ok"]  # still serving
