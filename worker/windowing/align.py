"""Keep the two input topics' partitions level in time while the worker reads a backlog.

A session's audio and frames arrive on two topics. In real time both are read as they come.
After a restart (or when the worker starts on topics that already hold minutes of input), the
consumer reads whatever its fetches return first: audio records are small and ROI records large,
so one topic's partition can run tens of seconds ahead of the other's. A session then holds that
much of one stream while it waits for the other, and the per-session buffer bound
(``max_buffered_ms``) used to drop the oldest media before the other stream's records for it
were read: signals lost for good, their offsets committed (an audit's restart after 13 s of
downtime lost 7 of 30 signals per session).

So the worker holds back a partition whose next record is more than ``align_ms`` younger, by
Kafka timestamp, than the last record handled from the same partition number of the other
topic, while that other partition still has unread records: the record waits (the partition is
paused) until the other catches up to within ``align_ms / 2`` or has nothing left to read.
Producers write a session's audio and frames as they are made, so record timestamps follow
media time across sessions; in real time both partitions are read within milliseconds of each
other and nothing is held. A held partition stands at its next record's timestamp: measured so,
only one partition of a pair can be ahead of the other, so a pair never waits on itself (measured
from the last record handled, two partitions that both jumped a quiet gap in the input each
looked ahead and held each other for good). Pure: no Kafka here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from worker.windowing.events import BYTES_PER_SAMPLE


def runs_ahead(ts_ms: int, partner_last_ms: int | None, first_ms: int, partner_lagging: bool,
               align_ms: float) -> bool:
    """Whether a record stamped ``ts_ms`` runs more than ``align_ms`` ahead of its partner
    partition, whose last handled record was stamped ``partner_last_ms`` (None: nothing handled
    from it yet; it then counts as standing at ``first_ms``, the first record handled from this
    partition). A partner with nothing left to read is never waited for."""
    if not partner_lagging:
        return False
    partner_ms = first_ms if partner_last_ms is None else partner_last_ms
    return ts_ms - partner_ms > align_ms


def may_release(next_ts_ms: int, partner_last_ms: int | None, first_ms: int, partner_lagging: bool,
                align_ms: float) -> bool:
    """Whether a held partition whose next record is stamped ``next_ts_ms`` may go on: its partner
    caught up to within half the allowance (hysteresis: a pause and resume costs a fetch) or has
    nothing left to read."""
    return not runs_ahead(next_ts_ms, partner_last_ms, first_ms, partner_lagging, align_ms / 2)


# --- within a session: by media time ----------------------------------------------------------
# Kafka time cannot see a session written faster than real time (a replay, a backfill, a bridge
# flushing a recording): its 20 s of media carry timestamps within half a second, while one
# topic's fetch returns ~28 s of small audio records against ~3.6 s of large ROI records, or a
# producer writes one stream whole before the other. The stream ahead then pushed the session's
# buffer bound past the other stream's records still unread, which were dropped as late when they
# came (a probe: a 20-s session written in one burst got 28-44 of its 57 signals).


def record_end_ms(is_audio: bool, record: Mapping[str, Any]) -> float | None:
    """Media time (ms on the session timeline) where a decoded AudioChunk or RoiRef ends, or None
    when its fields cannot say (the join refuses such a record with the reason)."""
    try:
        if is_audio:
            rate, channels = int(record["sample_rate"]), int(record["channels"])
            samples = len(record["data"]) // (BYTES_PER_SAMPLE[record["encoding"]] * channels)
            end_ms = 1000.0 * (int(record["start_sample"]) + samples) / rate
        else:
            end_ms = 1000.0 * (int(record["frame_index"]) + 1) / float(record["fps"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return end_ms if math.isfinite(end_ms) and abs(end_ms) < 1e15 else None


def media_ahead(lead_ms: float, other_silent_ms: float, align_ms: float) -> bool:
    """Whether a record running ``lead_ms`` of media ahead of what its session holds of its other
    stream, silent for ``other_silent_ms`` of wall time, is ahead by more than ``align_ms`` beyond
    what the silence explains. A stream that stopped while the other went on in real time leads
    by about its silence, and waiting would not bring it (the join reports it as stalled); media
    that outruns the wall clock is a backlog or a burst, whose other stream is on its way."""
    return lead_ms - max(0.0, other_silent_ms) > align_ms
