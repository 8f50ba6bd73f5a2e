"""Where a measured stretch's CPU time went on this node, process by process.

`CPUMeter` snapshots the CPU seconds (user + system) of every process of this node before and
after a block, and groups the difference by role: this process (`driver`), Ray actors by class
(`ray::LLMGatewayActor`, ...), other processes by a short command name (a fake provider server,
Ray's own raylet and GCS). Processes that start and exit inside the block are not seen; other
nodes of a cluster are not either. Used by `coin-scale bench llm` to show where the all-at-once
run's time goes on a machine whose cores are all busy.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import psutil


def _role(proc: psutil.Process) -> str:
    """A process's group: its Ray actor or task name, else a short form of its command (the
    module of `python -m module`, the script of `python script.py`)."""
    try:
        cmdline = proc.cmdline() or [proc.name()]
    except (psutil.Error, OSError):
        return "other"
    first = cmdline[0]
    if first.startswith("ray::"):
        return first.split()[0]
    if not os.path.basename(first).startswith("python"):
        return os.path.basename(first)
    for i, arg in enumerate(cmdline[1:], start=1):  # past the interpreter's flags (-u, -X ...)
        if arg == "-m" and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg == "-c":
            return "python -c"
        if not arg.startswith("-"):
            return os.path.basename(arg)
    return os.path.basename(first)


def _snapshot() -> dict[int, tuple[str, float]]:
    out: dict[int, tuple[str, float]] = {}
    me = os.getpid()
    for proc in psutil.process_iter():
        try:
            times = proc.cpu_times()
            role = "driver" if proc.pid == me else _role(proc)
        except (psutil.Error, OSError):
            continue
        out[proc.pid] = (role, times.user + times.system)
    return out


@dataclass
class CPUMeter:
    """`with CPUMeter() as meter: ...`, then `meter.report()`."""

    min_seconds: float = 0.01
    """Groups that used less are left out of the report."""
    seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    _before: dict[int, tuple[str, float]] = field(default_factory=dict, repr=False)
    _start: float = field(default=0.0, repr=False)

    def __enter__(self) -> Self:
        self._before = _snapshot()
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wall_s = time.perf_counter() - self._start
        after = _snapshot()
        seconds: dict[str, float] = {}
        for pid, (role, cpu) in after.items():
            before = self._before.get(pid)
            used = cpu - before[1] if before is not None else 0.0
            if used > 0:
                seconds[role] = seconds.get(role, 0.0) + used
        self.seconds = seconds

    def report(self) -> dict[str, Any]:
        """CPU seconds by group (largest first), their total, the wall time and the cores the
        total kept busy on average."""
        groups = {
            role: round(s, 2)
            for role, s in sorted(self.seconds.items(), key=lambda kv: -kv[1])
            if s >= self.min_seconds
        }
        total = sum(self.seconds.values())
        return {
            "cpu_s": groups,
            "cpu_total_s": round(total, 2),
            "wall_s": round(self.wall_s, 2),
            "cores_busy": round(total / self.wall_s, 2) if self.wall_s > 0 else None,
            "cores": psutil.cpu_count(),
        }
