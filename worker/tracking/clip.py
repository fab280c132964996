"""One call from a media file to what the scorer needs: tracked mouth ROIs plus aligned audio.

    clip = track_media("talk.mp4")                      # its own audio track
    clip = track_media("talk.mp4", audio_path="x.wav")  # another audio file in place of its own

``clip.frames`` is (T, 96, 96) GRAY8 ROIs at ``clip.fps``; ``clip.audio`` float32 mono at
``clip.sample_rate`` whose sample 0 is at video frame 0's time (worker.media.decode). With
``audio_path`` the file takes the place of the clip's own track (read_audio_for_video: its
first sample where that track starts).

``track_speakers`` is what `sync-scorer score` tracks: one face, and the clip again with more
only when more than one face shows up.
"""

from __future__ import annotations

import os
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from worker.media.decode import MediaError, MediaInfo, _fps_fraction, probe, read_audio, read_audio_for_video
from worker.tracking.tracker import MouthTracker, TrackResult

# the full-range detector counts the faces in view once a second at 25 fps (5 ms a call)
COUNT_FACES_EVERY = 25


def track_speakers(path: str | os.PathLike, fps: float | None = None, info: MediaInfo | None = None,
                   max_faces: int | None = None, errors: list[str] | None = None) -> list[TrackResult]:
    """Face tracks of a clip, the speaker among them for `score` to find (score_faces).

    One face first, as the training and evaluation caches do (FaceMesh's detector then runs
    only when the face is lost); the full-range detector counts faces once a second on the
    side. Only when it (or FaceMesh) saw more than one face in a frame is the clip tracked again
    with up to ``max_faces`` faces (FaceMesh then looks for more faces on every frame, 1.5x the
    tracking time): a one-face clip pays ~0.2% for the check, not 50%. ``errors`` gets ffmpeg's
    error lines of a file that decoded with damage (media.decode.iter_video)."""
    from worker.tracking.faces import DEFAULT_SCORE_FACES

    max_faces = DEFAULT_SCORE_FACES if max_faces is None else max_faces
    info = info or probe(path)
    tracks = MouthTracker(roi_size=96, count_faces_every=COUNT_FACES_EVERY).track_faces_file(path, fps=fps, info=info,
                                                                                       errors=errors)
    if max_faces > 1 and tracks[0].faces_seen > 1:
        tracks = track_all_faces(path, max_faces, fps, info, before_ms=tracks[0].tracking_ms)
    return tracks


def track_all_faces(path: str | os.PathLike, max_faces: int, fps: float | None = None, info: MediaInfo | None = None,
                    before_ms: float = 0.0) -> list[TrackResult]:
    """Up to ``max_faces`` face tracks, FaceMesh looking for more faces on every frame and small
    faces searched in tiles (1.5x the one-face tracking time). ``before_ms``: tracking time spent
    on the clip already, added to the tracks' own."""
    tracks = MouthTracker(roi_size=96, max_faces=max_faces).track_faces_file(path, fps=fps, info=info or probe(path))
    for tr in tracks:
        tr.tracking_ms += before_ms
    return tracks


@dataclass
class TrackedClip:
    track: TrackResult
    audio: np.ndarray  # (N,) float32 mono
    sample_rate: int
    fps: float
    info: MediaInfo

    @property
    def frames(self) -> np.ndarray:
        return self.track.rois

    @property
    def no_face(self) -> bool:
        return not bool(self.track.face_present.any())


def track_media(
    path: str | os.PathLike,
    audio_path: str | os.PathLike | None = None,
    sample_rate: int = 16000,
    fps: float | None = None,
    tracker: MouthTracker | None = None,
) -> TrackedClip:
    """Probe, decode, track and read audio (raises MediaError with a one-line message for a
    missing/unreadable file, no video stream, or no audio stream)."""
    info = probe(path)
    if not info.has_video:
        raise MediaError(f"no video stream in {info.path}")
    audio_info = probe(audio_path) if audio_path is not None else info
    if not audio_info.has_audio:
        raise MediaError(f"no audio stream in {audio_info.path}")
    rate = float(_fps_fraction(info, fps))
    tracker = tracker or MouthTracker(roi_size=96)
    with ThreadPoolExecutor(max_workers=1) as ex:
        if audio_path is None:
            fut = ex.submit(read_audio, path, sample_rate, info)
        else:  # another file's audio in place of the clip's own track (read_audio_for_video)
            fut = ex.submit(read_audio_for_video, audio_path, info, sample_rate, audio_info)
        track = tracker.track_file(path, fps=rate, info=info)
        audio = fut.result()
    return TrackedClip(track=track, audio=audio, sample_rate=sample_rate, fps=rate, info=info)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = 16000) -> None:
    """Write float32 mono audio as 16-bit PCM WAV (for --audio copies of shifted audio)."""
    pcm = np.clip(np.round(np.asarray(audio, np.float32) * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(sample_rate)
        wf.writeframes(pcm.tobytes())
