"""Records in (decode to events, bad records), signals and dead letters out, the assignment check."""

from __future__ import annotations

import numpy as np
import pytest

from schemas import AvroCodec
from worker.ingest import BadRecord, audio_events, check_key, roi_events
from worker.kafka.consumer import AssignmentError, check_co_assignment
from worker.loadgen import expected_jobs, session_records
from worker.publish import dead_letter_record, signal_id, signal_record
from worker.scoring.types import Direction, Kind, Label, LipSyncScore
from worker.windowing.events import Arrival, AudioEvent, EndEvent, FrameEvent, Source, Stream

SRC = Source("t", 0, 7)
ARR = Arrival(1000, 990)


def _chunk(**kw):
    rec = {"session_id": "s", "seq": 0, "start_sample": 320, "sample_rate": 16000, "channels": 1,
           "encoding": "PCM_S16LE", "data": np.array([0, 16384, -32768], "<i2").tobytes(),
           "end_of_session": False, "produced_at_ms": None}
    rec.update(kw)
    return rec


def test_pcm_and_float_audio_decode_to_mono_float32():
    (ev,) = audio_events(_chunk(), SRC, ARR, 16000)
    assert isinstance(ev, AudioEvent) and ev.start_sample == 320
    assert ev.samples.dtype == np.float32 and list(ev.samples) == [0.0, 0.5, -1.0]
    stereo = np.array([0.5, -0.5, 1.0, 0.0], "<f4").tobytes()
    (ev,) = audio_events(_chunk(encoding="F32LE", channels=2, data=stereo), SRC, ARR, 16000)
    assert list(ev.samples) == [0.0, 0.5]


def test_other_sample_rates_are_resampled_in_place_on_the_timeline():
    tone = (0.5 * np.sin(np.arange(4800) * 2 * np.pi * 440 / 48000) * 32767).astype("<i2")
    (ev,) = audio_events(_chunk(sample_rate=48000, start_sample=48000, data=tone.tobytes()), SRC, ARR, 16000)
    assert ev.sample_rate == 16000 and ev.start_sample == 16000 and ev.samples.shape == (1600,)
    assert 0.3 < np.abs(ev.samples[100:-100]).max() < 0.6


def test_the_usual_rates_resample_with_a_filter_built_once():
    from worker.windowing.resample import _kernel as _resampler

    _resampler.cache_clear()
    for rate in (8000, 11025, 22050, 32000, 44100, 48000, 96000, 44100, 48000):
        n = rate // 50  # 20 ms
        (ev,) = audio_events(_chunk(sample_rate=rate, start_sample=n, data=np.zeros(n, "<i2").tobytes()),
                             SRC, ARR, 16000)
        start = round(n * 16000 / rate)
        assert ev.start_sample == start and ev.samples.shape == (round(2 * n * 16000 / rate) - start,)
    assert _resampler.cache_info().misses == 7 and _resampler.cache_info().hits == 2


def test_end_markers():
    evs = audio_events(_chunk(data=b"", end_of_session=True), SRC, ARR, 16000)
    assert [type(e) for e in evs] == [EndEvent] and evs[0].stream is Stream.AUDIO
    roi = {"session_id": "s", "frame_index": 90, "pts_ms": 3000, "fps": 30.0, "roi": None,
           "end_of_session": True}
    evs = roi_events(roi, SRC, ARR, lambda r: (None, None))
    assert [type(e) for e in evs] == [EndEvent] and evs[0].stream is Stream.VIDEO


def test_roi_no_face_and_unresolvable_reference():
    class Err:
        reason = "not_found"

    base = {"session_id": "s", "frame_index": 3, "pts_ms": 100, "fps": 30.0, "end_of_session": False,
            "mouth_landmarks": [0.1, 0.2, 0.3, 0.4], "occluded": True}
    (ev,) = roi_events(dict(base, roi=None), SRC, ARR, lambda r: (None, None))
    assert isinstance(ev, FrameEvent) and not ev.face_present and ev.ref_error is None
    assert ev.landmarks.shape == (2, 2) and ev.occluded
    (ev,) = roi_events(dict(base, roi={"uri": "s3://b/k"}), SRC, ARR, lambda r: (None, Err()))
    assert ev.face_present and ev.pixels is None and ev.ref_error == "not_found"


