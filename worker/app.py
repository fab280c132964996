"""The streaming worker: consume -> decode -> join/window -> micro-batch score -> publish -> commit.

One poll-loop thread owns the consumer, the producer, the join state and the offset tracker; the
scorer runs on the scoring stage's thread. The loop never blocks on the model, so it calls
``consume`` far more often than ``max.poll.interval.ms`` requires; when scoring falls behind
(backlog above ``scoring.max_queued_jobs``) it pauses its partitions and resumes them once the
backlog is back under ``scoring.resume_below``.

Delivery semantics: at-least-once. Input offsets are committed only up to the first event that a
not-yet-published signal depends on (see ``Worker.commit`` for the order of steps), so a crash
re-delivers, and the deterministic ``signal_id`` lets consumers drop the duplicates.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from schemas import AvroCodec, DecodeError, EncodeError
from schemas.codec import RegistryUnavailable
from worker.config import WorkerConfig
from worker.ingest import BadRecord, Event, audio_events, check_key, roi_events
from worker.kafka.consumer import TP, InputConsumer
from worker.kafka.producer import OutputProducer
from worker.observability.health import HealthServer
from worker.observability.logs import get_logger
from worker.observability.metrics import WorkerMetrics
from worker.publish import dead_letter_record, signal_record
from worker.refs import RoiResolver
from worker.scoring.batcher import Scored, ScoringPool, ScoringStage
from worker.scoring.interface import Scorer
from worker.scoring.routed import narrowband_of
from worker.windowing.align import may_release, media_ahead, record_end_ms, runs_ahead
from worker.windowing.events import Arrival, Job, Source, Stream
from worker.windowing.joiner import BadEvent, Joiner
from worker.windowing.offsets import OffsetTracker

log = get_logger("worker")

_TICK_MS = 250  # idle-session checks
_LAG_EVERY_MS = 5000
# a partition held for a ROI store's outage is tried again this often (the resolver's side read finds
# the store up within about a second; each try while it is down costs nothing but the breaker check)
STORE_RETRY_MS = 250
HELD_LOG_EVERY_MS = 10_000  # a partition's "held: ahead of its partner" line, at most this often
# the longest a partition waits for a session's other stream (worker.windowing.align.media_ahead)
# while its partner reads on: a partner that reads on for this long without bringing it never will
MEDIA_HOLD_MAX_MS = 30_000
_MAX_DELIVERY_RETRIES = 5
_DRAIN_TIMEOUT_S = 20.0
_SLOW_LOOP_S = 0.25
_FLUSH_TIMEOUT_S = 10.0
# librdkafka refreshes a partition's high watermark from its fetches only: while the worker keeps a
# partition paused its lag reads as it was (a review read 0-1 after 12 s of new records), and after
# a resume until the first fetch answers (0.5-0.8 s measured on an idle local broker: the resumed
# partition waits for the fetcher's next round). So held or paused partitions count as behind, and
# resumed ones too until a record of theirs is read or this long has passed.
STALE_LAG_MS = 3000
# the exit code of a shutdown that did not finish its work (the CLI's watchdog past
# shutdown_timeout_ms exits with it too): the orchestrator sees it was not clean
EXIT_UNFINISHED = 4
# A partition of an open session that nothing was read from for this long, its cached lag 0, is
# asked of the broker whether records wait (at most this often each): the cached watermark moves
# only when a fetch answers, so after a freeze of the process or a broker outage it read 0 while
# seconds of records waited, a silent stream was taken as stalled, jobs went out without its
# input (LOW_QUALITY, a 0.95 window as 0.027) and its records were then dropped as late (a probe).
SILENT_ASK_MS = 1000
SILENT_ASK_TIMEOUT_S = 0.2
# a poll-loop turn this much longer than its consume wait (the process was stopped or starved):
# every lag is stale, so the lagging set is renewed before the turn's records are handled
LOOP_GAP_S = 1.0
# one batch (at most max_batch_size jobs of tens of ms each) scoring this long means a hung scorer
SCORING_STUCK_S = 120.0


def lagging_partitions(lag: Mapping[TP, int | None], stopped: set[TP], everything_paused: bool,
                       resumed_at_ms: Mapping[TP, int], now_ms: int) -> set[TP]:
    """The assigned partitions (keys of ``lag``, ``InputConsumer.lag()``) that have, or may have,
    unread records: behind by their lag, or their lag not known yet, or stopped by the worker itself
    (``stopped``: held for the other topic, the schema registry or unread ROI references; every one
    while ``everything_paused``: backpressure), or resumed by it less than STALE_LAG_MS ago and
    no record of theirs read since (``resumed_at_ms``): for these the lag is stale, not zero."""
    out = set()
    for tp, behind in lag.items():
        if (behind is None or behind > 0 or everything_paused or tp in stopped
                or now_ms - resumed_at_ms.get(tp, now_ms - STALE_LAG_MS) < STALE_LAG_MS):
            out.add(tp)
    return out


class KafkaUnreachable(RuntimeError):
    """No broker answered within kafka.startup_timeout_ms of the worker's start."""


def _kafka_ts(msg: Any) -> int | None:
    ts_type, ts = msg.timestamp()
    return ts if ts_type != 0 and ts and ts > 0 else None  # type 0: TIMESTAMP_NOT_AVAILABLE


def wall_ms() -> int:
    return int(time.time() * 1000)


