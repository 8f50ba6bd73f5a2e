"""Start a Unity render player, wait until it serves, health-check it and restart it when it dies.

The player is the build of `unity_pool/unity/UnityProject` (docs/unity.md). It runs as

    <player> -batchmode -logFile - -coinScalePort <port> [extra_args]

`-batchmode` keeps it windowless but, without `-nographics`, with a graphics device, so cameras
render; `-logFile -` sends Unity's log (Debug.Log) to stdout, where the server prints
`READY <port>` once it listens. Unity prints its own start-up lines first, so the launcher scans
stdout for that line rather than expecting it first. Port 0 lets the player bind a free port and
report it (one player per worker, no clashes); a restart asks for the same port again so clients
that kept the address reconnect on their own.

`UnityPlayerConfig` (frozen, loaded from `configs/unity.yaml`) says what to run; `UnityPlayer`
runs one process: `start`, `ping`, `healthy`, `ensure_running`, `restart`, `stop`, and
`render_many`, which restarts a dead player and re-issues the batch once.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from unity_pool.client import RenderClient, RendererUnavailable, RenderResult
from unity_pool.scene import Scene

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("configs/unity.yaml")
"""Where `UnityPlayerConfig.from_yaml()` looks when given no path (relative to the working
directory)."""

READY_LINE = re.compile(r"^\s*READY (\d{1,5})\s*$")
"""A stdout line announcing that the server listens, and on which port."""

RESERVED_FLAGS = ("-batchmode", "-nographics", "-logFile", "-coinScalePort")
"""Flags the launcher sets itself (or forbids: `-nographics` stops cameras from rendering)."""

_STOP_TIMEOUT = 10.0
"""Seconds between SIGTERM and SIGKILL when stopping a player."""


class UnityPlayerNotFound(FileNotFoundError):
    """The configured player binary does not exist or is not executable; names the config key."""


class UnityStartupError(RendererUnavailable):
    """The player exited, or failed its health check, before it served; carries its last output."""


class UnityStartupTimeout(UnityStartupError, TimeoutError):
    """The player did not print `READY <port>` within `startup_timeout`."""


@dataclass(frozen=True, kw_only=True)
class UnityPlayerConfig:
    """How to run a Unity render player (the keys of `configs/unity.yaml`)."""

    player: str = ""
    """Path of the built player executable, e.g. `/opt/coin-scale/CoinScalePlayer.x86_64`.
    `~` and `$VARS` are expanded; a relative path is relative to the working directory of the
    process that starts the player (use absolute paths on a cluster)."""
    extra_args: tuple[str, ...] = ()
    """More player flags after the launcher's own, e.g. `("-force-vulkan",)`. Must not repeat
    `RESERVED_FLAGS`."""
    launch_prefix: tuple[str, ...] = ()
    """A command to run the player under, e.g. `("xvfb-run", "-a")` on a node without a display;
    empty runs the player directly."""
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Variables added to the inherited environment, e.g. `{"DISPLAY": ":0"}`."""
    port: int = 0
    """TCP port the player listens on. 0: the player binds a free one and reports it on its
    READY line (one player per worker without clashes); N: exactly N (one player per machine)."""
    host: str = "127.0.0.1"
    """Address the player binds and clients connect to."""
    startup_timeout: float = 120.0
    """Seconds from spawning the player to its READY line and a first answered ping. Unity
    start-up (graphics device, shader warm-up) takes seconds to a minute."""
    ping_timeout: float = 10.0
    """Seconds a health check (`ping`) may take before the player counts as hung."""
    render_timeout: float = 120.0
    """Seconds a client waits for a render answer (`RenderClient(timeout=...)`)."""
    source: str = "configs/unity.yaml"
    """Where this config came from, named in error messages (not a YAML key)."""

    def __post_init__(self) -> None:
        if not isinstance(self.player, str):
            raise TypeError(f"player: expected a path string; got {self.player!r}.")
        for name in ("extra_args", "launch_prefix"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(a, str) for a in value):
                raise TypeError(
                    f"{name}: expected a list of strings; got {value!r}. "
                    'Fix: write it as a YAML list, e.g. ["-force-vulkan"].'
                )
            object.__setattr__(self, name, tuple(value))
        if not isinstance(self.env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()
        ):
            raise TypeError(f"env: expected a mapping of strings to strings; got {self.env!r}.")
        object.__setattr__(self, "env", dict(self.env))  # a copy (picklable, for Ray)
        if (
            not isinstance(self.port, int)
            or isinstance(self.port, bool)
            or not 0 <= self.port <= 65535
        ):
            raise ValueError(f"port: expected 0..65535 (0 = a free port); got {self.port!r}.")
        for name in ("startup_timeout", "ping_timeout", "render_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name}: expected seconds > 0; got {value!r}.")
        clashes = [a for a in self.extra_args if a in RESERVED_FLAGS]
        if clashes:
            raise ValueError(
                f"extra_args: {', '.join(clashes)} conflict with the flags the launcher sets "
                f"({' '.join(RESERVED_FLAGS[:1] + RESERVED_FLAGS[2:])}; -nographics is never "
                "allowed: without a graphics device cameras do not render). Fix: remove them "
                "from extra_args (use `port` for the port)."
            )

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, source: str = "<mapping>"
    ) -> UnityPlayerConfig:
        """A config from parsed YAML; unknown keys are rejected with the valid ones listed."""
        valid = [f.name for f in fields(cls) if f.name != "source"]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(
                f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}."
            )
        values = dict(data)
        for name in ("extra_args", "launch_prefix"):
            if values.get(name) is None:
                values.pop(name, None)
        if values.get("env") is None:
            values.pop("env", None)
        if values.get("player") is None:
            values["player"] = ""
        return cls(**values, source=source)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str] = DEFAULT_CONFIG_PATH) -> UnityPlayerConfig:
        """Load `configs/unity.yaml` (or `path`); raises FileNotFoundError / ValueError."""
        import yaml

        path = Path(path)
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"no Unity player config at {path}. Fix: copy configs/unity.yaml from the "
                "repository and set `player` (docs/unity.md)."
            ) from err
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of keys; got {type(data).__name__}.")
        return cls.from_mapping(data, source=str(path))

    def player_path(self) -> Path:
        """The player executable; raises `UnityPlayerNotFound` naming the config key to set."""
        where = f"`player` in {self.source}"
        if not self.player.strip():
            raise UnityPlayerNotFound(
                f"no Unity player configured: {where} is empty. Fix: build the player "
                f"(docs/unity.md, 'Building the player') and set {where} to its executable, "
                "e.g. /opt/coin-scale/CoinScalePlayer.x86_64."
            )
        path = Path(os.path.expandvars(os.path.expanduser(self.player)))
        if not path.is_file():
            raise UnityPlayerNotFound(
                f"Unity player not found at {path} ({where}). Fix: build the player "
                f"(docs/unity.md) and set {where} to the executable's path."
            )
        if not os.access(path, os.X_OK):
            raise UnityPlayerNotFound(
                f"Unity player at {path} ({where}) is not executable. Fix: chmod +x {path}."
            )
        return path

    def command(self, port: int | None = None, *, check: bool = True) -> list[str]:
        """The argv: `[*launch_prefix, player, -batchmode, -logFile, -, -coinScalePort, port,
        *extra_args]` (`port` defaults to the configured one). With `check`, the player must
        exist here (`UnityPlayerNotFound` otherwise); pass `check=False` on a cluster driver
        that builds the command for workers on other machines."""
        port = self.port if port is None else port
        player = (
            str(self.player_path())
            if check
            else os.path.expandvars(os.path.expanduser(self.player))
        )
        return [
            *self.launch_prefix,
            player,
            "-batchmode",
            "-logFile",
            "-",
            "-coinScalePort",
            str(port),
            *self.extra_args,
        ]


