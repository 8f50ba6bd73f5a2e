"""`coin_scale.bench.cpu`: the CPU seconds of a block, grouped by process role."""

from __future__ import annotations

import subprocess
import sys
import time

from coin_scale.bench.cpu import CPUMeter


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_driver_and_a_child_process_are_counted_apart() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(0.2); e = time.process_time() + 0.4\n"
         "while time.process_time() < e: pass\ntime.sleep(30)"],
    )  # fmt: skip
    try:
        time.sleep(0.1)  # the child exists before the block starts
        with CPUMeter() as meter:
            _spin(0.3)
            time.sleep(0.8)  # the child spins 0.4 s meanwhile
        report = meter.report()
    finally:
        child.kill()
        child.wait()
    cpu = report["cpu_s"]
    assert 0.25 <= cpu["driver"] <= 1.0
    assert 0.3 <= cpu["python -c"] <= 0.6
    assert report["cpu_total_s"] >= cpu["driver"] + cpu["python -c"] - 0.02
    assert report["wall_s"] >= 1.0 and 0 < report["cores_busy"] <= report["cores"]
    assert list(cpu) == sorted(cpu, key=lambda k: -cpu[k])  # largest first
