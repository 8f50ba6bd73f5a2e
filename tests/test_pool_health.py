"""The replica pool's backoff: a replica that lost a batch rests, longer after each loss."""

from __future__ import annotations

import time

from coin_scale.actors.pool import SlotHealth


def test_a_failed_slot_rests_with_a_doubling_capped_backoff_and_recovers():
    health = SlotHealth(2, first_s=0.05, max_s=0.15)
    assert health.ready_slots() == [0, 1]
    assert health.failed(0) == 0.05
    assert health.ready_slots() == [1]
    assert health.failed(0) == 0.1 and health.failed(0) == 0.15 and health.failed(0) == 0.15
    assert 0.05 <= health.wait_s() <= 0.15
    time.sleep(0.16)
    assert health.ready_slots() == [0, 1]
    health.succeeded(0)
    assert health.failed(0) == 0.05  # a success resets the backoff
