"""Pure helpers of the replay: live order of recorded input, and replayed vs published signals."""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.loadgen import AUDIO, ROI
from worker.windowing.align import record_end_ms
from worker.windowing.events import Source


@dataclass(frozen=True)
class Recorded:
    """One input record as Kafka kept it. ``stream`` is AUDIO or ROI (worker.loadgen)."""

    stream: str
    key: bytes | None
    value: bytes | None
    source: Source
    timestamp_ms: int | None = None


def due_ms(stream: str, record: Mapping[str, Any]) -> float:
    """Media time at which a live source could have sent ``record`` (the end of its data, as
    loadgen plays sessions): a frame at (frame_index + 1) / fps, a chunk at its last sample; an
    end-of-session marker at infinity (after every data record of its session); 0 where its
    fields cannot say."""
    if record.get("end_of_session"):
        return math.inf
    end_ms = record_end_ms(stream == AUDIO, record)
    return 0.0 if end_ms is None else end_ms


def media_start_ms(stream: str, record: Mapping[str, Any]) -> float | None:
    """Media time at which ``record``'s data begins, ms (a frame's start, a chunk's first sample);
    None for a record without data (an end-of-session marker alone)."""
    if stream == ROI:
        fps = float(record.get("fps") or 0.0)
        if record.get("end_of_session") and record.get("roi") is None:
            return None
        return 1000.0 * int(record.get("frame_index", 0)) / fps if fps > 0 else None
    rate = int(record.get("sample_rate") or 0)
    if not record.get("data") or rate <= 0:
        return None
    return 1000.0 * int(record.get("start_sample", 0)) / rate


def in_replayed_range(published: Iterable[Mapping[str, Any]], first_frame: Mapping[str, int | None],
                      left_out: Iterable[str] = (),
                      last_frame: Mapping[str, Mapping[str, int] | None] | None = None) -> list[Mapping[str, Any]]:
    """The published signals a replay of part of the sessions answers for: of the sessions in
    ``first_frame`` (session -> first frame replayed, None for none), those starting there or
    later, and (``last_frame``, session -> kind -> its last job start, for a session still open
    when read) at or before their kind's last job, less the jobs ``left_out`` (their data began
    before the records read, or came after)."""
    skip = set(left_out)
    last_frame = last_frame or {}
    out = []
    for s in published:
        sid, start = str(s.get("session_id")), int(s.get("frame_start", 0))
        first, last = first_frame.get(sid), last_frame.get(sid)
        if first is None or start < first or str(s.get("signal_id")) in skip:
            continue
        if last is not None and start > last.get(str(s.get("kind")), -1):
            continue
        out.append(s)
    return out


def live_order(audio: Sequence[tuple[float, Any]], roi: Sequence[tuple[float, Any]]) -> list[Any]:
    """Merge one session's two inputs, each (due_ms, item) in its partition's offset order, by due
    time: what a worker consuming both topics in real time would have seen. Each input keeps its
    own order even where its due times go backwards (a late producer), as Kafka delivered it; at
    equal due times the frame goes first (loadgen's order)."""
    a = ((d, 1, i, item) for i, (d, item) in enumerate(audio))
    r = ((d, 0, i, item) for i, (d, item) in enumerate(roi))
    return [item for _, _, _, item in heapq.merge(r, a, key=lambda x: (x[0], x[1]))]


def compare_signals(replayed: Iterable[Mapping[str, Any]], published: Iterable[Mapping[str, Any]],
                    offset_tolerance_ms: float = 1.0, score_tolerance: float = 1e-3) -> dict[str, Any]:
    """Replayed signals against the ones published live, matched by ``signal_id`` (the last
    published copy of an id counts: at-least-once delivery may repeat one).

    Returns counts of signals in both, only replayed, only published; how many of the matched
    changed direction, label, offset (beyond ``offset_tolerance_ms``) or score (beyond
    ``score_tolerance``); and the median / max absolute score and offset change."""
    live = {str(s["signal_id"]): s for s in published}
    again = {str(s["signal_id"]): s for s in replayed}
    both = sorted(set(live) & set(again))
    numeric = {"score": ("score", score_tolerance), "offset_ms": ("offset", offset_tolerance_ms)}
    deltas: dict[str, list[float]] = {field: [] for field in numeric}
    changed = {"direction": 0, "label": 0, "offset": 0, "score": 0, "null": 0}
    examples: list[dict[str, Any]] = []
    identical = 0
    for sid in both:
        a, b = live[sid], again[sid]
        diffs = [field for field in ("direction", "label") if a.get(field) != b.get(field)]
        if any((a.get(f) is None) != (b.get(f) is None) for f in numeric):
            diffs.append("null")
        for field, (name, tol) in numeric.items():
            if a.get(field) is not None and b.get(field) is not None:
                delta = abs(float(a[field]) - float(b[field]))
                deltas[field].append(delta)
                if delta > tol:
                    diffs.append(name)
        for name in diffs:
            changed[name] += 1
        identical += not diffs
        if diffs and len(examples) < 5:
            examples.append({"signal_id": sid, "session_id": b.get("session_id"), "kind": b.get("kind"),
                             "frame_start": b.get("frame_start"), "changed": diffs,
                             "published": {k: a.get(k) for k in ("score", "offset_ms", "direction", "label", "scorer")},
                             "replayed": {k: b.get(k) for k in ("score", "offset_ms", "direction", "label", "scorer")}})
    return {
        "matched": len(both),
        "only_replayed": len(set(again) - set(live)),
        "only_published": len(set(live) - set(again)),
        "changed": changed,
        "identical": identical,
        "score_abs_diff_median": _median(deltas["score"], 6),
        "score_abs_diff_max": round(max(deltas["score"]), 6) if deltas["score"] else None,
        "offset_abs_diff_median_ms": _median(deltas["offset_ms"], 3),
        "offset_abs_diff_max_ms": round(max(deltas["offset_ms"]), 3) if deltas["offset_ms"] else None,
        "examples": examples,
    }


def _median(values: list[float], digits: int) -> float | None:
    return round(statistics.median(values), digits) if values else None


def session_summary(signals: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per session: signals by kind and label, and the median WINDOW offset of the confident,
    scored windows (what a reader of a replay wants first)."""
    kinds: dict[str, int] = {}
    labels: dict[str, int] = {}
    offsets = []
    for s in signals:
        kinds[s["kind"]] = kinds.get(s["kind"], 0) + 1
        labels[s["label"]] = labels.get(s["label"], 0) + 1
        if s["kind"] == "WINDOW" and s.get("offset_ms") is not None and s["label"] == "OK":
            offsets.append(float(s["offset_ms"]))
    return {"signals": len(signals), "kinds": kinds, "labels": labels,
            "median_window_offset_ms": statistics.median(offsets) if offsets else None}


__all__ = ["AUDIO", "ROI", "Recorded", "compare_signals", "due_ms", "in_replayed_range", "live_order",
           "media_start_ms", "session_summary"]
