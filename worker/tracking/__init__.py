"""Offline face and mouth tracking (MediaPipe FaceMesh): per-frame mouth ROI, lip landmarks,
face-present flag and an occlusion estimate."""

__all__ = ["MouthTracker", "TrackResult"]


def __getattr__(name: str):
    # lazy: the pure modules (geometry, faces) are imported by the command line's argument
    # parsing, which should not pay for OpenCV (~0.2 s) on every command
    if name in __all__:
        from worker.tracking import tracker

        return getattr(tracker, name)
    raise AttributeError(f"module 'worker.tracking' has no attribute {name!r}")
