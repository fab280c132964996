"""Playing prepared sessions into the input topics on their media timeline (demo, load test)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from schemas import AvroCodec
from worker.kafka.clients import RecordSender
from worker.loadgen import AUDIO, TimedRecord


class Player(threading.Thread):
    """Sends ``timeline`` (due_ms, session index, record) in order; with ``realtime`` each record
    waits for its due time from the start. Records are stamped with ``produced_at_ms``.

    ``sent_wall_ms[(session_id, stream, index)]`` is each record's send time (Unix ms), where index
    is frame_index for ROI records and start_sample for audio; ``behind_ms`` is how far the
    sender fell behind its schedule at worst.
    """

    def __init__(self, sender: RecordSender, audio_topic: str, roi_topic: str,
                 timeline: Sequence[tuple[float, int, TimedRecord]], realtime: bool = True) -> None:
        super().__init__(name="player", daemon=True)
        self.sender, self.audio_topic, self.roi_topic = sender, audio_topic, roi_topic
        self.timeline, self.realtime = timeline, realtime
        self.codecs = {"audio": AvroCodec("AudioChunk"), "roi": AvroCodec("RoiRef")}
        self.sent_wall_ms: dict[tuple[str, str, int], int] = {}
        self.behind_ms = 0.0
        self.sent = 0
        self.started_wall_ms = 0
        self.finished = threading.Event()
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._play()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc
        finally:
            self.finished.set()

    def _play(self) -> None:
        t0 = time.monotonic()
        self.started_wall_ms = int(time.time() * 1000)
        for due_ms, _, rec in self.timeline:
            if self.stop_event.is_set():
                break
            if self.realtime:
                late = (time.monotonic() - t0) * 1000.0 - due_ms
                if late < 0:
                    time.sleep(-late / 1000.0)
                else:
                    self.behind_ms = max(self.behind_ms, late)
            now = int(time.time() * 1000)
            body = dict(rec.record, produced_at_ms=now)
            stream = rec.stream
            value = self.codecs[stream].encode(body)
            topic = self.audio_topic if stream == AUDIO else self.roi_topic
            self.sender.send(topic, body["session_id"].encode(), value)
            index = body["start_sample"] if stream == AUDIO else body["frame_index"]
            self.sent_wall_ms[(body["session_id"], stream, int(index))] = now
            self.sent += 1
        left = self.sender.close(30.0)
        if left:
            # (a probe: with the broker gone past the flush, 70% of a load test's input was never
            # written, and the worker was charged with the signals it never had input for)
            raise RuntimeError(f"{left} of {self.sent} input records were not delivered to Kafka within 30 s")
