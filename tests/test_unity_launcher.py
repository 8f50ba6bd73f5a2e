"""The Unity launcher against a real process: the Python stand-in of the Unity player.

The stand-in takes the player's flags (`-batchmode -logFile - -coinScalePort N`), prints log lines
and then `READY <port>` on stdout, and serves the render protocol with the procedural renderer,
so start-up, health checks, rendering, restarts and start-up failures are exercised for real.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from unity_pool.attributes import scene_attributes
from unity_pool.procedural import render_array
from unity_pool.scene import Scene, SceneError, SceneObject
from unity_pool.unity import (
    UnityPlayer,
    UnityPlayerConfig,
    UnityPlayerNotFound,
    UnityStartupError,
    UnityStartupTimeout,
)
from unity_pool.unity.launcher import ready_port
from unity_pool.unity.standin import write_player

REPO = Path(__file__).resolve().parents[1]


def _scene(color: str = "red", seed: int = 3) -> Scene:
    obj = SceneObject(shape="heart", color=color, texture="stripes", size=0.5, x=0.3, y=0.7)
    return Scene(objects=(obj,), background="grid", width=40, height=32, seed=seed)


def _config(player: Path, **overrides: object) -> UnityPlayerConfig:
    values: dict = {"player": str(player), "startup_timeout": 60.0, "ping_timeout": 5.0}
    values.update(overrides)
    return UnityPlayerConfig(**values, source="test-unity.yaml")


def _dead(unity: UnityPlayer, within: float = 10.0) -> bool:
    """True once the player process has exited completely (all threads, so its sockets are
    closed) and been reaped."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not unity.alive():
            return True
        time.sleep(0.02)
    return False


def _gone(pid: int) -> bool:
    """True when `pid` no longer exists (stopped and reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def standin_player(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An executable that runs the Python stand-in (what `player` would point at)."""
    return write_player(tmp_path_factory.mktemp("player") / "CoinScalePlayer.x86_64")


@pytest.fixture(scope="module")
def player(standin_player: Path) -> Iterator[UnityPlayer]:
    with UnityPlayer(_config(standin_player)) as running:
        yield running


# --- config ----------------------------------------------------------------------------------


def test_repository_config_loads_and_names_the_key_to_set() -> None:
    config = UnityPlayerConfig.from_yaml(REPO / "configs" / "unity.yaml")
    assert config.port == 0 and config.host == "127.0.0.1" and config.startup_timeout > 0
    with pytest.raises(UnityPlayerNotFound, match=r"`player` in .*unity\.yaml is empty"):
        config.command()


def test_config_rejects_unknown_keys_and_reserved_flags(tmp_path: Path) -> None:
    path = tmp_path / "unity.yaml"
    path.write_text("player: /x\nstartup_timout: 5\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) startup_timout; valid keys: player"):
        UnityPlayerConfig.from_yaml(path)
    with pytest.raises(ValueError, match=r"extra_args: -nographics conflict"):
        UnityPlayerConfig(player="/x", extra_args=("-nographics",))
    with pytest.raises(ValueError, match=r"extra_args: -coinScalePort conflict"):
        UnityPlayerConfig(player="/x", extra_args=("-coinScalePort", "5"))
    with pytest.raises(ValueError, match=r"startup_timeout: expected seconds > 0"):
        UnityPlayerConfig(player="/x", startup_timeout=0)
    with pytest.raises(ValueError, match=r"port: expected 0\.\.65535"):
        UnityPlayerConfig(player="/x", port=70000)
    with pytest.raises(TypeError, match=r"extra_args: expected a list of strings"):
        UnityPlayerConfig(player="/x", extra_args="-force-vulkan")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match=r"set `player`"):
        UnityPlayerConfig.from_yaml(tmp_path / "absent.yaml")


def test_command_line_is_batchmode_with_graphics(standin_player: Path) -> None:
    config = _config(
        standin_player, extra_args=("-force-vulkan",), launch_prefix=("xvfb-run", "-a")
    )
    assert config.command(4321) == [
        "xvfb-run",
        "-a",
        str(standin_player),
        "-batchmode",
        "-logFile",
        "-",
        "-coinScalePort",
        "4321",
        "-force-vulkan",
    ]
    assert "-nographics" not in config.command()