def ready_port(line: str) -> int | None:
    """The port of a `READY <port>` line, or None for any other line."""
    match = READY_LINE.match(line)
    return int(match.group(1)) if match else None


def ping(host: str, port: int, timeout: float) -> dict[str, Any]:
    """One health check: the server's `ping` answer (raises `RendererUnavailable`)."""
    with RenderClient(host, port, timeout=timeout, connect_timeout=timeout) as client:
        return client.ping()


def _terminate(popen: subprocess.Popen[str], timeout: float = _STOP_TIMEOUT) -> None:
    """SIGTERM the player's process group (it runs in its own session), SIGKILL after timeout."""
    if popen.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, None)):
        try:
            os.killpg(popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            popen.send_signal(sig)
        try:
            popen.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            log.warning(
                "Unity player pid %d ignored SIGTERM for %gs; killing it", popen.pid, timeout
            )


class _Process:
    """One spawned player: the Popen, a thread draining its output, the READY port."""

    def __init__(self, argv: list[str], env: Mapping[str, str]) -> None:
        self.argv = argv
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            env={**os.environ, **env},
            start_new_session=True,  # its own process group: stop() ends Unity's helpers too
        )
        self.port: int | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self.ready = threading.Event()  # set on READY or on EOF
        self._finalizer = weakref.finalize(self, _terminate, self.popen, 2.0)
        self._reader = threading.Thread(
            target=self._drain, name=f"unity-player-{self.popen.pid}", daemon=True
        )
        self._reader.start()

    def _drain(self) -> None:
        assert self.popen.stdout is not None
        try:
            for raw in self.popen.stdout:
                line = raw.rstrip("\n")
                self.tail.append(line)
                if self.port is None and (port := ready_port(line)) is not None:
                    self.port = port
                    self.ready.set()
                log.debug("unity pid %d: %s", self.popen.pid, line)
        except (OSError, ValueError):  # the pipe closed under us
            pass
        finally:
            self.ready.set()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        time.sleep(0.05)  # let the reader catch the last lines
        return "\n".join(self.tail) or "(no output)"

    def stop(self) -> None:
        self._finalizer.detach()
        _terminate(self.popen)
        self._reader.join(timeout=2.0)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


