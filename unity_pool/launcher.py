"""Start a renderer backend process, wait until it is ready, restart it when it dies.

Backend-agnostic: a `LaunchSpec` is a command line and a start timeout. The contract every
backend follows (docs/render-protocol.md, section 6): the first stdout line that starts with
`READY` is `READY <port>`, printed once the server listens; logs go to stderr; SIGTERM stops it.
`BackendProcess` runs one such process; `SupervisedRenderer` adds a client (a `DiffusionClient`: the render protocol plus the
diffusion server's `generate` and `edit` ops, which other backends refuse) and re-issues
a request on a fresh process when the old one died under it (rendering is idempotent), so the
procedural server, a Unity player and a diffusion server are supervised the same way.
"""

from __future__ import annotations

import collections
import ctypes
import io
import logging
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from PIL import Image

from unity_pool.client import RenderClient, RendererUnavailable, RenderFailure, RenderResult
from unity_pool.diffusion.client import DiffusionClient
from unity_pool.procedural.backend import encode_png
from unity_pool.scene import Scene

log = logging.getLogger(__name__)

PROCEDURAL_COMMAND: tuple[str, ...] = ("python", "-m", "unity_pool.procedural", "--port", "0")
"""The procedural render server on a free port of 127.0.0.1."""


class BackendStartError(RendererUnavailable):
    """A backend process did not become ready: names the command, the timeout and its stderr."""

    def __init__(self, message: str, *, command: str = "", timeout: float = 0.0) -> None:
        super().__init__(message)
        self.command = command
        """The command line, as a shell would show it."""
        self.timeout = timeout
        """The start timeout that applied, seconds."""

    def __reduce__(self) -> tuple[Any, ...]:  # keep the fields through pickling (Ray)
        return (type(self), (str(self),), {"command": self.command, "timeout": self.timeout})


@dataclass(frozen=True, kw_only=True)
class LaunchSpec:
    """How to start one backend process."""

    command: tuple[str, ...] = PROCEDURAL_COMMAND
    """The argv. A first element `python` means this interpreter (`sys.executable`), so the
    backend runs in the environment of the process that starts it."""
    start_timeout: float = 30.0
    """Seconds from spawning to `READY <port>` (and a passing health check, if any)."""
    stop_timeout: float = 5.0
    """Seconds to wait after SIGTERM before SIGKILL."""
    ready_prefix: str = "READY"
    """The stdout line announcing the port starts with this word; other lines are ignored."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables added to (or replacing) the inherited environment."""
    cwd: str | None = None
    """Working directory; None keeps the parent's."""
    die_with_parent: bool = True
    """On Linux, SIGKILL the backend when the thread that started it dies (PR_SET_PDEATHSIG), so
    a killed Ray worker never leaves an orphan renderer. Start it from a long-lived thread."""

    def __post_init__(self) -> None:
        command = tuple(self.command)
        if not command or not all(isinstance(a, str) and a for a in command):
            raise ValueError(
                f"command: expected a non-empty argv of non-empty strings; got {self.command!r}. "
                "Fix: pass e.g. ('python', '-m', 'unity_pool.procedural', '--port', '0')."
            )
        object.__setattr__(self, "command", command)
        for name in ("start_timeout", "stop_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name}: expected seconds > 0; got {value!r}.")

    @classmethod
    def parse(cls, command_line: str, **options: Any) -> LaunchSpec:
        """A spec from a shell-style command line, e.g. `"python -m unity_pool.procedural"`."""
        return cls(command=tuple(shlex.split(command_line)), **options)

    def argv(self) -> list[str]:
        """The argv actually executed (`python` resolved to this interpreter)."""
        first, *rest = self.command
        return [sys.executable if first == "python" else first, *rest]

    def display(self) -> str:
        """The command as written, for messages."""
        return shlex.join(self.command)