def test_missing_binary_names_the_config_key(tmp_path: Path) -> None:
    absent = tmp_path / "Build" / "CoinScalePlayer.x86_64"
    with pytest.raises(UnityPlayerNotFound, match=r"not found at .*CoinScalePlayer.*`player` in"):
        UnityPlayer(_config(absent)).start()
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    with pytest.raises(UnityPlayerNotFound, match=r"not executable\. Fix: chmod \+x"):
        UnityPlayer(_config(plain)).start()
    with pytest.raises(UnityPlayerNotFound, match=r"is empty"):
        UnityPlayer(UnityPlayerConfig()).start()


def test_ready_line_parsing() -> None:
    assert ready_port("READY 4810") == 4810
    assert ready_port("READY 4810\r") == 4810
    assert ready_port("Initialize engine version: 2022.3") is None
    assert ready_port("NOT READY 12") is None
    assert ready_port("READY") is None


# --- a running stand-in ----------------------------------------------------------------------


def test_launcher_starts_the_player_with_unity_flags(player: UnityPlayer) -> None:
    assert player.alive() and player.healthy()
    info = player.ping()
    assert info["backend"] == "unity-standin" and info["ok"]
    cmdline = Path(f"/proc/{info['pid']}/cmdline").read_bytes().split(b"\0")
    assert cmdline[-6:-1] == [b"-batchmode", b"-logFile", b"-", b"-coinScalePort", b"0"]
    assert "Unity stand-in starting" in player.output()  # READY came after other log lines


def test_renders_through_render_client(player: UnityPlayer) -> None:
    with player.client() as client:
        result = client.render(_scene())
        batch = client.render_many([_scene("blue", 1), _scene("white", 2)])
    assert (result.width, result.height, result.format) == (40, 32, "png")
    assert result.attributes == scene_attributes(_scene())
    assert np.array_equal(np.asarray(result.image()), render_array(_scene()))
    assert [r.attributes["color"] for r in batch] == ["blue", "white"]
    with player.client() as client, pytest.raises(SceneError, match=r"objects\[0\]\.color"):
        bad = _scene().to_dict()
        bad["objects"][0]["color"] = "mauve"
        client.render(bad)


def test_restart_after_the_player_is_killed(standin_player: Path) -> None:
    with UnityPlayer(_config(standin_player)) as unity:
        first_pid, port = unity.pid, unity.port
        assert first_pid is not None
        kept = unity.client()
        assert kept.ping()["pid"] == first_pid
        os.kill(first_pid, signal.SIGKILL)
        assert _dead(unity)
        assert not unity.healthy()
        assert unity.ensure_running() == port  # same port again: kept clients reconnect
        assert unity.restarts == 1 and unity.pid not in (None, first_pid)
        assert kept.ping()["pid"] == unity.pid
        kept.close()
        # a death under render_many: restarted and the batch re-issued
        unity.render_many([_scene()])
        dying = unity.pid
        assert dying is not None
        os.kill(dying, signal.SIGKILL)
        assert _dead(unity)
        results = unity.render_many([_scene("green")])
        assert results[0].attributes["color"] == "green"
        assert unity.restarts == 2 and unity.pid != dying
        last = unity.pid
    assert last is not None and _gone(last)  # stop() ended it


def test_fixed_port(standin_player: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        free = probe.getsockname()[1]
    with UnityPlayer(_config(standin_player, port=free)) as unity:
        assert unity.port == free and unity.ping()["ok"]


def test_startup_timeout_names_player_and_timeout(tmp_path: Path) -> None:
    hanging = write_player(tmp_path / "HangingPlayer.x86_64", ["--hang"])
    unity = UnityPlayer(_config(hanging, startup_timeout=2.0))
    start = time.monotonic()
    with pytest.raises(UnityStartupTimeout) as info:
        unity.start()
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert str(hanging) in message and "within 2s" in message
    assert "`startup_timeout` in test-unity.yaml" in message
    assert "--hang: listening" in message  # the player's last output is quoted
    assert not unity.alive()


def test_exit_before_ready_reports_status_and_output(tmp_path: Path) -> None:
    crashing = write_player(tmp_path / "CrashingPlayer.x86_64", ["--exit-before-ready", "7"])
    with pytest.raises(UnityStartupError, match=r"exited with status 7 before printing") as info:
        UnityPlayer(_config(crashing)).start()
    assert "told to fail before READY" in str(info.value)


def test_restart_takes_a_free_port_when_the_old_one_is_taken(standin_player: Path) -> None:
    with UnityPlayer(_config(standin_player)) as unity:
        old_pid, old_port = unity.pid, unity.port
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        assert _dead(unity)
        with socket.create_server(("127.0.0.1", old_port)):  # someone else took it meanwhile
            new_port = unity.ensure_running()
        assert new_port != old_port and unity.ping()["ok"] and unity.restarts == 1