def set_torch_threads(n: int) -> None:
    """Intra-op CPU threads for the scorer (a no-op when torch is not in use)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def scorer_sample_rate(scorer: Scorer) -> int:
    """The audio rate the scorer wants (its bundle's), 16 kHz when it does not say."""
    for path in (("sample_rate",), ("manifest", "audio", "sample_rate")):
        obj: Any = scorer
        for name in path:
            obj = getattr(obj, name, None)
        if isinstance(obj, int) and obj > 0:
            return obj
    return 16_000


class _WarmUpJob:
    session_id = "__warmup__"
    keep_from_frame = 0

    def __init__(self, request: Any) -> None:
        self.request = request


class Worker:
    """Build with a config and a scorer; ``run(stop)`` until ``stop`` is set, then shut down."""

    def __init__(self, cfg: WorkerConfig, scorer: Scorer, *, metrics: WorkerMetrics | None = None,
                 resolver: RoiResolver | None = None, clock_ms: Callable[[], int] = wall_ms) -> None:
        self.cfg = cfg
        self.scorer = scorer
        self.metrics = metrics or WorkerMetrics()
        self.clock_ms = clock_ms
        self.sample_rate = scorer_sample_rate(scorer)
        self.tracker = OffsetTracker()
        self.joiner = Joiner(cfg.windowing, scorer.search_margin_ms, self.tracker, sample_rate=self.sample_rate,
                             context_frames=getattr(scorer, "context_frames", 0))
        self.resolver = resolver or RoiResolver.from_config(
            cfg.refs, on_failure=lambda e: self.metrics.ref_errors.labels(e.reason).inc(), on_outage=self._store_outage)
        topics = cfg.kafka.topics
        self.audio_topic, self.roi_topic = topics.audio.name, topics.roi.name
        self.codecs = {name: self._codec(name, topic) for name, topic in (
            ("AudioChunk", self.audio_topic), ("RoiRef", self.roi_topic),
            ("LipSyncSignal", topics.signals.name), ("DeadLetter", topics.dlq.name))}
        threads = cfg.scoring.cpu_threads()
        device = str(getattr(scorer, "device", "cpu"))
        lanes = cfg.scoring.lanes_for(device)
        if lanes > 1:
            threads = max(1, threads // lanes)
        self.stage: ScoringPool[Job] = ScoringPool(lanes, lambda _i: ScoringStage(
            scorer, cfg.scoring.batch_size_for(device), cfg.scoring.max_wait_ms,
            on_batch=lambda n, ms, cpu_s: (self.metrics.batch_size.observe(n),
                                           self.metrics.scoring_latency.observe(ms / 1000.0),
                                           self.metrics.scoring_cpu.inc(cpu_s)),
            thread_init=lambda: set_torch_threads(threads)))
        producer_conf = cfg.kafka.client_config("producer")
        self.producer = OutputProducer(producer_conf)
        # a dead letter carries its bad record: it must fit in one record too (publish.dead_letter_record)
        self._dlq_max_bytes = int(producer_conf.get("message.max.bytes", 1_000_000))
        self.consumer = InputConsumer(
            cfg.kafka.client_config("consumer"), cfg.kafka.group_id, (self.audio_topic, self.roi_topic),
            max_poll_interval_ms=cfg.kafka.max_poll_interval_ms,
            on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        self._committed: dict[TP, int] = {}
        # how far (Kafka time) one input topic's partition may run ahead of its partner's while
        # the partner lags: half the per-session buffer, so no session overflows while waiting
        self._align_ms = cfg.windowing.max_buffered_ms // 2
        self._deferred: dict[TP, list[Any]] = {}  # records of held partitions, in order
        # held partitions read again at a time, whatever the other topic does: those whose record
        # waits for the schema registry (its codec's next lookup), those whose ROI references were
        # not all read within a turn (the next turn)
        self._retry_at_ms: dict[TP, int] = {}
        # partitions held because a session's record ran ahead of its other stream by media time
        # (_session_ahead): (session id, stream, the record's media end ms, when held)
        self._media_held: dict[TP, tuple[str, Stream, float, int]] = {}
        self._batch_left: Counter[TP] = Counter()  # (see _handle_batch)
        self._ahead_logged_ms: dict[TP, int] = {}  # when each partition's "ahead: held" was last logged
        self._store_retry: set[TP] = set()  # held partitions tried again for a ROI store's outage
        # partitions whose held record (this offset) waits for the registry, until it is decoded
        # (/readyz: not cleared meanwhile, as a timer would be while the record is tried again)
        self._registry_waiting: dict[TP, int] = {}
        # partitions the worker resumed (from a hold or a pause), until a record of theirs is read:
        # their lag is stale meanwhile (lagging_partitions)
        self._resumed_at_ms: dict[TP, int] = {}
        # when a record of each partition was last read, and when a silent one was last asked of
        # the broker (SILENT_ASK_MS)
        self._last_read_ms: dict[TP, int] = {}
        self._asked_at_ms: dict[TP, int] = {}
        # ROI references already read of records kept back for the next turn (behind one not read
        # yet), by (topic, partition, offset): not read twice
        self._refs_read: dict[tuple[str, int, int], tuple[Any, Any]] = {}
        self._first_ts: dict[TP, int] = {}  # Kafka timestamps of the first / last record handled
        self._last_ts: dict[TP, int] = {}
        self._lag_now: dict[TP, int | None] | None = None  # consumer.lag() of this loop turn
        self._joiner_counts: dict[str, int] = {}
        self._turn: dict[str, float] = {}
        self._paused_total_ms = 0
        self._paused_since_ms: int | None = None
        self.freeze_gc = False  # the CLI's worker process sets it (process-wide)
        self._last_loop_s = time.monotonic()
        self._assigned_once = False
        self._warm = False
        self._stopping = False
        # a shutdown that left signals undelivered or scoring unfinished (nothing is lost: their
        # input is not committed, the next owner reads it again) exits with this code, not 0
        self.exit_code = 0
        self._http: HealthServer | None = None
        self.published = 0
        self.dead_lettered = 0
        self.metrics.scorer_info.labels(scorer.name).set(1)
        self.metrics.search_margin_ms.set(scorer.search_margin_ms)

    def _codec(self, name: str, topic: str) -> AvroCodec:
        return self.cfg.kafka.codec(name, topic)

    # --- lifecycle --------------------------------------------------------------------------
    def start_http(self) -> int | None:
        """Serve /metrics, /healthz, /readyz on the configured port (0 = off); returns the port."""
        if self.cfg.http.port == 0:
            return None
        self._http = HealthServer(self.cfg.http.host, self.cfg.http.port, self.metrics.registry,
                                  healthy=self.healthy, ready=self.ready).start()
        return self._http.port

    def healthy(self) -> bool:
        """Liveness: the poll loop went round in the last 30 s, and no batch has been scoring for
        SCORING_STUCK_S (a hung scorer left the loop turning with every partition paused under
        backpressure, and /healthz said 200: a review)."""
        now = time.monotonic()
        return now - self._last_loop_s < 30.0 and self.stage.busy_s(now) < SCORING_STUCK_S

    def ready(self) -> bool:
        """Also not ready while input waits for the schema registry (alive: a restart would not
        bring the registry back, so /healthz stays 200; but not doing its work)."""
        return (self._assigned_once and self._warm and not self._stopping and not self._registry_waiting
                and self.healthy())

    def run(self, stop: threading.Event) -> int:
        """The poll loop; returns 0 after a clean shutdown, EXIT_UNFINISHED after one that left
        signals undelivered or batches unscored (a broker that stopped answering)."""
        log.info("worker starting", scorer=self.scorer.name, config=self.cfg.redacted())
        k = self.cfg.kafka
        last_tick = last_commit = last_lag = self.clock_ms()
        last_consumed = time.monotonic()
        try:
            self._check_input_partitions(stop)
            self._warm_up()
            cpu_mark = time.thread_time()
            while not stop.is_set():
                loop_start = time.monotonic()
                if loop_start - self._last_loop_s > _SLOW_LOOP_S:
                    # one turn of the loop held every session's signals back: say where it went
                    log.warning("slow poll-loop turn", seconds=round(loop_start - self._last_loop_s, 3),
                                **{k_: round(v_, 3) for k_, v_ in self._turn.items()})
                self._last_loop_s = loop_start
                cpu_now = time.thread_time()
                self.metrics.poll_loop_cpu.inc(cpu_now - cpu_mark)
                cpu_mark = cpu_now
                self._backpressure()
                # short polls while results wait to be published: latency matters
                timeout_s = 0.002 if self.stage.backlog() else k.poll_timeout_ms / 1000.0
                msgs = self.consumer.consume(k.consume_batch, timeout_s)
                t_consumed = time.monotonic()
                now = self.clock_ms()
                self._lag_now = None
                self._consumed(msgs, t_consumed - last_consumed - timeout_s, now)
                last_consumed = t_consumed
                jobs = self._handle_batch(msgs, now)
                # after the batch: its records are consumed (no longer lag) and now handled too
                self._lag_now = None
                jobs += self._handle_batch(self._release_held(now), now)
                if msgs:
                    self._count_inputs(msgs)
                t_handled = time.monotonic()
                if now - last_tick >= _TICK_MS:
                    last_tick = now
                    self.joiner.set_lagging(self._lagging(now))
                    jobs += self.joiner.tick(self._activity_ms(now))
                    self._count_joiner()
                self._submit(jobs)
                self._publish_results()
                self.producer.poll(0)
                t_published = time.monotonic()
                if now - last_commit >= k.commit_interval_ms:
                    last_commit = now
                    self.commit()
                if now - last_lag >= _LAG_EVERY_MS:
                    last_lag = now
                    self._update_gauges(lag=True)
                self._turn = {"consume_s": t_consumed - loop_start, "handle_s": t_handled - t_consumed,
                              "publish_s": t_published - t_handled, "commit_s": time.monotonic() - t_published,
                              "records": len(msgs)}
        finally:
            self._shutdown()
        return self.exit_code

    def _warm_up(self) -> None:
        """Score one BLOCK- and one WINDOW-sized dummy job on the scoring thread before taking
        traffic: the first model calls (allocations, lazy init) are many times slower than the
        rest and would otherwise land on the first real signals."""
        import numpy as np

        from worker.scoring.types import AudioSpan, FrameSpan, Kind, ScoreRequest

        rng = np.random.default_rng(0)
        fps = 30.0
        w = self.cfg.windowing
        jobs = []
        for kind, n in ((Kind.BLOCK, w.block_frames), (Kind.WINDOW, round(w.window_ms * fps / 1000))):
            frames = rng.integers(0, 255, (n, 96, 96), dtype=np.uint8)
            n_samples = int((n / fps + 2 * self.scorer.search_margin_ms / 1000.0) * self.sample_rate)
            audio = (0.1 * rng.standard_normal(n_samples)).astype(np.float32)
            variants = [audio]
            if narrowband_of(self.scorer) is not None:
                # the same noise with nothing above 3.4 kHz: the routed scorer's narrowband model
                # gets its first (slow) calls here too, not on a session's first phone job
                spec = np.fft.rfft(audio)
                spec[np.fft.rfftfreq(n_samples, 1.0 / self.sample_rate) > 3400.0] = 0.0
                variants.append(np.fft.irfft(spec, n_samples).astype(np.float32))
            for a in variants:
                req = ScoreRequest(kind, FrameSpan(frames, fps, 0), AudioSpan(a, self.sample_rate, 0), "__warmup__")
                jobs.append(_WarmUpJob(req))
        t0 = time.monotonic()
        self.stage.submit(jobs)
        done = 0
        while done < len(jobs) and time.monotonic() - t0 < 120:
            done += len(self.stage.results())
            time.sleep(0.01)
        self.stage.close_sessions(["__warmup__"])
        self._warm = True
        if self.freeze_gc:
            import gc

            # the model, torch and the libraries are long-lived: keep full collections (which stop
            # the scoring thread too) from walking them again and again
            gc.collect()
            gc.freeze()
        log.info("scorer warmed up", seconds=round(time.monotonic() - t0, 2))

    def _check_input_partitions(self, stop: threading.Event) -> None:
        """Refuse to start on input topics with different partition counts (the join would see
        half of some sessions); the assignment check repeats this on every rebalance. No broker
        answering within ``kafka.startup_timeout_ms`` is KafkaUnreachable (the CLI says so in one
        line and exits non-zero), rather than a worker that waits forever and logs nothing useful."""
        from worker.kafka.admin import TopicError, topic_partitions
        from worker.kafka.consumer import AssignmentError

        k = self.cfg.kafka
        extra = {key: v for key, v in k.client_config("admin").items() if key != "bootstrap.servers"}
        started = time.monotonic()
        deadline = started + k.startup_timeout_ms / 1000.0
        while True:
            try:
                # asked in turns of at most 3 s, so that a SIGTERM meanwhile is acted on within
                # them (a review: 10-s turns held a stopping pod until it was killed)
                counts = topic_partitions(k.bootstrap_servers, [self.audio_topic, self.roi_topic],
                                          timeout_s=max(1.0, min(3.0, deadline - time.monotonic())),
                                          client_config=extra)
                break
            except TopicError as exc:
                if stop.is_set():  # not the broker's fault: say what happened (it read "within 60 s")
                    raise KafkaUnreachable(f"stopped while waiting for a Kafka broker at {k.bootstrap_servers} "
                                           f"(none answered in {time.monotonic() - started:.0f} s)") from None
                if time.monotonic() >= deadline:
                    raise KafkaUnreachable(f"no Kafka broker at {k.bootstrap_servers} answered within "
                                           f"{k.startup_timeout_ms / 1000:g} s ({exc})") from None
                log.warning("Kafka not reachable yet: retrying", bootstrap=k.bootstrap_servers, error=str(exc))
                stop.wait(1.0)
        if len(counts) == 2 and counts[self.audio_topic] != counts[self.roi_topic]:
            msg = (f"input topics are not co-partitioned: {self.audio_topic} has {counts[self.audio_topic]} "
                   f"partitions, {self.roi_topic} has {counts[self.roi_topic]}")
            log.error("refusing to start", reason=msg)
            raise AssignmentError(msg)

    def _shutdown(self) -> None:
        """SIGTERM/SIGINT: 1. stop polling (the loop has exited), 2. finish the queued and
        in-flight batches, 3. publish their signals, 4. flush and commit, 5. close."""
        self._stopping = True
        log.info("worker stopping", backlog=self.stage.backlog())
        try:
            self._quiesce()
        finally:
            self.consumer.close()
            self.stage.stop()
            self.resolver.close()
            left = self.producer.close(_FLUSH_TIMEOUT_S)
            if left:
                log.error("records not delivered at shutdown", pending=left)
                self.exit_code = EXIT_UNFINISHED
            if self._http is not None:
                self._http.stop()
            log.info("worker stopped", published=self.published, dead_lettered=self.dead_lettered)

    def _quiesce(self) -> None:
        """Everything scored so far published and committed (rebalance and shutdown)."""
        if not self.stage.drain(_DRAIN_TIMEOUT_S):
            log.error("scoring did not drain in time", backlog=self.stage.backlog())
            if self._stopping:
                self.exit_code = EXIT_UNFINISHED
        self._publish_results()
        self.commit(synchronous=True)

    # --- input ------------------------------------------------------------------------------
    def _handle_batch(self, msgs: list[Any], now: int) -> list[Job]:
        """Records in order: decode each (a registry outage holds its partition back), read the
        batch's ROI references together (worker.refs: concurrently, within a time budget), then
        feed them to the join in order. A record whose reference was not read yet (a store that
        answers, but not the whole batch within the turn's budget) is kept back unopened with the
        rest of its partition, and read again next turn: nothing given up, order kept."""
        decoded: list[tuple[Any, dict | Exception]] = []
        last_ts_before = dict(self._last_ts)
        for msg in msgs:
            if self._hold_if_ahead(msg, now):
                continue
            outcome = self._decode(msg, now)
            if outcome is not None:
                decoded.append((msg, outcome))
        refs = self._read_refs(decoded, now)
        jobs: list[Job] = []
        cut: dict[TP, list[Any]] = {}
        handled_ts: dict[TP, int] = {}
        store_down: set[TP] = set()  # partitions cut at a reference held for its store's outage
        # records of each partition in this batch not handled yet (kept back included): unread for
        # the media-time wait (a consumer's batch can hold a whole burst of both topics, whose lag
        # then reads 0)
        self._batch_left = Counter((msg.topic(), msg.partition()) for msg, _outcome in decoded)
        for i, (msg, outcome) in enumerate(decoded):
            tp = (msg.topic(), msg.partition())
            if tp in cut or (i in refs and refs[i] is None):
                if tp not in cut and self.resolver.held_for_outage(outcome["roi"]):  # type: ignore[index]
                    store_down.add(tp)
                cut.setdefault(tp, []).append(msg)
                if refs.get(i) is not None:
                    self._refs_read[(tp[0], tp[1], msg.offset())] = refs[i]
                continue
            if isinstance(outcome, dict) and self._session_ahead(tp, outcome, now):
                cut[tp] = [msg]  # the rest of tp's records join it above
                if refs.get(i) is not None:
                    self._refs_read[(tp[0], tp[1], msg.offset())] = refs[i]
                continue
            ts = _kafka_ts(msg)
            if ts is not None:
                handled_ts[tp] = max(ts, handled_ts.get(tp, ts))
            self._batch_left[tp] -= 1
            jobs += self._handle(msg, outcome, refs.get(i), now)
        for tp, kept in cut.items():
            self._keep_for_next_turn(tp, kept, last_ts_before.get(tp), handled_ts.get(tp), now,
                                     store_down=tp in store_down)
        return jobs

    def _keep_for_next_turn(self, tp: TP, kept: list[Any], last_ts_before: int | None, handled_ts: int | None,
                            now: int, store_down: bool = False) -> None:
        """Hold ``tp`` with ``kept`` (its records from the first one whose ROI reference is not
        read yet) before any it already keeps back; released at the next turn (the reads go on
        meanwhile: RoiResolver carries them over), or, when that reference waits for its store to
        answer again (``store_down``: refs.outage_hold_s), STORE_RETRY_MS later. Its alignment
        position goes back to the last record it really handled."""
        self._deferred[tp] = kept + self._deferred.get(tp, [])
        if store_down:
            self._store_retry.add(tp)
        if tp not in self._media_held:  # (that one waits for its partner: _release_held)
            wait_ms = STORE_RETRY_MS if store_down else 1
            self._retry_at_ms[tp] = max(self._retry_at_ms.get(tp, now + wait_ms), now + wait_ms)  # not this turn
        last = max((t for t in (last_ts_before, handled_ts) if t is not None), default=None)
        if last is None:
            self._last_ts.pop(tp, None)
        else:
            self._last_ts[tp] = last
        self._hold_partition(tp)
        if tp in self._media_held:
            sid, stream, end_ms, _since = self._media_held[tp]
            log.info("a session's media runs ahead of its other stream, which waits unread: partition held",
                     topic=tp[0], partition=tp[1], session_id=sid, stream=stream.value, media_end_ms=round(end_ms),
                     align_ms=self._align_ms)
        elif not store_down:  # (an outage is logged once, _store_outage)
            log.info("ROI references not all read within the turn: the rest kept for the next",
                     topic=tp[0], partition=tp[1], offset=kept[0].offset(), records=len(kept))

    def _store_outage(self, store: str, event: str) -> None:
        """A ROI store's outage (RoiResolver's on_outage: each event once per outage)."""
        if event == "held":
            self.metrics.ref_store_outages.labels(store).inc()
            log.error("ROI store down: the partitions of its references held, read again when it answers",
                      store=store, hold_at_most_s=self.cfg.refs.outage_hold_s)
        elif event == "given_up":
            log.error("ROI store still down: references held for refs.outage_hold_s are given up, their "
                      "frames counted missing (ref_errors_total{reason=\"store_down\"})",
                      store=store, hold_at_most_s=self.cfg.refs.outage_hold_s)
        else:
            log.info("ROI store answers again: the references held for it are read", store=store)

    def _decode(self, msg: Any, now: int) -> dict | Exception | None:
        """The record, or the error to dead-letter it with; None when it waits for the registry."""
        topic = msg.topic()
        name = "AudioChunk" if topic == self.audio_topic else "RoiRef" if topic == self.roi_topic else None
        if name is None:
            return BadRecord(f"invalid: unexpected topic {topic}")
        try:
            out: dict | Exception = self.codecs[name].decode(msg.value())
        except RegistryUnavailable as exc:
            self._hold_for_registry(msg, exc)
            return None
        except Exception as exc:  # noqa: BLE001 - DecodeError, or one no check foresaw: dead-lettered in order
            out = exc
        if self._registry_waiting:
            tp = (topic, msg.partition())
            if self._registry_waiting.get(tp, math.inf) <= msg.offset():
                del self._registry_waiting[tp]  # the record it waited with is read
        return out

    def _read_refs(self, decoded: list[tuple[Any, dict | Exception]], now: int) -> dict[int, tuple[Any, Any] | None]:
        """(pixels, error) per index of ``decoded`` for the ROI references read from a store, None
        for one not read yet (to be asked again); the rest (inline, shared memory) are read in
        place as before."""
        wanted = {i: out["roi"] for i, (msg, out) in enumerate(decoded)
                  if isinstance(out, dict) and msg.topic() == self.roi_topic
                  and self.resolver.is_store_ref(out.get("roi"))}
        if not wanted:
            return {}
        got: dict[int, tuple[Any, Any] | None] = {}
        if self._refs_read:
            for i in list(wanted):
                msg = decoded[i][0]
                read = self._refs_read.pop((msg.topic(), msg.partition(), msg.offset()), None)
                if read is not None:
                    got[i] = read
                    del wanted[i]
        # each record's age decides how long an outage of its store may hold it (refs.outage_hold_s)
        ages_s = [None if (ts := _kafka_ts(decoded[i][0])) is None else (now - ts) / 1000.0 for i in wanted]
        got.update(zip(wanted, self.resolver.resolve_batch(list(wanted.values()), ages_s), strict=True))
        return got

    def _hold_for_registry(self, msg: Any, exc: RegistryUnavailable) -> None:
        """Keep ``msg`` and what follows it on its partition back, unopened (so no commit passes
        it), and read it again after the codec's back-off; the consumer keeps polling meanwhile."""
        tp = (msg.topic(), msg.partition())
        self._deferred[tp] = [msg]  # not held before: _hold_if_ahead had kept it otherwise
        self._registry_waiting.setdefault(tp, msg.offset())
        # the codec's next lookup is retry_in_s from now, not from the turn's start (the lookup
        # that failed may have taken seconds of the turn): a retry before it only fails fast and
        # holds again. Not sooner than 50 ms either (a codec that says "now" while backing off).
        # +1 ms: clock_ms is floored to the ms while the codec's back-off runs on its own
        # fractional clock, so the retry would be due up to 1 ms before its next lookup
        self._retry_at_ms[tp] = self.clock_ms() + 1 + max(50, math.ceil(exc.retry_in_s * 1000))
        self._hold_partition(tp)
        self.metrics.registry_unavailable.inc()
        log.error("schema registry unavailable: input partition held, its record will be read again",
                  topic=tp[0], partition=tp[1], offset=msg.offset(), retry_in_s=round(exc.retry_in_s, 2),
                  error=exc.reason)

    def _handle(self, msg: Any, outcome: dict | Exception, ref: tuple[Any, Any] | None, now: int) -> list[Job]:
        """One decoded record (or its decode error) into the join; bad ones to the DLQ."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        source = Source(topic, partition, offset)
        self.tracker.open(source)
        kafka_ts = _kafka_ts(msg)
        try:
            if isinstance(outcome, Exception):
                raise outcome
            record = outcome
            check_key(msg.key(), record["session_id"])
            arrival = Arrival(now, record.get("produced_at_ms") or kafka_ts)
            if topic == self.audio_topic:
                events = audio_events(record, source, arrival, self.sample_rate)
            else:
                resolve = self.resolver.try_resolve if ref is None else (lambda _roi: ref)
                events = roi_events(record, source, arrival, resolve)
            return self._feed(events, self._activity_ms(now))
        except DecodeError as exc:
            self._dead_letter(msg, source, f"decode: {exc.reason}", kafka_ts)
        except (BadRecord, BadEvent) as exc:
            reason = exc.reason if isinstance(exc, BadRecord) else f"invalid: {exc}"
            self._dead_letter(msg, source, reason, kafka_ts)
        except Exception as exc:
            # one record must not stop the worker for good: a record that fails in a way the
            # checks above did not foresee would fail again at every restart and hold its
            # partition (a review's odd sample rate did, before the rate check). It goes to the
            # dead-letter topic with the error; the log has the traceback.
            log.exception("record failed unexpectedly; dead-lettered", topic=topic, partition=partition,
                          offset=offset, error=f"{type(exc).__name__}: {exc}")
            self._dead_letter(msg, source, f"internal: {type(exc).__name__}: {exc}", kafka_ts)
        return []

    # --- keeping the two input topics level in time (worker.windowing.align) ------------------
    def _partner(self, tp: TP) -> TP:
        topic, partition = tp
        return (self.roi_topic if topic == self.audio_topic else self.audio_topic, partition)

    def _partner_lagging(self, tp: TP, now: int) -> bool:
        """Whether ``tp``'s partner partition has, or may have, unread records (lagging_partitions:
        one held or paused by the worker does, whatever its stale lag says; one lag query per
        loop turn, and only when a record looks ahead: the timestamp test comes first)."""
        if self._lag_now is None:
            self._lag_now = self.consumer.lag()
        partner = self._partner(tp)
        if partner not in self._lag_now:
            return False  # not assigned here: nothing to wait for
        return bool(lagging_partitions({partner: self._lag_now[partner]}, self._stopped(), self.consumer.paused,
                                       self._resumed_at_ms, now))

    def _hold_partition(self, tp: TP, held: bool = True) -> None:
        """Pause (or, ``held`` False, resume) ``tp`` for one of the worker's own reasons, and count it."""
        self.consumer.hold(self.consumer.held | {tp} if held else self.consumer.held - {tp})
        self.metrics.held_partitions.set(len(self.consumer.held))

    def _stopped(self) -> set[TP]:
        """Partitions the worker holds back itself (their records kept, or the partition paused)."""
        return self.consumer.held | set(self._deferred)

    def _resumed(self, tps: set[TP], now: int) -> None:
        """``tps`` fetch again: their lag stays stale until a record of theirs comes (_fetched)."""
        for tp in tps:
            self._resumed_at_ms[tp] = now

    def _consumed(self, msgs: list[Any], late_s: float, now: int) -> None:
        """A consume came back with ``msgs``, ``late_s`` seconds later than its wait allows."""
        self._fetched(msgs, now)
        if late_s > LOOP_GAP_S:
            # stopped or starved for seconds: the records that came meanwhile may not be fetched
            # yet, and this turn's would be handled against the lagging set of before
            self.joiner.set_lagging(self._lagging(now))

    def _fetched(self, msgs: list[Any], now: int) -> None:
        """Records read from Kafka (not the ones kept back): their partitions' lag is fresh again
        (a fetch answered, with the high watermark), and they are not silent."""
        for tp in {(msg.topic(), msg.partition()) for msg in msgs}:
            self._last_read_ms[tp] = now
            self._resumed_at_ms.pop(tp, None)

    def _ask_silent(self, lag: Mapping[TP, int | None], now: int) -> None:
        """Ask the broker about the partitions of open sessions that read 0 lag from the cache but
        that nothing was read from for SILENT_ASK_MS (each at most that often): one found behind,
        or not answered for, counts as stale (_resumed) until a record of it is read."""
        open_partitions = {st.partition for st in self.joiner.sessions.values()}
        if not open_partitions or self.consumer.paused:
            return  # (paused, held: counted as lagging already, nothing to ask)
        stopped = self._stopped()
        due = [tp for tp, behind in lag.items()
               if behind == 0 and tp[1] in open_partitions and tp not in stopped
               and now - self._last_read_ms.get(tp, now - SILENT_ASK_MS) >= SILENT_ASK_MS
               and now - self._asked_at_ms.get(tp, now - SILENT_ASK_MS) >= SILENT_ASK_MS]
        if not due:
            return
        for tp in due:
            self._asked_at_ms[tp] = now
        behind = {tp for tp, unread in self.consumer.unread(due, SILENT_ASK_TIMEOUT_S).items() if unread is not False}
        news = behind - set(self._resumed_at_ms)  # (said once, not every second of an outage)
        self._resumed(behind, now)
        if news:
            log.info("silent input partitions have unread records, or the broker did not answer: "
                     "not taken as stalled", partitions=sorted(f"{t}[{p}]" for t, p in news))

    def _partner_position(self, tp: TP) -> int | None:
        """How far (Kafka time) ``tp``'s partner partition has got: the timestamp of its next
        record when it is held itself (it goes no further until this one moves), else of its
        last record handled. Measured against the last handled alone, two partitions that both
        jumped a quiet gap each looked ahead of the other and held each other for good."""
        partner = self._partner(tp)
        kept = self._deferred.get(partner)
        if kept:
            nxt = _kafka_ts(kept[0])
            if nxt is not None:
                return max(nxt, self._last_ts.get(partner, nxt))
        return self._last_ts.get(partner)

    def _hold_if_ahead(self, msg: Any, now: int) -> bool:
        """Keep ``msg`` back (and pause its partition) when its partition is held or the record
        runs ahead of the partner topic's; otherwise note its timestamp and let it through."""
        tp = (msg.topic(), msg.partition())
        if tp in self._deferred:
            self._deferred[tp].append(msg)
            return True
        ts = _kafka_ts(msg)
        if ts is None:
            return False
        first = self._first_ts.setdefault(tp, ts)
        partner = self._partner_position(tp)
        # the timestamp test first: the partner's lag is only asked when it could matter
        if (runs_ahead(ts, partner, first, True, self._align_ms)
                and runs_ahead(ts, partner, first, self._partner_lagging(tp, now), self._align_ms)):
            self._deferred[tp] = [msg]
            self._hold_partition(tp)
            # once per partition per HELD_LOG_EVERY_MS: beside a store outage's retries every
            # 250 ms a partition is held again at each (a re-probe: 31-68 lines per 8-s outage)
            if now - self._ahead_logged_ms.get(tp, now - HELD_LOG_EVERY_MS) >= HELD_LOG_EVERY_MS:
                self._ahead_logged_ms[tp] = now
                log.info("input partition ahead of its partner topic: held", topic=tp[0], partition=tp[1],
                         ahead_ms=ts - (first if partner is None else partner), align_ms=self._align_ms)
            return True
        self._last_ts[tp] = max(ts, self._last_ts.get(tp, ts))
        return False

    def _release_held(self, now: int) -> list[Any]:
        """Held partitions whose partner caught up (or has nothing left to read), or whose wait
        (for the schema registry, for the next turn) is over, go on: their records kept back, in
        order (the partition was paused, so nothing newer of it was read; they are held again if
        need be)."""
        out: list[Any] = []
        # timed retries last: a partition let go for a retry is not held for that moment, and the
        # others' checks (is the partner held, lagging?) must not see it so (a probe: the audio
        # partition beside a ROI partition retried for a store outage was let go and held again
        # 52 times)
        for tp in sorted(self._deferred, key=lambda tp: tp in self._retry_at_ms):
            if tp in self._media_held and not self._partner_caught_up(tp, now):
                continue
            if tp in self._retry_at_ms and now < self._retry_at_ms[tp]:
                continue  # (a record held for the registry too waits for its retry)
            if tp in self._media_held or tp in self._retry_at_ms:
                self._media_held.pop(tp, None)
                self._retry_at_ms.pop(tp, None)
                go = True  # released: the alignment check runs again as they are handled
            else:
                go = self._kafka_caught_up(tp, now)
            if go:
                kept = self._deferred.pop(tp)
                out += kept
                self._hold_partition(tp, False)
                self._resumed({tp}, now)
                if tp in self._store_retry:  # (tried every STORE_RETRY_MS: the outage is logged once)
                    self._store_retry.discard(tp)
                else:
                    log.info("input partition released", topic=tp[0], partition=tp[1], records=len(kept))
        return out

    def _session_ahead(self, tp: TP, record: dict, now: int) -> bool:
        """Whether ``record`` (of ``tp``) runs more than ``align_ms`` of media ahead of what its
        session holds of the other stream, beyond what that stream's silence explains
        (align.media_ahead), while the partner partition has records to read (later in this
        batch, or unread) and is not held waiting for ``tp`` itself (of a pair, only one waits
        for the other: never both), unless what it waited for has come, when the wait is handed
        over. Then it is noted in ``_media_held`` and the caller keeps it back with the rest of
        ``tp``."""
        sid = record.get("session_id")
        is_audio = tp[0] == self.audio_topic
        end_ms = record_end_ms(is_audio, record)
        if not isinstance(sid, str) or end_ms is None:
            return False
        stream = Stream.AUDIO if is_audio else Stream.VIDEO
        lead = self.joiner.media_lead(sid, stream, end_ms, self._activity_ms(now))
        if lead is None or not media_ahead(*lead, self._align_ms):
            return False
        if self._partner_waits_for(tp):
            if not self._partner_releasable(tp, now):
                return False
            # the partner waits for this partition, and this batch brought what it waited for:
            # it goes on this turn, and this one waits for it instead (a probe: the audio held,
            # the frames ran on 11 s past it in one batch, and the bound dropped what it held)
            partner = self._partner(tp)
            self._media_held.pop(partner, None)
            self._retry_at_ms[partner] = now
        if self._batch_left[self._partner(tp)] <= 0 and not self._partner_lagging(tp, now):
            return False
        self._media_held[tp] = (sid, stream, end_ms, now)
        return True

    def _partner_releasable(self, tp: TP, now: int) -> bool:
        """Whether ``tp``'s partner, held until ``tp`` moves (_partner_waits_for), may go on now:
        its session's other stream came (media time), or ``tp`` caught it up (Kafka time)."""
        partner = self._partner(tp)
        if partner in self._media_held:
            return self._media_caught_up(partner, now)
        return self._kafka_caught_up(partner, now)

    def _kafka_caught_up(self, tp: TP, now: int) -> bool:
        """Whether a partition held for running ahead of its partner by Kafka time (_hold_if_ahead)
        may go on: its partner came to within half the allowance, or has nothing left to read
        (align.may_release), or nothing of it is kept."""
        kept = self._deferred.get(tp)
        first_ts = _kafka_ts(kept[0]) if kept else None
        return first_ts is None or may_release(first_ts, self._partner_position(tp), self._first_ts.get(tp, first_ts),
                                               self._partner_lagging(tp, now), self._align_ms)

    def _media_caught_up(self, tp: TP, now: int) -> bool:
        """Whether the session a partition waits for (``_media_held``) has its other stream within
        half the allowance now (hysteresis), or is gone."""
        sid, stream, end_ms, _since = self._media_held[tp]
        lead = self.joiner.media_lead(sid, stream, end_ms, self._activity_ms(now))
        return lead is None or not media_ahead(*lead, self._align_ms / 2)

    def _partner_waits_for(self, tp: TP) -> bool:
        """Whether ``tp``'s partner is held until ``tp`` moves (ahead of it by Kafka time, or
        itself waiting for a session's other stream), so ``tp`` must not wait for it: of a pair,
        only one waits for the other. A partner held on a timer (the schema registry, a ROI
        store, the next turn's reads) goes on without ``tp`` (a review: a burst with s3://
        references slower than a turn gave up the media-time hold at once, 32 of 57 signals)."""
        partner = self._partner(tp)
        return partner in self._media_held or (partner in self._deferred and partner not in self._retry_at_ms)

    def _partner_caught_up(self, tp: TP, now: int) -> bool:
        """Whether a partition held by ``_session_ahead`` may go on: its session's other stream
        came to within half the allowance (hysteresis), or the session is gone, or waiting cannot
        help: the partner has nothing left to read, is held itself, or took longer than
        MEDIA_HOLD_MAX_MS. Then the session is not waited for again (its stream that did not come
        is the join's to report, as stalled or missing)."""
        if self._media_caught_up(tp, now):
            return True
        sid, _stream, _end_ms, since = self._media_held[tp]
        if (self._partner_waits_for(tp) or not self._partner_lagging(tp, now)
                or now - since >= MEDIA_HOLD_MAX_MS):
            self.joiner.give_up_alignment(sid)
            log.info("a session's other stream did not come while its partition was held: not waited for again",
                     topic=tp[0], partition=tp[1], session_id=sid, held_ms=now - since)
            return True
        return False

    def _lagging(self, now: int) -> set[tuple[Stream, int]]:
        """Input partitions with unread records, or whose lag is not known yet (local calls, but a
        failed start query is asked of the broker again at most every 10 s: InputConsumer.lag), or
        stale: held or paused by the worker, or resumed and not read from yet (lagging_partitions)."""
        lag = self.consumer.lag()
        self._ask_silent(lag, now)
        tps = lagging_partitions(lag, self._stopped(), self.consumer.paused, self._resumed_at_ms, now)
        return {(Stream.AUDIO if topic == self.audio_topic else Stream.VIDEO, partition) for topic, partition in tps}

    def _activity_ms(self, now: int) -> int:
        """The join's processing-time clock: wall time that stands still while input is paused.

        Idle timeouts and stalled streams are judged on it, so a backpressure pause never makes
        a session look idle while its events wait in Kafka (closing it then would drop them)."""
        paused = self._paused_total_ms
        if self._paused_since_ms is not None:
            paused += now - self._paused_since_ms
        return now - paused

    def _feed(self, events: list[Event], now: int) -> list[Job]:
        return self.joiner.on_events(events, now)

    def _count_inputs(self, msgs: list[Any]) -> None:
        # per poll, not per record: a labelled counter increment costs as much as decoding a chunk
        per_topic: dict[str, int] = {}
        for msg in msgs:
            per_topic[msg.topic()] = per_topic.get(msg.topic(), 0) + 1
        for topic, n in per_topic.items():
            self.metrics.events_in.labels(topic).inc(n)
        self._count_joiner()

    def _count_joiner(self) -> None:
        """Joiner counters into metrics, and its per-session notices into logs (once per poll)."""
        before = self._joiner_counts
        for name, value in self.joiner.counters.items():
            delta = value - before.get(name, 0)
            if delta <= 0:
                continue
            if name.startswith("evictions_"):
                self.metrics.evictions.labels(name.removeprefix("evictions_")).inc(delta)
            elif name.startswith("dropped_"):
                self.metrics.dropped.labels(name.removeprefix("dropped_")).inc(delta)
            elif name.startswith("sessions_closed_"):
                self.metrics.sessions_closed.labels(name.removeprefix("sessions_closed_")).inc(delta)
            elif name == "partition_mismatch":
                self.metrics.partition_mismatch.inc(delta)
        self._joiner_counts = dict(self.joiner.counters)
        for what, session_id in self.joiner.drain_notices():
            if what == "partition_mismatch":
                log.error("session on different partitions of the two inputs: the producers must use "
                          "the same partitioner for both topics", session_id=session_id)
            else:
                log.warning("state evicted", session_id=session_id, reason=what)

    def _dead_letter(self, msg: Any, source: Source, reason: str, kafka_ts: int | None) -> None:
        record = dead_letter_record(source, msg.key(), msg.value(), kafka_ts, reason,
                                    self.cfg.instance_id, self.clock_ms(), self._dlq_max_bytes)
        value = self.codecs["DeadLetter"].encode(record)
        key = record["key"]  # the original key, or its first bytes where it is too long
        log.warning("dead letter", topic=source.topic, partition=source.partition, offset=source.offset,
                    reason=record["reason"])
        self.metrics.dlq.labels(source.topic).inc()
        self.dead_lettered += 1

        def delivered(err: str | None, attempt: int = 0) -> None:
            if err is None:
                self.tracker.done(source)
            elif attempt < _MAX_DELIVERY_RETRIES:
                log.warning("dead letter not delivered, retrying", error=err, attempt=attempt + 1)
                self.producer.produce(self.cfg.kafka.topics.dlq.name, key, value,
                                      lambda e: delivered(e, attempt + 1))
            else:
                raise RuntimeError(f"cannot deliver a dead letter for {source}: {err}")

        self.producer.produce(self.cfg.kafka.topics.dlq.name, key, value, delivered)

    # --- scoring and output -----------------------------------------------------------------
    def _submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.frames_missing:
                self.metrics.gaps.inc(job.frames_missing)
        self.stage.submit(jobs)
        closed = self.joiner.drain_closed()
        if closed:
            self.stage.close_sessions(closed)

    def _publish_results(self) -> None:
        for scored in self.stage.results():
            self._publish(scored)

    def _publish(self, scored: Scored[Job]) -> None:
        job, score = scored.job, scored.score
        now = self.clock_ms()
        record = signal_record(job, score, now)
        try:
            value = self.codecs["LipSyncSignal"].encode(record)
        except EncodeError as exc:  # a scorer bug; publishing nothing would stall the commits
            log.error("signal does not fit its schema", session_id=job.session_id, error=str(exc))
            raise
        m = self.metrics
        m.windows_scored.labels(job.kind.value, score.label.value).inc()
        m.queue_latency.observe(scored.queued_ms / 1000.0)
        if job.newest_received_wall_ms:
            m.event_to_signal.observe(max(0, now - job.newest_received_wall_ms) / 1000.0)
        if score.scorer.startswith("heuristic@"):
            m.fallbacks.inc()
        if scored.error is not None:
            m.scoring_errors.inc()
            log.warning("job not scorable", session_id=job.session_id, kind=job.kind.value,
                        frame_start=job.frame_start, error=scored.error)
        topic = self.cfg.kafka.topics.signals.name
        key = job.session_id.encode("utf-8")

        def delivered(err: str | None, attempt: int = 0) -> None:
            if err is None:
                self.published += 1
                m.signals_published.labels(job.kind.value).inc()
                self.joiner.on_published(job)
            elif attempt < _MAX_DELIVERY_RETRIES:
                log.warning("signal not delivered, retrying", session_id=job.session_id, error=err)
                self.producer.produce(topic, key, value, lambda e: delivered(e, attempt + 1))
            else:
                raise RuntimeError(f"cannot deliver signal {record['signal_id']}: {err}")

        self.producer.produce(topic, key, value, delivered)

    def commit(self, synchronous: bool = False) -> dict[TP, int]:
        """Commit the input offsets that every published signal allows.

        Order (never reorder):
        1. publish: hand every finished result to the producer;
        2. flush the producer: every signal and dead letter is acknowledged, and its delivery
           callback has released the input events it depended on in the OffsetTracker;
        3. commit the tracker's positions (lowest offset still needed, per partition) of the
           partitions still assigned.
        A crash between 2 and 3 re-delivers some signals (same signal_id) but loses none.

        The periodic commit (``synchronous=False``) does step 2 without waiting: it serves the
        delivery callbacks that are ready instead of blocking the poll loop on a slow broker, which
        is safe because the tracker only ever releases an event from a delivery callback, so an
        unacknowledged signal always holds its inputs back. Shutdown and rebalance
        (``synchronous=True``) wait for every acknowledgement, then commit synchronously.
        """
        # Step 1
        self._publish_results()
        # Step 2
        if synchronous:
            left = self.producer.flush(_FLUSH_TIMEOUT_S)
            if left:
                log.error("producer did not flush; committing only what was acknowledged", pending=left)
        else:
            self.producer.poll(0)
        # Step 3
        positions = {tp: pos for tp, pos in self.tracker.positions().items()
                     if self._committed.get(tp) != pos}
        committed = self.consumer.commit(positions, asynchronous=not synchronous) if positions else {}
        if committed:
            self._committed.update(committed)
            self.metrics.commits.inc()
        self._update_gauges(lag=False)
        return committed

    def _update_gauges(self, lag: bool) -> None:
        m = self.metrics
        m.backlog.set(self.stage.backlog())
        m.open_sessions.set(self.joiner.open_sessions())
        m.held_partitions.set(len(self.consumer.held))
        if lag:
            for (topic, partition), behind in self.consumer.lag().items():
                if behind is not None:
                    m.consumer_lag.labels(topic, str(partition)).set(behind)

    def _backpressure(self) -> None:
        backlog = self.stage.backlog()
        sc = self.cfg.scoring
        if not self.consumer.paused and backlog >= sc.max_queued_jobs:
            self._paused_since_ms = self.clock_ms()
            n = self.consumer.pause_all()
            self.metrics.paused_partitions.set(n)
            log.warning("scoring behind: pausing input", backlog=backlog, partitions=n)
        elif self.consumer.paused and backlog <= sc.resume_below:
            if self._paused_since_ms is not None:
                self._paused_total_ms += self.clock_ms() - self._paused_since_ms
                self._paused_since_ms = None
            self.consumer.resume_all()
            self._resumed(self.consumer.assigned, self.clock_ms())
            self.metrics.paused_partitions.set(0)
            log.info("scoring caught up: resuming input", backlog=backlog)
        elif self.consumer.paused:
            self.metrics.paused_partitions.set(len(self.consumer.assigned))

    # --- rebalance (called inside consume) ----------------------------------------------------
    def _on_assign(self, tps: list[TP]) -> None:
        self._assigned_once = True
        log.info("partitions assigned", partitions=sorted(tps))

    def _on_revoke(self, tps: list[TP]) -> None:
        log.info("partitions revoked", partitions=sorted(tps))
        self._quiesce()
        self._forget(tps)

    def _on_lost(self, tps: list[TP]) -> None:
        log.warning("partitions lost", partitions=sorted(tps))
        self._forget(tps)

    def _forget(self, tps: list[TP]) -> None:
        dropped = self.joiner.drop_partitions({p for _, p in tps})
        self.tracker.forget(set(tps))
        for tp in tps:
            self._committed.pop(tp, None)
            # records kept back were never handled nor opened: the next owner reads them
            self._deferred.pop(tp, None)
            self._retry_at_ms.pop(tp, None)
            self._media_held.pop(tp, None)
            self._store_retry.discard(tp)
            self._registry_waiting.pop(tp, None)
            self._resumed_at_ms.pop(tp, None)
            self._last_read_ms.pop(tp, None)
            self._asked_at_ms.pop(tp, None)
            self._first_ts.pop(tp, None)
            self._last_ts.pop(tp, None)
        if self._refs_read:
            gone = set(tps)
            self._refs_read = {k: v for k, v in self._refs_read.items() if (k[0], k[1]) not in gone}
        self.metrics.held_partitions.set(len(self.consumer.held - set(tps)))
        self.stage.close_sessions(self.joiner.drain_closed())
        if dropped:
            log.info("sessions handed over", sessions=dropped)
