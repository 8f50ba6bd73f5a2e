"""The health record of one actor pool, in plain Python (no Ray): which actors may take work now,
how loaded each is, and how often work was lost with an actor and sent again.

An actor (a slot) that lost an item (its process or its node died; Ray is restarting it) rests
for a backoff that doubles with each consecutive loss (`first_s` up to `max_s`), so the item is
not thrown back at it while it restarts and the item's attempts are not all spent in a second;
its next success ends the streak. An item is tried at most `max_attempts` times. New work goes to
the least loaded slot that is not resting, ties broken in turn. The dispatch loops of
`coin_scale.actors.dispatch` run every pool's calls on one such record; several threads may
stream on one pool at once (the agents' shared measurements), so its changes hold a lock.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable


class PoolHealth:
    """Per slot: consecutive losses, resting deadline and calls in flight; per pool: items
    resubmitted after a loss and the attempts an item may have."""

    def __init__(
        self,
        slots: int,
        *,
        max_attempts: int = 8,
        first_s: float = 0.5,
        max_s: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if slots < 1 or max_attempts < 1:
            raise ValueError(
                f"slots and max_attempts: expected >= 1; got {slots!r} and {max_attempts!r}"
            )
        self.max_attempts = max_attempts
        self.first_s, self.max_s = first_s, max_s
        self.failures = [0] * slots
        """Consecutive losses of each slot (0 once it answers again)."""
        self.resting_until = [0.0] * slots
        self.load = [0] * slots
        """Calls in flight on each slot."""
        self.resubmitted = 0
        """Items sent again because their actor was lost (each restart of an actor costs some)."""
        self._clock = clock
        self._turn = itertools.count()
        self._lock = threading.RLock()

    def ready_slots(self) -> list[int]:
        """The slots not resting now."""
        now = self._clock()
        return [i for i, until in enumerate(self.resting_until) if until <= now]

    def wait_s(self) -> float:
        """Seconds until the next resting slot is due (a short poll when none rests)."""
        now = self._clock()
        return max(0.05, min((u - now for u in self.resting_until if u > now), default=0.0))

    def acquire(self) -> int | None:
        """The least loaded slot not resting (ties in turn), now counted as one call busier; None
        while every slot rests."""
        with self._lock:
            ready = self.ready_slots()
            if not ready:
                return None
            turn, n = next(self._turn), len(self.load)
            slot = min(ready, key=lambda i: (self.load[i], (turn + i) % n))
            self.load[slot] += 1
            return slot

    def release(self, slot: int) -> None:
        """A call on `slot` is over (answered, failed or abandoned)."""
        with self._lock:
            self.load[slot] -= 1

    def failed(self, slot: int) -> float:
        """`slot` lost a call: it rests, longer after each consecutive loss; the seconds."""
        with self._lock:
            delay = min(self.max_s, self.first_s * 2 ** self.failures[slot])
            self.failures[slot] += 1
            self.resting_until[slot] = self._clock() + delay
            return delay

    def succeeded(self, slot: int) -> None:
        self.failures[slot] = 0

    def lost(self, slot: int, attempts: int) -> float | None:
        """`slot` lost an item on its `attempts`-th try: the slot rests, and the seconds are
        returned if the item may go again (counted as resubmitted), None when its tries are
        spent."""
        with self._lock:
            delay = self.failed(slot)
            if attempts >= self.max_attempts:
                return None
            self.resubmitted += 1
            return delay