class UnityPlayer:
    """One Unity render player process, started from a `UnityPlayerConfig`.

    Thread-safe for start/stop/restart (a lock); use `client()` per thread for rendering.
    """

    def __init__(self, config: UnityPlayerConfig) -> None:
        self.config = config
        self.restarts = 0
        """Players started after the first one (after a death or a failed health check)."""
        self._process: _Process | None = None
        self._last_port: int | None = None
        self._lock = threading.RLock()
        self._client: RenderClient | None = None

    def __enter__(self) -> UnityPlayer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- state ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Process id of the running player, None when not running."""
        proc = self._process
        return proc.popen.pid if proc is not None and proc.alive() else None

    @property
    def port(self) -> int:
        """The port the player reported; raises `RendererUnavailable` when not started."""
        proc = self._process
        if proc is None or proc.port is None:
            raise RendererUnavailable(
                f"the Unity player ({self.config.player or 'unset'}) is not started. "
                "Fix: call start() first."
            )
        return proc.port

    def alive(self) -> bool:
        """True while the process runs (it may still be hung; see `healthy`)."""
        return self._process is not None and self._process.alive()

    def output(self) -> str:
        """The last lines the player wrote (stdout and stderr), for diagnosis."""
        return self._process.output() if self._process is not None else "(not started)"

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> int:
        """Start the player if it is not running and wait until it serves; returns its port.

        Raises `UnityPlayerNotFound` (binary missing), `UnityStartupTimeout` (no READY within
        `startup_timeout`) or `UnityStartupError` (it exited or failed its first ping); a player
        that failed to start is killed.
        """
        with self._lock:
            if self._process is not None and self._process.alive():
                return self.port
            requested = self.config.port
            if requested == 0 and self._last_port is not None:
                try:  # same port as before: clients that kept the address reconnect by themselves
                    return self._launch(self._last_port)
                except UnityStartupTimeout:
                    raise
                except UnityStartupError as err:
                    log.info(
                        "port %d not reusable (%s); asking for a free one", self._last_port, err
                    )
            return self._launch(requested)

    def _launch(self, port: int) -> int:
        self._discard()
        argv = self.config.command(port)
        shown = shlex.join(argv)
        try:
            proc = _Process(argv, self.config.env)
        except OSError as err:
            raise UnityStartupError(
                f"cannot start the Unity player `{shown}`: {err}. Fix: check `player` and "
                f"`launch_prefix` in {self.config.source}."
            ) from err
        self._process = proc
        timeout = self.config.startup_timeout
        deadline = time.monotonic() + timeout
        log.info("starting Unity player: %s", shown)
        proc.ready.wait(timeout)
        if proc.port is None:
            exited = not proc.alive() or proc.ready.is_set()
            output = proc.output()
            proc.stop()
            if exited:
                raise UnityStartupError(
                    f"the Unity player {argv[len(self.config.launch_prefix)]} exited with status "
                    f"{proc.popen.returncode} before printing `READY <port>`. Its last output:\n"
                    f"{output}\nFix: read the output above; docs/unity.md lists common causes."
                )
            raise UnityStartupTimeout(
                f"the Unity player {argv[len(self.config.launch_prefix)]} did not print "
                f"`READY <port>` within {timeout:g}s (`startup_timeout` in "
                f"{self.config.source}). Its last output:\n{output}\nFix: check that it was "
                "built with the CoinScale server (docs/unity.md) or raise `startup_timeout`."
            )
        self._wait_healthy(proc, deadline)
        self._last_port = proc.port
        log.info(
            "Unity player ready on %s:%d (pid %d)", self.config.host, proc.port, proc.popen.pid
        )
        return proc.port

    def _wait_healthy(self, proc: _Process, deadline: float) -> None:
        assert proc.port is not None
        while True:
            try:
                ping(self.config.host, proc.port, self.config.ping_timeout)
                return
            except (RendererUnavailable, RuntimeError) as err:
                if not proc.alive() or time.monotonic() >= deadline:
                    output = proc.output()
                    proc.stop()
                    raise UnityStartupError(
                        f"the Unity player {self.config.player} printed READY {proc.port} but "
                        f"does not answer ping ({err}). Its last output:\n{output}"
                    ) from err
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the player (SIGTERM, then SIGKILL); a no-op when it is not running."""
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        proc, self._process = self._process, None
        if proc is not None:
            proc.stop()

    def restart(self) -> int:
        """Stop the player and start a fresh one (on the same port when it can); returns it."""
        with self._lock:
            self._discard()
            self.restarts += 1
            return self.start()

    def ping(self) -> dict[str, Any]:
        """The player's `ping` answer (backend name, pid); raises `RendererUnavailable`."""
        return ping(self.config.host, self.port, self.config.ping_timeout)

    def healthy(self) -> bool:
        """True when the process runs and answers `ping` within `ping_timeout`."""
        if not self.alive():
            return False
        try:
            self.ping()
        except (RendererUnavailable, RuntimeError):
            return False
        return True

    def ensure_running(self) -> int:
        """Start the player, or restart it if it died or stopped answering; returns its port."""
        with self._lock:
            if self._process is None:
                return self.start()
            if not self.healthy():
                log.warning(
                    "Unity player pid %s is %s; restarting it. Its last output:\n%s",
                    self._process.popen.pid,
                    "hung" if self.alive() else f"dead (status {self._process.popen.returncode})",
                    self._process.output(),
                )
                return self.restart()
            return self.port

    # --- rendering -----------------------------------------------------------------------------

    def client(self, *, timeout: float | None = None) -> RenderClient:
        """A new client for the running player (one per thread; close it when done)."""
        return RenderClient(
            self.config.host,
            self.port,
            timeout=self.config.render_timeout if timeout is None else timeout,
            connect_timeout=self.config.ping_timeout,
        )

    def render_many(self, scenes: Sequence[Scene | Mapping[str, Any]]) -> list[RenderResult]:
        """Render a batch on a kept connection; if the player died, restart it and re-issue the
        batch once (rendering is idempotent). Raises `SceneError` for invalid specs."""
        with self._lock:
            for attempt in range(2):
                if self._client is None or not self.alive():
                    self.ensure_running()
                    if self._client is not None:
                        self._client.close()
                    self._client = self.client()
                try:
                    return self._client.render_many(scenes)
                except RendererUnavailable:
                    if attempt == 1 or self.healthy():
                        raise
                    log.warning("Unity player died during a request; restarting and re-issuing")
                    self._client.close()
                    self._client = None
                    self.restart()
        raise AssertionError("unreachable")
