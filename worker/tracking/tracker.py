"""Offline face and mouth tracking with MediaPipe FaceMesh (model files ship in the wheel).

Per frame: FaceMesh runs on a copy downscaled to <= ``detect_max_side`` px (speed); the ROI is
cropped from the full-resolution frame (detail). ROI centre/size/angle are smoothed with a
centred moving average, so frames are finalised with a lookahead of a few frames: input can be
streamed in chunks (``track_chunks``) with memory bounded by one chunk plus the lookahead.
"""

from __future__ import annotations

import collections
import importlib
import importlib.util
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ INFO/WARNING chatter
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2

# protobuf 4 deprecation noise printed by mediapipe on every FaceMesh graph
warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated")

from worker.tracking import geometry as geo
from worker.tracking import occlusion as occ
from worker.tracking.faces import MAX_FACES, MIN_TRACK_FRAMES, assign_faces, distinct_faces
from worker.tracking.native_log import quiet_native_stderr
from worker.tracking.spool import FrameSpool

# What the tracker's output is, as caches of tracked clips record it (tracking.prepare, eval-real):
# bump it with any change that alters the crops, flags or landmarks, so that old caches are
# rebuilt rather than read as this tracker's (caches without it were made by version 1).
TRACKER_VERSION = 1


@dataclass
class TrackResult:
    """Tracking output for T frames.

    rois: (T, S, S) uint8 GRAY8 mouth crops (zeros where face_present is False).
    rois_rgb: (T, S, S, 3) uint8, only when the tracker was built with keep_rgb=True.
    face_present: (T,) bool = face_detected | bridged (an ROI worth scoring).
    face_detected: (T,) bool, FaceMesh found a face in this very frame.
    bridged: (T,) bool, no detection but inside a dropout of <= max_gap frames: ROI params and
        landmarks are interpolated from the neighbours (the pixels are this frame's own).
    landmarks: (T, 40, 2) float32 lip landmarks (geometry.LIP_INDICES: 20 outer, 20 inner),
        normalised to the ROI (0..1 inside the crop, x right, y down, corners level); NaN where
        no face.
    landmarks_image: (T, 40, 2) float32, the same normalised to the full image (x / W, y / H).
    roi_params: (T, 4) float32 smoothed (cx, cy, side, angle_rad) in full-image pixels; NaN if
        no face.
    occlusion_score: (T,) float32 in 0..1 (see tracking.occlusion: share of lip-ring pixels that
        look like neither lips nor this face's skin); NaN where no face or no skin reference.
    occluded: (T,) bool, occlusion_score > 0.4 after a 3-frame median.
    fps: frame rate of the input; frame_size: (H, W) of the full-resolution input.
    tracking_ms: wall time spent in track*, ms (decode excluded).
    faces_seen: the most faces seen in one frame (see MouthTracker's count_faces_every).
    """

    rois: np.ndarray
    face_present: np.ndarray
    face_detected: np.ndarray
    bridged: np.ndarray
    landmarks: np.ndarray
    landmarks_image: np.ndarray
    roi_params: np.ndarray
    occlusion_score: np.ndarray
    occluded: np.ndarray
    fps: float
    frame_size: tuple[int, int]
    tracking_ms: float
    rois_rgb: np.ndarray | None = None
    # most faces seen in one frame: by FaceMesh, or by the full-range detector on the frames
    # ``count_faces_every`` picks (0 when nobody counted)
    faces_seen: int = 0
    # what the user should know about how the track was kept (tracking.spool: crops in RAM)
    notes: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return int(self.rois.shape[0])

    def ms_per_frame(self) -> float:
        return self.tracking_ms / max(1, self.n_frames)


