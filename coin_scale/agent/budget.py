"""Token and dollar budgets: one per unit, one shared by every unit of a sweep.

Before each LLM call the agent asks both budgets whether the call (estimated: the request's
tokens plus the most output it may produce) would exceed them; the sweep budget *reserves* the
estimate, so units running at the same time cannot all pass the check and overrun it together.
After the call the reservation is replaced by what the call really cost.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass


def _over(
    what: str,
    *,
    max_tokens: int | None,
    max_usd: float | None,
    tokens: int,
    usd: float,
    more_tokens: int,
    more_usd: float,
) -> str | None:
    """Which limit `tokens + more_tokens` / `usd + more_usd` would exceed, in words, or None."""
    if max_tokens is not None and tokens + more_tokens > max_tokens:
        return (
            f"{what} token budget of {max_tokens} would be exceeded "
            f"(used {tokens}, next call up to {more_tokens})"
        )
    if max_usd is not None and usd + more_usd > max_usd:
        return (
            f"{what} dollar budget of ${max_usd:.4f} would be exceeded "
            f"(used ${usd:.4f}, next call about ${more_usd:.4f})"
        )
    return None


def budget_hint(errors: Iterable[str | None]) -> str | None:
    """What to do when units stopped at a budget: a rerun with a larger one pays only for new
    requests (the request cache answers the rest); None when no unit did."""
    stopped = sum(1 for e in errors if e and "budget of" in e and "would be exceeded" in e)
    if not stopped:
        return None
    return (
        f"{stopped} unit(s) stopped at a budget; rerun with a larger --budget-usd / "
        "--unit-budget-usd (or the token budgets): requests already answered come from the request "
        "cache and are not paid again"
    )


def _check_limits(max_tokens: int | None, max_usd: float | None) -> None:
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens: expected at least 1 or None (no limit); got {max_tokens}")
    if max_usd is not None and not max_usd > 0:
        raise ValueError(f"max_usd: expected a positive amount or None (no limit); got {max_usd}")


class Budget:
    """One unit's budget; used by one agent loop at a time, so not locked."""

    def __init__(self, max_tokens: int | None = None, max_usd: float | None = None) -> None:
        """None means no limit."""
        _check_limits(max_tokens, max_usd)
        self.max_tokens = max_tokens
        self.max_usd = max_usd
        self.tokens = 0
        """Tokens charged so far (input + output)."""
        self.usd = 0.0
        """Dollars charged so far."""

    def charge(self, tokens: int, usd: float) -> None:
        """Record a call's real cost."""
        self.tokens += tokens
        self.usd += usd

    def would_exceed(self, tokens: int, usd: float) -> str | None:
        """Which limit a call of about `tokens` and `usd` would exceed, in words, or None."""
        return _over(
            "unit", max_tokens=self.max_tokens, max_usd=self.max_usd, tokens=self.tokens,
            usd=self.usd, more_tokens=tokens, more_usd=usd,
        )  # fmt: skip

    @property
    def exhausted(self) -> bool:
        """True once a limit is reached."""
        return (self.max_tokens is not None and self.tokens >= self.max_tokens) or (
            self.max_usd is not None and self.usd >= self.max_usd
        )

    @property
    def usd_per_token(self) -> float:
        """Average cost of a token so far (0 before any priced call): prices the next estimate."""
        return self.usd / self.tokens if self.tokens else 0.0


@dataclass(frozen=True, slots=True)
class Reservation:
    """An estimate held against a `SweepBudget` until the call's real cost is known."""

    tokens: int
    usd: float


class SweepBudget:
    """A budget shared by every unit of a sweep. Thread-safe; safe from asyncio tasks too (no
    method awaits or blocks beyond a short critical section)."""

    def __init__(self, max_tokens: int | None = None, max_usd: float | None = None) -> None:
        """None means no limit."""
        _check_limits(max_tokens, max_usd)
        self.max_tokens = max_tokens
        self.max_usd = max_usd
        self._tokens = 0
        self._usd = 0.0
        self._held_tokens = 0
        self._held_usd = 0.0
        self._lock = threading.Lock()

    @property
    def tokens(self) -> int:
        """Tokens charged so far (reservations not included)."""
        return self._tokens

    @property
    def usd(self) -> float:
        """Dollars charged so far (reservations not included)."""
        return self._usd

    @property
    def usd_per_token(self) -> float:
        """Average cost of a token so far across the sweep (0 before any priced call)."""
        with self._lock:
            return self._usd / self._tokens if self._tokens else 0.0

    def charge(self, tokens: int, usd: float) -> None:
        """Record a call's real cost (a call made without a reservation)."""
        with self._lock:
            self._tokens += tokens
            self._usd += usd

    def reserve(self, tokens: int, usd: float) -> Reservation | str:
        """Hold an estimate for a call about to be made; the reason in words when it would
        exceed a limit (counting what other units hold)."""
        with self._lock:
            reason = _over(
                "sweep", max_tokens=self.max_tokens, max_usd=self.max_usd,
                tokens=self._tokens + self._held_tokens, usd=self._usd + self._held_usd,
                more_tokens=tokens, more_usd=usd,
            )  # fmt: skip
            if reason is not None:
                return reason
            self._held_tokens += tokens
            self._held_usd += usd
            return Reservation(tokens, usd)

    def settle(self, reservation: Reservation, tokens: int, usd: float) -> None:
        """Replace a reservation by the call's real cost (0, 0 when the call failed)."""
        with self._lock:
            self._held_tokens -= reservation.tokens
            self._held_usd -= reservation.usd
            self._tokens += tokens
            self._usd += usd

    @property
    def exhausted(self) -> bool:
        """True once a limit is reached by what was charged."""
        with self._lock:
            return (self.max_tokens is not None and self._tokens >= self.max_tokens) or (
                self.max_usd is not None and self._usd >= self.max_usd
            )