def _death_signal_hook() -> Callable[[], None] | None:
    """A preexec_fn that asks Linux to SIGKILL the child when its parent thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, never in the forked child
    parent = os.getpid()

    def hook() -> None:
        prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call above
            os._exit(1)

    return hook


def _kill(popen: subprocess.Popen[str]) -> None:
    if popen.poll() is None:
        popen.kill()
        popen.wait()


class BackendProcess:
    """One backend process: `start()` returns its port, `stop()` ends it, `restart()` both.

    `health(port)`, when given, must succeed (return) before `start` returns; it is retried until
    the start timeout. Not thread-safe: one owner drives it.
    """

    def __init__(self, spec: LaunchSpec, *, health: Callable[[int], object] | None = None) -> None:
        self.spec = spec
        self.health = health
        self.starts = 0
        """How many processes have been spawned (1 + restarts once started)."""
        self._popen: subprocess.Popen[str] | None = None
        self._port: int | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=30)
        self._finalizer: weakref.finalize | None = None

    def __enter__(self) -> BackendProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """Process id of the running backend, None when not started."""
        return self._popen.pid if self._popen is not None else None

    @property
    def port(self) -> int:
        """The port from its READY line; raises `RendererUnavailable` when not started."""
        if self._port is None:
            raise RendererUnavailable(f"backend `{self.spec.display()}` is not started")
        return self._port

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._popen is not None and self._popen.poll() is None

    def stderr_tail(self) -> str:
        """The last lines the current (or last) process wrote to stderr."""
        return "".join(self._stderr).strip()

    def start(self) -> int:
        """Spawn the process and wait for `READY <port>` (and health); returns the port.

        Raises `BackendStartError` (a `RendererUnavailable`) naming the command and timeout if it
        exits, prints a malformed READY line or is not ready in time; the process is then killed.
        """
        if self.running:
            return self.port
        self.stop()
        spec = self.spec
        self._stderr.clear()
        try:
            popen = subprocess.Popen(
                spec.argv(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
                cwd=spec.cwd,
                env={**os.environ, **spec.env},
                preexec_fn=_death_signal_hook() if spec.die_with_parent else None,
            )
        except OSError as err:
            raise BackendStartError(
                f"cannot start backend `{spec.display()}`: {err}. Fix: check the command.",
                command=spec.display(),
                timeout=spec.start_timeout,
            ) from err
        self._popen = popen
        self.starts += 1
        self._finalizer = weakref.finalize(self, _kill, popen)
        lines: queue.Queue[str | None] = queue.Queue()
        waiting = threading.Event()
        waiting.set()

        def on_stdout(line: str) -> None:  # queued until READY, logged afterwards
            if waiting.is_set():
                lines.put(line)
            else:
                log.debug("backend pid %d stdout: %s", popen.pid, line.rstrip())

        assert popen.stdout is not None and popen.stderr is not None
        _drain(popen.stdout, on_stdout, end=lambda: lines.put(None))
        _drain(popen.stderr, self._stderr.append)
        deadline = time.monotonic() + spec.start_timeout
        try:
            self._port = self._wait_ready(lines, deadline)
            waiting.clear()
            if self.health is not None:
                self._wait_healthy(self._port, deadline)
        except BackendStartError:
            self.stop()
            raise
        log.info("backend `%s` ready on port %d (pid %d)", spec.display(), self._port, popen.pid)
        return self._port

    def _fail(self, what: str) -> BackendStartError:
        spec = self.spec
        time.sleep(0.05)  # let the stderr reader catch the last lines
        tail = self.stderr_tail()
        return BackendStartError(
            f"backend `{spec.display()}` {what} (start timeout {spec.start_timeout:g}s). Expected "
            f"a first stdout line `{spec.ready_prefix} <port>`. Fix: check that the command starts "
            "a render server (docs/render-protocol.md, section 6) or raise the start timeout."
            + (f" Its stderr ended with:\n{tail}" if tail else " It wrote nothing to stderr."),
            command=spec.display(),
            timeout=spec.start_timeout,
        )

    def _wait_ready(self, lines: queue.Queue[str | None], deadline: float) -> int:
        assert self._popen is not None
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise self._fail("did not print READY in time") from None
            if line is None:
                try:
                    code: object = self._popen.wait(timeout=self.spec.stop_timeout)
                except subprocess.TimeoutExpired:
                    code = "unknown (it closed stdout)"
                raise self._fail(f"exited with status {code} before printing READY")
            words = line.split()
            if not words or words[0] != self.spec.ready_prefix:
                log.debug("backend stdout: %s", line.rstrip())
                continue
            if len(words) != 2 or not words[1].isdigit() or not 0 < int(words[1]) < 65536:
                raise self._fail(f"printed a malformed ready line {line.strip()!r}")
            return int(words[1])

    def _wait_healthy(self, port: int, deadline: float) -> None:
        assert self.health is not None
        while True:
            try:
                self.health(port)
                return
            except Exception as err:
                if time.monotonic() >= deadline or not self.running:
                    raise self._fail(f"is not healthy on port {port} ({err})") from err
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after `stop_timeout`; a no-op when not running."""
        popen, self._popen, self._port = self._popen, None, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if popen is None:
            return
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(timeout=self.spec.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("backend pid %d ignored SIGTERM; killing it", popen.pid)
                _kill(popen)
        for pipe in (popen.stdout, popen.stderr):
            if pipe is not None:
                pipe.close()

    def restart(self) -> int:
        """Stop (if needed) and start a fresh process; returns the new port."""
        self.stop()
        return self.start()


def _drain(
    pipe: IO[str], sink: Callable[[str], object], *, end: Callable[[], object] | None = None
) -> None:
    """Read `pipe` line by line on a daemon thread until EOF, so the child never blocks on it."""

    def run() -> None:
        try:
            for line in pipe:
                sink(line)
        except (OSError, ValueError):  # the pipe was closed under us by stop()
            pass
        finally:
            if end is not None:
                end()

    threading.Thread(target=run, name="backend-pipe", daemon=True).start()


@dataclass(frozen=True, kw_only=True)
class RendererStatus:
    """Where a supervised renderer stands."""

    command: str
    """The backend's command line."""
    pid: int | None
    """Process id of the backend, None when not running."""
    port: int | None
    """Its TCP port on 127.0.0.1, None when not running."""
    restarts: int
    """Processes started after the first (after a death, a hang or a failed health check)."""
    reissued: int
    """Requests sent again because the backend died while serving them."""


class SupervisedRenderer:
    """A backend process plus a `RenderClient`: restarts a dead or hung backend and re-issues
    the lost request, up to `max_restarts` times per request. Implements `render_many`."""

    def __init__(
        self, spec: LaunchSpec | None = None, *, timeout: float = 60.0, max_restarts: int = 3
    ) -> None:
        """`timeout`: seconds to wait for one answer before the backend counts as hung."""
        self.spec = spec or LaunchSpec()
        self.timeout = timeout
        self.max_restarts = max_restarts
        self.process = BackendProcess(self.spec, health=self._ping_port)
        self.reissued = 0
        self._client: DiffusionClient | None = None

    def __enter__(self) -> SupervisedRenderer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _ping_port(self, port: int) -> None:
        with RenderClient(port=port, timeout=self.spec.start_timeout, connect_timeout=1.0) as c:
            c.ping()

    def start(self) -> RendererStatus:
        """Start the backend if it is not running (raises `BackendStartError`)."""
        if not self.process.running or self._client is None:
            self._close_client()
            port = self.process.start()
            self._client = DiffusionClient(port=port, timeout=self.timeout)
        return self.status()

    def stop(self) -> None:
        """Close the connection and stop the backend process."""
        self._close_client()
        self.process.stop()

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def status(self) -> RendererStatus:
        """Pid, port and restart counts (no I/O)."""
        running = self.process.running
        return RendererStatus(
            command=self.spec.display(),
            pid=self.process.pid if running else None,
            port=self.process.port if running else None,
            restarts=max(0, self.process.starts - 1),
            reissued=self.reissued,
        )

    def ping(self) -> dict[str, Any]:
        """Health check: (re)starts the backend if needed and returns its `ping` answer."""
        return self._call(lambda client: client.ping())

    def render_outcomes(
        self, scenes: Sequence[Scene | Mapping[str, Any]]
    ) -> list[RenderResult | RenderFailure]:
        """Render a batch; each entry is a result or the reason that scene failed."""
        return self._call(lambda client: client.render_outcomes(scenes))

    def render_many(self, scenes: Sequence[Scene | Mapping[str, Any]]) -> list[RenderResult]:
        """Render a batch; raises `SceneError` for invalid specs (see `RenderClient`)."""
        return self._call(lambda client: client.render_many(scenes))

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[bytes]:
        """PNG bytes of one generated image per prompt, prompt `i` sampled with `seeds[i]` (a
        diffusion backend's `generate` op; others refuse it with `ValueError`)."""
        images = self._call(lambda client: client.generate(prompts, 0, seeds=seeds))
        return [encode_png(image) for image in images]

    def edit(self, image: bytes, instruction: str, seed: int) -> bytes:
        """PNG bytes of the encoded `image` edited as `instruction` says (a diffusion backend's
        `edit` op)."""
        with Image.open(io.BytesIO(image)) as opened:
            source = opened.convert("RGB")
        return encode_png(self._call(lambda client: client.edit(source, instruction, seed)))

    def _call(self, fn: Callable[[DiffusionClient], Any]) -> Any:
        last: RendererUnavailable | None = None
        for attempt in range(self.max_restarts + 1):
            self.start()
            assert self._client is not None
            try:
                return fn(self._client)
            except RendererUnavailable as err:
                tail = self.process.stderr_tail()[-500:]
                log.warning(
                    "backend pid %s failed a request (%s); restarting it (attempt %d of %d)%s",
                    self.process.pid, err, attempt + 1, self.max_restarts,
                    f"; its stderr ended with: {tail}" if tail else "",
                )  # fmt: skip
                last = err
                self.stop()
                if attempt < self.max_restarts:
                    self.reissued += 1
        raise RendererUnavailable(
            f"backend `{self.spec.display()}` failed the same request {self.max_restarts + 1} "
            f"times (last: {last}). Fix: look at its stderr (logged above); a spec that crashes "
            "the backend every time is a backend bug."
        ) from last