def _mark_no_face(r: TrackResult, spans: list[tuple[int, int]]) -> None:
    """Frames [start, stop) of ``spans`` as TrackResult has a frame with no face: not present,
    detected, bridged or occluded, zero crops, NaN landmarks, ROI params and occlusion score.
    Crops kept on disk (tracking.spool's copy-on-write memmap) change in memory only; a read-only
    array is copied first."""
    for name in ("rois", "rois_rgb"):
        arr = getattr(r, name)
        if arr is not None and not arr.flags.writeable:
            setattr(r, name, np.array(arr))
    for start, stop in spans:
        for flags in (r.face_present, r.face_detected, r.bridged, r.occluded):
            flags[start:stop] = False
        r.rois[start:stop] = 0
        if r.rois_rgb is not None:
            r.rois_rgb[start:stop] = 0
        for values in (r.landmarks, r.landmarks_image, r.roi_params, r.occlusion_score):
            values[start:stop] = np.nan


@dataclass
class _Frame:
    index: int
    image: np.ndarray  # full-resolution RGB


@dataclass
class _State:
    detected: list = field(default_factory=list)  # bool per frame
    lips_px: list = field(default_factory=list)  # (L, 2) float64 or None
    cheeks_px: list = field(default_factory=list)  # (2, 2) float64 or None
    raw_params: list = field(default_factory=list)  # (4,) or None

    def append(self, face: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> None:
        """One frame: a detection (lips, cheeks, ROI params) or None."""
        self.detected.append(face is not None)
        self.lips_px.append(None if face is None else face[0])
        self.cheeks_px.append(None if face is None else face[1])
        self.raw_params.append(None if face is None else face[2])


@dataclass
class _Track:
    """One face followed through the clip: its detections and its finalised frames."""

    st: _State = field(default_factory=_State)
    out: dict = field(default_factory=lambda: collections.defaultdict(list))
    last_params: np.ndarray | None = None


def _solution(name: str):
    """mediapipe.python.solutions.<name> (face_mesh, face_detection).

    Without mediapipe's package __init__ where it has not run yet: that imports every solution
    and their drawing utilities, and so matplotlib, which was 1.5 s of every tracking process's
    start (a `sync-scorer score` of a 9 s clip took 15 s wall, 2 of them this). Placeholder
    packages with the real __path__ stand in for `mediapipe` and `mediapipe.python.solutions`,
    so the solution modules and the framework bindings they import load from the wheel as usual.
    They stay (a later `import mediapipe` gets the placeholder, whose `solutions` holds the
    solutions loaded here; nothing else in sync-scorer imports mediapipe). Anything that fails
    falls back to the plain import."""
    full = f"mediapipe.python.solutions.{name}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "mediapipe" in sys.modules:  # the package or the placeholder: submodules load alike
            return importlib.import_module(full)
        placed = []
        try:
            for pkg in ("mediapipe", "mediapipe.python.solutions"):
                spec = importlib.util.find_spec(pkg)
                if spec is None or not spec.submodule_search_locations:
                    raise ImportError(f"no package {pkg}")
                sys.modules[pkg] = importlib.util.module_from_spec(spec)  # not executed
                placed.append(pkg)
                if pkg == "mediapipe":
                    importlib.import_module("mediapipe.python")  # the framework bindings
            sys.modules["mediapipe"].solutions = sys.modules["mediapipe.python.solutions"]
            return importlib.import_module(full)
        except Exception:  # noqa: BLE001 - any surprise in the wheel's layout: the plain way
            for pkg in (*placed, full):
                sys.modules.pop(pkg, None)
            import mediapipe as mp

            return getattr(mp.solutions, name)


def _new_face_mesh(max_faces: int):
    return _solution("face_mesh").FaceMesh(
        static_image_mode=False, max_num_faces=max_faces, refine_landmarks=False,
        min_detection_confidence=0.5, min_tracking_confidence=0.5,
    )


# Small faces. FaceMesh looks for faces with MediaPipe's short-range detector, which sees the
# whole frame at 128x128: a face 7% of a 1080p frame wide is 9 px there and is never found.
# When the whole frame gives no face, the full-range detector (also in the wheel; faces to ~5 m)
# finds face boxes, and FaceMesh runs on a face-centred crop of the full-resolution frame.
ZOOM_SIZE = 256  # px, the face-centred crop's side
ZOOM_FACE_SCALE = 2.2  # crop side / the detector's face box side: room for head motion
ZOOM_REDETECT_FRAMES = 10  # the boxes are found again this often (the crop follows in between)
TILE_FROM_PX = 1280  # frames this large are also searched in overlapping tiles (tile_levels)
TILE_MIN_PX = 640  # the finest tiles' side; each coarser level doubles it
TILE_OVERLAP = 0.25


def tiles_along(side_px: int, tile_px: int) -> list[tuple[int, int]]:
    """[start, end) of overlapping tiles along a frame side of ``side_px``: as few as keep each at
    most ``tile_px`` long, overlapping by TILE_OVERLAP of a tile (one tile if the side fits)."""
    if side_px <= tile_px:
        return [(0, side_px)]
    n = math.ceil((side_px / tile_px - TILE_OVERLAP) / (1 - TILE_OVERLAP))
    t = side_px / (n - (n - 1) * TILE_OVERLAP)
    return [(round(i * t * (1 - TILE_OVERLAP)), min(side_px, round(i * t * (1 - TILE_OVERLAP) + t))) for i in range(n)]


def tile_levels(width_px: int, height_px: int) -> list[list[tuple[int, int, int, int]]]:
    """(x0, y0, x1, y1) of the tiles a frame is searched in for faces too small for the whole
    frame, per level: tiles of at most TILE_MIN_PX, twice that, ... below the frame's size.

    Why levels: the full-range detector sees its input at 192x192 and finds a face of about an
    eighth of it, while a face larger than the tiles' overlap can be cut by every tile of a level
    (one level of 640 px tiles missed a 450 px clip in 4K now and then). Measured with a dev clip
    scaled into black frames at 8 random places, 6 frames each (_face_boxes): a 150 px clip in 4K
    was found in 8 of 48 with the one 3x3 grid of 1536 px tiles of before and in 48 with these
    levels, a 120 px clip in 1080p in 23 and 48; 300-700 px clips in 4K and 224-400 px ones in
    1080p in 48."""
    levels = []
    tile_px = TILE_MIN_PX
    while tile_px < max(width_px, height_px):
        levels.append([(x0, y0, x1, y1) for x0, x1 in tiles_along(width_px, tile_px)
                       for y0, y1 in tiles_along(height_px, tile_px)])
        tile_px *= 2
    return levels


def _box(det, x0: float, y0: float, w: float, h: float) -> tuple[float, float, float, float]:
    """A detection in a (tile of the) frame at (x0, y0), w x h -> (cx, cy, side, score) in
    full-resolution pixels."""
    b = det.location_data.relative_bounding_box
    return (x0 + (b.xmin + 0.5 * b.width) * w, y0 + (b.ymin + 0.5 * b.height) * h,
            max(b.width * w, b.height * h), float(det.score[0]))


def _face(lm, to_px) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FaceMesh landmarks -> (lips (L, 2), cheeks (2, 2), ROI params (4,)) in full-res pixels;
    ``to_px(x, y)`` maps the mesh's normalised coordinates to them."""
    lips = np.array([to_px(lm[i].x, lm[i].y) for i in geo.LIP_INDICES], np.float64)
    cheeks = np.array([to_px(lm[i].x, lm[i].y) for i in (geo.CHEEK_LEFT, geo.CHEEK_RIGHT)], np.float64)
    return lips, cheeks, geo.roi_params(lips)


def _keep_crop(out: dict, key: str, crop: np.ndarray, blank: bool = False) -> None:
    """A frame's crop into its track's spool (the first one sets the shape): chunks, on disk past
    a budget (tracking.spool), where a list stacked at the end held a long clip's crops twice. A
    ``blank`` frame (no face; ``crop`` is zeros of the shape) is only counted."""
    spool = out.get(key)
    if spool is None:
        spool = out[key] = FrameSpool(crop.shape)
    if blank:
        spool.append_blank()
    else:
        spool.append(crop)


class MouthTracker:
    """Mouth-ROI tracker. One instance per clip at a time (FaceMesh keeps tracking state);
    ``track*`` resets it, so an instance can be reused for consecutive clips.

    ``max_faces`` 1 (the training and evaluation caches) follows the one face FaceMesh finds;
    more follows up to that many faces at once, each as its own track (``track_faces*``), for
    clips where the speaker shares the frame with others (``sync-scorer score`` scores each and
    keeps the one whose lips match the audio)."""

    def __init__(
        self,
        roi_size: int = 96,
        detect_max_side: int = 640,
        smooth_radius: int = 2,  # +/-2 frames: a centred 5-frame average
        max_gap: int = 2,  # bridge dropouts of at most this many frames
        keep_rgb: bool = False,
        clock: Callable[[], float] = time.perf_counter,
        max_faces: int = 1,
        count_faces_every: int = 0,
    ) -> None:
        if roi_size < 8:
            raise ValueError("roi_size must be >= 8")
        if not 1 <= max_faces <= MAX_FACES:
            raise ValueError(f"max_faces must be within 1..{MAX_FACES}")
        self.max_faces = max_faces
        # every this many frames the full-range detector counts the faces in view (5 ms on a
        # 640 px frame): how `score` learns, at no real cost, that a one-face pass is not enough
        self.count_faces_every = max(0, int(count_faces_every))
        self._frame_no = 0
        self._faces_seen = 0
        self.roi_size = roi_size
        self.detect_max_side = detect_max_side
        self.smooth_radius = smooth_radius
        self.max_gap = max_gap
        self.keep_rgb = keep_rgb
        self._clock = clock
        self._mesh = None
        self._detector = None  # full-range face detector, made on the first frame without a face
        self._zoom: list[np.ndarray] = []  # face-centred crops (cx, cy, side), full-res pixels
        self._zoom_meshes: list = []  # one FaceMesh per crop (it tracks within its crop)
        self._zoom_age = ZOOM_REDETECT_FRAMES  # frames since the crops were found (look at once)
        self._blank = None  # shared crops/landmarks of frames without the face (_append_absent)

    # -- public API ---------------------------------------------------------------------------
    def track(self, frames_rgb: np.ndarray, fps: float) -> TrackResult:
        """frames_rgb: (T, H, W, 3) uint8 RGB at ``fps`` frames per second."""
        frames_rgb = np.asarray(frames_rgb)
        if frames_rgb.ndim != 4 or frames_rgb.shape[-1] != 3 or frames_rgb.dtype != np.uint8:
            raise ValueError(f"frames must be (T, H, W, 3) uint8 RGB, got {frames_rgb.shape} {frames_rgb.dtype}")
        return self.track_chunks([frames_rgb], fps)

    def track_file(
        self, path, fps: float | None = None, chunk_frames: int = 32, info=None,
        decode_max_side: int | None = None,
    ) -> TrackResult:
        """Decode ``path`` in chunks (constant ``fps``) and track it: the face seen in the most
        frames (track_faces_file has every face)."""
        return self.track_faces_file(path, fps, chunk_frames, info, decode_max_side)[0]

    def track_faces_file(self, path, fps: float | None = None, chunk_frames: int = 32, info=None,
                         decode_max_side: int | None = None, errors: list[str] | None = None) -> list[TrackResult]:
        """Decode ``path`` in chunks (constant ``fps``) and track every face: one TrackResult per
        face track (see track_faces_chunks).

        ``info``: a MediaInfo from ``probe(path)`` if the caller has one (saves an ffprobe).
        ``decode_max_side``: let ffmpeg downscale first (None = full resolution, what the ROI
        datasets used). 1080p decoding to RGB costs ~13 ms/frame here; 1280 halves it, at the
        price of detail for small faces. ``roi_params`` then refer to the decoded size.
        ``errors``: see iter_video."""
        from worker.media.decode import _fps_fraction, iter_video, probe

        info = info or probe(path)
        rate = float(_fps_fraction(info, fps)) if info.has_video else 0.0
        missing: list[tuple[int, int]] = []
        chunks = iter_video(path, fps=fps, max_side=decode_max_side, chunk_frames=chunk_frames, info=info,
                            errors=errors, missing=missing)
        results = self.track_faces_chunks(chunks, rate)
        if missing:
            # frame slots far from any decoded frame (a variable-rate stream that lost a stretch):
            # the nearest frame stands there, a still mouth under live speech, so they are no face
            # seen (a probe: a 1-s gap read +160 ms, AUDIO_LAGS, at confidence 0.37)
            n = sum(stop - start for start, stop in missing)
            for r in results:
                _mark_no_face(r, missing)
                r.notes.append(f"{n} frames lie in {len(missing)} gap(s) of the video stream (no decoded frame "
                               f"near them, first at frame {missing[0][0]}): read as no face")
        return results

    def track_chunks(self, chunks: Iterable[np.ndarray], fps: float) -> TrackResult:
        """Track frames given as an iterable of (t, H, W, 3) uint8 chunks (same H, W): the face
        seen in the most frames (the only one with ``max_faces`` 1)."""
        return self.track_faces_chunks(chunks, fps)[0]

    def track_faces_chunks(self, chunks: Iterable[np.ndarray], fps: float) -> list[TrackResult]:
        """Every face track, most frames with a detection first (at least one result: a clip
        without any face gives one track with no face present). Each result covers all frames;
        a face's frames before it appears and after it leaves are absent. ``tracking_ms`` is the
        whole pass's, the same on every track."""
        with quiet_native_stderr():  # MediaPipe's native start-up lines (tracking.native_log)
            try:
                return self._track_faces_chunks(chunks, fps)
            finally:
                # closed on every path, a failed decode's included, while its lines are still
                # kept off the terminal (a review: "W0000 ... feedback manager" after an error)
                self._close()

    def _track_faces_chunks(self, chunks: Iterable[np.ndarray], fps: float) -> list[TrackResult]:
        if not (fps > 0):
            raise ValueError(f"fps must be > 0, got {fps}")
        self._reset()
        elapsed_s = 0.0
        tracks: list[_Track] = []
        pending: collections.deque[_Frame] = collections.deque()
        lookahead = max(self.smooth_radius, self.max_gap + 1)
        n_final = 0  # frames finalised so far (every track has this many out entries)
        size: tuple[int, int] | None = None
        n = 0
        for chunk in chunks:
            t_start = self._clock()
            if chunk.ndim != 4 or chunk.shape[-1] != 3 or chunk.dtype != np.uint8:
                raise ValueError(f"chunk must be (t, H, W, 3) uint8, got {chunk.shape} {chunk.dtype}")
            if size is None:
                size = (int(chunk.shape[1]), int(chunk.shape[2]))
            elif size != chunk.shape[1:3]:
                raise ValueError("all frames must have the same size")
            for image in chunk:
                self._add_frame(self._detect(image), tracks, n, n_final)
                pending.append(_Frame(n, image))
                n += 1
                while pending and pending[0].index + lookahead < n:
                    fr = pending.popleft()
                    for tr in tracks:
                        self._finalize(fr, tr.st, tr.out)
                    n_final += 1
            elapsed_s += self._clock() - t_start
        t_start = self._clock()
        while pending:
            fr = pending.popleft()
            for tr in tracks:
                self._finalize(fr, tr.st, tr.out)
        self._close()
        elapsed_s += self._clock() - t_start
        if n == 0:
            raise ValueError("no frames to track")
        if not tracks:  # no face anywhere: one track, every frame absent
            tracks.append(_Track())
            for _ in range(n):
                tracks[0].st.append(None)
                self._append_absent(tracks[0].out)
        tracks.sort(key=lambda tr: -sum(tr.st.detected))  # stable: first seen first on ties
        # a face seen in a handful of frames (a false detection, a passer-by) is not a track
        tracks = tracks[:1] + [tr for tr in tracks[1:] if sum(tr.st.detected) >= MIN_TRACK_FRAMES]
        results = [self._result(tr.out, tr.st, fps, size, 1000.0 * elapsed_s) for tr in tracks]
        for r in results:
            r.faces_seen = self._faces_seen
        return results

    # -- internals ----------------------------------------------------------------------------
    def _reset(self) -> None:
        self._close()
        self._mesh = _new_face_mesh(self.max_faces)
        self._frame_no = self._faces_seen = 0

    def _close(self) -> None:
        for m in [self._mesh, self._detector, *self._zoom_meshes]:
            if m is not None:
                m.close()
        self._mesh = self._detector = None
        self._zoom, self._zoom_meshes, self._zoom_age = [], [], ZOOM_REDETECT_FRAMES

    def _detect(self, image: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """This frame's faces as (lips (L, 2), cheeks (2, 2), ROI params (4,)) in pixels."""
        h, w = image.shape[:2]
        scale = min(1.0, self.detect_max_side / max(h, w))
        small = image if scale >= 1.0 else geo.downscale(
            image, (max(1, round(w * scale)), max(1, round(h * scale)))
        )
        res = self._mesh.process(np.ascontiguousarray(small))
        faces = []
        for face in res.multi_face_landmarks or []:
            # Normalised coords refer to the (downscaled) image, which keeps the aspect ratio, so
            # multiplying by the full-resolution size gives full-resolution pixels.
            faces.append(_face(face.landmark, lambda x, y: (x * w, y * h)))
        counted = len(faces)
        if self.count_faces_every and self._frame_no % self.count_faces_every == 0:
            counted = max(counted, len(self._full_range(small)))
        self._faces_seen = max(self._faces_seen, counted)
        self._frame_no += 1
        if faces and (self.max_faces == 1 or len(faces) >= self.max_faces):
            self._zoom_age = ZOOM_REDETECT_FRAMES  # stale: look again when faces get small
            return faces
        # No face, or (following several) fewer than allowed: faces too small for FaceMesh's own
        # detector, a small speaker beside a large listener included, are looked for again
        return faces + self._zoomed_faces(image, small, exclude=faces)

    def _zoomed_faces(self, image: np.ndarray, small: np.ndarray, exclude: list) -> list:
        """FaceMesh on face-centred crops of the full-resolution frame (see ZOOM_SIZE), for the
        faces the full-range detector finds (every ZOOM_REDETECT_FRAMES frames) that are not
        among ``exclude`` (faces FaceMesh found on the whole frame)."""
        if self._zoom_age >= ZOOM_REDETECT_FRAMES:
            boxes = self._face_boxes(image, small)
            known = [f[2] for f in exclude]  # ROI params (cx, cy, side = 2 mouth widths)
            self._zoom = [np.array([cx, cy, ZOOM_FACE_SCALE * side]) for cx, cy, side in boxes
                          if all(np.hypot(cx - k[0], cy - k[1]) > 0.75 * max(side, k[2]) for k in known)
                          ][: self.max_faces - len(exclude)]
            self._zoom_age = 0
        self._zoom_age += 1
        while len(self._zoom_meshes) < len(self._zoom):
            self._zoom_meshes.append(_new_face_mesh(1))
        faces = []
        for k, (cx, cy, side) in enumerate(self._zoom):
            crop = geo.crop_roi(image, np.array([cx, cy, side, 0.0]), ZOOM_SIZE)
            res = self._zoom_meshes[k].process(crop)
            if not res.multi_face_landmarks:
                continue
            lm = res.multi_face_landmarks[0].landmark
            faces.append(_face(lm, lambda x, y, cx=cx, cy=cy, side=side: (cx + (x - 0.5) * side,
                                                                          cy + (y - 0.5) * side)))
            # follow the face: the next frame's crop is centred where this one's face is
            xs = np.array([p.x for p in lm])
            ys = np.array([p.y for p in lm])
            self._zoom[k] = np.array([cx + (0.5 * (xs.min() + xs.max()) - 0.5) * side,
                                      cy + (0.5 * (ys.min() + ys.max()) - 0.5) * side, side])
        return faces

    def _face_boxes(self, image: np.ndarray, small: np.ndarray) -> list[tuple[float, float, float]]:
        """Faces (cx, cy, side) in full-resolution pixels, left to right: the full-range detector
        on the downscaled frame and, on frames of 1280 px and more, on overlapping tiles of the
        full-resolution frame too (tile_levels; the detector sees its input at 192x192: a face 5%
        of a 1080p or 4K frame wide is a few pixels there, and was never found)."""
        h, w = image.shape[:2]
        boxes = [_box(d, 0, 0, w, h) for d in self._full_range(small)]
        levels = tile_levels(w, h) if max(h, w) >= TILE_FROM_PX else []
        for x0, y0, x1, y1 in (tile for level in levels for tile in level):
            tile = image[y0:y1, x0:x1]
            f = min(1.0, self.detect_max_side / max(tile.shape[:2]))
            if f < 1.0:
                tile = geo.downscale(tile, (max(1, round(tile.shape[1] * f)), max(1, round(tile.shape[0] * f))))
            boxes += [_box(d, x0, y0, x1 - x0, y1 - y0) for d in self._full_range(tile)]
        merged: list[tuple[float, float, float, float]] = []  # best score first, duplicates dropped
        for box in sorted(boxes, key=lambda b: -b[3]):
            if all(np.hypot(box[0] - m[0], box[1] - m[1]) > 0.5 * max(box[2], m[2]) for m in merged):
                merged.append(box)
        return sorted(((cx, cy, side) for cx, cy, side, _ in merged[: self.max_faces]), key=lambda b: b[0])

    def _full_range(self, small: np.ndarray) -> list:
        """The full-range detector's faces in the downscaled frame (made on first use)."""
        if self._detector is None:
            self._detector = _solution("face_detection").FaceDetection(
                model_selection=1, min_detection_confidence=0.5)
        return list(self._detector.process(np.ascontiguousarray(small)).detections or [])

    def _add_frame(self, faces: list, tracks: list[_Track], n: int, n_final: int) -> None:
        """Append frame n's detections to the tracks they continue (new tracks start absent for
        frames 0..n-1, of which n_final are finalised already)."""
        if self.max_faces == 1:  # one face, whatever it does (the caches' behaviour)
            owners = [0] * len(faces)
        else:
            last = [tr.last_params for tr in tracks]
            faces = [faces[d] for d in distinct_faces([f[2] for f in faces], last)]
            owners = assign_faces(last, [f[2] for f in faces],
                                  max_tracks=4 * self.max_faces)
        for k in sorted({o for o in owners if o is not None}):
            if k >= len(tracks):
                tr = _Track()
                for _ in range(n):
                    tr.st.append(None)
                for _ in range(n_final):
                    self._append_absent(tr.out)
                tracks.append(tr)
        by_track = {o: faces[d] for d, o in enumerate(owners) if o is not None}
        for k, tr in enumerate(tracks):
            face = by_track.get(k)
            tr.st.append(face)
            if face is not None:
                tr.last_params = face[2]

    def _window(self, st: _State, t: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """Params, validity, bridged flags around frame t (enough context for smoothing t)."""
        margin = self.smooth_radius + self.max_gap + 1
        lo, hi = max(0, t - margin), min(len(st.detected), t + margin + 1)
        valid = np.array(st.detected[lo:hi], bool)
        params = np.zeros((hi - lo, 4))
        for k in range(lo, hi):
            if st.raw_params[k] is not None:
                params[k - lo] = st.raw_params[k]
        bridged = geo.bridge_gaps(params, valid, self.max_gap)
        return lo, params, valid | bridged, bridged

    def _lips_at(self, st: _State, t: int, field_name: str) -> np.ndarray | None:
        seq = getattr(st, field_name)
        if seq[t] is not None:
            return seq[t]
        # bridged frame: interpolate between the nearest detections on both sides
        a = next((k for k in range(t - 1, max(-1, t - self.max_gap - 2), -1) if seq[k] is not None), None)
        b = next((k for k in range(t + 1, min(len(seq), t + self.max_gap + 2)) if seq[k] is not None), None)
        if a is None or b is None:
            return None
        w = (t - a) / (b - a)
        return (1 - w) * seq[a] + w * seq[b]

    def _finalize(self, fr: _Frame, st: _State, out: dict[str, list]) -> None:
        t = fr.index
        lo, params, valid, bridged = self._window(st, t)
        S = self.roi_size
        if not valid[t - lo]:
            self._append_absent(out)
            return
        smoothed = geo.smooth_params(params, valid, self.smooth_radius)[t - lo]
        roi_rgb = geo.crop_roi(fr.image, smoothed, S)
        lips = self._lips_at(st, t, "lips_px")
        cheeks = self._lips_at(st, t, "cheeks_px")
        lips_roi = geo.to_roi_coords(lips, smoothed, S)
        h, w = fr.image.shape[:2]
        skin = occ.skin_reference_lab(fr.image, cheeks, radius_px=0.06 * smoothed[2])
        _keep_crop(out, "rois", cv2.cvtColor(roi_rgb, cv2.COLOR_RGB2GRAY))
        if self.keep_rgb:
            _keep_crop(out, "rois_rgb", roi_rgb)
        out["present"].append(True)
        out["bridged"].append(bool(bridged[t - lo]))
        out["lm"].append(lips_roi)
        out["lm_img"].append((lips / np.array([w, h])).astype(np.float32))
        out["params"].append(smoothed)
        out["occ"].append(occ.occlusion_score(roi_rgb, lips_roi * S, skin))

    def _append_absent(self, out: dict[str, list]) -> None:
        # one shared read-only set of blanks: a face absent from most of a long clip costs list
        # slots, not fresh landmarks per frame
        if self._blank is None or self._blank[0].shape[0] != self.roi_size:
            S, nan_l = self.roi_size, np.full((len(geo.LIP_INDICES), 2), np.nan, np.float32)
            self._blank = (np.zeros((S, S), np.uint8), np.zeros((S, S, 3), np.uint8), nan_l, np.full(4, np.nan))
        roi, roi_rgb, nan_l, nan_p = self._blank
        _keep_crop(out, "rois", roi, blank=True)
        if self.keep_rgb:
            _keep_crop(out, "rois_rgb", roi_rgb, blank=True)
        out["present"].append(False)
        out["bridged"].append(False)
        out["lm"].append(nan_l)
        out["lm_img"].append(nan_l)
        out["params"].append(nan_p)
        out["occ"].append(np.nan)

    def _result(self, out, st: _State, fps: float, size, tracking_ms: float) -> TrackResult:
        present = np.array(out["present"], bool)
        scores = np.array(out["occ"], np.float32)
        spool = out["rois"]
        rois = spool.finish()
        notes = [] if spool.fell_back is None else [
            f"the mouth crops stayed in memory ({rois.nbytes / 2**20:.0f} MB): {spool.fell_back}"]
        return TrackResult(
            rois=rois,
            notes=notes,
            rois_rgb=out["rois_rgb"].finish() if self.keep_rgb else None,
            face_present=present,
            face_detected=np.array(st.detected, bool),
            bridged=np.array(out["bridged"], bool),
            landmarks=np.stack(out["lm"]).astype(np.float32),
            landmarks_image=np.stack(out["lm_img"]).astype(np.float32),
            roi_params=np.stack(out["params"]).astype(np.float32),
            occlusion_score=scores,
            occluded=occ.occluded_flags(scores) & present,
            fps=float(fps),
            frame_size=size,
            tracking_ms=tracking_ms,
        )
