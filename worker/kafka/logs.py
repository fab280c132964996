"""librdkafka's own log lines, through Python logging and without the flood.

By default librdkafka prints to stderr, and an unreachable broker makes every client repeat
the same connection error on each retry (an audit counted ~1,400 lines a minute from one
worker, ~580 before `loadtest` gave up). Clients built in worker.kafka pass ``logger`` so the
lines reach the ``librdkafka`` logger (JSON in the worker like everything else), where a filter
lets the same message (digits aside: ports, counts, milliseconds) through once a minute.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, MutableMapping
from typing import Any

_DIGITS = re.compile(r"\d+")


class RepeatFilter(logging.Filter):
    """Passes a message, then drops the same message (digits masked) for ``every_s`` seconds."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 1000) -> None:
        super().__init__()
        self.every_s = every_s
        self._clock = clock
        self._max_keys = max_keys
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = _DIGITS.sub("#", record.getMessage())
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            return False
        if len(self._last) >= self._max_keys:  # bounded: forget the oldest half
            for old in sorted(self._last, key=self._last.__getitem__)[: self._max_keys // 2]:
                del self._last[old]
        self._last[key] = now
        return True


class TransientAsInfo(logging.Filter):
    """librdkafka warns about conditions it retries by itself ("Coordinator load in progress:
    retrying" while a fresh broker starts): INFO, not a problem, so a WARNING-level console (the
    `make run` table) does not show them."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and "retrying" in record.getMessage():
            if not self._logger.isEnabledFor(logging.INFO):
                return False
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def librdkafka_logger() -> logging.Logger:
    logger = logging.getLogger("librdkafka")
    if not any(isinstance(f, RepeatFilter) for f in logger.filters):
        logger.addFilter(TransientAsInfo(logger))
        logger.addFilter(RepeatFilter())
    return logger


def with_logger(conf: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``conf`` with librdkafka's lines routed to ``librdkafka_logger`` (unless it sets one)."""
    conf.setdefault("logger", librdkafka_logger())
    return conf