@pytest.mark.parametrize("kw, needle", [
    ({"encoding": "MP3"}, "encoding"),
    ({"channels": 0}, "channels"),
    ({"sample_rate": 10}, "sample_rate"),
    # 44101/16000 in lowest terms: a 16000 x 44101 polyphase filter (11 GB) - refused, not built
    ({"sample_rate": 44101}, "cannot be resampled"),
    ({"sample_rate": 8001}, "cannot be resampled"),
    ({"data": b"\x00\x01\x02"}, "whole number"),
    ({"session_id": ""}, "session_id"),
    ({"data": b""}, "no data"),
    ({"encoding": "F32LE", "data": np.array([np.nan], "<f4").tobytes()}, "NaN"),
])
def test_bad_audio_records(kw, needle):
    with pytest.raises(BadRecord, match=needle):
        audio_events(_chunk(**kw), SRC, ARR, 16000)


def test_inline_pixels_of_the_wrong_size_are_a_bad_record_not_a_missing_frame():
    from worker.refs import RoiResolver

    resolver = RoiResolver()
    base = {"session_id": "s", "frame_index": 3, "pts_ms": 100, "fps": 30.0, "end_of_session": False,
            "mouth_landmarks": None, "occluded": False}
    for roi in ({"width": 96, "height": 96, "format": "GRAY8", "data": b"\x00" * 100},
                {"width": 96, "height": 96, "format": "RGB24", "data": b"\x00" * 96 * 96},
                {"width": 100000, "height": 100000, "format": "GRAY8", "data": b"\x00" * 16}):
        with pytest.raises(BadRecord, match="inline"):
            roi_events(dict(base, roi=roi), SRC, ARR, resolver.try_resolve)
    good = {"width": 8, "height": 8, "format": "GRAY8", "data": b"\x00" * 64}
    (ev,) = roi_events(dict(base, roi=good), SRC, ARR, resolver.try_resolve)
    assert ev.pixels.shape == (8, 8) and ev.ref_error is None


def test_bad_roi_records_and_keys():
    with pytest.raises(BadRecord, match="fps"):
        roi_events({"session_id": "s", "frame_index": 0, "fps": 0.0}, SRC, ARR, lambda r: (None, None))
    with pytest.raises(BadRecord, match="frame_index"):
        roi_events({"session_id": "s", "frame_index": -1, "fps": 30.0}, SRC, ARR, lambda r: (None, None))
    check_key(b"s", "s")
    for key in (None, b"\xff", b"other"):
        with pytest.raises(BadRecord):
            check_key(key, "s")


def test_signal_id_is_deterministic_and_distinct():
    a = signal_id("sess", Kind.BLOCK, 16)
    assert a == signal_id("sess", "BLOCK", 16) and len(a) == 40
    assert len({a, signal_id("sess", Kind.WINDOW, 16), signal_id("sess", Kind.BLOCK, 32),
                signal_id("sess2", Kind.BLOCK, 16)}) == 4


def _job():
    from worker.scoring.types import AudioSpan, FrameSpan, ScoreRequest
    from worker.windowing.events import DueReason, Job

    req = ScoreRequest(Kind.BLOCK, FrameSpan(np.zeros((16, 8, 8), np.uint8), 30.0, 16),
                       AudioSpan(np.zeros(100, np.float32), 16000, 0), "s")
    return Job("s", Kind.BLOCK, 16, 32, 533, 1067, req, frames_missing=2, audio_missing_ms=40,
               reason=DueReason.COMPLETE, newest_received_wall_ms=10_000, newest_produced_wall_ms=9_990,
               keep_from_frame=30)


