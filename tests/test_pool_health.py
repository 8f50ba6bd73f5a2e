"""The actor pools' health record, without Ray: a slot that lost work rests, longer after each
loss; work goes to the least loaded live slot, in turn; an item's tries are bounded."""

from __future__ import annotations

import subprocess
import sys

import pytest

from coin_scale.actors.health import PoolHealth


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_slot_rests_with_a_doubling_capped_backoff_and_recovers():
    clock = Clock()
    health = PoolHealth(2, first_s=0.05, max_s=0.15, clock=clock)
    assert health.ready_slots() == [0, 1]
    assert health.failed(0) == 0.05
    assert health.ready_slots() == [1]
    assert health.failed(0) == 0.1 and health.failed(0) == 0.15 and health.failed(0) == 0.15
    assert health.wait_s() == pytest.approx(0.15)
    clock.now += 0.16
    assert health.ready_slots() == [0, 1]
    health.succeeded(0)
    assert health.failed(0) == 0.05  # a success resets the backoff


def test_work_goes_to_the_least_loaded_live_slot_in_turn():
    clock = Clock()
    health = PoolHealth(3, clock=clock)
    first = [health.acquire() for _ in range(3)]
    assert sorted(first) == [0, 1, 2]  # one each before any slot gets a second call
    assert health.load == [1, 1, 1]
    health.release(first[0])
    assert health.acquire() == first[0]  # the least loaded
    health.failed(1)  # slot 1 rests
    picks = [health.acquire() for _ in range(4)]
    assert 1 not in picks and health.load[1] == 1
    assert health.load[0] == health.load[2] == 3  # spread over the live ones
    for slot in (0, 0, 2, 2):
        health.release(slot)
    turns = set()
    for _ in range(4):  # equal loads: the tie goes round the slots
        slot = health.acquire()
        assert slot is not None
        turns.add(slot)
        health.release(slot)
    assert turns == {0, 2}


def test_no_slot_while_every_slot_rests_until_the_first_is_due():
    clock = Clock()
    health = PoolHealth(2, first_s=1.0, clock=clock)
    health.failed(0)
    health.failed(1)
    health.failed(1)  # slot 1 rests 2 s
    assert health.acquire() is None and health.wait_s() == pytest.approx(1.0)
    clock.now += 1.0
    assert health.acquire() == 0
    assert health.wait_s() == pytest.approx(1.0)  # until slot 1 is due
    clock.now += 5.0
    assert health.wait_s() == 0.05  # nothing resting: a short poll


def test_a_lost_item_is_resubmitted_until_its_attempts_are_spent():
    clock = Clock()
    health = PoolHealth(2, max_attempts=3, first_s=0.5, clock=clock)
    assert health.lost(0, attempts=1) == 0.5
    assert health.lost(1, attempts=2) == 0.5
    assert health.resubmitted == 2
    assert health.lost(0, attempts=3) is None  # the third try was the last
    assert health.resubmitted == 2 and health.failures == [2, 1]  # the slot still rests
    assert health.ready_slots() == []


def test_a_pool_needs_a_slot_and_an_attempt():
    with pytest.raises(ValueError, match="max_attempts"):
        PoolHealth(1, max_attempts=0)
    with pytest.raises(ValueError, match="slots"):
        PoolHealth(0)


def test_the_health_record_and_the_render_batching_import_no_ray():
    code = (
        "import sys\n"
        "import coin_scale.actors.health, coin_scale.actors.render_batches\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
