"""The worker's own stages driven by recorded input: decode (schemas + worker.ingest), join and
window (worker.windowing.Joiner), micro-batched scoring (worker.scoring.batcher.ScoringStage) and
the LipSyncSignal record (worker.publish). Nothing here is replay-specific scoring, so a replay
with the live bundle reproduces what the worker published, and one with a new bundle shows what
it would have published.

Time: the join's processing clock is the session's media time (its records' due times, see
``order.due_ms``) plus an idle timeout at the end, so a replay is deterministic and runs as fast
as scoring allows; ``clock_ms`` (wall time) only stamps arrival and emission.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas import AvroCodec, DecodeError
from worker.config import WindowingConfig
from worker.ingest import BadRecord, audio_events, check_key, roi_events
from worker.publish import signal_record
from worker.refs import RoiResolver
from worker.replay.order import AUDIO, ROI, Recorded, due_ms, live_order
from worker.scoring.batcher import ScoringStage
from worker.scoring.interface import Scorer
from worker.windowing.events import Arrival, Job
from worker.windowing.joiner import BadEvent, Joiner
from worker.windowing.offsets import OffsetTracker

_DRAIN_TIMEOUT_S = 600.0


@dataclass
class SessionReplay:
    """What replaying one session gave: its signals (frame order, BLOCKs before WINDOWs at equal
    starts) and the records the worker would have dead-lettered, with the reason."""

    session_id: str
    signals: list[dict[str, Any]] = field(default_factory=list)
    bad: list[tuple[Recorded, str]] = field(default_factory=list)
    records: int = 0


class Replayer:
    """Replays sessions one at a time through a Joiner and a ScoringStage of its own."""

    def __init__(self, scorer: Scorer, windowing: WindowingConfig, resolver: RoiResolver, sample_rate: int,
                 clock_ms: Callable[[], int], max_batch_size: int = 8,
                 codecs: Mapping[str, AvroCodec] | None = None,
                 thread_init: Callable[[], Any] | None = None) -> None:
        """``codecs``: stream (AUDIO, ROI) -> the input topics' codec (default: plain Avro bodies;
        the CLI passes the cluster's wire format, as the worker uses). ``thread_init`` runs on the
        scoring thread first (torch's thread count is per thread: the worker sets it there)."""
        self.scorer = scorer
        self.windowing = windowing
        self.resolver = resolver
        self.sample_rate = sample_rate
        self.clock_ms = clock_ms
        self.joiner = Joiner(windowing, scorer.search_margin_ms, OffsetTracker(), sample_rate=sample_rate,
                             context_frames=getattr(scorer, "context_frames", 0))
        # max_wait 0: nothing arrives later that a fuller batch could wait for
        self.stage: ScoringStage[Job] = ScoringStage(scorer, max_batch_size, 0.0, thread_init=thread_init)
        self.codecs = dict(codecs or {AUDIO: AvroCodec("AudioChunk"), ROI: AvroCodec("RoiRef")})

    def replay(self, session_id: str, audio: Sequence[Recorded], roi: Sequence[Recorded]) -> SessionReplay:
        """Replay one session's records (each input in its partition's offset order)."""
        out = SessionReplay(session_id, records=len(audio) + len(roi))
        decoded = {name: self._decode(recs, out) for name, recs in ((AUDIO, audio), (ROI, roi))}
        jobs: list[Job] = []
        media_now = 0.0
        for due, rec, fields in live_order(decoded[AUDIO], decoded[ROI]):
            if math.isfinite(due):
                media_now = max(media_now, due)
            jobs += self._feed(rec, fields, int(media_now), out)
        # a session without end markers (cut short, or still live when recorded) ends as the worker
        # would end it: idle, flushed
        jobs += self.joiner.tick(int(media_now) + self.windowing.idle_timeout_ms + 1)
        self.stage.submit(jobs)
        if not self.stage.drain(_DRAIN_TIMEOUT_S):
            raise RuntimeError(f"scoring session {session_id} did not finish within {_DRAIN_TIMEOUT_S:.0f} s")
        results = self.stage.results()
        self.stage.close_sessions([session_id])
        for scored in results:
            self.joiner.on_published(scored.job)
            out.signals.append(signal_record(scored.job, scored.score, self.clock_ms()))
        out.signals.sort(key=lambda s: (s["frame_start"], s["kind"] != "BLOCK"))
        self.joiner.drain_closed()
        return out

    def close(self) -> None:
        self.stage.stop()

    def _decode(self, recs: Sequence[Recorded], out: SessionReplay
                ) -> list[tuple[float, tuple[float, Recorded, dict[str, Any]]]]:
        """Each record -> (due_ms, (due_ms, record, its Avro fields)); one that does not decode is
        kept in ``out.bad`` with the reason the worker's dead letter would give. Events (and their
        pixels and samples) are made one record at a time as they are fed, not all up front."""
        decoded = []
        for rec in recs:
            try:
                if rec.value is None:
                    raise BadRecord("decode: empty value (tombstone)")
                fields = self.codecs[AUDIO if rec.stream == AUDIO else ROI].decode(rec.value)
                check_key(rec.key, fields["session_id"])
            except DecodeError as exc:
                out.bad.append((rec, f"decode: {exc.reason}"))
                continue
            except BadRecord as exc:
                out.bad.append((rec, exc.reason))
                continue
            due = due_ms(rec.stream, fields)
            decoded.append((due, (due, rec, fields)))
        return decoded

    def _feed(self, rec: Recorded, fields: dict[str, Any], now_ms: int, out: SessionReplay) -> list[Job]:
        """One record through the worker's ingest and join; a record the worker dead-letters is kept
        in ``out.bad`` with the same reason."""
        arrival = Arrival(self.clock_ms(), None)
        try:
            if rec.stream == AUDIO:
                events = audio_events(fields, rec.source, arrival, self.sample_rate)
            else:
                events = roi_events(fields, rec.source, arrival, self.resolver.try_resolve)
            return self.joiner.on_events(events, now_ms)
        except BadRecord as exc:
            out.bad.append((rec, exc.reason))
        except BadEvent as exc:  # contradicts its session
            out.bad.append((rec, f"invalid: {exc}"))
        except Exception as exc:  # noqa: BLE001 - as the worker dead-letters a failure no check foresaw
            out.bad.append((rec, f"internal: {type(exc).__name__}: {exc}"))
        return []
