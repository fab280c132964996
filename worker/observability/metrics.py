"""The worker's Prometheus metrics, on a registry of their own (tests run several workers)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def watch_gc(histogram: Histogram) -> None:
    """Time every collection into ``histogram`` (a full collection stops every Python thread, the
    scoring thread included: a latency spike to account for)."""
    import gc
    import time

    started: dict[str, float] = {}

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started["t"] = time.perf_counter()
        elif "t" in started:
            histogram.labels(str(info.get("generation", "?"))).observe(time.perf_counter() - started.pop("t"))

    gc.callbacks.append(callback)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        p = "sync_scorer_"
        self.events_in = Counter(p + "events_in", "Input records consumed", ["topic"], registry=r)
        self.consumer_lag = Gauge(p + "consumer_lag", "Records behind the high watermark",
                                  ["topic", "partition"], registry=r)
        self.windows_scored = Counter(p + "windows_scored", "Signals scored", ["kind", "label"], registry=r)
        self.signals_published = Counter(p + "signals_published", "Signals delivered", ["kind"], registry=r)
        self.batch_size = Histogram(p + "batch_size", "Jobs per scoring batch", buckets=_BATCH_BUCKETS,
                                    registry=r)
        self.scoring_latency = Histogram(p + "scoring_latency_seconds", "Scorer time per batch",
                                         buckets=_LATENCY_BUCKETS_S, registry=r)
        self.queue_latency = Histogram(p + "scoring_queue_seconds", "Job wait before its batch",
                                       buckets=_LATENCY_BUCKETS_S, registry=r)
        self.event_to_signal = Histogram(
            p + "event_to_signal_latency_seconds",
            "Signal emission minus the arrival of the newest input event it depends on",
            buckets=_LATENCY_BUCKETS_S, registry=r)
        self.dlq = Counter(p + "dlq", "Records sent to the dead-letter topic", ["topic"], registry=r)
        self.fallbacks = Counter(p + "fallbacks", "Signals from the heuristic fallback scorer", registry=r)
        self.scoring_errors = Counter(p + "scoring_errors", "Jobs the scorer rejected (LOW_QUALITY)",
                                      registry=r)
        self.evictions = Counter(p + "evictions", "State evicted to stay bounded", ["reason"], registry=r)
        self.dropped = Counter(p + "events_dropped", "Events not used (late, duplicate, after close)",
                               ["why"], registry=r)
        self.ref_errors = Counter(p + "ref_errors", "ROI references that could not be read", ["reason"],
                                  registry=r)
        self.gaps = Counter(p + "gap_frames", "Frames scored as missing", registry=r)
        self.registry_unavailable = Counter(
            p + "registry_unavailable", "Input records held back because the schema registry could not "
            "be asked (read again after a back-off, never dead-lettered)", registry=r)
        self.ref_store_outages = Counter(
            p + "ref_store_outages", "Outages of a ROI store whose references were held (their partitions "
            "paused, read when it answered again, up to refs.outage_hold_s)", ["store"], registry=r)
        self.paused_partitions = Gauge(p + "paused_partitions", "Input partitions paused (backpressure)",
                                       registry=r)
        self.held_partitions = Gauge(p + "held_partitions",
                                     "Input partitions held back: ahead in time of the other topic's, which lags, "
                                     "or waiting for the schema registry or a ROI store",
                                     registry=r)
        self.backlog = Gauge(p + "scoring_backlog", "Jobs queued or being scored", registry=r)
        self.open_sessions = Gauge(p + "open_sessions", "Sessions with state in this worker", registry=r)
        self.commits = Counter(p + "offset_commits", "Offset commits", registry=r)
        self.sessions_closed = Counter(p + "sessions_closed", "Sessions closed", ["why"], registry=r)
        self.partition_mismatch = Counter(p + "partition_mismatch", "Events of a session on another "
                                          "partition number than its first event (inconsistent producer "
                                          "partitioners break co-partitioning)", registry=r)
        self.scoring_cpu = Counter(p + "scoring_cpu_seconds", "CPU time of the scoring thread(s) in the "
                                   "scorer", registry=r)
        self.poll_loop_cpu = Counter(p + "poll_loop_cpu_seconds", "CPU time of the poll-loop thread "
                                     "(decode, refs, join, publish)", registry=r)
        self.gc_pause = Histogram(p + "gc_pause_seconds", "Python garbage-collection pauses (all threads "
                                  "stop)", ["generation"], buckets=_LATENCY_BUCKETS_S, registry=r)
        self.scorer_info = Gauge(p + "scorer_info", "The scorer in use (value 1)", ["scorer"], registry=r)
        self.search_margin_ms = Gauge(p + "search_margin_ms", "Audio each job needs on each side of its "
                                      "frames, ms", registry=r)


class ServeMetrics:
    """`sync-scorer serve`'s metrics (GET /metrics on its HTTP port): requests by transport,
    method and outcome, and their latency."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        p = "sync_scorer_serve_"
        self.requests = Counter(p + "requests", "Scoring requests", ["transport", "method", "outcome"], registry=r)
        self.latency = Histogram(p + "request_seconds", "Time to answer a scoring request (decode, wait for "
                                 "the scorer, score)", ["transport", "method"], buckets=_LATENCY_BUCKETS_S, registry=r)
