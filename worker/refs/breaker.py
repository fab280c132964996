"""Pure decisions for reading ROI references from a store without stalling the poll loop: a
circuit breaker per store and the time budget of one batch's reads. No clock inside: every
method takes the time (monotonic seconds) from its caller, so tests pass their own."""

from __future__ import annotations


class CircuitBreaker:
    """Closed: the store is asked. A failure (no answer in the budget, the endpoint down) opens it
    for ``cooldown_s``, doubling per failure in a row up to ``max_cooldown_s``: meanwhile the
    store is not asked and its frames count as missing at once. After the cool-down the store is
    asked again: an answer (any, "not found" included: the store is up) closes it."""

    def __init__(self, cooldown_s: float = 5.0, max_cooldown_s: float = 60.0) -> None:
        self.cooldown_s, self.max_cooldown_s = cooldown_s, max_cooldown_s
        self.failures_in_a_row = 0
        self._open_until_s = float("-inf")

    def allows(self, now_s: float) -> bool:
        return now_s >= self._open_until_s

    def open_for_s(self, now_s: float) -> float:
        """Seconds left of the cool-down (0: closed, or trying again)."""
        return max(0.0, self._open_until_s - now_s)

    def failed(self, now_s: float) -> None:
        self.failures_in_a_row += 1
        self._open_until_s = now_s + min(self.max_cooldown_s,
                                         self.cooldown_s * 2 ** (self.failures_in_a_row - 1))

    def answered(self) -> None:
        self.failures_in_a_row = 0
        self._open_until_s = float("-inf")


def give_up_at_s(started_s: float, last_answer_s: float, stall_s: float, max_wait_s: float) -> float:
    """When to stop waiting for a batch's reads: once no read has been answered for ``stall_s``
    (a store that hangs), and at most ``max_wait_s`` after the batch started (a store that
    answers, but too slowly to keep up). A healthy store answering a long batch keeps going."""
    return min(last_answer_s + stall_s, started_s + max_wait_s)
