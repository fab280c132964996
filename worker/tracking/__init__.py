"""Offline face and mouth tracking (MediaPipe FaceMesh): per-frame mouth ROI, lip landmarks,
face-present flag and an occlusion estimate."""

from worker.tracking.tracker import MouthTracker, TrackResult

__all__ = ["MouthTracker", "TrackResult"]