def test_signal_record_fits_the_schema_and_carries_gaps():
    score = LipSyncScore(Kind.BLOCK, 16, 32, 533, 1067, 0.8, 66.7, 0.2, 0.5, Direction.AUDIO_LAGS, Label.OK,
                         "m@1", occluded=False)
    rec = signal_record(_job(), score, emitted_at_ms=10_045)
    back = AvroCodec("LipSyncSignal").decode(AvroCodec("LipSyncSignal").encode(rec))
    assert back["signal_id"] == signal_id("s", Kind.BLOCK, 16)
    assert back["latency_ms"] == 45 and back["frames_missing"] == 2 and back["audio_missing_ms"] == 40
    assert back["direction"] == "AUDIO_LAGS" and back["offset_ms"] == pytest.approx(66.7)
    silent = LipSyncScore(Kind.BLOCK, 16, 32, 533, 1067, None, float("nan"), None, float("nan"),
                          Direction.UNKNOWN, Label.SILENCE, "m@1")
    rec = signal_record(_job(), silent, 10_045)
    assert rec["score"] is None and rec["offset_ms"] is None and rec["confidence"] == 0.0
    AvroCodec("LipSyncSignal").encode(rec)


def test_dead_letter_keeps_the_original_bytes():
    rec = dead_letter_record(SRC, b"k", b"\x00raw", 123, "decode: bad\nthing", "host/1", 456)
    back = AvroCodec("DeadLetter").decode(AvroCodec("DeadLetter").encode(rec))
    assert back["value"] == b"\x00raw" and back["key"] == b"k" and back["offset"] == 7
    assert back["reason"] == "decode: bad thing"
    assert not back["truncated"] and back["key_bytes"] == 1 and back["value_bytes"] == 4


def test_a_dead_letter_fits_in_one_record_whatever_it_carries():
    """A bad record near the record size limit: the dead letter keeps the first bytes of its value
    (and of a long key) and says so, so that the producer does not refuse it."""
    value, key = b"v" * 999_900, b"k" * 10_000
    rec = dead_letter_record(SRC, key, value, None, "invalid: too big", "host/1", 456, max_record_bytes=1_000_000)
    encoded = AvroCodec("DeadLetter").encode(rec)
    assert len(encoded) + len(rec["key"]) < 1_000_000
    assert rec["truncated"] and rec["value_bytes"] == len(value) and rec["key_bytes"] == len(key)
    assert value.startswith(rec["value"]) and key.startswith(rec["key"]) and len(rec["value"]) > 900_000


def test_co_assignment_check():
    check_co_assignment([("a", 0), ("b", 0), ("a", 2), ("b", 2)], ("a", "b"))
    with pytest.raises(AssignmentError, match="co-partitioned"):
        check_co_assignment([("a", 0), ("b", 1)], ("a", "b"))


def test_session_records_and_expected_jobs():
    frames = np.zeros((45, 8, 8, 3), np.uint8)
    audio = np.zeros(24000, np.float32)
    recs = session_records("s", frames, audio, 30.0, 16000, chunk_ms=40)
    rois = [r for r in recs if r.stream == "roi"]
    chunks = [r for r in recs if r.stream == "audio"]
    assert len(rois) == 46 and len(chunks) == 39  # 45 frames + marker; 37.5 chunks -> 38 + marker
    assert rois[-1].record["end_of_session"] and rois[-1].record["roi"] is None
    assert rois[0].record["roi"]["format"] == "GRAY8"
    assert [r.due_ms for r in recs] == sorted(r.due_ms for r in recs)
    for r in recs:
        codec = AvroCodec("RoiRef" if r.stream == "roi" else "AudioChunk")
        codec.encode(r.record)
    jobs = expected_jobs(45, 30.0, 16, 1000, 1000)
    assert [(k.value[0], a, b) for k, a, b in jobs] == [("B", 0, 16), ("B", 16, 32), ("W", 0, 30)]


def test_float_audio_over_full_scale_is_kept_as_offline_reads_it():
    """ffmpeg's decoders overshoot 1.0 (a dev clip peaks at 1.26); clipped there, served and
    streamed F32LE audio read otherwise than `score` reads the same samples. Absurd values are
    still bounded."""
    from worker.ingest import F32_BOUND

    x = np.array([0.5, 1.26, -1.1, 1e30, -1e30], dtype="<f4")
    (ev,) = audio_events(_chunk(encoding="F32LE", data=x.tobytes()), SRC, ARR, 16000)
    assert ev.samples.tolist() == pytest.approx([0.5, 1.26, -1.1, F32_BOUND, -F32_BOUND])
