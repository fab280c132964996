"""Pure face-track association: which of this frame's FaceMesh faces continues which track.

FaceMesh returns its faces in no stable order, so with more than one face the tracker follows
each person by the position of the mouth: a detection continues the track whose last mouth ROI
centre is nearest, if it is within ``MAX_STEP`` ROI sides of it (a mouth moves a fraction of
its width between frames; two faces side by side are several mouth widths apart). No mediapipe,
no I/O.
"""

from __future__ import annotations

import numpy as np

# Largest centre displacement, in ROI sides (2 mouth widths), that still counts as the same
# face. Checked against the gap since the track was last seen: a face lost for a second and
# found again where it was continues its track.
MAX_STEP = 0.75
# A second face detected in fewer frames than this is dropped, not returned as a track.
MIN_TRACK_FRAMES = 8
# Most faces a tracker follows at once: FaceMesh runs its landmark model once per face.
MAX_FACES = 8
# What `sync-scorer score` follows by default: a speaker with a few others in the frame.
DEFAULT_SCORE_FACES = 4


# Two detections in one frame closer than this (ROI sides) are one face listed twice: FaceMesh
# with more than one face allowed re-detects a face it is already tracking and reports both
# (seen on a dev clip: the one face as two overlapping tracks for 186 of 250 frames).
DUPLICATE_DIST = 0.5


def distinct_faces(detections: list[np.ndarray], last_params: list[np.ndarray]) -> list[int]:
    """Indices of this frame's detections to keep, one per face: detections within
    DUPLICATE_DIST ROI sides of each other are one face, and of those the one that best
    continues an existing track is kept (the landmarks FaceMesh tracked from the last frame,
    what a one-face tracker reports, rather than a fresh re-detection's); the first listed
    when there is no track yet."""
    order = sorted(range(len(detections)), key=lambda d: (_continuity(detections[d], last_params), d))
    keep: list[int] = []
    for d in order:
        if all(_dist(detections[d], detections[k]) >= DUPLICATE_DIST for k in keep):
            keep.append(d)
    return sorted(keep)


def _continuity(det: np.ndarray, last_params: list[np.ndarray]) -> float:
    """How far ``det`` is from continuing its nearest track: centre step plus relative change of
    the ROI side (duplicates sit at one place; their mouth widths differ)."""
    if not last_params:
        return 0.0
    return min(_dist(det, last) + abs(float(det[2]) - float(last[2])) / max(float(last[2]), 1e-6)
               for last in last_params)


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between two ROI centres in units of the larger ROI side."""
    return float(np.hypot(a[0] - b[0], a[1] - b[1])) / max(float(a[2]), float(b[2]), 1e-6)


def assign_faces(last_params: list[np.ndarray], detections: list[np.ndarray], max_tracks: int,
                 ) -> list[int | None]:
    """last_params: each existing track's last seen ROI params (cx, cy, side, angle);
    detections: this frame's ROI params. Returns, per detection, the index of the track it
    continues, a new index (len(last_params), len(last_params) + 1, ...) for a face that starts
    a track, or None when ``max_tracks`` tracks exist already and none is near (spurious
    detections must not grow memory without bound). Greedy by distance: the nearest pair is
    matched first, each track takes at most one face per frame."""
    pairs = []
    for d, det in enumerate(detections):
        for t, last in enumerate(last_params):
            dist = _dist(det, last)
            if dist <= MAX_STEP:
                pairs.append((dist, d, t))
    out: list[int | None] = [None] * len(detections)
    taken: set[int] = set()
    for _, d, t in sorted(pairs):
        if out[d] is None and t not in taken:
            out[d] = t
            taken.add(t)
    n_tracks = len(last_params)
    for d in range(len(detections)):
        if out[d] is None and n_tracks < max_tracks:
            out[d] = n_tracks
            n_tracks += 1
    return out
