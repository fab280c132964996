"""Pure decisions for reading ROI references from a store without stalling the poll loop: a
circuit breaker per store, when a store counts as hung or failed, and the time budget of one
batch's reads. No clock inside: every function takes the time (monotonic seconds) from its
caller, so tests pass their own."""

from __future__ import annotations

from collections.abc import Iterable


class CircuitBreaker:
    """Closed: the store is asked. A failure (it hung: no answer for the stall budget; or every read
    it answered in a batch failed: the endpoint down; not one slow object, ``outpaced``) opens it for ``cooldown_s``, doubling per
    failure in a row up to ``max_cooldown_s``: meanwhile the store is not asked (its references are
    held, RoiResolver's ``outage_hold_s``, or their frames count as missing at once). After the cool-down the store is
    asked again: an answer (any, "not found" included: the store is up) closes it."""

    def __init__(self, cooldown_s: float = 5.0, max_cooldown_s: float = 60.0) -> None:
        self.cooldown_s, self.max_cooldown_s = cooldown_s, max_cooldown_s
        self.failures_in_a_row = 0
        self._open_until_s = float("-inf")
        self.down_since_s: float | None = None  # the first failure of this run of failures (the outage)

    def allows(self, now_s: float) -> bool:
        return now_s >= self._open_until_s

    def open_for_s(self, now_s: float) -> float:
        """Seconds left of the cool-down (0: closed, or trying again)."""
        return max(0.0, self._open_until_s - now_s)

    def failed(self, now_s: float) -> None:
        if self.down_since_s is None:
            self.down_since_s = now_s
        self.failures_in_a_row += 1
        self._open_until_s = now_s + min(self.max_cooldown_s,
                                         self.cooldown_s * 2 ** (self.failures_in_a_row - 1))

    def answered(self) -> None:
        self.failures_in_a_row = 0
        self._open_until_s = float("-inf")
        self.down_since_s = None


def give_up_at_s(started_s: float, last_answer_s: float, stall_s: float, max_wait_s: float) -> float:
    """When to stop waiting for a store's reads in a batch: once it has answered none for
    ``stall_s`` (it hangs), or at ``max_wait_s`` after the batch started (the turn's bound: the
    poll loop must keep turning; what is not read by then is asked again next turn, not lost).
    A healthy store answering a long batch is read on across turns."""
    return min(last_answer_s + stall_s, started_s + max_wait_s)


def hung(now_s: float, last_answer_s: float, stall_s: float) -> bool:
    """A store with reads outstanding that has answered none for ``stall_s`` (since the batch
    started, or its last answer) hangs: its outstanding reads are given up."""
    return now_s - last_answer_s >= stall_s


def outpaced(given_up_sent_s: Iterable[float], up_sent_s: float) -> bool:
    """The reads given up at a store that went ``stall_s`` without an answer were each sent no later
    than a read it answered (``up_sent_s``: when the latest answered read was sent; a failure of
    the store itself is no answer here): the store is up and those reads are slow objects (an S3
    GET retried for seconds), not a hang. A store that stops answering altogether passes this for
    at most the batch it stopped in: the next batch's reads are sent after every answer."""
    sent = list(given_up_sent_s)
    return bool(sent) and max(sent) <= up_sent_s


def store_verdict(answered_ok: int, answered_failed: int, hung_: bool, outpaced_: bool = False) -> bool | None:
    """What one batch tells a store's breaker: False (failed: it hung, or every read it answered
    was a failure of the store itself, e.g. the endpoint down), True (up: some read was answered,
    "not found" and one object's AccessDenied among good ones included), None (nothing: only reads
    not finished within the turn, which are asked again and say nothing against the store).
    ``outpaced_``: the reads given up when it "hung" were slow objects (``outpaced``), which say
    nothing against the store either (before, one slow object among good ones opened the breaker:
    5 s of every session's frames from the store skipped)."""
    if hung_ and not outpaced_:
        return False
    if answered_ok:
        return True
    if answered_failed:
        return False
    return None
